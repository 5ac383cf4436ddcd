//! End to end on one node: packets to addresses no Service takes, as kube-proxy's nftables
//! mode treats them (pkg/proxy/nftables/proxier.go, the `cluster-ips-check` chain; its
//! TestClusterIPGeneral rows with its Services and service CIDR 172.30.0.0/16):
//! - a ClusterIP on a port/protocol no Service has is REJECTed: TCP refused, UDP gets ICMP
//!   port unreachable (a connected socket reads ECONNREFUSED), a node process ECONNREFUSED;
//! - an address inside the service CIDR that no Service has is DROPped (silence; a node
//!   process EPERM), where before the packet went on to routing: here a "gateway" (the
//!   outside host, to which the node routes 172.30.0.99) answered it, the leak of the issue;
//! - an address outside the service CIDRs, and a ClusterIP only another proxy's Service
//!   has, still go to routing (the gateway answers);
//! - the service CIDRs come from ServiceCIDR objects (manifests; in Kubernetes mode the
//!   watch), `--service-cluster-ip-range` only while none exists; an API server that does
//!   not serve ServiceCIDRs (404) leaves the agent on the flag.
//!
//! From a pod (TC), from outside (XDP, then TC for rejects) and from the node itself (the
//! cgroup socket programs). The datapath fixtures (svc-agent/tests/datapath/unallocated.rs)
//! check the exact frames.
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use svc_common::PROTO_TCP;
use svc_lab::{
    EXT_IP, EchoServers, Lab, NODE_EXT_IF,
    agent::{AgentSource, LabAgent, wait_for, workspace_bin},
    fake_apiserver::FakeApiServer,
    in_netns, netns, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a row that expects silence (a DROP) waits.
const DROP_WAIT: Duration = Duration::from_millis(700);

const SVC1: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 41);
const SVC2: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 42);
const OTHER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 44);
/// Unallocated, and no route on the node: before the rule, unreachable.
const UNALLOCATED: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 50);
/// Unallocated, routed by the node to the outside host, which holds it: before the rule
/// the packet reached it (the leak to the default gateway of the issue).
const LEAKED: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 99);
/// Outside every service CIDR, held by the outside host too.
const BEYOND: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The port the outside host's echo server (the "gateway") listens on.
const GATEWAY_PORT: u16 = 8080;

/// kube-proxy's TestClusterIPGeneral Services (svc2's SCTP port is skipped by the agent)
/// and a Service another proxy owns.
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  clusterIP: 172.30.0.41
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-1, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: ["10.244.1.11"], nodeName: node1}]
---
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: ns2}
spec:
  clusterIP: 172.30.0.42
  ports:
    - {name: http, port: 80, protocol: TCP, targetPort: 8080}
    - {name: dns-udp, port: 53, protocol: UDP, targetPort: 8080}
    - {name: dns-sctp, port: 53, protocol: SCTP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc2-1, namespace: ns2, labels: {kubernetes.io/service-name: svc2}}
addressType: IPv4
ports:
  - {name: http, port: 8080, protocol: TCP}
  - {name: dns-udp, port: 8080, protocol: UDP}
endpoints: [{addresses: ["10.244.1.12"], nodeName: node1}]
---
apiVersion: v1
kind: Service
metadata:
  name: other
  namespace: ns3
  labels: {service.kubernetes.io/service-proxy-name: another-proxy}
spec:
  clusterIP: 172.30.0.44
  ports: [{name: http, port: 8080, protocol: TCP}]
"#;

fn service_cidr_yaml(name: &str, cidr: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {{name: {name}}}\nspec: {{cidrs: [\"{cidr}\"]}}\n"
    )
}

/// A node process's client: `PROTO HOST PORT TIMEOUT` connects (TCP, or a connected UDP
/// socket), sends one line and prints the first line of the answer, or `ERR <errno>`.
const NODE_CLIENT: &str = r#"
import errno, socket, sys
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    s.sendall(b"node\n")
    print(s.recv(200).decode().splitlines()[0], flush=True)
except socket.timeout:
    print("ERR ETIMEDOUT", flush=True)
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, e.errno), flush=True)
"#;

/// What one attempt got.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// An echo server answered: a pod, or `gateway` (the outside host).
    Reached(String),
    Refused,
    /// Silence until the timeout.
    Silence,
    /// EPERM (a node process denied by the socket programs).
    NotPermitted,
    /// Anything else (unreachable, ...).
    Other(String),
}

