//! Which node announces each Service's LoadBalancer addresses: one Lease per Service
//! (`svc-l2.<namespace>.<name>`: namespaces hold no dots, so two Services never share
//! one), contended by every node that is eligible for it (any node for
//! externalTrafficPolicy Cluster; only nodes with a ready endpoint of it for Local). The
//! holder answers ARP for the Service's addresses through the [`Responder`]; a node that
//! stops being eligible stops contending and releases the Lease, so another takes it at
//! once; a node whose agent dies stops answering at once (the responder lives in the
//! agent) and the Lease moves when it expires.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::Client;
use tracing::debug;

use super::Responder;
use crate::{
    kubernetes::lease::{HeldLease, LeaseTiming},
    lbipam::plan::{AnnounceTarget, Announcement},
    model::ObjectRef,
};

/// Prefix of the per-Service Leases.
pub const LEASE_PREFIX: &str = "svc-l2.";

/// The Lease name of a Service's announcement.
pub fn lease_name(service: &ObjectRef) -> String {
    format!("{LEASE_PREFIX}{}.{}", service.namespace, service.name)
}

/// One Service this node contends for.
struct Contending {
    lease: HeldLease,
    ips: Vec<Ipv4Addr>,
}

/// What is held, shared with the tasks that follow each Lease.
#[derive(Default)]
struct Shared {
    /// Per Service contended: its addresses, whether this node holds its Lease, and which
    /// contention (a Service dropped and contended again gets a new one: the old Lease's
    /// task must not touch the new entry).
    held: BTreeMap<ObjectRef, (Vec<Ipv4Addr>, bool, u64)>,
    next: u64,
}

pub struct Announcer {
    client: Client,
    namespace: String,
    node: String,
    timing: LeaseTiming,
    responder: Arc<Responder>,
    contending: BTreeMap<ObjectRef, Contending>,
    shared: Arc<Mutex<Shared>>,
    /// The latest targets, for the report.
    targets: Vec<AnnounceTarget>,
}

impl Announcer {
    pub fn new(
        client: Client,
        namespace: &str,
        node: &str,
        timing: LeaseTiming,
        responder: Responder,
    ) -> Announcer {
        Announcer {
            client,
            namespace: namespace.to_string(),
            node: node.to_string(),
            timing,
            responder: Arc::new(responder),
            contending: BTreeMap::new(),
            shared: Arc::default(),
            targets: Vec::new(),
        }
    }

    /// Follows the latest targets: contends for the eligible ones, stops contending (and
    /// releases) for the others.
    pub fn update(&mut self, targets: Vec<AnnounceTarget>) {
        let wanted: BTreeMap<&ObjectRef, &AnnounceTarget> = targets
            .iter()
            .filter(|t| t.eligible)
            .map(|t| (&t.service, t))
            .collect();
        let gone: Vec<ObjectRef> = self
            .contending
            .keys()
            .filter(|s| !wanted.contains_key(s))
            .cloned()
            .collect();
        for s in gone {
            // Dropping the lease releases it.
            self.contending.remove(&s);
            lock(&self.shared).held.remove(&s);
        }
        for (service, t) in wanted {
            match self.contending.get_mut(service) {
                Some(c) if c.ips == t.ips => {}
                Some(c) => {
                    c.ips = t.ips.clone();
                    if let Some(e) = lock(&self.shared).held.get_mut(service) {
                        e.0 = t.ips.clone();
                    }
                }
                None => {
                    let lease = HeldLease::spawn(
                        self.client.clone(),
                        &self.namespace,
                        &lease_name(service),
                        &self.node,
                        self.timing,
                    );
                    let generation = {
                        let mut s = lock(&self.shared);
                        s.next += 1;
                        let g = s.next;
                        s.held.insert(service.clone(), (t.ips.clone(), false, g));
                        g
                    };
                    follow(
                        lease.subscribe(),
                        service.clone(),
                        generation,
                        self.shared.clone(),
                        self.responder.clone(),
                    );
                    self.contending.insert(
                        service.clone(),
                        Contending {
                            lease,
                            ips: t.ips.clone(),
                        },
                    );
                }
            }
        }
        self.targets = targets;
        apply(&self.shared, &self.responder);
    }

