//! `cargo xtask run`: the demo. Builds, brings a lab up (network namespaces only), starts
//! svc-agent on examples/, shows that the ClusterIP answers from all three pods, prints
//! commands to try, and tears everything down on Ctrl-C (or after --for SECONDS).
//!
//! `cargo xtask run --example NAME` runs one of the tutorials in examples/tutorials/ on the
//! two-node lab instead (see [`Tutorial`]): a copy of its manifests in a temp dir, one
//! svc-agent per node, a self-check that shows the tutorial's point with real packets,
//! and the commands to try.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context as _;
use svc_common::PROTO_TCP;
use svc_lab::{EchoServers, Lab, agent::LabAgent, tcp_request};

use crate::{cargo, setup, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Stop by itself after this many seconds instead of waiting for Ctrl-C.
    #[arg(long = "for", value_name = "SECONDS")]
    pub duration: Option<u64>,

    /// Run a tutorial from examples/tutorials/NAME on the two-node lab (one svc-agent per
    /// node) instead of the single-node demo.
    #[arg(long, value_name = "NAME")]
    pub example: Option<Tutorial>,
}

/// The tutorials in examples/tutorials/, each a directory of that name (manifests and a
/// README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tutorial {
    /// NodePort Service np-svc on port 30000 of every node; scaled from 1 to 3 replicas.
    NpSvc,
    /// LoadBalancer Service whose external IP (203.0.113.50) comes from its status.
    Loadbalancer,
    /// ClusterIP Service `order` on 8080, reached from a pod.
    Order,
    /// Selector-less Service with hand-made Endpoints: a database outside the cluster.
    ExternalDb,
    /// externalTrafficPolicy Local keeps the client IP, Cluster masquerades it.
    ClientIp,
}

impl Tutorial {
    pub fn name(self) -> &'static str {
        match self {
            Tutorial::NpSvc => "np-svc",
            Tutorial::Loadbalancer => "loadbalancer",
            Tutorial::Order => "order",
            Tutorial::ExternalDb => "external-db",
            Tutorial::ClientIp => "client-ip",
        }
    }

    /// Routes the outside host needs: `(cidr, via node)`.
    fn ext_routes(self) -> &'static [(&'static str, usize)] {
        match self {
            Tutorial::NpSvc | Tutorial::ClientIp | Tutorial::Order => &[],
            // MetalLB's job: get the LoadBalancer IP's packets to a node.
            Tutorial::Loadbalancer => &[("203.0.113.50/32", 1)],
            // The database answers pods directly (no SNAT for pod sources).
            Tutorial::ExternalDb => &[("10.244.1.0/24", 1), ("10.244.2.0/24", 2)],
        }
    }

    /// Frontends `(address, port, backends)` every agent must have programmed before the
    /// self-check.
    fn synced(self) -> (Ipv4Addr, u16, u16) {
        match self {
            Tutorial::NpSvc => (NP_SVC_IP, 80, 1),
            Tutorial::Loadbalancer => (Ipv4Addr::new(10, 96, 20, 10), 8080, 4),
            Tutorial::Order => (ORDER_IP, 8080, 2),
            Tutorial::ExternalDb => (DB_IP, 3306, 1),
            Tutorial::ClientIp => (Ipv4Addr::new(10, 96, 50, 11), 80, 1),
        }
    }
}

