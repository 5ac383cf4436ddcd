//! End to end: the per-Service counters (SVC_SVC_STATS) and "count packets, not program
//! runs", with real packets. From the outside host, through the node's eth0 where XDP and
//! then TC see every packet: a known number of UDP datagrams and TCP connections to the
//! echo ClusterIP, and datagrams to a Service without endpoints (rejected by TC, which
//! XDP hands them to). Then `svcctl stats` (JSON and table, with -n and SERVICE) and the
//! agent's /metrics must show exactly those numbers, SVC_STATS must have counted each
//! translated datagram once (XDP's count, TC skipping the packet XDP marked), and the
//! series of a removed Service must disappear.
//!
//! Everything runs in the lab's namespaces; svcctl reads the pins from the root namespace
//! (it only needs the bpffs). One test, so one lab at a time.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use svc_common::{PROTO_TCP, PROTO_UDP, Verdict};
use svc_lab::{
    Lab, TcpSession, UdpSession,
    agent::{LabAgent, example_manifests, wait_for, workspace_bin},
    http_get,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const EMPTY: SocketAddrV4 = SocketAddrV4::new(EMPTY_VIP, 80);
const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10249);
const TIMEOUT: Duration = Duration::from_secs(3);
/// UDP datagrams, one socket (one flow): 1 new flow, DATAGRAMS packets and replies.
const DATAGRAMS: u64 = 40;
/// TCP connections, one line each.
const CONNECTIONS: u64 = 5;
/// Datagrams to the Service without endpoints (each answered with ICMP port unreachable).
const REJECTED: u64 = 3;

struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    // Dropped last: tears the namespaces down after the agent is stopped.
    lab: Lab,
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

