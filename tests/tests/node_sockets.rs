//! End to end: the node's own processes (in the node's network namespace and cgroup, so
//! their connect()/sendmsg() go through the cgroup socket programs) get the same backend
//! choice as packets, from the same code (svc-ebpf/src/lb.rs `pick`):
//! - session affinity: 20 connections of a node process to a ClientIP-affinity Service
//!   all reach one backend, while 20 to the same endpoints without affinity spread;
//! - a Service address with endpoints never leaves untranslated: with the frontend
//!   pointing at a slot or backend that is not there (the state between two writes of an
//!   update, written straight into the pinned maps with the agent stopped), connect() and
//!   sendto() fail with EHOSTUNREACH, while a listener on the Service address in the
//!   node's namespace shows that an untranslated call would have been accepted there.
//!
//! cgroup sock_addr programs cannot run under BPF_PROG_TEST_RUN, hence no fixture.
use std::{
    collections::BTreeSet,
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use svc_common::map_names::{SVC4_AFFINITY, SVC4_SERVICES};
use svc_common::{
    Affinity4Key, Affinity4Value, PROTO_TCP, PROTO_UDP, SCOPE_ALL, Svc4Key, Svc4Value, Verdict,
};
use svc_lab::{
    Lab, NODE_EXT_IP,
    agent::{LabAgent, wait_for},
    in_netns, netns,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// ClientIP affinity over p1, p2, p3.
const STICKY: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 10);
/// The same endpoints without affinity (the control).
const SPREAD: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 11);
/// A Service the agent does not know; the test writes its frontend itself.
const TORN: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 99);
const PORT: u16 = 80;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  clusterIP: 10.96.7.10
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: default}
spec:
  clusterIP: 10.96.7.11
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
"#;

/// One EndpointSlice per Service over the three echo pods.
fn slice(service: &str) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports:\n  - {{name: http, protocol: TCP, port: 8080}}\nendpoints:\n  - {{addresses: [\"10.244.1.11\"]}}\n  - {{addresses: [\"10.244.1.12\"]}}\n  - {{addresses: [\"10.244.1.13\"]}}\n"
    )
}

/// A node process's client: `requests HOST PORT N` makes N TCP connections one after the
/// other and prints the echo reply of each; `probe tcp|udp HOST PORT` connects (TCP) or
/// sends one datagram (UDP, unconnected: sendmsg4) and prints CONNECTED / SENT. Failures
/// print `ERR <errno name>`, one line per attempt.
const CLIENT: &str = r#"
import errno, socket, sys
def err(e):
    name = errno.errorcode.get(e.errno) if e.errno else None
    print("ERR", name or type(e).__name__, flush=True)
mode = sys.argv[1]
if mode == "requests":
    host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=2)
            s.sendall(b"node\n")
            print(s.recv(200).decode().splitlines()[0], flush=True)
            s.close()
        except OSError as e:
            err(e)
else:
    proto, host, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    try:
        if proto == "tcp":
            s = socket.create_connection((host, port), timeout=2)
            print("CONNECTED", flush=True)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"probe", (host, port))
            print("SENT", flush=True)
        s.close()
    except OSError as e:
        err(e)
"#;

struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    lab: Lab,
}

impl Env {
    /// The single-node lab with the agent serving MANIFESTS and the socket programs on
    /// node 1's cgroup; both Services programmed.
    fn up() -> Env {
        let mut lab = Lab::up().expect("lab up");
        let manifests = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let yaml = format!("{MANIFESTS}{}{}", slice("sticky"), slice("spread"));
        std::fs::write(manifests.join("services.yaml"), yaml).expect("write manifests");
        let cgroup = lab.node_cgroup(1).expect("node cgroup");
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let cgroup = cgroup.display().to_string();
        let agent = LabAgent::start_in(&mut lab, 1, &manifests, &log, &["--cgroup", &cgroup])
            .expect("start agent");
        for vip in [STICKY, SPREAD] {
            agent
                .wait_backends(vip, PORT, PROTO_TCP, 3, Duration::from_secs(20))
                .expect("agent synced");
        }
        Env {
            agent,
            manifests,
            lab,
        }
    }

