//! End to end: socket-level load balancing for pods (`--socket-lb`, svc-ebpf/src/sock.rs
//! "Pods"). The client pod's processes live in a cgroup under the node's, as a kubelet
//! puts them, and the agent's `--cgroup` is the node's, so the socket programs see the
//! pod's connect() calls; the network namespace tells them apart from the node's own.
//! - `all`: a pod's TCP connections and UDP flows to a ClusterIP go straight to a backend
//!   at connect(): the socket counter goes up by one per connection and TC translates
//!   none of them (no per-packet NAT); a session-affinity Service is still left to TC
//!   (keyed on the pod's address);
//! - `node` (the default): the pod's connections leave untouched and TC translates every
//!   one, while the node's own processes are still translated at the socket;
//! - `off`: no socket programs, even with `--cgroup`.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_TCP, Verdict};
use svc_lab::{
    Lab,
    agent::{LabAgent, wait_for},
};

static SERIAL: Mutex<()> = Mutex::new(());

const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 10);
const STICKY: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 11);
const PORT: u16 = 80;
const CONNECTIONS: usize = 12;
const TIMEOUT: Duration = Duration::from_secs(2);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.9.10
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
    - {name: dns, protocol: UDP, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  clusterIP: 10.96.9.11
  sessionAffinity: ClientIP
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
"#;

fn slice(service: &str) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports:\n  - {{name: http, protocol: TCP, port: 8080}}\n  - {{name: dns, protocol: UDP, port: 8080}}\nendpoints:\n  - {{addresses: [\"10.244.1.11\"]}}\n  - {{addresses: [\"10.244.1.12\"]}}\n  - {{addresses: [\"10.244.1.13\"]}}\n"
    )
}

struct Env {
    agent: Option<LabAgent>,
    manifests: PathBuf,
    cgroup: String,
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up().expect("lab up");
        let manifests = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let yaml = format!("{MANIFESTS}{}{}", slice("web"), slice("sticky"));
        std::fs::write(manifests.join("services.yaml"), yaml).expect("write manifests");
        let cgroup = lab.node_cgroup(1).expect("node cgroup");
        lab.pod_cgroup(1, "client").expect("client pod cgroup");
        Env {
            agent: None,
            manifests,
            cgroup: cgroup.display().to_string(),
            lab,
        }
    }

    /// (Re)starts the agent with `--socket-lb mode` on the node's cgroup.
    fn agent(&mut self, mode: &str) {
        if let Some(a) = self.agent.take() {
            let _ = a.process.stop();
            let _ = std::fs::remove_file(&a.log);
        }
        let log = std::env::temp_dir().join(format!("svl-{}-agent-{mode}.log", self.lab.id()));
        let agent = LabAgent::start_in(
            &mut self.lab,
            1,
            &self.manifests,
            &log,
            &["--cgroup", &self.cgroup, "--socket-lb", mode],
        )
        .expect("start agent");
        for vip in [WEB, STICKY] {
            agent
                .wait_backends(vip, PORT, PROTO_TCP, 3, Duration::from_secs(20))
                .expect("agent synced");
        }
        // The maps already hold the Services (an earlier agent's): the new agent has
        // switched every link to its programs once it says the maps are ready.
        assert!(
            wait_for(Duration::from_secs(20), || agent
                .log_text()
                .contains("maps ready")),
            "the agent with --socket-lb {mode} never got ready:\n{}",
            agent.log_text()
        );
        self.agent = Some(agent);
    }

    /// The SVC_STATS counter of `v`, summed over CPUs.
    fn count(&self, v: Verdict) -> u64 {
        self.agent.as_ref().expect("agent running").verdict_count(v)
    }

    /// CONNECTIONS connections (UDP: flows) of one client pod process to vip:PORT: the
    /// pods that answered, and how much the socket and the TC new-flow counters rose.
    fn pod_connections(&self, vip: Ipv4Addr, udp: bool) -> (BTreeSet<String>, u64, u64) {
        let (sock0, tc0) = (
            self.count(Verdict::SockTranslate),
            self.count(Verdict::DnatNew),
        );
        let to = SocketAddrV4::new(vip, PORT);
        let replies = self
            .lab
            .pod_requests(1, "client", to, udp, CONNECTIONS, TIMEOUT);
        let pods = replies
            .into_iter()
            .map(|r| match r {
                Ok(r) => r.pod,
                Err(e) => panic!("client pod to {to} (udp: {udp}): {e}"),
            })
            .collect();
        (
            pods,
            self.count(Verdict::SockTranslate) - sock0,
            self.count(Verdict::DnatNew) - tc0,
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            if std::thread::panicking() {
                eprintln!("--- agent log ---\n{}", a.log_text());
            }
            let _ = a.process.stop();
            let _ = std::fs::remove_file(&a.log);
        }
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

const BACKENDS: [&str; 3] = ["p1", "p2", "p3"];

fn assert_backends(pods: &BTreeSet<String>, what: &str) {
    assert!(
        !pods.is_empty() && pods.iter().all(|p| BACKENDS.contains(&p.as_str())),
        "{what}: answered by {pods:?}"
    );
}

#[test]
fn pods_sockets_translated_only_when_asked() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::up();

    env.agent("all");
    for udp in [false, true] {
        let (pods, sock, tc) = env.pod_connections(WEB, udp);
        assert_backends(&pods, "all");
        assert_eq!(
            (sock, tc),
            (CONNECTIONS as u64, 0),
            "--socket-lb all, udp {udp}: every connection translated at the socket, none by TC"
        );
    }
    let (pods, sock, tc) = env.pod_connections(STICKY, false);
    assert_backends(&pods, "all, affinity");
    assert_eq!(
        pods.len(),
        1,
        "ClientIP affinity keeps one backend: {pods:?}"
    );
    assert_eq!(
        (sock, tc),
        (0, CONNECTIONS as u64),
        "session affinity is keyed on the pod's address: left to TC"
    );

    env.agent("node");
    let (pods, sock, tc) = env.pod_connections(WEB, false);
    assert_backends(&pods, "node");
    assert_eq!(
        (sock, tc),
        (0, CONNECTIONS as u64),
        "--socket-lb node: the pod's connections are TC's"
    );
    // The node's own processes still go through the socket programs.
    let sock0 = env.count(Verdict::SockTranslate);
    let node = env
        .lab
        .node_requests(1, None, SocketAddrV4::new(WEB, PORT), false, 3, TIMEOUT);
    assert!(node.iter().all(|r| r.is_ok()), "node process: {node:?}");
    assert_eq!(env.count(Verdict::SockTranslate) - sock0, 3);

    env.agent("off");
    let (pods, sock, tc) = env.pod_connections(WEB, false);
    assert_backends(&pods, "off");
    assert_eq!((sock, tc), (0, CONNECTIONS as u64), "--socket-lb off");
    // No socket programs: the node's own connection is not translated (nothing answers
    // the Service address from the node), and the counter stays.
    let sock0 = env.count(Verdict::SockTranslate);
    let node = env.lab.node_requests(
        1,
        None,
        SocketAddrV4::new(WEB, PORT),
        false,
        1,
        Duration::from_secs(1),
    );
    assert!(
        node.iter().all(|r| r.is_err()),
        "node process with off: {node:?}"
    );
    assert_eq!(env.count(Verdict::SockTranslate), sock0);
}
