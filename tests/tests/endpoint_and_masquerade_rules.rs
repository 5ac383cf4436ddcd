//! End to end on one node: the rules of the semantics note not covered by the two-node
//! table: `--masquerade-all` (ClusterIP traffic from every source, but not the external
//! addresses of an externalTrafficPolicy Local Service), no masquerading without a known
//! pod CIDR, established flows keeping a terminating backend while new flows avoid it, and
//! not-serving endpoints never used (a Service whose endpoints are all not serving
//! rejects).
use std::{
    collections::BTreeSet,
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use svc_common::PROTO_TCP;
use svc_lab::{
    CLIENT_IP, EXT_IP, Lab, NODE_EXT_IP, TcpSession, agent::LabAgent, in_netns, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);

/// The echo Service of examples/echo-clusterip.yaml with the given endpoints, each
/// `(pod, conditions)` where conditions is YAML such as `{ready: true}`.
fn echo_manifest(endpoints: &[(&str, &str)], lab: &Lab) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/echo-clusterip.yaml"),
    )
    .expect("example");
    let (head, _) = text.split_once("endpoints:\n").expect("endpoints section");
    let mut out = format!("{head}endpoints:\n");
    for (pod, conditions) in endpoints {
        out += &format!(
            "  - addresses: [\"{}\"]\n    conditions: {conditions}\n",
            lab.pod_ip(pod)
        );
    }
    out
}

struct Env {
    agent: LabAgent,
    dir: PathBuf,
    lab: Lab,
}

enum PodCidr {
    Known,
    Unknown,
}

impl Env {
    fn up(endpoints: &[(&str, &str)], pod_cidr: PodCidr, extra: &[&str]) -> Env {
        Env::up_with(endpoints, pod_cidr, extra, "")
    }

    /// As [`up`](Self::up), with `more` (manifests) served next to the echo Service.
    fn up_with(endpoints: &[(&str, &str)], pod_cidr: PodCidr, extra: &[&str], more: &str) -> Env {
        let mut lab = Lab::up().expect("lab");
        let dir = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("echo.yaml"), echo_manifest(endpoints, &lab)).unwrap();
        if !more.is_empty() {
            std::fs::write(dir.join("more.yaml"), more).unwrap();
        }
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let agent = match pod_cidr {
            PodCidr::Known => LabAgent::start_in(&mut lab, 1, &dir, &log, extra),
            PodCidr::Unknown => LabAgent::start_without_pod_cidr(&mut lab, &dir, &log),
        }
        .expect("agent");
        Env { agent, dir, lab }
    }

    fn wait(&self, count: u16) {
        self.agent
            .wait_backends(VIP, 80, PROTO_TCP, count, Duration::from_secs(20))
            .expect("synced");
    }

    fn set_endpoints(&self, endpoints: &[(&str, &str)], usable: u16) {
        let tmp = self.dir.join(".echo.tmp");
        std::fs::write(&tmp, echo_manifest(endpoints, &self.lab)).unwrap();
        std::fs::rename(&tmp, self.dir.join("echo.yaml")).unwrap();
        self.wait(usable);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- svc-agent log ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_file(&self.agent.log);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const READY: &str = "{ready: true}";
const SERVING_TERMINATING: &str = "{ready: false, serving: true, terminating: true}";
const NOT_SERVING_TERMINATING: &str = "{ready: false, serving: false, terminating: true}";

#[test]
fn masquerade_all_masquerades_pod_traffic_too() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(&[("p1", READY)], PodCidr::Known, &["--masquerade-all"]);
    env.wait(1);
    let reply = tcp_request(env.lab.client_ns(), SVC, "x", TIMEOUT).expect("request");
    assert_ne!(
        *reply.client.ip(),
        CLIENT_IP,
        "--masquerade-all: the pod's address must not reach the backend"
    );
    assert!(
        [NODE_EXT_IP, env.lab.node(1).gateway].contains(reply.client.ip()),
        "masqueraded to a node address, saw {}",
        reply.client
    );
}

