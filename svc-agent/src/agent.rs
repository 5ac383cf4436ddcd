//! The agent's main loop: read the cluster from its source (the manifest directory or the
//! Kubernetes watches), recompute the whole desired state when it changed, reconcile it into
//! the maps, and keep the programs attached to the node's interfaces. Level-triggered: every
//! pass computes everything, and a full resync runs on a timer even when nothing seems to
//! have changed.
//!
//! Start-up order matters for traffic that is already flowing through pinned programs and
//! maps of an earlier agent: the status endpoints come up first (livez answers, healthz says
//! 503), then the source (in Kubernetes mode, this node's addresses come from its Node
//! object when no --node-ip is given), then the new programs are loaded and swapped into the
//! pinned links, and the maps are left exactly as they are until the source has a complete
//! view of the cluster.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use tracing::{debug, info, warn};

use crate::{
    dataplane::{Datapath, DatapathConfig, Maps},
    desired::{self, DesiredState, Frontend, NodeContext},
    http::{ProxyHealth, ServiceHealthServers, StatusAddrs, proxy_health},
    kubernetes::{self, KubeSource, Model, NodeFacts},
    manifest::{self, ManifestSet},
    metrics::Metrics,
    model::{Cluster, ObjectRef},
    reconcile::Reconciler,
};

/// Where the cluster's Services and endpoints come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of manifests (see [`manifest`]).
    Manifests(PathBuf),
    /// The Kubernetes API: `kubeconfig`, or the in-cluster / KUBECONFIG / ~/.kube/config
    /// configuration when None.
    Kubernetes { kubeconfig: Option<PathBuf> },
}

/// Where the programs go and what the agent reads; filled from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceConfig,
    pub bpffs: PathBuf,
    /// The node's external interface: XDP plus TC ingress.
    pub device: Option<String>,
    /// cgroup v2 directory whose processes get socket-level load balancing (the node's
    /// own traffic to Services); None: node-originated traffic is not translated.
    pub cgroup: Option<PathBuf>,
    /// Pod-facing interfaces: exact names, or prefixes ending in `*`.
    pub pod_devices: Vec<String>,
    /// Node name, addresses and nodePortAddresses: what decides NodePort frontends and
    /// which endpoints are local. Empty `node_ips` in Kubernetes mode: from the Node object.
    pub node: NodeContext,
    /// Pod CIDR, masquerade flags: the programs' load-time globals. The masquerade address
    /// is the first node address.
    pub datapath: DatapathConfig,
    /// Where net.* sysctls are written (a host mount of /proc/sys/net in a container).
    pub proc_sys_net: PathBuf,
    pub status: StatusAddrs,
    pub poll_interval: Duration,
    pub resync_interval: Duration,
}

/// True if `iface` matches one of the patterns (`lxc*` matches every name starting with lxc).
pub fn matches_pattern(patterns: &[String], iface: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => iface.starts_with(prefix),
        None => iface == p,
    })
}

/// Sets net.ipv4.conf.<iface>.accept_local=1. Masqueraded packets carry the node's own
/// address as their source when XDP or TC hands them to the stack (an SNATed flow from
/// outside on the external interface, a hairpinned one on a pod interface), and the kernel
/// drops such packets as martians unless the interface accepts local sources.
fn enable_accept_local(proc_sys_net: &Path, iface: &str) {
    let path = proc_sys_net.join(format!("ipv4/conf/{iface}/accept_local"));
    if let Err(e) = std::fs::write(&path, "1") {
        warn!(iface = %iface, path = %path.display(), error = %e, "cannot set accept_local; masqueraded flows through this interface will be dropped");
    }
}

/// Interfaces of the agent's network namespace.
fn interfaces() -> BTreeSet<String> {
    match nix::net::if_::if_nameindex() {
        Ok(list) => list
            .iter()
            .map(|i| i.name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list interfaces");
            BTreeSet::new()
        }
    }
}

