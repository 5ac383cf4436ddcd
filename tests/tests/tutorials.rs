//! The tutorials of examples/tutorials/ (`cargo xtask run --example NAME`), checked with
//! real packets: each test loads a tutorial's manifests (a temp copy) into one real
//! svc-agent per node of the two-node lab and checks the tutorial's claim.
//!
//! The setup duplicates, in small, what xtask/src/run.rs does for `--example` (this crate
//! cannot depend on xtask): routes on the outside host, the external database's server,
//! one agent per node with `--node-name`; for loadbalancer, Kubernetes mode: the lab's fake
//! API server on ext with the manifests and Node objects loaded, agents with
//! `--l2-announcements`. Keep the two in step when a tutorial changes.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use svc_common::PROTO_TCP;
use svc_lab::{
    EXT_IP, EchoServers, Lab,
    agent::{AgentSource, LabAgent, wait_for},
    fake_apiserver::FakeApiServer,
    kube, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request to a dropping frontend waits before the silence counts as a drop.
const DROP_WAIT: Duration = Duration::from_millis(700);
const SYNC: Duration = Duration::from_secs(20);

/// examples/tutorials/NAME.
fn tutorial_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/tutorials")
        .join(name)
}

/// One tutorial on the two-node lab. Drop prints the agents' logs when a test panics.
struct Env {
    name: &'static str,
    agents: Vec<LabAgent>,
    /// The temp copy of the tutorial's manifests the agents serve.
    manifests: PathBuf,
    servers: Option<EchoServers>,
    /// Kubernetes mode: the API server the agents watch, the manifests loaded into it.
    server: Option<FakeApiServer>,
    lab: Lab,
}

impl Env {
    /// Lab, `routes` on ext, the external database when `db`, the tutorial's `*.yaml`
    /// copied to a temp dir, one agent per node; waits until both agents give
    /// `synced.0:synced.1` `synced.2` backends.
    fn up(
        name: &'static str,
        routes: &[(&str, usize)],
        db: bool,
        synced: (Ipv4Addr, u16, u16),
    ) -> Env {
        let mut env = Env::new(name);
        for &(cidr, node) in routes {
            env.lab
                .ext_route(cidr, node)
                .unwrap_or_else(|e| panic!("{name}: ext route {cidr} via node{node}: {e:#}"));
        }
        if db {
            let servers = [("db".to_string(), env.lab.ext_ns().to_string())];
            env.servers = Some(EchoServers::start(&servers, 9376).expect("db server on ext"));
        }
        env.start_agents(None);
        env.synced(synced);
        env
    }

    /// Kubernetes mode: lab, the fake API server on ext with node1 and node2 and the
    /// tutorial's manifests loaded, one agent per node watching it with L2
    /// announcements; waits as [`up`](Self::up) does.
    fn up_kubernetes(name: &'static str, synced: (Ipv4Addr, u16, u16)) -> Env {
        let mut env = Env::new(name);
        let server = kube::apiserver_on_ext(&env.lab).expect("fake API server on ext");
        kube::apply_nodes(&server, &env.lab);
        let loaded = kube::load_manifests(&server, &env.manifests)
            .unwrap_or_else(|e| panic!("{name}: loading the manifests: {e:#}"));
        println!("{name}: loaded {loaded}");
        let kc = kube::kubeconfig(&env.manifests, &server.url()).expect("kubeconfig");
        env.server = Some(server);
        env.start_agents(Some(&kc));
        env.synced(synced);
        env
    }

