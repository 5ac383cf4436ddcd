//! Kubernetes mode: watch caches (kube-runtime reflectors) of the cluster's Services and
//! EndpointSlices and of this node's Node object, turned into the same model the manifest
//! directory gives ([`manifest::build`]), so both sources share one reconciler.
//!
//! Level-triggered, never event-driven: a watch event only says "something changed"; the
//! agent then recomputes everything from the caches. kube-runtime's watcher lists first,
//! then watches from the list's resourceVersion, reconnects with backoff when the
//! connection breaks, resumes from the last resourceVersion it saw, and relists when the
//! API server answers 410 Gone; the reflector swaps in a relisted set only when the list is
//! complete (InitDone), so objects deleted while the connection was down disappear then,
//! and a half-read list is never served. Until every watch has completed its first list,
//! [`KubeSource::ready`] is false and the agent does not touch the maps at all (pruning
//! against a partial view deleted live Services in Cilium #27215).
//!
//! What is watched, and why:
//! - Services, every namespace, no label selector: Services that another proxy owns
//!   (`service.kubernetes.io/service-proxy-name`) or that are headless still reach the
//!   model, which skips them with a reason that svcctl shows.
//! - EndpointSlices, every namespace, `!service.kubernetes.io/headless`: a headless
//!   Service's slices (often large, e.g. StatefulSets) are never used.
//! - This node (field selector `metadata.name=NODE_NAME`): its InternalIP addresses when
//!   no `--node-ip` is given, and whether it is being removed (for `/healthz`).
//! - Legacy Endpoints are not watched: the EndpointSlice mirroring controller turns
//!   hand-made Endpoints into slices, and kube-proxy reads slices only.
//!
//! The caches drop what the agent never reads (managedFields, annotations) to save memory.
use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::{sync::Notify, task::JoinHandle};
use tracing::{info, warn};

use crate::manifest::{self, K8sObject, ManifestSet, ParsedObject};

/// The label on EndpointSlices of headless Services (kube-proxy filters on it too).
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The taint the cluster autoscaler puts on a node it is about to delete; kube-proxy's
/// `/healthz` then fails so load balancers stop sending new connections to the node.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration found (not in a pod, no KUBECONFIG, no ~/.kube/config): {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("creating the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster and the API server's URL: from `kubeconfig` if given, else
/// inferred the way kubectl and client-go do (in-cluster service account, then KUBECONFIG,
/// then ~/.kube/config).
pub async fn client(kubeconfig: Option<&Path>) -> Result<(Client, String), KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| KubeError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer().await?,
    };
    let url = config.cluster_url.to_string();
    Ok((Client::try_from(config)?, url))
}

/// True if [`client`] without a kubeconfig has something to go on: the in-cluster
/// environment, KUBECONFIG, or ~/.kube/config. Without any, the agent falls back to
/// manifest mode.
pub fn cluster_config_present() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
        || std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".kube/config").is_file())
}

/// What the agent takes from its Node object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// IPv4 InternalIP addresses, in the order of `status.addresses` (the first is the
    /// node's primary address: NodePorts and the masquerade source).
    pub addresses: Vec<Ipv4Addr>,
    /// False while the node is being deleted or carries the autoscaler's deletion taint.
    pub eligible: bool,
}

pub fn node_facts(node: &Node) -> NodeFacts {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.trim().parse::<Ipv4Addr>().ok())
        .collect();
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == TO_BE_DELETED_TAINT);
    NodeFacts {
        addresses,
        eligible: node.metadata.deletion_timestamp.is_none() && !tainted,
    }
}

/// Shared between the watch tasks and the agent.
#[derive(Debug, Default)]
struct WatchState {
    /// Bumped by every watch event: the agent recomputes when it moved.
    generation: AtomicU64,
    /// Watch errors (connection refused, decode errors, 410 Gone...) since start.
    errors: AtomicU64,
    /// Wakes the agent.
    changed: Notify,
}