const NP_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 10, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const ORDER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 30, 10);
const DB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 40, 10);
/// Port of the external-db tutorial's database (the echo server on the outside host).
const DB_PORT: u16 = 9376;
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request to a dropping frontend waits before it counts as dropped.
const DROP_WAIT: Duration = Duration::from_millis(700);

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    let root = workspace_root().canonicalize()?;
    // Before any build: a missing tutorial directory is a clear error, not a lab.
    let tutorial_dir = match opts.example {
        Some(t) => {
            let dir = root.join("examples/tutorials").join(t.name());
            anyhow::ensure!(
                dir.is_dir(),
                "tutorial {}: {} does not exist",
                t.name(),
                dir.display()
            );
            Some(dir)
        }
        None => None,
    };
    setup::ensure(&setup::Opts::default())?;
    cargo(&["build", "--package", "svc-agent", "--bins"])?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let bin_dir = target.join("debug");
    // SAFETY: single-threaded at this point; the lab reads it to find the binaries.
    unsafe { std::env::set_var("SVC_BIN_DIR", &bin_dir) };

    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    if let (Some(t), Some(dir)) = (opts.example, tutorial_dir) {
        return run_tutorial(t, &dir, &bin_dir, opts.duration, &stop_rx);
    }

    let mut lab = Lab::up()?;
    let examples = root.join("examples");
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let agent = LabAgent::start(&mut lab, &examples, &log)?;
    let vip = "10.96.0.10".parse()?;
    agent.wait_backends(vip, 80, PROTO_TCP, 3, Duration::from_secs(20))?;

    let mut hits = BTreeMap::new();
    for _ in 0..30 {
        let reply = tcp_request(
            lab.client_ns(),
            SocketAddrV4::new(vip, 80),
            "hello",
            Duration::from_secs(2),
        )?;
        *hits.entry(reply.pod).or_insert(0usize) += 1;
    }
    let svcctl = bin_dir.join("svcctl");
    let bpffs = agent.bpffs.display().to_string();
    let (client, ext) = (lab.client_ns().to_string(), lab.ext_ns().to_string());
    println!(
        "\nThe lab is up (namespaces svl-{id}-*), svc-agent serves {examples}.\n\
         30 new TCP connections from the client pod to 10.96.0.10:80 were answered by: {hits:?}\n\n\
         Try, from the client pod (TC path):\n\
         \x20 ip netns exec {client} curl -s http://10.96.0.10/          # a pod answers with its name and your address\n\
         \x20 ip netns exec {client} sh -c 'echo hi | nc -u -w1 10.96.0.10 80'   # UDP\n\
         \x20 ip netns exec {client} curl -sv http://10.96.0.11/         # no endpoints: connection refused at once\n\
         From outside the node (XDP path):\n\
         \x20 ip netns exec {ext} curl -s http://10.96.0.10/\n\
         What the maps hold:\n\
         \x20 {svcctl} --bpffs {bpffs} dump\n\
         Edit {examples}/*.yaml (e.g. remove an endpoint) and the agent applies it within a second.\n\
         Agent log: {log}\n\n\
         Ctrl-C stops the agent and removes the lab.",
        id = lab.id(),
        examples = examples.display(),
        svcctl = svcctl.display(),
        log = log.display(),
    );
    wait_stop(opts.duration, &stop_rx);
    println!("\nstopping: agent, echo servers, namespaces");
    let _ = agent.process.stop();
    drop(lab);
    Ok(())
}

/// Until Ctrl-C, or `secs` seconds when given.
fn wait_stop(secs: Option<u64>, stop_rx: &mpsc::Receiver<()>) {
    match secs {
        Some(secs) => {
            let _ = stop_rx.recv_timeout(Duration::from_secs(secs));
        }
        None => {
            let _ = stop_rx.recv();
        }
    }
}

/// A tutorial running on the two-node lab. Dropping it stops the agents, the extra
/// servers and the lab, and removes the manifests' temp copy.
struct TutorialLab {
    tutorial: Tutorial,
    /// examples/tutorials/NAME in the repository.
    source: PathBuf,
    /// The temp copy svc-agent serves (edits here never touch the repository).
    manifests: PathBuf,
    agents: Vec<LabAgent>,
    /// Servers outside the pods (external-db's database on the outside host).
    servers: Option<EchoServers>,
    lab: Lab,
}

impl TutorialLab {
    /// Lab, ext routes, extra servers, a temp copy of `source`'s manifests, one agent per
    /// node; returns once every agent has programmed the tutorial's first frontend.
    fn up(tutorial: Tutorial, source: &Path) -> anyhow::Result<TutorialLab> {
        let lab = Lab::up_two_nodes()?;
        let manifests = std::env::temp_dir().join(format!("svl-{}-{}", lab.id(), tutorial.name()));
        // From here on, an error drops `env`, which removes everything built so far.
        let mut env = TutorialLab {
            tutorial,
            source: source.to_path_buf(),
            manifests,
            agents: Vec::new(),
            servers: None,
            lab,
        };
        copy_manifests(source, &env.manifests)?;
        for &(cidr, node) in tutorial.ext_routes() {
            env.lab.ext_route(cidr, node)?;
        }
        if tutorial == Tutorial::ExternalDb {
            let db = [("db".to_string(), env.lab.ext_ns().to_string())];
            env.servers = Some(EchoServers::start(&db, DB_PORT).context("database server")?);
        }
        for n in [1, 2] {
            let log = std::env::temp_dir().join(format!("svl-{}-agent{n}.log", env.lab.id()));
            let name = env.lab.node(n).name.clone();
            let agent = LabAgent::start_in(
                &mut env.lab,
                n,
                &env.manifests,
                &log,
                &["--node-name", &name],
            )?;
            env.agents.push(agent);
        }
        let (vip, port, count) = tutorial.synced();
        env.wait_all(vip, port, count)?;
        Ok(env)
    }

