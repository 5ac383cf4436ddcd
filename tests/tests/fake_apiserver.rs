//! kube-rs against `svc_lab::fake_apiserver` over real HTTP: kube-runtime's `watcher` +
//! `reflector` with `watcher::Config::default()` and `.default_backoff()`, as an agent uses
//! them, plus a few raw HTTP checks of the protocol; the writes (create, replace, patches,
//! Server-Side Apply, delete, status subresources) through `kube::Api`, and
//! kube-lease-manager electing a Lease holder against it. Needs no root and no network
//! namespace.
//!
//! Reconnection after an outage is paced by kube-runtime's default backoff (client-go's:
//! 0.8 s doubling up to 30 s, each delay plus up to 100 % jitter, reset by any successful
//! event): after a 3 s outage the watcher is back within about 1–10 s of the server
//! returning, and a 410 costs one more backoff step before the relist. The waits below are
//! bounded accordingly; each test prints how long it took.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use svc_lab::fake_apiserver::FakeApiServer;

/// Longest any single test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// For things that need no reconnection.
const QUICK: Duration = Duration::from_secs(5);
/// Reconnection after a ~3 s outage: at most ~1.6 + 3.2 + 6.4 s of backoff, plus slack.
const RECONNECT: Duration = Duration::from_secs(30);
/// Reconnection, then a 410 and one more backoff step (up to 12.8 s) before the relist.
const RELIST: Duration = Duration::from_secs(50);

fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, f)
            .await
            .expect("test timed out")
    });
}

fn client(server: &FakeApiServer) -> Client {
    let config = kube::Config::new(server.url().parse().expect("server url"));
    Client::try_from(config).expect("kube client")
}

fn service(ns: &str, name: &str, port: u16, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": name},
        },
    })
}