/// One watched resource: its cache and whether its first list completed.
struct Watched<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    listed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl<K: Resource + 'static> Drop for Watched<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a reflector for `api` on the current tokio runtime.
fn watch<K>(api: Api<K>, config: watcher::Config, state: Arc<WatchState>) -> Watched<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let kind = K::kind(&()).to_string();
    let task = tokio::spawn({
        let listed = listed.clone();
        async move {
            let stream = watcher(api, config)
                .default_backoff()
                .modify(|o: &mut K| {
                    o.managed_fields_mut().clear();
                    o.annotations_mut().clear();
                })
                .reflect(writer);
            futures::pin_mut!(stream);
            let mut failing = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if failing {
                            info!(kind = %kind, "watch is back");
                            failing = false;
                        }
                        if let watcher::Event::InitDone = event {
                            if !listed.swap(true, Ordering::SeqCst) {
                                info!(kind = %kind, "initial list complete");
                            } else {
                                info!(kind = %kind, "relisted");
                            }
                        }
                    }
                    Err(e) => {
                        state.errors.fetch_add(1, Ordering::Relaxed);
                        // One line per outage, not per retry: the backoff retries for ever.
                        if !failing {
                            warn!(kind = %kind, error = %e, "watch failed; serving the last state and retrying");
                            failing = true;
                        }
                        continue;
                    }
                }
                state.generation.fetch_add(1, Ordering::SeqCst);
                state.changed.notify_one();
            }
        }
    });
    Watched {
        store,
        listed,
        task,
    }
}

/// The cluster seen through watches. Dropping it stops them.
pub struct KubeSource {
    services: Watched<Service>,
    slices: Watched<EndpointSlice>,
    node: Option<Watched<Node>>,
    state: Arc<WatchState>,
}

impl KubeSource {
    /// Starts the watches (on the current tokio runtime). `node_name`: also watch that Node.
    pub fn start(client: Client, node_name: Option<&str>) -> KubeSource {
        let state = Arc::new(WatchState::default());
        let services = watch(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            state.clone(),
        );
        let slices = watch(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("!{HEADLESS_LABEL}")),
            state.clone(),
        );
        let node = node_name.map(|name| {
            watch(
                Api::<Node>::all(client),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                state.clone(),
            )
        });
        KubeSource {
            services,
            slices,
            node,
            state,
        }
    }

    /// True once every watch has completed its first list. Before that nothing may be
    /// pruned, so the agent serves what the maps hold.
    pub fn ready(&self) -> bool {
        self.services.listed.load(Ordering::SeqCst)
            && self.slices.listed.load(Ordering::SeqCst)
            && self
                .node
                .as_ref()
                .is_none_or(|n| n.listed.load(Ordering::SeqCst))
    }

    /// Moves on every watch event.
    pub fn generation(&self) -> u64 {
        self.state.generation.load(Ordering::SeqCst)
    }

    /// Watch errors since start.
    pub fn errors(&self) -> u64 {
        self.state.errors.load(Ordering::Relaxed)
    }

    /// Resolves when a watch event arrives (maybe one already waiting).
    pub async fn changed(&self) {
        self.state.changed.notified().await
    }

    /// The model of what the caches hold now, through the manifest path's conversion
    /// (problems name the object; their source is `api`).
    pub fn snapshot(&self) -> ManifestSet {
        let mut services = self.services.store.state();
        services.sort_by_key(|s| (s.namespace(), s.name_any()));
        let mut slices = self.slices.store.state();
        slices.sort_by_key(|s| (s.namespace(), s.name_any()));
        let item = |object| {
            Ok(ParsedObject {
                source: "api".to_string(),
                object,
            })
        };
        let items = services
            .iter()
            .map(|s| item(K8sObject::Service(Box::new(Service::clone(s)))))
            .chain(
                slices
                    .iter()
                    .map(|s| item(K8sObject::EndpointSlice(Box::new(EndpointSlice::clone(s))))),
            )
            .collect();
        manifest::build(items)
    }

    /// This node's facts, once its Node object has been seen.
    pub fn node(&self) -> Option<NodeFacts> {
        let node = self.node.as_ref()?.store.state().into_iter().next()?;
        Some(node_facts(&node))
    }

    /// Objects in the caches (Services, EndpointSlices).
    pub fn sizes(&self) -> (usize, usize) {
        (self.services.store.len(), self.slices.store.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus, Taint};

    fn node(addresses: &[(&str, &str)], taints: &[&str]) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|k| Taint {
                            key: k.to_string(),
                            effect: "NoSchedule".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn node_facts_take_ipv4_internal_addresses_in_order() {
        let n = node(
            &[
                ("Hostname", "node1"),
                ("ExternalIP", "203.0.113.7"),
                ("InternalIP", "fd00::1"),
                ("InternalIP", "192.0.2.1"),
                ("InternalIP", "10.0.0.1"),
            ],
            &[],
        );
        let facts = node_facts(&n);
        assert_eq!(
            facts.addresses,
            vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert!(facts.eligible);
    }

    #[test]
    fn a_node_being_removed_is_not_eligible() {
        assert!(!node_facts(&node(&[], &[TO_BE_DELETED_TAINT])).eligible);
        let mut n = node(&[], &[]);
        n.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Default::default(),
        ));
        assert!(!node_facts(&n).eligible);
    }
}
