//! An in-process fake Kubernetes API server for tests: it speaks the real list/watch HTTP
//! protocol and the write verbs (JSON only) well enough that kube-rs (`kube::Client`,
//! kube-runtime's `watcher` and `reflector`, `kube-lease-manager`) works against it
//! unchanged, over plain HTTP without auth.
//!
//! Served resources (`[...]` optional; `{name}/status` is the status subresource):
//!
//! | kind | paths | methods |
//! |---|---|---|
//! | `v1` Service | `/api/v1/services`, `/api/v1/namespaces/{ns}/services[/{name}[/status]]` | all |
//! | `discovery.k8s.io/v1` EndpointSlice | `/apis/discovery.k8s.io/v1/endpointslices`, `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices[/{name}]` | all |
//! | `v1` Node (cluster-scoped) | `/api/v1/nodes[/{name}[/status]]` | all |
//! | `networking.k8s.io/v1` ServiceCIDR (cluster-scoped) | `/apis/networking.k8s.io/v1/servicecidrs[/{name}[/status]]` | all |
//! | `coordination.k8s.io/v1` Lease | `/apis/coordination.k8s.io/v1/leases`, `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]` | all |
//! | `svc-ebpf.dev/v1alpha1` LoadBalancerIPPool (cluster-scoped custom resource) | `/apis/svc-ebpf.dev/v1alpha1/loadbalancerippools[/{name}[/status]]` | all but strategic merge patch (415, as for any custom resource) |
//!
//! Methods: GET (list, watch, get) on collections and objects; POST (create) on a collection
//! (for namespaced kinds, one inside a namespace); PUT (replace), PATCH and DELETE on an
//! object; GET, PUT and PATCH on a status subresource. Anything else on a served path is a
//! 405 with a `Status` body. Any other path is a 404 with a `Status` body, and so is every
//! request for a kind the test stopped serving ([`FakeApiServer::set_served`], an API
//! server that does not know it, e.g. a cluster without the LoadBalancerIPPool CRD).
//!
//! Protocol, as a real API server:
//! - one global `resourceVersion` counter (like etcd's revision), incremented on every change;
//!   every stored object carries `metadata.resourceVersion` (the counter at its last change),
//!   `metadata.uid` (kept across updates, new after delete + create) and
//!   `metadata.creationTimestamp`, and `apiVersion`/`kind` (also inside list items).
//! - LIST returns `{"apiVersion","kind":"<Kind>List","metadata":{"resourceVersion"},"items"}`
//!   sorted by namespace and name. `limit` + `continue` are honoured: a continue token pins the
//!   resourceVersion of the first page, which every later page reports too (so a watch started
//!   from it replays whatever changed during paging); a token older than the history kept is a
//!   410 `Expired`. The list's own `resourceVersion`/`resourceVersionMatch` parameters are
//!   ignored: a list always serves the current state.
//! - `fieldSelector` (`field=value`, `field==value`, `field!=value`, comma-separated; any dotted
//!   path such as `metadata.name`, `metadata.namespace`, `spec.unschedulable`) and
//!   `labelSelector` (`key`, `!key`, `key=value`, `key==value`, `key!=value`,
//!   `key in (a,b)`, `key notin (a,b)`) filter lists and watches. A malformed selector is a 400.
//! - WATCH (`watch=true|1`): a chunked stream of newline-delimited JSON events. With
//!   `resourceVersion` absent or "0" it starts with synthetic ADDED events for the current
//!   objects; otherwise it replays every event of that resource with a newer resourceVersion
//!   from the history, then streams live. A resourceVersion older than the history kept (see
//!   [`FakeApiServer::expire_history`]) gets one `ERROR` event with a 410 `Expired` Status and
//!   the stream ends. An object that starts or stops matching the selectors through a change
//!   is seen as ADDED or DELETED, like the real watch cache does. `sendInitialEvents=true`
//!   (streaming lists) gets the synthetic ADDED events followed by a BOOKMARK annotated
//!   `k8s.io/initial-events-end`. The stream ends after `min(timeoutSeconds, 300)` seconds
//!   (300 when absent). BOOKMARKs are sent on [`FakeApiServer::send_bookmarks`] to watches
//!   that asked for them with `allowWatchBookmarks=true`.
//!
//! Writes over HTTP, as a real API server (each change makes a new resourceVersion and
//! sends ADDED/MODIFIED/DELETED to the watches; a write that changes nothing, field
//! ownership included, makes neither, as on a real server; uid and creationTimestamp are
//! kept across changes; there is no defaulting, validation, generation, finalizer or
//! admission):
//! - POST: create. The name is the body's `metadata.name` (`generateName` is not
//!   supported: 400), the namespace the path's; 409 `AlreadyExists` if it exists. 201 with
//!   the object.
//! - PUT: replace; 404 if missing. A `metadata.resourceVersion` in the body (or in a patch)
//!   is a precondition: 409 `Conflict` when it is not the stored one.
//! - PATCH: `application/merge-patch+json` is RFC 7386 (null removes a key, lists are
//!   replaced whole); `application/strategic-merge-patch+json` is read the same way (no
//!   merge of lists by key; its `$patch`-style directives are a 400);
//!   `application/apply-patch+yaml` is Server-Side Apply (below; the body must be JSON,
//!   which is what kube-rs sends); anything else (JSON patch included) is a 415. PATCH of a
//!   missing object is a 404, except apply, which creates it.
//! - DELETE: 200 with the object's last state, 404 if missing; DeleteOptions are ignored.
//! - Bodies: JSON objects only (400 otherwise, 415 for another content type, 413 over
//!   3 MiB); apiVersion/kind, if given, must be the resource's, name and namespace the
//!   path's (400). Server-set metadata in a body (resourceVersion, uid,
//!   creationTimestamp, managedFields) is ignored.
//! - Status subresource (Service, Node, ServiceCIDR, LoadBalancerIPPool): a PUT or PATCH of
//!   `.../{name}/status` changes only `.status` (all else in the body is ignored) and a GET
//!   returns the object; a write to the object itself keeps the stored `.status` (a create
//!   drops it). [`FakeApiServer::apply`] is not an API write: it stores what it is given.
//!
//! Field ownership and Server-Side Apply: each object has an ownership table,
//! leaf path → set of (manager, operation), emitted as `metadata.managedFields` (FieldsV1,
//! one entry per manager and operation; no times, no subresource) and readable with
//! [`FakeApiServer::field_owners`]. Leaves are the non-object values (a list is one leaf,
//! as for an atomic list); apiVersion, kind, metadata.name/namespace and server-set
//! metadata are not tracked. The manager is the `fieldManager` query parameter, else the
//! User-Agent's product name, else "unknown".
//! - An apply (`fieldManager` required, 400 otherwise) by manager M: its leaves (within the
//!   write's scope: `.status` only on a status path, all but `.status` otherwise for kinds
//!   with a status subresource) are merged into the object. Leaves M applied before and no
//!   longer applies lose M's Apply claim and are removed unless another owner remains.
//!   Then every leaf owned by a manager other than M that the apply touches (same path,
//!   or one inside the other) and whose value it changes is a conflict: 409 `Conflict`
//!   ("Apply failed with 1 conflict: conflict with \"m\": .spec.holderIdentity"), unless
//!   `force=true`. An applied leaf whose value changed is then owned by (M, Apply) alone;
//!   one whose value was already that is shared, (M, Apply) joining its owners. Managers
//!   are told apart by name only: an apply never conflicts with its own manager's updates.
//! - Any other write by M (POST, PUT, merge or strategic PATCH): every leaf it adds or
//!   changes is owned by (M, Update) alone; leaves it leaves as they were keep their owners.
//! - Leaves that disappear (removed by a null, a PUT without them, replaced by an object)
//!   lose their owners. [`FakeApiServer::apply`] takes no ownership: the leaves it changes
//!   or removes lose their owners.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Bound;
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Longest watch the server keeps open, whatever `timeoutSeconds` asks for.
const MAX_WATCH_SECS: u64 = 300;
/// Events kept per resource before the oldest are forgotten (as if compacted).
const MAX_HISTORY: usize = 100_000;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The resources the server stores.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Service,
    EndpointSlice,
    Node,
    ServiceCidr,
    Lease,
    LbIpPool,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::ServiceCidr,
        Kind::Lease,
        Kind::LbIpPool,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::ServiceCidr => "ServiceCIDR",
            Kind::Lease => "Lease",
            Kind::LbIpPool => "LoadBalancerIPPool",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::ServiceCidr => "networking.k8s.io/v1",
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::LbIpPool => "svc-ebpf.dev/v1alpha1",
        }
    }

    /// Path prefix of the kind's group/version.
    fn api_prefix(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "/api/v1",
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1",
            Kind::ServiceCidr => "/apis/networking.k8s.io/v1",
            Kind::Lease => "/apis/coordination.k8s.io/v1",
            Kind::LbIpPool => "/apis/svc-ebpf.dev/v1alpha1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Node => "nodes",
            Kind::ServiceCidr => "servicecidrs",
            Kind::Lease => "leases",
            Kind::LbIpPool => "loadbalancerippools",
        }
    }

    /// "leases.coordination.k8s.io", "services": how the real server names the resource in
    /// its error messages.
    fn resource(self) -> String {
        match self.api_version().split_once('/') {
            Some((group, _)) => format!("{}.{group}", self.plural()),
            None => self.plural().to_string(),
        }
    }

    fn group(self) -> &'static str {
        self.api_version().split_once('/').map_or("", |(g, _)| g)
    }

    fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::ServiceCidr | Kind::LbIpPool)
    }

    /// Kinds with a `/status` subresource: a write there changes only `.status`, and a write
    /// to the object itself keeps the stored `.status` (the real API server's split between
    /// spec writers and status writers).
    fn has_status(self) -> bool {
        matches!(
            self,
            Kind::Service | Kind::Node | Kind::ServiceCidr | Kind::LbIpPool
        )
    }

    /// A custom resource: the real API server refuses strategic merge patches for those.
    fn is_custom(self) -> bool {
        matches!(self, Kind::LbIpPool)
    }

    /// Accepts "Service", "service", "services" and so on.
    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| s.eq_ignore_ascii_case(k.name()) || s.eq_ignore_ascii_case(k.plural()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change in a resource's history.
struct Event {
    rv: u64,
    ty: EventType,
    /// The object after the change (for DELETED: its last state, with the deletion's RV).
    object: Value,
    /// The object before a MODIFIED change.
    prev: Option<Value>,
}

/// (namespace or "", name).
type Key = (String, String);

/// How a manager came to own a field (metadata.managedFields' `operation`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Op {
    Apply,
    Update,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Apply => "Apply",
            Op::Update => "Update",
        }
    }
}

