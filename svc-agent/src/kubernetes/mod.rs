//! Kubernetes mode: watches of the cluster's Services and EndpointSlices, converted object
//! by object into the same model the manifest directory gives (the conversion functions
//! of [`crate::model`] that [`crate::manifest::build`] uses), so both sources share one
//! desired-state computation and one reconciler; and a cache of this node's Node object.
//!
//! kube-runtime's watcher lists first, then watches from the list's resourceVersion,
//! reconnects with backoff when the connection breaks, resumes from the last
//! resourceVersion it saw, and relists when the API server answers 410 Gone. The watch
//! tasks convert each object as it arrives and send the result to the agent ([`ModelEvent`]);
//! the agent keeps no copy of the API's objects, only the [`WatchedCluster`]. A (re)list is collected
//! on the side and swapped in only when it is complete (InitDone), as kube-runtime's
//! reflector does: objects deleted while the connection was down disappear then, and a
//! half-read list is never served. Until both kinds have been listed once
//! ([`WatchedCluster::listed`]) the agent does not touch the maps at all (pruning against a partial
//! view deleted live Services in Cilium #27215).
//!
//! Level-triggered where it matters: a changed or deleted Service, a relist, a change of
//! the node, or the resync timer recompute the whole desired state from the model; an
//! EndpointSlice change recomputes only its Service's endpoint sets (the endpoints never
//! decide which frontends exist), which keeps an endpoint change at 10,000 Services within
//! milliseconds.
//!
//! Last known good: the API server validates what it stores, but not everything this agent
//! needs (and a buggy controller can write what no Kubernetes controller would). A Service
//! or EndpointSlice that was served and whose new version the model rejects keeps its last
//! good version in [`WatchedCluster`], with a [`Problem`] saying "still serving the last good
//! version", until a valid version arrives or the object is deleted; so does an
//! EndpointSlice whose `kubernetes.io/service-name` label changes (the EndpointSlice
//! controller never moves a slice to another Service; following it would hand one
//! Service's endpoints to another). A relist applies the same rule. Only the same object
//! keeps its last good version: one with another uid (deleted and created again while a
//! watch was down) is new, and an object that was never valid serves nothing.
//!
//! What is watched, and why:
//! - Services, every namespace, no label selector: Services that another proxy owns
//!   (`service.kubernetes.io/service-proxy-name`) or that are headless still reach the
//!   model, which skips them with a reason that svcctl shows.
//! - EndpointSlices, every namespace, `!service.kubernetes.io/headless`: a headless
//!   Service's slices (often large, e.g. StatefulSets) are never used.
//! - This node (field selector `metadata.name=NODE_NAME`): its InternalIP addresses when
//!   no `--node-ip` is given, and whether it is being removed (for `/healthz`).
//! - ServiceCIDRs (`networking.k8s.io/v1`, cluster-scoped, GA in Kubernetes 1.33): the
//!   service CIDRs, inside which an address no Service has is dropped (kube-proxy watches
//!   them too). An API server that does not serve the kind (404: before 1.33 without the
//!   beta API) or forbids it (403: RBAC without `servicecidrs`) counts as having none, once,
//!   with a warning, so the agent still programs the maps (with `--service-cluster-ip-range`
//!   as the fallback); the watch keeps retrying and takes the objects when they come.
//! - Legacy Endpoints are not watched: the EndpointSlice mirroring controller turns
//!   hand-made Endpoints into slices, and kube-proxy reads slices only.
pub mod lb_status;
pub mod lease;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
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
    networking::v1::ServiceCIDR,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::{sync::Notify, task::JoinHandle};
use tracing::{info, warn};

use crate::lbipam::{self, Pool, object::LoadBalancerIPPool};
use crate::model::{self, Cluster, EndpointGroup, IpCidr, ObjectRef, Problem};

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
    /// InternalIP addresses of both families, in the order of `status.addresses` (the
    /// first of each family is the node's primary address of that family: the masquerade
    /// source of the family).
    pub addresses: Vec<IpAddr>,
    /// False while the node is being deleted or carries the autoscaler's deletion taint.
    pub eligible: bool,
    /// The `topology.kubernetes.io/zone` label (`None` when absent or empty): the zone
    /// topology hints are matched against, unless `--node-zone` overrides it.
    pub zone: Option<String>,
    /// The CIDRs of `spec.podCIDRs` (or `spec.podCIDR` when that is unset), both
    /// families: this node's pod ranges, what `--detect-local-mode NodeCIDR` tells pods by.
    pub pod_cidrs: Vec<IpCidr>,
}

