//! End to end on one node: what the node's own processes (in its network namespace and
//! its cgroup, so their calls go through the socket programs) get besides the Service
//! addresses every source shares, as kube-proxy gives it:
//! - localhost NodePorts: 127.0.0.1:<nodePort> reaches the Service (TCP and UDP), with the
//!   node's address as the source the backend sees, even with something listening on
//!   127.0.0.1:<nodePort> in the node; a NodePort without endpoints is refused. With
//!   `--localhost-nodeports=false` the call goes to whatever listens there (and is
//!   refused when nothing does); with `--node-port-addresses` it is served only when a
//!   CIDR contains 127.0.0.1 (kube-proxy: nodePortAddresses unset or including loopback);
//! - loadBalancerSourceRanges and the node: with the node's IP inside a Service's ranges
//!   its connections to the LoadBalancer IP are allowed, and so is a socket bound to the
//!   LoadBalancer IP itself (the node holds the VIP locally, so its traffic to it has the
//!   VIP as source: kube-proxy's "same node to LB, SNATted to LB" rule); with the node's
//!   IP outside the ranges both are refused (EPERM: kube-proxy DROPs), and outside
//!   clients and pods outside the ranges are dropped.
//!
//! cgroup sock_addr programs cannot run under BPF_PROG_TEST_RUN; the datapath fixtures
//! (policy.rs, source_ranges.rs) cover the packet side of the same rules.
use std::{
    collections::BTreeSet,
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::{
    Lab, NODE_EXT_IP,
    agent::{LabAgent, wait_for},
    in_netns, netns, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(2);
/// Most calls [`Env::node_reaches`] makes to see every backend of a random choice.
const MAX_CALLS: usize = 64;
/// How long a row that expects silence (a DROP) waits.
const DROP_WAIT: Duration = Duration::from_millis(700);
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// LoadBalancer IP of `lb-node`, whose ranges hold the node's IP (192.0.2.1).
const LB_NODE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
/// LoadBalancer IP of `lb-other`, whose ranges (10.0.0.0/8) do not.
const LB_OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}
    - {name: udp, protocol: UDP, port: 80, targetPort: 8080, nodePort: 30080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
  - {name: http, protocol: TCP, port: 8080}
  - {name: udp, protocol: UDP, port: 8080}
endpoints:
  - {addresses: ["10.244.1.11"], nodeName: node1}
  - {addresses: ["10.244.1.12"], nodeName: node1}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.11
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30087}
---
apiVersion: v1
kind: Service
metadata: {name: lb-node, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.12
  loadBalancerSourceRanges: [" 192.0.2.0/30 "]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30090}
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.12}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-node-1
  namespace: default
  labels: {kubernetes.io/service-name: lb-node}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.13"], nodeName: node1}]
---
apiVersion: v1
kind: Service
metadata: {name: lb-other, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.13
  loadBalancerSourceRanges: ["10.0.0.0/8"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30091}
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.11}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-other-1
  namespace: default
  labels: {kubernetes.io/service-name: lb-other}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.13"], nodeName: node1}]
"#;

/// A node process's client: `PROTO HOST PORT TIMEOUT [BIND]` connects (TCP, or a
/// connected UDP socket), optionally bound to BIND first, sends one line and prints the
/// first line of the answer, or `ERR <errno name>`.
const CLIENT: &str = r#"
import errno, socket, sys
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
bind = sys.argv[5] if len(sys.argv) > 5 else None
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    s.settimeout(timeout)
    if bind:
        s.bind((bind, 0))
    s.connect((host, port))
    s.sendall(b"node\n")
    print(s.recv(200).decode().splitlines()[0], flush=True)
except socket.timeout:
    print("ERR ETIMEDOUT", flush=True)
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, e.errno), flush=True)
"#;

#[derive(Clone, Copy, Debug)]
enum Proto {
    Tcp,
    Udp,
}

/// What one call of a node process got.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// An echo pod answered, having seen this source.
    Reached { pod: String, source: Ipv4Addr },
    /// The call failed with this errno name (ECONNREFUSED, EPERM, ETIMEDOUT, ...).
    Failed(String),
}

struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    log: PathBuf,
    cgroup: String,
    lab: Lab,
}

impl Env {
    /// The single-node lab, the agent serving MANIFESTS with the socket programs on the
    /// node's cgroup and `extra` arguments, its frontends programmed.
    fn up(extra: &[&str]) -> Env {
        let mut lab = Lab::up().expect("lab up");
        let manifests = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        std::fs::write(manifests.join("services.yaml"), MANIFESTS).expect("write manifests");
        let cgroup = lab
            .node_cgroup(1)
            .expect("node cgroup")
            .display()
            .to_string();
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let agent = Env::start(&mut lab, &manifests, &log, &cgroup, extra);
        let env = Env {
            agent,
            manifests,
            log,
            cgroup,
            lab,
        };
        env.wait_frontend(Ipv4Addr::new(10, 96, 0, 10), 80, PROTO_TCP, true);
        env
    }

    fn start(
        lab: &mut Lab,
        manifests: &Path,
        log: &Path,
        cgroup: &str,
        extra: &[&str],
    ) -> LabAgent {
        let mut args = vec!["--cgroup", cgroup, "--node-name", "node1"];
        args.extend_from_slice(extra);
        LabAgent::start_in(lab, 1, manifests, log, &args).expect("start agent")
    }

    /// Stops the agent and starts one with `extra` instead (on the same pins, which it
    /// adopts and brings to its own desired state).
    fn restart_with(&mut self, extra: &[&str]) {
        let _ = self.agent.process.stop();
        self.agent = Env::start(
            &mut self.lab,
            &self.manifests,
            &self.log,
            &self.cgroup,
            extra,
        );
    }

    /// Waits until the frontend vip:port/proto is in the maps (`present`) or not.
    fn wait_frontend(&self, vip: Ipv4Addr, port: u16, proto: u8, present: bool) {
        let ok = wait_for(Duration::from_secs(20), || {
            self.agent.backend_count(vip, port, proto).is_some() == present
        });
        assert!(
            ok,
            "frontend {vip}:{port}/{proto} {} after 20 s\n--- agent log ---\n{}",
            if present { "missing" } else { "still there" },
            self.agent.log_text()
        );
    }