/// An object's field ownership: leaf path (object keys from the root) → its owners, as
/// (manager, operation). See the module docs for the model.
type Owners = BTreeMap<Vec<String>, BTreeSet<(String, Op)>>;

#[derive(Default)]
struct KindState {
    objects: BTreeMap<Key, Value>,
    /// Field ownership of the objects that have any.
    owners: HashMap<Key, Owners>,
    /// Every event with `rv > floor`, oldest first.
    history: VecDeque<Event>,
    floor: u64,
}

struct Watcher {
    kind: Kind,
    path: String,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    uids: u64,
    kinds: HashMap<Kind, KindState>,
    watchers: HashMap<u64, Watcher>,
    next_watcher: u64,
    requests: Vec<String>,
    /// Kinds the test stopped serving: every request for them is a 404.
    unserved: std::collections::HashSet<Kind>,
}

impl State {
    fn kind(&mut self, kind: Kind) -> &mut KindState {
        self.kinds.entry(kind).or_default()
    }

    /// Records an event and sends it to the matching watches.
    fn publish(&mut self, kind: Kind, event: Event) {
        let mut gone = Vec::new();
        for (id, w) in &self.watchers {
            if w.kind != kind {
                continue;
            }
            if let Some(line) = w.filter.event_line(&event)
                && w.tx.send(line).is_err()
            {
                gone.push(*id);
            }
        }
        for id in gone {
            self.watchers.remove(&id);
        }
        let ks = self.kind(kind);
        ks.history.push_back(event);
        while ks.history.len() > MAX_HISTORY {
            if let Some(old) = ks.history.pop_front() {
                ks.floor = old.rv;
            }
        }
    }
}

