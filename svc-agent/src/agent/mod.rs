//! The agent's main loop, shaped like a kube-rs controller (controller-rs): every pass
//! observes the source (the manifest directory or the Kubernetes watches) and brings the
//! desired state up to date, runs one reconcile step that writes what is pending to the
//! maps, and hands a step that left writes undone to one error policy, which retries it as
//! a full sync on the next pass. Level-triggered: a change of Services, of the node or a
//! relist recomputes the whole desired state, an endpoint change recomputes only its
//! Services' frontends (endpoints never decide which frontends exist), and a full resync
//! runs on a timer even when nothing seems to have changed.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Config`], [`Agent`]: start-up, the pass, the reconcile step, the error policy |
//! | `source.rs` | the two sources and how their changes are noticed |
//! | `node.rs` | the node's interfaces and their addresses, accept_local, waiting for the Node's addresses |
//! | `local.rs` | detect-local: kube-proxy's modes, the datapath test each comes down to, the pod interfaces |
//! | `lb.rs` | LoadBalancer pools: the plan applied (manifests) or written by the elected agent (Kubernetes), L2 announcements |
//!
//! Start-up order matters for traffic that is already flowing through pinned programs and
//! maps of an earlier agent: the status endpoints come up first (livez answers, healthz says
//! 503), then the source (in Kubernetes mode, this node's addresses come from its Node
//! object when no --node-ip is given), then the new programs are loaded and swapped into the
//! pinned links, and the maps are left exactly as they are until the source has a complete
//! view of the cluster.
mod lb;
mod local;
mod node;
mod source;

pub use lb::LbConfig;
pub use local::{DetectLocalMode, LocalDetection};

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tracing::{debug, info, warn};

use node::{
    device_addresses, enable_accept_local, interfaces, matches_pattern, wait_for_node_addresses,
    wait_for_node_pod_cidrs,
};
use source::{Change, Source, View};

use crate::{
    addr::{Family, Frontend, IpCidr},
    dataplane::{
        BpffsLock, Datapath, DatapathConfig, MapStore, Maps, StoreError, layout, report::chain_text,
    },
    desired::{self, ComputeProblem, DesiredState, Incumbents, NodeContext},
    http::{LbStatus, ProxyHealth, ServiceHealthServers, StatusAddrs, proxy_health},
    kubernetes::{self, KubeSource},
    lbipam::plan,
    logfmt,
    metrics::{Metrics, NoLocalEndpoints, SyncKind},
    model::{ObjectRef, Problem},
    reconcile::{Reconciler, Removals, SyncReport},
};

/// Where the cluster's Services and endpoints come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of manifests (see [`crate::manifest`]).
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
    /// The node's external interfaces: XDP plus TC ingress on each; NodePorts answer on
    /// their addresses too (as --node-port-addresses allows).
    pub devices: Vec<String>,
    /// cgroup v2 directory whose processes get socket-level load balancing (the node's
    /// own traffic to Services); None: node-originated traffic is not translated.
    pub cgroup: Option<PathBuf>,
    /// Pod-facing interfaces: exact names, or prefixes ending in `*`.
    pub pod_devices: Vec<String>,
    /// How new flows from pods are told apart (kube-proxy's detect-local modes).
    pub local: LocalDetection,
    /// Node name, addresses and nodePortAddresses: what decides NodePort frontends and
    /// which endpoints are local. Empty `node_ips` in Kubernetes mode: from the Node object.
    pub node: NodeContext,
    /// Detect-local test, masquerade flags: the programs' load-time globals (the pod CIDRs
    /// and the test come from `local` at start). The masquerade address is the first node
    /// address.
    pub datapath: DatapathConfig,
    /// Where net.* sysctls are written (a host mount of /proc/sys/net in a container).
    pub proc_sys_net: PathBuf,
    pub status: StatusAddrs,
    pub poll_interval: Duration,
    pub resync_interval: Duration,
    /// LoadBalancer address pools and L2 announcements.
    pub lb: LbConfig,
}

/// What the next reconcile step writes.
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

impl Pending {
    /// Both: a partial change on top of a pending full sync is in the full sync.
    fn merge(self, other: Pending) -> Pending {
        match (self, other) {
            (Pending::All, _) | (_, Pending::All) => Pending::All,
            (Pending::Frontends(mut a), Pending::Frontends(b)) => {
                a.extend(b);
                Pending::Frontends(a)
            }
            (Pending::Nothing, p) | (p, Pending::Nothing) => p,
        }
    }
}

