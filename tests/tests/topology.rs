//! End to end: topology-aware routing (spec.trafficDistribution and EndpointSlice hints,
//! kube-proxy's pkg/proxy/topology.go), with real packets.
//! - On two nodes (node1 in zone-a, node2 in zone-b, given by --node-zone; manifests in
//!   examples/two-node/topology.yaml): a PreferClose Service whose slices hint zone-a to
//!   node1's pods and zone-b to node2's sends a pod on node1 only to node1's pods and a pod
//!   on node2 only to node2's; one hint removed, both reach every pod again; put back, an
//!   established connection to the other zone keeps its backend while new ones stay in the
//!   zone. PreferSameNode (forNodes) keeps node1's clients on node1's pod and sends node2's,
//!   for which no endpoint is hinted, to its zone. Local traffic policies use the local set,
//!   which ignores the hints, while pod traffic to an externalTrafficPolicy Local address
//!   (short-circuited to the cluster set) follows them.
//! - In Kubernetes mode (one node, the fake API server): the zone comes from the Node's
//!   topology.kubernetes.io/zone label and follows its changes; --node-zone overrides it.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use serde_json::{Value, json};
use svc_common::PROTO_TCP;
use svc_lab::{
    Lab, TcpSession,
    agent::{AgentSource, LabAgent},
    fake_apiserver::FakeApiServer,
    in_netns, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(2);
const SYNC: Duration = Duration::from_secs(20);

const CLOSE: (&str, u16) = ("10.96.1.40", 80);
const SAME_NODE: (&str, u16) = ("10.96.1.41", 80);
const LOCAL_EXT: (&str, u16) = ("10.96.1.42", 80);
const LOCAL_INT: (&str, u16) = ("10.96.1.43", 80);

/// b2's entry in the slice close-b, with and without its hint.
const B2_HINTED: &str = r#"  - {addresses: ["10.244.2.12"], nodeName: node2, zone: zone-b, hints: {forZones: [{name: zone-b}]}}"#;
const B2_UNHINTED: &str = r#"  - {addresses: ["10.244.2.12"], nodeName: node2, zone: zone-b}"#;

#[derive(Clone, Copy, Debug)]
enum Src {
    Outside,
    Pod(&'static str),
    /// A process of node N itself (socket-level load balancing).
    NodeItself(usize),
}

#[derive(Clone, Copy, Debug)]
enum Seen {
    /// The backend sees the client's own address.
    Client,
    /// The backend sees node N's address (masquerade).
    Node(usize),
    /// One of node N's own addresses (eth0, or the pod gateway for a local pod).
    NodeAny(usize),
}

struct Row {
    what: &'static str,
    from: Src,
    to: (&'static str, u16),
    backends: &'static [&'static str],
    seen: Seen,
}

const fn row(
    what: &'static str,
    from: Src,
    to: (&'static str, u16),
    backends: &'static [&'static str],
    seen: Seen,
) -> Row {
    Row {
        what,
        from,
        to,
        backends,
        seen,
    }
}

use Seen::*;
use Src::*;

/// With every hint in place. ext routes ClusterIPs via node1 (zone-a).
const TABLE: &[Row] = &[
    row(
        "PreferClose from a pod on node1 (zone-a): zone-a's pods",
        Pod("ca"),
        CLOSE,
        &["a1", "a2"],
        Client,
    ),
    row(
        "PreferClose from a pod on node2 (zone-b): zone-b's pods",
        Pod("cb"),
        CLOSE,
        &["b1", "b2"],
        Client,
    ),
    row(
        "PreferClose from outside, entering at node1: node1's zone, masqueraded",
        Outside,
        CLOSE,
        &["a1", "a2"],
        Node(1),
    ),
    row(
        "PreferClose from node2 itself (socket level): zone-b's pods",
        NodeItself(2),
        CLOSE,
        &["b1", "b2"],
        NodeAny(2),
    ),
    row(
        "PreferSameNode from a pod on node1: the endpoint hinted for node1 only",
        Pod("ca"),
        SAME_NODE,
        &["a1"],
        Client,
    ),
    row(
        "PreferSameNode from a pod on node2, no endpoint hinted for it: its zone",
        Pod("cb"),
        SAME_NODE,
        &["b1", "b2"],
        Client,
    ),
    row(
        "ETP Local NodePort from outside on node1: the local pod, hints ignored",
        Outside,
        ("192.0.2.1", 30090),
        &["a1"],
        Client,
    ),
    row(
        "ETP Local NodePort from outside on node2: the local pod, hints ignored",
        Outside,
        ("192.0.2.2", 30090),
        &["b1"],
        Client,
    ),
    row(
        "ETP Local Service's ClusterIP from a pod on node1: the cluster set follows the hints",
        Pod("ca"),
        LOCAL_EXT,
        &["b1"],
        Client,
    ),
    row(
        "ETP Local NodePort from a pod on node1: short-circuited to the hinted cluster set",
        Pod("ca"),
        ("192.0.2.1", 30090),
        &["b1"],
        Client,
    ),
    row(
        "ITP Local from a pod on node1: the local pod, hints ignored",
        Pod("ca"),
        LOCAL_INT,
        &["a1"],
        Client,
    ),
    row(
        "ITP Local from a pod on node2: the local pod, hints ignored",
        Pod("cb"),
        LOCAL_INT,
        &["b1"],
        Client,
    ),
];

struct Env {
    agents: Vec<LabAgent>,
    manifests: PathBuf,
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up_two_nodes().expect("two-node lab");
        let manifests = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&manifests).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-node/topology.yaml");
        std::fs::copy(src, manifests.join("topology.yaml")).expect("copy manifests");
        lab.ext_route("10.96.0.0/12", 1).expect("ext route");
        let mut agents = Vec::new();
        for (n, zone) in [(1, "zone-a"), (2, "zone-b")] {
            let log = std::env::temp_dir().join(format!("svl-{}-agent{n}.log", lab.id()));
            let name = lab.node(n).name.clone();
            let cgroup = lab
                .node_cgroup(n)
                .expect("node cgroup")
                .display()
                .to_string();
            let args = [
                "--node-name",
                name.as_str(),
                "--node-zone",
                zone,
                "--cgroup",
                cgroup.as_str(),
            ];
            let agent =
                LabAgent::start_in(&mut lab, n, &manifests, &log, &args).expect("start agent");
            agents.push(agent);
        }
        let env = Env {
            agents,
            manifests,
            lab,
        };
        env.wait_close(2);
        for agent in &env.agents {
            agent
                .wait_backends(vip(LOCAL_INT.0), 80, PROTO_TCP, 1, SYNC)
                .expect("agent synced");
        }
        env
    }

    /// Waits until both agents give the PreferClose Service `n` backends for new flows.
    fn wait_close(&self, n: u16) {
        for agent in &self.agents {
            agent
                .wait_backends(vip(CLOSE.0), CLOSE.1, PROTO_TCP, n, SYNC)
                .unwrap_or_else(|e| panic!("node{}: {e}", agent.node));
        }
    }

    /// Rewrites the manifest with `from` replaced by `to` (which must be there once).
    fn edit(&self, from: &str, to: &str) {
        let path = self.manifests.join("topology.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{from:?} in the manifest");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    fn source_ns(&self, from: Src) -> String {
        match from {
            Outside => self.lab.ext_ns().to_string(),
            Pod(p) => self.lab.pod_ns(p).to_string(),
            NodeItself(n) => self.lab.node_ns_of(n).to_string(),
        }
    }

    fn source_ip(&self, from: Src) -> Ipv4Addr {
        match from {
            Outside => svc_lab::EXT_IP,
            Pod(p) => self.lab.pod_ip(p),
            NodeItself(n) => self.lab.node_ip(n),
        }
    }

    /// One request: (pod, source it saw).
    fn attempt(&self, from: Src, to: SocketAddrV4) -> Result<(String, Ipv4Addr), String> {
        match from {
            NodeItself(n) => self.node_attempt(n, to),
            _ => tcp_request(&self.source_ns(from), to, "topology", TIMEOUT)
                .map(|r| (r.pod, *r.client.ip()))
                .map_err(|e| e.to_string()),
        }
    }

    /// One TCP request from a process of node `n` (in its cgroup: socket-level load
    /// balancing), through python3 as service_types.rs does.
    fn node_attempt(&self, n: usize, to: SocketAddrV4) -> Result<(String, Ipv4Addr), String> {
        const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.sendall(b"node\n")
print(s.recv(200).decode().splitlines()[0])
"#;
        let out = self
            .lab
            .node_command(n, "python3")
            .map_err(|e| e.to_string())?
            .args(["-c", CLIENT, &to.ip().to_string(), &to.port().to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| format!("no reply: {}", String::from_utf8_lossy(&out.stderr)))?;
        let reply = svc_lab::EchoReply::parse(line).map_err(|e| e.to_string())?;
        Ok((reply.pod, *reply.client.ip()))
    }

    /// New connections: every one to a pod of `set`, with the expected source, and every
    /// pod of `set` hit within 48 (at least 8 made; 16 were too few for 4 pods: each was
    /// missed with a chance of 1 %).
    fn check(&self, row: &Row) -> Result<(), String> {
        let to = SocketAddrV4::new(vip(row.to.0), row.to.1);
        let mut hit = BTreeSet::new();
        for i in 0..48 {
            if i >= 8 && hit.len() == row.backends.len() {
                break;
            }
            let (pod, src) = self
                .attempt(row.from, to)
                .map_err(|e| format!("attempt {i}: {e}"))?;
            if !row.backends.contains(&pod.as_str()) {
                return Err(format!("reached {pod}, expected one of {:?}", row.backends));
            }
            let src_ok = match row.seen {
                Client => src == self.source_ip(row.from),
                Node(n) => src == self.lab.node_ip(n),
                NodeAny(n) => src == self.lab.node_ip(n) || src == self.lab.node(n).gateway,
            };
            if !src_ok {
                return Err(format!("{pod} saw source {src}, expected {:?}", row.seen));
            }
            hit.insert(pod);
        }
        if hit.len() != row.backends.len() {
            return Err(format!(
                "only {hit:?} of {:?} answered in 48 new connections",
                row.backends
            ));
        }
        Ok(())
    }

    fn check_all(&self, rows: &[Row]) {
        let failures: Vec<String> = rows
            .iter()
            .filter_map(|row| {
                self.check(row).err().map(|e| {
                    format!(
                        "{} ({:?} -> {}:{}): {e}",
                        row.what, row.from, row.to.0, row.to.1
                    )
                })
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} rows failed:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.agents {
                eprintln!("--- agent on node{} ---\n{}", a.node, a.log_text());
            }
        }
        for a in &self.agents {
            let _ = a.process.stop();
            let _ = std::fs::remove_file(&a.log);
        }
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

fn vip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn hints_keep_new_connections_in_the_zone_or_on_the_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    env.check_all(TABLE);

    // One ready endpoint without a hint: kube-proxy ignores the hints, every pod again.
    env.edit(B2_HINTED, B2_UNHINTED);
    env.wait_close(4);
    let all = &["a1", "a2", "b1", "b2"];
    env.check_all(&[
        row(
            "one hint missing, from node1",
            Pod("ca"),
            CLOSE,
            all,
            Client,
        ),
        row(
            "one hint missing, from node2",
            Pod("cb"),
            CLOSE,
            all,
            Client,
        ),
    ]);

    // An established connection from node1 to a zone-b pod, then the hint is back: new
    // connections stay in zone-a, the established one keeps its pod (kube-proxy's conntrack
    // entry outlives the change of hints; our maps keep the backend for its flows).
    let to = SocketAddrV4::new(vip(CLOSE.0), CLOSE.1);
    let (mut held, held_pod) = (0..64)
        .find_map(|_| {
            let mut s = TcpSession::connect(env.lab.pod_ns("ca"), to, TIMEOUT).ok()?;
            let pod = s.exchange("hold").ok()?.pod;
            pod.starts_with('b').then_some((s, pod))
        })
        .expect("a connection from ca to a zone-b pod in 64 tries");
    env.edit(B2_UNHINTED, B2_HINTED);
    env.wait_close(2);
    env.check_all(&[row(
        "hints back, from node1",
        Pod("ca"),
        CLOSE,
        &["a1", "a2"],
        Client,
    )]);
    for i in 0..5 {
        let reply = held
            .exchange("still here")
            .unwrap_or_else(|e| panic!("established connection, exchange {i}: {e}"));
        assert_eq!(reply.pod, held_pod, "the established connection moved");
    }
}

// ---- Kubernetes mode: the zone from the Node object ----

const ZONE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);

fn node_object(ip: Ipv4Addr, zone: Option<&str>) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": "node1"});
    if let Some(z) = zone {
        labels["topology.kubernetes.io/zone"] = json!(z);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node1", "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]},
    })
}

