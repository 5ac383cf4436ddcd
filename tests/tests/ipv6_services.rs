//! End to end: IPv6 and dual-stack Services on the dual-stack lab, real packets through
//! the agent's programs (manifest mode, the node dual-stack: `--node-ip` with both
//! addresses, both cluster CIDRs). Rows:
//! - a dual-stack Service (`ipFamilyPolicy: RequireDualStack`, IPv6 first) reached on both
//!   ClusterIPs from a pod: each family's traffic goes to that family's endpoints (the
//!   IPv6 ClusterIP's backends are the IPv6 EndpointSlice's, and the echo servers see the
//!   pod's IPv6 address; the IPv4 ClusterIP's the IPv4 ones), both backends used, no
//!   masquerade from a pod; TCP and UDP; a named targetPort (`http`), and UDP on the TCP
//!   port's number as another service port;
//! - a Service whose only endpoint is serving and terminating: used;
//! - its NodePort on the node's IPv6 address from the outside host (XDP): masqueraded to
//!   the node's IPv6 address (externalTrafficPolicy Cluster);
//! - an IPv6-only Service with externalTrafficPolicy Local: its NodePort from outside keeps
//!   the client's IPv6 address;
//! - an IPv6 externalIP from outside;
//! - an IPv6 LoadBalancer IP with sessionAffinity ClientIP and loadBalancerSourceRanges:
//!   one backend for every flow of a client inside the ranges, a pod outside them dropped;
//! - internalTrafficPolicy Local (the local endpoint only); externalTrafficPolicy Local
//!   without a local endpoint (dropped from outside, a pod reaches the remote endpoint
//!   unmasqueraded); hairpin (a backend that picks itself is masqueraded);
//! - a fragmented UDP datagram each way through the IPv6 ClusterIP (4,000 bytes in,
//!   6,000 out, MTU 1500): every fragment translated;
//! - an IPv6 Service without endpoints: TCP refused (RST), UDP refused (ICMPv6 port
//!   unreachable);
//! - addresses no Service takes (`--service-cluster-ip-range fd00:10:96::/112`): a port
//!   the IPv6 ClusterIP does not have is refused (RST), an unallocated address inside the
//!   IPv6 service CIDR is dropped;
//! - the node's own processes (socket LB, connect6/sendmsg6): to the IPv6 ClusterIP, TCP
//!   and UDP, and to the IPv4 ClusterIP as a v4-mapped address from an IPv6 socket;
//! - `svcctl dump` shows the IPv6 frontends, `svcctl trace` translates an IPv6 packet;
//! - kube-proxy's TestNodePorts IPv6 rows (`kube_proxy_test_node_ports_ipv6_rows`).
use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_TCP, PROTO_UDP, Verdict};
use svc_lab::{Lab, agent::LabAgent, echo_tcp, echo_udp, ipv6_twin};

static SERIAL: Mutex<()> = Mutex::new(());

const TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the requests a row makes until every backend it expects has answered.
const MAX_CALLS: usize = 64;

const DUAL4: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 20);
const DUAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0xa);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0xb);
const EMPTY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0xc);
const EXTERNAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x97, 0, 0, 0, 0, 1);
const LB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x97, 0, 0, 0, 0, 2);
const TERM6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 1, 1);
const ITP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0xe);
/// How long a dropped connection is waited for.
const SHORT: Duration = Duration::from_millis(700);
/// The agent's `--service-cluster-ip-range` (IPv6 only: the IPv4 rows are elsewhere).
const SERVICE_CIDR6: &str = "fd00:10:96::/112";
/// Inside SERVICE_CIDR6, no Service's.
const UNALLOCATED6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x99);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  clusterIP: fd00:10:96::a
  clusterIPs: ["fd00:10:96::a", "10.96.9.20"]
  externalIPs: ["fd00:10:97::1"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: http, nodePort: 30080}
    - {name: echo, protocol: UDP, port: 53, targetPort: 8080, nodePort: 30053}
    - {name: http-udp, protocol: UDP, port: 80, targetPort: 8080, nodePort: 30084}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dual-v4
  namespace: default
  labels: {kubernetes.io/service-name: dual}
addressType: IPv4
ports:
  - {name: http, protocol: TCP, port: 8080}
  - {name: echo, protocol: UDP, port: 8080}
  - {name: http-udp, protocol: UDP, port: 8080}