impl State {
    /// Stores `object` (normalized, see [`normalize`]) at `key` with `owners`: the uid and
    /// creationTimestamp of the stored object are kept (new ones for a new object; a
    /// creationTimestamp in `object` wins), `metadata.managedFields` is rendered from
    /// `owners`, and, unless nothing changed and `skip_noop`, a new resourceVersion is
    /// assigned and ADDED or MODIFIED published. Returns the stored object.
    fn commit(
        &mut self,
        kind: Kind,
        key: Key,
        mut object: Value,
        owners: Owners,
        skip_noop: bool,
    ) -> Value {
        let prev = self.kind(kind).objects.get(&key).cloned();
        let (uid, created) = match &prev {
            Some(p) => (
                p["metadata"]["uid"].clone(),
                p["metadata"]["creationTimestamp"].clone(),
            ),
            None => {
                self.uids += 1;
                (
                    Value::from(format!("00000000-0000-4000-8000-{:012x}", self.uids)),
                    Value::from(rfc3339_now()),
                )
            }
        };
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.insert("uid".into(), uid);
            if !meta.contains_key("creationTimestamp") {
                meta.insert("creationTimestamp".into(), created);
            }
            let managed = managed_fields(kind, &owners);
            if managed.is_empty() {
                meta.remove("managedFields");
            } else {
                meta.insert("managedFields".into(), managed.into());
            }
        }
        if skip_noop && let Some(p) = &prev {
            // As the real API server: a write that changes nothing makes no new
            // resourceVersion and no event (so a controller reacting to its own no-op writes
            // does not loop).
            let mut unchanged = p.clone();
            if let Some(meta) = unchanged["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            if unchanged == object {
                return p.clone();
            }
        }
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let ks = self.kind(kind);
        ks.objects.insert(key.clone(), object.clone());
        if owners.is_empty() {
            ks.owners.remove(&key);
        } else {
            ks.owners.insert(key, owners);
        }
        let ty = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.publish(
            kind,
            Event {
                rv,
                ty,
                object: object.clone(),
                prev,
            },
        );
        object
    }

    /// Deletes the object: watches get DELETED with its last state and a new
    /// resourceVersion, which the returned object carries too.
    fn remove(&mut self, kind: Kind, key: &Key) -> Option<Value> {
        let ks = self.kind(kind);
        let mut object = ks.objects.remove(key)?;
        ks.owners.remove(key);
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        self.publish(
            kind,
            Event {
                rv,
                ty: EventType::Deleted,
                object: object.clone(),
                prev: None,
            },
        );
        Some(object)
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Command {
    SetAvailable(bool, std::sync::mpsc::Sender<anyhow::Result<()>>),
    Shutdown,
}

/// A fake Kubernetes API server on its own thread (with its own single-threaded tokio
/// runtime); see the [module docs](self) for what it serves. All methods are blocking and
/// cheap, usable from plain `#[test]` functions and from async code alike. Dropping it stops
/// the thread and closes every connection.
///
/// ```no_run
/// use svc_lab::fake_apiserver::FakeApiServer;
/// let server = FakeApiServer::start_local()?;
/// server.apply(serde_json::json!({
///     "apiVersion": "v1", "kind": "Service",
///     "metadata": {"name": "web", "namespace": "default"},
///     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
/// }));
/// // kube::Config::new(server.url().parse()?) → kube::Client::try_from(config)
/// server.set_available(false)?; // the agent loses its API server
/// server.delete("Service", Some("default"), "web");
/// server.set_available(true)?; // it resumes its watch and sees the DELETED event
/// # anyhow::Ok(())
/// ```
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Serves on an already-bound listener (so a caller can bind it inside a network
    /// namespace first), on its own thread with its own tokio runtime.
    ///
    /// Call it on the thread that bound the listener: the server thread is started in that
    /// thread's network namespace (recorded from `/proc/thread-self/ns/net`), which is where
    /// [`set_available(true)`](Self::set_available) binds the address again. SO_REUSEADDR is
    /// set on the listener so that the address can be re-bound while closed connections are
    /// still in TIME_WAIT.
    pub fn start(listener: std::net::TcpListener) -> anyhow::Result<FakeApiServer> {
        let addr = listener.local_addr().context("listener address")?;
        set_reuseaddr(&listener).context("SO_REUSEADDR on the listener")?;
        listener
            .set_nonblocking(true)
            .context("making the listener non-blocking")?;
        let netns = std::fs::File::open("/proc/thread-self/ns/net").ok();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-apiserver-{}", addr.port()))
            .spawn(move || {
                let setup = || -> anyhow::Result<_> {
                    if let Some(ns) = &netns {
                        enter_netns(ns)?;
                    }
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building the tokio runtime")?;
                    let listener = {
                        let _guard = rt.enter();
                        tokio::net::TcpListener::from_std(listener)
                            .context("registering the listener")?
                    };
                    Ok((rt, listener))
                };
                let (rt, listener) = match setup() {
                    Ok(v) => {
                        let _ = ready_tx.send(Ok(()));
                        v
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(serve(addr, listener, thread_shared.clone(), rx));
                // Dropping the runtime drops every connection task, closing the sockets.
                drop(rt);
                thread_shared.lock().watchers.clear();
            })
            .context("spawning the server thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the fake API server thread died while starting");
            }
        }
        Ok(FakeApiServer {
            addr,
            shared,
            commands,
            thread: Some(thread),
        })
    }

    /// Convenience: binds 127.0.0.1:0.
    pub fn start_local() -> anyhow::Result<FakeApiServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        Self::start(listener)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (`http://[IP]:PORT` for IPv6).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current global resourceVersion (that of the last change, 0 before any).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Whether [`apply`](Self::apply) stores `object`: its `kind` is one this server serves
    /// and its `apiVersion`, when set, that kind's. Lets a caller load a whole manifest and
    /// skip the objects a real cluster has but the fake does not (Deployments and so on).
    pub fn serves(object: &Value) -> bool {
        let Some(kind) = object
            .get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::parse)
        else {
            return false;
        };
        object
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(|v| v == kind.api_version())
    }

    /// Creates or replaces the object, `.status` included (a test's hand on the store, not an
    /// API write). `kind` (Service, EndpointSlice, Node, ServiceCIDR, Lease or
    /// LoadBalancerIPPool), `metadata.name` and, for namespaced kinds, `metadata.namespace`
    /// (default "default") come from the JSON; `apiVersion` may be omitted. Sets
    /// `metadata.resourceVersion`, `metadata.uid` and `metadata.creationTimestamp`, sends ADDED
    /// or MODIFIED to the matching watches (even when nothing changed) and returns the new
    /// resourceVersion. It takes no field ownership: the leaves it changes or removes lose
    /// their owners.
    ///
    /// Panics on an object it cannot store (unknown kind, wrong apiVersion, no name): a bug
    /// in the test.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind_str = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("fake apiserver: apply: object without kind: {object}"));
        let kind = Kind::parse(kind_str)
            .unwrap_or_else(|| panic!("fake apiserver: apply: unsupported kind {kind_str:?}"));
        match object.get("apiVersion").and_then(Value::as_str) {
            None => {}
            Some(v) if v == kind.api_version() => {}
            Some(v) => panic!(
                "fake apiserver: apply: {} must be {}, not {v:?}",
                kind.name(),
                kind.api_version()
            ),
        }
        let Some(obj) = object.as_object_mut() else {
            panic!("fake apiserver: apply: not a JSON object");
        };
        obj.insert("kind".into(), kind.name().into());
        obj.insert("apiVersion".into(), kind.api_version().into());
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("fake apiserver: apply: metadata is not an object");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "fake apiserver: apply: {} without metadata.name",
                    kind.name()
                )
            })
            .to_string();
        let namespace = if kind.namespaced() {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string();
            meta.insert("namespace".into(), ns.clone().into());
            ns
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (namespace, name);
        for server_field in ["resourceVersion", "uid", "managedFields"] {
            meta.remove(server_field);
        }

        let mut st = self.shared.lock();
        // A write by nobody in particular: the fields it changes or removes lose their
        // owners, the others keep them.
        let ks = st.kind(kind);
        let before = ks.objects.get(&key).map(leaves).unwrap_or_default();
        let mut owners = ks.owners.get(&key).cloned().unwrap_or_default();
        let after = leaves(&object);
        owners.retain(|path, _| after.get(path).is_some_and(|v| before.get(path) == Some(v)));
        let stored = st.commit(kind, key, object, owners, false);
        resource_version_of(&stored)
    }

    /// Deletes the object (`namespace` None means "default" for namespaced kinds and is
    /// ignored for Nodes): watches get DELETED with its last state and a new resourceVersion.
    /// Returns whether it existed. Panics on an unknown kind.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let (k, key) = Self::key(kind, namespace, name);
        self.shared.lock().remove(k, &key).is_some()
    }

    /// `false`: the server "disappears". The listening socket is closed, so a new connection
    /// is refused (ECONNREFUSED; connections still in the accept backlog are reset), and every
    /// open connection, idle or carrying a list or watch, is closed (close(2), no goodbye):
    /// a client reading a watch sees the chunked body end mid-stream (hyper: "unexpected EOF
    /// during chunk size line", which kube-client treats as the end of the watch and resumes
    /// from its last resourceVersion), or a reset if it had sent data not yet read. Returns
    /// once every connection is closed and its watch unregistered, so no change made after it
    /// reaches anyone. Objects can still be changed with [`apply`](Self::apply) and
    /// [`delete`](Self::delete) meanwhile; the events are kept in the history for watches that
    /// resume later.
    ///
    /// `true`: binds the same address and port again (SO_REUSEADDR, on the server thread,
    /// which lives in the network namespace the listener was created in) and serves again;
    /// returns once it listens. Both are no-ops when already in that state.
    pub fn set_available(&self, available: bool) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands
            .send(Command::SetAvailable(available, tx))
            .map_err(|_| anyhow::anyhow!("the fake API server thread is gone"))?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("the fake API server thread is gone"))?
    }

    /// Compaction: forgets the event history of every resource, so that a watch resuming
    /// from a resourceVersion older than the current one gets the 410 Gone ERROR event (and
    /// a paged list continuing from an older page a 410 response).
    pub fn expire_history(&self) {
        let mut st = self.shared.lock();
        let rv = st.rv;
        for kind in Kind::ALL {
            let ks = st.kind(kind);
            ks.history.clear();
            ks.floor = rv;
        }
    }

    /// Sends a BOOKMARK with the current resourceVersion to every open watch that asked for
    /// bookmarks (`allowWatchBookmarks=true`).
    pub fn send_bookmarks(&self) {
        let mut st = self.shared.lock();
        let rv = st.rv;
        let mut gone = Vec::new();
        for (id, w) in &st.watchers {
            if w.bookmarks && w.tx.send(bookmark_line(w.kind, rv, false)).is_err() {
                gone.push(*id);
            }
        }
        for id in gone {
            st.watchers.remove(&id);
        }
    }

    /// `false`: every request for `kind` (e.g. "ServiceCIDR") gets a 404 NotFound, as from
    /// an API server that does not know it (a ServiceCIDR before Kubernetes 1.33); open
    /// watches of it are closed. `true`: served again. Objects can be changed meanwhile.
    /// Panics on an unknown kind.
    pub fn set_served(&self, kind: &str, served: bool) {
        let k = Kind::parse(kind)
            .unwrap_or_else(|| panic!("fake apiserver: set_served: unsupported kind {kind:?}"));
        let mut st = self.shared.lock();
        if served {
            st.unserved.remove(&k);
        } else {
            st.unserved.insert(k);
            // Dropping a watch's sender ends its stream.
            st.watchers.retain(|_, w| w.kind != k);
        }
    }

    /// Every request received so far, as `"GET /path?query"` lines (the query as sent,
    /// percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// How many requests with this method (e.g. "PATCH") had exactly this path (the query
    /// aside), e.g. to count the status writes of one Service.
    pub fn count_requests(&self, method: &str, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| {
                r.split_once(' ').is_some_and(|(m, rest)| {
                    m == method && rest.split_once('?').map_or(rest, |(p, _)| p) == path
                })
            })
            .count()
    }

    /// The stored object, as a GET would return it (`namespace` None means "default" for
    /// namespaced kinds and is ignored for cluster-scoped ones). Panics on an unknown kind.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let (k, key) = Self::key(kind, namespace, name);
        self.shared.lock().kind(k).objects.get(&key).cloned()
    }

    /// Every stored object of the kind, sorted by namespace and name. Panics on an unknown
    /// kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let k = Kind::parse(kind)
            .unwrap_or_else(|| panic!("fake apiserver: list: unsupported kind {kind:?}"));
        self.shared
            .lock()
            .kind(k)
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// The object's field ownership (see the module docs) as `(".spec.holderIdentity",
    /// manager, "Apply" | "Update")`, sorted; empty for a missing object. Panics on an
    /// unknown kind.
    pub fn field_owners(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Vec<(String, String, String)> {
        let (k, key) = Self::key(kind, namespace, name);
        let mut st = self.shared.lock();
        let Some(owners) = st.kind(k).owners.get(&key) else {
            return Vec::new();
        };
        owners
            .iter()
            .flat_map(|(path, set)| {
                set.iter()
                    .map(|(m, op)| (field_path(path), m.clone(), op.as_str().to_string()))
            })
            .collect()
    }

    fn key(kind: &str, namespace: Option<&str>, name: &str) -> (Kind, Key) {
        let k = Kind::parse(kind)
            .unwrap_or_else(|| panic!("fake apiserver: unsupported kind {kind:?}"));
        let ns = if k.namespaced() {
            namespace.unwrap_or("default").to_string()
        } else {
            String::new()
        };
        (k, (ns, name.to_string()))
    }

    /// How many watch streams are open right now.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().watchers.len()
    }

    /// How many watch streams on this request path (e.g. `/api/v1/services`) are open.
    pub fn open_watches_on(&self, path: &str) -> usize {
        self.shared
            .lock()
            .watchers
            .values()
            .filter(|w| w.path == path)
            .count()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_reuseaddr(listener: &std::net::TcpListener) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Moves the current thread into the network namespace `ns` unless it is in it already (so
/// no privilege is needed in the common case).
fn enter_netns(ns: &std::fs::File) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let want = ns.metadata().context("fstat of the recorded netns")?;
    if let Ok(cur) = std::fs::metadata("/proc/thread-self/ns/net")
        && cur.dev() == want.dev()
        && cur.ino() == want.ino()
    {
        return Ok(());
    }
    // SAFETY: setns on an open namespace fd; affects only this (dedicated) thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns into the listener's netns");
    }
    Ok(())
}

