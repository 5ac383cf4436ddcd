//! Smoke test of the namespace lab itself (no eBPF): routing through the node, echo servers, teardown.

use std::net::SocketAddrV4;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use svc_lab::{
    CLIENT_IP, ECHO_PORT, EXT_IP, Lab, TcpSession, UdpSession, tcp_request, udp_request,
};

/// Tests that touch kernel state run one at a time even without --test-threads=1.
static SERIAL: Mutex<()> = Mutex::new(());

const T: Duration = Duration::from_secs(3);

fn root_snapshot() -> (String, String) {
    let link = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link in root ns");
    let addr = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip addr in root ns");
    (
        String::from_utf8_lossy(&link.stdout).into_owned(),
        String::from_utf8_lossy(&addr.stdout).into_owned(),
    )
}

fn link_names(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        })
        .collect();
    v.sort();
    v
}

/// The root namespace must look exactly as before (the host itself may use 192.0.2.0/24,
/// so compare against the snapshot rather than looking for lab addresses).
fn assert_root_clean(ctx: &str, before: &(String, String)) {
    let now = root_snapshot();
    assert!(
        !now.0.contains("lxc-"),
        "{ctx}: lab interface leaked into root ns:\n{}",
        now.0
    );
    assert_eq!(
        link_names(&before.0),
        link_names(&now.0),
        "{ctx}: root ns links changed"
    );
    assert_eq!(
        addr_lines(&before.1),
        addr_lines(&now.1),
        "{ctx}: root ns addresses changed"
    );
}

fn addr_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)
                .map(|a| format!("{} {a}", l.split_whitespace().nth(1).unwrap_or("")))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn lab_smoke() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = root_snapshot();

    let lab = Lab::up().expect("Lab::up");
    let namespaces = lab.namespaces();
    let listed = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .into_owned();
    for ns in &namespaces {
        assert!(
            listed.contains(ns.as_str()),
            "namespace {ns} missing from `ip netns list`:\n{listed}"
        );
    }
    assert!(
        lab.bpffs_dir().is_dir(),
        "bpffs dir {} not created",
        lab.bpffs_dir().display()
    );
    assert_root_clean("with lab up", &before);

    // (1) client pod -> every backend directly by pod IP, routed through the node.
    for pod in lab.pods() {
        let to = SocketAddrV4::new(pod.ip, ECHO_PORT);
        let r = tcp_request(lab.client_ns(), to, "hello", T)
            .unwrap_or_else(|e| panic!("tcp client -> {}: {e}", pod.name));
        assert_eq!(r.pod, pod.name, "tcp reply from wrong pod: {r:?}");
        assert_eq!(
            *r.client.ip(),
            CLIENT_IP,
            "tcp server saw wrong client: {r:?}"
        );
        assert_eq!(r.rest, "hello");

        let r = udp_request(lab.client_ns(), to, T)
            .unwrap_or_else(|e| panic!("udp client -> {}: {e}", pod.name));
        assert_eq!(r.pod, pod.name, "udp reply from wrong pod: {r:?}");
        assert_eq!(
            *r.client.ip(),
            CLIENT_IP,
            "udp server saw wrong client: {r:?}"
        );
    }

    // Long-lived TCP session: several exchanges on one connection, same source port.
    let p2 = SocketAddrV4::new(lab.pod_ip("p2"), ECHO_PORT);
    let mut s =
        TcpSession::connect(lab.client_ns(), p2, T).expect("TcpSession::connect client -> p2");
    let local = s.local_addr().expect("local_addr");
    for i in 0..5 {
        let r = s
            .exchange(&format!("line {i}"))
            .expect("TcpSession::exchange");
        assert_eq!(
            (r.pod.as_str(), r.client, r.rest.as_str()),
            ("p2", local, format!("line {i}").as_str())
        );
    }
    drop(s);

    // UDP session keeps its source port across requests.
    let u = UdpSession::bind(lab.client_ns()).expect("UdpSession::bind");
    let a = u.request(p2, T).expect("udp session 1");
    let b = u.request(p2, T).expect("udp session 2");
    assert_eq!(a.client, b.client, "udp session changed source port");

    // HTTP-ish mode (what curl sees).
    let http = svc_lab::in_netns(lab.client_ns(), || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect_timeout(&p2.into(), T).expect("http connect");
        c.set_read_timeout(Some(T)).unwrap();
        c.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .expect("http write");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("http read");
        out
    });
    assert!(
        http.starts_with("HTTP/1.0 200 OK\r\n"),
        "bad http reply: {http:?}"
    );
    assert!(
        http.contains(&format!("\r\n\r\np2 {CLIENT_IP}:")),
        "bad http body: {http:?}"
    );

    // Refused connection (closed port) must surface as ConnectionRefused.
    let closed = SocketAddrV4::new(lab.pod_ip("p1"), 9);
    let e = tcp_request(lab.client_ns(), closed, "x", T)
        .expect_err("connect to a closed port must fail");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "wrong error kind: {e}"
    );

    // (2) ext -> pod IP via the node.
    let p1 = SocketAddrV4::new(lab.pod_ip("p1"), ECHO_PORT);
    let r = tcp_request(lab.ext_ns(), p1, "from-ext", T).expect("tcp ext -> p1");
    assert_eq!(
        (r.pod.as_str(), *r.client.ip()),
        ("p1", EXT_IP),
        "ext tcp reply: {r:?}"
    );
    let r = udp_request(lab.ext_ns(), p1, T).expect("udp ext -> p1");
    assert_eq!(
        (r.pod.as_str(), *r.client.ip()),
        ("p1", EXT_IP),
        "ext udp reply: {r:?}"
    );

    // A node process runs in the node netns but still sees the root mount ns (bpffs).
    let mut lab = lab;
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!(
            "ip -o addr show dev lxc-p1 && test -d {} && sleep 30",
            lab.bpffs_dir().display()
        ),
    ]);
    cmd.stdout(std::process::Stdio::piped());
    let child = lab.spawn_in_node(cmd).expect("spawn_in_node");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.is_running(),
        "node process exited early: {:?}",
        child.try_wait()
    );

    // (3) teardown.
    let bpffs = lab.bpffs_dir();
    let t0 = std::time::Instant::now();
    drop(lab);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "drop took {:?}",
        t0.elapsed()
    );
    assert!(!child.is_running(), "node process survived drop");
    let listed = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .into_owned();
    for ns in &namespaces {
        assert!(
            !listed.contains(ns.as_str()),
            "namespace {ns} still present after drop:\n{listed}"
        );
    }
    assert!(
        !bpffs.exists(),
        "{} still present after drop",
        bpffs.display()
    );
    assert_root_clean("after drop", &before);
}