/// The Node label that names its zone (kube-proxy's `v1.LabelTopologyZone`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

pub fn node_facts(node: &Node) -> NodeFacts {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.trim().parse::<IpAddr>().ok())
        .collect();
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == TO_BE_DELETED_TAINT);
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .filter(|z| !z.is_empty())
        .cloned();
    let spec = node.spec.as_ref();
    let pod_cidrs = spec
        .and_then(|s| s.pod_cidrs.clone())
        .filter(|c| !c.is_empty())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.trim().parse::<IpCidr>().ok())
        .collect();
    NodeFacts {
        addresses,
        eligible: node.metadata.deletion_timestamp.is_none() && !tainted,
        zone,
        pod_cidrs,
    }
}

/// Shared between the watch tasks and the agent.
#[derive(Debug, Default)]
struct WatchState {
    /// Bumped by every watch event.
    generation: AtomicU64,
    /// Watch errors (connection refused, decode errors, 410 Gone...) since start.
    errors: AtomicU64,
    /// Wakes the agent.
    changed: Notify,
}

/// What a watch event did to one kind of object, already converted into the model (the
/// watch task converts each object as it arrives and drops it: the agent keeps no copy of
/// the API's objects, only the model).
#[derive(Debug)]
pub enum Op<T> {
    /// A (re)list starts: what follows until `InitDone` replaces everything.
    Init,
    /// An object of the list.
    InitApply(ObjectRef, T),
    /// The list is complete.
    InitDone,
    /// Added or changed.
    Apply(ObjectRef, T),
    Delete(ObjectRef),
}

/// A Service converted: the model, or why it is not one; and the warnings.
#[derive(Debug, Clone)]
pub struct ServiceItem {
    pub model: Option<model::Service>,
    pub problems: Vec<Problem>,
    /// `metadata.uid`: tells a new object of the same name from a new version of this one.
    pub uid: Option<String>,
}

/// An EndpointSlice converted: the Service it belongs to and its group (None: another
/// address family), or why it is not usable; and the warnings.
#[derive(Debug, Clone)]
pub struct SliceItem {
    pub service: Option<ObjectRef>,
    pub group: Option<Arc<EndpointGroup>>,
    pub problems: Vec<Problem>,
    /// `metadata.uid`, as for [`ServiceItem::uid`].
    pub uid: Option<String>,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation (when the Pod or
    /// Service change that led to this version happened), for kube-proxy's network
    /// programming latency; None when absent or not a timestamp.
    pub trigger_time: Option<std::time::SystemTime>,
}

/// A cluster-scoped object converted (a ServiceCIDR's CIDRs, a pool): its value, or why it
/// is not usable; and the warnings.
#[derive(Debug, Clone)]
pub struct ClusterItem<T> {
    pub value: Option<T>,
    pub problems: Vec<Problem>,
    /// `metadata.uid`, as for [`ServiceItem::uid`].
    pub uid: Option<String>,
}

pub type ServiceCidrItem = ClusterItem<Vec<model::IpCidr>>;
pub type PoolItem = ClusterItem<Pool>;

// A Service event is the large one and the most common at a relist: boxing it would add
// an allocation per Service to save a copy of a few hundred bytes through the channel.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ModelEvent {
    Service(Op<ServiceItem>),
    Slice(Op<SliceItem>),
    ServiceCidr(Op<ServiceCidrItem>),
    LbPool(Op<PoolItem>),
}

