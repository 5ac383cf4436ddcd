//! End to end on one node: the rules of the semantics note not covered by the two-node
//! table: `--masquerade-all`, no masquerading without a known pod CIDR, established flows
//! keeping a terminating backend while new flows avoid it, and not-serving endpoints never
//! used (a Service whose endpoints are all not serving rejects).
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
        let mut lab = Lab::up().expect("lab");
        let dir = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("echo.yaml"), echo_manifest(endpoints, &lab)).unwrap();
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