fn rebind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("socket")?;
    sock.set_reuseaddr(true).context("SO_REUSEADDR")?;
    sock.bind(addr)
        .with_context(|| format!("binding {addr} again"))?;
    sock.listen(1024).context("listen")
}

/// The server thread's main loop: accepts connections while available, obeys commands.
async fn serve(
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    // Every open connection; aborting a task drops its connection, closing the socket.
    let mut conns = tokio::task::JoinSet::new();
    let mut listener = Some(listener);
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None | Some(Command::Shutdown) => return,
                Some(Command::SetAvailable(false, reply)) => {
                    listener = None;
                    conns.abort_all();
                    // Wait until every connection is closed (and its watch unregistered), so
                    // that no change made after this returns reaches anyone.
                    while conns.join_next().await.is_some() {}
                    let _ = reply.send(Ok(()));
                }
                Some(Command::SetAvailable(true, reply)) => {
                    let r = if listener.is_some() {
                        Ok(())
                    } else {
                        rebind(addr).map(|l| listener = Some(l))
                    };
                    let _ = reply.send(r);
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = async { listener.as_ref().expect("guarded").accept().await }, if listener.is_some() => {
                let Ok((stream, _peer)) = accepted else {
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// What a request addresses.
struct Route {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    /// The `/status` subresource of the object `name`.
    status: bool,
}

fn route(path: &str) -> Option<Route> {
    let path = path.trim_end_matches('/');
    Kind::ALL.into_iter().find_map(|kind| {
        let rest = path.strip_prefix(kind.api_prefix())?.strip_prefix('/')?;
        let seg: Vec<&str> = rest.split('/').collect();
        let (namespace, tail) = match seg.as_slice() {
            ["namespaces", ns, tail @ ..] if kind.namespaced() && !tail.is_empty() => {
                (Some(ns.to_string()), tail)
            }
            tail => (None, tail),
        };
        let (name, status) = match tail {
            [p] if *p == kind.plural() => (None, false),
            [p, name] if *p == kind.plural() && !name.is_empty() => (Some(name), false),
            [p, name, "status"] if *p == kind.plural() && !name.is_empty() && kind.has_status() => {
                (Some(name), true)
            }
            _ => return None,
        };
        // A namespaced object is only addressable inside its namespace.
        if name.is_some() && kind.namespaced() && namespace.is_none() {
            return None;
        }
        Some(Route {
            kind,
            namespace,
            name: name.map(|n| n.to_string()),
            status,
        })
    })
}

/// Largest request body accepted (the real API server's limit is 3 MiB too).
const MAX_BODY: usize = 3 << 20;

fn not_found_path() -> Response<Body> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

fn method_not_allowed(method: &Method, what: &str) -> Response<Body> {
    status_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "the server does not allow this method on the requested resource: {method} on {what}"
        ),
        json!({}),
    )
}

fn bad_request(message: &str) -> Response<Body> {
    ApiError::bad_request(message).response()
}

/// A failed write, turned into a `Status` response by [`ApiError::response`].
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn bad_request(message: &str) -> ApiError {
        ApiError {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message: message.to_string(),
            details: json!({}),
        }
    }

    fn not_found(kind: Kind, name: &str) -> ApiError {
        ApiError {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", kind.resource()),
            details: json!({"name": name, "group": kind.group(), "kind": kind.plural()}),
        }
    }

    /// A 409 (reason "Conflict" or "AlreadyExists") about the object `name`.
    fn conflict(kind: Kind, name: &str, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code: StatusCode::CONFLICT,
            reason,
            message,
            details: json!({"name": name, "group": kind.group(), "kind": kind.plural()}),
        }
    }

    fn response(self) -> Response<Body> {
        status_response(self.code, self.reason, &self.message, self.details)
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let line = match req.uri().query() {
        Some(q) => format!("{} {path}?{q}", req.method()),
        None => format!("{} {path}", req.method()),
    };
    shared.lock().requests.push(line);
    let query = parse_query(req.uri().query().unwrap_or(""));
    let Some(route) = route(&path).filter(|r| !shared.lock().unserved.contains(&r.kind)) else {
        return not_found_path();
    };
    let method = req.method().clone();
    if method == Method::GET {
        return handle_get(shared, &route, &path, &query);
    }
    let what = match (&route.name, route.status) {
        (None, _) => "a collection",
        (Some(_), false) => "an object",
        (Some(_), true) => "a status subresource",
    };
    let allowed = match (&route.name, route.status) {
        // A create needs the namespace in the path for namespaced kinds.
        (None, _) => {
            method == Method::POST && (route.namespace.is_some() || !route.kind.namespaced())
        }
        (Some(_), false) => matches!(method, Method::PUT | Method::PATCH | Method::DELETE),
        (Some(_), true) => matches!(method, Method::PUT | Method::PATCH),
    };
    if !allowed {
        return method_not_allowed(&method, what);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    // The real API server names a manager that gave no fieldManager after the client's
    // user agent ("kubectl/v1.31 ..." → "kubectl").
    let manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.clone(),
        None => req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return status_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("reading the request body: {e}"),
                json!({}),
            );
        }
    };
    if method == Method::DELETE {
        // DeleteOptions (propagation, preconditions, grace) are ignored: there are no
        // finalizers, dependents or graceful deletion here.
        let name = route.name.clone().unwrap_or_default();
        let key = (route.namespace.clone().unwrap_or_default(), name.clone());
        return match shared.lock().remove(route.kind, &key) {
            Some(object) => json_response(StatusCode::OK, &object),
            None => not_found(route.kind, &name),
        };
    }
    let change = match (&method, content_type.as_str()) {
        (&Method::PATCH, "application/merge-patch+json") => Change::Merge,
        (&Method::PATCH, "application/strategic-merge-patch+json") if route.kind.is_custom() => {
            return status_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources",
                json!({}),
            );
        }
        (&Method::PATCH, "application/strategic-merge-patch+json") => Change::Strategic,
        (&Method::PATCH, "application/apply-patch+yaml") => Change::Apply {
            force: matches!(query.get("force").map(String::as_str), Some("true" | "1")),
        },
        (&Method::PATCH, other) => {
            return status_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the fake API server supports the patch types application/merge-patch+json, \
                     application/strategic-merge-patch+json and application/apply-patch+yaml, \
                     not {other:?}"
                ),
                json!({}),
            );
        }
        (_, "application/json" | "") if method == Method::POST => Change::Create,
        (_, "application/json" | "") => Change::Replace,
        (_, other) => {
            return status_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("the fake API server only reads application/json bodies, not {other:?}"),
                json!({}),
            );
        }
    };
    // An apply body is YAML; the fake reads its JSON subset, which is what kube-rs sends.
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("the request body must be a JSON object"),
        Err(e) => return bad_request(&format!("the request body is not valid JSON: {e}")),
    };
    if matches!(change, Change::Apply { .. }) && !query.contains_key("fieldManager") {
        return bad_request("PATCH with apply requires a fieldManager");
    }
    match write(shared, &route, change, body, &manager) {
        Ok((code, object)) => json_response(code, &object),
        Err(e) => e.response(),
    }
}