fn classify(r: io::Result<String>) -> Got {
    match r {
        Ok(pod) => Got::Reached(pod),
        Err(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Got::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Got::Silence,
            io::ErrorKind::PermissionDenied => Got::NotPermitted,
            _ => Got::Other(e.to_string()),
        },
    }
}

/// A TCP request from namespace `ns`.
fn tcp(ns: &str, to: SocketAddrV4, timeout: Duration) -> Got {
    classify(tcp_request(ns, to, "hi", timeout).map(|r| r.pod))
}

/// A datagram from a connected UDP socket in `ns` (ICMP port unreachable: ECONNREFUSED).
fn udp(ns: &str, to: SocketAddrV4, timeout: Duration) -> Got {
    classify(in_netns(ns, || -> io::Result<String> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(to)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send(b"ping\n")?;
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf)?;
        Ok(svc_lab::EchoReply::parse(&String::from_utf8_lossy(&buf[..n]))?.pod)
    }))
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    log: PathBuf,
    cgroup: String,
    _gateway: EchoServers,
    lab: Lab,
}

impl Env {
    /// [`lab_with_gateway`] and the agent, serving `files` (name, text) with the socket
    /// programs on the node's cgroup and `extra` arguments.
    fn up(files: &[(&str, &str)], extra: &[&str]) -> Env {
        let (lab, gateway) = lab_with_gateway();
        Env::with_lab(lab, gateway, files, None, extra)
    }

    /// [`Env::up`] on a lab of [`lab_with_gateway`] (e.g. with an API server in its node).
    fn with_lab(
        mut lab: Lab,
        gateway: EchoServers,
        files: &[(&str, &str)],
        kubeconfig: Option<&Path>,
        extra: &[&str],
    ) -> Env {
        let manifests = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        for (name, text) in files {
            std::fs::write(manifests.join(name), text).expect("write manifests");
        }
        let cgroup = lab
            .node_cgroup(1)
            .expect("node cgroup")
            .display()
            .to_string();
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let agent = Env::start(&mut lab, &manifests, kubeconfig, &log, &cgroup, extra);
        let env = Env {
            agent,
            manifests,
            log,
            cgroup,
            _gateway: gateway,
            lab,
        };
        env.wait_synced();
        env
    }
}

/// The single-node lab plus the "gateway": the outside host holds LEAKED, OTHER and BEYOND
/// on its loopback with an echo server on GATEWAY_PORT, the node routes them to it, and the
/// outside host routes 172.30.0.0/16 to the node.
fn lab_with_gateway() -> (Lab, EchoServers) {
    let lab = Lab::up().expect("lab up");
    let ext = lab.ext_ns().to_string();
    let gateway = EchoServers::start(&[("gateway".to_string(), ext.clone())], GATEWAY_PORT)
        .expect("gateway echo server");
    for ip in [LEAKED, OTHER, BEYOND] {
        netns::ip_in(&ext, &["addr", "add", &format!("{ip}/32"), "dev", "lo"]).unwrap();
        netns::ip_in(
            lab.node_ns(),
            &[
                "route",
                "add",
                &format!("{ip}/32"),
                "via",
                &EXT_IP.to_string(),
                "dev",
                NODE_EXT_IF,
            ],
        )
        .unwrap();
    }
    lab.ext_route("172.30.0.0/16", 1).unwrap();
    (lab, gateway)
}

impl Env {
    fn start(
        lab: &mut Lab,
        manifests: &Path,
        kubeconfig: Option<&Path>,
        log: &Path,
        cgroup: &str,
        extra: &[&str],
    ) -> LabAgent {
        let mut args = vec!["--cgroup", cgroup, "--node-name", "node1"];
        args.extend_from_slice(extra);
        match kubeconfig {
            None => LabAgent::start_in(lab, 1, manifests, log, &args),
            Some(kc) => LabAgent::start_from(lab, 1, AgentSource::Kubeconfig(kc), log, &args),
        }
        .expect("start agent")
    }

    /// Stops the agent and starts one with `extra` instead, on the same pins.
    fn restart_with(&mut self, kubeconfig: Option<&Path>, extra: &[&str]) {
        let _ = self.agent.process.stop();
        self.agent = Env::start(
            &mut self.lab,
            &self.manifests,
            kubeconfig,
            &self.log,
            &self.cgroup,
            extra,
        );
        self.wait_synced();
    }

