//! Section 2 of `cargo xtask bench`: end to end in the lab, svc-ebpf against kube-proxy's
//! iptables and nftables layouts, with real connections from the client pod.
//!
//! One [`svc_lab::Lab`] serves the whole section. nginx ([`crate::nginx`], one worker,
//! `return 200`) runs in the three backend pods p1 p2 p3 on [`nginx::LAB_PORT`] (8081: the
//! lab's echo servers hold 8080). The *measured* Service is the ClusterIP [`MEASURED_VIP`]:80
//! with those three nginx pods as its endpoints: it has **3 real endpoints**, while the
//! filler Services around it have `endpoints_per_service` (10) endpoints on addresses nothing
//! answers on, as the baselines' lab had three nginx backends
//! (shared/notes/bench-baselines.md). The set is [`rules::services`]`(n, 10, measured)`, so
//! the measured Service comes last (iptables' worst case).
//!
//! For each scale and each round, the three layouts are measured one after the other, each
//! set up from nothing and torn down again; the order rotates with the round (round 0:
//! ebpf, iptables, nftables; round 1: iptables, nftables, ebpf; ...), so no layout always
//! runs right after the same one. Per layout and round, two load runs from the client pod
//! to the measured `VIP:80`: [`load::new_connections`] (every request a new TCP connection,
//! so its first packet crosses the Service translation: the baselines' `wrk -H 'Connection:
//! close'`) and then [`load::keepalive_requests`].
//!
//! - **ebpf**: the Services as manifests ([`rules::manifests`]) in a temp directory; the real
//!   svc-agent started on them in the node ([`LabAgent::start_in`]), waited for until every
//!   frontend of the set has all its backends in the maps; the loads; the agent stopped and
//!   `svc-agent cleanup` run on the node's bpffs dir, because the agent's programs are
//!   attached through pinned links that outlive it by design and must be gone before the
//!   netfilter layouts run. The agent gets `--resync-interval 3600`: its periodic full
//!   resync (60 s by default) would otherwise fall into the measurement now and then, and the
//!   netfilter layouts have no such background work either.
//! - **iptables**: [`rules::iptables_layout`] loaded with `iptables-legacy-restore` into the
//!   node namespace ([`rules::load`]; the load time is returned as an [`InstallTime`] for the
//!   first round), the loads, [`rules::flush`].
//! - **nftables**: the same with [`rules::nft_layout`] and `nft -f`.
//!
//! After each teardown the measured address must stop answering (a layout that leaks into
//! the next one fails the section), and after a big one (1,000 Services or more) the
//! machine is given [`SETTLE_BIG`] to settle: big nft loads use about 1 GB, and the
//! baselines' noisy 1k nftables row followed a large flush.
//!
//! Netfilter connection tracking: the iptables-legacy `nat` table, once loaded into a
//! namespace, stays registered there (empty after the flush) until the namespace goes, and
//! with it conntrack on every packet of the node. So that every layout and every round runs
//! with the same node state, the section loads an empty `nat` table once before the first
//! measurement: all runs, ebpf included, pay the node's conntrack, as on a kube-proxy node,
//! and the comparison isolates the Service translation itself.
//!
//! Before every load run the measured Service must answer one `GET /` with nginx's body
//! (retried for [`ANSWER_TIMEOUT`]), so a broken setup fails at once with a clear error; a
//! run with more errors than a tenth of its requests fails the section with the errors by
//! kind. Every wait is bounded; nothing is created in the root network namespace; the lab,
//! nginx, the agent and the temp directory are all removed on return, also on error.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use svc_common::Verdict;
use svc_lab::Lab;
use svc_lab::agent::{LabAgent, workspace_bin};

use crate::cpu;
use crate::load::{self, Report};
use crate::nginx::{self, Nginx};
use crate::results::{E2eRun, InstallTime};
use crate::rules::{self, Backend, BenchService};