type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

/// Cheap change detection for the manifest directory: names, sizes and modification times.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().ok(),
            ))
        })
        .collect();
    out.sort();
    out
}

/// A source, with what the agent remembers to tell whether it changed.
enum Source {
    Manifests {
        dir: PathBuf,
        last: Option<Fingerprint>,
        set: ManifestSet,
    },
    Kubernetes {
        source: KubeSource,
        model: Box<Model>,
        last_generation: Option<u64>,
        /// The node facts the last full computation used.
        last_node: Option<NodeFacts>,
    },
}

/// What changed since the last pass.
enum Change {
    /// Anything may have: compute everything.
    All,
    /// Only the endpoints of these Services.
    Endpoints(BTreeSet<ObjectRef>),
}

/// A new view of the cluster: the model, what converting it reported, what changed.
struct View<'a> {
    cluster: &'a Cluster,
    problems: Vec<String>,
    change: Change,
}

impl Source {
    /// The cluster to serve, if it changed since the last call (everything when `force`);
    /// None while there is nothing new, or no complete view yet.
    fn poll(&mut self, force: bool) -> Option<View<'_>> {
        match self {
            Source::Manifests { dir, last, set } => {
                let now = fingerprint(dir);
                if last.as_ref() == Some(&now) && !force {
                    return None;
                }
                *last = Some(now);
                match manifest::load_dir(dir) {
                    Ok(loaded) => *set = loaded,
                    // The directory itself is unreadable: keep serving the last good state.
                    Err(e) => {
                        warn!(error = %e, "cannot read manifests; keeping the current state");
                        return None;
                    }
                }
                Some(View {
                    cluster: &set.cluster,
                    problems: set.problems.iter().map(|p| p.to_string()).collect(),
                    change: Change::All,
                })
            }
            Source::Kubernetes {
                source,
                model,
                last_generation,
                last_node,
            } => {
                let generation = source.generation();
                if *last_generation == Some(generation) && !force {
                    return None;
                }
                // The events of this pass (a relist is swapped in only when complete).
                let refresh = source.drain_into(model);
                if !model.listed() || !source.ready() {
                    return None;
                }
                let first = last_generation.is_none();
                *last_generation = Some(generation);
                let node = source.node();
                let node_changed = node != *last_node;
                let change = if first || force || refresh.services_changed || node_changed {
                    *last_node = node;
                    Change::All
                } else if refresh.endpoints_changed.is_empty() {
                    // An event that changed nothing the model holds (a bookmark, a no-op
                    // update).
                    return None;
                } else {
                    Change::Endpoints(refresh.endpoints_changed)
                };
                Some(View {
                    cluster: model.cluster(),
                    problems: model.problems().iter().map(|p| p.to_string()).collect(),
                    change,
                })
            }
        }
    }

    fn kube(&self) -> Option<&KubeSource> {
        match self {
            Source::Kubernetes { source, .. } => Some(source),
            Source::Manifests { .. } => None,
        }
    }
}

/// What the next sync writes.
#[derive(Debug, Default)]
enum Pending {
    /// Nothing changed.
    #[default]
    Nothing,
    /// Everything (a full reconcile).
    All,
    /// Only these frontends' endpoints changed.
    Frontends(Vec<Frontend>),
}

pub struct Agent {
    config: Config,
    source: Source,
    datapath: Datapath,
    maps: Maps,
    reconciler: Reconciler,
    /// None until the source gave a complete view: nothing is written before.
    desired: Option<DesiredState>,
    /// healthCheckNodePort listeners, kept in line with `desired.health_checks`.
    health_checks: ServiceHealthServers,
    health: Arc<ProxyHealth>,
    metrics: Arc<Metrics>,
    last_problems: Problems,
    last_resync: Instant,
    /// Pinned links nobody claimed are removed after the first pass over the interfaces.
    pruned_links: bool,
    /// Where the last pass that took a new view spent its time (logged with the sync).
    last_pass: PassTimes,
    /// What the next sync must write.
    pending: Pending,
}