fn object_ref<K: Resource>(o: &K) -> ObjectRef {
    ObjectRef::new(
        o.meta().namespace.as_deref().unwrap_or("default"),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// A cluster-scoped object's name (an empty namespace), as the model keeps ServiceCIDRs.
fn cluster_ref<K: Resource>(o: &K) -> ObjectRef {
    ObjectRef::new("", o.meta().name.clone().unwrap_or_default())
}

/// Where a problem found in the API's objects comes from, in [`Problem::source`].
const API_SOURCE: &str = "api";

fn problem(kind: &str, id: &ObjectRef, reason: String) -> Problem {
    Problem {
        source: API_SOURCE.to_string(),
        object: Some(format!("{kind} {id}")),
        reason,
    }
}

/// The manifest path's conversion of a Service.
pub fn convert_service(svc: &Service) -> ServiceItem {
    let id = object_ref(svc);
    let uid = svc.metadata.uid.clone();
    match model::Service::from_k8s(svc) {
        Ok((model, warnings)) => ServiceItem {
            model: Some(model),
            problems: warnings
                .into_iter()
                .map(|w| problem("Service", &id, w))
                .collect(),
            uid,
        },
        Err(e) => ServiceItem {
            model: None,
            problems: vec![problem("Service", &id, e.to_string())],
            uid,
        },
    }
}

/// The annotation the EndpointSlice controller sets to when the change behind a slice's
/// version happened.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The manifest path's conversion of an EndpointSlice.
pub fn convert_slice(slice: &EndpointSlice) -> SliceItem {
    let id = object_ref(slice);
    let uid = slice.metadata.uid.clone();
    let trigger_time = slice
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(std::time::SystemTime::from);
    match model::endpoint_group_from_slice(slice) {
        Ok((service, group, warnings)) => SliceItem {
            service: Some(service),
            group: group.map(Arc::new),
            problems: warnings
                .into_iter()
                .map(|w| problem("EndpointSlice", &id, w))
                .collect(),
            uid,
            trigger_time,
        },
        Err(e) => SliceItem {
            service: None,
            group: None,
            problems: vec![problem("EndpointSlice", &id, e.to_string())],
            uid,
            trigger_time,
        },
    }
}

/// The manifest path's conversion of a ServiceCIDR.
pub fn convert_service_cidr(object: &ServiceCIDR) -> ServiceCidrItem {
    cluster_item(
        "ServiceCIDR",
        object,
        model::service_cidr_from_k8s(object).map(|(_, cidrs, w)| (cidrs, w)),
    )
}

/// The manifest path's conversion of a LoadBalancerIPPool.
pub fn convert_pool(object: &LoadBalancerIPPool) -> PoolItem {
    cluster_item(
        lbipam::object::KIND,
        object,
        lbipam::object::to_pool(object),
    )
}

fn cluster_item<K: Resource, T>(
    kind: &str,
    object: &K,
    converted: Result<(T, Vec<String>), model::InvalidObject>,
) -> ClusterItem<T> {
    let id = cluster_ref(object);
    let uid = object.meta().uid.clone();
    match converted {
        Ok((value, warnings)) => ClusterItem {
            value: Some(value),
            problems: warnings
                .into_iter()
                .map(|w| problem(kind, &id, w))
                .collect(),
            uid,
        },
        Err(e) => ClusterItem {
            value: None,
            problems: vec![problem(kind, &id, e.to_string())],
            uid,
        },
    }
}

/// How a watch treats an API server that cannot list its kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfNotServed {
    /// Retry for ever: nothing is programmed before the kind is listed.
    Wait,
    /// A 404 (the API server does not serve the kind) or 403 (RBAC forbids it) on the
    /// first list counts, once, as an empty list (with a warning), so the agent is not
    /// held up by an optional kind; the watch goes on retrying and its list, when it comes,
    /// replaces the empty one.
    Empty,
}

/// The status code of an error [`IfNotServed::Empty`] takes as "no such objects" (a 403 or
/// 404 answer to the list or the watch), else None.
fn not_served(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            if matches!(status.code, 403 | 404) =>
        {
            Some(status.code)
        }
        _ => None,
    }
}

/// How a watch names, converts and wraps the objects of its kind.
struct Conversion<K, T> {
    id: fn(&K) -> ObjectRef,
    convert: fn(&K) -> T,
    wrap: fn(Op<T>) -> ModelEvent,
}

/// Runs a watcher for `api` on the current tokio runtime, turning every object into a
/// [`ModelEvent`] for the agent with `conversion`. Reconnects for ever (backoff).
fn watch_model<K, T>(
    api: Api<K>,
    config: watcher::Config,
    state: Arc<WatchState>,
    listed: Arc<AtomicBool>,
    events: std::sync::mpsc::Sender<ModelEvent>,
    conversion: Conversion<K, T>,
    if_not_served: IfNotServed,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    T: Send + 'static,
{
    let kind = K::kind(&()).to_string();
    let Conversion { id, convert, wrap } = conversion;
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            let op = match event {
                Ok(event) => {
                    if failing {
                        info!(kind = %kind, "watch is back");
                        failing = false;
                    }
                    match event {
                        watcher::Event::Init => Op::Init,
                        watcher::Event::InitApply(o) => Op::InitApply(id(&o), convert(&o)),
                        watcher::Event::InitDone => Op::InitDone,
                        watcher::Event::Apply(o) => Op::Apply(id(&o), convert(&o)),
                        watcher::Event::Delete(o) => Op::Delete(id(&o)),
                    }
                }
                Err(e) => {
                    state.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(code) = not_served(&e).filter(|_| {
                        if_not_served == IfNotServed::Empty && !listed.load(Ordering::SeqCst)
                    }) {
                        warn!(
                            kind = %kind,
                            code,
                            error = %e,
                            "the API server does not let this agent list this kind: taking it as none (still retrying)"
                        );
                        for op in [Op::Init, Op::InitDone] {
                            if events.send(wrap(op)).is_err() {
                                return;
                            }
                        }
                        listed.store(true, Ordering::SeqCst);
                        state.generation.fetch_add(1, Ordering::SeqCst);
                        state.changed.notify_one();
                        failing = true;
                        continue;
                    }
                    // One line per outage, not per retry: the backoff retries for ever.
                    if !failing {
                        warn!(kind = %kind, error = %e, "watch failed; serving the last state and retrying");
                        failing = true;
                    }
                    continue;
                }
            };
            let done = matches!(op, Op::InitDone);
            if events.send(wrap(op)).is_err() {
                return;
            }
            // Only once the InitDone is in the channel: whoever sees the flag finds the
            // complete list behind it.
            if done {
                if !listed.swap(true, Ordering::SeqCst) {
                    info!(kind = %kind, "initial list complete");
                } else {
                    info!(kind = %kind, "relisted");
                }
            }
            state.generation.fetch_add(1, Ordering::SeqCst);
            state.changed.notify_one();
        }
    })
}