/// ClusterIP of the measured Service (inside 10.96.0.0/12, clear of the filler VIPs, which
/// start at 10.97.0.0, and of the 10.96.0.1x addresses of the lab's examples).
pub const MEASURED_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 100);
/// Service port of the measured Service.
pub const MEASURED_PORT: u16 = 80;
/// The lab's client pod, where the load runs.
pub const CLIENT_POD: &str = "client";
/// Namespace and name of the measured Service.
pub const MEASURED_NAMESPACE: &str = "default";
pub const MEASURED_NAME: &str = "measured";
/// Cap on the attempts of one load run: far above what 5 s can reach here (~15k/s new
/// connections, ~100k/s keep-alive), but finite.
pub const MAX_REQUESTS: u64 = 5_000_000;
/// How long the measured Service may take to answer its first `GET` after a setup.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the measured address may keep answering after a teardown.
pub const SILENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after tearing down a layout of at least [`BIG_LAYOUT`] Services.
pub const SETTLE_BIG: Duration = Duration::from_secs(2);
/// Pause after tearing down a smaller layout.
pub const SETTLE_SMALL: Duration = Duration::from_millis(200);
/// From this many Services on, a layout counts as big (see [`SETTLE_BIG`]).
pub const BIG_LAYOUT: usize = 1000;
/// Bound on `svc-agent cleanup`.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The agent's default `--lb-map-max` (svc_common::DEFAULT_LB_MAP_MAX); larger sets pass a
/// larger one.
const DEFAULT_LB_MAP_MAX: usize = 262_144;

/// The layouts, in round 0's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// svc-agent's maps and programs as deploy/ runs them: `--cgroup` on the node's cgroup
    /// with `--socket-lb node` (the node's own sockets translated at connect(); the client
    /// pod's packets by TC).
    Ebpf,
    /// The same with `--socket-lb all`: the client pod's connect() to the ClusterIP goes
    /// straight to a backend, and its packets cross TC as plain pod-to-pod traffic.
    EbpfSocketLb,
    /// kube-proxy's iptables mode, loaded with iptables-legacy-restore.
    Iptables,
    /// kube-proxy's nftables mode, loaded with `nft -f`.
    Nftables,
}

impl Layout {
    pub const ALL: [Layout; 4] = [
        Layout::Ebpf,
        Layout::EbpfSocketLb,
        Layout::Iptables,
        Layout::Nftables,
    ];

    /// The name in [`E2eRun::layout`]: `ebpf`, `ebpf-socklb`, `iptables`, `nftables`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Ebpf => "ebpf",
            Layout::EbpfSocketLb => "ebpf-socklb",
            Layout::Iptables => "iptables",
            Layout::Nftables => "nftables",
        }
    }

    fn backend(self) -> Option<Backend> {
        match self {
            Layout::Ebpf | Layout::EbpfSocketLb => None,
            Layout::Iptables => Some(Backend::IptablesLegacy),
            Layout::Nftables => Some(Backend::Nftables),
        }
    }

    /// The agent's `--socket-lb` in an ebpf layout.
    fn socket_lb(self) -> Option<&'static str> {
        match self {
            Layout::Ebpf => Some("node"),
            Layout::EbpfSocketLb => Some("all"),
            Layout::Iptables | Layout::Nftables => None,
        }
    }

    /// The order of round `round`: round 0 as [`Layout::ALL`]; each later round starts one
    /// further on.
    pub fn order(round: usize) -> [Layout; 4] {
        let n = Layout::ALL.len();
        std::array::from_fn(|k| Layout::ALL[(round + k) % n])
    }
}