/// Time spent reading the source (building the model) and computing the desired state.
#[derive(Debug, Default, Clone, Copy)]
struct PassTimes {
    source_ms: f64,
    compute_ms: f64,
}

impl Agent {
    /// Starts the status endpoints and the source, loads the programs (adopting the pinned
    /// maps and links), and rebuilds the reconciler's view from the maps. Must run inside a
    /// multi-threaded tokio runtime (the watches and HTTP servers run on it).
    pub async fn start(mut config: Config) -> anyhow::Result<Agent> {
        let metrics = Arc::new(Metrics::new(config.bpffs.clone()));
        // A change may wait this long for the maps before /healthz fails.
        let health = Arc::new(ProxyHealth::new(
            (2 * config.resync_interval).max(Duration::from_secs(60)),
        ));
        proxy_health::serve(config.status, health.clone(), metrics.clone()).await?;

        let source = match &config.source {
            SourceConfig::Manifests(dir) => {
                if !dir.is_dir() {
                    anyhow::bail!(
                        "--manifests {}: not a directory (create it, or run in a cluster)",
                        dir.display()
                    );
                }
                info!(dir = %dir.display(), "serving Services from manifests");
                Source::Manifests {
                    dir: dir.clone(),
                    last: None,
                    set: ManifestSet::default(),
                }
            }
            SourceConfig::Kubernetes { kubeconfig } => {
                let (client, url) = kubernetes::client(kubeconfig.as_deref()).await?;
                info!(
                    url = %url,
                    "watching Services and EndpointSlices through the Kubernetes API"
                );
                let source = KubeSource::start(client, config.node.node_name.as_deref());
                if config.node.node_name.is_none() {
                    warn!(
                        "no --node-name / NODE_NAME: no endpoint is local, and node addresses come only from --node-ip"
                    );
                } else if config.node.node_ips.is_empty() {
                    config.node.node_ips = wait_for_node_addresses(&source).await?;
                }
                Source::Kubernetes {
                    source,
                    model: Box::default(),
                    last_generation: None,
                    last_node: None,
                }
            }
        };
        config.datapath.masquerade_addr = config.node.node_ips.first().copied();

        let (mut datapath, maps) = Datapath::load(&config.bpffs, &config.datapath)?;
        if let Some(dev) = &config.device {
            let xdp = datapath
                .attach_xdp(dev)
                .with_context(|| format!("--device {dev}"))?;
            let tc = datapath
                .attach_tc(dev)
                .with_context(|| format!("--device {dev}"))?;
            enable_accept_local(&config.proc_sys_net, dev);
            info!(device = %dev, xdp = ?xdp, tc = ?tc, "XDP and TC ingress on the external interface");
        }
        if let Some(cgroup) = &config.cgroup {
            let how = datapath
                .attach_cgroup(cgroup)
                .with_context(|| format!("--cgroup {}", cgroup.display()))?;
            info!(cgroup = %cgroup.display(), how = ?how, "socket load balancing for node processes");
        }
        let reconciler = Reconciler::adopt_with_capacity(&maps, config.datapath.map_sizes.lb)
            .context("reading the pinned maps")?;
        let (frontends, backends) = reconciler.sizes();
        info!(bpffs = %config.bpffs.display(), frontends, backends, "maps ready (pinned state adopted)");
        info!(node = ?config.node, datapath = ?config.datapath, "node facts");
        Ok(Agent {
            config,
            source,
            datapath,
            maps,
            reconciler,
            desired: None,
            health_checks: ServiceHealthServers::new(),
            health,
            metrics,
            last_problems: Problems::default(),
            last_resync: Instant::now(),
            pruned_links: false,
            last_pass: PassTimes::default(),
            pending: Pending::Nothing,
        })
    }