fn svcctl(bpffs: &Path, args: &[&str]) -> String {
    let out = Command::new(workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(bpffs)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running svcctl");
    assert!(
        out.status.success(),
        "svcctl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("svcctl prints UTF-8")
}

/// `svcctl stats ARGS -o json --interval 0.1`.
fn stats_json(bpffs: &Path, args: &[&str]) -> Value {
    let mut all = vec!["stats"];
    all.extend(args);
    all.extend(["--interval", "0.1", "-o", "json"]);
    let text = svcctl(bpffs, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The entry of `services` for the frontend vip:80/protocol.
fn frontend<'a>(doc: &'a Value, vip: Ipv4Addr, protocol: &str) -> &'a Value {
    doc["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["vip"] == vip.to_string() && s["port"] == 80 && s["protocol"] == protocol)
        .unwrap_or_else(|| panic!("no frontend {vip}:80/{protocol} in {doc:#}"))
}

fn verdict(doc: &Value, v: Verdict) -> u64 {
    doc["stats"]
        .as_array()
        .expect("stats")
        .iter()
        .find(|s| s["verdict"] == v.label())
        .and_then(|s| s["packets"].as_u64())
        .unwrap_or_else(|| panic!("no verdict {v:?} in {doc:#}"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The value of the one sample `series` (name and labels exactly) in a /metrics text.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{series}: {v:?}: {e}")))
}

#[test]
fn per_service_counters_count_each_packet_once() {
    let mut lab = Lab::up().expect("lab up");
    let manifests = example_manifests(&lab, &["echo-clusterip.yaml", "no-endpoints.yaml"]).unwrap();
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let agent = LabAgent::start(&mut lab, &manifests, &log).expect("start agent");
    let env = Env {
        agent,
        manifests,
        lab,
    };
    for (vip, proto, backends) in [
        (VIP, PROTO_TCP, 3),
        (VIP, PROTO_UDP, 3),
        (EMPTY_VIP, PROTO_TCP, 0),
        (EMPTY_VIP, PROTO_UDP, 0),
    ] {
        env.agent
            .wait_backends(vip, 80, proto, backends, Duration::from_secs(20))
            .unwrap();
    }
    // The outside host reaches the ClusterIPs through node 1's eth0 (XDP, then TC).
    env.lab.ext_route("10.96.0.0/16", 1).expect("ext route");
    let bpffs = env.agent.bpffs.clone();
    let ext = env.lab.ext_ns().to_string();

    let before = stats_json(&bpffs, &[]);
    let udp0 = frontend(&before, VIP, "UDP").clone();
    let tcp0 = frontend(&before, VIP, "TCP").clone();
    let empty0 = frontend(&before, EMPTY_VIP, "UDP").clone();
    let xdp_translated0 =
        verdict(&before, Verdict::DnatNew) + verdict(&before, Verdict::DnatEstablished);
    let pass0 = verdict(&before, Verdict::PassNotService);

    // One UDP socket: one flow, DATAGRAMS requests and replies.
    let sock = UdpSession::bind(&ext).expect("bind UDP in ext");
    for i in 0..DATAGRAMS {
        sock.request(SVC, TIMEOUT)
            .unwrap_or_else(|e| panic!("datagram {i} to {SVC}: {e}"));
    }
    let after_udp = stats_json(&bpffs, &[]);
    let udp = frontend(&after_udp, VIP, "UDP");
    assert_eq!(
        n(&udp["packets"]) - n(&udp0["packets"]),
        DATAGRAMS,
        "{udp:#}"
    );
    assert_eq!(n(&udp["new_flows"]) - n(&udp0["new_flows"]), 1, "{udp:#}");
    assert_eq!(
        n(&udp["reply_packets"]) - n(&udp0["reply_packets"]),
        DATAGRAMS,
        "{udp:#}"
    );
    assert!(
        n(&udp["bytes"]) - n(&udp0["bytes"]) >= DATAGRAMS * 42,
        "whole frames: at least Ethernet + IPv4 + UDP each: {udp:#}"
    );
    assert_eq!(udp["service"]["name"], "echo");
    assert_eq!(udp["service"]["port_name"], "dns-like");
    // Each datagram in SVC_STATS once: XDP's translation. TC on eth0 saw every one of
    // them next and skipped it (XDP's mark); before, each counted again there as
    // pass_not_service. The lab's own background traffic (neighbour discovery, ...) moves
    // pass_not_service by a few at most.
    let xdp_translated =
        verdict(&after_udp, Verdict::DnatNew) + verdict(&after_udp, Verdict::DnatEstablished);
    assert_eq!(
        xdp_translated - xdp_translated0,
        DATAGRAMS,
        "dnat_new + dnat_established: each datagram once"
    );
    let passed = verdict(&after_udp, Verdict::PassNotService) - pass0;
    // How XDP is attached here (native on the veth: "xdp"; generic: "xdpgeneric"), for
    // the record: the metadata reaches TC either way.
    let link = env
        .lab
        .exec(env.lab.node_ns(), &["ip", "-d", "link", "show", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mode = ["xdpgeneric", "xdpdrv", "xdpoffload", "xdp"]
        .into_iter()
        .find(|m| link.contains(&format!(" {m}")))
        .unwrap_or("none?");
    eprintln!(
        "{DATAGRAMS} datagrams through eth0 (XDP mode: {mode}): dnat {}, pass_not_service +{passed}, \
         service packets +{}, bytes +{}, replies +{}",
        verdict(&after_udp, Verdict::DnatNew) + verdict(&after_udp, Verdict::DnatEstablished)
            - xdp_translated0,
        n(&udp["packets"]) - n(&udp0["packets"]),
        n(&udp["bytes"]) - n(&udp0["bytes"]),
        n(&udp["reply_packets"]) - n(&udp0["reply_packets"]),
    );
    assert!(
        passed < DATAGRAMS / 4,
        "pass_not_service went up by {passed} for {DATAGRAMS} datagrams XDP translated: TC \
         counted them again"
    );
    assert_eq!(
        verdict(&after_udp, Verdict::XdpPassToTc),
        0,
        "xdp_pass_to_tc is no longer counted"
    );

    // CONNECTIONS TCP connections: as many new flows, a handful of packets each.
    for i in 0..CONNECTIONS {
        let mut s = TcpSession::connect(&ext, SVC, TIMEOUT)
            .unwrap_or_else(|e| panic!("connection {i} to {SVC}: {e}"));
        s.exchange("hello").expect("echo over TCP");
    }
    // Datagrams to a Service without endpoints: TC answers ICMP port unreachable.
    for _ in 0..REJECTED {
        let sock = UdpSession::bind(&ext).expect("bind UDP in ext");
        assert!(
            sock.request(EMPTY, Duration::from_millis(500)).is_err(),
            "a Service without endpoints answered"
        );
    }
    let after = stats_json(&bpffs, &[]);
    let tcp = frontend(&after, VIP, "TCP");
    assert_eq!(
        n(&tcp["new_flows"]) - n(&tcp0["new_flows"]),
        CONNECTIONS,
        "{tcp:#}"
    );
    assert!(
        n(&tcp["packets"]) - n(&tcp0["packets"]) >= 3 * CONNECTIONS,
        "SYN, ACK, data at least: {tcp:#}"
    );
    assert!(n(&tcp["reply_packets"]) - n(&tcp0["reply_packets"]) >= 2 * CONNECTIONS);
    assert_eq!(n(&tcp["dropped"]), 0, "{tcp:#}");
    let empty = frontend(&after, EMPTY_VIP, "UDP");
    assert_eq!(
        n(&empty["drops"]["no_endpoints"]) - n(&empty0["drops"]["no_endpoints"]),
        REJECTED,
        "{empty:#}"
    );
    assert_eq!(n(&empty["packets"]), 0, "{empty:#}");

    // -n and SERVICE select the per-Service rows; the table names the Service.
    let only = stats_json(&bpffs, &["-n", "default", "echo"]);
    let names: Vec<&Value> = only["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["service"]["name"])
        .collect();
    assert_eq!(names.len(), 2, "echo's TCP and UDP frontends: {only:#}");
    assert!(names.iter().all(|n| *n == "echo"), "{only:#}");
    assert_eq!(
        stats_json(&bpffs, &["-n", "kube-system"])["services"],
        serde_json::json!([])
    );
    let table = svcctl(&bpffs, &["stats", "--interval", "0.1", "-A"]);
    eprintln!("{table}");
    assert!(table.contains("SERVICES ("), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("default/echo:dns-like"))
        .unwrap_or_else(|| panic!("no row for default/echo:dns-like:\n{table}"));
    assert!(
        row.contains("clusterip 10.96.0.10:80/UDP"),
        "{row}\n{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("default/nobody-home:udp"))
        .unwrap_or_else(|| panic!("no row for default/nobody-home:udp:\n{table}"));
    assert!(row.contains("no_endpoints=3"), "{row}\n{table}");

    // /metrics: the same numbers, per Service port.
    let metrics = || {
        let (code, text) =
            http_get(env.lab.node_ns(), METRICS, "/metrics", TIMEOUT).expect("GET /metrics");
        assert_eq!(code, 200, "{text}");
        text
    };
    let text = metrics();
    let labels = |name: &str, port: &str| {
        format!("{{namespace=\"default\",name=\"{name}\",port=\"{port}\",kind=\"clusterip\"}}")
    };
    let udp_now = frontend(&after, VIP, "UDP");
    assert_eq!(
        sample(
            &text,
            &format!("svc_service_packets_total{}", labels("echo", "dns-like"))
        ),
        Some(n(&udp_now["packets"])),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("svc_service_new_flows_total{}", labels("echo", "http"))
        ),
        Some(n(&tcp["new_flows"])),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "svc_service_reply_packets_total{}",
                labels("echo", "dns-like")
            )
        ),
        Some(n(&udp_now["reply_packets"])),
        "{text}"
    );
    let drops = |name: &str, port: &str, reason: &str| {
        format!(
            "svc_service_drops_total{{namespace=\"default\",name=\"{name}\",port=\"{port}\",kind=\"clusterip\",reason=\"{reason}\"}}"
        )
    };
    assert_eq!(
        sample(&text, &drops("nobody-home", "udp", "no_endpoints")),
        Some(REJECTED),
        "{text}"
    );
    assert_eq!(
        sample(&text, &drops("echo", "http", "no_endpoints")),
        Some(0)
    );

    // A removed Service's counters and series go with its frontends.
    std::fs::remove_file(env.manifests.join("no-endpoints.yaml")).expect("remove manifest");
    assert!(
        wait_for(Duration::from_secs(10), || {
            env.agent.backend_count(EMPTY_VIP, 80, PROTO_UDP).is_none()
                && env.agent.backend_count(EMPTY_VIP, 80, PROTO_TCP).is_none()
        }),
        "the agent did not remove nobody-home's frontends"
    );
    let text = metrics();
    assert!(
        !text.contains("name=\"nobody-home\""),
        "a removed Service's series stay:\n{text}"
    );
    assert!(text.contains("name=\"echo\""), "{text}");
    let gone = stats_json(&bpffs, &["nobody-home"]);
    assert_eq!(gone["services"], serde_json::json!([]), "{gone:#}");
}
