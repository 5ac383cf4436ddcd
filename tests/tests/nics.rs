//! End to end on one node with more than one NIC and more than one pod range
//! (kube-proxy parity: repeatable `--device` and `--cluster-cidr`, and kube-proxy's other
//! detect-local modes):
//!
//! - two external devices (`--device eth0 --device eth1`, a second outside host ext2
//!   behind eth1): XDP and TC on both; a NodePort answers on both devices' addresses
//!   (only --node-ip 192.0.2.1 is given: eth1's 198.18.0.1 comes from the device), TCP
//!   and UDP, masqueraded (externalTrafficPolicy Cluster); the ClusterIP from ext2
//!   through eth1; with `--node-port-addresses 198.18.0.0/24` only eth1's address answers.
//!   kube-proxy's TestNodePorts (pkg/proxy/nftables/proxier_test.go) rows: "external to
//!   nodePort" and "external to nodePort on secondary IP" (masqueraded) when
//!   nodePortAddresses covers it; its "secondary nodeIP ignores NodePorts" row is the
//!   nftables default (primary IPs only), where this agent, without
//!   --node-port-addresses, answers on every node address as kube-proxy's iptables mode
//!   does (all local addresses); here the CIDR leaves the other address out instead;
//! - two pod CIDRs: a pod in the second range reaches a ClusterIP unmasqueraded, and
//!   is masqueraded when the agent knows the first range only;
//! - `--detect-local-mode InterfaceNamePrefix`: the same pod (outside every CIDR given)
//!   is a pod because it enters through `lxc*`; the outside host is masqueraded;
//! - `--detect-local-mode BridgeInterface`: a pod behind a bridge (`cbr0`, its veth not
//!   matched by `--pod-device`) is a pod because it enters through the bridge.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::{
    Lab, NODE_EXT_IF, NODE_EXT_IP, NODE_EXT2_IF, NODE_EXT2_IP, agent::LabAgent, tcp_request,
    udp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(2);
const SYNC: Duration = Duration::from_secs(20);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE_PORT: u16 = 30080;
/// A client pod in a second pod range.
const POD2_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 20);
const POD2_CIDR: &str = "10.200.0.0/16";

