//! End to end: one client socket, bound to a fixed source port, talks to two Services that
//! share a backend pod ip:targetPort, in turn and concurrently, over TCP and UDP, from a
//! pod (TC, not masqueraded) and from outside (XDP, masqueraded). Linux reuses an
//! ephemeral port for different destinations, so this happens in real clusters. Each
//! reply must come from the Service its flow went to: the flows' reply tuples would be
//! identical, so the second flow's source port is remapped (lb.rs `reply_port`); before
//! that, the second flow's reply entry overwrote the first's and the first flow's replies
//! came back from the second Service (a TCP socket never sees them; a UDP socket sees a
//! datagram from the wrong address).
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use svc_common::{MASQUERADE_PORTS, PROTO_TCP, PROTO_UDP};
use svc_lab::{
    CLIENT_IP, EXT_IP, Lab, NODE_EXT_IP, P1_IP, TcpSession, UdpSession, agent::LabAgent,
};

static SERIAL: Mutex<()> = Mutex::new(());

const SVC_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 50), 80);
const SVC_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 51), 80);
const TIMEOUT: Duration = Duration::from_secs(3);

/// Two Services, TCP and UDP on port 80, whose only endpoint is p1:8080.
fn manifests() -> String {
    let mut out = String::new();
    for (name, vip) in [("shared-a", SVC_A.ip()), ("shared-b", SVC_B.ip())] {
        out += &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: ClusterIP
  clusterIP: {vip}
  ports:
    - {{name: tcp, protocol: TCP, port: 80, targetPort: 8080}}
    - {{name: udp, protocol: UDP, port: 80, targetPort: 8080}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports:
  - {{name: tcp, protocol: TCP, port: 8080}}
  - {{name: udp, protocol: UDP, port: 8080}}
endpoints:
  - addresses: ["{P1_IP}"]
    conditions: {{ready: true}}
---
"#
        );
    }
    out
}

struct Env {
    agent: LabAgent,
    dir: PathBuf,
    // Dropped last: tears the namespaces down after the agent is stopped.
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up().expect("lab up");
        let dir = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("shared.yaml"), manifests()).unwrap();
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let agent = LabAgent::start(&mut lab, &dir, &log).expect("start agent");
        for svc in [SVC_A, SVC_B] {
            for proto in [PROTO_TCP, PROTO_UDP] {
                agent
                    .wait_backends(*svc.ip(), svc.port(), proto, 1, Duration::from_secs(20))
                    .unwrap();
            }
        }
        Env { agent, dir, lab }
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

/// Where a client's flows come from, and what source the backend sees for the first one.
struct From {
    ns: String,
    local: SocketAddrV4,
    /// The address the backend sees (the client's own, or the node's when masqueraded).
    seen_ip: Ipv4Addr,
}

fn pod_client(env: &Env, port: u16) -> From {
    From {
        ns: env.lab.client_ns().to_string(),
        local: SocketAddrV4::new(CLIENT_IP, port),
        seen_ip: CLIENT_IP,
    }
}

/// An outside host, with a source port inside the masquerade range (kept when free, so the
/// two flows' masquerade tuples would be identical).
fn outside_client(env: &Env, port: u16) -> From {
    assert!((MASQUERADE_PORTS.0..=MASQUERADE_PORTS.1).contains(&port));
    From {
        ns: env.lab.ext_ns().to_string(),
        local: SocketAddrV4::new(EXT_IP, port),
        seen_ip: NODE_EXT_IP,
    }
}