    /// svc1's frontend is in the maps, and the sync that wrote it is over (the ClusterIPs
    /// and CIDRs are written in the same pass).
    fn wait_synced(&self) {
        self.agent
            .wait_backends(SVC1, 80, PROTO_TCP, 1, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\n--- agent log ---\n{}", self.agent.log_text()));
        std::thread::sleep(Duration::from_millis(300));
    }

    fn client(&self) -> String {
        self.lab.client_ns().to_string()
    }

    fn ext(&self) -> String {
        self.lab.ext_ns().to_string()
    }

    /// One call of a node process (in the node's cgroup: through the socket programs).
    fn node(&self, udp: bool, to: SocketAddrV4, timeout: Duration) -> Got {
        let out = self
            .lab
            .node_command(1, "python3")
            .expect("node command")
            .args(["-c", NODE_CLIENT, if udp { "udp" } else { "tcp" }])
            .arg(to.ip().to_string())
            .arg(to.port().to_string())
            .arg(format!("{:.1}", timeout.as_secs_f64()))
            .output()
            .expect("run the node client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or_default().trim().to_string();
        match line.strip_prefix("ERR ") {
            Some("ECONNREFUSED") => Got::Refused,
            Some("EPERM") => Got::NotPermitted,
            Some("ETIMEDOUT") => Got::Silence,
            Some(other) => Got::Other(other.to_string()),
            None => match svc_lab::EchoReply::parse(&line) {
                Ok(r) => Got::Reached(r.pod),
                Err(_) => Got::Other(format!("{line:?} {}", String::from_utf8_lossy(&out.stderr))),
            },
        }
    }

    /// Waits (bounded) until `probe` gives `want`; panics with what it gave.
    fn expect(&self, what: &str, want: Got, probe: impl Fn() -> Got) {
        let mut last = probe();
        let deadline = Instant::now() + Duration::from_secs(10);
        while last != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            last = probe();
        }
        assert_eq!(
            last,
            want,
            "{what}\n--- agent log ---\n{}",
            self.agent.log_text()
        );
    }

    fn svcctl_dump(&self) -> Value {
        let out = std::process::Command::new(workspace_bin("svcctl").unwrap())
            .arg("--bpffs")
            .arg(&self.agent.bpffs)
            .args(["dump", "-o", "json"])
            .output()
            .expect("run svcctl");
        assert!(
            out.status.success(),
            "svcctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("svcctl dump JSON")
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

/// The rows, with a ServiceCIDR object 172.30.0.0/16 among the manifests.
#[test]
fn unknown_ports_reject_and_unallocated_addresses_drop() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cidr = service_cidr_yaml("kubernetes", "172.30.0.0/16");
    let env = Env::up(&[("services.yaml", SERVICES), ("cidr.yaml", &cidr)], &[]);
    let (pod, ext) = (env.client(), env.ext());
    let gateway = || Got::Reached("gateway".into());

    // From a pod.
    assert_eq!(
        tcp(&pod, at(SVC1, 80), TIMEOUT),
        Got::Reached("p1".into()),
        "simple clusterIP"
    );
    let started = Instant::now();
    assert_eq!(
        tcp(&pod, at(SVC1, 443), TIMEOUT),
        Got::Refused,
        "svc1 does not accept svc2's ports"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, took {:?}",
        started.elapsed()
    );
    assert_eq!(
        udp(&pod, at(SVC2, 80), TIMEOUT),
        Got::Refused,
        "TCP-only port does not match UDP traffic"
    );
    assert_eq!(
        udp(&pod, at(SVC2, 53), TIMEOUT),
        Got::Reached("p2".into()),
        "svc2's UDP port is served"
    );
    assert_eq!(
        tcp(&pod, at(SVC2, 53), TIMEOUT),
        Got::Refused,
        "svc2's 53/SCTP port is skipped, 53/TCP is no port of it"
    );
    assert_eq!(
        tcp(&pod, at(UNALLOCATED, 80), DROP_WAIT),
        Got::Silence,
        "packet to unallocated cluster ip"
    );
    assert_eq!(
        tcp(&pod, at(LEAKED, GATEWAY_PORT), DROP_WAIT),
        Got::Silence,
        "an unallocated address the node routes to the gateway is dropped, not leaked"
    );
    assert_eq!(
        udp(&pod, at(LEAKED, GATEWAY_PORT), DROP_WAIT),
        Got::Silence,
        "UDP to it too"
    );
    assert_eq!(
        tcp(&pod, at(BEYOND, GATEWAY_PORT), TIMEOUT),
        gateway(),
        "outside the service CIDRs: routed as before"
    );
    assert_eq!(
        tcp(&pod, at(OTHER, GATEWAY_PORT), TIMEOUT),
        gateway(),
        "another proxy's ClusterIP: left alone"
    );

    // From outside (XDP on the node's external interface; rejects answered by TC).
    assert!(
        matches!(tcp(&ext, at(SVC1, 80), TIMEOUT), Got::Reached(p) if p == "p1"),
        "outside to the ClusterIP"
    );
    let refused = in_netns(&ext, || {
        TcpStream::connect_timeout(&at(SVC1, 443).into(), TIMEOUT)
    });
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused),
        "outside to a port of svc1 no Service has"
    );
    assert_eq!(
        udp(&ext, at(SVC2, 80), TIMEOUT),
        Got::Refused,
        "outside, UDP"
    );
    assert_eq!(
        tcp(&ext, at(UNALLOCATED, 80), DROP_WAIT),
        Got::Silence,
        "outside to an unallocated address"
    );

    // From the node itself (the socket programs).
    assert_eq!(
        env.node(false, at(SVC1, 443), TIMEOUT),
        Got::Refused,
        "node: unknown port"
    );
    assert_eq!(
        env.node(true, at(SVC2, 80), TIMEOUT),
        Got::Refused,
        "node: UDP to a TCP-only port"
    );
    assert_eq!(
        env.node(false, at(UNALLOCATED, 80), TIMEOUT),
        Got::NotPermitted,
        "node: unallocated address"
    );
    assert_eq!(
        env.node(false, at(LEAKED, GATEWAY_PORT), TIMEOUT),
        Got::NotPermitted,
        "node: unallocated address, routed"
    );
    assert_eq!(
        env.node(false, at(BEYOND, GATEWAY_PORT), TIMEOUT),
        gateway(),
        "node: outside the CIDRs"
    );
    assert!(
        matches!(env.node(false, at(SVC1, 80), TIMEOUT), Got::Reached(p) if p == "p1"),
        "node: the ClusterIP"
    );

    // svcctl: the section, and the counters.
    let dump = env.svcctl_dump();
    assert_eq!(
        dump["service_cidrs"],
        json!({"cidrs": ["172.30.0.0/16"], "cluster_ips": 3, "ipv6_cluster_ips": 0, "other_proxy_cluster_ips": 1}),
        "{dump}"
    );
    let count = |v: &str| {
        dump["stats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["verdict"] == v)
            .and_then(|s| s["total"].as_u64())
            .unwrap_or(0)
    };
    assert!(count("drop_unallocated") >= 4, "{}", dump["stats"]);
    assert!(count("reject_tcp_rst") >= 2 && count("reject_icmp") >= 2);
    assert!(count("sock_reject") >= 4);
    assert!(
        env.agent.log_text().contains(
            "service CIDRs: packets to addresses inside them that no Service has are dropped"
        ),
        "{}",
        env.agent.log_text()
    );
}

/// Where the CIDRs come from: none (unallocated addresses go to routing; ClusterIPs still
/// reject their unknown ports), the flag, a ServiceCIDR object that replaces the flag, and
/// the flag again when the object goes.
#[test]
fn service_cidr_objects_first_then_the_flag() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::up(&[("services.yaml", SERVICES)], &[]);
    let pod = env.client();
    let gateway = || Got::Reached("gateway".into());
    // Neither: as before the rule, the unallocated address reaches the gateway.
    assert_eq!(tcp(&pod, at(LEAKED, GATEWAY_PORT), TIMEOUT), gateway());
    assert_eq!(tcp(&pod, at(SVC1, 443), TIMEOUT), Got::Refused);
    assert!(env.agent.log_text().contains("no service CIDR"));

    // The flag (kube-apiserver's form, with its IPv6 range).
    env.restart_with(
        None,
        &["--service-cluster-ip-range", "172.30.0.0/16,fd00:30::/108"],
    );
    env.expect("the flag's CIDR drops", Got::Silence, || {
        tcp(&pod, at(LEAKED, GATEWAY_PORT), DROP_WAIT)
    });
    assert!(
        env.agent
            .log_text()
            .contains("172.30.0.0/16,fd00:30::/108 (--service-cluster-ip-range)"),
        "{}",
        env.agent.log_text()
    );

    // A ServiceCIDR object replaces the flag: 172.30.0.99 is outside its 172.30.0.0/26.
    std::fs::write(
        env.manifests.join("cidr.yaml"),
        service_cidr_yaml("kubernetes", "172.30.0.0/26"),
    )
    .unwrap();
    env.expect("the object's CIDR replaces the flag's", gateway(), || {
        tcp(&pod, at(LEAKED, GATEWAY_PORT), TIMEOUT)
    });
    assert_eq!(tcp(&pod, at(UNALLOCATED, 80), DROP_WAIT), Got::Silence);
    // Gone: the flag again.
    std::fs::remove_file(env.manifests.join("cidr.yaml")).unwrap();
    env.expect("the flag again", Got::Silence, || {
        tcp(&pod, at(LEAKED, GATEWAY_PORT), DROP_WAIT)
    });
}

fn kubeconfig(dir: &Path, url: &str) -> PathBuf {
    svc_lab::kube::kubeconfig(dir, url).expect("writing the kubeconfig")
}

/// The manifests' objects, as JSON for the fake API server.
fn api_objects(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("a YAML document"))
        .collect()
}

