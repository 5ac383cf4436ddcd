//! End to end in Kubernetes mode: the real svc-agent watches an in-process API server
//! (`svc_lab::fake_apiserver`, real HTTP, kube-rs on the agent's side) from a lab node, and
//! real packets follow what the API holds:
//! - objects added, changed and deleted reach the maps;
//! - the API server disappears for 10 s while traffic flows: traffic keeps flowing on the
//!   last state, and objects deleted meanwhile are removed once it is back;
//! - a watch that resumes after the history was compacted gets 410 Gone and relists;
//! - an agent restarted while the API server is down leaves the pinned state alone (no
//!   pruning before a complete list) and serves /healthz 503 (/livez 200) until it has
//!   synced;
//! - /healthz, /livez and /metrics answer as documented;
//! - two Services a buggy controller gave one ClusterIP: the older keeps it whatever the
//!   names, and a served address stays with the Service serving it (issue 11).
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::{
    Lab, TcpSession,
    agent::{AgentSource, LabAgent, wait_for},
    fake_apiserver::FakeApiServer,
    http_get, in_netns, tcp_request, udp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());

const ECHO_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const GONE_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const FRESH_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
const TIMEOUT: Duration = Duration::from_secs(2);
/// kube-runtime's default backoff grows to 30 s (with jitter) after repeated failures.
const RECONNECT: Duration = Duration::from_secs(60);
const HEALTHZ: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10256);
const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10249);

fn service(name: &str, ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "selector": {"app": name},
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "udp", "protocol": "UDP", "port": 80, "targetPort": 8080},
            ],
        },
    })
}

fn slice(service: &str, pods: &[Ipv4Addr]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abc12"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 8080},
            {"name": "udp", "protocol": "UDP", "port": 8080},
        ],
        "endpoints": pods.iter().map(|ip| json!({
            "addresses": [ip.to_string()],
            "conditions": {"ready": true},
            "nodeName": "node1",
        })).collect::<Vec<_>>(),
    })
}

fn node(ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node1"},
        "status": {"addresses": [
            {"type": "Hostname", "address": "node1"},
            {"type": "InternalIP", "address": ip.to_string()},
        ]},
    })
}

fn kubeconfig(dir: &std::path::Path, url: &str) -> PathBuf {
    svc_lab::kube::kubeconfig(dir, url).expect("writing the kubeconfig")
}

/// The pods that answered `n` new TCP connections to `vip:80`.
fn answering_pods(lab: &Lab, vip: Ipv4Addr, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .filter_map(|_| {
            tcp_request(lab.client_ns(), SocketAddrV4::new(vip, 80), "hi", TIMEOUT)
                .ok()
                .map(|r| r.pod)
        })
        .collect()
}

fn lists_of(server: &FakeApiServer, path: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}")) && !r.contains("watch="))
        .count()
}

