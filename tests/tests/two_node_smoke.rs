//! Smoke test of the two-node namespace lab itself (no eBPF): pod-to-pod across nodes via the
//! node routes, ext on the shared L2 segment, ext routes through a node, node processes, and
//! teardown.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use svc_lab::{EXT_IP, Lab, NODE_EXT_IF, PHYS_BRIDGE, tcp_request, udp_request};

/// Tests that touch kernel state run one at a time even without --test-threads=1.
static SERIAL: Mutex<()> = Mutex::new(());

const T: Duration = Duration::from_secs(3);

fn cmd_stdout(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} {args:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sorted link names and `<if> <addr>` lines of the root namespace.
fn root_snapshot() -> (Vec<String>, Vec<String>) {
    let mut links: Vec<String> = cmd_stdout("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        })
        .collect();
    links.sort();
    let mut addrs: Vec<String> = cmd_stdout("ip", &["-o", "addr", "show"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(format!("{} {}", f.get(1)?, f.get(3)?))
        })
        .collect();
    addrs.sort();
    (links, addrs)
}

fn assert_root_unchanged(ctx: &str, before: &(Vec<String>, Vec<String>)) {
    let now = root_snapshot();
    assert_eq!(before.0, now.0, "{ctx}: root ns links changed");
    assert_eq!(before.1, now.1, "{ctx}: root ns addresses changed");
}

fn netns_list() -> String {
    cmd_stdout("ip", &["netns", "list"])
}

/// TCP and UDP echo from `from_ns` to pod `to`; the server must be `to` and see `want_client`.
fn check_echo(lab: &Lab, ctx: &str, from_ns: &str, to: &str, want_client: Ipv4Addr) {
    let addr = lab.pod(to).echo_addr();
    let r = tcp_request(from_ns, addr, ctx, T)
        .unwrap_or_else(|e| panic!("{ctx}: tcp {from_ns} -> {to} ({addr}): {e}"));
    assert_eq!(
        (r.pod.as_str(), *r.client.ip(), r.rest.as_str()),
        (to, want_client, ctx),
        "{ctx}: tcp reply {r:?}"
    );
    let r = udp_request(from_ns, addr, T)
        .unwrap_or_else(|e| panic!("{ctx}: udp {from_ns} -> {to} ({addr}): {e}"));
    assert_eq!(
        (r.pod.as_str(), *r.client.ip()),
        (to, want_client),
        "{ctx}: udp reply {r:?}"
    );
}

/// `Icmp: ... OutRedirects` of namespace `ns` (from /proc/net/snmp).
fn icmp_out_redirects(lab: &Lab, ns: &str) -> u64 {
    let out = lab
        .exec(ns, &["cat", "/proc/net/snmp"])
        .expect("cat /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp: "));
    let (names, values) = (icmp.next().unwrap_or(""), icmp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutRedirects")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Icmp OutRedirects in /proc/net/snmp of {ns}:\n{text}"))
}

/// A TCP connect from `from_ns` to `ip`:9 must be refused (proves two-way reachability).
fn check_refused(ctx: &str, from_ns: &str, ip: Ipv4Addr) {
    let e = tcp_request(from_ns, SocketAddrV4::new(ip, 9), "x", T)
        .expect_err("nobody listens on port 9");
    assert_eq!(
        e.kind(),
        ErrorKind::ConnectionRefused,
        "{ctx}: {from_ns} -> {ip}:9 should be refused, got: {e}"
    );
}

