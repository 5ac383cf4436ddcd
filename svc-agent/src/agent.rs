//! The agent's main loop in manifest mode: watch the manifest directory and the node's
//! interfaces, recompute the desired state when the manifests change, reconcile it into
//! the maps, and attach the programs to new pod interfaces. Level-triggered: every pass
//! computes the whole desired state, and a full resync runs on a timer even when nothing
//! seems to have changed.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use tracing::{debug, info, warn};

use crate::{
    dataplane::{Datapath, DatapathConfig, Maps},
    desired::{self, DesiredState, NodeContext},
    health::HealthServers,
    manifest,
    reconcile::Reconciler,
};

/// Where the programs go and what the agent reads; filled from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub manifests: PathBuf,
    pub bpffs: PathBuf,
    /// The node's external interface: XDP plus TC ingress.
    pub device: Option<String>,
    /// cgroup v2 directory whose processes get socket-level load balancing (the node's
    /// own traffic to Services); None: node-originated traffic is not translated.
    pub cgroup: Option<PathBuf>,
    /// Pod-facing interfaces: exact names, or prefixes ending in `*`.
    pub pod_devices: Vec<String>,
    /// Node name, addresses and nodePortAddresses: what decides NodePort frontends and
    /// which endpoints are local.
    pub node: NodeContext,
    /// Pod CIDR, masquerade address: the programs' load-time globals.
    pub datapath: DatapathConfig,
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
fn enable_accept_local(iface: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
    if let Err(e) = std::fs::write(&path, "1") {
        warn!(iface = %iface, error = %e, "cannot set accept_local; masqueraded flows through this interface will be dropped");
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

/// Cheap change detection for the manifest directory: names, sizes and modification times.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
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

pub struct Agent {
    config: Config,
    datapath: Datapath,
    maps: Maps,
    reconciler: Reconciler,
    desired: DesiredState,
    /// healthCheckNodePort listeners, kept in line with `desired.health_checks`.
    health: HealthServers,
    last_fingerprint: Option<Vec<(String, u64, Option<SystemTime>)>>,
    last_problems: Vec<String>,
    last_resync: Instant,
}

impl Agent {
    /// Loads the programs (adopting pinned maps), attaches them, and rebuilds the
    /// reconciler's view from the maps.
    pub fn start(config: Config) -> anyhow::Result<Agent> {
        let (mut datapath, maps) = Datapath::load(&config.bpffs, &config.datapath)?;
        if let Some(dev) = &config.device {
            datapath
                .attach_xdp(dev)
                .with_context(|| format!("--device {dev}"))?;
            datapath
                .attach_tc(dev)
                .with_context(|| format!("--device {dev}"))?;
            enable_accept_local(dev);
            info!(device = %dev, "attached XDP and TC ingress to the external interface");
        }
        if let Some(cgroup) = &config.cgroup {
            datapath
                .attach_cgroup(cgroup)
                .with_context(|| format!("--cgroup {}", cgroup.display()))?;
            info!(cgroup = %cgroup.display(), "attached socket load balancing for node processes");
        }
        let reconciler = Reconciler::adopt(&maps).context("reading the pinned maps")?;
        let (frontends, backends) = reconciler.sizes();
        info!(bpffs = %config.bpffs.display(), frontends, backends, "maps ready (pinned state adopted)");
        info!(node = ?config.node, datapath = ?config.datapath, "node facts");
        Ok(Agent {
            config,
            datapath,
            maps,
            reconciler,
            desired: DesiredState::default(),
            health: HealthServers::new(),
            last_fingerprint: None,
            last_problems: Vec::new(),
            last_resync: Instant::now(),
        })
    }

    /// One pass: attach to new pod interfaces, reload manifests if they changed (or the
    /// resync timer expired), reconcile.
    pub fn tick(&mut self) {
        self.attach_pod_devices();
        let fingerprint = fingerprint(&self.config.manifests);
        let resync_due = self.last_resync.elapsed() >= self.config.resync_interval;
        if self.last_fingerprint.as_ref() == Some(&fingerprint) && !resync_due {
            return;
        }
        self.last_fingerprint = Some(fingerprint);
        self.last_resync = Instant::now();
        match manifest::load_dir(&self.config.manifests) {
            Ok(set) => {
                let (desired, compute_problems) = desired::compute(&set.cluster, &self.config.node);
                let problems: Vec<String> = set
                    .problems
                    .iter()
                    .map(|p| p.to_string())
                    .chain(compute_problems.iter().map(|p| p.to_string()))
                    .collect();
                if problems != self.last_problems {
                    for p in &problems {
                        warn!(problem = %p, "skipped invalid input");
                    }
                    self.last_problems = problems;
                }
                self.desired = desired;
            }
            // The directory itself is unreadable: keep serving the last good state.
            Err(e) => warn!(error = %e, "cannot read manifests; keeping the current state"),
        }
        self.health.update(&self.desired.health_checks);
        self.sync();
    }

    fn sync(&mut self) {
        let started = Instant::now();
        let report = self.reconciler.sync(&self.desired, &mut self.maps);
        for (frontend, error) in &report.errors {
            match frontend {
                Some(f) => warn!(frontend = %f, error = %error, "map write failed; will retry"),
                None => warn!(error = %error, "map write failed; will retry"),
            }
        }
        if report.changed() {
            info!(
                frontends = self.desired.frontends.len(),
                backends_added = report.backends_added,
                backends_removed = report.backends_removed,
                frontends_written = report.frontends_written,
                frontends_removed = report.frontends_removed,
                slots_written = report.slots_written,
                slots_removed = report.slots_removed,
                took_ms = started.elapsed().as_secs_f64() * 1e3,
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
                Ok(true) => {
                    enable_accept_local(iface);
                    info!(iface = %iface, "attached TC ingress to pod interface");
                }
                Ok(false) => {}
                Err(e) => warn!(iface = %iface, error = %e, "cannot attach to pod interface"),
            }
        }
    }

    pub fn poll_interval(&self) -> Duration {
        self.config.poll_interval
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