fn kubeconfig(dir: &Path, url: &str) -> PathBuf {
    svc_lab::kube::kubeconfig(dir, url).expect("writing the kubeconfig")
}

/// The pods that answered 24 new connections from the client pod.
fn answering(lab: &Lab) -> BTreeSet<String> {
    (0..24)
        .filter_map(|_| {
            tcp_request(
                lab.client_ns(),
                SocketAddrV4::new(ZONE_VIP, 80),
                "z",
                TIMEOUT,
            )
            .ok()
            .map(|r| r.pod)
        })
        .collect()
}

fn set(pods: &[&str]) -> BTreeSet<String> {
    pods.iter().map(|p| p.to_string()).collect()
}

#[test]
fn kubernetes_mode_takes_the_zone_from_the_node_label() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::up().expect("lab up");
    let server = in_netns(lab.node_ns(), FakeApiServer::start_local).expect("fake API server");
    let dir = std::env::temp_dir().join(format!("svl-{}-kube", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let kc = kubeconfig(&dir, &server.url());
    let node_ip = lab.node_ip(1);
    server.apply(node_object(node_ip, Some("zone-a")));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "zoned", "namespace": "default"},
        "spec": {
            "clusterIP": ZONE_VIP.to_string(), "clusterIPs": [ZONE_VIP.to_string()],
            "trafficDistribution": "PreferClose",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
    }));
    // What the EndpointSlice controller writes for PreferClose: p1 in zone-a, p2 and p3 in
    // zone-b (the lab runs them all on node1; their zones are the point here).
    let hinted = |ip: Ipv4Addr, zone: &str| {
        json!({
            "addresses": [ip.to_string()], "conditions": {"ready": true},
            "nodeName": "node1", "zone": zone, "hints": {"forZones": [{"name": zone}]},
        })
    };
    server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "zoned-abc12", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "zoned"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [
            hinted(lab.pod_ip("p1"), "zone-a"),
            hinted(lab.pod_ip("p2"), "zone-b"),
            hinted(lab.pod_ip("p3"), "zone-b"),
        ],
    }));

    let log = dir.join("agent.log");
    let agent = LabAgent::start_from(
        &mut lab,
        1,
        AgentSource::Kubeconfig(&kc),
        &log,
        &["--node-name", "node1"],
    )
    .expect("start agent");
    let wait = |agent: &LabAgent, n: u16| {
        agent
            .wait_backends(ZONE_VIP, 80, PROTO_TCP, n, SYNC)
            .unwrap()
    };
    wait(&agent, 1);
    assert_eq!(answering(&lab), set(&["p1"]), "zone-a from the label");

    // The label changes: the agent follows.
    server.apply(node_object(node_ip, Some("zone-b")));
    wait(&agent, 2);
    assert_eq!(answering(&lab), set(&["p2", "p3"]), "zone-b from the label");

    // No label: no zone, hints ignored.
    server.apply(node_object(node_ip, None));
    wait(&agent, 3);
    assert_eq!(answering(&lab), set(&["p1", "p2", "p3"]), "no zone");
    agent.process.stop().unwrap();

    // --node-zone wins over the label.
    server.apply(node_object(node_ip, Some("zone-b")));
    let agent = LabAgent::start_from(
        &mut lab,
        1,
        AgentSource::Kubeconfig(&kc),
        &log,
        &["--node-name", "node1", "--node-zone", "zone-a"],
    )
    .expect("start agent");
    wait(&agent, 1);
    assert_eq!(answering(&lab), set(&["p1"]), "--node-zone zone-a");
    agent.process.stop().unwrap();
}
