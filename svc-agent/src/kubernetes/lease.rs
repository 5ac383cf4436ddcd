//! Holding a `coordination.k8s.io/v1` Lease: the election of the one agent that writes
//! LoadBalancer addresses into Services' status, and of the one node that announces each
//! Service's addresses on the LAN. The protocol (create, take a free or expired lease
//! with Server-Side Apply so that two takers conflict, renew, release) is the crate
//! kube-lease-manager's; this wraps it in a task that says, at every moment, whether this
//! agent may act as the holder.
//!
//! The one thing added: **a holder that cannot renew stops acting at once.**
//! kube-lease-manager keeps its last state through API errors (it retries with backoff),
//! so an agent cut off from the API server would go on announcing while another node,
//! after the lease expired, announces too. Here any error ends the holding on this side
//! immediately (`false`), and the manager is built again after a second: if the lease is
//! still ours, holding resumes; if another agent took it meanwhile, it is theirs.
//!
//! Timing: a holder renews `grace` seconds before its lease expires; a lease that was not
//! renewed is taken over after `duration` seconds plus up to one second (the crate waits a
//! random 0–1 s before taking an expired lease, against two takers at once). The agent's
//! defaults, duration 3 s and grace 1 s, fail over in about 3–4.5 s (goal: under 5 s).
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

/// How long a lease lasts without renewal, and how early the holder renews it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    pub duration_secs: u64,
    pub grace_secs: u64,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration_secs: 3,
            grace_secs: 1,
        }
    }
}

/// Pause after an API error before the manager is built again.
const RETRY: Duration = Duration::from_secs(1);
/// Longest a release may take when contending stops.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Contending for one Lease, in a task. Dropping it stops contending: the lease is
/// released if held (so another agent takes it at once).
pub struct HeldLease {
    held: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HeldLease {
    /// Starts contending for `namespace/name` as `identity` (the node name: an agent that
    /// restarts on the same node is the same holder and keeps what it held).
    pub fn spawn(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> HeldLease {
        let (tx, held) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(contend(
            client,
            namespace.to_string(),
            name.to_string(),
            identity.to_string(),
            timing,
            tx,
            stop_rx,
        ));
        HeldLease {
            held,
            stop: Some(stop),
            task,
        }
    }

    /// Whether this agent holds the lease now.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// A receiver that changes when holding starts or stops.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        // The task releases the lease and ends; it is not aborted (the release is bounded).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.task.is_finished() {
            debug!("lease task already ended");
        }
    }
}

async fn contend(
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    timing: LeaseTiming,
    held: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let set = |h: bool| {
        held.send_if_modified(|v| {
            let changed = *v != h;
            *v = h;
            changed
        })
    };
    let mut failing = false;
    loop {
        let built = tokio::select! {
            _ = &mut stop => return,
            b = LeaseManagerBuilder::new(client.clone(), &name)
                .with_namespace(&namespace)
                .with_identity(&identity)
                // Else a random one: name it, for `kubectl get lease -o yaml` readers.
                .with_field_manager(format!("svc-agent/{identity}"))
                .with_duration(timing.duration_secs)
                .with_grace(timing.grace_secs)
                .build() => b,
        };
        match built {
            Ok(manager) => loop {
                tokio::select! {
                    _ = &mut stop => {
                        if *held.borrow() {
                            match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
                                Ok(Ok(())) => info!(lease = %name, "released"),
                                Ok(Err(e)) => warn!(lease = %name, error = %e, "cannot release; it expires on its own"),
                                Err(_) => warn!(lease = %name, "release timed out; it expires on its own"),
                            }
                        }
                        set(false);
                        return;
                    }
                    r = manager.changed() => match r {
                        Ok(h) => {
                            failing = false;
                            if set(h) {
                                if h {
                                    info!(lease = %name, "holding the lease");
                                } else {
                                    info!(lease = %name, "another agent holds the lease");
                                }
                            }
                        }
                        Err(e) => {
                            if set(false) {
                                warn!(lease = %name, error = %e, "cannot renew the lease: no longer acting as its holder");
                            } else if !failing {
                                warn!(lease = %name, error = %e, "lease API error; retrying");
                            }
                            failing = true;
                            break;
                        }
                    }
                }
            },
            Err(e) => {
                set(false);
                if !failing {
                    warn!(lease = %name, error = %e, "cannot read or create the lease; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
