//! End to end: the agent run the way kube-proxy runs on a kubeadm cluster, from the
//! `config.conf` of kubeadm's ConfigMap kube-system/kube-proxy (the fixture
//! svc-agent/tests/fixtures/kube-proxy/kubeadm-v1.31.yaml, every field as kubeadm writes
//! it) and kube-proxy's own flag `--hostname-override` (what kubeadm's DaemonSet passes).
//! Only what differs between clusters is edited: the kubeconfig path (the lab's fake API
//! server) and clusterCIDR (the lab's pod networks). Nothing else is on the command line
//! but the lab's devices and bpffs directory.
//!
//! It checks that the file alone makes a working proxy: the cluster is watched through the
//! file's kubeconfig, the ClusterIP is served, the file's clusterCIDR decides masquerading
//! (traffic from outside it is masqueraded), /healthz answers on kube-proxy's default
//! 0.0.0.0:10256 and /metrics on 127.0.0.1:10249 with kube-proxy's metric names, and the
//! fields the agent does not share (IPVS's strictARP, mode) are reported by name.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::Mutex,
    time::Duration,
};

use serde_json::{Value, json};
use svc_common::PROTO_TCP;
use svc_lab::{
    CLUSTER_POD_CIDR, CLUSTER_POD_CIDR6, Lab, NODE_EXT_IP,
    agent::{AgentSource, LabAgent},
    fake_apiserver::FakeApiServer,
    http_get, in_netns, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());

const KUBEADM: &str = include_str!("../../svc-agent/tests/fixtures/kube-proxy/kubeadm-v1.31.yaml");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const TIMEOUT: Duration = Duration::from_secs(2);

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "ClusterIP", "clusterIP": VIP.to_string(), "clusterIPs": [VIP.to_string()],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
    })
}

fn slice(pods: &[Ipv4Addr]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc12", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": pods.iter().map(|ip| json!({
            "addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": "node1",
        })).collect::<Vec<_>>(),
    })
}

/// kubeadm's file with this cluster's kubeconfig and pod networks: the two lines an
/// operator's cluster differs in. Fails if the fixture no longer has them.
fn lab_config(kubeconfig: &std::path::Path) -> String {
    let from_kubeadm = [
        "kubeconfig: /var/lib/kube-proxy/kubeconfig.conf",
        "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56",
    ];
    for line in from_kubeadm {
        assert!(
            KUBEADM.contains(line),
            "the kubeadm fixture has no `{line}`"
        );
    }
    KUBEADM
        .replace(
            from_kubeadm[0],
            &format!("kubeconfig: {}", kubeconfig.display()),
        )
        .replace(
            from_kubeadm[1],
            &format!("clusterCIDR: {CLUSTER_POD_CIDR},{CLUSTER_POD_CIDR6}"),
        )
}

#[test]
fn a_kubeadm_kube_proxy_config_runs_the_agent() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::up().expect("lab up");
    // The API server on the node namespace's loopback, where the agent runs.
    let server = in_netns(lab.node_ns(), FakeApiServer::start_local).expect("fake API server");
    let dir = std::env::temp_dir().join(format!("svl-{}-kubeadm", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = svc_lab::kube::kubeconfig(&dir, &server.url()).unwrap();
    let config = dir.join("config.conf");
    std::fs::write(&config, lab_config(&kubeconfig)).unwrap();
    server.apply(svc_lab::kube::node_object("node1", lab.node_ip(1)));
    server.apply(service());
    let pods = [lab.pod_ip("p1"), lab.pod_ip("p2")];
    server.apply(slice(&pods));

    let log = dir.join("agent.log");
    let agent = LabAgent::start_from(
        &mut lab,
        1,
        AgentSource::ConfigFile(&config),
        &log,
        &["--hostname-override", "node1"],
    )
    .expect("start agent");
    agent
        .wait_backends(VIP, 80, PROTO_TCP, 2, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_text()));

    // Served from a pod, not masqueraded (its source is inside clusterCIDR)...
    let svc = SocketAddrV4::new(VIP, 80);
    let reply = tcp_request(lab.client_ns(), svc, "hi", TIMEOUT).expect("from a pod");
    assert_eq!(*reply.client.ip(), svc_lab::CLIENT_IP);
    // ...and from outside the file's clusterCIDR, masqueraded to the node's address: the
    // file's clusterCIDR is what the agent decides with (without one, kube-proxy never
    // masquerades ClusterIP traffic).
    let reply = tcp_request(lab.ext_ns(), svc, "hi", TIMEOUT).expect("from outside");
    assert_eq!(*reply.client.ip(), NODE_EXT_IP, "{}", agent.log_text());

    // kube-proxy's defaults for kubeadm's empty healthzBindAddress and metricsBindAddress.
    let healthz = SocketAddrV4::new(lab.node_ip(1), 10256);
    let (code, body) = http_get(lab.node_ns(), healthz, "/healthz", TIMEOUT).expect("healthz");
    assert_eq!(code, 200, "{body}");
    let metrics = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10249);
    let (code, text) = http_get(lab.node_ns(), metrics, "/metrics", TIMEOUT).expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    ] {
        assert!(text.contains(name), "/metrics has no {name}:\n{text}");
    }
    // Only on loopback, as kube-proxy's default: not on the node's address.
    let outside = SocketAddrV4::new(lab.node_ip(1), 10249);
    assert!(
        http_get(lab.node_ns(), outside, "/metrics", TIMEOUT).is_err(),
        "metrics answer on {outside}"
    );

    // What kube-proxy's file sets that the agent does not share is named in the log.
    let log_text = agent.log_text();
    for field in ["ipvs.strictARP", "mode"] {
        assert!(
            log_text.contains(&format!("config field {field}")),
            "the log does not name {field}:\n{log_text}"
        );
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