    /// One pass: attach to new pod interfaces, take the source's new view (or all of it
    /// when the resync timer expired), reconcile.
    pub fn tick(&mut self) {
        self.attach_pod_devices();
        if !self.pruned_links {
            self.pruned_links = true;
            for name in self.datapath.prune_unheld_links() {
                info!(link = %name, "removed a pinned link this agent is not configured for");
            }
        }
        let resync_due = self.last_resync.elapsed() >= self.config.resync_interval;
        if resync_due {
            self.last_resync = Instant::now();
        }
        if let Some(kube) = self.source.kube() {
            self.metrics.set_watch_errors(kube.errors());
            if let Some(node) = kube.node() {
                self.health.set_node_eligible(node.eligible);
            }
        }
        let node = self.node_context();
        let polled = Instant::now();
        match self.source.poll(resync_due) {
            Some(view) => {
                let source_ms = polled.elapsed().as_secs_f64() * 1e3;
                let computed = Instant::now();
                let pending = take(
                    view,
                    &node,
                    &mut self.desired,
                    &mut self.last_problems,
                    &self.metrics,
                );
                self.pending = match (std::mem::take(&mut self.pending), pending) {
                    // A partial change on top of a pending full sync is in the full sync.
                    (Pending::All, _) | (_, Pending::All) => Pending::All,
                    (Pending::Frontends(mut a), Pending::Frontends(b)) => {
                        a.extend(b);
                        Pending::Frontends(a)
                    }
                    (Pending::Nothing, p) | (p, Pending::Nothing) => p,
                };
                if let Some(desired) = &self.desired {
                    self.health_checks.update(&desired.health_checks);
                }
                self.last_pass = PassTimes {
                    source_ms,
                    compute_ms: computed.elapsed().as_secs_f64() * 1e3,
                };
            }
            // Nothing new: a resync still rewrites what differs (e.g. an entry removed by
            // hand), once there is a desired state at all.
            None if resync_due && self.desired.is_some() => self.pending = Pending::All,
            None => {}
        }
        if !matches!(self.pending, Pending::Nothing) {
            self.sync();
        }
    }

    /// The node facts for this pass: in Kubernetes mode without --node-ip, the Node
    /// object's current addresses.
    fn node_context(&self) -> NodeContext {
        let mut node = self.config.node.clone();
        if let Some(facts) = self.source.kube().and_then(|k| k.node())
            && !facts.addresses.is_empty()
            && self.config.node.node_ips.is_empty()
        {
            node.node_ips = facts.addresses;
        }
        node
    }

    fn sync(&mut self) {
        let Some(desired) = &self.desired else { return };
        let started = Instant::now();
        let report = match std::mem::take(&mut self.pending) {
            Pending::Nothing => return,
            Pending::All => self.reconciler.sync(desired, &mut self.maps),
            Pending::Frontends(mut list) => {
                list.sort();
                list.dedup();
                self.reconciler.sync_partial(desired, &list, &mut self.maps)
            }
        };
        let took = started.elapsed();
        let errors: Vec<_> = report.errors.iter().map(|(_, e)| e.clone()).collect();
        self.metrics.record_sync(took, &errors);
        if errors.is_empty() {
            self.health.synced();
        } else {
            self.health.sync_failed();
            // Retried as a full sync on the next pass.
            self.pending = Pending::All;
        }
        for (frontend, error) in &report.errors {
            match frontend {
                Some(f) => warn!(frontend = %f, error = %error, "map write failed; will retry"),
                None => warn!(error = %error, "map write failed; will retry"),
            }
        }
        if report.changed() {
            info!(
                frontends = desired.frontends.len(),
                backends_added = report.backends_added,
                backends_removed = report.backends_removed,
                frontends_written = report.frontends_written,
                frontends_removed = report.frontends_removed,
                slots_written = report.slots_written,
                slots_removed = report.slots_removed,
                source_ms = self.last_pass.source_ms,
                compute_ms = self.last_pass.compute_ms,
                took_ms = took.as_secs_f64() * 1e3,
                "synced"
            );
        } else {
            debug!("in sync");
        }
    }