fn handle_get(
    shared: &Arc<Shared>,
    route: &Route,
    path: &str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let q = |k: &str| query.get(k).map(String::as_str);
    let mut filter = match Filter::parse(q("labelSelector"), q("fieldSelector")) {
        Ok(f) => f,
        Err(msg) => return bad_request(&msg),
    };
    filter.namespace = route.namespace.clone();
    let watch = matches!(q("watch"), Some("true" | "1"));
    if let Some(name) = &route.name {
        if watch && !route.status {
            filter.name = Some(name.clone());
        } else {
            return get_one(shared, route, name);
        }
    }
    if watch {
        watch_response(shared, route, path, filter, query)
    } else {
        list_response(shared, route.kind, &filter, q("limit"), q("continue"))
    }
}

fn not_found(kind: Kind, name: &str) -> Response<Body> {
    ApiError::not_found(kind, name).response()
}

/// What a write does with its body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    /// POST: a new object.
    Create,
    /// PUT: the whole object.
    Replace,
    /// JSON merge patch (RFC 7386).
    Merge,
    /// Strategic merge patch, read as a JSON merge patch.
    Strategic,
    /// Server-Side Apply.
    Apply { force: bool },
}

/// One write under the lock: validates `body` against the route, computes the new object
/// (scoped to `.status` or to everything else for kinds with a status subresource), checks
/// and updates the field ownership, and commits. Returns the status code and the stored
/// object, or the error response.
fn write(
    shared: &Shared,
    route: &Route,
    change: Change,
    mut body: Value,
    manager: &str,
) -> Result<(StatusCode, Value), ApiError> {
    let kind = route.kind;
    let ns = route.namespace.clone().unwrap_or_default();
    let name = match &route.name {
        Some(n) => n.clone(),
        None => body["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("metadata.name is required (generateName is not supported)")
            })?
            .to_string(),
    };
    check_identity(kind, &ns, &name, &body, change)?;
    if matches!(change, Change::Strategic) {
        check_no_directives(&body, "")?;
    }
    let key = (ns.clone(), name.clone());
    let conflict = |message: String| ApiError::conflict(kind, &name, "Conflict", message);
    let modified = || {
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.resource()
        )
    };

    let mut st = shared.lock();
    let ks = st.kind(kind);
    let stored = ks.objects.get(&key).cloned();
    let mut owners = ks.owners.get(&key).cloned().unwrap_or_default();
    // resourceVersion in the body is a precondition (for PUT, PATCH and apply alike).
    if let (Some(s), Some(want)) = (&stored, body["metadata"]["resourceVersion"].as_str())
        && !want.is_empty()
        && s["metadata"]["resourceVersion"].as_str() != Some(want)
    {
        return Err(conflict(modified()));
    }
    let mut candidate = match (change, &stored) {
        (Change::Create, Some(_)) => {
            return Err(ApiError::conflict(
                kind,
                &name,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.resource()),
            ));
        }
        (Change::Create, None) => body.clone(),
        // An apply creates a missing object (not through the status subresource).
        (Change::Apply { .. }, None) if !route.status => {
            let mut fresh = json!({"metadata": {}});
            merge_patch(&mut fresh, &body);
            fresh
        }
        (_, None) => return Err(ApiError::not_found(kind, &name)),
        (Change::Replace, Some(_)) => body.clone(),
        (Change::Merge | Change::Strategic | Change::Apply { .. }, Some(s)) => {
            let mut o = s.clone();
            merge_patch(&mut o, &body);
            o
        }
    };
    strip_nulls(&mut candidate);
    normalize(kind, &ns, &name, &mut candidate);
    // The status split: a status write changes only .status, any other write keeps it.
    if route.status || kind.has_status() {
        let (mut base, from) = if route.status {
            (stored.clone().unwrap_or_default(), candidate.clone())
        } else {
            (candidate.clone(), stored.clone().unwrap_or_default())
        };
        match from.get("status") {
            Some(status) => base["status"] = status.clone(),
            None => {
                if let Some(o) = base.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        candidate = base;
        normalize(kind, &ns, &name, &mut candidate);
    }
    // Which leaves this write may touch.
    let in_scope = |path: &[String]| {
        let is_status = path.first().is_some_and(|p| p == "status");
        if route.status {
            is_status
        } else {
            !(kind.has_status() && is_status)
        }
    };
    let before = stored.as_ref().map(leaves).unwrap_or_default();
    let me = |op| (manager.to_string(), op);
    if let Change::Apply { force } = change {
        strip_nulls(&mut body);
        let applied: BTreeMap<Vec<String>, Value> = leaves(&body)
            .into_iter()
            .filter(|(p, _)| in_scope(p))
            .collect();
        // SSA: what this manager applied before and applies no more is removed, unless
        // someone else owns it too.
        for (path, set) in owners.iter_mut() {
            if in_scope(path)
                && !applied.contains_key(path)
                && set.remove(&me(Op::Apply))
                && set.is_empty()
            {
                remove_path(&mut candidate, path);
            }
        }
        let after = leaves(&candidate);
        let mut conflicts: Vec<String> = Vec::new();
        for (path, set) in &owners {
            let touched = applied
                .keys()
                .any(|l| l.starts_with(path) || path.starts_with(l));
            if !touched || before.get(path) == after.get(path) {
                continue;
            }
            for (other, _) in set.iter().filter(|(m, _)| m != manager) {
                conflicts.push(format!("conflict with \"{other}\": {}", field_path(path)));
            }
        }
        conflicts.dedup();
        if !conflicts.is_empty() && !force {
            let n = conflicts.len();
            return Err(conflict(format!(
                "Apply failed with {n} conflict{}: {}",
                if n == 1 { "" } else { "s" },
                conflicts.join("; ")
            )));
        }
        for path in applied.keys() {
            let set = owners.entry(path.clone()).or_default();
            if before.get(path) != after.get(path) {
                // Changed (possibly forced): the applier alone owns it now.
                set.clear();
            }
            set.insert(me(Op::Apply));
        }
    } else {
        let after = leaves(&candidate);
        for (path, value) in &after {
            if before.get(path) != Some(value) {
                owners.insert(path.clone(), BTreeSet::from([me(Op::Update)]));
            }
        }
    }
    // Gone leaves lose their owners (a null in a patch, a PUT without them, a leaf replaced
    // by an object).
    let after = leaves(&candidate);
    owners.retain(|path, set| after.contains_key(path) && !set.is_empty());
    let created = stored.is_none();
    let object = st.commit(kind, key, candidate, owners, true);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, object))
}

