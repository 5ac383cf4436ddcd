//! `cargo xtask run`: the demo. Builds (a progress line, see [`crate::build`]), brings a
//! lab up (network namespaces only), starts svc-agent on a temp copy of examples/ (the
//! repository's files, which the tests read, are never served: an edit the hints suggest
//! cannot break `cargo xtask test`), shows that the ClusterIP answers from all three pods,
//! prints commands to try, and tears everything down, the copy included, on Ctrl-C (or
//! after --for SECONDS, or on an error: [`Demo`]'s Drop).
//!
//! `cargo xtask run --example NAME` runs one of the tutorials in examples/tutorials/ on the
//! two-node lab instead (see [`Tutorial`]): a copy of its manifests in a temp dir, one
//! svc-agent per node, a self-check that shows the tutorial's point with real packets,
//! and the commands to try. The agents serve the copy (manifest mode), except for the
//! loadbalancer tutorial, whose agents elect each other with Leases: they watch the lab's
//! fake API server, on the outside host, with the copy loaded into it (Kubernetes mode).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use svc_common::PROTO_TCP;
use svc_lab::{
    EchoServers, Lab,
    agent::{AgentSource, LabAgent, svcctl_in_node, wait_for},
    fake_apiserver::FakeApiServer,
    kube::{self, Loaded},
    tcp_request,
};

use crate::{build, setup, target_dir, verbose_env, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Stop by itself after this many seconds instead of waiting for Ctrl-C.
    #[arg(long = "for", value_name = "SECONDS")]
    pub duration: Option<u64>,

    /// Run a tutorial from examples/tutorials/NAME on the two-node lab (one svc-agent per
    /// node) instead of the single-node demo.
    #[arg(long, value_name = "NAME")]
    pub example: Option<Tutorial>,

    /// Show cargo's whole output while building (also: SVC_XTASK_VERBOSE=1) instead of a
    /// progress line.
    #[arg(short, long)]
    pub verbose: bool,
}

/// The tutorials in examples/tutorials/, each a directory of that name (manifests and a
/// README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tutorial {
    /// NodePort Service np-svc on port 30000 of every node; scaled from 1 to 3 replicas.
    NpSvc,
    /// LoadBalancer Service that gets its address from a pool on the LAN; the node elected
    /// for it answers ARP, another takes over when its agent dies.
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

    /// Whether the agents watch the lab's API server (with the manifests loaded into it)
    /// instead of the manifest directory: Leases elect the LoadBalancer status writer and
    /// each Service's announcer, and manifest mode has no Lease API.
    fn kubernetes_mode(self) -> bool {
        self == Tutorial::Loadbalancer
    }

    /// Routes the outside host needs: `(cidr, via node)`.
    fn ext_routes(self) -> &'static [(&'static str, usize)] {
        match self {
            // The LoadBalancer address is on ext's own subnet: ARP, no route.
            Tutorial::NpSvc | Tutorial::ClientIp | Tutorial::Order | Tutorial::Loadbalancer => &[],
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
/// The loadbalancer tutorial's Service, and the port it serves on its LoadBalancer address.
const LB_SERVICE: &str = "my-service";
const LB_PORT: u16 = 8080;
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
    let bin_dir = target_dir().join("debug");
    let first = !bin_dir.join("svc-agent").exists();
    build(
        &["--package", "svc-agent", "--bins"],
        "svc-agent, svcctl and the eBPF programs",
        first,
        opts.verbose || verbose_env(),
    )?;
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

    let demo = Demo::up(&root.join("examples"))?;
    let (lab, agent, examples) = (&demo.lab, demo.agent(), &demo.manifests);
    let log = &agent.log;
    let vip = "10.96.0.10".parse()?;

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
        "\nThe lab is up (namespaces svl-{id}-*), svc-agent serves {examples}\n\
         (a copy of the repository's examples/, removed on exit: edit it freely).\n\
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
         Ctrl-C stops the agent, removes the lab and the copy.",
        id = lab.id(),
        examples = examples.display(),
        svcctl = svcctl.display(),
        log = log.display(),
    );
    wait_stop(opts.duration, &stop_rx);
    println!(
        "\nstopping: agent, echo servers, namespaces; removing {}",
        demo.manifests.display()
    );
    drop(demo);
    Ok(())
}

