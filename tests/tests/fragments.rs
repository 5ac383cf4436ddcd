//! End to end: UDP datagrams larger than the lab's MTU (1500), which the sending kernel
//! cuts into IPv4 fragments, to a Service and back (svc-ebpf/src/frag.rs). Datagrams of 4,
//! 16 and 60 KB each way, and small questions with 4 and 60 KB answers (DNS with EDNS,
//! CoreDNS behind the kube-dns ClusterIP): from a pod to a ClusterIP (TC on the pod's
//! interface, no masquerade), from outside to the ClusterIP and to a NodePort (XDP on eth0,
//! masqueraded to the node), and to a Service without endpoints (rejected once, the rest
//! of the datagram dropped); and on two nodes, to a backend on the other node, whose
//! answers come back through XDP on the client's node. The echo server checks every
//! request byte for byte and answers
//! with exactly the size asked for; the client checks the answer byte for byte and that it
//! comes from the Service address. The verdict counters show every fragment after the
//! first was translated by the program that should have (exact counts: `ceil((payload +
//! 8) / 1480) - 1` per datagram).
//!
//! kube-proxy's packet-flow tests (pkg/proxy/nftables/proxier_test.go) have no fragment
//! cases: netfilter reassembles before its NAT rules run. The rows here are their basic
//! flows ("pod to cluster IP", "external to cluster IP" masqueraded, "external to
//! NodePort", "cluster IP with no endpoints" rejected) with datagrams above the MTU.
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_UDP, Verdict};
use svc_lab::{
    BACKENDS, CLIENT_IP, Lab, NODE_EXT_IP, UdpSession, agent::LabAgent, echo::big_request, in_netns,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(5);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const EMPTY_SVC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 11), 80);
const NODE_PORT: u16 = 30053;
/// The sizes the issue asks for, each way.
const SIZES: [usize; 3] = [4096, 16_384, 60_000];
/// DNS-like: a small question, large answers.
const QUESTION: usize = 64;
const ANSWERS: [usize; 2] = [4096, 60_000];

/// A NodePort Service for UDP in front of the echo pods (externalTrafficPolicy Cluster:
/// masqueraded from outside).
const NODEPORT_YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: dns-np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.53
  selector: {app: echo}
  ports:
    - {name: dns, protocol: UDP, port: 53, targetPort: 8080, nodePort: 30053}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-np-1
  namespace: default
  labels: {kubernetes.io/service-name: dns-np}
addressType: IPv4
ports:
  - {name: dns, protocol: UDP, port: 8080}
endpoints:
  - addresses: ["10.244.1.11"]
  - addresses: ["10.244.1.12"]
  - addresses: ["10.244.1.13"]
"#;

/// Fragments after the first of a UDP datagram with `payload` bytes over an MTU of 1500
/// (1480 bytes of IPv4 payload per fragment).
fn later_fragments(payload: usize) -> u64 {
    (payload + 8).div_ceil(1480) as u64 - 1
}