/// This node's Node object, cached (one object): a plain reflector.
struct NodeWatch {
    store: Store<Node>,
    listed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// The cluster seen through watches. Dropping it stops them.
pub struct KubeSource {
    events: std::sync::mpsc::Receiver<ModelEvent>,
    services_listed: Arc<AtomicBool>,
    slices_listed: Arc<AtomicBool>,
    cidrs_listed: Arc<AtomicBool>,
    pools_listed: Arc<AtomicBool>,
    node: Option<NodeWatch>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<WatchState>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(n) = &self.node {
            n.task.abort();
        }
    }
}

impl KubeSource {
    /// Starts the watches (on the current tokio runtime). `node_name`: also watch that Node.
    pub fn start(client: Client, node_name: Option<&str>) -> KubeSource {
        let state = Arc::new(WatchState::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let services_listed = Arc::new(AtomicBool::new(false));
        let slices_listed = Arc::new(AtomicBool::new(false));
        let cidrs_listed = Arc::new(AtomicBool::new(false));
        let pools_listed = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            watch_model(
                Api::<Service>::all(client.clone()),
                watcher::Config::default(),
                state.clone(),
                services_listed.clone(),
                tx.clone(),
                Conversion {
                    id: object_ref,
                    convert: convert_service,
                    wrap: ModelEvent::Service,
                },
                IfNotServed::Wait,
            ),
            watch_model(
                Api::<EndpointSlice>::all(client.clone()),
                watcher::Config::default().labels(&format!("!{HEADLESS_LABEL}")),
                state.clone(),
                slices_listed.clone(),
                tx.clone(),
                Conversion {
                    id: object_ref,
                    convert: convert_slice,
                    wrap: ModelEvent::Slice,
                },
                IfNotServed::Wait,
            ),
            watch_model(
                Api::<ServiceCIDR>::all(client.clone()),
                watcher::Config::default(),
                state.clone(),
                cidrs_listed.clone(),
                tx.clone(),
                Conversion {
                    id: cluster_ref,
                    convert: convert_service_cidr,
                    wrap: ModelEvent::ServiceCidr,
                },
                IfNotServed::Empty,
            ),
            // Without the CustomResourceDefinition (or RBAC for it): no pools.
            watch_model(
                Api::<LoadBalancerIPPool>::all(client.clone()),
                watcher::Config::default(),
                state.clone(),
                pools_listed.clone(),
                tx,
                Conversion {
                    id: cluster_ref,
                    convert: convert_pool,
                    wrap: ModelEvent::LbPool,
                },
                IfNotServed::Empty,
            ),
        ];
        let node = node_name.map(|name| {
            let (store, writer) = reflector::store();
            let listed = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn({
                let (state, listed) = (state.clone(), listed.clone());
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                async move {
                    let stream = watcher(Api::<Node>::all(client), config)
                        .default_backoff()
                        .reflect(writer);
                    futures::pin_mut!(stream);
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(watcher::Event::InitDone) => {
                                if !listed.swap(true, Ordering::SeqCst) {
                                    info!(kind = "Node", "initial list complete");
                                }
                            }
                            Ok(_) => {}
                            Err(_) => {
                                state.errors.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        state.generation.fetch_add(1, Ordering::SeqCst);
                        state.changed.notify_one();
                    }
                }
            });
            NodeWatch {
                store,
                listed,
                task,
            }
        });
        KubeSource {
            events: rx,
            services_listed,
            slices_listed,
            cidrs_listed,
            pools_listed,
            node,
            tasks,
            state,
        }
    }