/// The single-node demo: the lab, a temp copy of examples/ and svc-agent serving it.
/// Dropping it (at the end, on Ctrl-C, or on an error) stops the agent, removes the lab
/// and the copy.
struct Demo {
    /// The temp copy svc-agent serves (edits here never touch the repository's
    /// examples/, which the tests read).
    manifests: PathBuf,
    agent: Option<LabAgent>,
    lab: Lab,
}

impl Demo {
    /// Lab, copy of `examples`' manifests, agent; returns once the agent gave
    /// 10.96.0.10:80 its three backends.
    fn up(examples: &Path) -> anyhow::Result<Demo> {
        let lab = Lab::up()?;
        let manifests = std::env::temp_dir().join(format!("svl-{}-examples", lab.id()));
        // From here on, an error drops `demo`, which removes everything built so far.
        let mut demo = Demo {
            manifests,
            agent: None,
            lab,
        };
        copy_manifests(examples, &demo.manifests)?;
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", demo.lab.id()));
        let agent = LabAgent::start(&mut demo.lab, &demo.manifests, &log)?;
        let agent = demo.agent.insert(agent);
        agent.wait_backends(
            Ipv4Addr::new(10, 96, 0, 10),
            80,
            PROTO_TCP,
            3,
            Duration::from_secs(20),
        )?;
        Ok(demo)
    }

    fn agent(&self) -> &LabAgent {
        self.agent.as_ref().expect("started in Demo::up")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(agent) = &self.agent {
            let _ = agent.process.stop();
        }
        self.lab.teardown();
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
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
    /// The API server the agents watch, in Kubernetes mode.
    cluster: Option<Cluster>,
    agents: Vec<LabAgent>,
    /// Servers outside the pods (external-db's database on the outside host).
    servers: Option<EchoServers>,
    lab: Lab,
}

impl TutorialLab {
    /// Lab, a temp copy of `source`'s manifests (in Kubernetes mode loaded into the API
    /// server), ext routes, extra servers, one agent per node; returns once every agent
    /// has programmed the tutorial's first frontend.
    fn up(tutorial: Tutorial, source: &Path) -> anyhow::Result<TutorialLab> {
        let lab = Lab::up_two_nodes()?;
        let manifests = std::env::temp_dir().join(format!("svl-{}-{}", lab.id(), tutorial.name()));
        // From here on, an error drops `env`, which removes everything built so far.
        let mut env = TutorialLab {
            tutorial,
            source: source.to_path_buf(),
            manifests,
            cluster: None,
            agents: Vec::new(),
            servers: None,
            lab,
        };
        copy_manifests(source, &env.manifests)?;
        if tutorial.kubernetes_mode() {
            env.cluster = Some(Cluster::start(&env.lab, &env.manifests)?);
        }
        for &(cidr, node) in tutorial.ext_routes() {
            env.lab.ext_route(cidr, node)?;
        }
        if tutorial == Tutorial::ExternalDb {
            let db = [("db".to_string(), env.lab.ext_ns().to_string())];
            env.servers = Some(EchoServers::start(&db, DB_PORT).context("database server")?);
        }
        for n in [1, 2] {
            env.start_agent(n)?;
        }
        let (vip, port, count) = tutorial.synced();
        env.wait_all(vip, port, count)?;
        Ok(env)
    }

    /// Starts svc-agent on node `n`: on the manifests, or in Kubernetes mode on the API
    /// server with L2 announcements.
    fn start_agent(&mut self, n: usize) -> anyhow::Result<()> {
        let log = std::env::temp_dir().join(format!("svl-{}-agent{n}.log", self.lab.id()));
        let name = self.lab.node(n).name.clone();
        let agent = match &self.cluster {
            None => LabAgent::start_in(
                &mut self.lab,
                n,
                &self.manifests,
                &log,
                &["--node-name", &name],
            )?,
            Some(c) => LabAgent::start_from(
                &mut self.lab,
                n,
                AgentSource::Kubeconfig(&c.kubeconfig),
                &log,
                &["--node-name", &name, "--l2-announcements"],
            )?,
        };
        self.agents.push(agent);
        Ok(())
    }