    /// The announcements for the report; `holders`: the holder of each Lease, by name.
    pub fn report(&self, holders: &BTreeMap<String, String>) -> Vec<Announcement> {
        self.targets
            .iter()
            .map(|t| Announcement {
                service: t.service.to_string(),
                ips: t.ips.clone(),
                eligible: t.eligible,
                here: self
                    .contending
                    .get(&t.service)
                    .is_some_and(|c| c.lease.is_held()),
                holder: holders.get(&lease_name(&t.service)).cloned(),
            })
            .collect()
    }

    pub fn responder(&self) -> &Responder {
        &self.responder
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The responder answers for exactly the addresses of the Leases held.
fn apply(shared: &Mutex<Shared>, responder: &Responder) {
    let ips: BTreeSet<Ipv4Addr> = lock(shared)
        .held
        .values()
        .filter(|(_, held, _)| *held)
        .flat_map(|(ips, _, _)| ips.iter().copied())
        .collect();
    responder.set_addresses(ips);
}

/// A task that follows one Lease's holding into the responder, until the Lease is dropped.
fn follow(
    mut held: tokio::sync::watch::Receiver<bool>,
    service: ObjectRef,
    generation: u64,
    shared: Arc<Mutex<Shared>>,
    responder: Arc<Responder>,
) {
    tokio::spawn(async move {
        loop {
            let h = *held.borrow_and_update();
            {
                let mut s = lock(&shared);
                match s.held.get_mut(&service) {
                    Some(e) if e.2 == generation => e.1 = h,
                    _ => return,
                }
            }
            debug!(service = %service, held = h, "announcement lease");
            apply(&shared, &responder);
            if held.changed().await.is_err() {
                // The Lease was dropped (no longer contended): not held here.
                if let Some(e) = lock(&shared).held.get_mut(&service)
                    && e.2 == generation
                {
                    e.1 = false;
                }
                apply(&shared, &responder);
                return;
            }
        }
    });
}

/// The Lease names of the Services announced now (by any node), for the garbage collector;
/// `None` until the agent has had a view of the cluster (nothing is removed before).
pub type WantedLeases = Arc<Mutex<Option<BTreeSet<String>>>>;

/// Removes the announcement Leases (`svc-l2.*`) of Services no longer announced, every
/// `period` (the agent: five lease durations, 15 s by default), while
/// `writer` says this agent is the elected one (one agent, not every node, lists and
/// deletes). kube-lease-manager creates a Lease per Service and never deletes one: without
/// this, every LoadBalancer Service ever announced would leave one behind. A Lease deleted
/// while a node still holds it (a Service deleted and created again meanwhile) is only
/// recreated: the holder's renewal fails, it stops answering, and contends again.
pub fn spawn_lease_gc(
    client: Client,
    namespace: &str,
    wanted: WantedLeases,
    writer: tokio::sync::watch::Receiver<bool>,
    period: Duration,
) -> tokio::task::JoinHandle<()> {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client, namespace);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !*writer.borrow() {
                continue;
            }
            let Ok(list) = api.list(&Default::default()).await else {
                continue;
            };
            let stale: Vec<String> = {
                let wanted = wanted.lock().unwrap_or_else(|p| p.into_inner());
                let Some(wanted) = wanted.as_ref() else {
                    continue;
                };
                list.items
                    .into_iter()
                    .filter_map(|l| l.metadata.name)
                    .filter(|n| n.starts_with(LEASE_PREFIX) && !wanted.contains(n))
                    .collect()
            };
            for name in stale {
                match api.delete(&name, &Default::default()).await {
                    Ok(_) => {
                        debug!(lease = %name, "removed the Lease of a Service no longer announced")
                    }
                    Err(e) => debug!(lease = %name, error = %e, "cannot remove a stale Lease"),
                }
            }
        }
    })
}