/// Two TCP connections from one local ip:port, to A then B, both kept open: each
/// exchanges lines in turn, so every reply of each connection must come from its own
/// Service (the socket only accepts segments from its peer). The backend sees the first
/// connection with the client's port (or its masquerade) and the second with another.
fn tcp_in_turn(from: &From) {
    let mut a = TcpSession::connect_from(&from.ns, from.local, SVC_A, TIMEOUT)
        .unwrap_or_else(|e| panic!("{} -> A: {e}", from.local));
    let first = a
        .exchange("a0")
        .unwrap_or_else(|e| panic!("A before B: {e}"));
    let mut b = TcpSession::connect_from(&from.ns, from.local, SVC_B, TIMEOUT)
        .unwrap_or_else(|e| panic!("{} -> B (same local port): {e}", from.local));
    let second = b.exchange("b0").unwrap_or_else(|e| panic!("B: {e}"));
    for i in 1..=5 {
        let ra = a.exchange(&format!("a{i}")).unwrap_or_else(|e| {
            panic!("A's reply {i} after B opened (replies of A taken for B?): {e}")
        });
        let rb = b
            .exchange(&format!("b{i}"))
            .unwrap_or_else(|e| panic!("B's reply {i}: {e}"));
        assert_eq!(
            (ra.client, rb.client),
            (first.client, second.client),
            "round {i}"
        );
    }
    assert_eq!(*first.client.ip(), from.seen_ip, "{first:?}");
    assert_eq!(*second.client.ip(), from.seen_ip, "{second:?}");
    assert_ne!(
        first.client.port(),
        second.client.port(),
        "the backend saw both connections from one source: their replies could not be told apart"
    );
    assert_eq!(
        first.client.port(),
        from.local.port(),
        "the first flow keeps its port"
    );
    assert!(
        (MASQUERADE_PORTS.0..=MASQUERADE_PORTS.1).contains(&second.client.port()),
        "the second flow's port is remapped into the masquerade range: {second:?}"
    );
    println!(
        "ok   TCP from {}: A seen as {}, B seen as {}",
        from.local, first.client, second.client
    );
}

/// One UDP socket sends to A, B, A, B, ...: each reply must come from the address that
/// datagram was sent to (`UdpSession::request` ignores others and names them).
fn udp_in_turn(from: &From) {
    let sock = UdpSession::bind_to(&from.ns, from.local).expect("bind UDP");
    let mut seen = Vec::new();
    for i in 0..6 {
        let svc = if i % 2 == 0 { SVC_A } else { SVC_B };
        let reply = sock
            .request(svc, TIMEOUT)
            .unwrap_or_else(|e| panic!("UDP round {i} to {svc}: {e}"));
        assert_eq!(*reply.client.ip(), from.seen_ip, "{reply:?}");
        seen.push(reply.client);
    }
    assert_eq!(seen[0], seen[2], "flow A keeps its source");
    assert_eq!(seen[1], seen[3], "flow B keeps its source");
    assert_ne!(
        seen[0].port(),
        seen[1].port(),
        "both UDP flows seen from one source"
    );
    println!(
        "ok   UDP from {}: A seen as {}, B seen as {}",
        from.local, seen[0], seen[1]
    );
}

#[test]
fn one_pod_tcp_port_to_two_services_sharing_a_backend() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    tcp_in_turn(&pod_client(&env, 47000));
}

#[test]
fn one_pod_udp_port_to_two_services_sharing_a_backend() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    udp_in_turn(&pod_client(&env, 47001));
}

#[test]
fn one_outside_tcp_port_to_two_services_masqueraded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    tcp_in_turn(&outside_client(&env, 61500));
}

#[test]
fn one_outside_udp_port_to_two_services_masqueraded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    udp_in_turn(&outside_client(&env, 61501));
}

/// Concurrently: one UDP socket sends to A and B from two threads at once, many times; every
/// reply is matched to the Service it came from, and each Service answers every request.
#[test]
fn one_udp_socket_to_two_services_concurrently() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let from = pod_client(&env, 47002);
    let sock = UdpSession::bind_to(&from.ns, from.local).expect("bind UDP");
    let sock = sock.socket();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    const ROUNDS: usize = 50;
    let mut got = std::collections::BTreeMap::<SocketAddrV4, usize>::new();
    std::thread::scope(|s| {
        for svc in [SVC_A, SVC_B] {
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    sock.send_to(b"ping\n", svc).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        let mut buf = [0u8; 2048];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.values().sum::<usize>() < 2 * ROUNDS && std::time::Instant::now() < deadline {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let std::net::SocketAddr::V4(from) = from else {
                    panic!("IPv6 reply")
                };
                *got.entry(from).or_default() += 1;
            }
        }
    });
    assert_eq!(
        got,
        [(SVC_A, ROUNDS), (SVC_B, ROUNDS)].into_iter().collect(),
        "replies by source: every request answered by the Service it went to, nothing else"
    );
    println!("ok   UDP concurrently: {ROUNDS} replies from each Service");
}
