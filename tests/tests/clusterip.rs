//! End to end: the real svc-agent programs a lab node from manifests, and real packets
//! from pods (TC path) and from outside (XDP path) reach the ClusterIP's backends.
//! Each test builds its own lab; they touch kernel state, so they run one at a time.
use std::{
    collections::BTreeMap,
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::{
    CLIENT_IP, Lab, NODE_EXT_IP, TcpSession, UdpSession,
    agent::{LabAgent, example_manifests, workspace_bin},
    in_netns, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const EMPTY_SVC: SocketAddrV4 = SocketAddrV4::new(EMPTY_VIP, 80);
const TIMEOUT: Duration = Duration::from_secs(3);

/// A lab with the agent running on a private copy of examples/.
struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    // Dropped last: tears the namespaces down after the agent is stopped.
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up().expect("lab up");
        let manifests =
            example_manifests(&lab, &["echo-clusterip.yaml", "no-endpoints.yaml"]).unwrap();
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let agent = LabAgent::start(&mut lab, &manifests, &log).expect("start agent");
        agent
            .wait_backends(VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
            .unwrap();
        agent
            .wait_backends(VIP, 80, PROTO_UDP, 3, Duration::from_secs(5))
            .unwrap();
        agent
            .wait_backends(EMPTY_VIP, 80, PROTO_TCP, 0, Duration::from_secs(5))
            .unwrap();
        Env {
            agent,
            manifests,
            lab,
        }
    }

    /// Rewrites the echo Service's EndpointSlice to hold exactly these pods.
    fn set_endpoints(&self, pods: &[&str]) {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/echo-clusterip.yaml"),
        )
        .unwrap();
        let (head, _) = text.split_once("endpoints:\n").unwrap();
        let mut out = format!("{head}endpoints:\n");
        for pod in pods {
            let ip = self.lab.pod_ip(pod);
            out += &format!("  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n");
        }
        if pods.is_empty() {
            out = format!("{head}endpoints: []\n");
        }
        // Write-then-rename so the agent never reads half a file.
        let tmp = self.manifests.join(".echo.tmp");
        std::fs::write(&tmp, out).unwrap();
        std::fs::rename(&tmp, self.manifests.join("echo-clusterip.yaml")).unwrap();
        self.agent
            .wait_backends(
                VIP,
                80,
                PROTO_TCP,
                pods.len() as u16,
                Duration::from_secs(10),
            )
            .unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- svc-agent log ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_dir_all(&self.manifests);
        let _ = std::fs::remove_file(&self.agent.log);
    }
}

fn assert_spread(hits: &BTreeMap<String, usize>, min_each: usize, what: &str) {
    assert_eq!(
        hits.len(),
        3,
        "{what}: not all three pods answered: {hits:?}"
    );
    for (pod, n) in hits {
        assert!(
            *n >= min_each,
            "{what}: {pod} got {n} < {min_each} of the connections: {hits:?}"
        );
    }
}

#[test]
fn tcp_and_udp_new_flows_reach_all_three_pods() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let client = env.lab.client_ns().to_string();

    let mut tcp_hits = BTreeMap::new();
    for i in 0..100 {
        let reply = tcp_request(&client, SVC, &format!("hello {i}"), TIMEOUT)
            .unwrap_or_else(|e| panic!("TCP connection {i}: {e}"));
        assert_eq!(
            *reply.client.ip(),
            CLIENT_IP,
            "the pod must see the client's own address (no masquerade)"
        );
        *tcp_hits.entry(reply.pod).or_insert(0) += 1;
    }
    assert_spread(&tcp_hits, 15, "TCP");

    let mut udp_hits = BTreeMap::new();
    for i in 0..100 {
        // A new socket per flow: a new source port, so a new conntrack entry.
        let reply = UdpSession::bind(&client)
            .unwrap()
            .request(SVC, TIMEOUT)
            .unwrap_or_else(|e| panic!("UDP flow {i}: {e}"));
        assert_eq!(*reply.client.ip(), CLIENT_IP);
        *udp_hits.entry(reply.pod).or_insert(0) += 1;
    }
    assert_spread(&udp_hits, 15, "UDP");
}

#[test]
fn service_without_endpoints_refuses_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();

    // TCP: the RST arrives before any retransmission (the first SYN retry is at 1 s).
    let started = Instant::now();
    let result = in_netns(env.lab.client_ns(), || {
        TcpStream::connect_timeout(&EMPTY_SVC.into(), TIMEOUT)
    });
    assert_eq!(
        result.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "TCP to a Service without endpoints"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refusal took {:?}",
        started.elapsed()
    );

    // UDP: a connected socket reports the ICMP port unreachable as ECONNREFUSED.
    let result = in_netns(env.lab.client_ns(), || -> io::Result<()> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(EMPTY_SVC)?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.send(b"ping\n")?;
        let mut buf = [0u8; 64];
        sock.recv(&mut buf).map(|_| ())
    });
    assert_eq!(
        result.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "UDP to a Service without endpoints"
    );

    // From outside, through XDP (which hands rejects to TC on the same interface).
    let result = in_netns(env.lab.ext_ns(), || {
        TcpStream::connect_timeout(&EMPTY_SVC.into(), TIMEOUT)
    });
    assert_eq!(
        result.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "TCP from outside"
    );

    // 0 -> N endpoints: answers at once once the agent has synced.
    env.set_endpoints(&["p1", "p2", "p3"]);
    env.set_endpoints(&[]);
    assert!(
        tcp_request(env.lab.client_ns(), SVC, "x", TIMEOUT).is_err(),
        "no endpoints: refused"
    );
    env.set_endpoints(&["p2"]);
    let reply =
        tcp_request(env.lab.client_ns(), SVC, "x", TIMEOUT).expect("after 0 -> 1 endpoints");
    assert_eq!(reply.pod, "p2");
}