/// The problems the input has, as last reported: of the source's objects, and of the
/// desired-state computation (address clashes). Logged when they change, counted in
/// `svc_agent_invalid_objects`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Problems {
    source: Vec<Problem>,
    compute: Vec<ComputeProblem>,
}

impl Problems {
    fn len(&self) -> usize {
        self.source.len() + self.compute.len()
    }

    /// As logged, for svcctl.
    fn texts(&self) -> Vec<String> {
        let source = self.source.iter().map(|p| p.to_string());
        source
            .chain(self.compute.iter().map(|p| p.to_string()))
            .collect()
    }
}

/// A reconcile step that wrote everything it had to.
struct Synced {
    report: SyncReport,
    took: Duration,
    kind: SyncKind,
}

/// A reconcile step that left writes undone (a full map, a failed write): what it did
/// write, and what failed, by frontend.
struct SyncFailed {
    report: Box<SyncReport>,
    took: Duration,
    kind: SyncKind,
}

pub struct Agent {
    config: Config,
    source: Source,
    datapath: Datapath,
    maps: Maps,
    reconciler: Reconciler,
    /// None until the source gave a complete view: nothing is written before.
    desired: Option<DesiredState>,
    /// Who serves each frontend according to the pinned maps at start: the incumbents of
    /// the first desired state (later ones take the previous desired state's owners), so a
    /// restart never moves an address (see `desired::compute_with_incumbents`).
    pinned_incumbents: Incumbents,
    /// healthCheckNodePort listeners, kept in line with `desired.health_checks`.
    service_health: ServiceHealthServers,
    /// What /healthz and /livez answer.
    health: Arc<ProxyHealth>,
    metrics: Arc<Metrics>,
    problems: Problems,
    /// The problems changed since they were last written for svcctl.
    problems_dirty: bool,
    /// The source has given a view in which everything was usable (or had a last good
    /// version). Until then the maps may hold what an earlier agent served from an object
    /// this agent cannot use yet (a file broken at start), so nothing is removed.
    complete_view_seen: bool,
    last_resync: Instant,
    /// Pinned links nobody claimed are removed after the first pass over the interfaces.
    pruned_links: bool,
    /// Where the last pass that took a new view spent its time (logged with the sync).
    last_pass: PassTimes,
    /// What the next reconcile step must write.
    pending: Pending,
    /// The node facts the desired state was last computed with: a change (an address
    /// added to a --device, the Node's addresses) recomputes everything.
    last_node: Option<NodeContext>,
    /// The pod interfaces last written to SVC_POD_IFACES (detect-local by interface).
    pod_ifaces: Option<BTreeSet<u32>>,
    /// The pod CIDRs SVC4_POD_CIDRS and SVC6_POD_CIDRS hold (followed from the Node in
    /// NodeCIDR mode).
    pod_cidrs: Vec<IpCidr>,
    /// LoadBalancer pools and announcements.
    lb: lb::LoadBalancers,
}

