//! End to end: svcctl reads the maps the real svc-agent pinned in a lab, with a live TCP
//! connection and a UDP flow through the ClusterIP, and prints every section as JSON,
//! YAML and tables; and it fails with a clear message when nothing (or something
//! incompatible) is pinned. svcctl runs from the root network namespace (it only needs
//! the bpffs); the tests run one at a time.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::{
    CLIENT_IP, Lab, TcpSession, UdpSession,
    agent::{LabAgent, example_manifests, workspace_bin},
};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const TIMEOUT: Duration = Duration::from_secs(3);
const PODS: [&str; 3] = ["10.244.1.11", "10.244.1.12", "10.244.1.13"];

/// A lab with the agent serving a private copy of examples/echo-clusterip.yaml and
/// examples/no-endpoints.yaml.
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
        for (vip, proto, n) in [
            (VIP, PROTO_TCP, 3),
            (VIP, PROTO_UDP, 3),
            (EMPTY_VIP, PROTO_TCP, 0),
            (EMPTY_VIP, PROTO_UDP, 0),
        ] {
            agent
                .wait_backends(vip, 80, proto, n, Duration::from_secs(20))
                .unwrap();
        }
        Env {
            agent,
            manifests,
            lab,
        }
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

fn svcctl(bpffs: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(bpffs)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run svcctl")
}

/// svcctl's stdout; fails the test unless it exited 0.
fn stdout_of(bpffs: &Path, args: &[&str]) -> String {
    let out = svcctl(bpffs, args);
    assert!(
        out.status.success(),
        "svcctl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("svcctl prints UTF-8")
}

fn json(bpffs: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let text = stdout_of(bpffs, &all);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("svcctl {all:?}: not JSON ({e}):\n{text}"))
}

fn yaml(bpffs: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "yaml"]);
    let text = stdout_of(bpffs, &all);
    serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("svcctl {all:?}: not YAML ({e}):\n{text}"))
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a Vec<Value> {
    doc[key]
        .as_array()
        .unwrap_or_else(|| panic!("no list {key:?} in {doc}"))
}

fn keys(doc: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = doc
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {doc}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

fn sorted_addrs(backends: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = backends
        .iter()
        .map(|b| format!("{}:{}", b["addr"].as_str().unwrap(), b["port"]))
        .collect();
    v.sort();
    v
}

fn frontend<'a>(services: &'a [Value], vip: &str, protocol: &str) -> &'a Value {
    services
        .iter()
        .find(|s| s["vip"] == vip && s["port"] == 80 && s["protocol"] == protocol)
        .unwrap_or_else(|| panic!("no frontend {vip}:80/{protocol} in {services:?}"))
}

/// The conntrack service entry of a client's flow.
fn service_entry<'a>(flows: &'a [Value], protocol: &str, client_port: u16) -> &'a Value {
    flows
        .iter()
        .find(|e| {
            e["kind"] == "service"
                && e["protocol"] == protocol
                && e["src"]["addr"] == CLIENT_IP.to_string()
                && e["src"]["port"] == client_port
        })
        .unwrap_or_else(|| {
            panic!("no {protocol} flow from {CLIENT_IP}:{client_port} in conntrack: {flows:?}")
        })
}