fn slice(ns: &str, name: &str, svc: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": ips
            .iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

/// A reflector driven in the background, like an agent's; errors are collected.
struct Reflected<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Drop for Reflected<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Reflected<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let errs = errors.clone();
        let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    errs.lock().unwrap().push(format!("{e}: {e:?}"));
                }
            }
        });
        Reflected {
            store,
            errors,
            task,
        }
    }

    async fn ready(&self) {
        tokio::time::timeout(QUICK, self.store.wait_until_ready())
            .await
            .unwrap_or_else(|_| panic!("store not ready; errors: {:?}", self.errors()))
            .expect("writer dropped");
    }

    /// "namespace/name" of everything in the store.
    fn names(&self) -> BTreeSet<String> {
        self.store
            .state()
            .iter()
            .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            .collect()
    }

    fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&reflector::ObjectRef::new(name).within(ns))
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` and `context()` after `limit`.
/// Returns how long it took.
async fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn port_of(svc: &Service) -> i32 {
    svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port
}

/// Requests that are LISTs of `path` (no `watch` parameter).
fn lists_of(server: &FakeApiServer, path: &str) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| {
            let (p, q) = r
                .strip_prefix("GET ")
                .unwrap_or("")
                .split_once('?')
                .unwrap_or((r.strip_prefix("GET ").unwrap_or(""), ""));
            p == path && !q.split('&').any(|kv| kv.starts_with("watch="))
        })
        .collect()
}

fn watches_of(server: &FakeApiServer, path: &str) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with(&format!("GET {path}?")) && r.contains("watch=true"))
        .collect()
}

/// Sends a raw HTTP/1.1 GET and returns the status line and the decoded body once the server
/// ends the response. With `during`, waits until the server counts one more open watch,
/// then runs it (the request must be a watch that stays open).
fn raw_get(
    server: &FakeApiServer,
    path_query: &str,
    during: Option<&dyn Fn()>,
) -> (String, String) {
    let watches_before = server.open_watches();
    let mut s = std::net::TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path_query} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    if let Some(during) = during {
        let start = Instant::now();
        while server.open_watches() <= watches_before {
            assert!(start.elapsed() < QUICK, "the raw watch never opened");
            std::thread::sleep(Duration::from_millis(10));
        }
        during();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the raw response");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, mut rest) = raw.split_once("\r\n\r\n").expect("response head");
    let status = head.lines().next().unwrap_or("").to_string();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, rest.to_string());
    }
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("chunk end");
    }
    (status, body)
}

/// The events of a decoded watch body.
fn events(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn reflector_sees_adds_changes_and_deletes() {
    let server = FakeApiServer::start_local().unwrap();
    server.apply(service("default", "a", 80, json!({})));
    server.apply(service(
        "kube-system",
        "b",
        53,
        json!({"k8s-app": "kube-dns"}),
    ));
    server.apply(slice("default", "a-1", "a", &["10.244.1.11"]));
    run(async {
        let client = client(&server);
        let services = Reflected::start(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        );
        let slices = Reflected::start(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        );
        services.ready().await;
        slices.ready().await;
        assert_eq!(services.names(), set(&["default/a", "kube-system/b"]));
        assert_eq!(slices.names(), set(&["default/a-1"]));
        let ctx = || format!("requests: {:#?}", server.requests());

        // Added after the reflector started.
        server.apply(service("default", "c", 8080, json!({})));
        server.apply(slice("default", "a-2", "a", &["10.244.1.12"]));
        wait_until(
            "c in the store",
            QUICK,
            || services.get("default", "c").is_some(),
            ctx,
        )
        .await;
        wait_until(
            "a-2 in the store",
            QUICK,
            || slices.get("default", "a-2").is_some(),
            ctx,
        )
        .await;

        // Changed.
        let rv = server.apply(service("default", "a", 81, json!({})));
        wait_until(
            "a's new port in the store",
            QUICK,
            || {
                services
                    .get("default", "a")
                    .is_some_and(|s| port_of(&s) == 81)
            },
            ctx,
        )
        .await;
        let a = services.get("default", "a").unwrap();
        assert_eq!(
            a.metadata.resource_version.as_deref(),
            Some(rv.to_string().as_str())
        );
        assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
        server.apply(slice(
            "default",
            "a-1",
            "a",
            &["10.244.1.11", "10.244.1.13"],
        ));
        wait_until(
            "a-1's new endpoint in the store",
            QUICK,
            || {
                slices
                    .get("default", "a-1")
                    .is_some_and(|s| s.endpoints.as_ref().map(Vec::len) == Some(2))
            },
            ctx,
        )
        .await;

        // Deleted.
        assert!(server.delete("Service", Some("kube-system"), "b"));
        assert!(!server.delete("Service", Some("kube-system"), "b"));
        assert!(server.delete("EndpointSlice", Some("default"), "a-2"));
        wait_until(
            "b gone",
            QUICK,
            || services.get("kube-system", "b").is_none(),
            ctx,
        )
        .await;
        wait_until(
            "a-2 gone",
            QUICK,
            || slices.get("default", "a-2").is_none(),
            ctx,
        )
        .await;
        assert_eq!(services.names(), set(&["default/a", "default/c"]));
        assert_eq!(slices.names(), set(&["default/a-1"]));
        assert_eq!(services.errors(), Vec::<String>::new());
        assert_eq!(slices.errors(), Vec::<String>::new());
        assert_eq!(server.open_watches(), 2);
        assert_eq!(server.open_watches_on("/api/v1/services"), 1);

        // What kube-runtime asked for.
        let list = &lists_of(&server, "/api/v1/services")[0];
        assert!(list.contains("limit=500"), "{list}");
        let watch = &watches_of(&server, "/api/v1/services")[0];
        assert!(watch.contains("allowWatchBookmarks=true"), "{watch}");
        assert!(watch.contains("timeoutSeconds=290"), "{watch}");
        eprintln!("kube-runtime's requests: {:#?}", server.requests());

        // Plain gets, namespaced lists, cluster-scoped Nodes, and 404s.
        let default_svcs = Api::<Service>::namespaced(client.clone(), "default");
        assert_eq!(port_of(&default_svcs.get("a").await.unwrap()), 81);
        let names: Vec<String> = default_svcs
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(names, ["a", "c"]);
        match default_svcs.get("nope").await {
            Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
            other => panic!("expected a 404, got {other:?}"),
        }
        match Api::<ConfigMap>::all(client.clone())
            .list(&Default::default())
            .await
        {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
            other => panic!("expected a 404, got {other:?}"),
        }
        server.apply(json!({"kind": "Node", "metadata": {"name": "node1", "namespace": "x"}}));
        let node = Api::<Node>::all(client.clone()).get("node1").await.unwrap();
        assert_eq!(node.metadata.namespace, None);
    });
}

#[test]
fn paged_initial_list() {
    let server = FakeApiServer::start_local().unwrap();
    for i in 0..1203 {
        server.apply(service("default", &format!("s{i:04}"), 80, json!({})));
    }
    run(async {
        let services = Reflected::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default(),
        );
        services.ready().await;
        assert_eq!(services.store.state().len(), 1203);
        let lists = lists_of(&server, "/api/v1/services");
        assert_eq!(lists.len(), 3, "{lists:#?}");
        assert!(
            lists[1].contains("continue=") && lists[2].contains("continue="),
            "{lists:#?}"
        );
        server.apply(service("default", "late", 80, json!({})));
        wait_until(
            "late in the store",
            QUICK,
            || services.get("default", "late").is_some(),
            String::new,
        )
        .await;
    });
}

#[test]
fn watch_resumes_after_outage_from_history() {
    let server = FakeApiServer::start_local().unwrap();
    server.apply(service("default", "a", 80, json!({})));
    server.apply(service("default", "b", 80, json!({})));
    run(async {
        let services = Reflected::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default(),
        );
        services.ready().await;
        let ctx = || {
            format!(
                "errors: {:#?}\nrequests: {:#?}",
                services.errors(),
                server.requests()
            )
        };
        wait_until("the watch", QUICK, || server.open_watches() == 1, ctx).await;
        let rv_before = server.resource_version();

        server.set_available(false).unwrap();
        wait_until("watches cut", QUICK, || server.open_watches() == 0, ctx).await;
        let refused = std::net::TcpStream::connect(server.addr()).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(server.delete("Service", None, "a"));
        server.apply(service("default", "c", 80, json!({})));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            services.names(),
            set(&["default/a", "default/b"]),
            "no one saw the changes"
        );
        let lists_before = lists_of(&server, "/api/v1/services").len();

        server.set_available(true).unwrap();
        let took = wait_until(
            "the store to catch up after the outage",
            RECONNECT,
            || services.names() == set(&["default/b", "default/c"]),
            ctx,
        )
        .await;
        eprintln!(
            "outage of 3 s: the reflector caught up {took:?} after the server came back; \
             errors meanwhile: {:#?}",
            services.errors()
        );
        // Through the watch history, not a relist.
        assert_eq!(
            lists_of(&server, "/api/v1/services").len(),
            lists_before,
            "{}",
            ctx()
        );
        let resumed = watches_of(&server, "/api/v1/services");
        let last = resumed.last().unwrap();
        let needle = format!("resourceVersion={rv_before}");
        assert!(last.split(['?', '&']).any(|kv| kv == needle), "{last}");
        wait_until("the watch again", QUICK, || server.open_watches() == 1, ctx).await;
    });
}

#[test]
fn relists_after_410_gone() {
    let server = FakeApiServer::start_local().unwrap();
    server.apply(service("default", "a", 80, json!({})));
    server.apply(service("default", "b", 80, json!({})));
    run(async {
        let services = Reflected::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default(),
        );
        services.ready().await;
        let ctx = || {
            format!(
                "errors: {:#?}\nrequests: {:#?}",
                services.errors(),
                server.requests()
            )
        };
        wait_until("the watch", QUICK, || server.open_watches() == 1, ctx).await;

        server.set_available(false).unwrap();
        assert!(server.delete("Service", None, "a"));
        server.apply(service("default", "c", 80, json!({})));
        server.expire_history();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            services.names(),
            set(&["default/a", "default/b"]),
            "no one saw the changes"
        );
        assert_eq!(lists_of(&server, "/api/v1/services").len(), 1);

        server.set_available(true).unwrap();
        let took = wait_until(
            "the store to be right after the 410",
            RELIST,
            || services.names() == set(&["default/b", "default/c"]),
            ctx,
        )
        .await;
        eprintln!(
            "outage of 3 s + 410: the reflector was right {took:?} after the server came back; \
             errors meanwhile: {:#?}",
            services.errors()
        );
        assert_eq!(lists_of(&server, "/api/v1/services").len(), 2, "{}", ctx());
        assert!(
            services
                .errors()
                .iter()
                .any(|e| e.contains("too old resource version")),
            "{}",
            ctx()
        );
        wait_until("the watch again", QUICK, || server.open_watches() == 1, ctx).await;
    });
}

#[test]
fn bookmarks_and_selectors() {
    const PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
    let server = FakeApiServer::start_local().unwrap();
    server.apply(service("default", "a", 80, json!({})));
    server.apply(service("default", "b", 80, json!({})));
    server.apply(service("default", "p", 80, json!({PROXY_NAME: "other"})));
    run(async {
        let client = client(&server);
        let only_b = Reflected::start(
            Api::<Service>::all(client.clone()),
            watcher::Config::default().fields("metadata.name=b"),
        );
        let ours = Reflected::start(
            Api::<Service>::all(client.clone()),
            watcher::Config::default().labels(&format!("!{PROXY_NAME}")),
        );
        only_b.ready().await;
        ours.ready().await;
        assert_eq!(only_b.names(), set(&["default/b"]));
        assert_eq!(ours.names(), set(&["default/a", "default/b"]));
        let ctx = || {
            format!(
                "errors: {:?} {:?}\nrequests: {:#?}",
                only_b.errors(),
                ours.errors(),
                server.requests()
            )
        };
        wait_until("both watches", QUICK, || server.open_watches() == 2, ctx).await;

        // A bookmark moves the watchers' resourceVersion on: bump the global RV with an
        // EndpointSlice (no Service event), bookmark, and cut the connections; both watchers
        // resume from the bookmark's RV.
        let rv_bm = server.apply(slice("default", "x-1", "x", &["10.244.1.11"]));
        server.send_bookmarks();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.set_available(false).unwrap();
        server.set_available(true).unwrap();
        let needle = format!("resourceVersion={rv_bm}");
        let took = wait_until(
            "both watchers to resume from the bookmark",
            RECONNECT,
            || {
                watches_of(&server, "/api/v1/services")
                    .iter()
                    .filter(|w| w.split(['?', '&']).any(|kv| kv == needle))
                    .count()
                    == 2
            },
            ctx,
        )
        .await;
        eprintln!("immediate reconnect after a cut took {took:?}");
        for e in only_b.errors().iter().chain(ours.errors().iter()) {
            assert!(
                !e.to_lowercase().contains("serde"),
                "bookmark rejected? {e}"
            );
        }
        wait_until(
            "both watches again",
            RECONNECT,
            || server.open_watches() == 2,
            ctx,
        )
        .await;

        // Field selector: changes to others are not seen, b's are.
        server.apply(service("default", "a", 81, json!({})));
        server.apply(service("default", "d", 80, json!({})));
        server.apply(service("default", "b", 82, json!({})));
        wait_until(
            "b's change",
            QUICK,
            || {
                only_b
                    .get("default", "b")
                    .is_some_and(|s| port_of(&s) == 82)
            },
            ctx,
        )
        .await;
        assert_eq!(only_b.names(), set(&["default/b"]));

        // Label selector: labelling a Service out of the selection deletes it from the store,
        // unlabelling one brings it in.
        server.apply(service("default", "a", 81, json!({PROXY_NAME: "other"})));
        server.apply(service("default", "p", 80, json!({})));
        wait_until(
            "a out, p in",
            QUICK,
            || ours.names() == set(&["default/b", "default/d", "default/p"]),
            ctx,
        )
        .await;
        assert_eq!(only_b.names(), set(&["default/b"]));
    });
}

#[test]
fn raw_protocol() {
    let server = FakeApiServer::start_local().unwrap();
    server.apply(service("default", "a", 80, json!({})));
    let rv = server.apply(service("default", "b", 80, json!({"app": "x"})));

    // A list carries apiVersion/kind on the list and its items, and RVs as strings.
    let (status, body) = raw_get(&server, "/api/v1/services?labelSelector=app%3Dx", None);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "ServiceList");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["metadata"]["resourceVersion"], rv.to_string());
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["kind"], "Service");
    assert_eq!(v["items"][0]["apiVersion"], "v1");
    assert_eq!(v["items"][0]["metadata"]["resourceVersion"], rv.to_string());
    // Paging by hand.
    let (_, body) = raw_get(&server, "/api/v1/namespaces/default/services?limit=1", None);
    let page1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page1["items"][0]["metadata"]["name"], "a");
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    server.apply(service("default", "c", 80, json!({})));
    let (_, body) = raw_get(
        &server,
        &format!("/api/v1/namespaces/default/services?limit=1&continue={token}"),
        None,
    );
    let page2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page2["items"][0]["metadata"]["name"], "b");
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        rv.to_string(),
        "pinned to page 1's RV"
    );
    assert!(server.delete("Service", None, "c"));

    // Bookmarks only for watches that asked; the stream ends after timeoutSeconds.
    let start = Instant::now();
    let (_, no_bm) = raw_get(
        &server,
        &format!("/api/v1/services?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        Some(&|| server.send_bookmarks()),
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    // c's ADDED and DELETED, replayed.
    assert_eq!(types(&events(&no_bm)), ["ADDED", "DELETED"], "{no_bm}");
    let now = server.resource_version();
    let (_, bm) = raw_get(
        &server,
        &format!(
            "/api/v1/services?watch=true&resourceVersion={now}&allowWatchBookmarks=true&timeoutSeconds=1"
        ),
        Some(&|| server.send_bookmarks()),
    );
    assert_eq!(
        events(&bm),
        [
            json!({"type": "BOOKMARK", "object": {"kind": "Service", "apiVersion": "v1",
            "metadata": {"resourceVersion": now.to_string()}}})
        ]
    );

    // resourceVersion 0: synthetic ADDED for what exists; RV 1: replay from RV 2 on.
    let (_, from0) = raw_get(
        &server,
        "/api/v1/services?watch=true&resourceVersion=0&timeoutSeconds=1",
        Some(&|| ()),
    );
    assert_eq!(types(&events(&from0)), ["ADDED", "ADDED"], "{from0}");
    let (_, from1) = raw_get(
        &server,
        "/api/v1/services?watch=1&resourceVersion=1&timeoutSeconds=1",
        Some(&|| ()),
    );
    let from1 = events(&from1);
    assert_eq!(types(&from1), ["ADDED", "ADDED", "DELETED"]);
    assert_eq!(from1[0]["object"]["metadata"]["name"], "b");

    // After compaction: one ERROR event with a 410 Status, and the stream ends at once.
    server.expire_history();
    let start = Instant::now();
    let (status, gone) = raw_get(
        &server,
        "/api/v1/services?watch=true&resourceVersion=1&timeoutSeconds=30",
        None,
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the 410 stream did not end"
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        events(&gone),
        [
            json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
            "message": format!("too old resource version: 1 ({now})")}})
        ]
    );
    // The current RV is not too old.
    let (_, current) = raw_get(
        &server,
        &format!("/api/v1/services?watch=true&resourceVersion={now}&timeoutSeconds=1"),
        Some(&|| ()),
    );
    assert_eq!(current, "");

    let (status, nf) = raw_get(&server, "/api/v1/pods", None);
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let nf: Value = serde_json::from_str(&nf).unwrap();
    assert_eq!(
        (nf["kind"].as_str(), nf["code"].as_u64()),
        (Some("Status"), Some(404))
    );
    assert!(server.requests().iter().any(|r| r == "GET /api/v1/pods"));
}

/// A thread (and the processes it starts) in network namespace `ns`.
fn in_ns<T: Send>(ns: &std::fs::File, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd as _;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on an open namespace fd, for this thread only.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    })
}

/// The server is started in a network namespace of its own (as a lab node's API server
/// would be) but switched off and on from a thread in the root namespace: it must listen
/// again inside its namespace. Needs root (unshare); skipped otherwise.
#[test]
fn set_available_rebinds_in_the_listeners_netns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let (server, ns) = std::thread::spawn(|| {
        // SAFETY: moves only this thread into a new, anonymous network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip link set lo up");
        assert!(up.success());
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (FakeApiServer::start(listener).unwrap(), ns)
    })
    .join()
    .unwrap();
    server.apply(service("default", "a", 80, json!({})));
    let list_names = || {
        let (status, body) = raw_get(&server, "/api/v1/services", None);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(in_ns(&ns, list_names), ["a"]);

    server.set_available(false).unwrap();
    let refused = in_ns(&ns, || {
        std::net::TcpStream::connect(server.addr()).unwrap_err()
    });
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    server.apply(service("default", "b", 80, json!({})));
    server.set_available(true).unwrap();
    assert_eq!(in_ns(&ns, list_names), ["a", "b"]);
    // Not in the root namespace.
    assert!(std::net::TcpStream::connect(server.addr()).is_err());
}

/// The cluster-scoped ServiceCIDR kind (networking.k8s.io/v1), and a kind the server stops
/// serving: 404 for lists and watches, as from an API server that does not know it.
#[test]
fn service_cidrs_and_a_kind_not_served() {
    run(async {
        let server = FakeApiServer::start_local().expect("start fake API server");
        server.apply(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "ServiceCIDR",
            // A cluster-scoped object's namespace is dropped.
            "metadata": {"name": "kubernetes", "namespace": "ignored"},
            "spec": {"cidrs": ["10.96.0.0/12"]},
        }));
        let api: Api<ServiceCIDR> = Api::all(client(&server));
        let r = Reflected::start(api, watcher::Config::default());
        r.ready().await;
        assert_eq!(r.names(), set(&["/kubernetes"]));
        let got = r
            .store
            .get(&reflector::ObjectRef::new("kubernetes"))
            .expect("the ServiceCIDR");
        assert_eq!(
            got.spec.as_ref().unwrap().cidrs.as_deref(),
            Some(&["10.96.0.0/12".to_string()][..])
        );
        server.apply(json!({
            "kind": "ServiceCIDR",
            "metadata": {"name": "extra"},
            "spec": {"cidrs": ["172.30.0.0/16"]},
        }));
        wait_until(
            "the second ServiceCIDR",
            QUICK,
            || r.names().len() == 2,
            || format!("{:?}", r.names()),
        )
        .await;
        assert!(server.delete("ServiceCIDR", None, "extra"));
        wait_until(
            "the deletion",
            QUICK,
            || r.names().len() == 1,
            || format!("{:?}", r.names()),
        )
        .await;

        // Not served: a 404 Status for lists, gets and watches; served again: 200.
        server.set_served("ServiceCIDR", false);
        for path in [
            "/apis/networking.k8s.io/v1/servicecidrs",
            "/apis/networking.k8s.io/v1/servicecidrs/kubernetes",
            "/apis/networking.k8s.io/v1/servicecidrs?watch=true&resourceVersion=1",
        ] {
            let (status, body) = raw_get(&server, path, None);
            assert!(status.contains(" 404 "), "{path}: {status}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (body["kind"].as_str(), body["code"].as_u64()),
                (Some("Status"), Some(404))
            );
        }
        let api: Api<ServiceCIDR> = Api::all(client(&server));
        let e = api.list(&Default::default()).await.unwrap_err();
        assert!(matches!(&e, kube::Error::Api(s) if s.code == 404), "{e:?}");
        server.set_served("ServiceCIDR", true);
        let (status, _) = raw_get(&server, "/apis/networking.k8s.io/v1/servicecidrs", None);
        assert!(status.contains(" 200 "), "{status}");
    });
}

/// The next event of a raw `Api::watch` stream, within [`QUICK`].
async fn next_event<K: Debug>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    tokio::time::timeout(QUICK, stream.next())
        .await
        .expect("no watch event in time")
        .expect("the watch ended")
        .expect("a watch error")
}

/// The `kube::Error::Api` of a failed call, as (code, reason, message).
fn api_error<T: Debug>(r: kube::Result<T>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

/// Service status writes as the LB IPAM writer makes them (`patch_status` with a merge
/// patch), the status split both ways, a no-op write, and optimistic concurrency.
#[test]
fn service_status_subresource() {
    run(async {
        let server = FakeApiServer::start_local().expect("start fake API server");
        server.apply(service("default", "web", 80, json!({})));
        let api: Api<Service> = Api::namespaced(client(&server), "default");
        let rv = server.resource_version().to_string();
        let mut events = api
            .watch(&WatchParams::default().timeout(20), &rv)
            .await
            .expect("watch")
            .boxed();

        // A status write changes the status only: the spec in the same patch is ignored.
        let patch = json!({
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
            "spec": {"clusterIP": "10.96.99.99"},
        });
        let pp = PatchParams::apply("svc-agent-lbipam");
        let got = api
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch_status");
        assert_eq!(ingress_ips(&got), ["192.0.2.10"]);
        assert_eq!(
            got.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("10.96.0.10")
        );
        match next_event(&mut events).await {
            WatchEvent::Modified(s) => assert_eq!(ingress_ips(&s), ["192.0.2.10"]),
            other => panic!("expected MODIFIED, got {other:?}"),
        }
        let path = "/api/v1/namespaces/default/services/web/status";
        assert_eq!(server.count_requests("PATCH", path), 1);
        let stored = server.get("Service", None, "web").expect("stored");
        assert_eq!(stored["spec"]["clusterIP"], "10.96.0.10");

        // The same status again changes nothing: no new resourceVersion, no event.
        let rv_before = server.resource_version();
        let again = api
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch_status again");
        assert_eq!(server.resource_version(), rv_before);
        assert_eq!(again.resource_version(), got.resource_version());
        assert_eq!(server.count_requests("PATCH", path), 2);

        // A write to the Service itself keeps the stored status, whatever its body says.
        let patch = json!({"spec": {"ports": [{"port": 81, "protocol": "TCP"}]}, "status": null});
        let got = api
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
        assert_eq!(port_of(&got), 81);
        assert_eq!(ingress_ips(&got), ["192.0.2.10"]);
        match next_event(&mut events).await {
            WatchEvent::Modified(s) => assert_eq!((port_of(&s), ingress_ips(&s).len()), (81, 1)),
            other => panic!("expected MODIFIED, got {other:?}"),
        }

        // Replace (PUT) with a stale resourceVersion: 409 Conflict; with the current one: OK.
        let mut stale = got.clone();
        stale.metadata.resource_version = Some(rv.clone());
        let (code, reason, message) =
            api_error(api.replace("web", &PostParams::default(), &stale).await);
        assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
        let mut status_only = got.clone();
        status_only.status.as_mut().unwrap().load_balancer = Some(Default::default());
        status_only.spec.as_mut().unwrap().cluster_ip = Some("10.96.1.1".into());
        let replaced = api
            .replace_status("web", &PostParams::default(), &status_only)
            .await
            .expect("replace_status");
        assert!(ingress_ips(&replaced).is_empty());
        assert_eq!(
            replaced.spec.unwrap().cluster_ip.as_deref(),
            Some("10.96.0.10")
        );
        let (code, reason, _) = api_error(
            api.replace_status("web", &PostParams::default(), &status_only)
                .await,
        );
        assert_eq!(
            (code, reason.as_str()),
            (409, "Conflict"),
            "stale replace_status"
        );

        // Server-Side Apply of the status: the field manager owns the ingress list.
        let apply = json!({
            "apiVersion": "v1", "kind": "Service",
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.11"}]}},
        });
        let got = api
            .patch_status("web", &pp, &Patch::Apply(&apply))
            .await
            .expect("apply status");
        assert_eq!(ingress_ips(&got), ["192.0.2.11"]);
        assert!(
            server.field_owners("Service", None, "web").contains(&(
                ".status.loadBalancer.ingress".into(),
                "svc-agent-lbipam".into(),
                "Apply".into()
            )),
            "{:?}",
            server.field_owners("Service", None, "web")
        );
        // JSON patch is not supported: a 415 Status, not a panic.
        let (code, _, _) = api_error(
            api.patch(
                "web",
                &PatchParams::default(),
                &Patch::Json::<()>(Default::default()),
            )
            .await,
        );
        assert_eq!(code, 415);
    });
}

/// Create, create again (409 AlreadyExists), delete (watchers see DELETED, a second delete
/// is a 404), PATCH of a missing object (404) and an apply that creates.
#[test]
fn create_conflict_and_delete() {
    run(async {
        let server = FakeApiServer::start_local().expect("start fake API server");
        let api: Api<Lease> = Api::namespaced(client(&server), "kube-system");
        let mut events = api
            .watch(&WatchParams::default().timeout(20), "0")
            .await
            .expect("watch")
            .boxed();
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "l1", "labels": {"a": "b"}},
            "spec": {"holderIdentity": "x"},
        }))
        .unwrap();
        let created = api
            .create(&PostParams::default(), &lease)
            .await
            .expect("create");
        assert_eq!(created.namespace().as_deref(), Some("kube-system"));
        assert!(created.uid().is_some() && created.resource_version().is_some());
        assert!(
            matches!(next_event(&mut events).await, WatchEvent::Added(l) if l.name_any() == "l1")
        );
        let (code, reason, message) = api_error(api.create(&PostParams::default(), &lease).await);
        assert_eq!((code, reason.as_str()), (409, "AlreadyExists"), "{message}");
        assert_eq!(message, "leases.coordination.k8s.io \"l1\" already exists");

        let deleted = api.delete("l1", &Default::default()).await.expect("delete");
        assert!(deleted.left().is_some_and(|l| l.name_any() == "l1"));
        assert!(
            matches!(next_event(&mut events).await, WatchEvent::Deleted(l) if l.name_any() == "l1")
        );
        assert!(server.get("Lease", Some("kube-system"), "l1").is_none());
        let (code, reason, _) = api_error(api.delete("l1", &Default::default()).await);
        assert_eq!((code, reason.as_str()), (404, "NotFound"));
        let patch = json!({"spec": {"holderIdentity": "y"}});
        let (code, _, _) = api_error(
            api.patch("l1", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
        assert_eq!(code, 404);

        // An apply creates the missing object; a create then conflicts with it.
        let apply = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "spec": {"holderIdentity": "y"},
        });
        let got = api
            .patch("l1", &PatchParams::apply("m"), &Patch::Apply(&apply))
            .await
            .expect("apply creates");
        assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("y"));
        assert!(matches!(
            next_event(&mut events).await,
            WatchEvent::Added(_)
        ));
        // A new object: a new uid.
        assert_ne!(got.metadata.uid, created.metadata.uid);
        assert_eq!(server.list("Lease").len(), 1);
        // Bad input is a 400 Status: an apply without apiVersion/kind.
        let (code, reason, _) = api_error(
            api.patch(
                "l1",
                &PatchParams::apply("m"),
                &Patch::Apply(json!({"spec": {}})),
            )
            .await,
        );
        assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    });
}

/// The LoadBalancerIPPool custom resource through `Api<DynamicObject>`, as the agent will
/// use it: list, get, watch, create, the status subresource; no strategic merge patch for
/// a custom resource; not served as in a cluster without the CRD.
#[test]
fn lb_ip_pools_as_dynamic_objects() {
    run(async {
        let server = FakeApiServer::start_local().expect("start fake API server");
        server.apply(json!({
            "apiVersion": "svc-ebpf.dev/v1alpha1",
            "kind": "LoadBalancerIPPool",
            "metadata": {"name": "blue"},
            "spec": {"blocks": [{"cidr": "192.0.2.0/28"}]},
        }));
        let gvk = GroupVersionKind::gvk("svc-ebpf.dev", "v1alpha1", "LoadBalancerIPPool");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "loadbalancerippools");
        let api: Api<DynamicObject> = Api::all_with(client(&server), &ar);

        let list = api.list(&Default::default()).await.expect("list");
        assert_eq!(list.items.len(), 1);
        let blue = api.get("blue").await.expect("get");
        assert_eq!(blue.data["spec"]["blocks"][0]["cidr"], "192.0.2.0/28");
        assert_eq!(blue.metadata.namespace, None);

        let mut events = api
            .watch(&WatchParams::default().timeout(20), "0")
            .await
            .expect("watch")
            .boxed();
        assert!(
            matches!(next_event(&mut events).await, WatchEvent::Added(p) if p.name_any() == "blue")
        );
        let mut green = DynamicObject::new("green", &ar);
        green.data =
            json!({"spec": {"blocks": [{"start": "198.51.100.1", "stop": "198.51.100.9"}]}});
        api.create(&PostParams::default(), &green)
            .await
            .expect("create");
        assert!(
            matches!(next_event(&mut events).await, WatchEvent::Added(p) if p.name_any() == "green")
        );
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let got = api
            .patch_status("green", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("patch_status");
        assert_eq!(got.data["status"]["conditions"][0]["type"], "Ready");
        assert!(matches!(
            next_event(&mut events).await,
            WatchEvent::Modified(_)
        ));
        let (code, reason, _) = api_error(
            api.patch(
                "green",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {}})),
            )
            .await,
        );
        assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
        assert_eq!(server.list("LoadBalancerIPPool").len(), 2);

        server.set_served("LoadBalancerIPPool", false);
        let (code, _, _) = api_error(api.list(&Default::default()).await);
        assert_eq!(code, 404);
        let (code, _, _) = api_error(api.create(&PostParams::default(), &green).await);
        assert_eq!(code, 404);
        server.set_served("LoadBalancerIPPool", true);
        assert_eq!(
            api.list(&Default::default())
                .await
                .expect("list")
                .items
                .len(),
            2
        );
    });
}

/// Lease duration and grace of the election tests (kube-lease-manager's own tests use these).
const LEASE_SECS: u64 = 2;
const GRACE_SECS: u64 = 1;
/// How long after the lease expires another manager may take to take it: kube-lease-manager
/// forces the release of an expired lease, sleeps 0.1–1 s (random), then takes it.
const TAKEOVER_SLACK: Duration = Duration::from_millis(1500);

/// One kube-lease-manager in watch mode, as the agent runs it.
struct Elector {
    identity: String,
    state: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Elector {
    async fn start(server: &FakeApiServer, lease: &str, identity: &str) -> Elector {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client(server), lease)
            .with_namespace("kube-system")
            .with_identity(identity)
            .with_duration(LEASE_SECS)
            .with_grace(GRACE_SECS)
            .build()
            .await
            .unwrap_or_else(|e| panic!("{identity}: building the lease manager: {e}"));
        let (state, task) = manager.watch().await;
        Elector {
            identity: identity.to_string(),
            state,
            task,
        }
    }

    fn holds(&self) -> bool {
        *self.state.borrow()
    }
}

fn holder(server: &FakeApiServer, lease: &str) -> Option<String> {
    let l = server.get("Lease", Some("kube-system"), lease)?;
    l["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The field manager that applied the Lease's `.spec.holderIdentity`.
fn holder_applier(server: &FakeApiServer, lease: &str) -> Option<String> {
    server
        .field_owners("Lease", Some("kube-system"), lease)
        .into_iter()
        .find(|(field, _, op)| field == ".spec.holderIdentity" && op == "Apply")
        .map(|(_, manager, _)| manager)
}

/// Both managers for `LEASE_SECS` + 1 s: never more than one thinks it holds the lease,
/// and at the end exactly one does, the one the Lease names. Returns its index.
async fn one_holder(server: &FakeApiServer, lease: &str, e: &[&Elector; 2]) -> usize {
    wait_until(
        "one manager to take the lease",
        QUICK,
        || e.iter().any(|e| e.holds()),
        || {
            format!(
                "lease: {:?}",
                server.get("Lease", Some("kube-system"), lease)
            )
        },
    )
    .await;
    let until = Instant::now() + Duration::from_secs(LEASE_SECS + 1);
    while Instant::now() < until {
        let holding: Vec<&str> = e
            .iter()
            .filter(|e| e.holds())
            .map(|e| e.identity.as_str())
            .collect();
        assert!(holding.len() <= 1, "two holders at once: {holding:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let i = e
        .iter()
        .position(|e| e.holds())
        .expect("a holder at the end");
    assert!(!e[1 - i].holds());
    assert_eq!(
        holder(server, lease).as_deref(),
        Some(e[i].identity.as_str())
    );
    i
}

/// (a) Two managers, one lease: exactly one holds it (they also race to create the Lease:
/// one gets 409 AlreadyExists). (b) The holder's task is aborted (a crash: no release): the
/// other takes over once the lease expires. The Lease counts the transitions.
#[test]
fn lease_managers_elect_one_and_fail_over_after_a_crash() {
    run(async {
        let server = FakeApiServer::start_local().expect("start fake API server");
        let (a, b) = tokio::join!(
            Elector::start(&server, "lbipam", "node-a"),
            Elector::start(&server, "lbipam", "node-b")
        );
        let creates = server.count_requests(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
        );
        assert!((1..=2).contains(&creates), "{creates} creates");
        let e = [a, b];
        let i = one_holder(&server, "lbipam", &[&e[0], &e[1]]).await;
        let transitions = |server: &FakeApiServer| {
            server.get("Lease", Some("kube-system"), "lbipam").unwrap()["spec"]["leaseTransitions"]
                .as_i64()
                .unwrap_or(0)
        };
        assert_eq!(transitions(&server), 1);

        // Crash of the holder: its task is gone, the Lease still names it until it expires.
        let crashed = e[i].identity.clone();
        let crashed_owner = holder_applier(&server, "lbipam").expect("the holder applied it");
        e[i].task.abort();
        let aborted = Instant::now();
        assert_eq!(holder(&server, "lbipam").as_deref(), Some(crashed.as_str()));
        // When the crashed holder's lease expires: its last renewal plus the duration.
        let lease: Lease =
            serde_json::from_value(server.get("Lease", Some("kube-system"), "lbipam").unwrap())
                .expect("a Lease");
        let renewed = lease.spec.unwrap().renew_time.expect("renewTime").0;
        let expiry = std::time::SystemTime::from(renewed) + Duration::from_secs(LEASE_SECS);
        let other = &e[1 - i];
        wait_until(
            "the other manager to take over",
            Duration::from_secs(LEASE_SECS) + TAKEOVER_SLACK,
            || other.holds(),
            || {
                format!(
                    "lease: {:?}",
                    server.get("Lease", Some("kube-system"), "lbipam")
                )
            },
        )
        .await;
        println!(
            "{} took over {:?} after {crashed}'s task was aborted (lease {LEASE_SECS} s)",
            other.identity,
            aborted.elapsed()
        );
        let early = expiry.duration_since(std::time::SystemTime::now());
        assert!(
            early.is_err(),
            "taken over {early:?} before the lease expired"
        );
        assert_eq!(
            holder(&server, "lbipam").as_deref(),
            Some(other.identity.as_str())
        );
        assert_eq!(transitions(&server), 2);
        // The crashed holder's field ownership went with the other's forced release (nulls
        // remove the fields and their owners), so its apply met no conflict; the new holder
        // owns the holder field.
        let owners = server.field_owners("Lease", Some("kube-system"), "lbipam");
        let new_owner = holder_applier(&server, "lbipam").expect("the new holder applied it");
        assert!(
            !owners.iter().any(|(_, m, _)| *m == crashed_owner),
            "{crashed_owner} still owns: {owners:?}"
        );
        assert_ne!(new_owner, crashed_owner);
    });
}

/// (c) A clean release (the holder drops its state channel: the manager releases the lease
/// and ends) is taken over when the other manager looks again: kube-lease-manager does not
/// watch the Lease, it sleeps until the expiry it last saw, so within the lease duration
/// (plus slack). (d) A Server-Side Apply of another holderIdentity by another field
/// manager is a 409 Conflict naming the field and the owner; forced, it takes the lease and
/// the holder notices it lost it.
#[test]
fn lease_manager_clean_release_and_apply_conflicts() {
    run(async {
        let server = FakeApiServer::start_local().expect("start fake API server");
        let (a, b) = tokio::join!(
            Elector::start(&server, "l2", "node-a"),
            Elector::start(&server, "l2", "node-b")
        );
        let [a, b] = [a, b];
        let i = one_holder(&server, "l2", &[&a, &b]).await;
        let (holder_e, other) = if i == 0 { (a, b) } else { (b, a) };
        let Elector {
            identity: released,
            state,
            task,
        } = holder_e;
        drop(state);
        let dropped = Instant::now();
        let manager = tokio::time::timeout(QUICK, task)
            .await
            .expect("the manager's task ends after its channel is dropped")
            .expect("task")
            .expect("a clean release");
        drop(manager);
        println!("{released} released the lease in {:?}", dropped.elapsed());
        wait_until(
            "the other manager to take the released lease",
            Duration::from_secs(LEASE_SECS + 1),
            || other.holds(),
            || {
                format!(
                    "lease: {:?}",
                    server.get("Lease", Some("kube-system"), "l2")
                )
            },
        )
        .await;
        println!(
            "{} took the released lease {:?} after the release",
            other.identity,
            dropped.elapsed()
        );
        assert_eq!(
            holder(&server, "l2").as_deref(),
            Some(other.identity.as_str())
        );

        // (d) Another field manager applies another holder: a conflict.
        let api: Api<Lease> = Api::namespaced(client(&server), "kube-system");
        let intruder = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "spec": {"holderIdentity": "intruder"},
        });
        let (code, reason, message) = api_error(
            api.patch(
                "l2",
                &PatchParams::apply("intruder"),
                &Patch::Apply(&intruder),
            )
            .await,
        );
        assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
        // kube-lease-manager's field manager is "kube-lease-manager-" and a random string
        // (`with_identity` does not change it).
        assert!(
            message.contains(".spec.holderIdentity")
                && message.contains("conflict with \"kube-lease-manager-"),
            "{message}"
        );
        assert_eq!(
            holder(&server, "l2").as_deref(),
            Some(other.identity.as_str())
        );
        // The same value is no conflict (shared ownership).
        let same = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "spec": {"holderIdentity": other.identity},
        });
        api.patch("l2", &PatchParams::apply("observer"), &Patch::Apply(&same))
            .await
            .expect("applying the same holder");
        // Forced, the apply takes the field: the holder finds out at its next renewal.
        api.patch(
            "l2",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&intruder),
        )
        .await
        .expect("forced apply");
        let lost = wait_until(
            "the holder to see it lost the lease",
            Duration::from_secs(LEASE_SECS) + Duration::from_millis(500),
            || !other.holds(),
            || {
                format!(
                    "lease: {:?}",
                    server.get("Lease", Some("kube-system"), "l2")
                )
            },
        )
        .await;
        println!("{} saw the forced apply after {lost:?}", other.identity);
        other.task.abort();
    });
}

/// Sends one raw HTTP/1.1 request with a body; returns the status code and the JSON body.
fn raw_send(
    server: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .expect("reading the raw response");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("response head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, serde_json::from_str(rest).unwrap_or(Value::Null))
}

/// Bad client input is a 4xx with a `Status` body, never a panic or a hang.
#[test]
fn bad_writes_get_a_status() {
    let server = FakeApiServer::start_local().expect("start fake API server");
    server.apply(service("default", "web", 80, json!({})));
    let svc = "/api/v1/namespaces/default/services/web";
    let leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let merge = "application/merge-patch+json";
    for (method, path, content_type, body, want) in [
        ("PATCH", svc, merge, "{not json", 400),
        ("PATCH", svc, merge, "[1]", 400),
        ("PATCH", svc, "application/json-patch+json", "[]", 415),
        ("PATCH", svc, "application/apply-patch+yaml", "{}", 400), // no fieldManager
        ("PUT", svc, "application/yaml", "kind: Service", 415),
        (
            "PUT",
            svc,
            "application/json",
            r#"{"metadata":{"name":"other"}}"#,
            400,
        ),
        (
            "POST",
            leases,
            "application/json",
            r#"{"metadata":{}}"#,
            400,
        ), // no name
        ("POST", "/api/v1/services", "application/json", "{}", 405), // no namespace
        ("POST", svc, "application/json", "{}", 405),
        ("DELETE", "/api/v1/nodes", "application/json", "", 405),
        (
            "PUT",
            &format!("{leases}/missing"),
            "application/json",
            "{}",
            404,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            merge,
            "{}",
            404,
        ),
    ] {
        let (code, status) = raw_send(&server, method, path, content_type, body);
        assert_eq!(
            code, want,
            "{method} {path} {content_type} {body}: {status}"
        );
        assert_eq!(
            (status["kind"].as_str(), status["code"].as_u64()),
            (Some("Status"), Some(u64::from(want))),
            "{status}"
        );
    }
    // Nothing was changed.
    assert_eq!(server.resource_version(), 1);
}