struct Env {
    agent: LabAgent,
    dir: PathBuf,
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up().expect("lab up");
        let dir = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for f in ["echo-clusterip.yaml", "no-endpoints.yaml"] {
            std::fs::copy(examples.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("dns-np.yaml"), NODEPORT_YAML).unwrap();
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let agent = LabAgent::start(&mut lab, &dir, &log).expect("start agent");
        let env = Env { agent, dir, lab };
        for (vip, port, count) in [(VIP, 80, 3), (NODE_EXT_IP, NODE_PORT, 3)] {
            env.agent
                .wait_backends(vip, port, PROTO_UDP, count, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{vip}:{port}/UDP: {e}"));
        }
        env.agent
            .wait_backends(*EMPTY_SVC.ip(), 80, PROTO_UDP, 0, TIMEOUT)
            .expect("the empty Service");
        env
    }

    /// The SVC_STATS counter of `v`, summed over CPUs.
    fn count(&self, v: Verdict) -> u64 {
        self.agent.verdict_count(v)
    }

    fn counts(&self, verdicts: &[Verdict]) -> Vec<u64> {
        verdicts.iter().map(|v| self.count(*v)).collect()
    }

    /// Sends `len` bytes from `ns` to `to` asking for `reply_len` back, on a new socket (a
    /// new flow); checks the answer (intact, from `to`), that an echo pod answered and
    /// that it saw the client as `seen` (the port too when given: a pod's own or a kept
    /// masquerade port). The answering pod.
    fn exchange(
        &self,
        ns: &str,
        to: SocketAddrV4,
        len: usize,
        reply_len: usize,
        seen: Ipv4Addr,
    ) -> String {
        let what = format!("{len} bytes to {to}, {reply_len} back");
        let session = UdpSession::bind(ns).expect("bind");
        let reply = session
            .request_sized(to, len, reply_len, TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(BACKENDS.contains(&reply.pod.as_str()), "{what}: {reply:?}");
        assert_eq!(*reply.client.ip(), seen, "{what}: the source the pod saw");
        if seen == CLIENT_IP {
            assert_eq!(
                reply.client.port(),
                session.local_addr().unwrap().port(),
                "{what}: a pod's source is kept"
            );
        }
        reply.pod
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- svc-agent log ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.agent.log);
    }
}

const FRAGMENT_VERDICTS: [Verdict; 4] = [
    Verdict::DnatFragment,
    Verdict::RevNatFragment,
    Verdict::PassFragment,
    Verdict::DropFragment,
];

#[test]
fn large_datagrams_from_a_pod_to_a_clusterip_and_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let client = env.lab.client_ns().to_string();
    let before = env.counts(&FRAGMENT_VERDICTS);
    let (mut requests, mut answers) = (0, 0);
    let mut pods = std::collections::BTreeSet::new();
    for round in 0..3 {
        for size in SIZES {
            pods.insert(env.exchange(&client, SVC, size, size, CLIENT_IP));
            requests += later_fragments(size);
            answers += later_fragments(size);
        }
        for answer in ANSWERS {
            pods.insert(env.exchange(&client, SVC, QUESTION, answer, CLIENT_IP));
            answers += later_fragments(answer);
        }
        println!("round {round}: answered by {pods:?}");
    }
    let after = env.counts(&FRAGMENT_VERDICTS);
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // Requests: TC on the client's interface. Answers: TC on the backend pods' interfaces.
    // Nothing passed untranslated or dropped.
    assert_eq!(
        delta,
        vec![requests, answers, 0, 0],
        "fragments after the first: {FRAGMENT_VERDICTS:?}"
    );
    println!(
        "pod -> ClusterIP: {requests} request and {answers} answer fragments after the first translated, answered by {pods:?}"
    );
}

#[test]
fn large_datagrams_from_outside_through_xdp() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let ext = env.lab.ext_ns().to_string();
    let node_port = SocketAddrV4::new(NODE_EXT_IP, NODE_PORT);
    let before = env.counts(&FRAGMENT_VERDICTS);
    let (mut requests, mut answers) = (0, 0);
    for to in [SVC, node_port] {
        for size in SIZES {
            // From outside the pod CIDR: masqueraded to the node (ClusterIP from outside;
            // NodePort with externalTrafficPolicy Cluster).
            env.exchange(&ext, to, size, size, NODE_EXT_IP);
            requests += later_fragments(size);
            answers += later_fragments(size);
        }
        for answer in ANSWERS {
            env.exchange(&ext, to, QUESTION, answer, NODE_EXT_IP);
            answers += later_fragments(answer);
        }
    }
    let after = env.counts(&FRAGMENT_VERDICTS);
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // Requests: XDP on eth0 translates them and counts them, once: TC on eth0 then sees
    // the translated ones with XDP's mark and does not count them again (it counted each
    // as pass_fragment before). Answers: TC on the backend pods' interfaces.
    assert_eq!(
        delta,
        vec![requests, answers, 0, 0],
        "fragments after the first: {FRAGMENT_VERDICTS:?}"
    );
    println!(
        "outside -> ClusterIP and NodePort: {requests} request fragments after the first translated by XDP, {answers} answer fragments by TC"
    );
}

