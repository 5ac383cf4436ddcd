//! kubectl-style selection of Services in a snapshot (`svcctl dump -n NAMESPACE [NAME]`).
use std::collections::BTreeSet;

use super::schema::Snapshot;

/// kubectl-style selection of Services: `-n NAMESPACE` and/or a Service name. A name
/// without a namespace matches that name in every namespace (svcctl shows all namespaces
/// by default, unlike kubectl). And whether expired conntrack and affinity entries are
/// shown: by default they are not (`svcctl dump --show-expired`), and the snapshot counts
/// the ones left out ([`ExpiredHidden`](super::schema::ExpiredHidden)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Keep conntrack and affinity entries the datapath no longer uses (idle past their
    /// timeout; LRU maps keep them until they are evicted or reused).
    pub show_expired: bool,
}

impl Filter {
    /// No namespace or name given: every Service.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.name.is_none()
    }

    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
    }

    /// Keeps the matching Services' frontends (those without a name entry never match),
    /// unserved entries, conntrack and affinity entries (by rev_nat_id) and the backends
    /// they use; then, unless `show_expired`, drops the expired conntrack and affinity
    /// entries of those and counts them in `expired_hidden`. Stats and inconsistencies stay
    /// as they are.
    pub fn apply(&self, snap: &mut Snapshot) {
        let selecting = !self.is_empty();
        if selecting {
            snap.services.retain(|s| {
                s.service
                    .as_ref()
                    .is_some_and(|n| self.matches(&n.namespace, &n.name))
            });
            snap.unserved
                .retain(|u| self.matches(&u.namespace, &u.name));
            let revs: BTreeSet<u32> = snap.services.iter().map(|s| s.rev_nat_id).collect();
            snap.conntrack.retain(|e| revs.contains(&e.rev_nat_id));
            snap.affinity.retain(|a| revs.contains(&a.rev_nat_id));
        }
        if !self.show_expired {
            let before = (snap.conntrack.len(), snap.affinity.len());
            snap.conntrack.retain(|e| !e.expired);
            snap.affinity.retain(|a| !a.expired);
            snap.expired_hidden.conntrack += before.0 - snap.conntrack.len();
            snap.expired_hidden.affinity += before.1 - snap.affinity.len();
        }
        // After the expired entries went: a backend only an expired flow remembers is not
        // one the selected Services use.
        if selecting {
            let used: BTreeSet<u32> = snap
                .services
                .iter()
                .flat_map(|s| s.backends.iter().chain(&s.local_backends))
                .map(|b| b.backend_id)
                .chain(snap.conntrack.iter().map(|e| e.backend_id))
                .chain(snap.affinity.iter().map(|a| a.backend_id))
                .collect();
            snap.backends.retain(|b| used.contains(&b.id));
        }
    }
}