endpoints:
  - {addresses: ["10.244.1.11"], nodeName: node1}
  - {addresses: ["10.244.1.12"], nodeName: node1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dual-v6
  namespace: default
  labels: {kubernetes.io/service-name: dual}
addressType: IPv6
ports:
  - {name: http, protocol: TCP, port: 8080}
  - {name: echo, protocol: UDP, port: 8080}
  - {name: http-udp, protocol: UDP, port: 8080}
endpoints:
  - {addresses: ["fd00:10:244:1::11"], nodeName: node1}
  - {addresses: ["fd00:10:244:1::12"], nodeName: node1}
---
apiVersion: v1
kind: Service
metadata: {name: local6, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  ipFamilies: [IPv6]
  clusterIP: fd00:10:96::b
  clusterIPs: ["fd00:10:96::b"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local6-1
  namespace: default
  labels: {kubernetes.io/service-name: local6}
addressType: IPv6
ports:
  - {name: http, protocol: TCP, port: 8080}
endpoints:
  - {addresses: ["fd00:10:244:1::13"], nodeName: node1}
---
apiVersion: v1
kind: Service
metadata: {name: lb6, namespace: default}
spec:
  type: LoadBalancer
  ipFamilies: [IPv6]
  clusterIP: fd00:10:96::d
  clusterIPs: ["fd00:10:96::d"]
  sessionAffinity: ClientIP
  loadBalancerSourceRanges: ["fd00:192:0:2::100/128"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30082}
status:
  loadBalancer:
    ingress: [{ip: "fd00:10:97::2"}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb6-1
  namespace: default
  labels: {kubernetes.io/service-name: lb6}
addressType: IPv6
ports:
  - {name: http, protocol: TCP, port: 8080}
endpoints:
  - {addresses: ["fd00:10:244:1::11"], nodeName: node1}
  - {addresses: ["fd00:10:244:1::12"], nodeName: node1}
  - {addresses: ["fd00:10:244:1::13"], nodeName: node1}
---
apiVersion: v1
kind: Service
metadata: {name: itp6, namespace: default}
spec:
  ipFamilies: [IPv6]
  internalTrafficPolicy: Local
  clusterIP: fd00:10:96::e
  clusterIPs: ["fd00:10:96::e"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: itp6-1
  namespace: default
  labels: {kubernetes.io/service-name: itp6}
addressType: IPv6
ports:
  - {name: http, protocol: TCP, port: 8080}
endpoints:
  - {addresses: ["fd00:10:244:1::11"], nodeName: node1}
  - {addresses: ["fd00:10:244:1::12"], nodeName: node2}
---
apiVersion: v1
kind: Service
metadata: {name: remote6, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  ipFamilies: [IPv6]
  clusterIP: fd00:10:96::f
  clusterIPs: ["fd00:10:96::f"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30083}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: remote6-1
  namespace: default
  labels: {kubernetes.io/service-name: remote6}
addressType: IPv6
ports:
  - {name: http, protocol: TCP, port: 8080}
endpoints:
  - {addresses: ["fd00:10:244:1::12"], nodeName: node2}
---
apiVersion: v1
kind: Service
metadata: {name: term6, namespace: default}
spec:
  ipFamilies: [IPv6]
  clusterIP: fd00:10:96::1:1
  clusterIPs: ["fd00:10:96::1:1"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: term6-1
  namespace: default
  labels: {kubernetes.io/service-name: term6}
addressType: IPv6
ports:
  - {name: http, protocol: TCP, port: 8080}
endpoints:
  - {addresses: ["fd00:10:244:1::13"], nodeName: node1, conditions: {ready: false, serving: true, terminating: true}}
---
apiVersion: v1
kind: Service
metadata: {name: empty6, namespace: default}
spec:
  ipFamilies: [IPv6]
  clusterIP: fd00:10:96::c
  clusterIPs: ["fd00:10:96::c"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
    - {name: echo, protocol: UDP, port: 53, targetPort: 8080}
"#;

/// Requests `call` until every pod of `want` has answered (at most MAX_CALLS); every
/// answer must come from one of them and show the client `client` (None: not checked).
fn reaches(
    what: &str,
    want: &[&str],
    client: Option<IpAddr>,
    mut call: impl FnMut() -> io::Result<(String, SocketAddr)>,
) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..MAX_CALLS {
        let (pod, saw) = call().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            want.contains(&pod),
            "{what}: answered by {pod}, want {want:?}"
        );
        if let Some(c) = client {
            assert_eq!(saw.ip(), c, "{what}: the client the backend saw");
        }
        seen.insert(pod);
        if seen == want {
            return;
        }
    }
    panic!("{what}: {MAX_CALLS} calls reached only {seen:?} of {want:?}");
}

fn svcctl(agent: &LabAgent, args: &[&str]) -> String {
    let out = std::process::Command::new(svc_lab::agent::workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(&agent.bpffs)
        .args(args)
        .output()
        .expect("run svcctl");
    assert!(
        out.status.success(),
        "svcctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ipv6_and_dual_stack_services() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::up().expect("lab");
    let dir = std::env::temp_dir().join(format!("svl-{}-ipv6-services", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("services.yaml"), MANIFESTS).unwrap();
    lab.ext_route("fd00:10:97::/64", 1).expect("ext route");
    let node6 = lab.node(1).ip6;
    let cgroup = lab.node_cgroup(1).expect("node cgroup");
    let cgroup = cgroup.display().to_string();
    let node6_arg = node6.to_string();
    let agent = LabAgent::start_in(
        &mut lab,
        1,
        &dir,
        &dir.join("agent.log"),
        &[
            "--node-ip",
            &node6_arg,
            "--node-name",
            "node1",
            "--cgroup",
            &cgroup,
            "--service-cluster-ip-range",
            SERVICE_CIDR6,
        ],
    )
    .expect("agent");
    let wait = Duration::from_secs(20);
    agent.wait_backends(DUAL6, 80, PROTO_TCP, 2, wait).unwrap();
    agent.wait_backends(DUAL4, 80, PROTO_TCP, 2, wait).unwrap();
    agent.wait_backends(DUAL6, 53, PROTO_UDP, 2, wait).unwrap();
    agent.wait_backends(LOCAL6, 80, PROTO_TCP, 1, wait).unwrap();
    agent.wait_backends(EMPTY6, 80, PROTO_TCP, 0, wait).unwrap();
    agent.wait_backends(LB6, 80, PROTO_TCP, 3, wait).unwrap();
    agent.wait_backends(ITP6, 80, PROTO_TCP, 2, wait).unwrap();

    // Each family's ClusterIP has its own family's endpoints.
    let mut v6 = agent.backends(DUAL6, 80, PROTO_TCP).unwrap();
    v6.sort();
    assert_eq!(
        v6,
        [
            "[fd00:10:244:1::11]:8080".parse::<SocketAddr>().unwrap(),
            "[fd00:10:244:1::12]:8080".parse().unwrap()
        ]
    );
    let v4 = agent.backends(DUAL4, 80, PROTO_TCP).unwrap();
    assert!(v4.iter().all(SocketAddr::is_ipv4), "{v4:?}");
    let node6_nodeport = agent.backends(node6, 30080, PROTO_TCP).unwrap();
    assert!(
        node6_nodeport.iter().all(SocketAddr::is_ipv6),
        "{node6_nodeport:?}"
    );

    let client = lab.client_ns().to_string();
    let client6 = IpAddr::V6(lab.pod_ip6("client"));
    let client4 = IpAddr::V4(lab.pod_ip("client"));
    let both = ["p1", "p2"];
    let dual6 = SocketAddr::new(DUAL6.into(), 80);
    let dual4 = SocketAddr::new(DUAL4.into(), 80);
    let before = agent.verdict_count(Verdict::DnatNew);
    reaches(
        "pod to the IPv6 ClusterIP, TCP",
        &both,
        Some(client6),
        || echo_tcp(&client, dual6, TIMEOUT),
    );
    reaches(
        "pod to the IPv4 ClusterIP, TCP",
        &both,
        Some(client4),
        || echo_tcp(&client, dual4, TIMEOUT),
    );
    reaches(
        "pod to the IPv6 ClusterIP, UDP",
        &both,
        Some(client6),
        || echo_udp(&client, SocketAddr::new(DUAL6.into(), 53), TIMEOUT),
    );
    // UDP on the TCP port's number: another service port.
    reaches(
        "pod to the IPv6 ClusterIP, UDP on port 80",
        &both,
        Some(client6),
        || echo_udp(&client, SocketAddr::new(DUAL6.into(), 80), TIMEOUT),
    );
    // Only serving-terminating endpoints: used, as kube-proxy does.
    reaches(
        "pod to a Service whose endpoint is terminating",
        &["p3"],
        Some(client6),
        || echo_tcp(&client, SocketAddr::new(TERM6.into(), 80), TIMEOUT),
    );
    assert!(agent.verdict_count(Verdict::DnatNew) >= before + 6);

    // From outside: the NodePort on the node's IPv6 address (masqueraded to it), the
    // Local one (the client's address kept), the externalIP.
    let ext = lab.ext_ns().to_string();
    let ext6 = IpAddr::V6(ipv6_twin(svc_lab::EXT_IP));
    reaches(
        "outside to the IPv6 NodePort",
        &both,
        Some(node6.into()),
        || echo_tcp(&ext, SocketAddr::new(node6.into(), 30080), TIMEOUT),
    );
    reaches(
        "outside to the IPv6 NodePort, UDP",
        &both,
        Some(node6.into()),
        || echo_udp(&ext, SocketAddr::new(node6.into(), 30053), TIMEOUT),
    );
    reaches(
        "outside to the Local IPv6 NodePort",
        &["p3"],
        Some(ext6),
        || echo_tcp(&ext, SocketAddr::new(node6.into(), 30081), TIMEOUT),
    );
    reaches(
        "outside to the IPv6 externalIP",
        &both,
        Some(node6.into()),
        || echo_tcp(&ext, SocketAddr::new(EXTERNAL6.into(), 80), TIMEOUT),
    );

    // LoadBalancer IP with session affinity and source ranges: from inside the ranges,
    // every flow of the client to one backend; from a pod outside them, dropped.
    let lb = SocketAddr::new(LB6.into(), 80);
    let mut chosen = BTreeSet::new();
    for _ in 0..8 {
        let (pod, saw) = echo_tcp(&ext, lb, TIMEOUT).expect("outside to the IPv6 LoadBalancer IP");
        assert_eq!(saw.ip(), IpAddr::V6(node6), "masqueraded (policy Cluster)");
        chosen.insert(pod);
    }
    assert_eq!(
        chosen.len(),
        1,
        "session affinity: one backend, got {chosen:?}"
    );
    let dropped = agent.verdict_count(Verdict::DropSourceRange);
    let e = echo_tcp(&client, lb, SHORT).unwrap_err();
    assert_eq!(
        e.kind(),
        io::ErrorKind::TimedOut,
        "outside the source ranges: {e}"
    );
    assert!(agent.verdict_count(Verdict::DropSourceRange) > dropped);

    // internalTrafficPolicy Local: the local endpoint only.
    reaches(
        "pod to an internalTrafficPolicy Local ClusterIP",
        &["p1"],
        Some(client6),
        || echo_tcp(&client, SocketAddr::new(ITP6.into(), 80), TIMEOUT),
    );
    // externalTrafficPolicy Local without a local endpoint: dropped from outside; a pod
    // reaches the endpoint anyway, unmasqueraded (kube-proxy's short-circuit).
    let remote = SocketAddr::new(node6.into(), 30083);
    let e = echo_tcp(&ext, remote, SHORT).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "no local endpoint: {e}");
    reaches(
        "pod to a Local NodePort without a local endpoint",
        &["p2"],
        Some(client6),
        || echo_tcp(&client, remote, TIMEOUT),
    );
    // Hairpin: a backend that picks itself is masqueraded, so its reply comes back
    // through the node.
    let p1 = lab.pod_ns("p1").to_string();
    let p1_6 = IpAddr::V6(lab.pod_ip6("p1"));
    let mut hairpinned = false;
    for _ in 0..MAX_CALLS {
        let (pod, saw) = echo_tcp(&p1, dual6, TIMEOUT).expect("p1 to its own Service");
        if pod == "p1" {
            assert_eq!(saw.ip(), IpAddr::V6(node6), "hairpin masqueraded");
            hairpinned = true;
            break;
        }
        assert_eq!(saw.ip(), p1_6, "to another backend: not masqueraded");
    }
    assert!(hairpinned, "p1 never got itself in {MAX_CALLS} calls");

    // Fragments both ways: a 4,000-byte datagram to the IPv6 ClusterIP and a 6,000-byte
    // answer (the client's and the backend's kernels fragment them at MTU 1500): every
    // fragment gets its first fragment's translation.
    let (dnat_frag, rev_frag) = (
        agent.verdict_count(Verdict::DnatFragment),
        agent.verdict_count(Verdict::RevNatFragment),
    );
    let request = svc_lab::echo::big_request(4000, 6000);
    let to = SocketAddr::new(DUAL6.into(), 53);
    let answer = svc_lab::try_in_netns(&client, || -> io::Result<Vec<u8>> {
        let s = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.connect(to)?;
        s.send(&request)?;
        let mut buf = vec![0u8; 65536];
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
    .and_then(|r| r)
    .expect("a fragmented datagram through the IPv6 ClusterIP");
    let (line, intact) = svc_lab::echo::check_sized(&answer).expect("a sized answer");
    assert!(
        intact && answer.len() == 6000,
        "{line} ({} bytes)",
        answer.len()
    );
    assert!(
        line.ends_with("4000 intact"),
        "the request arrived whole: {line}"
    );
    assert!(agent.verdict_count(Verdict::DnatFragment) > dnat_frag);
    assert!(agent.verdict_count(Verdict::RevNatFragment) > rev_frag);

    // No endpoints: refused, as kube-proxy's REJECT.
    let rst = agent.verdict_count(Verdict::RejectTcpRst);
    let icmp = agent.verdict_count(Verdict::RejectIcmp);
    let e = echo_tcp(&client, SocketAddr::new(EMPTY6.into(), 80), TIMEOUT).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    let e = echo_udp(&client, SocketAddr::new(EMPTY6.into(), 53), TIMEOUT).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    assert!(agent.verdict_count(Verdict::RejectTcpRst) > rst);
    assert!(agent.verdict_count(Verdict::RejectIcmp) > icmp);

    // Addresses no Service takes (kube-proxy nftables' cluster-ips-check chain): a port
    // the IPv6 ClusterIP does not have is refused (SVC6_CLUSTERIPS); an address inside
    // the IPv6 service CIDR that no Service has is dropped (SVC6_SVC_CIDR).
    let rst = agent.verdict_count(Verdict::RejectTcpRst);
    let e = echo_tcp(&client, SocketAddr::new(DUAL6.into(), 81), TIMEOUT).unwrap_err();
    assert_eq!(
        e.kind(),
        io::ErrorKind::ConnectionRefused,
        "a port the IPv6 ClusterIP does not have: {e}"
    );
    assert!(agent.verdict_count(Verdict::RejectTcpRst) > rst);
    let dropped = agent.verdict_count(Verdict::DropUnallocated);
    let unallocated = SocketAddr::new(UNALLOCATED6.into(), 80);
    let e = echo_tcp(&client, unallocated, SHORT).unwrap_err();
    assert_eq!(
        e.kind(),
        io::ErrorKind::TimedOut,
        "an unallocated address in the IPv6 service CIDR: {e}"
    );
    assert!(agent.verdict_count(Verdict::DropUnallocated) > dropped);

    // The node's own processes, through the socket programs.
    let sock = agent.verdict_count(Verdict::SockTranslate);
    for (udp, port) in [(false, 80), (true, 53)] {
        let to = SocketAddrV6::new(DUAL6, port, 0, 0);
        let replies = lab.node_requests6(1, to, udp, 16, TIMEOUT);
        let pods: BTreeSet<String> = replies
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|(p, _)| p.clone())
                    .unwrap_or_else(|e| panic!("node to {to}: {e}"))
            })
            .collect();
        assert!(pods.iter().all(|p| both.contains(&p.as_str())), "{pods:?}");
    }
    let mapped = SocketAddrV6::new(DUAL4.to_ipv6_mapped(), 80, 0, 0);
    for r in lab.node_requests6(1, mapped, false, 4, TIMEOUT) {
        let (pod, saw) = r.unwrap_or_else(|e| panic!("node to {mapped}: {e}"));
        assert!(both.contains(&pod.as_str()), "{pod}");
        assert!(
            saw.is_ipv4(),
            "a v4-mapped call reaches an IPv4 backend: {saw}"
        );
    }
    assert!(agent.verdict_count(Verdict::SockTranslate) >= sock + 36);

    // svcctl shows and traces IPv6.
    let dump = svcctl(&agent, &["dump"]);
    assert!(dump.contains("[fd00:10:96::a]:80"), "{dump}");
    assert!(
        dump.contains("fd00:10:96::/112  addresses inside that no Service has are dropped"),
        "{dump}"
    );
    assert!(dump.contains("[fd00:10:244:1::11]:8080"), "{dump}");
    let trace = svcctl(
        &agent,
        &[
            "trace",
            "--from",
            &format!("[{}]", lab.pod_ip6("client")),
            "--to",
            "[fd00:10:96::a]:80",
            "--via",
            "pod",
            "-o",
            "json",
        ],
    );
    let t: serde_json::Value = serde_json::from_str(&trace).expect("trace JSON");
    assert_eq!(t["verdict"], "dnat_new", "{t}");
    assert_eq!(t["flow"], "new", "{t}");
    assert_eq!(t["frontend"]["address"], "[fd00:10:96::a]:80", "{t}");
    let backend = t["backend"].as_str().expect("the backend");
    assert!(
        ["[fd00:10:244:1::11]:8080", "[fd00:10:244:1::12]:8080"].contains(&backend),
        "{t}"
    );
    assert_eq!(t["candidates"].as_array().map(Vec::len), Some(2), "{t}");
    assert!(t["rule"].as_str().unwrap().contains("dual"), "{t}");
    for (to, verdict) in [
        ("[fd00:10:96::a]:81", "reject_tcp_rst"),
        ("[fd00:10:96::99]:80", "drop_unallocated"),
    ] {
        let trace = svcctl(
            &agent,
            &[
                "trace",
                "--from",
                &format!("[{}]", lab.pod_ip6("client")),
                "--to",
                to,
                "--via",
                "pod",
                "-o",
                "json",
            ],
        );
        let t: serde_json::Value = serde_json::from_str(&trace).expect("trace JSON");
        assert_eq!(t["verdict"], verdict, "{t}");
    }

    drop(agent);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

/// kube-proxy's TestNodePorts, its `ipv6` and `ipv6, multiple nodeport-addresses` subtests
/// (pkg/proxy/nftables/proxier_test.go), row by row, on the dual-stack lab. The mapping of
/// kube-proxy's addresses, as in kube_proxy_flows.rs for the IPv4 rows:
///
/// | kube-proxy | lab |
/// |---|---|
/// | testNodeIPv6 2001:db8::1 | node 1's IPv6 address fd00:192:0:2::1 |
/// | testNodeIPv6Alt 2001:db8:1::2 | fd00:192:168:1::2/128 on node 1's eth0, routed to it by the outside host |
/// | podIP fd00:10::2 | the client pod's IPv6 address |
/// | externalClientIP 2600:5200::1 | the outside host's IPv6 address |
/// | svcIP fd00:172:30::41 | kept |
/// | epIP1 fd00:10:180::1, epIP2 fd00:10:180::2:1, port 80 | pods p1 and p2 (IPv6), port 80 |
/// | nodePortAddresses unset: the fake proxier's node IP alone | `--node-port-addresses fd00:192:0:2::1/128` |
/// | nodePortAddresses `192.168.0.0/24, 192.168.1.0/24, 2001:db8::/64, 2001:db8:1::2/128` | `192.0.2.0/24, 192.168.1.0/24, fd00:192:0:2::/64, fd00:192:168:1::2/128` |
/// | node source testNodeIPv6 | a process of node 1 (socket programs): the backend sees a node address |
///
/// `""` (untouched) is told apart from a refusal by node 1's own listener on port 3001,
/// which answers as `test-node`.
#[test]
fn kube_proxy_test_node_ports_ipv6_rows() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::up().expect("lab");
    let dir = std::env::temp_dir().join(format!("svl-{}-kp-nodeports6", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("svc1.yaml"), NODE_PORTS_MANIFESTS).unwrap();
    let node6 = lab.node(1).ip6;
    let alt6: Ipv6Addr = "fd00:192:168:1::2".parse().unwrap();
    let node_ns = lab.node_ns().to_string();
    let out = lab
        .exec(
            &node_ns,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                "fd00:192:168:1::2/128",
                "dev",
                svc_lab::NODE_EXT_IF,
                "nodad",
            ],
        )
        .expect("ip addr add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.ext_route("fd00:192:168:1::2/128", 1)
        .expect("ext route");
    let _cgroup = lab.node_cgroup(1).expect("node cgroup");
    let cgroup = _cgroup.display().to_string();
    let pods: Vec<(String, String)> = ["p1", "p2"]
        .iter()
        .map(|p| (p.to_string(), lab.pod_ns(p).to_string()))
        .collect();
    let _echo80 = svc_lab::EchoServers::start(&pods, 80).expect("echo :80");
    let _listener = svc_lab::EchoServers::start(&[("test-node".into(), node_ns.clone())], 3001)
        .expect("node listener");

    let node6_arg = node6.to_string();
    let client6 = IpAddr::V6(lab.pod_ip6("client"));
    let ext6 = IpAddr::V6(ipv6_twin(svc_lab::EXT_IP));
    let client = lab.client_ns().to_string();
    let ext = lab.ext_ns().to_string();
    let both = ["p1", "p2"];
    let svc = SocketAddr::new("fd00:172:30::41".parse::<IpAddr>().unwrap(), 80);
    for (subtest, node_port_addresses, allow_alt) in [
        // The fake proxier's default: the node's own address only.
        ("ipv6", "fd00:192:0:2::1/128", false),
        (
            "ipv6, multiple nodeport-addresses",
            "192.0.2.0/24,192.168.1.0/24,fd00:192:0:2::/64,fd00:192:168:1::2/128",
            true,
        ),
    ] {
        let mut args = vec![
            "--node-ip",
            node6_arg.as_str(),
            "--node-name",
            "test-node",
            "--cgroup",
            cgroup.as_str(),
        ];
        args.extend(["--node-port-addresses", node_port_addresses]);
        let log = dir.join(format!("agent-{allow_alt}.log"));
        let agent = LabAgent::start_in(&mut lab, 1, &dir, &log, &args).expect("agent");
        agent
            .wait_backends(node6, 3001, PROTO_TCP, 2, Duration::from_secs(20))
            .unwrap();
        if allow_alt {
            agent
                .wait_backends(alt6, 3001, PROTO_TCP, 2, Duration::from_secs(20))
                .unwrap();
        }
        let row = |name: &str| format!("TestNodePorts/{subtest}/{name}");
        reaches(&row("pod to cluster IP"), &both, Some(client6), || {
            echo_tcp(&client, svc, TIMEOUT)
        });
        reaches(
            &row("external to nodePort"),
            &both,
            Some(node6.into()),
            || echo_tcp(&ext, SocketAddr::new(node6.into(), 3001), TIMEOUT),
        );
        // "node to nodePort", masq: the backend sees an address of the node (the one its
        // route towards the pod picks: README, *Masquerade address*).
        let node_addrs = [IpAddr::V6(node6), IpAddr::V6(lab.node(1).gateway6)];
        for r in lab.node_requests6(1, SocketAddrV6::new(node6, 3001, 0, 0), false, 16, TIMEOUT) {
            let (pod, saw) = r.unwrap_or_else(|e| panic!("{}: {e}", row("node to nodePort")));
            assert!(
                both.contains(&pod.as_str()),
                "{}: {pod}",
                row("node to nodePort")
            );
            assert!(
                node_addrs.contains(&saw.ip()),
                "{}: {saw}",
                row("node to nodePort")
            );
        }
        let alt = SocketAddr::new(alt6.into(), 3001);
        if allow_alt {
            reaches(
                &row("external to nodePort on secondary IP"),
                &both,
                Some(node6.into()),
                || echo_tcp(&ext, alt, TIMEOUT),
            );
        } else {
            // Untouched: node 1's own listener answers, and sees the client itself.
            let (who, saw) = echo_tcp(&ext, alt, TIMEOUT)
                .unwrap_or_else(|e| panic!("{}: {e}", row("secondary nodeIP ignores NodePorts")));
            assert_eq!((who.as_str(), saw.ip()), ("test-node", ext6));
        }
        // The next configuration's agent adopts the pins once this one has exited.
        agent.process.stop().expect("stop the agent");
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

/// TestNodePorts' Service and EndpointSlice, IPv6, with the lab's endpoints.
const NODE_PORTS_MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  type: NodePort
  ipFamilies: [IPv6]
  clusterIP: fd00:172:30::41
  clusterIPs: ["fd00:172:30::41"]
  ports:
    - {name: p80, protocol: TCP, port: 80, targetPort: 80, nodePort: 3001}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc1-1
  namespace: ns1
  labels: {kubernetes.io/service-name: svc1}
addressType: IPv6
ports:
  - {name: p80, protocol: TCP, port: 80}
endpoints:
  - {addresses: ["fd00:10:244:1::11"]}
  - {addresses: ["fd00:10:244:1::12"], nodeName: test-node}
"#;