    /// True once every watch has completed its first list. Before that nothing may be
    /// pruned, so the agent serves what the maps hold.
    pub fn ready(&self) -> bool {
        self.services_listed.load(Ordering::SeqCst)
            && self.slices_listed.load(Ordering::SeqCst)
            && self.cidrs_listed.load(Ordering::SeqCst)
            && self.pools_listed.load(Ordering::SeqCst)
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

    /// This node's facts, once its Node object has been seen.
    pub fn node(&self) -> Option<NodeFacts> {
        let node = self.node.as_ref()?.store.state().into_iter().next()?;
        Some(node_facts(&node))
    }

    /// Applies every event that arrived to `model`.
    pub fn drain_into(&self, model: &mut WatchedCluster) -> Refresh {
        let mut r = Refresh::default();
        while let Ok(e) = self.events.try_recv() {
            model.apply(e, &mut r);
        }
        r
    }
}

/// What applying events changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refresh {
    /// A Service or ServiceCIDR object was added, changed or removed, or a list was
    /// swapped in: everything must be recomputed.
    pub services_changed: bool,
    /// Services whose endpoints (EndpointSlices) changed.
    pub endpoints_changed: std::collections::BTreeSet<ObjectRef>,
    /// Only the problems changed (an update kept its object's last good version).
    pub problems_changed: bool,
    /// Service and EndpointSlice events (not (re)lists) that changed the model, with the
    /// slices' trigger times: kube-proxy's change counters.
    pub changes: crate::metrics::SourceChanges,
}

impl Refresh {
    pub fn is_empty(&self) -> bool {
        !self.services_changed && self.endpoints_changed.is_empty() && !self.problems_changed
    }
}

/// One Service's slices and their groups (None: a slice of another address family), in
/// the order of their names. A sorted vector, not a map: nearly every Service has one
/// slice, and a B-tree node per Service cost 63 MB at 100k Services (heaptrack).
#[derive(Debug, Default)]
struct SliceGroups(Vec<(ObjectRef, Option<Arc<EndpointGroup>>)>);

impl SliceGroups {
    fn insert(&mut self, slice: ObjectRef, group: Option<Arc<EndpointGroup>>) {
        match self.0.binary_search_by(|(id, _)| id.cmp(&slice)) {
            Ok(i) => self.0[i].1 = group,
            Err(i) => self.0.insert(i, (slice, group)),
        }
    }