    fn attach_pod_devices(&mut self) {
        let present = interfaces();
        self.datapath.forget_missing(&|i| present.contains(i));
        for iface in present
            .iter()
            .filter(|i| matches_pattern(&self.config.pod_devices, i))
        {
            match self.datapath.attach_tc(iface) {
                Ok(attached) if attached.changed() => {
                    enable_accept_local(&self.config.proc_sys_net, iface);
                    info!(iface = %iface, how = ?attached, "TC ingress on a pod interface");
                }
                Ok(_) => {}
                Err(e) => warn!(iface = %iface, error = %e, "cannot attach to pod interface"),
            }
        }
    }

    pub fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }

    /// Resolves when the source has news (Kubernetes mode); never in manifest mode, which
    /// is polled.
    pub async fn source_changed(&self) {
        match self.source.kube() {
            Some(k) => k.changed().await,
            None => std::future::pending().await,
        }
    }
}

/// Brings the desired state up to date with `view` (from scratch, or only the changed
/// Services' endpoints) and says what the next sync must write.
fn take(
    view: View<'_>,
    node: &NodeContext,
    desired: &mut Option<DesiredState>,
    last_problems: &mut Problems,
    metrics: &Metrics,
) -> Pending {
    let (pending, problems) = match (view.change, desired.as_mut()) {
        (Change::Endpoints(services), Some(state)) => {
            let changed = desired::update_endpoints(state, view.cluster, node, &services);
            let pending = if changed.is_empty() {
                Pending::Nothing
            } else {
                Pending::Frontends(changed)
            };
            // Endpoint changes leave the compute problems (conflicts) as they were.
            let problems = view
                .problems
                .into_iter()
                .chain(last_problems.compute.iter().cloned())
                .collect::<Vec<_>>();
            (pending, problems)
        }
        _ => {
            let (state, compute_problems) = desired::compute(view.cluster, node);
            last_problems.compute = compute_problems.iter().map(|p| p.to_string()).collect();
            metrics.frontends.set(state.frontends.len() as i64);
            *desired = Some(state);
            let problems = view
                .problems
                .into_iter()
                .chain(last_problems.compute.iter().cloned())
                .collect();
            (Pending::All, problems)
        }
    };
    if problems != last_problems.all {
        for p in &problems {
            warn!(problem = %p, "skipped invalid input");
        }
        last_problems.all = problems;
    }
    metrics.invalid_objects.set(last_problems.all.len() as i64);
    metrics.services.set(view.cluster.services.len() as i64);
    pending
}

/// The problems last logged: all of them, and those the desired-state computation found.
#[derive(Debug, Default)]
struct Problems {
    all: Vec<String>,
    compute: Vec<String>,
}

/// Waits (for ever, logging every 10 s) for this node's Node object to list its
/// addresses: NodePorts and the masquerade source depend on them. Pinned programs keep
/// serving the old state meanwhile.
async fn wait_for_node_addresses(source: &KubeSource) -> anyhow::Result<Vec<Ipv4Addr>> {
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        if let Some(facts) = source.node()
            && !facts.addresses.is_empty()
        {
            info!(addresses = ?facts.addresses, "node addresses from the Node object");
            return Ok(facts.addresses);
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            warn!(
                waited_s = started.elapsed().as_secs(),
                "waiting for this node's Node object (with an InternalIP address); pass --node-ip to skip"
            );
        }
        tokio::select! {
            _ = source.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = vec!["lxc*".to_string(), "veth0".to_string()];
        assert!(matches_pattern(&p, "lxc-p1"));
        assert!(matches_pattern(&p, "veth0"));
        assert!(!matches_pattern(&p, "veth01"));
        assert!(!matches_pattern(&p, "eth0"));
        assert!(!matches_pattern(&[], "lxc1"));
    }
}