/// The echo ClusterIP (p1) and a NodePort Service (TCP and UDP, policy Cluster, p3).
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.11"], conditions: {ready: true}, nodeName: node1}]
---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.21
  ports:
    - {name: tcp, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}
    - {name: udp, protocol: UDP, port: 80, targetPort: 8080, nodePort: 30080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: np-1
  namespace: default
  labels: {kubernetes.io/service-name: np}
addressType: IPv4
ports: [{name: tcp, protocol: TCP, port: 8080}, {name: udp, protocol: UDP, port: 8080}]
endpoints: [{addresses: ["10.244.1.13"], conditions: {ready: true}, nodeName: node1}]
"#;

struct Env {
    lab: Lab,
    dir: PathBuf,
    log: PathBuf,
    agent: Option<LabAgent>,
}

impl Env {
    fn up(build: impl FnOnce(&mut Lab)) -> Env {
        let mut lab = Lab::up().expect("lab");
        build(&mut lab);
        let dir = std::env::temp_dir().join(format!("svl-{}-nics", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
        let log = std::env::temp_dir().join(format!("svl-{}-nics-agent.log", lab.id()));
        Env {
            lab,
            dir,
            log,
            agent: None,
        }
    }

    /// (Re)starts the agent with `extra` (and --cluster-cidr 10.244.0.0/16 if `pod_cidr`),
    /// and waits for the ClusterIP.
    fn start(&mut self, extra: &[&str], pod_cidr: bool) {
        if let Some(old) = self.agent.take() {
            old.process.stop().expect("stopping the agent");
        }
        let ready = |log: &str| log.matches("maps ready").count();
        let before = ready(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let agent = LabAgent::start_with(&mut self.lab, &self.dir, &self.log, extra, pod_cidr)
            .expect("agent");
        // A restarted agent finds the ClusterIP pinned already: wait until it has loaded
        // its programs (and the pod CIDRs) over the pins.
        assert!(
            svc_lab::agent::wait_for(SYNC, || ready(&agent.log_text()) > before),
            "agent loaded\n{}",
            agent.log_text()
        );
        agent
            .wait_backends(CLUSTER_IP, 80, PROTO_TCP, 1, SYNC)
            .unwrap_or_else(|e| panic!("synced: {e:#}\n{}", agent.log_text()));
        self.agent = Some(agent);
    }

    fn agent(&self) -> &LabAgent {
        self.agent.as_ref().expect("started")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(agent) = &self.agent {
            if std::thread::panicking() {
                eprintln!("--- svc-agent log ---\n{}", agent.log_text());
            }
            let _ = agent.process.stop();
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn masqueraded(lab: &Lab, seen: Ipv4Addr) -> bool {
    [NODE_EXT_IP, NODE_EXT2_IP, lab.node(1).gateway].contains(&seen)
}

#[test]
fn two_devices_xdp_and_tc_on_both_node_ports_on_both_addresses() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ext2 = String::new();
    let mut env = Env::up(|lab| ext2 = lab.add_second_nic().expect("second NIC"));
    env.start(&["--device", NODE_EXT2_IF], true);
    let agent = env.agent();
    // eth1's address comes from the device (--node-ip gives eth0's only).
    for proto in [PROTO_TCP, PROTO_UDP] {
        for ip in [NODE_EXT_IP, NODE_EXT2_IP] {
            agent
                .wait_backends(ip, NODE_PORT, proto, 1, SYNC)
                .unwrap_or_else(|e| panic!("NodePort on {ip}/{proto}: {e:#}"));
        }
    }
    let links = agent.links();
    for hook in ["xdp@", "tc-ingress@"] {
        for dev in [NODE_EXT_IF, NODE_EXT2_IF] {
            assert!(
                links.contains_key(&format!("{hook}{dev}")),
                "{hook}{dev} pinned: {links:?}"
            );
        }
    }
    let ext = env.lab.ext_ns().to_string();
    let rows = [
        (
            &ext,
            SocketAddrV4::new(NODE_EXT_IP, NODE_PORT),
            "ext -> eth0's NodePort",
        ),
        (
            &ext2,
            SocketAddrV4::new(NODE_EXT2_IP, NODE_PORT),
            "ext2 -> eth1's NodePort",
        ),
        (
            &ext2,
            SocketAddrV4::new(CLUSTER_IP, 80),
            "ext2 -> ClusterIP through eth1",
        ),
    ];
    for (ns, to, what) in rows {
        let reply = tcp_request(ns, to, "x", TIMEOUT).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            masqueraded(&env.lab, *reply.client.ip()),
            "{what}: masqueraded (policy Cluster / from outside), saw {}",
            reply.client
        );
        let want = if to.port() == 80 { "p1" } else { "p3" };
        assert_eq!(reply.pod, want, "{what}");
        if to.port() == NODE_PORT {
            let reply = udp_request(ns, to, TIMEOUT).unwrap_or_else(|e| panic!("{what} UDP: {e}"));
            assert_eq!(reply.pod, "p3", "{what} UDP");
        }
    }

    // nodePortAddresses selects among every device's addresses.
    env.start(
        &[
            "--device",
            NODE_EXT2_IF,
            "--node-port-addresses",
            "198.18.0.0/24",
        ],
        true,
    );
    let agent = env.agent();
    agent
        .wait_backends(NODE_EXT2_IP, NODE_PORT, PROTO_TCP, 1, SYNC)
        .expect("eth1's NodePort");
    assert!(
        svc_lab::agent::wait_for(SYNC, || agent
            .backend_count(NODE_EXT_IP, NODE_PORT, PROTO_TCP)
            .is_none()),
        "no NodePort on eth0's address outside --node-port-addresses"
    );
    let reply = tcp_request(
        &ext2,
        SocketAddrV4::new(NODE_EXT2_IP, NODE_PORT),
        "x",
        TIMEOUT,
    )
    .expect("eth1's NodePort answers");
    assert_eq!(reply.pod, "p3");
    let refused = tcp_request(
        &ext,
        SocketAddrV4::new(NODE_EXT_IP, NODE_PORT),
        "x",
        TIMEOUT,
    );
    assert!(
        refused.is_err(),
        "eth0's address has no NodePort now (nothing listens there): {refused:?}"
    );
}

#[test]
fn a_pod_in_a_second_pod_cidr_is_a_pod() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::up(|lab| lab.add_client_pod("client2", POD2_IP).expect("pod"));
    let pod2 = env.lab.pod_ns("client2").to_string();
    let svc = SocketAddrV4::new(CLUSTER_IP, 80);
    // --cluster-cidr 10.244.0.0/16 (the lab's) and the second range.
    env.start(&["--cluster-cidr", POD2_CIDR], true);
    let reply = tcp_request(&pod2, svc, "x", TIMEOUT).expect("from the second range");
    assert_eq!(*reply.client.ip(), POD2_IP, "a pod: not masqueraded");
    let reply = tcp_request(env.lab.client_ns(), svc, "x", TIMEOUT).expect("first range");
    assert_eq!(*reply.client.ip(), env.lab.client().ip);
    // The first range only: the same pod counts as outside, and is masqueraded.
    env.start(&[], true);
    let reply = tcp_request(&pod2, svc, "x", TIMEOUT).expect("outside the only range");
    assert!(
        masqueraded(&env.lab, *reply.client.ip()),
        "outside the pod CIDR: masqueraded, saw {}",
        reply.client
    );
}

#[test]
fn interface_name_prefix_mode_tells_pods_by_their_interface() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::up(|lab| lab.add_client_pod("client2", POD2_IP).expect("pod"));
    let pod2 = env.lab.pod_ns("client2").to_string();
    let svc = SocketAddrV4::new(CLUSTER_IP, 80);
    // No --cluster-cidr at all: pods are those entering through lxc*.
    env.start(
        &[
            "--detect-local-mode",
            "InterfaceNamePrefix",
            "--pod-interface-name-prefix",
            "lxc",
        ],
        false,
    );
    let reply = tcp_request(&pod2, svc, "x", TIMEOUT).expect("pod through lxc-client2");
    assert_eq!(*reply.client.ip(), POD2_IP, "entered through lxc*: a pod");
    let reply = tcp_request(env.lab.ext_ns(), svc, "x", TIMEOUT).expect("outside");
    assert!(
        masqueraded(&env.lab, *reply.client.ip()),
        "entered through eth0: masqueraded, saw {}",
        reply.client
    );
}

#[test]
fn bridge_interface_mode_tells_pods_by_the_bridge() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bridged = Ipv4Addr::new(10, 250, 0, 20);
    let mut env = Env::up(|lab| {
        lab.add_bridged_client_pod("cbr0", Ipv4Addr::new(10, 250, 0, 1), "bclient", bridged)
            .expect("bridged pod")
    });
    let pod = env.lab.pod_ns("bclient").to_string();
    let svc = SocketAddrV4::new(CLUSTER_IP, 80);
    // --pod-device lxc* (the lab's): the bridge port vethbr-bclient gets no program, the
    // pod's packets are translated on cbr0.
    env.start(
        &[
            "--detect-local-mode",
            "BridgeInterface",
            "--pod-bridge-interface",
            "cbr0",
        ],
        false,
    );
    assert!(
        env.agent().links().contains_key("tc-ingress@cbr0"),
        "{:?}",
        env.agent().links()
    );
    let reply = tcp_request(&pod, svc, "x", TIMEOUT).expect("pod behind the bridge");
    assert_eq!(*reply.client.ip(), bridged, "entered through cbr0: a pod");
    let reply = tcp_request(env.lab.ext_ns(), svc, "x", TIMEOUT).expect("outside");
    assert!(
        masqueraded(&env.lab, *reply.client.ip()),
        "entered through eth0: masqueraded, saw {}",
        reply.client
    );
}

/// `--detect-local-mode NodeCIDR` in Kubernetes mode: pods are the sources inside this
/// Node's `spec.podCIDRs`, whatever `--cluster-cidr` says, and a change of them is
/// followed.
#[test]
fn node_cidr_mode_takes_the_pod_cidrs_from_the_node() {
    use serde_json::{Value, json};
    use svc_lab::{agent::AgentSource, fake_apiserver::FakeApiServer, in_netns};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::up(|lab| lab.add_client_pod("client2", POD2_IP).expect("pod"));
    let server = in_netns(env.lab.node_ns(), FakeApiServer::start_local).expect("API server");
    let kubeconfig = env.dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n",
            server.url()
        ),
    )
    .unwrap();
    let node = |cidrs: &[&str]| -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node1"},
            "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
            "status": {"addresses": [{"type": "InternalIP", "address": NODE_EXT_IP.to_string()}]},
        })
    };
    server.apply(node(&[POD2_CIDR, "fd00:10:200::/64"]));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {
            "clusterIP": CLUSTER_IP.to_string(), "clusterIPs": [CLUSTER_IP.to_string()],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
    }));
    server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "echo-abc12", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "echo"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [{"addresses": ["10.244.1.11"], "conditions": {"ready": true}, "nodeName": "node1"}],
    }));
    // start_from adds --cluster-cidr 10.244.0.0/16, which NodeCIDR does not use.
    let agent = LabAgent::start_from(
        &mut env.lab,
        1,
        AgentSource::Kubeconfig(&kubeconfig),
        &env.log,
        &["--node-name", "node1", "--detect-local-mode", "NodeCIDR"],
    )
    .expect("agent");
    agent
        .wait_backends(CLUSTER_IP, 80, PROTO_TCP, 1, SYNC)
        .unwrap_or_else(|e| panic!("synced: {e:#}\n{}", agent.log_text()));
    env.agent = Some(agent);
    let svc = SocketAddrV4::new(CLUSTER_IP, 80);
    let pod2 = env.lab.pod_ns("client2").to_string();
    let seen = |ns: &str| {
        *tcp_request(ns, svc, "x", TIMEOUT)
            .expect("request")
            .client
            .ip()
    };
    assert_eq!(seen(&pod2), POD2_IP, "inside the Node's podCIDRs: a pod");
    let client = env.lab.client().clone();
    assert!(
        masqueraded(&env.lab, seen(&client.ns)),
        "outside the Node's podCIDRs (only in --cluster-cidr): masqueraded"
    );
    // The Node's podCIDRs change: the agent follows.
    server.apply(node(&["10.244.1.0/24"]));
    assert!(
        svc_lab::agent::wait_for(SYNC, || env
            .agent()
            .log_text()
            .contains("pod CIDRs from the Node object changed")),
        "the change reached the agent"
    );
    assert_eq!(seen(&client.ns), client.ip, "now inside: a pod");
    assert!(
        masqueraded(&env.lab, seen(&pod2)),
        "now outside: masqueraded"
    );
}