/// externalTrafficPolicy Local on every external address (NodePort 30081, LoadBalancer IP
/// 203.0.113.20, externalIP 198.51.100.20, endpoint p2 on this node), and a NodePort
/// Service with policy Cluster (30080, endpoint p3).
const EXTERNAL_SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: local-ext, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalTrafficPolicy: Local
  externalIPs: ["198.51.100.20"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081}
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.20}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-ext-1
  namespace: default
  labels: {kubernetes.io/service-name: local-ext}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.12"], conditions: {ready: true}, nodeName: node1}]
---
apiVersion: v1
kind: Service
metadata: {name: cluster-np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.21
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cluster-np-1
  namespace: default
  labels: {kubernetes.io/service-name: cluster-np}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.13"], conditions: {ready: true}, nodeName: node1}]
"#;

/// kube-proxy's masqueradeAll marks traffic matched on a cluster IP; it leaves the
/// NodePorts, LoadBalancer IPs and externalIPs of an externalTrafficPolicy Local Service
/// alone (TestExternalTrafficPolicyLocal's rows keep `masq: false`), from outside and
/// from pods alike. Real packets, with --masquerade-all: who sees which source.
#[test]
fn masquerade_all_is_for_cluster_ips_only() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up_with(
        &[("p1", READY)],
        PodCidr::Known,
        &["--masquerade-all", "--node-name", "node1"],
        EXTERNAL_SERVICES,
    );
    for cidr in ["198.51.100.0/24", "203.0.113.0/24"] {
        env.lab.ext_route(cidr, 1).expect("ext route");
    }
    env.wait(1);
    for (vip, count) in [
        (Ipv4Addr::new(10, 96, 0, 20), 1),
        (Ipv4Addr::new(203, 0, 113, 20), 1),
    ] {
        env.agent
            .wait_backends(vip, 80, PROTO_TCP, count, Duration::from_secs(20))
            .expect("synced");
    }
    let ext = env.lab.ext_ns().to_string();
    let client = env.lab.client_ns().to_string();
    let p1 = env.lab.pod_ns("p1").to_string();
    let masq = |ip: Ipv4Addr| [NODE_EXT_IP, env.lab.node(1).gateway].contains(&ip);
    enum Sees {
        Masqueraded,
        Own(Ipv4Addr),
    }
    use Sees::*;
    let sa = |a: &str| -> SocketAddrV4 { a.parse().unwrap() };
    let rows: [(&str, &str, SocketAddrV4, &str, Sees); 12] = [
        ("pod -> ClusterIP", &client, SVC, "p1", Masqueraded),
        ("outside -> ClusterIP", &ext, SVC, "p1", Masqueraded),
        ("hairpin p1 -> ClusterIP", &p1, SVC, "p1", Masqueraded),
        (
            "pod -> ClusterIP of the ETP Local Service",
            &client,
            sa("10.96.0.20:80"),
            "p2",
            Masqueraded,
        ),
        (
            "outside -> NodePort (ETP Local)",
            &ext,
            sa("192.0.2.1:30081"),
            "p2",
            Own(EXT_IP),
        ),
        (
            "outside -> LoadBalancer IP (ETP Local)",
            &ext,
            sa("203.0.113.20:80"),
            "p2",
            Own(EXT_IP),
        ),
        (
            "outside -> externalIP (ETP Local)",
            &ext,
            sa("198.51.100.20:80"),
            "p2",
            Own(EXT_IP),
        ),
        (
            "pod -> NodePort (ETP Local)",
            &client,
            sa("192.0.2.1:30081"),
            "p2",
            Own(CLIENT_IP),
        ),
        (
            "pod -> LoadBalancer IP (ETP Local)",
            &client,
            sa("203.0.113.20:80"),
            "p2",
            Own(CLIENT_IP),
        ),
        (
            "pod -> externalIP (ETP Local)",
            &client,
            sa("198.51.100.20:80"),
            "p2",
            Own(CLIENT_IP),
        ),
        (
            "outside -> NodePort (ETP Cluster)",
            &ext,
            sa("192.0.2.1:30080"),
            "p3",
            Masqueraded,
        ),
        (
            "pod -> NodePort (ETP Cluster)",
            &client,
            sa("192.0.2.1:30080"),
            "p3",
            Masqueraded,
        ),
    ];
    let mut failures = Vec::new();
    for (what, ns, to, pod, sees) in &rows {
        match tcp_request(ns, *to, "x", TIMEOUT) {
            Err(e) => failures.push(format!("{what}: {e}")),
            Ok(r) if r.pod != *pod => failures.push(format!("{what}: reached {}", r.pod)),
            Ok(r) => {
                let ok = match sees {
                    Masqueraded => masq(*r.client.ip()),
                    Own(ip) => r.client.ip() == ip,
                };
                if !ok {
                    let want = match sees {
                        Masqueraded => "a node address".to_string(),
                        Own(ip) => ip.to_string(),
                    };
                    failures.push(format!("{what}: {pod} saw {}, expected {want}", r.client));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn without_a_pod_cidr_cluster_ip_traffic_is_not_masqueraded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(&[("p1", READY)], PodCidr::Unknown, &[]);
    env.wait(1);
    let reply = tcp_request(env.lab.ext_ns(), SVC, "x", TIMEOUT).expect("request from outside");
    assert_eq!(
        *reply.client.ip(),
        EXT_IP,
        "no pod CIDR: the outside client's address is kept"
    );
    let reply = tcp_request(env.lab.client_ns(), SVC, "x", TIMEOUT).expect("request from a pod");
    assert_eq!(*reply.client.ip(), CLIENT_IP);
}

#[test]
fn established_flows_keep_a_terminating_backend_new_flows_do_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(&[("p1", READY), ("p2", READY)], PodCidr::Known, &[]);
    env.wait(2);
    let mut session = TcpSession::connect(env.lab.client_ns(), SVC, TIMEOUT).expect("connect");
    let pinned = session.exchange("before").expect("exchange").pod;
    let other = if pinned == "p1" { "p2" } else { "p1" };

    for (conditions, what) in [
        (SERVING_TERMINATING, "serving-terminating"),
        (NOT_SERVING_TERMINATING, "not serving"),
    ] {
        env.set_endpoints(&[(pinned.as_str(), conditions), (other, READY)], 1);
        let reply = session
            .exchange(what)
            .unwrap_or_else(|e| panic!("the flow broke when its backend became {what}: {e}"));
        assert_eq!(
            reply.pod, pinned,
            "the established flow moved when its backend became {what}"
        );
        let new: BTreeSet<String> = (0..20)
            .map(|i| {
                tcp_request(env.lab.client_ns(), SVC, "new", TIMEOUT)
                    .unwrap_or_else(|e| panic!("new flow {i}: {e}"))
                    .pod
            })
            .collect();
        assert_eq!(
            new,
            BTreeSet::from([other.to_string()]),
            "new flows with {pinned} {what}"
        );
    }
}

#[test]
fn only_not_serving_endpoints_means_no_endpoints() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(
        &[
            ("p1", NOT_SERVING_TERMINATING),
            ("p2", "{ready: false, serving: false}"),
        ],
        PodCidr::Known,
        &[],
    );
    env.wait(0);
    let result = in_netns(env.lab.client_ns(), || {
        TcpStream::connect_timeout(&SVC.into(), TIMEOUT)
    });
    assert_eq!(
        result.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "endpoints that are not serving are never used: the Service rejects"
    );
    // Only serving-terminating ones: they are used.
    env.set_endpoints(
        &[("p1", NOT_SERVING_TERMINATING), ("p3", SERVING_TERMINATING)],
        1,
    );
    let reply = tcp_request(env.lab.client_ns(), SVC, "x", TIMEOUT)
        .expect("serving-terminating endpoint used");
    assert_eq!(reply.pod, "p3");
}
