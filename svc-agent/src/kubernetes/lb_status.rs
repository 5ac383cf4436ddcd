//! The one writer of LoadBalancer addresses: while this agent holds the IPAM Lease
//! ([`IPAM_LEASE`]), it writes the status writes of the latest plan
//! ([`crate::lbipam::plan`]) through the Services' status subresource. Every agent
//! computes the same plan from the same watches; only the holder writes, so two agents
//! never hand out one address twice, and the assignment lives in the Services' status,
//! where every agent (and a restarted one) reads it back.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use super::lease::{HeldLease, LeaseTiming};
use crate::{lbipam::plan::StatusWrite, model::ObjectRef};

/// The Lease whose holder writes LoadBalancer addresses.
pub const IPAM_LEASE: &str = "svc-agent-lbipam";
/// Field manager of the status writes.
const FIELD_MANAGER: &str = "svc-agent-lbipam";
/// A write already made is not repeated for this long (the watch brings it back first).
const REPEAT_AFTER: Duration = Duration::from_secs(5);
/// Pause before a failed write is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The status writer: a task that follows the plan while the Lease is held.
pub struct StatusWriter {
    lease: HeldLease,
    plan: watch::Sender<Vec<StatusWrite>>,
    writes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StatusWriter {
    pub fn start(client: Client, namespace: &str, identity: &str, timing: LeaseTiming) -> Self {
        let lease = HeldLease::spawn(client.clone(), namespace, IPAM_LEASE, identity, timing);
        let (plan, plan_rx) = watch::channel(Vec::new());
        let writes = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            client,
            lease.subscribe(),
            plan_rx,
            writes.clone(),
            failures.clone(),
        ));
        StatusWriter {
            lease,
            plan,
            writes,
            failures,
            task,
        }
    }

    /// This agent writes (holds the IPAM Lease).
    pub fn is_leader(&self) -> bool {
        self.lease.is_held()
    }

    /// Follows whether this agent writes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.lease.subscribe()
    }

    /// The writes of the latest plan (replaces the previous ones).
    pub fn update(&self, writes: Vec<StatusWrite>) {
        self.plan.send_if_modified(|w| {
            let changed = *w != writes;
            *w = writes;
            changed
        });
    }

    /// Status writes made, and writes that failed, since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// The merge patch that makes a Service's `status.loadBalancer.ingress` exactly `ips`.
pub fn status_patch(ips: &[IpAddr]) -> serde_json::Value {
    if ips.is_empty() {
        return json!({"status": {"loadBalancer": {"ingress": null}}});
    }
    let ingress: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    json!({"status": {"loadBalancer": {"ingress": ingress}}})
}

async fn run(
    client: Client,
    mut held: watch::Receiver<bool>,
    mut plan: watch::Receiver<Vec<StatusWrite>>,
    writes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) {
    let mut done: HashMap<ObjectRef, (Vec<IpAddr>, Instant)> = HashMap::new();
    let mut retry_at: Option<Instant> = None;
    loop {
        let wait_retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = held.changed() => if r.is_err() { return },
            r = plan.changed() => if r.is_err() { return },
            _ = wait_retry => {}
        }
        retry_at = None;
        if !*held.borrow() {
            continue;
        }
        let todo: Vec<StatusWrite> = plan.borrow_and_update().clone();
        for w in todo {
            if let Some((ips, at)) = done.get(&w.service)
                && *ips == w.ips
                && at.elapsed() < REPEAT_AFTER
            {
                // Not back through the watch yet: look again later.
                retry_at.get_or_insert(*at + REPEAT_AFTER);
                continue;
            }
            let api: Api<Service> = Api::namespaced(client.clone(), &w.service.namespace);
            let params = PatchParams::apply(FIELD_MANAGER);
            let params = PatchParams {
                force: false,
                ..params
            };
            match api
                .patch_status(
                    &w.service.name,
                    &params,
                    &Patch::Merge(status_patch(&w.ips)),
                )
                .await
            {
                Ok(_) => {
                    writes.fetch_add(1, Ordering::Relaxed);
                    if w.ips.is_empty() {
                        info!(service = %w.service, "released its LoadBalancer addresses");
                    } else {
                        let ips: Vec<String> = w.ips.iter().map(|ip| ip.to_string()).collect();
                        info!(service = %w.service, addresses = %ips.join(","), "wrote its LoadBalancer addresses");
                    }
                    done.insert(w.service.clone(), (w.ips.clone(), Instant::now()));
                }
                // A Service deleted meanwhile: its address is free anyway.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    warn!(service = %w.service, error = %e, "cannot write the LoadBalancer status; retrying");
                    retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
        done.retain(|_, (_, at)| at.elapsed() < REPEAT_AFTER * 2);
    }
}