/// A body's apiVersion and kind (when given; an apply must give them) must be the kind's,
/// and its name and namespace (when given) the path's.
fn check_identity(
    kind: Kind,
    ns: &str,
    name: &str,
    body: &Value,
    change: Change,
) -> Result<(), ApiError> {
    let apply = matches!(change, Change::Apply { .. });
    for (field, want) in [("apiVersion", kind.api_version()), ("kind", kind.name())] {
        match body.get(field).and_then(Value::as_str) {
            Some(v) if v == want => {}
            None if !apply => {}
            None => {
                return Err(ApiError::bad_request(&format!(
                    "{field} must be set in an apply"
                )));
            }
            Some(v) => {
                return Err(ApiError::bad_request(&format!(
                    "{field} {v:?} does not match the resource's {want:?}"
                )));
            }
        }
    }
    let meta = &body["metadata"];
    if !meta.is_null() && !meta.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    if let Some(n) = meta.get("name")
        && n.as_str() != Some(name)
    {
        return Err(ApiError::bad_request(&format!(
            "the name of the object ({n}) does not match the name on the URL ({name:?})"
        )));
    }
    if kind.namespaced()
        && let Some(n) = meta.get("namespace")
        && n.as_str() != Some(ns)
        && n.as_str() != Some("")
    {
        return Err(ApiError::bad_request(&format!(
            "the namespace of the provided object ({n}) does not match the namespace sent on \
             the request ({ns:?})"
        )));
    }
    Ok(())
}

/// Strategic merge patch directives (`$patch`, `$retainKeys`, `$setElementOrder/...`,
/// `$deleteFromPrimitiveList/...`) are not implemented: a 400 rather than a silent wrong
/// result.
fn check_no_directives(v: &Value, at: &str) -> Result<(), ApiError> {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                if k.starts_with('$') {
                    return Err(ApiError::bad_request(&format!(
                        "the fake API server does not implement the strategic merge patch \
                         directive {k:?} (at {at:?})"
                    )));
                }
                check_no_directives(c, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|c| check_no_directives(c, at)),
        _ => Ok(()),
    }
}

/// Sets apiVersion, kind, name and namespace from the route and drops the fields only the
/// server sets (kept or renewed by [`State::commit`]).
fn normalize(kind: Kind, ns: &str, name: &str, object: &mut Value) {
    if !object.is_object() {
        *object = json!({});
    }
    object["apiVersion"] = kind.api_version().into();
    object["kind"] = kind.name().into();
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.insert("name".into(), name.into());
        if kind.namespaced() {
            meta.insert("namespace".into(), ns.into());
        } else {
            meta.remove("namespace");
        }
        for server_field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "generation",
        ] {
            meta.remove(server_field);
        }
    }
}

/// RFC 7386 JSON merge patch: objects merge key by key, null removes a key, anything else
/// (arrays included) replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Removes null members of objects, at any depth (a stored object has no nulls, as after
/// decoding into the real API types).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Whether a path is left out of field ownership: identity and server-set metadata.
fn untracked(path: &[String]) -> bool {
    match path {
        [f] => f == "apiVersion" || f == "kind",
        [m, f, ..] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "resourceVersion"
                | "uid"
                | "creationTimestamp"
                | "managedFields"
                | "selfLink"
                | "generation"
        ),
        _ => false,
    }
}

/// The leaves of an object that field ownership tracks: path → value, for every non-null,
/// non-object value (a list is one leaf: lists are atomic here).
fn leaves(v: &Value) -> BTreeMap<Vec<String>, Value> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, Value>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    path.push(k.clone());
                    walk(c, path, out);
                    path.pop();
                }
            }
            Value::Null => {}
            other => {
                if !path.is_empty() && !untracked(path) {
                    out.insert(path.clone(), other.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        match cur.get_mut(p.as_str()) {
            Some(c) => cur = c,
            None => return,
        }
    }
    if let Some(o) = cur.as_object_mut() {
        o.remove(last.as_str());
    }
}

/// ".spec.holderIdentity".
fn field_path(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// `metadata.managedFields` for `owners`: one FieldsV1 entry per (manager, operation).
fn managed_fields(kind: Kind, owners: &Owners) -> Vec<Value> {
    let mut by_manager: BTreeMap<(String, Op), Value> = BTreeMap::new();
    for (path, set) in owners {
        for owner in set {
            let mut node = by_manager.entry(owner.clone()).or_insert_with(|| json!({}));
            for p in path {
                node = &mut node[format!("f:{p}")];
                if !node.is_object() {
                    *node = json!({});
                }
            }
        }
    }
    by_manager
        .into_iter()
        .map(|((manager, op), fields)| {
            json!({
                "manager": manager,
                "operation": op.as_str(),
                "apiVersion": kind.api_version(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            })
        })
        .collect()
}

fn resource_version_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn get_one(shared: &Shared, route: &Route, name: &str) -> Response<Body> {
    let ns = route.namespace.clone().unwrap_or_default();
    let mut st = shared.lock();
    match st.kind(route.kind).objects.get(&(ns, name.to_string())) {
        Some(obj) => json_response(StatusCode::OK, obj),
        None => not_found(route.kind, name),
    }
}

fn list_response(
    shared: &Shared,
    kind: Kind,
    filter: &Filter,
    limit: Option<&str>,
    cont: Option<&str>,
) -> Response<Body> {
    let limit = match limit.map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "invalid limit",
                json!({}),
            );
        }
    };
    let mut st = shared.lock();
    let current = st.rv;
    let ks = st.kind(kind);
    // A continue token is "<rv of the first page>/<namespace>/<name of the last item>".
    let (list_rv, after) = match cont.filter(|c| !c.is_empty()) {
        None => (current, None),
        Some(c) => {
            let mut parts = c.splitn(3, '/');
            match (
                parts.next().map(str::parse::<u64>),
                parts.next(),
                parts.next(),
            ) {
                (Some(Ok(rv)), Some(ns), Some(name)) => {
                    if rv < ks.floor {
                        return status_response(
                            StatusCode::GONE,
                            "Expired",
                            "The provided continue parameter is too old to display a consistent \
                             list result. You can start a new list without the continue parameter.",
                            json!({}),
                        );
                    }
                    (rv, Some((ns.to_string(), name.to_string())))
                }
                _ => {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "invalid continue token",
                        json!({}),
                    );
                }
            }
        }
    };
    // A page starts right after the token's key (a range, not a scan from the first key:
    // listing 100k objects in pages of 500 must not cost 200 full scans).
    let start = match &after {
        Some(a) => Bound::Excluded(a.clone()),
        None => Bound::Unbounded,
    };
    let mut items = Vec::new();
    let mut more = false;
    let matching = ks
        .objects
        .range((start, Bound::Unbounded))
        .filter(|(_, o)| filter.matches(o));
    for (_, obj) in matching {
        if limit > 0 && items.len() == limit {
            more = true;
            break;
        }
        items.push(obj.clone());
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if more && let Some(last) = items.last() {
        let ns = last["metadata"]["namespace"].as_str().unwrap_or("");
        let name = last["metadata"]["name"].as_str().unwrap_or("");
        metadata["continue"] = format!("{list_rv}/{ns}/{name}").into();
        // As the real API server: a count of what is left only for an unfiltered list
        // (with a selector it would cost evaluating every remaining object).
        if filter.is_empty() {
            let last_key = (ns.to_string(), name.to_string());
            let remaining = ks
                .objects
                .range((Bound::Excluded(last_key), Bound::Unbounded))
                .count();
            metadata["remainingItemCount"] = remaining.into();
        }
    }
    let body = json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.name()),
        "metadata": metadata,
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