    /// One call of a node process to `to`, optionally from a socket bound to `bind`.
    fn node_call(
        &self,
        proto: Proto,
        to: SocketAddrV4,
        bind: Option<Ipv4Addr>,
        timeout: Duration,
    ) -> Outcome {
        let mut cmd = self.lab.node_command(1, "python3").expect("node command");
        cmd.args(["-c", CLIENT])
            .arg(match proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            })
            .arg(to.ip().to_string())
            .arg(to.port().to_string())
            .arg(format!("{:.1}", timeout.as_secs_f64()));
        if let Some(b) = bind {
            cmd.arg(b.to_string());
        }
        let out = cmd.output().expect("run the node client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or_default().to_string();
        if let Some(errno) = line.strip_prefix("ERR ") {
            return Outcome::Failed(errno.trim().to_string());
        }
        match svc_lab::EchoReply::parse(&line) {
            Ok(r) => Outcome::Reached {
                pod: r.pod,
                source: *r.client.ip(),
            },
            Err(_) => Outcome::Failed(format!(
                "unexpected output {line:?}, stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    /// The node's own addresses a backend may see for a node process (its eth0, or the
    /// pod gateway it holds on the pod's interface).
    fn node_addresses(&self) -> [Ipv4Addr; 2] {
        [NODE_EXT_IP, self.lab.node(1).gateway]
    }

    /// At least `n` calls of node processes to `to`, each reaching one of `pods` and seeing
    /// one of the node's addresses, and every one of `pods` reached: calls go on (up to
    /// [`MAX_CALLS`]) until each has answered, since the backend choice is random (8 calls
    /// missed one of 2 pods in CI, as they do 1 time in 128).
    fn node_reaches(&self, proto: Proto, to: SocketAddrV4, pods: &[&str], n: usize) {
        let mut hit = BTreeSet::new();
        for i in 0..n.max(MAX_CALLS) {
            if i >= n && hit.len() == pods.len() {
                break;
            }
            match self.node_call(proto, to, None, TIMEOUT) {
                Outcome::Reached { pod, source } => {
                    assert!(
                        pods.contains(&pod.as_str()),
                        "{proto:?} {to} call {i}: reached {pod}, expected one of {pods:?}"
                    );
                    assert!(
                        self.node_addresses().contains(&source),
                        "{proto:?} {to} call {i}: {pod} saw {source}, expected a node address"
                    );
                    hit.insert(pod);
                }
                other => panic!("{proto:?} {to} call {i} from the node: {other:?}"),
            }
        }
        assert_eq!(
            hit.len(),
            pods.len(),
            "{proto:?} {to}: only {hit:?} of {pods:?} answered {} calls",
            n.max(MAX_CALLS)
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Whether the node-namespace listener got a connection (untranslated) since last asked.
fn listener_got_one(listener: &TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("listener accept: {e}"),
    }
}

#[test]
fn localhost_node_ports() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::up(&[]);
    let node_ip = env.lab.node(1).ip;
    // Something of the node's own listens on 127.0.0.1:30080: kube-proxy's DNAT in OUTPUT
    // comes before it, and so does the socket program.
    let listener = in_netns(env.lab.node_ns(), || TcpListener::bind(at(LO, 30080)))
        .expect("listener on 127.0.0.1:30080 in the node");
    listener.set_nonblocking(true).unwrap();

    // On by default.
    env.wait_frontend(LO, 30080, PROTO_TCP, true);
    env.wait_frontend(LO, 30080, PROTO_UDP, true);
    env.node_reaches(Proto::Tcp, at(LO, 30080), &["p1", "p2"], 12);
    env.node_reaches(Proto::Udp, at(LO, 30080), &["p1", "p2"], 12);
    assert!(
        !listener_got_one(&listener),
        "a call to 127.0.0.1:30080 went to the node's own listener, not the Service"
    );
    assert_eq!(
        env.node_call(Proto::Tcp, at(LO, 30087), None, TIMEOUT),
        Outcome::Failed("ECONNREFUSED".into()),
        "127.0.0.1 on a NodePort without endpoints: rejected"
    );

    // Off: 127.0.0.1:30080 is the node's listener's again; the node address still serves.
    env.restart_with(&["--localhost-nodeports=false"]);
    env.wait_frontend(LO, 30080, PROTO_TCP, false);
    env.wait_frontend(LO, 30080, PROTO_UDP, false);
    // The listener accepts but never answers: the client times out.
    assert_eq!(
        env.node_call(Proto::Tcp, at(LO, 30080), None, Duration::from_secs(1)),
        Outcome::Failed("ETIMEDOUT".into())
    );
    assert!(
        listener_got_one(&listener),
        "--localhost-nodeports=false: 127.0.0.1:30080 must reach the node's own listener"
    );
    drop(listener);
    assert_eq!(
        env.node_call(Proto::Tcp, at(LO, 30080), None, TIMEOUT),
        Outcome::Failed("ECONNREFUSED".into()),
        "--localhost-nodeports=false and nothing listening: refused by the node's stack"
    );
    env.node_reaches(Proto::Tcp, at(node_ip, 30080), &["p1", "p2"], 8);

    // --node-port-addresses without loopback: no localhost NodePorts (kube-proxy: only
    // when nodePortAddresses is unset or includes loopback).
    env.restart_with(&["--node-port-addresses", "192.0.2.0/24"]);
    env.wait_frontend(node_ip, 30080, PROTO_TCP, true);
    env.wait_frontend(LO, 30080, PROTO_TCP, false);
    assert_eq!(
        env.node_call(Proto::Tcp, at(LO, 30080), None, TIMEOUT),
        Outcome::Failed("ECONNREFUSED".into())
    );
    env.node_reaches(Proto::Tcp, at(node_ip, 30080), &["p1", "p2"], 8);

    // Loopback only: 127.0.0.1 serves, the node address does not.
    env.restart_with(&["--node-port-addresses", "127.0.0.0/8"]);
    env.wait_frontend(LO, 30080, PROTO_TCP, true);
    env.wait_frontend(node_ip, 30080, PROTO_TCP, false);
    env.node_reaches(Proto::Tcp, at(LO, 30080), &["p1", "p2"], 8);
    let outside = in_netns(env.lab.ext_ns(), || {
        std::net::TcpStream::connect_timeout(&at(node_ip, 30080).into(), TIMEOUT)
    });
    assert_eq!(
        outside.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "--node-port-addresses 127.0.0.0/8: no NodePort on the node address"
    );
}

#[test]
fn source_ranges_and_the_nodes_own_traffic() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(&[]);
    // The node holds both LoadBalancer IPs locally (as a VIP-style load balancer puts
    // them on a node), so a socket may bind to them; outside clients reach them via node1.
    for vip in [LB_NODE, LB_OTHER] {
        netns::ip_in(
            env.lab.node_ns(),
            &["addr", "add", &format!("{vip}/32"), "dev", "lo"],
        )
        .expect("VIP on the node's lo");
    }
    env.lab.ext_route("203.0.113.0/24", 1).expect("ext route");
    env.wait_frontend(LB_NODE, 80, PROTO_TCP, true);
    env.wait_frontend(LB_OTHER, 80, PROTO_TCP, true);
    let eperm = Outcome::Failed("EPERM".into());

    let mut failures = Vec::new();
    let mut check = |what: &str, got: Outcome, ok: bool| {
        if !ok {
            failures.push(format!("{what}: {got:?}"));
        }
    };
    // The node's IP (192.0.2.1) is inside lb-node's ranges.
    let got = env.node_call(Proto::Tcp, at(LB_NODE, 80), None, TIMEOUT);
    let ok = matches!(&got, Outcome::Reached { pod, source }
        if pod == "p3" && env.node_addresses().contains(source));
    check("node -> LB IP, node IP inside the ranges: allowed", got, ok);
    // ... so the LB IP itself is an allowed source: a socket bound to the VIP.
    let got = env.node_call(Proto::Tcp, at(LB_NODE, 80), Some(LB_NODE), TIMEOUT);
    let ok = matches!(&got, Outcome::Reached { pod, source } if pod == "p3" && *source == LB_NODE);
    check(
        "node bound to the LB IP -> LB IP, node IP inside the ranges: allowed, the VIP as source",
        got,
        ok,
    );
    // The node's IP outside lb-other's ranges: neither is allowed.
    let got = env.node_call(Proto::Tcp, at(LB_OTHER, 80), None, TIMEOUT);
    let ok = got == eperm;
    check(
        "node -> LB IP, node IP outside the ranges: refused (EPERM)",
        got,
        ok,
    );
    let got = env.node_call(Proto::Tcp, at(LB_OTHER, 80), Some(LB_OTHER), TIMEOUT);
    let ok = got == eperm;
    check(
        "node bound to the LB IP -> LB IP, node IP outside the ranges: refused",
        got,
        ok,
    );
    // One Service's LB IP is no source for another's.
    let got = env.node_call(Proto::Tcp, at(LB_OTHER, 80), Some(LB_NODE), TIMEOUT);
    let ok = got == eperm;
    check(
        "node bound to lb-node's IP -> lb-other's IP: refused",
        got,
        ok,
    );
    // Packets from outside the ranges are dropped (silence), the outside host's and a
    // pod's alike.
    for (what, ns) in [
        (
            "outside 192.0.2.100 -> LB IP (not in 192.0.2.0/30)",
            env.lab.ext_ns(),
        ),
        ("pod -> LB IP (not in 192.0.2.0/30)", env.lab.client_ns()),
    ] {
        match tcp_request(ns, at(LB_NODE, 80), "x", DROP_WAIT) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) => {}
            other => failures.push(format!("{what}: expected a drop, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