/// Two nodes with one agent each serving examples/two-node: `web` (10.96.1.10:80/UDP,
/// NodePort 30080) has a1 on node1 and b1 on node2. Large datagrams from pod ca (node1) to
/// the ClusterIP and from outside to node1's NodePort, until both backends answered each
/// kind: the answers of b1 come back to node1 through its eth0 (XDP, then TC), reverse
/// translated fragment by fragment there.
#[test]
fn large_datagrams_to_a_backend_on_the_other_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::up_two_nodes().expect("two-node lab");
    let dir = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-node/services.yaml");
    std::fs::copy(src, dir.join("services.yaml")).expect("copy manifests");
    let web = Ipv4Addr::new(10, 96, 1, 10);
    let mut agents = Vec::new();
    for n in [1, 2] {
        let log = std::env::temp_dir().join(format!("svl-{}-agent{n}.log", lab.id()));
        let name = lab.node(n).name.clone();
        let agent = LabAgent::start_in(&mut lab, n, &dir, &log, &["--node-name", &name])
            .expect("start agent");
        agent
            .wait_backends(web, 80, PROTO_UDP, 2, Duration::from_secs(20))
            .expect("agent synced");
        agents.push(agent);
    }
    let env = Env {
        agent: agents.remove(0),
        dir,
        lab,
    };
    let _node2 = TwoNodeAgent(agents.remove(0));
    let ca = env.lab.client_on(1).ns.clone();
    let ext = env.lab.ext_ns().to_string();
    let cases = [
        (
            ca.as_str(),
            SocketAddrV4::new(web, 80),
            env.lab.pod_ip("ca"),
        ),
        (
            ext.as_str(),
            SocketAddrV4::new(NODE_EXT_IP, 30080),
            NODE_EXT_IP,
        ),
    ];
    let before = env.count(Verdict::RevNatFragment);
    for (ns, to, seen) in cases {
        for (len, reply_len) in [
            (4096, 4096),
            (16_384, 16_384),
            (60_000, 60_000),
            (64, 60_000),
        ] {
            let mut pods = std::collections::BTreeSet::new();
            // Each new flow picks one of the two backends at random: 40 tries leave a
            // chance of 2^-39 of missing one.
            for _ in 0..40 {
                let session = UdpSession::bind(ns).expect("bind");
                let reply = session
                    .request_sized(to, len, reply_len, TIMEOUT)
                    .unwrap_or_else(|e| panic!("{len} bytes from {ns} to {to}: {e}"));
                assert_eq!(*reply.client.ip(), seen, "{len} bytes to {to}");
                pods.insert(reply.pod);
                if pods.len() == 2 {
                    break;
                }
            }
            assert_eq!(
                pods.into_iter().collect::<Vec<_>>(),
                ["a1", "b1"],
                "{len} bytes to {to}: both backends answer"
            );
        }
    }
    assert!(env.count(Verdict::RevNatFragment) > before);
}

/// Stops the second node's agent when dropped (the first is the [`Env`]'s).
struct TwoNodeAgent(LabAgent);

impl Drop for TwoNodeAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- node2 svc-agent log ---\n{}", self.0.log_text());
        }
        let _ = self.0.process.stop();
        let _ = std::fs::remove_file(&self.0.log);
    }
}

#[test]
fn a_large_datagram_to_a_service_without_endpoints_is_rejected_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let before = env.counts(&[Verdict::RejectIcmp, Verdict::DropFragment]);
    let size = 16_384;
    // A connected socket: the ICMP port unreachable surfaces as ECONNREFUSED.
    let result = in_netns(env.lab.client_ns(), || -> io::Result<usize> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(EMPTY_SVC)?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.send(&big_request(size, size))?;
        sock.recv(&mut [0u8; 64])
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("expected ECONNREFUSED from {EMPTY_SVC}, got {other:?}"),
    }
    let after = env.counts(&[Verdict::RejectIcmp, Verdict::DropFragment]);
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (1, later_fragments(size)),
        "one reject for the first fragment, the rest dropped (reject_icmp, drop_fragment)"
    );
}