fn watch_response(
    shared: &Arc<Shared>,
    route: &Route,
    path: &str,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let q = |k: &str| query.get(k).map(String::as_str);
    let kind = route.kind;
    let timeout = q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map_or(MAX_WATCH_SECS, |t| t.min(MAX_WATCH_SECS));
    let bookmarks = matches!(q("allowWatchBookmarks"), Some("true" | "1"));
    let initial_events = matches!(q("sendInitialEvents"), Some("true" | "1"));
    let rv = match q("resourceVersion").filter(|v| !v.is_empty() && *v != "0") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid resourceVersion {v:?}"),
                    json!({}),
                );
            }
        },
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = shared.lock();
    let current = st.rv;
    let ks = st.kind(kind);
    let mut register = true;
    match rv {
        Some(rv) if !initial_events && rv < ks.floor => {
            let status = status_body(
                "Expired",
                &format!("too old resource version: {rv} ({})", ks.floor),
                410,
                json!({}),
            );
            let _ = tx.send(event_line("ERROR", &status));
            register = false;
        }
        Some(rv) if !initial_events => {
            for ev in ks.history.iter().filter(|e| e.rv > rv) {
                if let Some(line) = filter.event_line(ev) {
                    let _ = tx.send(line);
                }
            }
        }
        _ => {
            for obj in ks.objects.values().filter(|o| filter.matches(o)) {
                let _ = tx.send(event_line(EventType::Added.as_str(), obj));
            }
            if initial_events {
                let _ = tx.send(bookmark_line(kind, current, true));
            }
        }
    }
    let guard = if register {
        let id = st.next_watcher;
        st.next_watcher += 1;
        st.watchers.insert(
            id,
            Watcher {
                kind,
                path: path.to_string(),
                filter,
                bookmarks,
                tx,
            },
        );
        Some(WatchGuard {
            id,
            shared: shared.clone(),
        })
    } else {
        drop(tx);
        None
    };
    drop(st);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let stream = futures::stream::unfold((rx, guard), move |(mut rx, guard)| async move {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => None,
            line = rx.recv() => line.map(|l| (Ok::<_, Infallible>(Frame::data(l)), (rx, guard))),
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("valid response")
}

/// Unregisters a watch when its response body is dropped (stream ended or connection gone).
struct WatchGuard {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shared.lock().watchers.remove(&self.id);
    }
}

fn event_line(ty: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": object})).expect("json");
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark_line(kind: Kind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

fn status_body(reason: &str, message: &str, code: u16, details: Value) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if details.as_object().is_some_and(|d| !d.is_empty()) {
        s["details"] = details;
    }
    s
}

fn status_response(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Value,
) -> Response<Body> {
    json_response(code, &status_body(reason, message, code.as_u16(), details))
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("json");
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed_unsync(Full::new(Bytes::from(bytes))))
        .expect("valid response")
}

/// Decodes `application/x-www-form-urlencoded` pairs (last one wins).
fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    path: String,
    equal: bool,
    value: String,
}

/// What a list or watch selects: namespace (from the path), name (watch on an object path),
/// and the field and label selectors.
#[derive(Debug, Clone, Default)]
struct Filter {
    namespace: Option<String>,
    name: Option<String>,
    fields: Vec<FieldReq>,
    labels: Vec<LabelReq>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.name.is_none()
            && self.fields.is_empty()
            && self.labels.is_empty()
    }

    fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for term in split_terms(labels.unwrap_or("")) {
            f.labels.push(parse_label_term(&term)?);
        }
        for term in split_terms(fields.unwrap_or("")) {
            let (path, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let path = path.trim();
            if path.is_empty() {
                return Err(format!("invalid field selector term {term:?}"));
            }
            f.fields.push(FieldReq {
                path: path.to_string(),
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(f)
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.namespace
            && meta["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        if let Some(name) = &self.name
            && meta["name"].as_str() != Some(name)
        {
            return false;
        }
        let labels = meta["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::Eq(k, v) => label(k) == Some(v),
            LabelReq::NotEq(k, v) => label(k) != Some(v),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        });
        labels_ok
            && self.fields.iter().all(|r| {
                let mut v = obj;
                for part in r.path.split('.') {
                    v = &v[part];
                }
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (s == r.value) == r.equal
            })
    }

    /// The watch line this watch gets for `ev`, if any: a change that makes an object start
    /// (stop) matching is an ADDED (a DELETED with the previous state at the event's RV).
    fn event_line(&self, ev: &Event) -> Option<Bytes> {
        let now = self.matches(&ev.object);
        match (ev.ty, &ev.prev) {
            (EventType::Modified, Some(prev)) => match (self.matches(prev), now) {
                (true, true) => Some(event_line("MODIFIED", &ev.object)),
                (false, true) => Some(event_line("ADDED", &ev.object)),
                (true, false) => {
                    let mut gone = prev.clone();
                    gone["metadata"]["resourceVersion"] = ev.rv.to_string().into();
                    Some(event_line("DELETED", &gone))
                }
                (false, false) => None,
            },
            (ty, _) => now.then(|| event_line(ty.as_str(), &ev.object)),
        }
    }
}

/// Splits a selector on the commas outside parentheses.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            terms.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    terms.push(cur);
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    let bad = || format!("invalid label selector term {term:?}");
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    let set = |rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(bad)?;
        Ok(inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect())
    };
    let req = if let Some(k) = term.strip_prefix('!') {
        LabelReq::NotExists(k.trim().to_string())
    } else if let Some((k, v)) = term.split_once("!=") {
        LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
    } else if let Some((k, v)) = term.split_once("==") {
        LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
    } else if let Some((k, v)) = term.split_once('=') {
        LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
    } else if let Some((k, rest)) = term.split_once(" notin ") {
        LabelReq::NotIn(k.trim().to_string(), set(rest)?)
    } else if let Some((k, rest)) = term.split_once(" in ") {
        LabelReq::In(k.trim().to_string(), set(rest)?)
    } else {
        LabelReq::Exists(term.trim().to_string())
    };
    let key = match &req {
        LabelReq::Exists(k)
        | LabelReq::NotExists(k)
        | LabelReq::Eq(k, _)
        | LabelReq::NotEq(k, _)
        | LabelReq::In(k, _)
        | LabelReq::NotIn(k, _) => k,
    };
    if key_ok(key) { Ok(req) } else { Err(bad()) }
}