/// What section 2 measures, and where its progress goes.
pub struct E2eOpts<'a> {
    /// Service counts, e.g. `[1, 1000, 10000]`; each at least 1.
    pub scales: Vec<usize>,
    /// Rounds of alternation per scale (at least 1).
    pub rounds: usize,
    /// Length of each load run.
    pub duration: Duration,
    /// Connections in parallel (the baselines' `wrk -c16`).
    pub concurrency: usize,
    /// New connections per second offered in the paced run, the same for every layout:
    /// well below the slowest layout's ceiling (kube-proxy's iptables layout at 10k
    /// Services: about 7,500/s here), so the run measures CPU per connection.
    pub paced_rate: u32,
    /// Endpoints of each filler Service.
    pub endpoints_per_service: usize,
    /// Called with one line per step (setup, each run, teardown).
    pub log: &'a dyn Fn(&str),
}

impl<'a> E2eOpts<'a> {
    /// The full section: 1, 1,000 and 10,000 Services, 3 rounds, 5 s runs, 16 connections,
    /// 10 endpoints per filler.
    pub fn full(log: &'a dyn Fn(&str)) -> E2eOpts<'a> {
        E2eOpts {
            scales: vec![1, 1000, 10_000],
            rounds: 3,
            duration: Duration::from_secs(5),
            concurrency: 16,
            paced_rate: 2_000,
            endpoints_per_service: 10,
            log,
        }
    }

    /// `--quick`: 1 and 1,000 Services, 1 round, 2 s runs.
    pub fn quick(log: &'a dyn Fn(&str)) -> E2eOpts<'a> {
        E2eOpts {
            scales: vec![1, 1000],
            rounds: 1,
            duration: Duration::from_secs(2),
            ..E2eOpts::full(log)
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.scales.is_empty(), "e2e: no scales given");
        for &n in &self.scales {
            anyhow::ensure!(
                (1..=rules::MAX_SERVICES).contains(&n),
                "e2e: {n} Services: the scale must be 1 to {}",
                rules::MAX_SERVICES
            );
        }
        anyhow::ensure!(self.rounds >= 1, "e2e: rounds must be at least 1");
        anyhow::ensure!(self.concurrency >= 1, "e2e: concurrency must be at least 1");
        anyhow::ensure!(
            !self.duration.is_zero(),
            "e2e: the run duration must not be zero"
        );
        Ok(())
    }
}

/// The measured Service: [`MEASURED_VIP`]:[`MEASURED_PORT`] → the lab's three backend pods
/// on [`nginx::LAB_PORT`].
pub fn measured_service(lab: &Lab) -> BenchService {
    let endpoints = lab
        .pods()
        .iter()
        .map(|p| SocketAddrV4::new(p.ip, nginx::LAB_PORT))
        .collect();
    BenchService::new(
        MEASURED_NAMESPACE,
        MEASURED_NAME,
        MEASURED_VIP,
        MEASURED_PORT,
        endpoints,
    )
}

/// Runs section 2 (see the [module docs](self)): every load run as an [`E2eRun`], and the
/// netfilter layouts' load times (first round of each scale) as [`InstallTime`]s.
pub fn run(opts: &E2eOpts) -> anyhow::Result<(Vec<E2eRun>, Vec<InstallTime>)> {
    opts.check()?;
    let log = opts.log;
    let section = Instant::now();
    // Dropped in reverse order: nginx, then the temp dir, then the lab.
    let mut lab = Lab::up().context("e2e: bringing the lab up")?;
    let work = WorkDir::new(lab.id())?;
    // Every process of the lab in a pod's cgroup under the node's: the node's cgroup is
    // what the paced runs measure (crate::cpu) and where the ebpf layouts' socket programs
    // attach.
    let node_cgroup = lab.node_cgroup(1)?;
    let mut servers = Vec::new();
    for pod in svc_lab::BACKENDS {
        lab.pod_cgroup(1, pod)?;
        let ns = lab.pod_ns(pod).to_string();
        let cmd = lab.pod_command(1, pod, &crate::program("nginx").to_string_lossy())?;
        servers.push(
            Nginx::start_with(cmd, &ns, nginx::LAB_PORT)
                .with_context(|| format!("e2e: nginx in {pod}"))?,
        );
    }
    lab.pod_cgroup(1, CLIENT_POD)?;
    let load_bin = svc_lab::agent::workspace_bin("svc-bench-load")
        .context("e2e: the load generator's binary")?;
    // See the module docs: the same netfilter state (conntrack on) for every run.
    rules::flush(lab.node_ns(), Backend::IptablesLegacy)
        .context("e2e: loading an empty nat table into the node")?;
    log(&format!(
        "e2e: lab {} up, nginx in {} pods on :{}, measured Service {MEASURED_VIP}:{MEASURED_PORT}",
        lab.id(),
        servers.len(),
        nginx::LAB_PORT
    ));

    let measured = measured_service(&lab);
    let target = measured.frontend();
    let mut runs = Vec::new();
    let mut installs = Vec::new();
    for &n in &opts.scales {
        let services = rules::services(n, opts.endpoints_per_service, measured.clone());
        let texts = LayoutTexts::new(&services, &work, n)?;
        for round in 0..opts.rounds {
            for layout in Layout::order(round) {
                let ctx = RunCtx {
                    layout,
                    services: &services,
                    round,
                    target,
                    opts,
                    node_cgroup: &node_cgroup,
                    load_bin: &load_bin,
                };
                let (pair, install) = measure(&mut lab, &ctx, &texts, &work)?;
                runs.extend(pair);
                if round == 0
                    && let Some(i) = install
                {
                    installs.push(i);
                }
            }
        }
    }
    log(&format!(
        "e2e: done in {:.0} s ({} runs)",
        section.elapsed().as_secs_f64(),
        runs.len()
    ));
    drop(servers);
    Ok((runs, installs))
}

/// One layout × scale × round.
struct RunCtx<'a> {
    layout: Layout,
    services: &'a [BenchService],
    round: usize,
    target: SocketAddrV4,
    opts: &'a E2eOpts<'a>,
    /// The lab node's cgroup: its pods' (client and nginx) under it.
    node_cgroup: &'a Path,
    /// `svc-bench-load`.
    load_bin: &'a Path,
}

impl RunCtx<'_> {
    fn n(&self) -> usize {
        self.services.len()
    }