    /// Waits until every agent gives `vip:port` `count` backends.
    fn wait_all(&self, vip: Ipv4Addr, port: u16, count: u16) -> anyhow::Result<()> {
        for a in &self.agents {
            a.wait_backends(vip, port, PROTO_TCP, count, Duration::from_secs(20))
                .with_context(|| format!("svc-agent on node{}", a.node))?;
        }
        Ok(())
    }

    fn ext(&self) -> &str {
        self.lab.ext_ns()
    }

    fn ns(&self, pod: &str) -> &str {
        self.lab.pod_ns(pod)
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| a.log.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for TutorialLab {
    fn drop(&mut self) {
        for a in &self.agents {
            let _ = a.process.stop();
        }
        if let Some(mut s) = self.servers.take() {
            s.stop();
        }
        self.lab.teardown();
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

/// Copies the `*.yaml` files directly in `from` (not its subdirectories) into a new `to`.
fn copy_manifests(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("mkdir {}", to.display()))?;
    let mut copied = 0;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = e?.path();
        if path.is_file() && path.extension().is_some_and(|x| x == "yaml") {
            let dest = to.join(path.file_name().expect("a file has a name"));
            std::fs::copy(&path, &dest)
                .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
            copied += 1;
        }
    }
    anyhow::ensure!(copied > 0, "no *.yaml manifests in {}", from.display());
    Ok(())
}

/// Who answered a series of new connections, and the source addresses they saw.
#[derive(Default)]
struct Sample {
    pods: BTreeMap<String, usize>,
    seen: BTreeSet<Ipv4Addr>,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pods: Vec<String> = self.pods.iter().map(|(p, n)| format!("{p} x{n}")).collect();
        let seen: Vec<String> = self.seen.iter().map(Ipv4Addr::to_string).collect();
        write!(
            f,
            "{}; they saw the client as {}",
            pods.join(", "),
            seen.join(", ")
        )
    }
}

/// `n` new TCP connections from namespace `ns` to `to`; fails on the first that gets no
/// answer.
fn sample(ns: &str, to: SocketAddrV4, n: usize) -> anyhow::Result<Sample> {
    let mut s = Sample::default();
    for i in 0..n {
        let reply = tcp_request(ns, to, "tutorial", TIMEOUT)
            .with_context(|| format!("connection {} of {n} from {ns} to {to}", i + 1))?;
        *s.pods.entry(reply.pod).or_insert(0) += 1;
        s.seen.insert(*reply.client.ip());
    }
    Ok(s)
}

/// Fails unless exactly `pods` answered and only `seen` was seen.
fn expect(s: &Sample, what: &str, pods: &[&str], seen: Ipv4Addr) -> anyhow::Result<()> {
    let got: Vec<&str> = s.pods.keys().map(String::as_str).collect();
    anyhow::ensure!(
        got == pods && s.seen.len() == 1 && s.seen.contains(&seen),
        "{what}: expected {pods:?} to answer, seeing {seen}; got {s}"
    );
    Ok(())
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

fn run_tutorial(
    tutorial: Tutorial,
    source: &Path,
    bin_dir: &Path,
    duration: Option<u64>,
    stop_rx: &mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let name = tutorial.name();
    println!("tutorial {name}: starting the two-node lab and one svc-agent per node");
    let env = TutorialLab::up(tutorial, source)?;
    println!(
        "lab svl-{id}-*: node1 192.0.2.1 (pods a1 a2, client ca), node2 192.0.2.2 (pods b1 b2, client cb), outside host ext 192.0.2.100\n\
         svc-agent on each node serves {m} (a copy of {src})\n",
        id = env.lab.id(),
        m = env.manifests.display(),
        src = source.display(),
    );
    println!("self-check:");
    self_check(&env).with_context(|| format!("tutorial {name}: agent logs: {}", env.logs()))?;
    let node1_bpffs = env.lab.node_bpffs_dir(1).display().to_string();
    println!(
        "\n{try_}\
         What node1's maps hold:\n\
         \x20 {svcctl} --bpffs {node1_bpffs} dump\n\
         The tutorial: {readme}\n\
         svc-agent serves {m}: edit it and both agents apply the change within a second.\n\
         Agent logs: {logs}\n\n\
         Ctrl-C stops the agents and removes the lab.",
        try_ = try_commands(&env),
        svcctl = bin_dir.join("svcctl").display(),
        readme = source.join("README.md").display(),
        m = env.manifests.display(),
        logs = env.logs(),
    );
    wait_stop(duration, stop_rx);
    println!(
        "\nstopping: agents, echo servers, namespaces, {}",
        env.manifests.display()
    );
    drop(env);
    Ok(())
}

/// Shows the tutorial's point with real packets; fails when it does not hold.
fn self_check(env: &TutorialLab) -> anyhow::Result<()> {
    let (ext, ca, cb) = (env.ext(), env.ns("ca"), env.ns("cb"));
    let (node1, node2) = (env.lab.node_ip(1), env.lab.node_ip(2));
    match env.tutorial {
        Tutorial::NpSvc => {
            for node in [node1, node2] {
                let s = sample(ext, addr(node, 30000), 10)?;
                println!("  1 replica:  10 connections from ext to {node}:30000 -> {s}");
                expect(&s, "np-svc, 1 replica", &["a1"], node)?;
            }
            let scaled = env.source.join("scaled/np-svc.yaml");
            // Copied under another name and renamed, so the agent never reads half a file.
            let part = env.manifests.join("np-svc.yaml.part");
            std::fs::copy(&scaled, &part)
                .with_context(|| format!("copying {}", scaled.display()))?;
            std::fs::rename(&part, env.manifests.join("np-svc.yaml"))?;
            println!(
                "  scaling to 3 replicas: copied {} into {}",
                scaled.display(),
                env.manifests.display()
            );
            env.wait_all(NP_SVC_IP, 80, 3)?;
            for a in &env.agents {
                let ip = env.lab.node_ip(a.node);
                a.wait_backends(ip, 30000, PROTO_TCP, 3, Duration::from_secs(10))?;
            }
            for node in [node1, node2] {
                let s = sample(ext, addr(node, 30000), 30)?;
                println!("  3 replicas: 30 connections from ext to {node}:30000 -> {s}");
                expect(&s, "np-svc, 3 replicas", &["a1", "a2", "b1"], node)?;
            }
        }
        Tutorial::Loadbalancer => {
            let s = sample(ext, addr(LB_IP, 8080), 40)?;
            println!("  40 connections from ext to {LB_IP}:8080 (routed via node1) -> {s}");
            expect(&s, "my-service", &["a1", "a2", "b1", "b2"], node1)?;
            let s = sample(ca, addr(Ipv4Addr::new(10, 96, 20, 10), 8080), 8)?;
            println!("  8 connections from pod ca to the ClusterIP 10.96.20.10:8080 -> {s}");
        }
        Tutorial::Order => {
            for (pod, ns, ip) in [
                ("ca", ca, env.lab.pod_ip("ca")),
                ("cb", cb, env.lab.pod_ip("cb")),
            ] {
                let s = sample(ns, addr(ORDER_IP, 8080), 20)?;
                println!(
                    "  20 connections from pod {pod} ({ip}) to order at {ORDER_IP}:8080 -> {s}"
                );
                expect(&s, "order", &["a1", "b1"], ip)?;
            }
        }
        Tutorial::ExternalDb => {
            for (pod, ns, ip) in [
                ("ca", ca, env.lab.pod_ip("ca")),
                ("cb", cb, env.lab.pod_ip("cb")),
            ] {
                let s = sample(ns, addr(DB_IP, 3306), 3)?;
                println!(
                    "  3 connections from pod {pod} ({ip}) to external-db at {DB_IP}:3306 -> {s} (db runs on ext 192.0.2.100:{DB_PORT})"
                );
                expect(&s, "external-db", &["db"], ip)?;
            }
        }
        Tutorial::ClientIp => {
            let ext_ip = svc_lab::EXT_IP;
            for node in [node1, node2] {
                let s = sample(ext, addr(node, 30080), 3)?;
                println!("  Cluster: ext ({ext_ip}) -> {node}:30080 -> {s}");
                expect(&s, "nodeport (Cluster)", &["a1"], node)?;
            }
            let s = sample(ext, addr(node1, 30081), 3)?;
            println!("  Local:   ext ({ext_ip}) -> {node1}:30081 -> {s}");
            expect(&s, "nodeport-local via node1", &["a1"], ext_ip)?;
            match tcp_request(ext, addr(node2, 30081), "tutorial", DROP_WAIT) {
                Err(_) => println!(
                    "  Local:   ext ({ext_ip}) -> {node2}:30081 -> no answer (node2 has no local endpoint: dropped)"
                ),
                Ok(r) => anyhow::bail!(
                    "nodeport-local via node2 should be dropped, but {} answered",
                    r.pod
                ),
            }
        }
    }
    Ok(())
}

/// The commands to try, with this run's namespace names.
fn try_commands(env: &TutorialLab) -> String {
    let (ext, ca, cb) = (env.ext(), env.ns("ca"), env.ns("cb"));
    let m = env.manifests.display();
    match env.tutorial {
        Tutorial::NpSvc => format!(
            "Try, from outside the cluster (the pod answers with its name and the address it saw):\n\
             \x20 ip netns exec {ext} curl -s http://192.0.2.1:30000/\n\
             \x20 ip netns exec {ext} curl -s http://192.0.2.2:30000/\n\
             \x20 for i in $(seq 30); do ip netns exec {ext} curl -s http://192.0.2.2:30000/; done | cut -d' ' -f1 | sort | uniq -c\n\
             From a pod, by ClusterIP:\n\
             \x20 ip netns exec {ca} curl -s http://10.96.10.10/\n\
             Scale back to 1 replica, and up to 3 again:\n\
             \x20 cp {src}/np-svc.yaml {m}/\n\
             \x20 cp {src}/scaled/np-svc.yaml {m}/\n",
            src = env.source.display(),
        ),
        Tutorial::Loadbalancer => format!(
            "Try, from outside the cluster (ext routes 203.0.113.50 via node1, as MetalLB would announce it):\n\
             \x20 ip netns exec {ext} curl -s http://203.0.113.50:8080/\n\
             The same Service on its NodePort, on either node, and on its ClusterIP from a pod:\n\
             \x20 ip netns exec {ext} curl -s http://192.0.2.2:32377/\n\
             \x20 ip netns exec {ca} curl -s http://10.96.20.10:8080/\n\
             Change status.loadBalancer.ingress in {m}/my-service.yaml (and the route:\n\
             \x20 ip netns exec {ext} ip route replace <new-ip>/32 via 192.0.2.2)\n",
        ),
        Tutorial::Order => format!(
            "Try, from a pod on either node (by ClusterIP: the name \"order\" needs the cluster DNS):\n\
             \x20 ip netns exec {ca} curl -s http://10.96.30.10:8080/\n\
             \x20 ip netns exec {cb} curl -s http://10.96.30.10:8080/\n\
             \x20 ip netns exec {ca} sh -c 'echo hi | nc -w1 10.96.30.10 8080'\n\
             Not reachable from outside (ClusterIP only; ext has no route to 10.96.0.0/12):\n\
             \x20 ip netns exec {ext} curl -s -m 2 http://10.96.30.10:8080/\n",
        ),
        Tutorial::ExternalDb => format!(
            "Try, from a pod (the \"database\" is an echo server on ext 192.0.2.100:{DB_PORT}):\n\
             \x20 ip netns exec {ca} sh -c 'echo SELECT 1 | nc -w1 10.96.40.10 3306'\n\
             \x20 ip netns exec {cb} sh -c 'echo SELECT 1 | nc -w1 10.96.40.10 3306'\n\
             The database moved? Edit the Endpoints' ip in {m}/external-db.yaml, e.g. to 10.244.2.12\n\
             and port 8080 (pod b2's echo server); the clients keep dialing 10.96.40.10:3306.\n",
        ),
        Tutorial::ClientIp => format!(
            "Try, from outside the cluster (ext is 192.0.2.100; the pod a1 runs on node1):\n\
             \x20 ip netns exec {ext} curl -s http://192.0.2.1:30080/        # Cluster: a1 sees 192.0.2.1\n\
             \x20 ip netns exec {ext} curl -s http://192.0.2.2:30080/        # Cluster: a1 sees 192.0.2.2\n\
             \x20 ip netns exec {ext} curl -s http://192.0.2.1:30081/        # Local: a1 sees 192.0.2.100\n\
             \x20 ip netns exec {ext} curl -s -m 2 http://192.0.2.2:30081/   # Local: no endpoint on node2, dropped\n\
             Switch nodeport to Local yourself: set externalTrafficPolicy in {m}/source-ip.yaml.\n",
        ),
    }
}