#[test]
fn two_node_smoke() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = root_snapshot();

    let mut lab = Lab::up_two_nodes().expect("Lab::up_two_nodes");
    let id = lab.id().to_string();
    let namespaces = lab.namespaces();
    assert_eq!(namespaces.len(), 10, "namespaces: {namespaces:?}");
    let listed = netns_list();
    for ns in &namespaces {
        assert!(
            ns.starts_with(&format!("svl-{id}-")),
            "namespace {ns} outside the svl-<id>- scheme"
        );
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} missing from `ip netns list`:\n{listed}"
        );
    }
    assert_root_unchanged("with lab up", &before);

    // Topology as documented.
    assert_eq!(lab.nodes().len(), 2);
    for (n, ip, name, tag) in [
        (1, Ipv4Addr::new(192, 0, 2, 1), "node1", "n1"),
        (2, Ipv4Addr::new(192, 0, 2, 2), "node2", "n2"),
    ] {
        let node = lab.node(n);
        assert_eq!(
            (node.index, node.name.as_str(), node.ip, node.ns.as_str()),
            (n, name, ip, format!("svl-{id}-{tag}").as_str())
        );
        assert_eq!(lab.node_ip(n), ip);
        assert_eq!(
            lab.node_bpffs_dir(n),
            std::path::PathBuf::from(format!("/sys/fs/bpf/svl-{id}-{tag}"))
        );
        assert!(
            lab.node_bpffs_dir(n).is_dir(),
            "bpffs dir of node{n} missing"
        );
        let addr = cmd_stdout(
            "ip",
            &[
                "-n",
                &node.ns,
                "-o",
                "-4",
                "addr",
                "show",
                "dev",
                NODE_EXT_IF,
            ],
        );
        assert!(addr.contains(&format!("{ip}/24")), "node{n} eth0: {addr}");
        let k = lab
            .exec(&node.ns, &["ethtool", "-k", NODE_EXT_IF])
            .expect("ethtool -k");
        let k = String::from_utf8_lossy(&k.stdout);
        assert!(
            k.contains("tx-checksumming: off"),
            "node{n} eth0 tx checksum offload not off:\n{k}"
        );
    }
    let names = |v: Vec<&svc_lab::Pod>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(lab.pods_on(1)), ["a1", "a2"]);
    assert_eq!(names(lab.pods_on(2)), ["b1", "b2"]);
    assert_eq!(lab.client_on(1).ip, Ipv4Addr::new(10, 244, 1, 20));
    assert_eq!(lab.client_on(2).ip, Ipv4Addr::new(10, 244, 2, 20));
    assert_eq!(lab.pod("b2").ip, Ipv4Addr::new(10, 244, 2, 12));
    assert_eq!(lab.pod("b2").node, 2);
    let phys = lab
        .phys_ns()
        .expect("two-node lab has a phys ns")
        .to_string();
    let ports = cmd_stdout(
        "ip",
        &["-n", &phys, "-o", "link", "show", "master", PHYS_BRIDGE],
    );
    for port in ["n1", "n2", "ext"] {
        assert!(
            ports.contains(&format!(": {port}@")),
            "{port} not on {PHYS_BRIDGE}:\n{ports}"
        );
    }
    let phys_addrs = cmd_stdout("ip", &["-n", &phys, "-o", "-4", "addr", "show"]);
    assert!(
        phys_addrs.lines().all(|l| l.contains(" lo ")),
        "phys ns must have no IPv4 address besides lo:\n{phys_addrs}"
    );

    // (1) pod -> pod by pod IP: same node, and across nodes via the node routes.
    let ca = lab.client_on(1).clone();
    let cb = lab.client_on(2).clone();
    check_echo(&lab, "ca->a1 (same node)", &ca.ns, "a1", ca.ip);
    check_echo(&lab, "ca->b1 (cross node)", &ca.ns, "b1", ca.ip);
    check_echo(&lab, "cb->a2 (cross node)", &cb.ns, "a2", cb.ip);
    check_echo(&lab, "cb->b2 (same node)", &cb.ns, "b2", cb.ip);

    // (2) ext is on the nodes' L2: both eth0 addresses answer (RST from a closed port).
    let ext = lab.ext_ns().to_string();
    check_refused("ext -> node1", &ext, lab.node_ip(1));
    check_refused("ext -> node2", &ext, lab.node_ip(2));
    check_refused("node1 -> node2", lab.node_ns_of(1), lab.node_ip(2));

    // (3) ext has no route to pods until a test adds one.
    let b1 = lab.pod("b1").echo_addr();
    let e = tcp_request(&ext, b1, "x", T).expect_err("ext must not reach pods by default");
    assert!(
        matches!(
            e.kind(),
            ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable | ErrorKind::TimedOut
        ),
        "ext -> b1 without a route: unexpected error {e}"
    );
    lab.ext_route("10.244.0.0/16", 1)
        .expect("ext_route via node1");
    let routes = cmd_stdout("ip", &["-n", &ext, "route", "show", "10.244.0.0/16"]);
    assert!(routes.contains("via 192.0.2.1"), "ext routes: {routes}");
    // ext -> node1 -> (forwarded back out of eth0) node2 -> b1; b1 answers via node2 directly.
    check_echo(&lab, "ext->b1 via node1", &ext, "b1", EXT_IP);
    check_echo(&lab, "ext->a1 via node1", &ext, "a1", EXT_IP);
    // node1 forwarded ext's packets back out of eth0 without sending ICMP redirects
    // (send_redirects=0): ext would ignore them (secure_redirects) but they are noise.
    let redirects = icmp_out_redirects(&lab, lab.node_ns_of(1));
    assert_eq!(redirects, 0, "node1 sent {redirects} ICMP redirects");
    // `replace` moves the route; node2 forwards to node1's pods.
    lab.ext_route("10.244.0.0/16", 2)
        .expect("ext_route via node2");
    check_echo(&lab, "ext->a2 via node2", &ext, "a2", EXT_IP);
    assert!(
        lab.ext_route("10.96.0.0/12", 3).is_err(),
        "node 3 must not exist"
    );
    lab.ext_route("10.96.0.0/12", 1)
        .expect("ext_route service range");

    // (4) processes on the nodes themselves.
    let r = tcp_request(lab.node_ns_of(1), lab.pod("b1").echo_addr(), "node1", T)
        .expect("tcp node1 -> b1");
    assert_eq!(r.pod, "b1");
    assert!(
        [lab.node_ip(1), lab.node(1).gateway].contains(r.client.ip()),
        "node1 -> b1 from an unexpected address: {r:?}"
    );
    let mut cmds = Vec::new();
    for n in [1, 2] {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!(
                "ip -o addr show dev {NODE_EXT_IF} | grep -q {} && test -d {} && sleep 30",
                lab.node_ip(n),
                lab.node_bpffs_dir(n).display()
            ),
        ]);
        cmds.push(lab.spawn_in(n, cmd).expect("spawn_in"));
    }
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in cmds.iter().enumerate() {
        assert!(
            c.is_running(),
            "process in node{} exited early (wrong netns or bpffs dir?): {:?}",
            i + 1,
            c.try_wait()
        );
    }

    // (5) teardown.
    let dirs = [lab.node_bpffs_dir(1), lab.node_bpffs_dir(2)];
    let t0 = std::time::Instant::now();
    drop(lab);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "drop took {:?}",
        t0.elapsed()
    );
    for c in &cmds {
        assert!(!c.is_running(), "node process {} survived drop", c.pid());
    }
    let listed = netns_list();
    assert!(
        !listed.contains(&format!("svl-{id}-")),
        "namespaces of lab {id} still present after drop:\n{listed}"
    );
    for d in &dirs {
        assert!(!d.exists(), "{} still present after drop", d.display());
    }
    assert_root_unchanged("after drop", &before);
}