#[test]
fn svcctl_shows_services_backends_flows_and_rates_of_a_live_dataplane() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    let bpffs = env.agent.bpffs.clone();
    let mut tcp = TcpSession::connect(env.lab.client_ns(), SVC, TIMEOUT).expect("connect");
    let tcp_pod = env.lab.pod_ip(&tcp.exchange("hi").unwrap().pod).to_string();
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp = UdpSession::bind(env.lab.client_ns()).unwrap();
    let udp_pod = env
        .lab
        .pod_ip(&udp.request(SVC, TIMEOUT).unwrap().pod)
        .to_string();
    let udp_port = udp.local_addr().unwrap().port();
    let expected_backends: Vec<String> = PODS.iter().map(|p| format!("{p}:8080")).collect();

    // --- dump services: the echo Service (TCP and UDP, 3 backends each) and the one
    // without endpoints.
    let doc = json(&bpffs, &["dump", "services"]);
    assert_eq!(
        keys(&doc),
        [
            "inconsistencies",
            "problems",
            "service_cidrs",
            "services",
            "unserved",
            "version"
        ],
        "{doc}"
    );
    assert_eq!(doc["version"], 3);
    // No ServiceCIDR, no --service-cluster-ip-range: the two ClusterIPs are allocated.
    assert_eq!(
        doc["service_cidrs"],
        serde_json::json!({"cidrs": [], "cluster_ips": 2, "ipv6_cluster_ips": 0, "other_proxy_cluster_ips": 0}),
        "{doc}"
    );
    let services = list(&doc, "services");
    assert_eq!(services.len(), 4, "{doc}");
    for protocol in ["TCP", "UDP"] {
        let echo = frontend(services, "10.96.0.10", protocol);
        assert_eq!(echo["service"]["namespace"], "default", "{echo}");
        assert_eq!(echo["service"]["name"], "echo", "{echo}");
        assert_eq!(echo["kind"], "clusterip");
        assert_eq!(echo["rejects"], false);
        assert_eq!(sorted_addrs(list(echo, "backends")), expected_backends);
        let empty = frontend(services, "10.96.0.11", protocol);
        assert_eq!(empty["service"]["name"], "nobody-home", "{empty}");
        assert_eq!(empty["backends"], serde_json::json!([]));
        assert_eq!(empty["rejects"], true);
    }
    assert_eq!(
        frontend(services, "10.96.0.10", "TCP")["service"]["port_name"],
        "http"
    );
    assert_eq!(doc["unserved"], serde_json::json!([]));
    // YAML is the same document.
    let doc_yaml = yaml(&bpffs, &["dump", "services"]);
    assert_eq!(doc_yaml["services"], doc["services"]);
    assert_eq!(doc_yaml["version"], 3);

    // --- dump backends: one entry per pod and protocol, active, used by default/echo;
    // the live flows are counted on their backends.
    let doc = json(&bpffs, &["dump", "backends"]);
    assert_eq!(keys(&doc), ["backends", "version"], "{doc}");
    let backends = list(&doc, "backends");
    assert_eq!(backends.len(), 6, "3 pods x TCP, UDP: {doc}");
    for protocol in ["TCP", "UDP"] {
        let mine: Vec<Value> = backends
            .iter()
            .filter(|b| b["protocol"] == protocol)
            .cloned()
            .collect();
        assert_eq!(sorted_addrs(&mine), expected_backends, "{protocol}: {doc}");
        for b in &mine {
            assert_eq!(b["state"], "active", "{b}");
            assert_eq!(b["frontends"], 1, "{b}");
            let r = &list(b, "references")[0];
            assert_eq!(r["service"]["namespace"], "default", "{b}");
            assert_eq!(r["service"]["name"], "echo", "{b}");
            assert_eq!(r["vip"], "10.96.0.10");
            assert_eq!(r["protocol"], protocol);
            assert_eq!(r["scopes"], serde_json::json!(["all"]));
        }
        let pod = if protocol == "TCP" {
            &tcp_pod
        } else {
            &udp_pod
        };
        let used = mine.iter().find(|b| b["addr"] == pod.as_str()).unwrap();
        assert!(used["flows"].as_u64().unwrap() >= 1, "{used}");
    }
    let doc_yaml = yaml(&bpffs, &["dump", "backends"]);
    assert_eq!(list(&doc_yaml, "backends").len(), 6);
    assert_eq!(
        doc_yaml["backends"][0]["references"],
        doc["backends"][0]["references"]
    );
    // The hidden alias.
    let alias = stdout_of(&bpffs, &["dump", "backends", "--json"]);
    let alias: Value = serde_json::from_str(&alias).expect("--json is JSON");
    assert_eq!(alias["backends"].as_array().unwrap().len(), 6);

    // --- dump conntrack: the live TCP connection and the UDP flow, translated to a pod.
    let doc = json(&bpffs, &["dump", "conntrack"]);
    assert_eq!(
        keys(&doc),
        ["conntrack", "expired_hidden", "now_ns", "version"],
        "{doc}"
    );
    let flows = list(&doc, "conntrack");
    for (protocol, port, pod) in [("TCP", tcp_port, &tcp_pod), ("UDP", udp_port, &udp_pod)] {
        let e = service_entry(flows, protocol, port);
        assert_eq!(
            e["dst"],
            serde_json::json!({"addr": "10.96.0.10", "port": 80})
        );
        assert_eq!(
            e["translated"]["dst"],
            serde_json::json!({"addr": pod, "port": 8080}),
            "{e}"
        );
        assert_eq!(
            e["translated"]["src"],
            serde_json::json!({"addr": CLIENT_IP.to_string(), "port": port}),
            "not masqueraded: {e}"
        );
        assert_eq!(e["backend"]["addr"], pod.as_str());
        assert_eq!(e["service"]["name"], "echo", "{e}");
        assert_eq!(e["expired"], false);
        assert!(PODS.contains(&e["translated_dst"]["addr"].as_str().unwrap()));
        // Its reply entry goes back to the VIP.
        let reply = flows
            .iter()
            .find(|r| r["kind"] == "reply" && r["protocol"] == protocol && r["dst"]["port"] == port)
            .unwrap_or_else(|| panic!("no reply entry for {protocol} {port}: {flows:?}"));
        assert_eq!(reply["src"]["addr"], pod.as_str());
        assert_eq!(
            reply["translated"]["src"],
            serde_json::json!({"addr": "10.96.0.10", "port": 80})
        );
    }
    let doc_yaml = yaml(&bpffs, &["dump", "conntrack"]);
    let e = service_entry(list(&doc_yaml, "conntrack"), "TCP", tcp_port);
    assert_eq!(e["translated"]["dst"]["addr"], tcp_pod.as_str());

    // --- dump affinity and dump stats (echo has no session affinity).
    let doc = json(&bpffs, &["dump", "affinity"]);
    assert_eq!(
        keys(&doc),
        ["affinity", "expired_hidden", "now_ns", "version"],
        "{doc}"
    );
    assert_eq!(doc["affinity"], serde_json::json!([]));
    let doc = json(&bpffs, &["dump", "stats"]);
    assert_eq!(keys(&doc), ["stats", "version"], "{doc}");
    let dnat_new = list(&doc, "stats")
        .iter()
        .find(|s| s["verdict"] == "dnat_new")
        .unwrap();
    assert!(dnat_new["total"].as_u64().unwrap() >= 2, "{doc}");

    // --- svcctl stats: totals and rates. Traffic on the open connection during the
    // interval gives dnat_established a rate.
    let child = Command::new(workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(&bpffs)
        .args(["stats", "-o", "json", "--interval", "1.5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn svcctl stats");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1700) {
        tcp.exchange("tick")
            .expect("exchange on the open connection");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "svcctl stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stats -o json is JSON");
    assert_eq!(
        keys(&doc),
        ["interval_s", "services", "stats", "version"],
        "{doc}"
    );
    // Every frontend's per-Service counters (no -n or SERVICE given): echo's and
    // nobody-home's TCP and UDP ports; the open connection's to echo's TCP port.
    let services = list(&doc, "services");
    assert_eq!(services.len(), 4, "{doc}");
    let echo_tcp = services
        .iter()
        .find(|s| s["vip"] == "10.96.0.10" && s["protocol"] == "TCP")
        .unwrap();
    assert!(echo_tcp["new_flows"].as_u64().unwrap() >= 1, "{doc}");
    assert!(
        echo_tcp["packets_per_second"].as_f64().unwrap() > 0.0,
        "{doc}"
    );
    assert_eq!(doc["version"], 3);
    let interval = doc["interval_s"].as_f64().unwrap();
    assert!((1.4..3.0).contains(&interval), "{doc}");
    let stats = list(&doc, "stats");
    assert!(stats.len() >= 20, "every verdict, also those at 0: {doc}");
    for s in stats {
        assert!(s["packets"].is_u64() && s["per_second"].is_number(), "{s}");
    }
    let verdict = |name: &str| stats.iter().find(|s| s["verdict"] == name).unwrap();
    assert!(
        verdict("dnat_new")["packets"].as_u64().unwrap() > 0,
        "{doc}"
    );
    assert!(
        verdict("dnat_established")["per_second"].as_f64().unwrap() > 0.0,
        "{doc}"
    );
    // YAML; and --watch --count N: N newline-delimited documents.
    let doc_yaml = yaml(&bpffs, &["stats", "--interval", "0.2"]);
    assert_eq!(list(&doc_yaml, "stats").len(), stats.len());
    let started = Instant::now();
    let text = stdout_of(
        &bpffs,
        &[
            "stats",
            "--watch",
            "--count",
            "3",
            "--interval",
            "0.2",
            "-o",
            "json",
        ],
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(docs.len(), 3, "{text}");
    assert!(
        docs.iter()
            .all(|d| d["stats"].as_array().unwrap().len() == stats.len())
    );
    // Without a terminal and without --count, --watch stops after one refresh.
    let text = stdout_of(
        &bpffs,
        &["stats", "--watch", "--interval", "0.2", "-o", "json"],
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    let text = stdout_of(
        &bpffs,
        &["stats", "--watch", "--count", "2", "--interval", "0.2"],
    );
    assert_eq!(text.matches("PER-SECOND").count(), 2, "{text}");
    assert!(
        !text.contains('\x1b'),
        "no screen clearing without a terminal: {text:?}"
    );

    // --- -n NAMESPACE and SERVICE select Services in every section but stats.
    let doc = json(&bpffs, &["dump", "services", "-n", "default", "echo"]);
    let services = list(&doc, "services");
    assert_eq!(services.len(), 2, "{doc}");
    assert!(services.iter().all(|s| s["service"]["name"] == "echo"));
    let doc = json(&bpffs, &["dump", "services", "nobody-home"]);
    assert_eq!(list(&doc, "services").len(), 2, "{doc}");
    assert!(
        list(&doc, "services")
            .iter()
            .all(|s| s["vip"] == "10.96.0.11")
    );
    let doc = json(&bpffs, &["dump", "services", "-n", "kube-system"]);
    assert_eq!(doc["services"], serde_json::json!([]), "{doc}");
    let doc = json(&bpffs, &["dump", "backends", "nobody-home"]);
    assert_eq!(doc["backends"], serde_json::json!([]), "{doc}");
    let doc = json(&bpffs, &["dump", "backends", "-n", "default", "echo"]);
    assert_eq!(list(&doc, "backends").len(), 6, "{doc}");
    let doc = json(&bpffs, &["dump", "conntrack", "-n", "default", "echo"]);
    let flows = list(&doc, "conntrack");
    service_entry(flows, "TCP", tcp_port);
    service_entry(flows, "UDP", udp_port);
    assert!(
        flows.iter().all(|e| e["service"]["name"] == "echo"),
        "{doc}"
    );
    let doc = json(&bpffs, &["dump", "conntrack", "nobody-home"]);
    assert_eq!(doc["conntrack"], serde_json::json!([]), "{doc}");
    let doc = json(&bpffs, &["dump", "-n", "default", "nobody-home"]);
    assert_eq!(list(&doc, "services").len(), 2, "{doc}");
    assert_eq!(doc["conntrack"], serde_json::json!([]), "{doc}");
    let doc = json(&bpffs, &["dump", "stats", "-n", "kube-system", "nothing"]);
    assert_eq!(
        list(&doc, "stats").len(),
        stats.len(),
        "stats ignore the filter"
    );

    // --- Tables: a few headers and cells.
    let table = stdout_of(&bpffs, &["dump"]);
    for want in [
        "SERVICES (4 frontends, 6 backends)",
        "default/echo:http",
        "default/nobody-home:http",
        "<none: rejects>",
        "SERVICE CIDRS (none: packets to addresses no Service has are passed; 2 allocated ClusterIPs: ports no Service has are rejected)",
        "CONNTRACK (",
        "ORIGINAL",
        &format!("{CLIENT_IP}:{tcp_port} -> 10.96.0.10:80"),
        &format!("dst -> {tcp_pod}:8080"),
    ] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    let table = stdout_of(&bpffs, &["dump", "services", "-o", "wide"]);
    for want in ["REVNAT", "LOCAL-BACKENDS", "10.244.1.11:8080 (id "] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    assert!(!table.contains("CONNTRACK"), "{table}");
    let table = stdout_of(&bpffs, &["dump", "backends"]);
    for want in [
        "BACKENDS (6 entries)",
        "ID",
        "STATE",
        "FLOWS",
        "active",
        "default/echo:http",
    ] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    let table = stdout_of(&bpffs, &["dump", "conntrack", "-o", "wide"]);
    for want in ["CREATED-NS", "LAST-SEEN-NS", "REVNAT", "default/echo:"] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    let table = stdout_of(&bpffs, &["stats", "--interval", "0.2"]);
    for want in ["VERDICT", "PACKETS", "PER-SECOND", "dnat_new"] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    let all = stdout_of(&bpffs, &["stats", "--interval", "0.2", "--all"]);
    assert!(all.contains("drop_nat_failed"), "{all}");

    // --- An expired flow (a UDP service entry last seen at boot, written here; the
    // datapath ignores it) is left out by default and counted, and listed with
    // --show-expired (alias --all).
    let echo_udp = frontend(
        list(&json(&bpffs, &["dump", "services"]), "services"),
        "10.96.0.10",
        "UDP",
    )
    .clone();
    let stale_client = Ipv4Addr::new(10, 244, 1, 99);
    put_expired_flow(
        &bpffs,
        stale_client,
        echo_udp["rev_nat_id"].as_u64().unwrap() as u32,
    );
    let is_stale = |e: &Value| e["src"]["addr"] == stale_client.to_string();
    let doc = json(&bpffs, &["dump", "conntrack"]);
    assert!(!list(&doc, "conntrack").iter().any(is_stale), "{doc}");
    assert_eq!(doc["expired_hidden"], 1, "{doc}");
    service_entry(list(&doc, "conntrack"), "TCP", tcp_port);
    let doc = json(&bpffs, &["dump"]);
    assert_eq!(doc["expired_hidden"]["conntrack"], 1, "{doc}");
    let table = stdout_of(&bpffs, &["dump", "conntrack"]);
    assert!(
        table.contains("; 1 expired not shown (--show-expired lists them))"),
        "{table}"
    );
    assert!(!table.contains(&stale_client.to_string()), "{table}");
    for flag in ["--show-expired", "--all"] {
        let doc = json(&bpffs, &["dump", "conntrack", flag]);
        let stale = list(&doc, "conntrack")
            .iter()
            .find(|e| is_stale(e))
            .unwrap_or_else(|| panic!("{flag}: the expired flow is listed: {doc}"));
        assert_eq!(stale["expired"], true);
        assert_eq!(doc["expired_hidden"], 0);
    }
    let table = stdout_of(&bpffs, &["dump", "--show-expired"]);
    let row = table
        .lines()
        .find(|l| l.contains(&format!("{stale_client}:4242")))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.ends_with("expired"), "{row}");
}

/// Writes a UDP service conntrack entry from `client`:4242 to the echo Service, last seen
/// at boot: long expired.
fn put_expired_flow(bpffs: &Path, client: Ipv4Addr, rev_nat_id: u32) {
    use aya::maps::{HashMap, Map, MapData};
    use svc_common::{CT_KIND_SERVICE, Ct4Key, Ct4Value, map_names::SVC4_CT};
    let data = MapData::from_pin(bpffs.join(SVC4_CT)).expect("open SVC4_CT");
    let mut ct: HashMap<MapData, Ct4Key, Ct4Value> =
        Map::from_map_data(data).unwrap().try_into().unwrap();
    let key = Ct4Key {
        saddr_be: u32::from(client).to_be(),
        daddr_be: u32::from(VIP).to_be(),
        sport_be: 4242u16.to_be(),
        dport_be: 80u16.to_be(),
        proto: PROTO_UDP,
        kind: CT_KIND_SERVICE,
        ..Default::default()
    };
    let value = Ct4Value {
        created_ns: 1,
        last_seen_ns: 1,
        backend_id: 1,
        addr_be: u32::from(Ipv4Addr::new(10, 244, 1, 11)).to_be(),
        port_be: 8080u16.to_be(),
        rev_nat_id,
        ..Default::default()
    };
    ct.insert(key, value, 0).expect("write the expired entry");
}

/// A bpffs directory of this test (`svl-<pid>-...`, so a crashed run's leftover is removed by
/// the next lab's stale cleanup), removed on drop.
struct BpffsDir(PathBuf);

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pins a new BPF hash map with the given sizes at `path` (raw bpf(2): BPF_MAP_CREATE,
/// BPF_OBJ_PIN).
fn pin_hash_map(path: &Path, key_size: u32, value_size: u32, max_entries: u32) {
    use std::os::unix::ffi::OsStrExt as _;
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    let create = MapCreate {
        map_type: BPF_MAP_TYPE_HASH,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: the attr is a valid prefix of union bpf_attr for BPF_MAP_CREATE and outlives
    // the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &create as *const MapCreate,
            size_of::<MapCreate>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let pin = ObjPin {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    // SAFETY: as above; the path string outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &pin as *const ObjPin,
            size_of::<ObjPin>(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours; the pin keeps the map.
    unsafe { libc::close(fd as libc::c_int) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN {}: {err}", path.display());
}

const SUBCOMMANDS: [&[&str]; 8] = [
    &["dump"],
    &["dump", "services"],
    &["dump", "backends"],
    &["dump", "conntrack"],
    &["dump", "affinity"],
    &["dump", "stats"],
    &["stats", "--interval", "0.1"],
    &["stats", "--watch", "--count", "2", "--interval", "0.1"],
];

/// Runs every subcommand (as table and JSON) on `dir` and expects exit 1, nothing on
/// stdout, and `want` in the message.
fn every_subcommand_fails(dir: &Path, want: &[&str]) {
    for args in SUBCOMMANDS {
        for format in ["table", "json"] {
            let mut all = args.to_vec();
            all.extend(["-o", format]);
            let out = svcctl(dir, &all);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "svcctl {all:?}: {stderr}");
            assert!(
                out.stdout.is_empty(),
                "svcctl {all:?} printed {:?}",
                out.stdout
            );
            assert!(stderr.starts_with("svcctl: "), "{stderr}");
            for w in want {
                assert!(stderr.contains(w), "svcctl {all:?}: no {w:?} in {stderr}");
            }
        }
    }
}

#[test]
fn svcctl_says_what_is_wrong_when_nothing_or_something_incompatible_is_pinned() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // An empty directory, not on a bpffs: what `ip netns exec` (a fresh /sys) shows.
    let empty = std::env::temp_dir().join(format!("svl-{}-svcctl-empty", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let dir = empty.display().to_string();
    every_subcommand_fails(
        &empty,
        &[
            &format!("nothing is pinned at {dir}: {dir} is not on a bpf filesystem here"),
            "Under `ip netns exec`, which mounts a fresh /sys",
            "run svcctl outside the network namespace",
            "pass --bpffs",
        ],
    );
    std::fs::remove_dir(&empty).unwrap();
    // A directory that does not exist, below one that is not a bpffs.
    every_subcommand_fails(
        &empty,
        &[&format!(
            "nothing is pinned at {dir}: {} is not on a bpf filesystem here",
            empty.parent().unwrap().display()
        )],
    );

    // On the bpffs: a directory that does not exist, and an empty one.
    svc_lab::ensure_bpffs().expect("bpffs");
    let on_bpffs = BpffsDir(PathBuf::from(format!(
        "/sys/fs/bpf/svl-{}-svcctl-empty",
        std::process::id()
    )));
    let dir = on_bpffs.0.display().to_string();
    every_subcommand_fails(
        &on_bpffs.0,
        &[
            &format!("nothing is pinned at {dir}: the directory does not exist"),
            "Is svc-agent running, with this --bpffs?",
        ],
    );
    std::fs::create_dir_all(&on_bpffs.0).unwrap();
    every_subcommand_fails(
        &on_bpffs.0,
        &[&format!(
            "nothing is pinned at {dir}: it holds none of svc-agent's maps"
        )],
    );
    drop(on_bpffs);

    // A map of another layout where this build expects SVC4_SERVICES.
    let pins = BpffsDir(PathBuf::from(format!(
        "/sys/fs/bpf/svl-{}-svcctl-incompatible",
        std::process::id()
    )));
    std::fs::create_dir_all(&pins.0).unwrap();
    pin_hash_map(&pins.0.join("SVC4_SERVICES"), 4, 4, 16);
    every_subcommand_fails(
        &pins.0,
        &[
            "SVC4_SERVICES does not match this build (key size: pinned 4, expected",
            "incompatible version of svc-agent",
            &format!("svc-agent cleanup --bpffs {}", pins.0.display()),
        ],
    );

    // Usage errors exit 2.
    for args in [
        &["stats", "--interval", "0"][..],
        &["stats", "--count", "0"],
        &["dump", "-o", "xml"],
        &["dump", "--json", "-o", "yaml"],
        &["dump", "services", "a", "b"],
    ] {
        let out = svcctl(&pins.0, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "svcctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