#[test]
fn agent_follows_the_kubernetes_api_through_outages_and_restarts() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::up().expect("lab up");
    // The API server listens on the node namespace's loopback, where the agent runs.
    let server = in_netns(lab.node_ns(), FakeApiServer::start_local).expect("fake API server");
    let dir = std::env::temp_dir().join(format!("svl-{}-kube", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = kubeconfig(&dir, &server.url());
    let (p1, p2, p3) = (lab.pod_ip("p1"), lab.pod_ip("p2"), lab.pod_ip("p3"));
    server.apply(node(lab.node_ip(1)));
    server.apply(service("echo", ECHO_VIP));
    server.apply(slice("echo", &[p1, p2, p3]));
    server.apply(service("gone", GONE_VIP));
    server.apply(slice("gone", &[p1]));

    let log = dir.join("agent.log");
    let mut agent = LabAgent::start_from(
        &mut lab,
        1,
        AgentSource::Kubeconfig(&kc),
        &log,
        &["--node-name", "node1", "--lb-map-max", "100000"],
    )
    .expect("start agent");
    agent
        .wait_backends(ECHO_VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
        .unwrap();
    agent
        .wait_backends(GONE_VIP, 80, PROTO_UDP, 1, Duration::from_secs(5))
        .unwrap();
    assert!(
        agent
            .log_text()
            .contains("node addresses from the Node object"),
        "{}",
        agent.log_text()
    );
    assert_eq!(answering_pods(&lab, ECHO_VIP, 30).len(), 3);
    let (code, body) = http_get(lab.node_ns(), HEALTHZ, "/healthz", TIMEOUT).expect("healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"nodeEligible\":true"), "{body}");

    // Changed: the slice loses p3 (with the trigger time the EndpointSlice controller
    // sets, for kube-proxy's network programming latency). Deleted: the Service "gone" and
    // its slice.
    let mut changed = slice("echo", &[p1, p2]);
    changed["metadata"]["annotations"] =
        json!({"endpoints.kubernetes.io/last-change-trigger-time": "2020-01-01T00:00:00Z"});
    server.apply(changed);
    agent
        .wait_backends(ECHO_VIP, 80, PROTO_TCP, 2, Duration::from_secs(10))
        .unwrap();
    server.delete("Service", Some("default"), "gone");
    server.delete("EndpointSlice", Some("default"), "gone-abc12");
    assert!(
        wait_for(Duration::from_secs(10), || agent
            .backend_count(GONE_VIP, 80, PROTO_TCP)
            .is_none()),
        "deleted Service removed"
    );
    // ... and added back, for the outage below.
    server.apply(service("gone", GONE_VIP));
    server.apply(slice("gone", &[p1]));
    agent
        .wait_backends(GONE_VIP, 80, PROTO_TCP, 1, Duration::from_secs(10))
        .unwrap();

    // The API server disappears for 10 s. A long-lived connection keeps exchanging data,
    // new connections are served from the last state, and the changes made meanwhile are
    // invisible until the server is back.
    let mut conn =
        TcpSession::connect(lab.client_ns(), SocketAddrV4::new(ECHO_VIP, 80), TIMEOUT).unwrap();
    let conn_pod = conn.exchange("hello").unwrap().pod;
    server.set_available(false).expect("API server down");
    server.delete("Service", Some("default"), "gone");
    server.delete("EndpointSlice", Some("default"), "gone-abc12");
    server.apply(service("fresh", FRESH_VIP));
    server.apply(slice("fresh", &[p2]));
    let outage = Instant::now();
    let mut exchanges = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        let r = conn
            .exchange("during the outage")
            .expect("long-lived connection");
        assert_eq!(r.pod, conn_pod);
        exchanges += 1;
        if exchanges % 10 == 0 {
            let r = tcp_request(
                lab.client_ns(),
                SocketAddrV4::new(GONE_VIP, 80),
                "x",
                TIMEOUT,
            )
            .expect("the last state is still served");
            assert_eq!(r.pod, "p1");
            udp_request(lab.client_ns(), SocketAddrV4::new(ECHO_VIP, 80), TIMEOUT)
                .expect("UDP too");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exchanges >= 50, "{exchanges} exchanges in 10 s");
    assert_eq!(agent.backend_count(GONE_VIP, 80, PROTO_TCP), Some(1));
    assert_eq!(agent.backend_count(FRESH_VIP, 80, PROTO_TCP), None);
    let (code, _) = http_get(lab.node_ns(), HEALTHZ, "/healthz", TIMEOUT).unwrap();
    assert_eq!(
        code, 200,
        "an unreachable API server does not make the node unhealthy"
    );

    server.set_available(true).expect("API server back");
    assert!(
        wait_for(RECONNECT, || agent
            .backend_count(GONE_VIP, 80, PROTO_TCP)
            .is_none()
            && agent.backend_count(FRESH_VIP, 80, PROTO_TCP) == Some(1)),
        "after the outage: deleted Service removed, new one added; agent log:\n{}",
        agent.log_text()
    );
    assert_eq!(conn.exchange("after").unwrap().pod, conn_pod);
    drop(conn);

    // Compaction while the server is away: the watch resumes from a resourceVersion that is
    // too old, gets 410 Gone, and relists.
    let slice_lists = lists_of(&server, "/apis/discovery.k8s.io/v1/endpointslices");
    server.set_available(false).unwrap();
    server.apply(slice("echo", &[p3]));
    server.expire_history();
    server.set_available(true).unwrap();
    agent
        .wait_backends(ECHO_VIP, 80, PROTO_TCP, 1, RECONNECT)
        .unwrap();
    assert_eq!(
        answering_pods(&lab, ECHO_VIP, 10)
            .into_iter()
            .collect::<Vec<_>>(),
        ["p3"]
    );
    assert!(
        lists_of(&server, "/apis/discovery.k8s.io/v1/endpointslices") > slice_lists,
        "a relist after 410: {:?}",
        server.requests()
    );

    // Metrics, read from the maps and the agent.
    let (code, metrics) = http_get(lab.node_ns(), METRICS, "/metrics", TIMEOUT).expect("metrics");
    assert_eq!(code, 200);
    for want in [
        "svc_map_entries{map=\"SVC4_SERVICES\"}",
        "svc_map_capacity{map=\"SVC4_CT\"} 262144",
        "svc_map_capacity{map=\"SVC4_SERVICES\"} 100000",
        "svc_datapath_packets_total{verdict=\"dnat_new\"}",
        "svc_agent_sync_duration_seconds_bucket",
        "svc_agent_last_sync_timestamp_seconds",
        "svc_agent_map_full_errors_total",
        "svc_agent_invalid_objects 0",
        // kube-proxy's names.
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"}",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 0",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0",
        "kubeproxy_sync_proxy_rules_service_changes_pending 0",
    ] {
        assert!(metrics.contains(want), "{want:?} missing:\n{metrics}");
    }
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    assert!(value("svc_datapath_packets_total{verdict=\"dnat_new\"}") >= 40.0);
    assert!(
        value("svc_agent_watch_errors_total") >= 1.0,
        "the outages were counted"
    );
    assert!(value("svc_map_entries{map=\"SVC4_SERVICES\"}") >= 4.0);
    // After the first list: the echo slice changed, gone's slice deleted and re-created;
    // gone deleted and re-created.
    assert!(value("kubeproxy_sync_proxy_rules_endpoint_changes_total") >= 3.0);
    assert!(value("kubeproxy_sync_proxy_rules_service_changes_total") >= 2.0);
    assert!(value("kubeproxy_sync_full_proxy_rules_duration_seconds_count") >= 1.0);
    assert!(value("kubeproxy_sync_partial_proxy_rules_duration_seconds_count") >= 1.0);
    // The annotated change, written years after its trigger time: in the last bucket.
    assert!(value("kubeproxy_network_programming_duration_seconds_count") >= 1.0);
    assert!(value("kubeproxy_network_programming_duration_seconds_bucket{le=\"+Inf\"}") >= 1.0);

    // A restart while the API server is down: the new agent must not prune (it has no
    // complete list); the pinned programs and maps keep serving; /healthz says 503 and
    // /livez too (nothing synced yet), until the API server is back.
    agent.process.kill().expect("kill -9");
    server.set_available(false).unwrap();
    agent.restart(&mut lab).expect("restart");
    assert!(
        wait_for(Duration::from_secs(10), || http_get(
            lab.node_ns(),
            HEALTHZ,
            "/healthz",
            TIMEOUT
        )
        .is_ok_and(|(c, _)| c == 503)),
        "healthz 503 while the agent has no view of the cluster:\n{}",
        agent.log_text()
    );
    let (code, _) = http_get(lab.node_ns(), HEALTHZ, "/livez", TIMEOUT).unwrap();
    assert_eq!(code, 200, "alive while it waits: a restart would not help");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(agent.backend_count(ECHO_VIP, 80, PROTO_TCP), Some(1));
    assert_eq!(agent.backend_count(FRESH_VIP, 80, PROTO_TCP), Some(1));
    assert_eq!(
        tcp_request(
            lab.client_ns(),
            SocketAddrV4::new(FRESH_VIP, 80),
            "x",
            TIMEOUT
        )
        .expect("served while the agent waits")
        .pod,
        "p2"
    );
    server.delete("Service", Some("default"), "fresh");
    server.set_available(true).unwrap();
    assert!(
        wait_for(RECONNECT, || http_get(
            lab.node_ns(),
            HEALTHZ,
            "/healthz",
            TIMEOUT
        )
        .is_ok_and(|(c, _)| c == 200)),
        "healthz 200 once synced:\n{}",
        agent.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(10), || agent
            .backend_count(FRESH_VIP, 80, PROTO_TCP)
            .is_none()),
        "the first complete list prunes what is gone"
    );
    let (code, _) = http_get(lab.node_ns(), HEALTHZ, "/livez", TIMEOUT).unwrap();
    assert_eq!(code, 200);

    // A node being drained: /healthz fails, /livez does not.
    let mut draining = node(lab.node_ip(1));
    draining["spec"] =
        json!({"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]});
    server.apply(draining);
    assert!(
        wait_for(Duration::from_secs(10), || http_get(
            lab.node_ns(),
            HEALTHZ,
            "/healthz",
            TIMEOUT
        )
        .is_ok_and(|(c, b)| c == 503 && b.contains("\"nodeEligible\":false"))),
        "healthz follows the node's deletion taint"
    );
    let (code, _) = http_get(lab.node_ns(), HEALTHZ, "/livez", TIMEOUT).unwrap();
    assert_eq!(code, 200);

    drop(agent);
    drop(lab);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Objects the API server would never produce (one ClusterIP for two Services), as a buggy
/// controller might write them: the older Service keeps the address although its name
/// sorts last; a third one, older still, does not take it from the Service serving it;
/// once that one is deleted, the oldest remaining one gets it.
#[test]
fn the_older_service_keeps_a_clashing_cluster_ip() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const CLASH_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
    let mut lab = Lab::up().expect("lab up");
    let server = in_netns(lab.node_ns(), FakeApiServer::start_local).expect("fake API server");
    let dir = std::env::temp_dir().join(format!("svl-{}-kube-clash", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = kubeconfig(&dir, &server.url());
    let created = |name: &str, at: &str| {
        let mut s = service(name, CLASH_VIP);
        s["metadata"]["creationTimestamp"] = json!(at);
        s
    };
    server.apply(node(lab.node_ip(1)));
    server.apply(created("aaa-young", "2025-06-01T00:00:00Z"));
    server.apply(slice("aaa-young", &[lab.pod_ip("p1")]));
    server.apply(created("zzz-old", "2020-01-01T00:00:00Z"));
    server.apply(slice("zzz-old", &[lab.pod_ip("p2")]));

    let log = dir.join("agent.log");
    let agent = LabAgent::start_from(
        &mut lab,
        1,
        AgentSource::Kubeconfig(&kc),
        &log,
        &["--node-name", "node1"],
    )
    .expect("start agent");
    agent
        .wait_backends(CLASH_VIP, 80, PROTO_TCP, 1, Duration::from_secs(20))
        .unwrap();
    let only = |pod: &str| std::collections::BTreeSet::from([pod.to_string()]);
    assert_eq!(
        answering_pods(&lab, CLASH_VIP, 10),
        only("p2"),
        "the older Service (zzz-old) answers:\n{}",
        agent.log_text()
    );
    let logged = |want: &str| wait_for(Duration::from_secs(10), || agent.log_text().contains(want));
    assert!(
        logged("service=default/aaa-young owner=default/zzz-old"),
        "{}",
        agent.log_text()
    );
    assert!(agent.log_text().contains("keeps it: it is older"));

    // Older still, but zzz-old serves the address: it stays.
    server.apply(created("aaa-ancient", "2010-01-01T00:00:00Z"));
    server.apply(slice("aaa-ancient", &[lab.pod_ip("p3")]));
    assert!(
        logged("service=default/aaa-ancient owner=default/zzz-old"),
        "{}",
        agent.log_text()
    );
    assert!(agent.log_text().contains("keeps it: it serves it already"));
    assert_eq!(answering_pods(&lab, CLASH_VIP, 10), only("p2"));

    // The owner is deleted: the oldest remaining claim (aaa-ancient) gets the address.
    server.delete("Service", Some("default"), "zzz-old");
    assert!(
        wait_for(Duration::from_secs(10), || answering_pods(
            &lab, CLASH_VIP, 3
        ) == only("p3")),
        "{}",
        agent.log_text()
    );
    assert!(logged(
        "service=default/aaa-young owner=default/aaa-ancient"
    ));

    drop(agent);
    drop(lab);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
