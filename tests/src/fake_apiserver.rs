//! An in-process fake Kubernetes API server for tests: it speaks the real list/watch HTTP
//! protocol (JSON only) well enough that kube-rs (`kube::Client`, kube-runtime's `watcher` and
//! `reflector`) works against it unchanged, over plain HTTP without auth.
//!
//! Served resources:
//!
//! | kind | paths |
//! |---|---|
//! | `v1` Service | `/api/v1/services`, `/api/v1/namespaces/{ns}/services[/{name}]` |
//! | `discovery.k8s.io/v1` EndpointSlice | `/apis/discovery.k8s.io/v1/endpointslices`, `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices[/{name}]` |
//! | `v1` Node (cluster-scoped) | `/api/v1/nodes[/{name}]` |
//! | `networking.k8s.io/v1` ServiceCIDR (cluster-scoped) | `/apis/networking.k8s.io/v1/servicecidrs[/{name}]` |
//!
//! Anything else is a 404 with a `Status` body, and so is a kind the test stopped serving
//! ([`FakeApiServer::set_served`], an API server that does not know it); methods other than
//! GET are 405.
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

use std::collections::{BTreeMap, HashMap, VecDeque};
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
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::ServiceCidr,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::ServiceCidr => "ServiceCIDR",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::ServiceCidr => "networking.k8s.io/v1",
        }
    }

    /// Path prefix of the kind's group/version.
    fn api_prefix(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "/api/v1",
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1",
            Kind::ServiceCidr => "/apis/networking.k8s.io/v1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Node => "nodes",
            Kind::ServiceCidr => "servicecidrs",
        }
    }

    fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::ServiceCidr)
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

#[derive(Default)]
struct KindState {
    /// (namespace or "", name) → object.
    objects: BTreeMap<(String, String), Value>,
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

    /// Creates or replaces the object. `kind` (Service, EndpointSlice, Node or ServiceCIDR),
    /// `metadata.name` and, for namespaced kinds, `metadata.namespace` (default "default")
    /// come from the JSON; `apiVersion` may be omitted. Sets `metadata.resourceVersion`,
    /// `metadata.uid` and `metadata.creationTimestamp`, sends ADDED or MODIFIED to the
    /// matching watches and returns the new resourceVersion.
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

        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        let prev = st.kind(kind).objects.get(&key).cloned();
        let (uid, created) = match &prev {
            Some(p) => (
                p["metadata"]["uid"].clone(),
                p["metadata"]["creationTimestamp"].clone(),
            ),
            None => {
                st.uids += 1;
                (
                    Value::from(format!("00000000-0000-4000-8000-{:012x}", st.uids)),
                    Value::from(rfc3339_now()),
                )
            }
        };
        meta.insert("resourceVersion".into(), rv.to_string().into());
        meta.insert("uid".into(), uid);
        if !meta.contains_key("creationTimestamp") {
            meta.insert("creationTimestamp".into(), created);
        }
        st.kind(kind).objects.insert(key, object.clone());
        let ty = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        st.publish(
            kind,
            Event {
                rv,
                ty,
                object,
                prev,
            },
        );
        rv
    }

    /// Deletes the object (`namespace` None means "default" for namespaced kinds and is
    /// ignored for Nodes): watches get DELETED with its last state and a new resourceVersion.
    /// Returns whether it existed. Panics on an unknown kind.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let k = Kind::parse(kind)
            .unwrap_or_else(|| panic!("fake apiserver: delete: unsupported kind {kind:?}"));
        let ns = if k.namespaced() {
            namespace.unwrap_or("default").to_string()
        } else {
            String::new()
        };
        let mut st = self.shared.lock();
        let Some(mut object) = st.kind(k).objects.remove(&(ns, name.to_string())) else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        st.publish(
            k,
            Event {
                rv,
                ty: EventType::Deleted,
                object,
                prev: None,
            },
        );
        true
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
                        async move { Ok::<_, Infallible>(handle(&shared, req)) }
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
        match tail {
            [p] if *p == kind.plural() => Some(Route {
                kind,
                namespace,
                name: None,
            }),
            // A namespaced object is only addressable inside its namespace.
            [p, name]
                if *p == kind.plural()
                    && !name.is_empty()
                    && (namespace.is_some() || !kind.namespaced()) =>
            {
                Some(Route {
                    kind,
                    namespace,
                    name: Some(name.to_string()),
                })
            }
            _ => None,
        }
    })
}

fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let line = match req.uri().query() {
        Some(q) => format!("{} {path}?{q}", req.method()),
        None => format!("{} {path}", req.method()),
    };
    shared.lock().requests.push(line);
    let query = parse_query(req.uri().query().unwrap_or(""));
    if req.method() != Method::GET {
        return status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the fake API server only serves GET, not {}", req.method()),
            json!({}),
        );
    }
    let Some(route) = route(&path).filter(|r| !shared.lock().unserved.contains(&r.kind)) else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        );
    };
    let q = |k: &str| query.get(k).map(String::as_str);
    let mut filter = match Filter::parse(q("labelSelector"), q("fieldSelector")) {
        Ok(f) => f,
        Err(msg) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &msg, json!({})),
    };
    filter.namespace = route.namespace.clone();
    let watch = matches!(q("watch"), Some("true" | "1"));
    if let Some(name) = &route.name {
        if watch {
            filter.name = Some(name.clone());
        } else {
            return get_one(shared, &route, name);
        }
    }
    if watch {
        watch_response(shared, &route, &path, filter, &query)
    } else {
        list_response(shared, route.kind, &filter, q("limit"), q("continue"))
    }
}

fn get_one(shared: &Shared, route: &Route, name: &str) -> Response<Body> {
    let ns = route.namespace.clone().unwrap_or_default();
    let mut st = shared.lock();
    match st.kind(route.kind).objects.get(&(ns, name.to_string())) {
        Some(obj) => json_response(StatusCode::OK, obj),
        None => status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} \"{name}\" not found", route.kind.plural()),
            json!({"name": name, "kind": route.kind.plural()}),
        ),
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