    /// The agent on node `n`.
    fn agent(&mut self, n: usize) -> &mut LabAgent {
        self.agents
            .iter_mut()
            .find(|a| a.node == n)
            .expect("one agent per node")
    }

    /// Starts the agent on node `n` again, with the same command line, after it died.
    fn restart_agent(&mut self, n: usize) -> anyhow::Result<()> {
        let agent = self
            .agents
            .iter_mut()
            .find(|a| a.node == n)
            .expect("one agent per node");
        agent.restart(&mut self.lab)
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

/// Kubernetes mode: the lab's fake API server, on the outside host (ext, 192.0.2.100) as a
/// control plane off the nodes, with the Node objects and the tutorial's manifests.
struct Cluster {
    server: FakeApiServer,
    /// Where the agents find it.
    kubeconfig: PathBuf,
    /// The manifests' temp copy, applied to the server.
    manifests: PathBuf,
    /// What the first load applied and skipped.
    loaded: Loaded,
    /// Each manifest's modification time when it was last applied.
    applied: BTreeMap<PathBuf, SystemTime>,
}

impl Cluster {
    /// Starts the server, registers node1 and node2 with their InternalIP (as the kubelets
    /// would), and applies every `*.yaml` in `manifests`.
    fn start(lab: &Lab, manifests: &Path) -> anyhow::Result<Cluster> {
        let server = kube::apiserver_on_ext(lab)?;
        kube::apply_nodes(&server, lab);
        let kubeconfig = kube::kubeconfig(manifests, &server.url())?;
        let mut cluster = Cluster {
            server,
            kubeconfig,
            manifests: manifests.to_path_buf(),
            loaded: Loaded::default(),
            applied: BTreeMap::new(),
        };
        for (_, loaded) in cluster.apply_changed()? {
            cluster.loaded.merge(loaded);
        }
        Ok(cluster)
    }

    /// Applies each `*.yaml` of the manifests dir that is new or changed since it was last
    /// applied (as `kubectl apply -f FILE` would: an object removed from a file stays);
    /// returns what each file applied.
    fn apply_changed(&mut self) -> anyhow::Result<Vec<(PathBuf, Loaded)>> {
        let mut files: Vec<(PathBuf, SystemTime)> = std::fs::read_dir(&self.manifests)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
            .filter_map(|p| Some((p.clone(), p.metadata().ok()?.modified().ok()?)))
            .collect();
        files.sort();
        let mut done = Vec::new();
        for (path, mtime) in files {
            if self.applied.get(&path) == Some(&mtime) {
                continue;
            }
            // Recorded first: a file that does not load is reported once per change.
            self.applied.insert(path.clone(), mtime);
            let loaded = kube::load_manifest(&self.server, &path)?;
            done.push((path, loaded));
        }
        Ok(done)
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
    let mut env = TutorialLab::up(tutorial, source)?;
    println!(
        "lab svl-{id}-*: node1 192.0.2.1 (pods a1 a2, client ca), node2 192.0.2.2 (pods b1 b2, client cb), outside host ext 192.0.2.100\n\
         {serves}\n",
        id = env.lab.id(),
        serves = what_agents_serve(&env),
    );
    println!("self-check:");
    self_check(&mut env).with_context(|| format!("tutorial {name}: agent logs: {}", env.logs()))?;
    let node1_bpffs = env.lab.node_bpffs_dir(1).display().to_string();
    println!(
        "\n{try_}\
         What node1's maps hold:\n\
         \x20 {svcctl} --bpffs {node1_bpffs} dump\n\
         The tutorial: {readme}\n\
         {edit}\n\
         Agent logs: {logs}\n\n\
         Ctrl-C stops the agents and removes the lab.",
        try_ = try_commands(&env),
        svcctl = bin_dir.join("svcctl").display(),
        readme = source.join("README.md").display(),
        edit = edit_hint(&env),
        logs = env.logs(),
    );
    match env.cluster.as_mut() {
        None => wait_stop(duration, stop_rx),
        Some(cluster) => wait_stop_applying(duration, stop_rx, cluster),
    }
    println!(
        "\nstopping: agents, echo servers, namespaces, {}",
        env.manifests.display()
    );
    drop(env);
    Ok(())
}

/// Where the agents read the cluster from, for the banner.
fn what_agents_serve(env: &TutorialLab) -> String {
    let (m, src) = (env.manifests.display(), env.source.display());
    match &env.cluster {
        None => format!("svc-agent on each node serves {m} (a copy of {src})"),
        Some(c) => format!(
            "API server: the lab's fake one, on ext at {url} (a control plane off the nodes)\n\
             \x20 loaded from {m} (a copy of {src}): {loaded}\n\
             \x20 and Node node1 (192.0.2.1), node2 (192.0.2.2), as their kubelets would register them\n\
             svc-agent on each node watches it: --kubeconfig {kc} --node-name nodeN --l2-announcements",
            url = c.server.url(),
            loaded = c.loaded,
            kc = c.kubeconfig.display(),
        ),
    }
}

/// How to change the tutorial while it runs.
fn edit_hint(env: &TutorialLab) -> String {
    let m = env.manifests.display();
    match env.cluster {
        None => format!(
            "svc-agent serves {m}: edit it and both agents apply the change within a second."
        ),
        Some(_) => format!(
            "Edit a file in {m}, or add one: the run applies it to the API server as `kubectl apply -f`\n\
             would (an object removed from a file stays; the Service's status stays the agents')."
        ),
    }
}

/// [`wait_stop`], applying the manifests that change meanwhile to the API server.
fn wait_stop_applying(secs: Option<u64>, stop_rx: &mpsc::Receiver<()>, cluster: &mut Cluster) {
    let deadline = secs.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let mut wait = Duration::from_millis(500);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        if stop_rx.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            return;
        }
        match cluster.apply_changed() {
            Ok(files) => {
                for (path, loaded) in files {
                    println!("applied {}: {loaded}", path.display());
                }
            }
            Err(e) => println!("not applied: {e:#}"),
        }
    }
}

/// Shows the tutorial's point with real packets; fails when it does not hold.
fn self_check(env: &mut TutorialLab) -> anyhow::Result<()> {
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
            let ip = lb_address(env)?;
            let announcer = lb_announcer(env, ip)?;
            lb_reach(env, ip, announcer)?;
            let now = lb_failover(env, ip, announcer)?;
            lb_restart(env, announcer, now)?;
            lb_svcctl(env, now)?;
            let s = sample(env.ns("ca"), addr(Ipv4Addr::new(10, 96, 20, 10), 8080), 8)?;
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

/// The loadbalancer tutorial, step 1: the Service's status gets an address of the pool,
/// written by the agent holding the IPAM Lease.
fn lb_address(env: &TutorialLab) -> anyhow::Result<Ipv4Addr> {
    let server = &env.cluster.as_ref().expect("Kubernetes mode").server;
    let status = || kube::status_ips(server, "default", LB_SERVICE);
    anyhow::ensure!(
        wait_for(Duration::from_secs(30), || !status().is_empty()),
        "{LB_SERVICE} got no address from the pool in 30 s"
    );
    let ips = status();
    let ip: Ipv4Addr = ips[0]
        .parse()
        .with_context(|| format!("status address {:?}", ips[0]))?;
    let writer = kube::lease_holder(server, kube::IPAM_LEASE).unwrap_or_else(|| "?".into());
    let pools: Vec<String> = server
        .list("LoadBalancerIPPool")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    println!(
        "  {LB_SERVICE}'s status.loadBalancer.ingress: {} (from LoadBalancerIPPool {}), written by the agent on {writer},\n\
         \x20   holder of Lease {}/{} (one writer for the whole cluster)",
        ips.join(", "),
        pools.join(", "),
        kube::LEASE_NAMESPACE,
        kube::IPAM_LEASE,
    );
    Ok(ip)
}

/// Step 2: one node is elected to announce the address (the holder of the Service's
/// Lease); returns its number.
fn lb_announcer(env: &TutorialLab, ip: Ipv4Addr) -> anyhow::Result<usize> {
    let server = &env.cluster.as_ref().expect("Kubernetes mode").server;
    let holder = || kube::announcer(server, "default", LB_SERVICE);
    anyhow::ensure!(
        wait_for(Duration::from_secs(15), || holder().is_some()),
        "no node took the announcement Lease of {LB_SERVICE} in 15 s"
    );
    let name = holder().expect("just seen");
    let n = kube::node_number(&name).with_context(|| format!("Lease holder {name:?}"))?;
    println!(
        "  {name} holds Lease {}/svc-l2.default.{LB_SERVICE}: it answers ARP for {ip} on its eth0 (MAC {})",
        kube::LEASE_NAMESPACE,
        env.lab.node_mac(n)?,
    );
    Ok(n)
}

/// Step 3: ext, with no route to the address (it is on ext's own subnet), resolves it by
/// ARP to the announcer and connects; every pod answers.
fn lb_reach(env: &TutorialLab, ip: Ipv4Addr, announcer: usize) -> anyhow::Result<()> {
    let to = addr(ip, LB_PORT);
    // The agent may answer ARP a moment after it took the Lease.
    wait_for(Duration::from_secs(10), || {
        tcp_request(env.ext(), to, "tutorial", TIMEOUT).is_ok()
    });
    let s = sample(env.ext(), to, 40)?;
    println!(
        "  ext has no route for {ip} (it is in ext's own 192.0.2.0/24): 40 connections from ext to {to} -> {s}"
    );
    expect(
        &s,
        "my-service on its LoadBalancer address",
        &["a1", "a2", "b1", "b2"],
        env.lab.node_ip(announcer),
    )?;
    let mac = env.lab.node_mac(announcer)?;
    let neigh = env.lab.ext_neighbour(ip);
    anyhow::ensure!(
        neigh.as_deref() == Some(mac.as_str()),
        "ext's neighbour entry for {ip} is {neigh:?}, not node{announcer}'s MAC {mac}"
    );
    println!(
        "  ext's neighbour entry: {ip} lladdr {mac}, node{announcer}'s eth0 (policy Cluster: the pods see node{announcer}'s address)"
    );
    Ok(())
}

/// Step 4: the announcer's agent dies; the other node takes the Lease and sends
/// gratuitous ARP. Measures the time until ext's neighbour entry moves and counts the
/// connections that fail meanwhile; returns the new announcer.
fn lb_failover(env: &mut TutorialLab, ip: Ipv4Addr, announcer: usize) -> anyhow::Result<usize> {
    let other = 3 - announcer;
    let other_mac = env.lab.node_mac(other)?;
    let to = addr(ip, LB_PORT);
    let killed = Instant::now();
    env.agent(announcer).process.kill()?;
    let (mut tried, mut failed, mut moved) = (0, 0, None);
    while moved.is_none() && killed.elapsed() < Duration::from_secs(15) {
        tried += 1;
        if tcp_request(env.ext(), to, "tutorial", Duration::from_millis(500)).is_err() {
            failed += 1;
        }
        if env.lab.ext_neighbour(ip).as_deref() == Some(other_mac.as_str()) {
            moved = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let moved = moved.with_context(|| {
        format!("ext's neighbour entry for {ip} did not move to node{other} within 15 s")
    })?;
    println!(
        "  failover: killed node{announcer}'s svc-agent; after {:.1} s ext's neighbour entry for {ip} is node{other}'s MAC\n\
         \x20   (node{other} took the Lease and sent gratuitous ARP); {failed} of {tried} connections failed meanwhile",
        moved.as_secs_f64()
    );
    let s = sample(env.ext(), to, 40)?;
    println!("  after the failover: 40 connections from ext to {to} -> {s}");
    expect(
        &s,
        "my-service after the failover",
        &["a1", "a2", "b1", "b2"],
        env.lab.node_ip(other),
    )?;
    Ok(other)
}

/// Step 5: the killed agent starts again and programs the Service; the announcement
/// stays with the node that took it over (its agent keeps renewing the Lease).
fn lb_restart(env: &mut TutorialLab, killed: usize, announcer: usize) -> anyhow::Result<()> {
    env.restart_agent(killed)?;
    let (vip, port, count) = env.tutorial.synced();
    env.agent(killed)
        .wait_backends(vip, port, PROTO_TCP, count, Duration::from_secs(20))?;
    let server = &env.cluster.as_ref().expect("Kubernetes mode").server;
    let holder = kube::announcer(server, "default", LB_SERVICE).unwrap_or_else(|| "nobody".into());
    if holder == format!("node{announcer}") {
        println!(
            "  node{killed}'s svc-agent restarted; the announcement stays with {holder} (it keeps renewing its Lease)"
        );
    } else {
        println!("  node{killed}'s svc-agent restarted; the announcement is now with {holder}");
    }
    Ok(())
}

/// Step 6: what the announcing node's agent says, `svcctl lb`: pools, assignments,
/// announcements.
fn lb_svcctl(env: &TutorialLab, node: usize) -> anyhow::Result<()> {
    let lb = svcctl_in_node(&env.lab, node, &["lb", "--agent", "127.0.0.1:10249"])?;
    println!("  svcctl lb on node{node}:");
    for line in lb.lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("    {line}");
        }
    }
    Ok(())
}

/// The loadbalancer tutorial's commands to try.
fn lb_try_commands(env: &TutorialLab) -> String {
    let (ext, ca) = (env.ext(), env.ns("ca"));
    let n1 = env.lab.node_ns_of(1);
    let m = env.manifests.display();
    let server = &env.cluster.as_ref().expect("Kubernetes mode").server;
    let url = server.url();
    let ip = kube::status_ips(server, "default", LB_SERVICE)
        .into_iter()
        .next()
        .unwrap_or_else(|| "192.0.2.200".into());
    let svcctl = svc_lab::agent::workspace_bin("svcctl")
        .map_or_else(|_| "svcctl".into(), |p| p.display().to_string());
    let announcer = kube::announcer(server, "default", LB_SERVICE);
    let agent = announcer
        .as_deref()
        .and_then(kube::node_number)
        .and_then(|n| env.agents.iter().find(|a| a.node == n));
    let kill = match agent {
        Some(a) => format!("now node{}: kill {}", a.node, a.process.pid()),
        None => "kill <pid>".into(),
    };
    format!(
        "Try, from outside the cluster: ext has no route for {ip}, it asks by ARP and the announcing node answers:\n\
         \x20 ip netns exec {ext} curl -s http://{ip}:8080/\n\
         \x20 ip -n {ext} neigh show {ip}                       # the announcing node's MAC\n\
         Pools, addresses and who announces what, as node1's agent sees it:\n\
         \x20 ip netns exec {n1} {svcctl} lb --agent 127.0.0.1:10249\n\
         The Service's status and the Leases, from the API server on ext:\n\
         \x20 ip netns exec {ext} curl -s {url}/api/v1/namespaces/default/services/{LB_SERVICE}/status\n\
         \x20 ip netns exec {ext} curl -s {url}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases\n\
         Fail over yourself: kill the announcing node's agent ({kill}), then watch ext's entry\n\
         move to the other node within a few seconds (nothing restarts the agent you kill):\n\
         \x20 ip -n {ext} neigh show {ip}\n\
         Ask for another address of the pool: add to {LB_SERVICE}'s metadata in {m}/my-service.yaml\n\
         \x20 annotations: {{svc-ebpf.dev/loadbalancer-ips: \"192.0.2.210\"}}\n\
         The same Service on its NodePort, on either node, and on its ClusterIP from a pod:\n\
         \x20 ip netns exec {ext} curl -s http://192.0.2.2:32377/\n\
         \x20 ip netns exec {ca} curl -s http://10.96.20.10:8080/\n",
    )
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
        Tutorial::Loadbalancer => lb_try_commands(env),
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