    fn remove(&mut self, slice: &ObjectRef) -> Option<Option<Arc<EndpointGroup>>> {
        let i = self.0.binary_search_by(|(id, _)| id.cmp(slice)).ok()?;
        Some(self.0.remove(i).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The groups of the slices that have one.
    fn groups(&self) -> impl Iterator<Item = &Arc<EndpointGroup>> {
        self.0.iter().filter_map(|(_, g)| g.as_ref())
    }
}

/// A slice as the model remembers it (its group lives in [`WatchedCluster::groups`]).
#[derive(Debug, Clone, Default)]
struct SliceEntry {
    service: Option<ObjectRef>,
    problems: Vec<Problem>,
    uid: Option<String>,
}

/// A Service as the model remembers it besides its model (in [`WatchedCluster::cluster`]).
#[derive(Debug, Clone, Default)]
struct ServiceEntry {
    problems: Vec<Problem>,
    uid: Option<String>,
}

/// The objects of a rare, small, cluster-scoped kind (ServiceCIDRs, pools) as the model
/// remembers them besides their values (in a map of the [`Cluster`], when usable). Like a
/// Service, one that was served and whose new version cannot be used keeps its last good
/// version (the API server makes a ServiceCIDR's `spec.cidrs` immutable, so there this is
/// for a buggy writer only; a pool is a custom resource the API server barely checks).
/// Any change recomputes everything.
#[derive(Debug)]
struct ClusterKind<T> {
    /// Every object the API holds: its problems and uid.
    entries: HashMap<ObjectRef, (Vec<Problem>, Option<String>)>,
    /// A list in progress.
    listing: Option<Vec<(ObjectRef, ClusterItem<T>)>>,
    /// A complete list has been swapped in.
    listed: bool,
}

impl<T> Default for ClusterKind<T> {
    fn default() -> Self {
        ClusterKind {
            entries: HashMap::new(),
            listing: None,
            listed: false,
        }
    }
}

impl<T: Clone> ClusterKind<T> {
    /// Applies one event to the entries and to `served` (the cluster's map of the kind);
    /// true when `served` or the problems may have changed.
    fn apply(&mut self, op: Op<ClusterItem<T>>, served: &mut BTreeMap<ObjectRef, T>) -> bool {
        match op {
            Op::Init => {
                self.listing = Some(Vec::new());
                false
            }
            Op::InitApply(id, item) => {
                self.listing.get_or_insert_with(Vec::new).push((id, item));
                false
            }
            Op::InitDone => {
                let list = self.listing.take().unwrap_or_default();
                let entries = std::mem::take(&mut self.entries);
                let mut old = std::mem::take(served);
                for (id, item) in list {
                    let last_good = match (&item.value, entries.get(&id)) {
                        (None, Some((_, uid))) if *uid == item.uid => old.remove(&id),
                        _ => None,
                    };
                    self.put(id, item, last_good, served);
                }
                self.listed = true;
                true
            }
            Op::Apply(id, item) => {
                let last_good = match (&item.value, self.entries.get(&id)) {
                    (None, Some((_, uid))) if *uid == item.uid => served.get(&id).cloned(),
                    _ => None,
                };
                self.put(id, item, last_good, served);
                true
            }
            Op::Delete(id) => {
                self.entries.remove(&id);
                served.remove(&id);
                true
            }
        }
    }

    fn put(
        &mut self,
        id: ObjectRef,
        item: ClusterItem<T>,
        last_good: Option<T>,
        served: &mut BTreeMap<ObjectRef, T>,
    ) {
        let ClusterItem {
            value,
            problems,
            uid,
        } = item;
        let problems = match (value, last_good) {
            (Some(v), _) => {
                served.insert(id.clone(), v);
                problems
            }
            (None, Some(v)) => {
                served.insert(id.clone(), v);
                problems.into_iter().map(held).collect()
            }
            (None, None) => {
                served.remove(&id);
                problems
            }
        };
        self.entries.insert(id, (problems, uid));
    }

    /// Some object the API holds is not served (and has no last good version).
    fn withheld(&self, served: &BTreeMap<ObjectRef, T>) -> bool {
        self.entries.len() > served.len()
    }
}

/// What a Problem says of an object that keeps serving its last good version.
fn held(mut p: Problem) -> Problem {
    p.reason = format!("still serving the last good version: {}", p.reason);
    p
}

/// The last good version to keep of a Service whose new version `item` cannot be used:
/// the version served, if there is one and `item` is the same object (same uid; a new
/// object of the same name was created after a deletion the watch did not see).
fn last_good_service(
    entry: Option<&ServiceEntry>,
    served: Option<&model::Service>,
    item: &ServiceItem,
) -> Option<model::Service> {
    match (&item.model, entry) {
        (None, Some(e)) if e.uid == item.uid => served.cloned(),
        _ => None,
    }
}

/// If a slice in use must keep its last good version instead of `item`, the problems to
/// show for it: when `item` cannot be used, or when it names another Service (the
/// EndpointSlice controller never moves a slice between Services: one that does is a
/// buggy writer, and following it would hand one Service's endpoints to another). Only
/// for the same object (same uid).
fn held_slice(old: Option<&SliceEntry>, id: &ObjectRef, item: &SliceItem) -> Option<Vec<Problem>> {
    let old = old.filter(|o| o.uid == item.uid)?;
    let old_service = old.service.as_ref()?;
    match &item.service {
        None => Some(item.problems.iter().cloned().map(held).collect()),
        Some(new) if new != old_service => Some(vec![held(problem(
            "EndpointSlice",
            id,
            format!(
                "its {} label changed from {:?} to {:?}; a slice does not move to another Service (delete it and create a new one)",
                model::SERVICE_NAME_LABEL,
                old_service.name,
                new.name
            ),
        ))]),
        Some(_) => None,
    }
}

/// The model ([`Cluster`]) of the cluster's Services and EndpointSlices, kept up to date
/// event by event. A (re)list is collected on the side and swapped in whole when it is
/// complete (InitDone), as kube-runtime's reflector does, so objects deleted while a watch
/// was down disappear then and a half-read list is never served. Like
/// [`Cluster::assemble`], a Service that has EndpointSlices takes its endpoints from them,
/// in slice namespace/name order.
#[derive(Debug, Default)]
pub struct WatchedCluster {
    cluster: Cluster,
    services: HashMap<ObjectRef, ServiceEntry>,
    slices: HashMap<ObjectRef, SliceEntry>,
    /// Per Service, its slices' groups (None: a slice of another address family).
    groups: BTreeMap<ObjectRef, SliceGroups>,
    service_cidrs: ClusterKind<Vec<model::IpCidr>>,
    lb_pools: ClusterKind<Pool>,
    /// Lists in progress.
    listing_services: Option<Vec<(ObjectRef, ServiceItem)>>,
    listing_slices: Option<Vec<(ObjectRef, SliceItem)>>,
    /// A complete list of each kind has been swapped in.
    services_listed: bool,
    slices_listed: bool,
}

impl WatchedCluster {
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// True once a complete list of Services, of EndpointSlices and of ServiceCIDRs is
    /// in: before that nothing may be computed from the model (it would prune live
    /// Services).
    pub fn listed(&self) -> bool {
        self.services_listed
            && self.slices_listed
            && self.service_cidrs.listed
            && self.lb_pools.listed
    }

    /// True if an object the API holds could not be used and has no last good version
    /// here (this agent never saw it valid): an earlier agent may have served it, so the
    /// agent removes nothing from the maps while this holds and it has not had a view
    /// without it (see the agent).
    ///
    /// Every Service and ServiceCIDR the model serves is one the API holds (they are put
    /// and removed together), so "one without a model" is a difference of counts: this
    /// runs on every change, and looking each of 100k Services up took 80 % of the agent's
    /// time per EndpointSlice change (measured with perf in the 100k programming bench).
    pub fn withheld(&self) -> bool {
        debug_assert!(
            self.cluster
                .services
                .keys()
                .all(|id| self.services.contains_key(id))
                && self
                    .cluster
                    .service_cidrs
                    .keys()
                    .all(|id| self.service_cidrs.entries.contains_key(id)),
            "the model serves an object the API does not hold"
        );
        self.services.len() > self.cluster.services.len()
            || self.service_cidrs.withheld(&self.cluster.service_cidrs)
            || self.slices.values().any(|s| s.service.is_none())
    }

    /// Every problem of the current objects, Services first, each kind in namespace/name
    /// order.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<(u8, &ObjectRef, &Problem)> = self
            .services
            .iter()
            .flat_map(|(id, e)| e.problems.iter().map(move |p| (0, id, p)))
            .chain(
                self.slices
                    .iter()
                    .flat_map(|(id, c)| c.problems.iter().map(move |p| (1, id, p))),
            )
            .chain(
                self.service_cidrs
                    .entries
                    .iter()
                    .flat_map(|(id, (problems, _))| problems.iter().map(move |p| (2, id, p))),
            )
            .chain(
                self.lb_pools
                    .entries
                    .iter()
                    .flat_map(|(id, (problems, _))| problems.iter().map(move |p| (3, id, p))),
            )
            .collect();
        out.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        out.into_iter().map(|(_, _, p)| p.clone()).collect()
    }

    /// Applies one event, noting what it changed in `r`.
    pub fn apply(&mut self, event: ModelEvent, r: &mut Refresh) {
        match event {
            // Rare and small: any change recomputes everything.
            ModelEvent::ServiceCidr(op) => {
                r.services_changed |= self
                    .service_cidrs
                    .apply(op, &mut self.cluster.service_cidrs)
            }
            // Pools decide LoadBalancer addresses (in manifest mode, what the datapath
            // serves): as rare as ServiceCIDRs, and handled alike.
            ModelEvent::LbPool(op) => {
                r.services_changed |= self.lb_pools.apply(op, &mut self.cluster.lb_pools)
            }
            ModelEvent::Service(op) => match op {
                Op::Init => self.listing_services = Some(Vec::new()),
                Op::InitApply(id, item) => self
                    .listing_services
                    .get_or_insert_with(Vec::new)
                    .push((id, item)),
                Op::InitDone => {
                    let list = self.listing_services.take().unwrap_or_default();
                    let entries = std::mem::take(&mut self.services);
                    let mut served = std::mem::take(&mut self.cluster.services);
                    for (id, item) in list {
                        let last_good =
                            last_good_service(entries.get(&id), served.remove(&id).as_ref(), &item);
                        self.put_service(id, item, last_good);
                    }
                    self.services_listed = true;
                    r.services_changed = true;
                }
                Op::Apply(id, item) => {
                    let last_good = last_good_service(
                        self.services.get(&id),
                        self.cluster.services.get(&id),
                        &item,
                    );
                    self.put_service(id, item, last_good);
                    r.services_changed = true;
                    r.changes.services += 1;
                }
                Op::Delete(id) => {
                    self.services.remove(&id);
                    self.cluster.services.remove(&id);
                    r.services_changed = true;
                    r.changes.services += 1;
                }
            },
            ModelEvent::Slice(op) => match op {
                Op::Init => self.listing_slices = Some(Vec::new()),
                Op::InitApply(id, item) => self
                    .listing_slices
                    .get_or_insert_with(Vec::new)
                    .push((id, item)),
                Op::InitDone => {
                    let list = self.listing_slices.take().unwrap_or_default();
                    let old = std::mem::take(&mut self.slices);
                    let mut old_groups = std::mem::take(&mut self.groups);
                    self.cluster.endpoints.clear();
                    let mut touched = std::collections::BTreeSet::new();
                    for (id, item) in list {
                        let item = match (held_slice(old.get(&id), &id, &item), old.get(&id)) {
                            // Its last good version: the old entry's Service and group.
                            (Some(problems), Some(entry)) => {
                                let service = entry.service.clone();
                                let group = service
                                    .as_ref()
                                    .and_then(|s| old_groups.get_mut(s))
                                    .and_then(|g| g.remove(&id))
                                    .flatten();
                                SliceItem {
                                    service,
                                    group,
                                    problems,
                                    uid: item.uid,
                                    trigger_time: item.trigger_time,
                                }
                            }
                            _ => item,
                        };
                        if let Some(svc) = self.put_slice_quiet(id, item) {
                            touched.insert(svc);
                        }
                    }
                    for svc in &touched {
                        self.rebuild_endpoints(svc);
                    }
                    self.slices_listed = true;
                    // A relist may change anything: recompute everything.
                    r.services_changed = true;
                }
                Op::Apply(id, item) => {
                    if let Some(problems) = held_slice(self.slices.get(&id), &id, &item) {
                        // Its Service and group stay as they are: only what it reports
                        // changes.
                        if let Some(entry) = self.slices.get_mut(&id) {
                            entry.problems = problems;
                        }
                        r.problems_changed = true;
                        return;
                    }
                    for svc in self
                        .remove_slice(&id)
                        .into_iter()
                        .chain(item.service.clone())
                    {
                        r.endpoints_changed.insert(svc);
                    }
                    r.changes.endpoints += 1;
                    r.changes.trigger_times.extend(item.trigger_time);
                    if let Some(svc) = self.put_slice_quiet(id, item) {
                        self.rebuild_endpoints(&svc);
                    }
                }
                Op::Delete(id) => {
                    if let Some(svc) = self.remove_slice(&id) {
                        r.endpoints_changed.insert(svc);
                        r.changes.endpoints += 1;
                    }
                }
            },
        }
    }

    /// Records a Service's new version; with `last_good` (its new version cannot be
    /// used, see [`last_good_service`]) that one stays served and the problems say so.
    fn put_service(&mut self, id: ObjectRef, item: ServiceItem, last_good: Option<model::Service>) {
        let ServiceItem {
            model,
            problems,
            uid,
        } = item;
        let problems = match (model, last_good) {
            (Some(m), _) => {
                self.cluster.services.insert(id.clone(), m);
                problems
            }
            (None, Some(m)) => {
                self.cluster.services.insert(id.clone(), m);
                problems.into_iter().map(held).collect()
            }
            (None, None) => {
                self.cluster.services.remove(&id);
                problems
            }
        };
        self.services.insert(id, ServiceEntry { problems, uid });
    }

    /// Records a slice and its group without rebuilding the Service's endpoints; returns
    /// the Service it belongs to.
    fn put_slice_quiet(&mut self, id: ObjectRef, item: SliceItem) -> Option<ObjectRef> {
        let svc = item.service.clone();
        if let Some(s) = &svc {
            self.groups
                .entry(s.clone())
                .or_default()
                .insert(id.clone(), item.group);
        }
        self.slices.insert(
            id,
            SliceEntry {
                service: item.service,
                problems: item.problems,
                uid: item.uid,
            },
        );
        svc
    }

    /// Forgets a slice; returns the Service it belonged to (its endpoints rebuilt).
    fn remove_slice(&mut self, id: &ObjectRef) -> Option<ObjectRef> {
        let svc = self.slices.remove(id)?.service?;
        if let Some(g) = self.groups.get_mut(&svc) {
            g.remove(id);
            if g.is_empty() {
                self.groups.remove(&svc);
            }
        }
        self.rebuild_endpoints(&svc);
        Some(svc)
    }

    fn rebuild_endpoints(&mut self, svc: &ObjectRef) {
        match self.groups.get(svc) {
            Some(groups) => {
                self.cluster
                    .endpoints
                    .insert(svc.clone(), groups.groups().cloned().collect());
            }
            None => {
                self.cluster.endpoints.remove(svc);
            }
        }
    }
}

#[cfg(test)]
mod tests;