#[test]
fn long_lived_connection_keeps_its_backend_while_the_set_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let client = env.lab.client_ns().to_string();

    let mut tcp = TcpSession::connect(&client, SVC, TIMEOUT).expect("connect");
    let first = tcp.exchange("one").expect("first exchange");
    let pinned = first.pod.clone();
    let udp = UdpSession::bind(&client).unwrap();
    let mut udp_pod = udp.request(SVC, TIMEOUT).expect("udp").pod;

    let others: Vec<&str> = ["p1", "p2", "p3"]
        .into_iter()
        .filter(|p| *p != pinned)
        .collect();
    // Remove the other two, add them back in another order, shrink again: the flow's
    // backend stays in the set throughout, so the flow must stay on it.
    for set in [
        vec![pinned.as_str()],
        vec![others[1], others[0], pinned.as_str()],
        vec![others[0], pinned.as_str()],
    ] {
        env.set_endpoints(&set);
        for i in 0..5 {
            let reply = tcp
                .exchange(&format!("after change {set:?} #{i}"))
                .unwrap_or_else(|e| panic!("exchange after {set:?}: {e}"));
            assert_eq!(
                reply.pod, pinned,
                "the TCP flow moved after the set became {set:?}"
            );
            assert_eq!(reply.client, first.client, "same client address and port");
        }
        let udp_now = udp.request(SVC, TIMEOUT).expect("udp").pod;
        if set.contains(&udp_pod.as_str()) {
            assert_eq!(
                udp_now, udp_pod,
                "UDP flow moved after {set:?} although its backend stayed"
            );
        } else {
            // Its backend is gone: the flow moves at once to one that exists, and stays there.
            assert!(
                set.contains(&udp_now.as_str()),
                "UDP flow went to {udp_now}, not in {set:?}"
            );
            udp_pod = udp_now;
        }
    }
}

#[test]
fn traffic_from_outside_goes_through_xdp() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let mut hits = BTreeMap::new();
    for i in 0..30 {
        let reply = tcp_request(env.lab.ext_ns(), SVC, "from outside", TIMEOUT)
            .unwrap_or_else(|e| panic!("outside TCP {i}: {e}"));
        assert_eq!(
            *reply.client.ip(),
            NODE_EXT_IP,
            "ClusterIP traffic from outside the cluster is masqueraded to the node address"
        );
        *hits.entry(reply.pod).or_insert(0) += 1;
    }
    assert_eq!(hits.len(), 3, "{hits:?}");
    let reply = UdpSession::bind(env.lab.ext_ns())
        .unwrap()
        .request(SVC, TIMEOUT)
        .expect("outside UDP");
    assert_eq!(*reply.client.ip(), NODE_EXT_IP);
}

#[test]
fn svcctl_dump_shows_the_service_backends_and_live_flows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let mut tcp = TcpSession::connect(env.lab.client_ns(), SVC, TIMEOUT).expect("connect");
    let reply = tcp.exchange("hi").unwrap();
    let local = tcp.local_addr().unwrap();

    let out = std::process::Command::new(workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(&env.agent.bpffs)
        .args(["dump", "--json"])
        .output()
        .expect("run svcctl");
    assert!(
        out.status.success(),
        "svcctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("svcctl dump --json is JSON");
    let text = json.to_string();
    let echo = json["services"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["vip"] == "10.96.0.10" && s["port"] == 80 && s["protocol"] == "TCP")
        })
        .unwrap_or_else(|| panic!("service 10.96.0.10:80/TCP missing: {text}"));
    assert_eq!(
        echo["service"],
        serde_json::json!({"namespace": "default", "name": "echo", "port_name": "http"}),
        "{text}"
    );
    let mut backends: Vec<&str> = echo["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["addr"].as_str().unwrap())
        .collect();
    backends.sort();
    assert_eq!(
        backends,
        ["10.244.1.11", "10.244.1.12", "10.244.1.13"],
        "{text}"
    );
    let pod_ip = env.lab.pod_ip(&reply.pod).to_string();
    let flows = json["conntrack"].as_array().expect("conntrack list");
    let forward = flows.iter().find(|e| {
        e["kind"] == "service"
            && e["src"]["addr"] == local.ip().to_string()
            && e["src"]["port"] == local.port()
    });
    let forward = forward
        .unwrap_or_else(|| panic!("the live connection {local} is not in conntrack: {text}"));
    assert_eq!(forward["dst"]["addr"], "10.96.0.10");
    assert_eq!(
        forward["translated_dst"]["addr"],
        pod_ip.as_str(),
        "{forward}"
    );
    assert_eq!(forward["translated_dst"]["port"], 8080);
    let reply_entry = flows.iter().find(|e| {
        e["kind"] == "reply"
            && e["dst"]["port"] == local.port()
            && e["src"]["addr"] == pod_ip.as_str()
    });
    assert!(reply_entry.is_some(), "no reply entry for {local}: {text}");

    let table = std::process::Command::new(workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(&env.agent.bpffs)
        .arg("dump")
        .output()
        .expect("run svcctl");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("10.96.0.10:80") && table.contains(&local.to_string()),
        "table output:\n{table}"
    );
}