    /// The two-node lab and the tutorial's `*.yaml` copied to a temp dir.
    fn new(name: &'static str) -> Env {
        let lab = Lab::up_two_nodes().expect("two-node lab");
        let manifests = std::env::temp_dir().join(format!("svl-{}-{name}", lab.id()));
        let env = Env {
            name,
            agents: Vec::new(),
            manifests,
            servers: None,
            server: None,
            lab,
        };
        std::fs::create_dir_all(&env.manifests).expect("manifests temp dir");
        let src = tutorial_dir(name);
        let mut copied = 0;
        for e in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
            let path = e.expect("dir entry").path();
            if path.is_file() && path.extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(&path, env.manifests.join(path.file_name().unwrap()))
                    .unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
                copied += 1;
            }
        }
        assert!(copied > 0, "no *.yaml in {}", src.display());
        env
    }

    /// One agent per node with `--node-name`: on the manifests, or on the API server of
    /// `kubeconfig` with `--l2-announcements`.
    fn start_agents(&mut self, kubeconfig: Option<&Path>) {
        for n in [1, 2] {
            let log = std::env::temp_dir().join(format!("svl-{}-agent{n}.log", self.lab.id()));
            let node = self.lab.node(n).name.clone();
            let started = match kubeconfig {
                None => LabAgent::start_in(
                    &mut self.lab,
                    n,
                    &self.manifests,
                    &log,
                    &["--node-name", &node],
                ),
                Some(kc) => LabAgent::start_from(
                    &mut self.lab,
                    n,
                    AgentSource::Kubeconfig(kc),
                    &log,
                    &["--node-name", &node, "--l2-announcements"],
                ),
            };
            let agent = started
                .unwrap_or_else(|e| panic!("{}: starting the agent on {node}: {e:#}", self.name));
            self.agents.push(agent);
        }
    }

    /// Waits until both agents give `vip:port` `count` backends, then checks that the
    /// tutorial's manifests loaded without a skipped object or a warning.
    fn synced(&self, (vip, port, count): (Ipv4Addr, u16, u16)) {
        self.wait_all(vip, port, count);
        for a in &self.agents {
            let log = a.log_text();
            assert!(
                !log.contains(" WARN ") && !log.contains(" ERROR "),
                "{}: the agent on node{} warned about the manifests:\n{log}",
                self.name,
                a.node
            );
        }
    }

    /// Waits until both agents give `vip:port` exactly `count` backends.
    fn wait_all(&self, vip: Ipv4Addr, port: u16, count: u16) {
        for a in &self.agents {
            a.wait_backends(vip, port, PROTO_TCP, count, SYNC)
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: node{}: {vip}:{port} never got {count} backends: {e:#}",
                        self.name, a.node
                    )
                });
        }
    }

    fn ns(&self, pod: &str) -> String {
        self.lab.pod_ns(pod).to_string()
    }

    fn ext(&self) -> String {
        self.lab.ext_ns().to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.agents {
                eprintln!(
                    "--- {}: agent on node{} ({}) ---\n{}",
                    self.name,
                    a.node,
                    a.log.display(),
                    a.log_text()
                );
            }
        }
        for a in &self.agents {
            let _ = a.process.stop();
            let _ = std::fs::remove_file(&a.log);
        }
        if let Some(mut s) = self.servers.take() {
            s.stop();
        }
        self.lab.teardown();
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

/// `n` new TCP connections from `ns` to `to`: how often each pod answered, and every
/// source address the pods saw. Panics on the first connection that gets no answer.
fn sample(ns: &str, to: SocketAddrV4, n: usize) -> (BTreeMap<String, usize>, BTreeSet<Ipv4Addr>) {
    let mut pods = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for i in 0..n {
        let r = tcp_request(ns, to, "tutorial", TIMEOUT)
            .unwrap_or_else(|e| panic!("connection {} of {n} from {ns} to {to}: {e}", i + 1));
        *pods.entry(r.pod).or_insert(0) += 1;
        seen.insert(*r.client.ip());
    }
    (pods, seen)
}

/// Asserts exactly `pods` answered `n` new connections and all saw `seen` as the source.
fn assert_answered(
    what: &str,
    ns: &str,
    to: SocketAddrV4,
    n: usize,
    pods: &[&str],
    seen: Ipv4Addr,
) {
    let (got, saw) = sample(ns, to, n);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names, pods,
        "{what}: {n} connections to {to} were answered by {got:?}"
    );
    assert_eq!(
        saw,
        BTreeSet::from([seen]),
        "{what}: the pods saw the client as {saw:?}, expected {seen}"
    );
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

#[test]
fn np_svc_is_reached_on_every_node_and_spreads_over_three_replicas() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up("np-svc", &[], false, (Ipv4Addr::new(10, 96, 10, 10), 80, 1));
    let ext = env.ext();
    let nodes = [env.lab.node_ip(1), env.lab.node_ip(2)];
    for node in nodes {
        let to = SocketAddrV4::new(node, 30000);
        assert_answered("np-svc, 1 replica", &ext, to, 10, &["a1"], node);
    }

    // `kubectl scale deployment echo --replicas=3`: the rewritten EndpointSlice.
    let part = env.manifests.join("np-svc.yaml.part");
    std::fs::copy(tutorial_dir("np-svc").join("scaled/np-svc.yaml"), &part).expect("copy");
    std::fs::rename(&part, env.manifests.join("np-svc.yaml")).expect("rename");
    env.wait_all(Ipv4Addr::new(10, 96, 10, 10), 80, 3);
    for a in &env.agents {
        let ip = env.lab.node_ip(a.node);
        a.wait_backends(ip, 30000, PROTO_TCP, 3, SYNC)
            .unwrap_or_else(|e| panic!("node{}: NodePort never got 3 backends: {e:#}", a.node));
    }
    for node in nodes {
        let to = SocketAddrV4::new(node, 30000);
        assert_answered(
            "np-svc, 3 replicas",
            &ext,
            to,
            30,
            &["a1", "a2", "b1"],
            node,
        );
    }
}