/// Kubernetes mode: the agent watches ServiceCIDRs; created, the unallocated address is
/// dropped; deleted, it goes to routing again. An API server that does not serve the kind
/// (404, before Kubernetes 1.33) does not hold the agent up: it programs the Services and
/// falls back on --service-cluster-ip-range.
#[test]
fn kubernetes_mode_watches_service_cidrs_and_survives_an_api_without_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, gateway) = lab_with_gateway();
    // The API server listens on the node namespace's loopback, where the agent runs.
    let server = in_netns(lab.node_ns(), FakeApiServer::start_local).expect("fake API server");
    let dir = std::env::temp_dir().join(format!("svl-{}-cidr-kube", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = kubeconfig(&dir, &server.url());
    server.apply(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node1"},
        "status": {"addresses": [{"type": "InternalIP", "address": lab.node_ip(1).to_string()}]},
    }));
    for object in api_objects(SERVICES) {
        server.apply(object);
    }
    let cidr = api_objects(&service_cidr_yaml("kubernetes", "172.30.0.0/16")).remove(0);
    server.apply(cidr.clone());
    let mut env = Env::with_lab(lab, gateway, &[], Some(&kc), &[]);
    let pod = env.client();
    let gateway = || Got::Reached("gateway".into());
    env.expect("the watched ServiceCIDR drops", Got::Silence, || {
        tcp(&pod, at(LEAKED, GATEWAY_PORT), DROP_WAIT)
    });
    assert_eq!(tcp(&pod, at(SVC1, 443), TIMEOUT), Got::Refused);

    // Deleted: no service CIDR (no flag): routed again.
    assert!(server.delete("ServiceCIDR", None, "kubernetes"));
    env.expect("the ServiceCIDR's deletion", gateway(), || {
        tcp(&pod, at(LEAKED, GATEWAY_PORT), TIMEOUT)
    });

    // An API server without the kind (404): a restarted agent is not held up. Its flag
    // applies, which only a sync after its first complete view can do.
    // The object exists, but the API server stops serving its kind first: the running
    // agent (whose watch now fails) keeps its state without it.
    server.set_served("ServiceCIDR", false);
    server.apply(cidr);
    assert_eq!(tcp(&pod, at(LEAKED, GATEWAY_PORT), TIMEOUT), gateway());
    let before = env.agent.log_text().len();
    let since_restart = |env: &Env| env.agent.log_text().get(before..).unwrap_or("").to_string();
    env.restart_with(Some(&kc), &["--service-cluster-ip-range", "172.30.0.0/24"]);
    env.expect(
        "the flag, with ServiceCIDRs not served",
        Got::Silence,
        || tcp(&pod, at(LEAKED, GATEWAY_PORT), DROP_WAIT),
    );
    let log = since_restart(&env);
    assert!(log.contains("taking it as none"), "{log}");
    assert!(
        log.contains("172.30.0.0/24 (--service-cluster-ip-range)"),
        "{log}"
    );
    // Served again: the watch (still retrying) lists the object, which replaces the flag
    // (172.30.0.0/16 holds 172.30.0.99 too: told apart by the log).
    server.set_served("ServiceCIDR", true);
    let replaced = wait_for(Duration::from_secs(60), || {
        since_restart(&env).contains("172.30.0.0/16 (ServiceCIDR kubernetes)")
    });
    assert!(replaced, "{}", since_restart(&env));
    drop(env);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