/// Now as RFC 3339 UTC with second precision, e.g. "2024-05-01T12:34:56Z".
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route("/api/v1/services").unwrap();
        assert_eq!((r.kind, r.namespace, r.name), (Kind::Service, None, None));
        let r = route("/api/v1/namespaces/kube-system/services/dns").unwrap();
        assert_eq!(
            (r.kind, r.namespace.as_deref(), r.name.as_deref()),
            (Kind::Service, Some("kube-system"), Some("dns"))
        );
        let r = route("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices").unwrap();
        assert_eq!(
            (r.kind, r.namespace.as_deref()),
            (Kind::EndpointSlice, Some("a"))
        );
        let r = route("/api/v1/nodes/n1").unwrap();
        assert_eq!((r.kind, r.name.as_deref()), (Kind::Node, Some("n1")));
        let r = route("/apis/networking.k8s.io/v1/servicecidrs/kubernetes").unwrap();
        assert_eq!(
            (r.kind, r.namespace, r.name.as_deref()),
            (Kind::ServiceCidr, None, Some("kubernetes"))
        );
        assert!(route("/apis/networking.k8s.io/v1/namespaces/a/servicecidrs").is_none());
        assert!(route("/api/v1/namespaces/a/nodes").is_none());
        assert!(route("/api/v1/services/x").is_none());
        assert!(route("/api/v1/configmaps").is_none());
        assert!(route("/apis/discovery.k8s.io/v1beta1/endpointslices").is_none());
    }

    #[test]
    fn routes_of_writes() {
        let r = route("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l").unwrap();
        assert_eq!(
            (r.kind, r.namespace.as_deref(), r.name.as_deref(), r.status),
            (Kind::Lease, Some("kube-system"), Some("l"), false)
        );
        let r = route("/apis/svc-ebpf.dev/v1alpha1/loadbalancerippools/p/status").unwrap();
        assert_eq!(
            (r.kind, r.namespace, r.name.as_deref(), r.status),
            (Kind::LbIpPool, None, Some("p"), true)
        );
        let r = route("/api/v1/namespaces/a/services/web/status").unwrap();
        assert_eq!(
            (r.kind, r.name.as_deref(), r.status),
            (Kind::Service, Some("web"), true)
        );
        assert!(route("/apis/coordination.k8s.io/v1/namespaces/a/leases/l/status").is_none());
        assert!(route("/apis/coordination.k8s.io/v1/leases/l").is_none());
        assert!(route("/apis/svc-ebpf.dev/v1alpha1/namespaces/a/loadbalancerippools").is_none());
        assert!(route("/api/v1/namespaces/a/services/web/scale").is_none());
    }

    #[test]
    fn merge_patches() {
        let mut o = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        merge_patch(
            &mut o,
            &json!({"a": {"b": null, "c": [3], "e": {"f": 1}}, "d": null}),
        );
        assert_eq!(o, json!({"a": {"c": [3], "e": {"f": 1}}}));
        let l = leaves(&json!({
            "apiVersion": "v1", "kind": "K",
            "metadata": {"name": "n", "resourceVersion": "3", "labels": {"a.b/c": "d"}},
            "spec": {"x": 1, "l": [1], "empty": {}, "nil": null},
        }));
        let paths: Vec<String> = l.keys().map(|p| field_path(p)).collect();
        assert_eq!(paths, [".metadata.labels.a.b/c", ".spec.l", ".spec.x"]);
    }

    fn lease_route() -> Route {
        Route {
            kind: Kind::Lease,
            namespace: Some("default".into()),
            name: Some("l".into()),
            status: false,
        }
    }

    fn apply_body(spec: Value) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec})
    }

    fn code(r: Result<(StatusCode, Value), ApiError>) -> u16 {
        match r {
            Ok((c, _)) => c.as_u16(),
            Err(e) => e.code.as_u16(),
        }
    }

    /// The SSA model against kube-lease-manager's sequence of writes.
    #[test]
    fn server_side_apply() {
        let shared = Shared {
            state: Mutex::new(State::default()),
        };
        let r = lease_route();
        let apply = |m: &str, spec: Value, force: bool| {
            write(&shared, &r, Change::Apply { force }, apply_body(spec), m)
        };
        let strategic =
            |m: &str, spec: Value| write(&shared, &r, Change::Strategic, json!({"spec": spec}), m);
        let owners = || {
            let mut st = shared.lock();
            let o = st
                .kind(Kind::Lease)
                .owners
                .get(&("default".into(), "l".into()))
                .cloned();
            o.unwrap_or_default()
                .into_iter()
                .map(|(p, s)| {
                    (
                        field_path(&p),
                        s.into_iter()
                            .map(|(m, op)| format!("{m}/{}", op.as_str()))
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                })
                .collect::<Vec<_>>()
        };
        let stored = || {
            let mut st = shared.lock();
            st.kind(Kind::Lease)
                .objects
                .get(&("default".into(), "l".into()))
                .cloned()
                .unwrap()
        };
        // An apply creates; a free lease is taken.
        assert_eq!(
            code(apply(
                "a",
                json!({"holderIdentity": "a", "leaseDurationSeconds": 2}),
                false
            )),
            201
        );
        assert_eq!(
            owners(),
            [
                (".spec.holderIdentity".into(), "a/Apply".into()),
                (".spec.leaseDurationSeconds".into(), "a/Apply".into())
            ]
        );
        // Another manager changing an owned field: a conflict, nothing changes.
        let rv = stored()["metadata"]["resourceVersion"].clone();
        assert_eq!(
            code(apply(
                "b",
                json!({"holderIdentity": "b", "leaseDurationSeconds": 2}),
                false
            )),
            409
        );
        assert_eq!(stored()["metadata"]["resourceVersion"], rv);
        // The same value: no conflict, the ownership is shared.
        assert_eq!(
            code(apply("b", json!({"leaseDurationSeconds": 2}), false)),
            200
        );
        assert_eq!(
            owners()[1],
            (
                ".spec.leaseDurationSeconds".into(),
                "a/Apply,b/Apply".into()
            )
        );
        // An update takes the leaves it changes.
        assert_eq!(
            code(strategic(
                "a",
                json!({"leaseDurationSeconds": 3, "leaseTransitions": 1})
            )),
            200
        );
        assert_eq!(
            owners(),
            [
                (".spec.holderIdentity".into(), "a/Apply".into()),
                (".spec.leaseDurationSeconds".into(), "a/Update".into()),
                (".spec.leaseTransitions".into(), "a/Update".into()),
            ]
        );
        // No longer applied by a and owned by no one else: removed.
        assert_eq!(
            code(apply("a", json!({"leaseDurationSeconds": 3}), false)),
            200
        );
        assert!(
            stored()["spec"].get("holderIdentity").is_none(),
            "{}",
            stored()
        );
        // Nulls remove leaves and their owners.
        assert_eq!(
            code(strategic(
                "x",
                json!({"leaseDurationSeconds": null, "leaseTransitions": null})
            )),
            200
        );
        assert_eq!(owners(), []);
        assert_eq!(stored()["spec"], json!({}));
        // Force takes over.
        assert_eq!(code(apply("a", json!({"holderIdentity": "a"}), false)), 200);
        assert_eq!(code(apply("b", json!({"holderIdentity": "b"}), true)), 200);
        assert_eq!(
            owners(),
            [(".spec.holderIdentity".into(), "b/Apply".into())]
        );
        assert_eq!(stored()["spec"]["holderIdentity"], "b");
        // Preconditions and bad input.
        let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"x": 1}});
        assert_eq!(code(write(&shared, &r, Change::Merge, stale, "a")), 409);
        assert_eq!(code(apply("a", json!({"holderIdentity": "a"}), false)), 409);
        let no_kind = json!({"spec": {}});
        assert_eq!(
            code(write(
                &shared,
                &r,
                Change::Apply { force: false },
                no_kind,
                "a"
            )),
            400
        );
        let directive = json!({"spec": {"$patch": "replace"}});
        assert_eq!(
            code(write(&shared, &r, Change::Strategic, directive, "a")),
            400
        );
        let wrong_name = json!({"metadata": {"name": "other"}});
        assert_eq!(
            code(write(&shared, &r, Change::Replace, wrong_name, "a")),
            400
        );
    }

    #[test]
    fn selectors() {
        let f = Filter::parse(
            Some("!service.kubernetes.io/service-proxy-name,app=web,tier!=db,env in (a, b),x"),
            Some("metadata.name=s1"),
        )
        .unwrap();
        let obj = |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}});
        assert!(f.matches(&obj("s1", json!({"app": "web", "env": "b", "x": ""}))));
        assert!(!f.matches(&obj("s2", json!({"app": "web", "env": "b", "x": ""}))));
        assert!(!f.matches(&obj("s1", json!({"app": "web", "env": "c", "x": ""}))));
        assert!(!f.matches(&obj("s1", json!({"app": "web", "env": "a"}))));
        assert!(!f.matches(&obj(
            "s1",
            json!({"app": "web", "env": "a", "x": "", "service.kubernetes.io/service-proxy-name": "p"})
        )));
        assert!(!f.matches(&obj(
            "s1",
            json!({"app": "web", "env": "a", "x": "", "tier": "db"})
        )));
        assert!(Filter::parse(Some("a=(b"), None).is_ok());
        assert!(Filter::parse(Some("=b"), None).is_err());
        assert!(Filter::parse(None, Some("nofield")).is_err());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=%21a%2Fb%2Cc%3Dd&watch=true&x=1+2&bad=%zz%");
        assert_eq!(q["labelSelector"], "!a/b,c=d");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "1 2");
        assert_eq!(q["bad"], "%zz%");
    }

    #[test]
    fn timestamps() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
