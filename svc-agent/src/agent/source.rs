//! Where the loop reads the cluster from, and what it remembers to tell whether it changed:
//! the manifest directory (polled: names, sizes, modification times) or the Kubernetes
//! watches (a generation that moves on every event). Each gives a [`View`]: the model, the
//! problems its objects have, and whether everything or only some Services' endpoints
//! changed. Both remember the last good version of what they serve: the manifest source in
//! its [`LastGood`] (a file that stops parsing keeps serving what it held), the watches in
//! [`WatchedCluster`].
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::SystemTime,
};

use tracing::warn;

use crate::{
    kubernetes::{KubeSource, NodeFacts, WatchedCluster},
    lbipam::plan::{self, Plan},
    manifest::{self, LastGood, ManifestSet},
    model::{Cluster, ObjectRef, Problem},
};

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
pub enum Source {
    Manifests {
        dir: PathBuf,
        last: Option<Fingerprint>,
        /// What the files served at their last good reads (see [`crate::manifest`]).
        last_good: LastGood,
        set: ManifestSet,
        /// Class-less LoadBalancer Services get pool addresses.
        classless: bool,
        /// The addresses the pools gave (no status to keep them in).
        held: plan::Held,
    },
    Kubernetes {
        source: KubeSource,
        cluster: Box<WatchedCluster>,
        last_generation: Option<u64>,
        /// The node facts the last full computation used.
        last_node: Option<NodeFacts>,
        classless: bool,
    },
}

/// What changed since the last view.
pub enum Change {
    /// Anything may have: compute everything.
    All,
    /// Only the endpoints of these Services.
    Endpoints(BTreeSet<ObjectRef>),
}

/// A new view of the cluster: the model, what converting its objects reported, what
/// changed.
pub struct View<'a> {
    pub cluster: &'a Cluster,
    pub problems: Vec<Problem>,
    pub change: Change,
    /// Something could not be used and has no last good version: what the maps hold
    /// beyond this view may be an earlier agent's, still wanted.
    pub withheld: bool,
    /// What the LoadBalancer pools make of this view ([`crate::lbipam::plan`]). In manifest
    /// mode its assignments are already in `cluster` (no API to write status to).
    pub lb_plan: Plan,
    /// The Service and EndpointSlice changes taken from the API in this pass (none in
    /// manifest mode).
    pub changes: crate::metrics::SourceChanges,
}

impl Source {
    pub fn manifests(dir: PathBuf, classless: bool) -> Source {
        Source::Manifests {
            dir,
            last: None,
            last_good: LastGood::default(),
            set: ManifestSet::default(),
            classless,
            held: plan::Held::default(),
        }
    }

    pub fn kubernetes(source: KubeSource, classless: bool) -> Source {
        Source::Kubernetes {
            source,
            cluster: Box::default(),
            last_generation: None,
            last_node: None,
            classless,
        }
    }

    /// The cluster to serve, if it changed since the last call (everything when `force`);
    /// None while there is nothing new, or no complete view yet.
    pub fn poll(&mut self, force: bool) -> Option<View<'_>> {
        match self {
            Source::Manifests {
                dir,
                last,
                last_good,
                set,
                classless,
                held,
            } => {
                let now = fingerprint(dir);
                if last.as_ref() == Some(&now) && !force {
                    return None;
                }
                *last = Some(now);
                match manifest::read_dir(dir) {
                    Ok(reads) => *set = last_good.update(reads, SystemTime::now()),
                    // The directory itself is unreadable: keep serving the last good state.
                    Err(e) => {
                        warn!(error = %e, "cannot read manifests; keeping the current state");
                        return None;
                    }
                }
                // No API to write status to: the pools' addresses go into the model, and
                // are remembered as a status would keep them.
                held.restore(&mut set.cluster, *classless);
                let lb_plan = plan::plan(&set.cluster, *classless);
                plan::apply_to_model(&mut set.cluster, &lb_plan);
                held.remember(&lb_plan);
                Some(View {
                    cluster: &set.cluster,
                    problems: set.problems.clone(),
                    change: Change::All,
                    withheld: set.withheld,
                    lb_plan,
                    changes: Default::default(),
                })
            }
            Source::Kubernetes {
                source,
                cluster,
                last_generation,
                last_node,
                classless,
            } => {
                let generation = source.generation();
                if *last_generation == Some(generation) && !force {
                    return None;
                }
                // The events of this pass (a relist is swapped in only when complete).
                let mut refresh = source.drain_into(cluster);
                if !cluster.listed() || !source.ready() {
                    // Before the first complete view, events make the initial state: they
                    // are not counted as changes.
                    return None;
                }
                let changes = std::mem::take(&mut refresh.changes);
                let first = last_generation.is_none();
                *last_generation = Some(generation);
                let node = source.node();
                let node_changed = node != *last_node;
                let change = if first || force || refresh.services_changed || node_changed {
                    *last_node = node;
                    Change::All
                } else if refresh.endpoints_changed.is_empty() && !refresh.problems_changed {
                    // An event that changed nothing the model holds (a bookmark, a no-op
                    // update).
                    return None;
                } else {
                    // (Only problems changed: an empty set, which recomputes nothing and
                    // passes the problems on.)
                    Change::Endpoints(refresh.endpoints_changed)
                };
                Some(View {
                    cluster: cluster.cluster(),
                    problems: cluster.problems(),
                    change,
                    withheld: cluster.withheld(),
                    lb_plan: plan::plan(cluster.cluster(), *classless),
                    changes,
                })
            }
        }
    }

    pub fn kube(&self) -> Option<&KubeSource> {
        match self {
            Source::Kubernetes { source, .. } => Some(source),
            Source::Manifests { .. } => None,
        }
    }
}