    fn label(&self) -> String {
        format!(
            "{} {} services round {}",
            self.layout.name(),
            thousands(self.n() as f64),
            self.round + 1
        )
    }

    fn log(&self, what: &str) {
        (self.opts.log)(&format!("e2e: {}: {what}", self.label()));
    }
}

/// The inputs of one scale, made once for all its rounds.
struct LayoutTexts {
    iptables: String,
    nft: String,
    /// The manifests directory (one `services.yaml`).
    manifests: PathBuf,
}

impl LayoutTexts {
    fn new(services: &[BenchService], work: &WorkDir, n: usize) -> anyhow::Result<LayoutTexts> {
        let manifests = work.path.join(format!("manifests-{n}"));
        std::fs::create_dir_all(&manifests)
            .with_context(|| format!("creating {}", manifests.display()))?;
        let file = manifests.join("services.yaml");
        std::fs::write(&file, rules::manifests(services))
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(LayoutTexts {
            iptables: rules::iptables_layout(services),
            nft: rules::nft_layout(services),
            manifests,
        })
    }
}

/// Set up, load twice, tear down.
fn measure(
    lab: &mut Lab,
    ctx: &RunCtx,
    texts: &LayoutTexts,
    work: &WorkDir,
) -> anyhow::Result<([E2eRun; 3], Option<InstallTime>)> {
    let n = ctx.n();
    let node_ns = lab.node_ns().to_string();
    let client_ns = lab.client_ns().to_string();
    let mut install = None;
    let mut agent = None;
    match ctx.layout.backend() {
        None => {
            let started = Instant::now();
            agent = Some(start_agent(lab, ctx, texts, work)?);
            ctx.log(&format!(
                "agent ready (every frontend has its backends) in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
        Some(backend) => {
            let text = match backend {
                Backend::IptablesLegacy => &texts.iptables,
                Backend::Nftables => &texts.nft,
            };
            let took = rules::load(&node_ns, backend, text)
                .with_context(|| format!("e2e: {}: loading the layout", ctx.label()))?;
            ctx.log(&format!("loaded in {:.3} s", took.as_secs_f64()));
            let (layout, tool) = match backend {
                Backend::IptablesLegacy => {
                    ("iptables-legacy-restore", "iptables-legacy-restore -w 60")
                }
                Backend::Nftables => ("nft -f", "nft -f -"),
            };
            install = Some(InstallTime {
                layout: layout.into(),
                services: n,
                endpoints_per_service: ctx.opts.endpoints_per_service,
                seconds: took.as_secs_f64(),
                what: format!(
                    "`{tool}` of kube-proxy's {} layout ({} Services: {} fillers with {} \
                     endpoints each and the measured one with 3), from an empty node: wall \
                     time from spawn to exit, in the lab node's namespace",
                    ctx.layout.name(),
                    n,
                    n - 1,
                    ctx.opts.endpoints_per_service
                ),
            });
        }
    }

    let result = load_all(lab, ctx, agent.as_ref());

    // Teardown, also after a failed run (the error of the run wins).
    let teardown = match (&mut agent, ctx.layout.backend()) {
        (Some(a), _) => a.stop_and_cleanup(),
        (None, Some(backend)) => rules::flush(&node_ns, backend).map(|_| ()),
        (None, None) => Ok(()),
    };
    let runs = result?;
    teardown.with_context(|| format!("e2e: {}: tearing the layout down", ctx.label()))?;
    if ctx.layout.backend().is_none() {
        // `svc-agent cleanup` removed the node's bpffs dir; the next agent start needs it.
        let dir = &lab.node(1).bpffs_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("recreating {}", dir.display()))?;
    }
    wait_silent(&client_ns, ctx.target, SILENT_TIMEOUT)
        .with_context(|| format!("e2e: {}: after the teardown", ctx.label()))?;
    std::thread::sleep(if n >= BIG_LAYOUT {
        SETTLE_BIG
    } else {
        SETTLE_SMALL
    });
    Ok((runs, install))
}

/// The load runs on a set-up layout, each from a `svc-bench-load` process of the client pod
/// (its namespace and cgroup): first new connections at the fixed offered rate with the
/// CPU time they cost (first, so the ceiling runs' sockets and conntrack entries of the
/// layout before are as long gone as they can be), then the ceiling: new connections and
/// keep-alive.
fn load_all(lab: &Lab, ctx: &RunCtx, agent: Option<&RunningAgent>) -> anyhow::Result<[E2eRun; 3]> {
    let client_ns = lab.client_ns();
    let one = |mode: load::Mode| -> anyhow::Result<E2eRun> {
        wait_answers(client_ns, ctx.target, ANSWER_TIMEOUT)
            .with_context(|| format!("e2e: {}: the measured Service", ctx.label()))
            .map_err(|e| with_agent_log(e, agent))?;
        let spec = load::Spec {
            ns: client_ns.to_string(),
            target: ctx.target,
            mode,
            concurrency: ctx.opts.concurrency,
            duration: ctx.opts.duration,
            max_requests: MAX_REQUESTS,
            cpu_cgroup: Some(ctx.node_cgroup.to_path_buf()),
        };
        let cmd = lab.pod_command(1, CLIENT_POD, &ctx.load_bin.to_string_lossy())?;
        let before = agent.map(RunningAgent::translations);
        // Our programs' run time in the paced run of an ebpf layout (the kernel counts it
        // only while the stats fd is open: two clock reads per program run).
        let bpf_stats = match (mode, agent) {
            (load::Mode::Paced { .. }, Some(_)) => Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .context("BPF_ENABLE_STATS (run time)")?,
            ),
            _ => None,
        };
        let bpf_before = bpf_stats
            .as_ref()
            .map(|_| cpu::program_stats())
            .transpose()?;
        let report =
            load::run_process(cmd, &spec).with_context(|| format!("e2e: {}: load", ctx.label()))?;
        let bpf_us_per_connection = match bpf_before {
            Some(b) if report.requests > 0 => {
                let (time, _) = cpu::stats_delta(&b, &cpu::program_stats()?);
                Some(time.as_secs_f64() * 1e6 / report.requests as f64)
            }
            _ => None,
        };
        drop(bpf_stats);
        if let (Some(before), Some(a)) = (before, agent) {
            check_translated_where_expected(ctx, before, a.translations(), report.connections)
                .map_err(|e| with_agent_log(e, agent))?;
        }
        let mode_name = match mode {
            load::Mode::NewConnections => "new_connections",
            load::Mode::KeepAlive => "keepalive",
            load::Mode::Paced { .. } => "paced",
        };
        ctx.log(&describe(mode, &report, bpf_us_per_connection));
        if report.requests == 0 || report.errors > report.requests / 10 {
            let e = anyhow::anyhow!(
                "e2e: {} ({mode_name}): {} requests, {} errors: {:?}",
                ctx.label(),
                report.requests,
                report.errors,
                report.errors_by_kind
            );
            return Err(with_agent_log(e, agent));
        }
        Ok(E2eRun {
            layout: ctx.layout.name().into(),
            services: ctx.n(),
            mode: mode_name.into(),
            round: ctx.round,
            report,
            bpf_us_per_connection,
        })
    };
    let paced = one(load::Mode::Paced {
        per_second: ctx.opts.paced_rate,
    })?;
    Ok([
        paced,
        one(load::Mode::NewConnections)?,
        one(load::Mode::KeepAlive)?,
    ])
}

/// An ebpf layout's connections were translated where its `--socket-lb` says: each at
/// connect() (`sock_translate`, at least one per connection) with `all`, each by TC
/// (`dnat_new`) and none at the socket with `node`.
fn check_translated_where_expected(
    ctx: &RunCtx,
    (sock0, tc0): (u64, u64),
    (sock1, tc1): (u64, u64),
    connections: u64,
) -> anyhow::Result<()> {
    let (sock, tc) = (sock1.saturating_sub(sock0), tc1.saturating_sub(tc0));
    let ok = match ctx.layout.socket_lb() {
        Some("all") => sock >= connections,
        Some(_) => sock == 0 && tc >= connections,
        None => true,
    };
    anyhow::ensure!(
        ok,
        "e2e: {}: {connections} connections, {sock} translated at the socket, {tc} new \
         flows translated by TC: not what --socket-lb {} does",
        ctx.label(),
        ctx.layout.socket_lb().unwrap_or("-")
    );
    Ok(())
}

fn describe(mode: load::Mode, r: &Report, bpf_us: Option<f64>) -> String {
    let (what, unit) = match mode {
        load::Mode::NewConnections => ("new connections", "conn/s"),
        load::Mode::KeepAlive => ("keep-alive", "req/s"),
        load::Mode::Paced { .. } => ("paced new connections", "conn/s"),
    };
    let cpu = match r.cpu_us_per_request() {
        Some(us) if matches!(mode, load::Mode::Paced { .. }) => {
            let bpf = bpf_us.map_or(String::new(), |b| {
                format!(", {b:.1} µs in our BPF programs")
            });
            format!(", {} µs CPU per connection{bpf}", thousands(us))
        }
        _ => String::new(),
    };
    let errors = if r.errors == 0 {
        String::new()
    } else {
        format!(", {} errors {:?}", r.errors, r.errors_by_kind)
    };
    format!(
        "{what} {} {unit} (connect p50 {} µs p99 {} µs, request p50 {} µs p99 {} µs){cpu}{errors}",
        thousands(r.rate_per_s),
        r.connect_p50_us,
        r.connect_p99_us,
        r.request_p50_us,
        r.request_p99_us,
    )
}

/// Starts the agent on the scale's manifests and waits until every Service of the set has
/// all its backends in the maps.
fn start_agent(
    lab: &mut Lab,
    ctx: &RunCtx,
    texts: &LayoutTexts,
    work: &WorkDir,
) -> anyhow::Result<RunningAgent> {
    let n = ctx.n();
    let bpffs = lab.node(1).bpffs_dir.clone();
    // The agent needs the dir to exist (it checks that it is on bpffs).
    std::fs::create_dir_all(&bpffs).with_context(|| format!("creating {}", bpffs.display()))?;
    let log = work.path.join(format!(
        "agent-{}-{n}-round{}.log",
        ctx.layout.name(),
        ctx.round + 1
    ));
    let mut extra: Vec<String> = vec!["--resync-interval".into(), "3600".into()];
    if let Some(mode) = ctx.layout.socket_lb() {
        extra.extend([
            "--cgroup".into(),
            ctx.node_cgroup.display().to_string(),
            "--socket-lb".into(),
            mode.into(),
        ]);
    }
    let lb_entries = n * (1 + ctx.opts.endpoints_per_service.max(3));
    if lb_entries > DEFAULT_LB_MAP_MAX {
        extra.push("--lb-map-max".into());
        extra.push(lb_entries.next_power_of_two().to_string());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let agent = LabAgent::start_in(lab, 1, &texts.manifests, &log, &extra)
        .with_context(|| format!("e2e: {}: starting svc-agent", ctx.label()))?;
    let running = RunningAgent {
        agent: Some(agent),
        node_ns: lab.node_ns().to_string(),
        bpffs,
        cleanup_log: work.path.join("cleanup.log"),
    };
    let deadline = Instant::now() + ready_timeout(n);
    let a = running.agent.as_ref().expect("just set");
    // The measured Service (last in the file) first, then every filler.
    for svc in ctx.services.iter().rev() {
        let count = svc.endpoints.iter().collect::<BTreeSet<_>>().len();
        let count = u16::try_from(count).context("more than 65,535 endpoints")?;
        let left = deadline.saturating_duration_since(Instant::now());
        a.wait_backends(svc.vip, svc.port, libc::IPPROTO_TCP as u8, count, left)
            .with_context(|| {
                format!(
                    "e2e: {}: waiting for {}/{} ({}) to get its {count} backends",
                    ctx.label(),
                    svc.namespace,
                    svc.name,
                    svc.frontend()
                )
            })?;
    }
    Ok(running)
}

/// How long the agent may take to program `n` Services: 30 s plus 10 ms per Service
/// (130 s at 10,000).
pub fn ready_timeout(n: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(10 * n as u64)
}

/// The agent of an ebpf run: stopped and cleaned up on drop if not before.
struct RunningAgent {
    agent: Option<LabAgent>,
    node_ns: String,
    bpffs: PathBuf,
    cleanup_log: PathBuf,
}

impl RunningAgent {
    /// Stop the agent, then `svc-agent cleanup` (detaches every program, unpins every map
    /// and link, removes the dir), and check that the dir is gone. Idempotent.
    fn stop_and_cleanup(&mut self) -> anyhow::Result<()> {
        let Some(agent) = self.agent.take() else {
            return Ok(());
        };
        agent.process.stop().context("stopping svc-agent")?;
        agent_cleanup(&self.node_ns, &self.bpffs, &self.cleanup_log)?;
        anyhow::ensure!(
            !self.bpffs.exists(),
            "`svc-agent cleanup` left {} behind",
            self.bpffs.display()
        );
        Ok(())
    }

    /// The agent's counters (`sock_translate`, `dnat_new`) now; zeros once it is stopped.
    fn translations(&self) -> (u64, u64) {
        self.agent.as_ref().map_or((0, 0), |a| {
            (
                a.verdict_count(Verdict::SockTranslate),
                a.verdict_count(Verdict::DnatNew),
            )
        })
    }

    fn log_tail(&self, lines: usize) -> String {
        let Some(a) = &self.agent else {
            return String::new();
        };
        let text = a.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_cleanup() {
            eprintln!("svc-bench: e2e: cleaning the agent up: {e:#}");
        }
    }
}

fn with_agent_log(e: anyhow::Error, agent: Option<&RunningAgent>) -> anyhow::Error {
    match agent {
        Some(a) => e.context(format!("svc-agent log (last lines):\n{}", a.log_tail(30))),
        None => e,
    }
}

/// `svc-agent cleanup --bpffs DIR` in the node's namespace, bounded by [`CLEANUP_TIMEOUT`].
pub(crate) fn agent_cleanup(node_ns: &str, bpffs: &Path, log: &Path) -> anyhow::Result<()> {
    let bin = workspace_bin("svc-agent")?;
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("cleanup")
        .arg("--bpffs")
        .arg(bpffs)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    svc_lab::netns::command_in_netns(&mut cmd, node_ns)?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {} cleanup", bin.display()))?;
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`svc-agent cleanup` did not finish within {CLEANUP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        bail!(
            "`svc-agent cleanup --bpffs {}` failed ({status}): {}",
            bpffs.display(),
            std::fs::read_to_string(log).unwrap_or_default().trim()
        );
    }
    Ok(())
}

/// Until `target` answers `GET /` with nginx's 200 and body, at most `timeout`.
fn wait_answers(ns: &str, target: SocketAddrV4, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match load::http_get(ns, target) {
            Ok((200, body)) if body == nginx::BODY => return Ok(()),
            Ok((status, body)) => format!(
                "answered {status} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{target} does not answer nginx's 200 after {timeout:?}: {seen}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Until `target` stops answering at all, at most `timeout`.
fn wait_silent(ns: &str, target: SocketAddrV4, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if load::http_get(ns, target).is_err() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{target} still answers {timeout:?} after the teardown");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `12345.6` → `12,346`.
pub fn thousands(x: f64) -> String {
    let v = x.round().max(0.0) as u64;
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `$TMPDIR/svb-<pid>-<lab id>-e2e`: manifests and agent logs; removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(lab_id: &str) -> anyhow::Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("svb-{}-{lab_id}-e2e", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("svc-bench: removing {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_layouts() {
        use Layout::*;
        assert_eq!(Layout::order(0), [Ebpf, EbpfSocketLb, Iptables, Nftables]);
        assert_eq!(Layout::order(1), [EbpfSocketLb, Iptables, Nftables, Ebpf]);
        assert_eq!(Layout::order(2), [Iptables, Nftables, Ebpf, EbpfSocketLb]);
        assert_eq!(Layout::order(4), Layout::order(0));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(9812.2), "9,812");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn the_measured_vip_is_never_a_filler() {
        let m = BenchService::new("default", "measured", MEASURED_VIP, 80, vec![]);
        let set = rules::services(20_000, 1, m);
        assert_eq!(set.last().unwrap().vip, MEASURED_VIP);
        assert_eq!(
            set.iter().filter(|s| s.vip == MEASURED_VIP).count(),
            1,
            "one Service on {MEASURED_VIP}"
        );
    }

    #[test]
    fn options_are_checked() {
        let log = |_: &str| {};
        assert!(E2eOpts::full(&log).check().is_ok());
        assert!(E2eOpts::quick(&log).check().is_ok());
        let mut o = E2eOpts::quick(&log);
        o.scales = vec![0];
        assert!(o.check().is_err());
        let mut o = E2eOpts::quick(&log);
        o.rounds = 0;
        assert!(o.check().is_err());
    }
}