/// Over veth, receivers trust the checksum of CHECKSUM_PARTIAL / UNNECESSARY skbs, so a
/// wrong rewrite would go unnoticed. Here every pod computes full checksums on send
/// (tx off) and verifies them on receive (rx off): a bad DNAT or reverse-NAT checksum
/// makes the receiver drop the packet and the request time out.
#[test]
fn rewritten_packets_carry_correct_checksums() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let mut namespaces: Vec<String> = env.lab.pods().iter().map(|p| p.ns.clone()).collect();
    namespaces.push(env.lab.client_ns().to_string());
    namespaces.push(env.lab.ext_ns().to_string());
    for ns in &namespaces {
        let out = env
            .lab
            .exec(ns, &["ethtool", "-K", "eth0", "tx", "off", "rx", "off"])
            .expect("ethtool");
        assert!(
            out.status.success(),
            "ethtool in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let short = Duration::from_secs(2);
    for i in 0..20 {
        tcp_request(env.lab.client_ns(), SVC, "csum", short)
            .unwrap_or_else(|e| panic!("TCP {i} from a pod: {e}"));
        UdpSession::bind(env.lab.client_ns())
            .unwrap()
            .request(SVC, short)
            .unwrap_or_else(|e| panic!("UDP {i} from a pod: {e}"));
        tcp_request(env.lab.ext_ns(), SVC, "csum", short)
            .unwrap_or_else(|e| panic!("TCP {i} from outside: {e}"));
        UdpSession::bind(env.lab.ext_ns())
            .unwrap()
            .request(SVC, short)
            .unwrap_or_else(|e| panic!("UDP {i} from outside: {e}"));
    }
    // The rejects are built from scratch: the client's stack must accept them too.
    let result = in_netns(env.lab.client_ns(), || {
        TcpStream::connect_timeout(&EMPTY_SVC.into(), TIMEOUT)
    });
    assert_eq!(
        result.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "RST with a verified checksum"
    );
}

/// A broken manifest is reported and skipped; the Services already served keep working and
/// the maps are not touched.
#[test]
fn invalid_manifest_is_reported_and_leaves_the_rest_alone() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\n  namespace: shop\nspec:\n  clusterIP: 10.96.0.300\n  ports:\n    - port: 80\n---\nthis is: [not yaml\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: too-big\nspec:\n  clusterIP: 10.96.0.12\n  ports:\n    - port: 70000\n";
    std::fs::write(env.manifests.join("zz-bad.yaml"), bad).unwrap();
    let logged = svc_lab::agent::wait_for(Duration::from_secs(10), || {
        let log = env.agent.log_text();
        log.contains("shop/broken") && log.contains("70000") && log.contains("not an IP")
    });
    assert!(
        logged,
        "the agent did not report both objects with their reasons:\n{}",
        env.agent.log_text()
    );
    assert_eq!(
        env.agent.backend_count(VIP, 80, PROTO_TCP),
        Some(3),
        "the echo Service was touched"
    );
    assert_eq!(
        env.agent
            .backend_count(Ipv4Addr::new(10, 96, 0, 12), 80, PROTO_TCP),
        None,
        "an invalid Service got an entry"
    );
    tcp_request(env.lab.client_ns(), SVC, "still there", TIMEOUT).expect("echo still answers");
    // svcctl shows the problems as the agent logged them, read from the pins.
    let listed = svc_lab::agent::wait_for(Duration::from_secs(5), || {
        let out = std::process::Command::new(svc_lab::agent::workspace_bin("svcctl").unwrap())
            .args([
                "--bpffs",
                &env.agent.bpffs.display().to_string(),
                "dump",
                "services",
            ])
            .args(["-o", "json"])
            .output()
            .expect("svcctl");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let problems: Vec<String> = doc["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        problems
            .iter()
            .any(|p| p.contains("zz-bad.yaml") && p.contains("shop/broken"))
            && problems.iter().any(|p| p.contains("70000"))
    });
    assert!(listed, "svcctl dump does not list the problems");
}