/// The facts the node is served with, once at start: names, addresses and lists as text
/// (no Rust debug structs).
fn log_node_facts(config: &Config) {
    let (node, dp) = (&config.node, &config.datapath);
    let masquerade = dp
        .masquerade_addr
        .map(IpAddr::from)
        .into_iter()
        .chain(dp.masquerade_addr6.map(IpAddr::from));
    info!(
        node_name = %node.node_name.as_deref().unwrap_or("(none: no endpoint is local)"),
        node_ips = %logfmt::comma_list(&node.node_ips, "none"),
        zone = %node.zone.as_deref().unwrap_or("(none)"),
        node_port_addresses = %logfmt::comma_list(&node.node_port_addresses, "all"),
        localhost_node_ports = node.localhost_node_ports,
        external_ips = %node.external_ips,
        masquerade = %logfmt::comma_list(masquerade, "none"),
        masquerade_all = dp.masquerade_all,
        masquerade_ports = %format_args!("{}-{}", dp.masquerade_ports.0, dp.masquerade_ports.1),
        detect_local = %config.local.mode,
        pod_cidrs = %logfmt::comma_list(&dp.pod_cidrs, "none"),
        service_cluster_ip_range = %logfmt::comma_list(&node.service_cluster_ip_range, "none"),
        lb_map_size = dp.map_sizes.lb,
        ct_map_size = dp.map_sizes.ct,
        socket_lb_pods = dp.sock_lb_pods,
        "node facts"
    );
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
        // Before anything else (even the status ports): a second agent on the same pins
        // must change nothing. Held by the datapath for the agent's life.
        let lock = BpffsLock::acquire(&config.bpffs)?;
        let metrics = Arc::new(Metrics::new(config.bpffs.clone()));
        // A change may wait this long for the maps before /healthz fails.
        let health = Arc::new(ProxyHealth::new(
            (2 * config.resync_interval).max(Duration::from_secs(60)),
        ));
        let lb_status = Arc::new(LbStatus::default());
        proxy_health::serve(
            config.status,
            health.clone(),
            metrics.clone(),
            lb_status.clone(),
        )
        .await?;
        let mut lb_client = None;

        let node_cidr = config.local.mode == DetectLocalMode::NodeCidr;
        let mut pod_cidrs = config.local.cluster_cidrs.clone();
        let source = match &config.source {
            SourceConfig::Manifests(_) if node_cidr => anyhow::bail!(
                "--detect-local-mode NodeCIDR takes the pod CIDRs from this node's Node object: \
                 it needs the Kubernetes API (not --manifests) and --node-name"
            ),
            SourceConfig::Manifests(dir) => {
                if !dir.is_dir() {
                    anyhow::bail!(
                        "--manifests {}: not a directory (create it, or run in a cluster)",
                        dir.display()
                    );
                }
                info!(dir = %dir.display(), "serving Services from manifests");
                Source::manifests(dir.clone(), config.lb.classless)
            }
            SourceConfig::Kubernetes { kubeconfig } => {
                let (client, url) = kubernetes::client(kubeconfig.as_deref()).await?;
                info!(
                    url = %url,
                    "watching Services, EndpointSlices and ServiceCIDRs through the Kubernetes API"
                );
                if node_cidr && config.node.node_name.is_none() {
                    anyhow::bail!(
                        "--detect-local-mode NodeCIDR takes the pod CIDRs from this node's Node \
                         object: it needs --node-name (or NODE_NAME)"
                    );
                }
                lb_client = Some(client.clone());
                let source = KubeSource::start(client, config.node.node_name.as_deref());
                if config.node.node_name.is_none() {
                    warn!(
                        "no --node-name / NODE_NAME: no endpoint is local, and node addresses come only from --node-ip"
                    );
                } else if config.node.node_ips.is_empty() {
                    config.node.node_ips = wait_for_node_addresses(&source).await;
                }
                if node_cidr {
                    pod_cidrs = wait_for_node_pod_cidrs(&source).await;
                }
                Source::kubernetes(source, config.lb.classless)
            }
        };
        // Each family's masquerade source: the node's first address of it (kube-proxy's
        // node IP of that family's proxier).
        config.datapath.masquerade_addr =
            config.node.primary_ip(Family::V4).and_then(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            });
        config.datapath.masquerade_addr6 =
            config.node.primary_ip(Family::V6).and_then(|ip| match ip {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            });
        config.datapath.detect_local = config.local.datapath_test();
        config.datapath.pod_cidrs = pod_cidrs.clone();

        let (mut datapath, mut maps) = Datapath::load_locked(lock, &config.datapath)?;
        // For svcctl monitor's events (it falls back on the host name).
        if let Err(e) = maps.set_monitor_node(config.node.node_name.as_deref().unwrap_or_default())
        {
            warn!(error = %e, "cannot record the node name for svcctl monitor");
        }
        for dev in &config.devices {
            let xdp = datapath
                .attach_xdp(dev)
                .with_context(|| format!("--device {dev}"))?;
            let tc = datapath
                .attach_tc(dev)
                .with_context(|| format!("--device {dev}"))?;
            enable_accept_local(&config.proc_sys_net, dev);
            info!(device = %dev, xdp = %xdp, tc = %tc, "XDP and TC ingress on an external interface");
        }
        if let Some(cgroup) = &config.cgroup {
            let how = datapath
                .attach_cgroup(cgroup)
                .with_context(|| format!("--cgroup {}", cgroup.display()))?;
            let whose = if config.datapath.sock_lb_pods {
                "the node's processes and pods' (ClusterIP flows that need no packet rule)"
            } else {
                "the node's processes"
            };
            let how = logfmt::comma_list(&how, "none");
            info!(cgroup = %cgroup.display(), how = %how, netns_cookie = config.datapath.host_netns_cookie, "socket load balancing for {whose}");
        }
        let reconciler = Reconciler::adopt_with_capacity(&maps, config.datapath.map_sizes.lb)
            .context("reading the pinned maps")?;
        let (frontends, backends) = reconciler.sizes();
        info!(bpffs = %config.bpffs.display(), frontends, backends, "maps ready (pinned state adopted)");
        let pinned_incumbents = pinned_incumbents(&maps).unwrap_or_else(|e| {
            warn!(error = %e, "cannot read who serves the pinned frontends; address conflicts are decided as on a fresh node");
            Incumbents::default()
        });
        log_node_facts(&config);
        let lb = lb::LoadBalancers::start(
            config.lb.clone(),
            lb_client,
            config.node.node_name.as_deref(),
            lb_status,
            metrics.clone(),
        )?;
        Ok(Agent {
            config,
            source,
            datapath,
            maps,
            reconciler,
            desired: None,
            pinned_incumbents,
            service_health: ServiceHealthServers::new(),
            health,
            metrics,
            problems: Problems::default(),
            problems_dirty: true,
            complete_view_seen: false,
            last_resync: Instant::now(),
            pruned_links: false,
            last_pass: PassTimes::default(),
            pending: Pending::Nothing,
            last_node: None,
            pod_ifaces: None,
            pod_cidrs,
            lb,
        })
    }

    /// One pass: attach to new pod interfaces, observe the source, and run the reconcile
    /// step if anything is pending; a step that left writes undone goes to the error
    /// policy.
    pub fn tick(&mut self) {
        self.attach_pod_devices();
        if !self.pruned_links {
            self.pruned_links = true;
            for name in self.datapath.prune_unheld_links() {
                info!(link = %name, "removed a pinned link this agent is not configured for");
            }
        }
        self.observe();
        // Leases move on their own: the report and metrics follow every pass.
        self.lb.publish();
        // Nothing is written before the source gave a complete view (a desired state).
        let nothing = matches!(self.pending, Pending::Nothing) && !self.problems_dirty;
        if nothing || self.desired.is_none() {
            if nothing && self.desired.is_some() {
                // The changes taken needed no write: the maps already have them.
                self.metrics.changes_programmed();
            }
            return;
        }
        self.metrics.sync_queued();
        match self.reconcile() {
            Ok(synced) => self.synced(synced),
            Err(failed) => self.error_policy(failed),
        }
    }

    /// Takes the source's news (or all of it when the resync timer expired) into the
    /// desired state, and notes what the next reconcile step must write.
    fn observe(&mut self) {
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
        self.follow_node_pod_cidrs();
        // New node facts (an address added to a --device) recompute everything.
        let node_changed = self.last_node.as_ref() != Some(&node);
        let node_eligible = self
            .source
            .kube()
            .and_then(|k| k.node())
            .is_none_or(|n| n.eligible);
        let polled = Instant::now();
        match self.source.poll(resync_due || node_changed) {
            Some(mut view) => {
                self.metrics
                    .changes_taken(&std::mem::take(&mut view.changes));
                // The pools' plan and this node's announcement targets, before the view
                // goes to the desired state.
                let plan = std::mem::take(&mut view.lb_plan);
                let mut targets = if view.cluster.lb_pools.is_empty() {
                    Vec::new()
                } else {
                    plan::announce_targets(view.cluster, node.node_name.as_deref())
                };
                // A node being deleted (or marked for it by the cluster autoscaler) draws
                // no LAN traffic: it stops contending, and another node announces.
                if !node_eligible {
                    for t in &mut targets {
                        t.eligible = false;
                    }
                }
                view.problems.extend(plan.problems.iter().map(|p| Problem {
                    source: "lbipam".into(),
                    object: None,
                    reason: p.to_string(),
                }));
                self.lb.observe(plan, targets);
                self.last_node = Some(node.clone());
                if !view.withheld && !self.complete_view_seen {
                    self.complete_view_seen = true;
                }
                let source_ms = polled.elapsed().as_secs_f64() * 1e3;
                let computed = Instant::now();
                let (pending, problems_changed) = update_desired(
                    view,
                    &node,
                    &self.pinned_incumbents,
                    &mut self.desired,
                    &mut self.problems,
                    &self.metrics,
                );
                self.problems_dirty |= problems_changed;
                if self.desired.is_some() {
                    // Only the first desired state needs them; later ones have the previous.
                    self.pinned_incumbents = Incumbents::default();
                }
                self.pending = std::mem::take(&mut self.pending).merge(pending);
                if let Some(desired) = &self.desired {
                    self.service_health.update(&desired.health_checks);
                }
                self.last_pass = PassTimes {
                    source_ms,
                    compute_ms: computed.elapsed().as_secs_f64() * 1e3,
                };
            }
            // Nothing new: a resync still rewrites what differs, once there is a desired
            // state at all.
            None if resync_due && self.desired.is_some() => self.pending = Pending::All,
            None => {}
        }
    }

    /// The node facts for this pass: in Kubernetes mode, the Node object's current
    /// addresses without --node-ip, and its zone label without --node-zone; then the
    /// addresses of every --device (NodePorts answer on them too, as --node-port-addresses
    /// allows; the first node address of each family stays that family's masquerade
    /// source).
    fn node_context(&self) -> NodeContext {
        let mut node = self.config.node.clone();
        if let Some(facts) = self.source.kube().and_then(|k| k.node()) {
            if !facts.addresses.is_empty() && self.config.node.node_ips.is_empty() {
                node.node_ips = facts.addresses;
            }
            if self.config.node.zone.is_none() {
                node.zone = facts.zone;
            }
        }
        for ip in device_addresses(&self.config.devices) {
            if !node.node_ips.contains(&ip) {
                node.node_ips.push(ip);
            }
        }
        node
    }

    /// NodeCIDR: the Node's podCIDRs as they change (kube-proxy restarts itself on a
    /// change; the map is simply rewritten). An empty list keeps the last one.
    fn follow_node_pod_cidrs(&mut self) {
        if self.config.local.mode != DetectLocalMode::NodeCidr {
            return;
        }
        let Some(facts) = self.source.kube().and_then(|k| k.node()) else {
            return;
        };
        if facts.pod_cidrs.is_empty() || facts.pod_cidrs == self.pod_cidrs {
            return;
        }
        match self.maps.set_pod_cidrs(&facts.pod_cidrs) {
            Ok(_) => {
                info!(pod_cidrs = %logfmt::comma_list(&facts.pod_cidrs, "none"), "pod CIDRs from the Node object changed (NodeCIDR)");
                self.pod_cidrs = facts.pod_cidrs;
            }
            Err(e) => warn!(error = %e, "cannot write the pod CIDRs; will retry"),
        }
    }

    /// The reconcile step: writes what is pending to the maps, in the reconciler's safe
    /// order.
    fn reconcile(&mut self) -> Result<Synced, SyncFailed> {
        let pending = std::mem::take(&mut self.pending);
        let kind = match pending {
            Pending::All => SyncKind::Full,
            Pending::Frontends(_) | Pending::Nothing => SyncKind::Partial,
        };
        let started = Instant::now();
        let report = match (pending, &self.desired) {
            (Pending::Nothing, _) | (_, None) => SyncReport::default(),
            (Pending::All, Some(desired)) => {
                let removals = if self.complete_view_seen {
                    Removals::Prune
                } else {
                    Removals::Keep
                };
                self.reconciler.sync_with(desired, &mut self.maps, removals)
            }
            (Pending::Frontends(mut list), Some(desired)) => {
                list.sort();
                list.dedup();
                self.reconciler.sync_partial(desired, &list, &mut self.maps)
            }
        };
        let mut report = report;
        if self.problems_dirty {
            let written = self
                .reconciler
                .sync_problems(&self.problems.texts(), &mut self.maps);
            self.problems_dirty = !written.errors.is_empty();
            report.problems_written = written.problems_written;
            report.problems_removed = written.problems_removed;
            report.errors.extend(written.errors);
        }
        let took = started.elapsed();
        if report.errors.is_empty() {
            Ok(Synced { report, took, kind })
        } else {
            Err(SyncFailed {
                report: Box::new(report),
                took,
                kind,
            })
        }
    }

    /// A step that wrote everything: healthy, and what it changed logged.
    fn synced(&mut self, Synced { report, took, kind }: Synced) {
        self.metrics.record_sync(took, kind, &[]);
        self.health.synced();
        self.log_sync(&report, took);
    }

    /// The one error policy: every failed write is counted by map and kind
    /// (`svc_agent_map_full_errors_total`, `svc_agent_map_write_errors_total`) and logged
    /// with its frontend; the health clock runs from the first failure (/healthz and
    /// /livez fail once it has run too long); and the whole desired state is written again
    /// on the next pass (a frontend whose write failed kept its previous entries).
    fn error_policy(&mut self, SyncFailed { report, took, kind }: SyncFailed) {
        let errors: Vec<StoreError> = report.errors.iter().map(|(_, e)| e.clone()).collect();
        self.metrics.record_sync(took, kind, &errors);
        self.health.sync_failed();
        for (frontend, error) in &report.errors {
            match frontend {
                Some(f) => warn!(frontend = %f, error = %error, "map write failed; will retry"),
                None => warn!(error = %error, "map write failed; will retry"),
            }
        }
        self.pending = std::mem::take(&mut self.pending).merge(Pending::All);
        self.log_sync(&report, took);
    }

    fn log_sync(&self, report: &SyncReport, took: Duration) {
        if report.frontends_kept > 0 {
            warn!(
                kept = report.frontends_kept,
                "not removing frontends the source does not have: an object could not be used and this agent has no last good version of it (an earlier agent may have served it); removals resume once every object is usable"
            );
        }
        if report.changed() {
            info!(
                frontends = self.desired.as_ref().map_or(0, |d| d.frontends.len()),
                backends_added = report.backends_added,
                backends_removed = report.backends_removed,
                frontends_written = report.frontends_written,
                frontends_removed = report.frontends_removed,
                slots_written = report.slots_written,
                slots_removed = report.slots_removed,
                cluster_ips_written = report.cluster_ips_written,
                cluster_ips_removed = report.cluster_ips_removed,
                cidrs_written = report.cidrs_written,
                cidrs_removed = report.cidrs_removed,
                source_ms = logfmt::ms(self.last_pass.source_ms),
                compute_ms = logfmt::ms(self.last_pass.compute_ms),
                took_ms = logfmt::ms(took.as_secs_f64() * 1e3),
                services = %logfmt::cut_list(report.services.iter(), logfmt::SERVICES_SHOWN, "none"),
                "synced"
            );
        } else {
            debug!("in sync");
        }
    }

    /// TC ingress on every pod interface present (the --pod-device patterns, plus the
    /// detect-local mode's prefix or bridge); with detect-local by interface, their
    /// ifindexes in SVC_POD_IFACES.
    fn attach_pod_devices(&mut self) {
        let present = interfaces();
        self.datapath.forget_missing(&|i| present.contains_key(i));
        let mut patterns = self.config.pod_devices.clone();
        patterns.extend(self.config.local.extra_pod_patterns());
        for iface in present.keys().filter(|i| {
            matches_pattern(&patterns, i) && !self.config.devices.iter().any(|d| d == *i)
        }) {
            match self.datapath.attach_tc(iface) {
                Ok(attached) if attached.changed() => {
                    enable_accept_local(&self.config.proc_sys_net, iface);
                    info!(iface = %iface, how = %attached, "TC ingress on a pod interface");
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(iface = %iface, error = %chain_text(&e), "cannot attach to pod interface")
                }
            }
        }
        if self.config.local.by_interface() {
            let pods = local::pod_ifindexes(&present, &patterns, &self.config.devices);
            if self.pod_ifaces.as_ref() != Some(&pods) {
                match self.maps.set_pod_ifaces(&pods) {
                    Ok(_) => {
                        debug!(ifindexes = ?pods, "pod interfaces (detect-local by interface)");
                        self.pod_ifaces = Some(pods);
                    }
                    Err(e) => warn!(error = %e, "cannot write the pod interfaces; will retry"),
                }
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

/// Who serves each frontend according to the pinned maps (an earlier agent's work): each
/// frontend entry (slot 0 of scope all) with the Service SVC_NAMES names for its rev-NAT
/// id. A frontend without a name entry (the agent stopped between the two writes) has no
/// incumbent.
fn pinned_incumbents(maps: &impl MapStore) -> Result<Incumbents, StoreError> {
    let names: std::collections::BTreeMap<u32, ObjectRef> = maps
        .read_names()?
        .into_iter()
        .filter(|(key, _)| !layout::is_unserved_key(*key))
        .map(|(key, name)| (key, ObjectRef::new(name.namespace(), name.name())))
        .collect();
    let services = maps
        .read_services()?
        .into_iter()
        .map(|(k, v)| (layout::ServiceKey::V4(k), v))
        .chain(
            maps.read_services6()?
                .into_iter()
                .map(|(k, v)| (layout::ServiceKey::V6(k), v)),
        );
    Ok(services
        .filter(|(key, _)| key.slot() == 0 && key.scope() == svc_common::Scope::All.raw())
        .filter_map(|(key, value)| {
            let owner = names.get(&value.rev_nat_id)?;
            Some((key.frontend()?, owner.clone()))
        })
        .collect())
}

/// Says which service CIDRs the datapath drops unallocated addresses in, when they change
/// (and at the first computation).
fn log_service_cidrs(before: Option<&DesiredState>, now: &DesiredState) {
    if before.is_some_and(|b| b.service_cidrs == now.service_cidrs) {
        return;
    }
    if now.service_cidrs.cidrs.is_empty() {
        info!(
            service_cidrs = %now.service_cidrs,
            "no service CIDR (no ServiceCIDR object with a CIDR, no --service-cluster-ip-range): packets to addresses no Service has are passed on; a ClusterIP's ports no Service has are rejected"
        );
    } else {
        info!(
            service_cidrs = %now.service_cidrs,
            "service CIDRs: packets to addresses inside them that no Service has are dropped; a ClusterIP's ports no Service has are rejected"
        );
    }
}

/// Brings the desired state up to date with `view` (from scratch, or only the changed
/// Services' endpoints) and says what the next reconcile step must write, and whether the
/// problems changed (they are logged when they do). A full computation keeps served
/// addresses with their owners: the previous desired state's, or before the first one
/// `pinned` (what the maps held at start).
fn update_desired(
    view: View<'_>,
    node: &NodeContext,
    pinned: &Incumbents,
    desired: &mut Option<DesiredState>,
    problems: &mut Problems,
    metrics: &Metrics,
) -> (Pending, bool) {
    let (pending, compute) = match (view.change, desired.as_mut()) {
        (Change::Endpoints(services), Some(state)) => {
            let changed = desired::update_endpoints(state, view.cluster, node, &services);
            let pending = if changed.is_empty() {
                Pending::Nothing
            } else {
                Pending::Frontends(changed)
            };
            // Endpoint changes leave the compute problems (clashes) as they were.
            (pending, problems.compute.clone())
        }
        _ => {
            let incumbents = desired
                .as_ref()
                .map_or_else(|| pinned.clone(), Incumbents::of);
            let (state, compute) =
                desired::compute_with_incumbents(view.cluster, node, &incumbents);
            metrics.frontends.set(state.frontends.len() as i64);
            log_service_cidrs(desired.as_ref(), &state);
            *desired = Some(state);
            (Pending::All, compute)
        }
    };
    let now = Problems {
        source: view.problems,
        compute,
    };
    let changed = now != *problems;
    if changed {
        for p in &now.source {
            // Not always skipped: an object can keep its last good version (the text says).
            warn!(problem = %p, "invalid input");
        }
        for p in &now.compute {
            match &p.conflict {
                Some(c) => warn!(
                    problem = %p,
                    service = %p.service,
                    owner = %c.owner,
                    address = %c.frontend,
                    "address conflict: the owner keeps the address"
                ),
                None => warn!(problem = %p, "skipped invalid input"),
            }
        }
        *problems = now;
    }
    metrics.invalid_objects.set(problems.len() as i64);
    let conflicts = problems.compute.iter().filter(|p| p.conflict.is_some());
    metrics.address_conflicts.set(conflicts.count() as i64);
    metrics.services.set(view.cluster.services.len() as i64);
    if let Some(state) = desired.as_ref() {
        metrics.set_no_local_endpoints(no_local_endpoints(state));
    }
    (pending, changed)
}

/// kube-proxy's `sync_proxy_rules_no_local_endpoints_total`: the Service ports (Service,
/// port name, protocol) with a Local traffic policy, usable endpoints, and none on this node
/// (the datapath drops what that policy covers). Internal: a cluster IP frontend with
/// internalTrafficPolicy Local; external: any other frontend with externalTrafficPolicy
/// Local. A port counts once however many frontends (addresses, families) it has.
fn no_local_endpoints(state: &DesiredState) -> NoLocalEndpoints {
    let mut internal = BTreeSet::new();
    let mut external = BTreeSet::new();
    for (fe, f) in &state.frontends {
        if !f.local_policy || f.backends.is_empty() || !f.local_backends.is_empty() {
            continue;
        }
        let port = (&f.service, f.port_name.as_str(), fe.proto);
        if f.kind == desired::FrontendKind::ClusterIp {
            internal.insert(port);
        } else {
            external.insert(port);
        }
    }
    NoLocalEndpoints {
        internal: internal.len(),
        external: external.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        dataplane::FakeMaps,
        desired::FrontendState,
        model::{ObjectRef, Protocol},
    };

    fn frontend(vip: [u8; 4], port: u16) -> Frontend {
        Frontend {
            vip: Ipv4Addr::from(vip).into(),
            port,
            proto: Protocol::Tcp,
        }
    }

    /// kube-proxy's no_local_endpoints gauge: Service ports (not frontends) with a Local
    /// policy, endpoints, and none here, split by the policy that applies.
    #[test]
    fn no_local_endpoints_counts_service_ports_by_policy() {
        let backend = |n: u8| crate::addr::BackendAddr {
            addr: Ipv4Addr::new(10, 244, 0, n).into(),
            port: 8080,
            proto: Protocol::Tcp,
        };
        let mut state = DesiredState::default();
        let mut add = |fe: Frontend, name: &str, kind, local: bool, here: &[u8]| {
            state.frontends.insert(
                fe,
                FrontendState {
                    service: ObjectRef::new("default", name),
                    port_name: "http".into(),
                    kind,
                    local_policy: local,
                    backends: vec![backend(1), backend(2)],
                    local_backends: here.iter().map(|n| backend(*n)).collect(),
                    ..Default::default()
                },
            );
        };
        use desired::FrontendKind::{ClusterIp, LoadBalancer, NodePort};
        // ITP Local, none here: internal.
        add(frontend([10, 96, 0, 1], 80), "itp", ClusterIp, true, &[]);
        // ETP Local, none here: one external port however many frontends.
        add(frontend([10, 96, 0, 2], 80), "etp", ClusterIp, false, &[]);
        add(frontend([192, 0, 2, 1], 30080), "etp", NodePort, true, &[]);
        add(frontend([192, 0, 2, 2], 30080), "etp", NodePort, true, &[]);
        add(
            frontend([203, 0, 113, 1], 80),
            "etp",
            LoadBalancer,
            true,
            &[],
        );
        // Local with a local endpoint, or Cluster: not counted.
        add(frontend([10, 96, 0, 3], 80), "fine", ClusterIp, true, &[1]);
        add(
            frontend([192, 0, 2, 1], 30081),
            "fine",
            NodePort,
            false,
            &[],
        );
        // Local without any endpoint at all (rejected, not dropped): not counted.
        let mut empty = FrontendState {
            service: ObjectRef::new("default", "empty"),
            local_policy: true,
            ..Default::default()
        };
        empty.kind = ClusterIp;
        state.frontends.insert(frontend([10, 96, 0, 4], 80), empty);
        assert_eq!(
            no_local_endpoints(&state),
            NoLocalEndpoints {
                internal: 1,
                external: 1,
            }
        );
    }

    /// What a synced desired state names as owners is what a restarted agent reads back.
    #[test]
    fn incumbents_survive_a_restart_through_the_pinned_maps() {
        let mut state = DesiredState::default();
        for (fe, ns, name) in [
            (frontend([10, 96, 0, 10], 80), "default", "echo"),
            (frontend([10, 96, 0, 10], 81), "default", "echo"),
            (
                frontend([203, 0, 113, 7], 80),
                "kube-system",
                "a-long-name-of-63-characters-abcdefghijklmnopqrstuvwxyz-0123456",
            ),
        ] {
            state.frontends.insert(
                fe,
                FrontendState {
                    service: ObjectRef::new(ns, name),
                    port_name: "http".into(),
                    ..Default::default()
                },
            );
        }
        state.unserved.push((
            ObjectRef::new("default", "clash"),
            desired::UnservedReason::AddressTaken,
        ));
        let mut maps = FakeMaps::default();
        let mut reconciler = Reconciler::adopt(&maps).unwrap();
        let report = reconciler.sync(&state, &mut maps);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let pinned = pinned_incumbents(&maps).unwrap();
        assert_eq!(pinned, Incumbents::of(&state));
        assert_eq!(pinned.len(), 3);
        // A frontend whose name entry is missing has no incumbent; nothing else is lost.
        let rev = maps
            .names
            .iter()
            .find(|(_, n)| n.name() == "echo")
            .map(|(k, _)| *k)
            .unwrap();
        maps.names.remove(&rev);
        assert_eq!(pinned_incumbents(&maps).unwrap().len(), 2);
        // Nothing pinned: no incumbent.
        assert!(pinned_incumbents(&FakeMaps::default()).unwrap().is_empty());
    }
}