    /// Runs CLIENT with `args` as a process of node 1; its output lines.
    fn node_client(&self, args: &[&str]) -> Vec<String> {
        let out = self
            .lab
            .node_command(1, "python3")
            .expect("node command")
            .arg("-c")
            .arg(CLIENT)
            .args(args)
            .output()
            .expect("run the node client");
        assert!(
            out.status.success(),
            "node client {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pods that answered `n` connections of one node process to vip:PORT.
    fn backends_of_node_connections(&self, vip: Ipv4Addr, n: usize) -> BTreeSet<String> {
        let lines = self.node_client(&[
            "requests",
            &vip.to_string(),
            &PORT.to_string(),
            &n.to_string(),
        ]);
        assert_eq!(lines.len(), n, "one line per connection: {lines:?}");
        lines
            .iter()
            .map(|l| match svc_lab::EchoReply::parse(l) {
                Ok(r) => r.pod,
                Err(_) => panic!("connection to {vip}:{PORT} from the node failed: {l}"),
            })
            .collect()
    }

    fn pinned<K: aya::Pod, V: aya::Pod>(&self, name: &str) -> HashMap<MapData, K, V> {
        let data = MapData::from_pin(self.agent.bpffs.join(name)).expect("open pinned map");
        Map::from_map_data(data)
            .and_then(|m| m.try_into())
            .expect("pinned map type")
    }

    /// The SVC_STATS counter of `v`, summed over CPUs.
    fn verdict_count(&self, v: Verdict) -> u64 {
        self.agent.verdict_count(v)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_file(&self.agent.log);
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

#[test]
fn node_process_keeps_its_affinity_backend() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    // The control: without affinity, 20 connections over 3 backends land on one with
    // probability 3^-19, so this test can tell affinity from luck.
    let spread = env.backends_of_node_connections(SPREAD, 20);
    assert!(
        spread.len() >= 2,
        "control: 20 node connections to a Service without affinity all reached {spread:?}"
    );
    let sticky = env.backends_of_node_connections(STICKY, 20);
    assert_eq!(
        sticky.len(),
        1,
        "20 node connections to a ClientIP-affinity Service reached {sticky:?}, expected one backend"
    );
    // The client a node process is keyed as: the masquerade address (the sockets here
    // are unbound), as documented in svc-ebpf/src/sock.rs.
    let affinity: HashMap<MapData, Affinity4Key, Affinity4Value> = env.pinned(SVC4_AFFINITY);
    let clients: BTreeSet<Ipv4Addr> = affinity
        .keys()
        .filter_map(Result::ok)
        .map(|k| Ipv4Addr::from(u32::from_be(k.client_be)))
        .collect();
    assert_eq!(
        clients,
        BTreeSet::from([NODE_EXT_IP]),
        "affinity entries of node processes should be keyed by the node's address"
    );
}

/// What one probe of TORN saw: the node client's line, and how many connections or
/// datagrams reached the listener on the Service address itself (untranslated).
fn probe(env: &Env, listeners: &Listeners, proto: &str) -> (String, usize) {
    let lines = env.node_client(&["probe", proto, &TORN.to_string(), &PORT.to_string()]);
    let line = lines.first().cloned().unwrap_or_default();
    // An untranslated call would reach the listener at once (local delivery); a short
    // wait covers the datagram's way through the stack.
    let mut got = 0;
    wait_for(Duration::from_millis(300), || {
        got += listeners.drain(proto);
        false
    });
    (line, got)
}

/// A TCP and a UDP socket on TORN:PORT in the node's namespace, non-blocking.
struct Listeners {
    tcp: TcpListener,
    udp: UdpSocket,
}

impl Listeners {
    /// Connections accepted or datagrams read since the last call.
    fn drain(&self, proto: &str) -> usize {
        let mut n = 0;
        for _ in 0..64 {
            let got = if proto == "tcp" {
                self.tcp.accept().map(|_| ())
            } else {
                self.udp.recv_from(&mut [0; 64]).map(|_| ())
            };
            match got {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("listener on {TORN}:{PORT}/{proto}: {e}"),
            }
        }
        n
    }
}

#[test]
fn node_process_never_leaves_untranslated_mid_update() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    // With the agent stopped nobody repairs what the test writes; the programs stay
    // attached through their pinned links and keep using the pinned maps.
    env.agent.process.stop().expect("stop the agent");

    // The untranslated path, made observable: TORN on the node's loopback with listeners,
    // so a connect()/sendto() that left with the Service address would be accepted here.
    let node_ns = env.lab.node_ns().to_string();
    netns::ip_in(
        &node_ns,
        &["addr", "add", &format!("{TORN}/32"), "dev", "lo"],
    )
    .expect("Service address on the node's lo");
    let listeners = in_netns(&node_ns, || {
        let at = SocketAddrV4::new(TORN, PORT);
        let tcp = TcpListener::bind(at).expect("tcp listener");
        let udp = UdpSocket::bind(at).expect("udp listener");
        tcp.set_nonblocking(true).unwrap();
        udp.set_nonblocking(true).unwrap();
        Listeners { tcp, udp }
    });

    let mut services: HashMap<MapData, Svc4Key, Svc4Value> = env.pinned(SVC4_SERVICES);
    let key = |proto: u8, slot: u16| Svc4Key {
        vip_be: u32::from(TORN).to_be(),
        port_be: PORT.to_be(),
        slot,
        proto,
        scope: SCOPE_ALL,
        _pad: [0; 2],
    };
    // Ids far above what the agent allocates in this lab: never present.
    let (rev_nat_id, missing_backend) = (0x7fff_0001, 0x7fff_fff0);
    let mut failures = Vec::new();
    let before = env.verdict_count(Verdict::SockNoBackend);
    for (proto, number) in [("tcp", PROTO_TCP), ("udp", PROTO_UDP)] {
        // 1. No frontend: the call leaves untranslated and the listener sees it (this is
        //    what the failure below would look like).
        let (line, got) = probe(&env, &listeners, proto);
        if !(line.starts_with("CONNECTED") || line.starts_with("SENT")) || got != 1 {
            failures.push(format!(
                "{proto} control (no frontend): expected the listener to get it, got {line:?}, {got} arrived"
            ));
        }
        // 2. The frontend counts two slots that are not written yet; 3. the slots are
        //    there but name a backend that is not.
        let frontend = Svc4Value {
            backend_id: 0,
            rev_nat_id,
            count: 2,
            flags: 0,
        };
        services.insert(key(number, 0), frontend, 0).unwrap();
        let (line, got) = probe(&env, &listeners, proto);
        if line != "ERR EHOSTUNREACH" || got != 0 {
            failures.push(format!(
                "{proto} frontend without slots: expected EHOSTUNREACH and nothing on the Service address, got {line:?}, {got} arrived"
            ));
        }
        for slot in [1, 2] {
            let v = Svc4Value {
                backend_id: missing_backend,
                rev_nat_id,
                count: 0,
                flags: 0,
            };
            services.insert(key(number, slot), v, 0).unwrap();
        }
        let (line, got) = probe(&env, &listeners, proto);
        if line != "ERR EHOSTUNREACH" || got != 0 {
            failures.push(format!(
                "{proto} slots naming a missing backend: expected EHOSTUNREACH and nothing on the Service address, got {line:?}, {got} arrived"
            ));
        }
    }
    let counted = env.verdict_count(Verdict::SockNoBackend) - before;
    if counted != 4 {
        failures.push(format!("sock_no_backend counted {counted}, expected 4"));
    }
    assert!(
        failures.is_empty(),
        "a node process's call to a Service address with endpoints left untranslated or was not failed as documented:\n{}",
        failures.join("\n")
    );
}
