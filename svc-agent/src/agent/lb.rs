//! LoadBalancer addresses on bare metal: what the agent does with the pools' plan
//! ([`crate::lbipam::plan`]) in each mode.
//!
//! - **Manifest mode:** the source applied the plan to the model already (no API to write
//!   status to); here it is only reported. No L2 announcements: electing one announcer
//!   per Service needs the Lease API.
//! - **Kubernetes mode:** the elected agent writes the plan's status writes
//!   ([`StatusWriter`]); every agent reads the addresses back from the Services' status,
//!   like any other LoadBalancer status. With `--l2-announcements`, the [`Announcer`]
//!   contends for each announced Service's Lease and answers ARP for the addresses of the
//!   Leases it holds.
//!
//! What the agent knows is served as JSON at `/loadbalancers` on the metrics address
//! (kube-proxy serves its own state, `/configz` and `/proxyMode`, there too) for `svcctl
//! lb`, and as metrics.
use std::{collections::BTreeMap, sync::Arc};

use kube::{Api, Client};
use tracing::{info, warn};

use crate::{
    http::LbStatus,
    kubernetes::{lb_status::StatusWriter, lease::LeaseTiming},
    l2::{
        L2Error, Responder,
        announcer::{Announcer, WantedLeases, lease_name, spawn_lease_gc},
    },
    lbipam::plan::{AnnounceTarget, L2Report, LbReport, Plan},
    metrics::Metrics,
};

/// The LoadBalancer settings of the command line.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// Class-less LoadBalancer Services get pool addresses (`--lb-ipam-classless`).
    pub classless: bool,
    /// Where the Leases live (`--lease-namespace`).
    pub lease_namespace: String,
    pub lease_timing: LeaseTiming,
    /// Answer ARP for the Services this node is elected for (`--l2-announcements`).
    pub l2_announcements: bool,
    /// The devices facing the LAN (`--l2-device`; default: the `--device`s).
    pub l2_devices: Vec<String>,
}

pub struct LoadBalancers {
    config: LbConfig,
    /// Kubernetes mode: the announcement Leases of the Services announced now, for the
    /// elected agent's garbage collection of the others.
    wanted_leases: Option<(WantedLeases, tokio::task::JoinHandle<()>)>,
    writer: Option<StatusWriter>,
    announcer: Option<Announcer>,
    l2_off: Option<String>,
    node: String,
    plan: Plan,
    status: Arc<LbStatus>,
    metrics: Arc<Metrics>,
    mode: &'static str,
}

impl LoadBalancers {
    /// `client`: Kubernetes mode. Starts the status writer's and announcer's tasks on the
    /// current runtime; an announcer that cannot open its devices is an error (the
    /// operator asked for it).
    pub fn start(
        config: LbConfig,
        client: Option<Client>,
        node_name: Option<&str>,
        status: Arc<LbStatus>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<LoadBalancers> {
        let node = node_name.unwrap_or_default().to_string();
        let mut l2_off = None;
        let mut wanted_leases = None;
        let (writer, announcer, mode) = match client {
            None => {
                if config.l2_announcements {
                    warn!(
                        "--l2-announcements needs the Kubernetes API (a Lease elects the announcer of each Service): not announcing in manifest mode"
                    );
                }
                l2_off = Some("manifest mode: electing an announcer needs the Lease API".into());
                (None, None, "manifests")
            }
            Some(client) => {
                let client_for_gc = client.clone();
                // Without a node name, the writer still needs an identity that differs
                // from every other agent's.
                let identity = node_name.map(str::to_string).unwrap_or_else(|| {
                    let host =
                        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                    format!("svc-agent-{}-{}", host.trim(), std::process::id())
                });
                let writer = StatusWriter::start(
                    client.clone(),
                    &config.lease_namespace,
                    &identity,
                    config.lease_timing,
                );
                let announcer = match (config.l2_announcements, node_name) {
                    (false, _) => {
                        l2_off = Some("--l2-announcements is off".into());
                        None
                    }
                    (true, None) => {
                        warn!(
                            "--l2-announcements needs --node-name (or NODE_NAME): not announcing"
                        );
                        l2_off = Some("no --node-name".into());
                        None
                    }
                    (true, Some(node)) => {
                        let responder = Responder::start(&config.l2_devices).map_err(|e| {
                            let hint = match &e {
                                L2Error::Syscall { source, .. }
                                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                                {
                                    " (answering ARP takes a packet socket: CAP_NET_RAW)"
                                }
                                _ => "",
                            };
                            anyhow::anyhow!("--l2-announcements: {e}{hint}")
                        })?;
                        info!(devices = %config.l2_devices.join(", "), namespace = %config.lease_namespace, "L2 announcements: answering ARP for the LoadBalancer addresses this node is elected for");
                        status.set_leases(Api::namespaced(client.clone(), &config.lease_namespace));
                        Some(Announcer::new(
                            client,
                            &config.lease_namespace,
                            node,
                            config.lease_timing,
                            responder,
                        ))
                    }
                };
                let wanted = WantedLeases::default();
                let gc = spawn_lease_gc(
                    client_for_gc,
                    &config.lease_namespace,
                    wanted.clone(),
                    writer.subscribe(),
                    std::time::Duration::from_secs(5 * config.lease_timing.duration_secs),
                );
                wanted_leases = Some((wanted, gc));
                (Some(writer), announcer, "kubernetes")
            }
        };
        let lb = LoadBalancers {
            config,
            wanted_leases,
            writer,
            announcer,
            l2_off,
            node,
            plan: Plan::default(),
            status,
            metrics,
            mode,
        };
        lb.publish();
        Ok(lb)
    }

    /// A new view: its plan, and the addresses this node may announce.
    pub fn observe(&mut self, plan: Plan, targets: Vec<AnnounceTarget>) {
        if let Some((wanted, _)) = &self.wanted_leases {
            *wanted.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(targets.iter().map(|t| lease_name(&t.service)).collect());
        }
        if let Some(w) = &self.writer {
            w.update(plan.writes.clone());
        }
        if let Some(a) = &mut self.announcer {
            a.update(targets);
        }
        self.plan = plan;
        self.publish();
    }

    /// Brings the report and the metrics up to date (every pass: leases move on their
    /// own).
    pub fn publish(&self) {
        let (status_writes, status_write_failures) =
            self.writer.as_ref().map_or((0, 0), |w| w.counts());
        let l2 = self.announcer.as_ref().map(|a| L2Report {
            node: self.node.clone(),
            devices: self.config.l2_devices.clone(),
            announcements: a.report(&BTreeMap::new()),
            arp_replies: a.responder().replies_sent(),
            gratuitous_arps: a.responder().gratuitous_sent(),
        });
        self.metrics.set_lb(
            &self.plan.pools,
            self.writer.as_ref().map(|w| w.is_leader()),
            l2.as_ref(),
        );
        self.status.set(LbReport {
            mode: self.mode.to_string(),
            classless: self.config.classless,
            writer: self.writer.as_ref().map(|w| w.is_leader()),
            status_writes,
            status_write_failures,
            pools: self.plan.pools.clone(),
            assignments: self.plan.assignments.clone(),
            problems: self.plan.problems.iter().map(|p| p.to_string()).collect(),
            l2,
            l2_off: self.l2_off.clone(),
        });
    }
}

impl Drop for LoadBalancers {
    fn drop(&mut self) {
        if let Some((_, gc)) = &self.wanted_leases {
            gc.abort();
        }
    }
}