#[test]
fn loadbalancer_gets_a_pool_address_announced_by_arp_that_fails_over() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up_kubernetes("loadbalancer", (Ipv4Addr::new(10, 96, 20, 10), 8080, 4));
    let server = env.server.as_ref().expect("Kubernetes mode");
    let lb = Ipv4Addr::new(192, 0, 2, 200);
    let to = SocketAddrV4::new(lb, 8080);

    // The pool's lowest address, written into the status by the elected agent.
    assert!(
        wait_for(SYNC, || kube::status_ips(server, "default", "my-service")
            == [lb.to_string()]),
        "my-service never got {lb} from pool.yaml: status {:?}",
        kube::status_ips(server, "default", "my-service")
    );
    assert!(kube::lease_holder(server, kube::IPAM_LEASE).is_some());
    // One node announces it; ext (no route: the address is on its subnet) resolves it by
    // ARP to that node, and every pod answers, masqueraded to that node (policy Cluster).
    let announcer = || kube::announcer(server, "default", "my-service");
    assert!(wait_for(SYNC, || announcer().is_some()), "no announcer");
    let holder = kube::node_number(&announcer().unwrap()).expect("a lab node");
    let other = 3 - holder;
    assert!(
        wait_for(Duration::from_secs(10), || tcp_request(
            &env.ext(),
            to,
            "tutorial",
            TIMEOUT
        )
        .is_ok()),
        "ext cannot reach {to}"
    );
    assert_answered(
        "my-service via its pool address",
        &env.ext(),
        to,
        40,
        &["a1", "a2", "b1", "b2"],
        env.lab.node_ip(holder),
    );
    let macs = [env.lab.node_mac(1).unwrap(), env.lab.node_mac(2).unwrap()];
    assert_eq!(
        env.lab.ext_neighbour(lb).as_deref(),
        Some(macs[holder - 1].as_str()),
        "ext resolved {lb} to the announcer, node{holder}"
    );

    // Failover: the announcer's agent dies, the other node answers within seconds.
    let killed = Instant::now();
    env.agents[holder - 1]
        .process
        .kill()
        .expect("kill the agent");
    assert!(
        wait_for(Duration::from_secs(8), || env
            .lab
            .ext_neighbour(lb)
            .as_deref()
            == Some(macs[other - 1].as_str())),
        "ext's entry for {lb} did not move to node{other}"
    );
    println!(
        "failover to node{other} after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        announcer().as_deref(),
        Some(format!("node{other}").as_str())
    );
    assert_answered(
        "my-service after the failover",
        &env.ext(),
        to,
        40,
        &["a1", "a2", "b1", "b2"],
        env.lab.node_ip(other),
    );
}

#[test]
fn order_is_reached_from_a_pod_by_its_cluster_ip() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(
        "order",
        &[],
        false,
        (Ipv4Addr::new(10, 96, 30, 10), 8080, 2),
    );
    for client in ["ca", "cb"] {
        assert_answered(
            &format!("order from {client}"),
            &env.ns(client),
            addr([10, 96, 30, 10], 8080),
            20,
            &["a1", "b1"],
            env.lab.pod_ip(client),
        );
    }
}

#[test]
fn external_db_reaches_the_server_outside_the_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(
        "external-db",
        &[("10.244.1.0/24", 1), ("10.244.2.0/24", 2)],
        true,
        (Ipv4Addr::new(10, 96, 40, 10), 3306, 1),
    );
    for client in ["ca", "cb"] {
        assert_answered(
            &format!("external-db from {client}"),
            &env.ns(client),
            addr([10, 96, 40, 10], 3306),
            3,
            &["db"],
            env.lab.pod_ip(client),
        );
    }
}

#[test]
fn client_ip_is_kept_with_local_and_masqueraded_with_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up(
        "client-ip",
        &[],
        false,
        (Ipv4Addr::new(10, 96, 50, 11), 80, 1),
    );
    env.wait_all(Ipv4Addr::new(10, 96, 50, 10), 80, 1);
    let ext = env.ext();
    let (node1, node2) = (env.lab.node_ip(1), env.lab.node_ip(2));
    assert_answered(
        "Local via node1 (has the endpoint)",
        &ext,
        SocketAddrV4::new(node1, 30081),
        3,
        &["a1"],
        EXT_IP,
    );
    assert_answered(
        "Cluster via node1",
        &ext,
        SocketAddrV4::new(node1, 30080),
        3,
        &["a1"],
        node1,
    );
    assert_answered(
        "Cluster via node2 (forwards to node1's pod)",
        &ext,
        SocketAddrV4::new(node2, 30080),
        3,
        &["a1"],
        node2,
    );
    let dropped = tcp_request(&ext, SocketAddrV4::new(node2, 30081), "tutorial", DROP_WAIT);
    assert!(
        matches!(&dropped, Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)),
        "Local via node2 (no local endpoint) should be dropped (silence), got {dropped:?}"
    );
}

#[test]
fn every_tutorial_has_a_readme_and_manifests() {
    for name in [
        "np-svc",
        "loadbalancer",
        "order",
        "external-db",
        "client-ip",
    ] {
        let dir = tutorial_dir(name);
        assert!(
            dir.join("README.md").is_file(),
            "{}/README.md",
            dir.display()
        );
        let yaml = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            .count();
        assert!(yaml > 0, "no manifests in {}", dir.display());
    }
}
