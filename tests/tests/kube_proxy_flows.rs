//! kube-proxy's packet-flow tests, end to end: every IPv4 row of the `runPacketFlowTests`
//! calls in kubernetes/kubernetes `pkg/proxy/nftables/proxier_test.go` (TestNoEndpointsReject,
//! TestClusterIPGeneral, TestLoadBalancer, TestNodePorts, TestExternalTrafficPolicyLocal,
//! TestExternalTrafficPolicyCluster, TestInternalTrafficPolicy,
//! TestTerminatingEndpointsTrafficPolicyLocal, TestTerminatingEndpointsTrafficPolicyCluster,
//! TestInternalExternalMasquerade with its four configurations), sent as real packets
//! through the two-node lab, one svc-agent per node serving the Go tests' Services and
//! EndpointSlices as manifests.
//!
//! # The rows
//!
//! Each row is upstream's `packetFlowTest` with its literal values: name (prefixed by the Go
//! test and subtest, so `TestNodePorts/ipv4/external to nodePort` is found upstream by its
//! last part), source IP, destination IP and port, protocol, `output` and `masq`. The
//! harness maps kube-proxy's addresses onto the lab's (below) and checks:
//!
//! - `output` a list of endpoints: new connections (at least 8, at most 40) reach only
//!   endpoints of the list, and every one of them. Each lab endpoint answers with its name
//!   and port (`a1:80`, `b1:8443`), so the target port is checked too;
//! - `masq`: the source address the endpoint sees: the node's (192.0.2.1, the masquerade
//!   address) when true, the client's own when false; see "Node sources" for the node's
//!   own processes;
//! - `REJECT`: TCP connection refused (RST), UDP ICMP port unreachable (ECONNREFUSED on a
//!   connected socket); a node process gets ECONNREFUSED;
//! - `DROP`: silence for 0.7 s; a node process gets EPERM (README, "Decisions where
//!   kube-proxy's behaviour cannot be copied as is": *A node process and policy DROP*);
//! - `""` (untouched): the packet reaches node 1's own listener on that port, with the
//!   client's address.
//!
//! Untouched packets are told apart from REJECT and DROP: node 1 runs its own listeners on
//! the NodePorts 3001-3003 (an untouched packet to a node address gets an answer from
//! `test-node`, not a RST), and it routes none of the Service addresses (an untouched packet
//! to a ClusterIP, LoadBalancer IP or externalIP gets "network unreachable", not silence;
//! TestLoadBalancer, whose node 1 holds its LoadBalancer IPs, has no REJECT row).
//!
//! # Addresses: kube-proxy's fake node and the lab
//!
//! | kube-proxy (NewFakeProxier) | lab |
//! |---|---|
//! | node `test-node`, node IP 192.168.0.2 | node 1 (svc-agent `--node-name test-node`), 192.0.2.1 |
//! | other nodes (`node2`, `remote`, `node-1`, `another-node`, `node0`, `node1`, NodeName unset) | node 2 (its agent runs as `lab-node2`, a name no slice uses) |
//! | testNodeIPAlt 192.168.1.2 (on eth0) | 192.168.1.2/32 on node 1's eth0, routed to node 1 by the outside host |
//! | testExternalIP 192.168.99.11 (on eth0, an externalIP) | kept; routed to node 1 by the outside host, not held by node 1 (no row depends on it being local, and held, an untouched packet would look like a REJECT) |
//! | pod source 10.0.0.2, TestClusterIPGeneral's 10.180.0.2 | client pod `ca` (10.244.1.20) on node 1 |
//! | an endpoint as source (hairpin) | that endpoint's lab pod |
//! | endpoint IPs (10.180.x.x, 10.0.1.x) | lab pods, per setup (each setup's `pods`): local ones (`test-node`) on node 1: a1 a2 a3 a4 (10.244.1.11-14), remote ones on node 2: b1 b2 b3 (10.244.2.11-13); one kube-proxy IP can stand for different pods in different setups, as its slice moves it between nodes |
//! | endpoint ports 80, 8443, 5353, 53 | kept: the lab pods run echo servers on them |
//! | node source 192.168.0.2 | a process of node 1 in its cgroup (curl-like Python client): the socket programs |
//! | source 1.2.3.4 / 5.6.7.8 ("same node to LB, SNATted to LB") | a process of node 1 bound to that address, held on node 1's `lo` during TestLoadBalancer |
//! | external clients 203.0.113.2, 203.0.113.130 (blocked) | kept: addresses of the lab's outside host (a second and third address on its `lo`); node 1 routes 203.0.113.0/24 to it, node 2 via node 1 |
//! | ClusterIPs 172.30.x.x, serviceCIDRs 172.30.0.0/16 | kept (`--service-cluster-ip-range 172.30.0.0/16`); the outside host routes 172.30.0.0/16 to node 1 |
//! | LoadBalancer IPs 1.2.3.4, 5.6.7.8, 9.10.11.12 | kept; the outside host routes them to node 1 |
//! | NodePorts 3001-3003, healthCheckNodePorts | kept |
//! | podCIDR 10.0.0.0/8 (DetectLocalByCIDR) | `--cluster-cidr 10.244.0.0/16`; NoOpLocalDetector: no `--cluster-cidr` |
//! | nodePortAddresses `192.168.0.2/32` (the fake's default) | `--node-port-addresses 192.0.2.1/32` |
//! | TestNodePorts' `192.168.0.0/24, 192.168.1.0/24, 2001:db8::/64` | `--node-port-addresses 192.0.2.0/24 --node-port-addresses 192.168.1.0/24 --node-port-addresses 2001:db8::/64` (the IPv6 CIDR selects IPv6 addresses only, and the node has none in it, as kube-proxy's IPv4 proxier ignores it) |
//! | TestLoadBalancer's sourceRanges `192.168.0.0/24`, ` 203.0.113.0/25` | `192.0.2.0/24` (the lab's node network: node 1's IP is inside, which allows the LoadBalancer IPs as sources), ` 203.0.113.0/25` kept, leading space included |
//! | masqueradeAll | `--masquerade-all` |
//!
//! Routing the lab needs and kube-proxy's tracer does not: node 2 sends replies to the
//! outside clients (203.0.113.0/24) and to the LoadBalancer IPs 1.2.3.4 and 5.6.7.8 through
//! node 1, as a network whose way in is node 1 would. Replies of flows node 1 translated
//! without masquerade (from outside to a ClusterIP without a local detector: a backend on
//! node 2 answers the client's own address) must pass node 1 to be translated back, as
//! they must pass kube-proxy's node; and a node 1 socket bound to a LoadBalancer IP gets
//! its answers there.
//!
//! # Setups
//!
//! One lab for everything. The Go tests reuse 172.30.0.41, 1.2.3.4 and the NodePorts, so the
//! setups run one after another with the manifest directory rewritten (the agents follow
//! file changes); each write carries a marker Service whose port is the write's number, and
//! the harness waits until node 1's agent has written it. Upstream's "after endpoints
//! deleted" rows run after the slice is removed from the directory. Node 1's agent is
//! restarted only when the proxier settings change (5 configurations: the default, TestNodePorts'
//! multiple nodeport-addresses, and the three other configurations of
//! TestInternalExternalMasquerade); node 2's agent keeps its settings throughout: no row's
//! traffic enters node 2 towards a Service (it only hosts remote endpoints).
//!
//! # Node sources
//!
//! kube-proxy's `masq` for a node source only changes which node address the endpoint sees.
//! Here a node process goes through the socket programs, and its connection carries the
//! address the node's routing picks towards the backend: 192.0.2.1 (eth0) for one on node 2,
//! the pod gateway 10.244.1.1 for one on node 1, as MASQUERADE picks (README, "Decisions":
//! *Masquerade address*). The rows check exactly that, whatever `masq` says; with
//! `masq=false` (no local detector, "node to ClusterIP") kube-proxy would leave the source
//! the socket got from the node's route to the ClusterIP, the node IP, also towards a local
//! endpoint, where this dataplane shows the pod gateway. A socket bound to a
//! LoadBalancer IP keeps it: its endpoint sees the VIP, not a node address (README,
//! *A node socket bound to an address keeps it*).
//!
//! Likewise a masqueraded pod or outside client is seen from the first `--node-ip`
//! (192.0.2.1) by every endpoint, local ones included, where MASQUERADE would pick the
//! address of the interface towards the endpoint (README, *Masquerade address*).
//!
//! # Not run here
//!
//! - TestNodePorts' `ipv6` and `ipv6, multiple nodeport-addresses` subtests (8 rows): they
//!   run on the dual-stack single-node lab, with their own address mapping, in
//!   `tests/tests/ipv6_services.rs` (`kube_proxy_test_node_ports_ipv6_rows`).
//! - TestClusterIPGeneral's "clusterIP with TCP, UDP, and SCTP on same port (SCTP)" (1 row):
//!   this kernel has no SCTP sockets. The fixture port of the same tables
//!   (`svc-agent/tests/datapath/kube_proxy.rs`) runs this exact row through the programs
//!   (both endpoints reached, port 53 kept, the CRC32c valid), and
//!   `svc-agent/tests/datapath/sctp.rs` covers SCTP's replies and refusals. The manifests
//!   here serve that port too.
//!
//! 198 rows run here: 207 rows executed upstream, less the 8 IPv6 rows (run in
//! ipv6_services.rs) and the SCTP row.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use svc_common::PROTO_TCP;
use svc_lab::{
    EXT_IP, EchoReply, EchoServers, Lab, NODE_EXT_IF, NODE_EXT_IP, POD_GATEWAY, agent::LabAgent,
    agent::wait_for, connect_probe, netns, request_from,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// A setup's Services and EndpointSlices: `kube_proxy_flows/<name>.yaml`.
macro_rules! manifests {
    ($name:literal) => {
        include_str!(concat!("kube_proxy_flows/", $name, ".yaml"))
    };
}

/// Per connection of a row that expects an answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a DROP row waits before it counts the silence as a drop.
const DROP_WAIT: Duration = Duration::from_millis(700);
/// New connections per endpoint row: at least MIN_FLOWS, then batches until every endpoint
/// answered, at most MAX_FLOWS.
const MIN_FLOWS: usize = 8;
const MAX_FLOWS: usize = 40;
const SYNC: Duration = Duration::from_secs(20);
/// kube-proxy's testNodeIP; the lab's node 1 is 192.0.2.1.
const KP_NODE_IP: &str = "192.168.0.2";
/// The name node 1's own listeners answer with.
const NODE_LISTENER: &str = "test-node";
/// The harness's marker Service (see `Env::load`).
const MARKER_VIP: Ipv4Addr = Ipv4Addr::new(172, 30, 255, 254);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// Upstream's `packetFlowTest`, literal.
#[derive(Clone, Copy, Debug)]
struct Flow {
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    dport: u16,
    proto: Proto,
    output: &'static str,
    masq: bool,
}

const fn tcp(
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    dport: u16,
    output: &'static str,
    masq: bool,
) -> Flow {
    Flow {
        name,
        src,
        dst,
        dport,
        proto: Proto::Tcp,
        output,
        masq,
    }
}

const fn udp(
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    dport: u16,
    output: &'static str,
    masq: bool,
) -> Flow {
    Flow {
        proto: Proto::Udp,
        ..tcp(name, src, dst, dport, output, masq)
    }
}

/// The proxier settings of a Go test, as svc-agent flags on node 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Proxier {
    /// `--node-port-addresses`.
    node_port_addresses: &'static [&'static str],
    /// DetectLocalByCIDR (`--cluster-cidr`); false: NoOpLocalDetector.
    local_detector: bool,
    /// `--masquerade-all`.
    masquerade_all: bool,
}

/// NewFakeProxier(IPv4).
const FAKE_PROXIER: Proxier = Proxier {
    node_port_addresses: &["192.0.2.1/32"],
    local_detector: true,
    masquerade_all: false,
};

/// kube-proxy's endpoint IPs and the lab pods standing for them.
type Pods = &'static [(&'static str, &'static str)];

/// One `runPacketFlowTests` context: a proxier, its Services and EndpointSlices, the rows.
struct Setup {
    /// Go test and subtest, the prefix of the rows' names.
    test: String,
    proxier: Proxier,
    /// kube-proxy's endpoint IP -> the lab pod standing for it.
    pods: Pods,
    /// Addresses node 1 holds on `lo` while the setup runs.
    node_addresses: &'static [&'static str],
    /// Services and EndpointSlices (`manifests!`), with kube-proxy's endpoint IPs
    /// (replaced by the addresses of the lab pods of `pods` when written).
    manifests: &'static str,
    flows: Vec<Flow>,
    /// Upstream's second call, after `fp.OnEndpointSliceDelete`: run with the slices
    /// removed.
    after_delete: &'static [Flow],
}

impl Setup {
    fn new(test: &str, pods: Pods, manifests: &'static str) -> Setup {
        Setup {
            test: test.to_string(),
            proxier: FAKE_PROXIER,
            pods,
            node_addresses: &[],
            manifests,
            flows: Vec::new(),
            after_delete: &[],
        }
    }

    fn flows(mut self, flows: &[Flow]) -> Setup {
        self.flows = flows.to_vec();
        self
    }

    fn pod_for(&self, kp_ip: &str) -> Option<&'static str> {
        self.pods
            .iter()
            .find(|(ip, _)| *ip == kp_ip)
            .map(|(_, p)| *p)
    }
}

// ---------------------------------------------------------------------------------------
// TestNoEndpointsReject
// ---------------------------------------------------------------------------------------

#[rustfmt::skip] // one row per line, as upstream's tables read
const NO_ENDPOINTS_FLOWS: &[Flow] = &[
    tcp("pod to cluster IP with no endpoints", "10.0.0.2", "172.30.0.41", 80, "REJECT", false),
    tcp("external to external IP with no endpoints", "203.0.113.2", "192.168.99.11", 80, "REJECT", false),
    tcp("pod to NodePort with no endpoints", "10.0.0.2", KP_NODE_IP, 3001, "REJECT", false),
    tcp("external to NodePort with no endpoints", "203.0.113.2", KP_NODE_IP, 3001, "REJECT", false),
    tcp("pod to LoadBalancer IP with no endpoints", "10.0.0.2", "1.2.3.4", 80, "REJECT", false),
    tcp("external to LoadBalancer IP with no endpoints", "203.0.113.2", "1.2.3.4", 80, "REJECT", false),
];

// ---------------------------------------------------------------------------------------
// TestClusterIPGeneral
// ---------------------------------------------------------------------------------------

#[rustfmt::skip] // one row per line, as upstream's tables read
const CLUSTER_IP_GENERAL_FLOWS: &[Flow] = &[
    tcp("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80", false),
    tcp("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", true),
    tcp("clusterIP with multiple endpoints", "10.180.0.2", "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80", false),
    tcp("clusterIP with TargetPort", "10.180.0.2", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443", false),
    tcp("clusterIP with TCP, UDP, and SCTP on same port (TCP)", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353", false),
    // Upstream names this UDP row "(TCP)" too; Go runs the duplicate as "#01".
    udp("clusterIP with TCP, UDP, and SCTP on same port (TCP)#01", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", false),
    // "clusterIP with TCP, UDP, and SCTP on same port (SCTP)": not run (module doc).
    udp("TCP-only port does not match UDP traffic", "10.180.0.2", "172.30.0.42", 80, "REJECT", false),
    tcp("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "REJECT", false),
    tcp("packet to unallocated cluster ip", "10.180.0.2", "172.30.0.50", 80, "DROP", false),
];

// ---------------------------------------------------------------------------------------
// TestLoadBalancer
// ---------------------------------------------------------------------------------------

#[rustfmt::skip] // one row per line, as upstream's tables read
const LOAD_BALANCER_FLOWS: &[Flow] = &[
    tcp("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80", false),
    tcp("external to nodePort", "203.0.113.2", KP_NODE_IP, 3001, "10.180.0.1:80", true),
    tcp("nodePort bypasses LoadBalancerSourceRanges", "203.0.113.130", KP_NODE_IP, 3001, "10.180.0.1:80", true),
    tcp("accepted external to LB1", "203.0.113.2", "1.2.3.4", 80, "10.180.0.1:80", true),
    tcp("accepted external to LB2", "203.0.113.2", "5.6.7.8", 80, "10.180.0.1:80", true),
    tcp("blocked external to LB1", "203.0.113.130", "1.2.3.4", 80, "DROP", false),
    tcp("blocked external to LB2", "203.0.113.130", "5.6.7.8", 80, "DROP", false),
    tcp("pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "1.2.3.4", 80, "DROP", false),
    tcp("pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "5.6.7.8", 80, "DROP", false),
    tcp("node to LB1 (allowed by LoadBalancerSourceRanges)", KP_NODE_IP, "1.2.3.4", 80, "10.180.0.1:80", true),
    tcp("node to LB2 (allowed by LoadBalancerSourceRanges)", KP_NODE_IP, "5.6.7.8", 80, "10.180.0.1:80", true),
    // A process of node 1 bound to the VIP (held on its lo): the endpoint sees the VIP
    // (README, "Decisions": *A node socket bound to an address keeps it*).
    tcp("same node to LB1, SNATted to LB1 (implicitly allowed)", "1.2.3.4", "1.2.3.4", 80, "10.180.0.1:80", true),
    tcp("same node to LB2, SNATted to LB2 (implicitly allowed)", "5.6.7.8", "5.6.7.8", 80, "10.180.0.1:80", true),
];

// ---------------------------------------------------------------------------------------
// TestNodePorts (ipv4 subtests)
// ---------------------------------------------------------------------------------------

#[rustfmt::skip] // one row per line, as upstream's tables read
const NODE_PORTS_FLOWS: &[Flow] = &[
    tcp("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80, 10.180.2.1:80", false),
    tcp("external to nodePort", "203.0.113.2", KP_NODE_IP, 3001, "10.180.0.1:80, 10.180.2.1:80", true),
    tcp("node to nodePort", KP_NODE_IP, KP_NODE_IP, 3001, "10.180.0.1:80, 10.180.2.1:80", true),
];

/// The fourth row: upstream's third call site (allowAltNodeIP false) ...
#[rustfmt::skip]
const NODE_PORTS_ALT_IGNORED: Flow = tcp("secondary nodeIP ignores NodePorts", "203.0.113.2", "192.168.1.2", 3001, "", false);
/// ... and its second (allowAltNodeIP true).
#[rustfmt::skip]
const NODE_PORTS_ALT_ALLOWED: Flow = tcp("external to nodePort on secondary IP", "203.0.113.2", "192.168.1.2", 3001, "10.180.0.1:80, 10.180.2.1:80", true);

// ---------------------------------------------------------------------------------------
// TestExternalTrafficPolicyLocal, TestExternalTrafficPolicyCluster
// ---------------------------------------------------------------------------------------

#[rustfmt::skip] // one row per line, as upstream's tables read
const ETP_LOCAL_FLOWS: &[Flow] = &[
    tcp("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80, 10.180.2.1:80", false),
    tcp("pod to external IP hits both endpoints, unmasqueraded", "10.0.0.2", "192.168.99.11", 80, "10.180.0.1:80, 10.180.2.1:80", false),
    tcp("external to external IP hits only local endpoint, unmasqueraded", "203.0.113.2", "192.168.99.11", 80, "10.180.2.1:80", false),
    tcp("pod to LB IP hits only both endpoints, unmasqueraded", "10.0.0.2", "1.2.3.4", 80, "10.180.0.1:80, 10.180.2.1:80", false),
    tcp("external to LB IP hits only local endpoint, unmasqueraded", "203.0.113.2", "1.2.3.4", 80, "10.180.2.1:80", false),
    tcp("pod to NodePort hits both endpoints, unmasqueraded", "10.0.0.2", KP_NODE_IP, 3001, "10.180.0.1:80, 10.180.2.1:80", false),
    tcp("external to NodePort hits only local endpoint, unmasqueraded", "203.0.113.2", KP_NODE_IP, 3001, "10.180.2.1:80", false),
];

#[rustfmt::skip] // one row per line, as upstream's tables read
const ETP_CLUSTER_FLOWS: &[Flow] = &[
    tcp("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80, 10.180.2.1:80", false),
    tcp("pod to external IP hits both endpoints, masqueraded", "10.0.0.2", "192.168.99.11", 80, "10.180.0.1:80, 10.180.2.1:80", true),
    tcp("external to external IP hits both endpoints, masqueraded", "203.0.113.2", "192.168.99.11", 80, "10.180.0.1:80, 10.180.2.1:80", true),
    tcp("pod to LB IP hits both endpoints, masqueraded", "10.0.0.2", "1.2.3.4", 80, "10.180.0.1:80, 10.180.2.1:80", true),
    tcp("external to LB IP hits both endpoints, masqueraded", "203.0.113.2", "1.2.3.4", 80, "10.180.0.1:80, 10.180.2.1:80", true),
    tcp("pod to NodePort hits both endpoints, masqueraded", "10.0.0.2", KP_NODE_IP, 3001, "10.180.0.1:80, 10.180.2.1:80", true),
    tcp("external to NodePort hits both endpoints, masqueraded", "203.0.113.2", KP_NODE_IP, 3001, "10.180.0.1:80, 10.180.2.1:80", true),
];

/// 10.180.0.1 has no NodeName (remote: node 2), 10.180.2.1 is on test-node (node 1).
const TWO_ENDPOINTS_PODS: Pods = &[("10.180.0.1", "b1"), ("10.180.2.1", "a1")];

// ---------------------------------------------------------------------------------------
// TestInternalTrafficPolicy
// ---------------------------------------------------------------------------------------

/// TestInternalTrafficPolicy's testCases: name, manifests (internalTrafficPolicy,
/// endpoints), the lab pods of the endpoints (test-node's on node 1, the others' on node 2),
/// flowTests.
#[rustfmt::skip]
const ITP_CASES: &[(&str, &str, Pods, &[Flow])] = &[
    ("internalTrafficPolicy is cluster", manifests!("internal_traffic_policy_cluster"),
        &[("10.0.1.1", "a1"), ("10.0.1.2", "b1"), ("10.0.1.3", "b2")], &[
        tcp("pod to ClusterIP hits all endpoints", "10.0.0.2", "172.30.1.1", 80, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80", false),
    ]),
    ("internalTrafficPolicy is local and there is one local endpoint", manifests!("internal_traffic_policy_one_local"),
        &[("10.0.1.1", "a1"), ("10.0.1.2", "b1"), ("10.0.1.3", "b2")], &[
        tcp("pod to ClusterIP hits only local endpoint", "10.0.0.2", "172.30.1.1", 80, "10.0.1.1:80", false),
    ]),
    ("internalTrafficPolicy is local and there are multiple local endpoints", manifests!("internal_traffic_policy_two_local"),
        &[("10.0.1.1", "a1"), ("10.0.1.2", "a2"), ("10.0.1.3", "b2")], &[
        tcp("pod to ClusterIP hits all local endpoints", "10.0.0.2", "172.30.1.1", 80, "10.0.1.1:80, 10.0.1.2:80", false),
    ]),
    ("internalTrafficPolicy is local and there are no local endpoints", manifests!("internal_traffic_policy_no_local"),
        &[("10.0.1.1", "b1"), ("10.0.1.2", "b2"), ("10.0.1.3", "b3")], &[
        tcp("no endpoints", "10.0.0.2", "172.30.1.1", 80, "DROP", false),
    ]),
];

#[rustfmt::skip]
const ITP_DELETED: &[Flow] = &[tcp("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT", false)];

// ---------------------------------------------------------------------------------------
// TestTerminatingEndpointsTrafficPolicyLocal / ...Cluster
// ---------------------------------------------------------------------------------------

#[rustfmt::skip]
const TERMINATING_DELETED: &[Flow] = &[
    tcp("pod to clusterIP after endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT", false),
    tcp("external to LB after endpoints deleted", "203.0.113.2", "1.2.3.4", 80, "REJECT", false),
];

/// TestTerminatingEndpointsTrafficPolicyLocal's and ...Cluster's testcases: test, name,
/// manifests (Service, endpoints), the lab pods of the endpoints (test-node's on node 1,
/// the others' on node 2; "no usable endpoints" lists 10.0.1.5 on both nodes, as upstream:
/// it is b1's address, never used), flowTests.
#[rustfmt::skip]
const TERMINATING_CASES: &[(&str, &str, &str, Pods, &[Flow])] = &[
    ("TestTerminatingEndpointsTrafficPolicyLocal", "ready endpoints exist", manifests!("terminating_local_ready"),
        &[("10.0.1.1", "a1"), ("10.0.1.2", "a2"), ("10.0.1.3", "a3"), ("10.0.1.4", "a4"), ("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", false),
        tcp("external to LB", "203.0.113.2", "1.2.3.4", 80, "10.0.1.1:80, 10.0.1.2:80", false),
    ]),
    ("TestTerminatingEndpointsTrafficPolicyLocal", "only terminating endpoints exist", manifests!("terminating_local_only_terminating"),
        &[("10.0.1.2", "a2"), ("10.0.1.3", "a3"), ("10.0.1.4", "a4"), ("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, "10.0.1.5:80", false),
        tcp("external to LB", "203.0.113.2", "1.2.3.4", 80, "10.0.1.2:80, 10.0.1.3:80", false),
    ]),
    ("TestTerminatingEndpointsTrafficPolicyLocal", "terminating endpoints on remote node", manifests!("terminating_local_remote"),
        &[("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, "10.0.1.5:80", false),
        tcp("external to LB, no locally-usable endpoints", "203.0.113.2", "1.2.3.4", 80, "DROP", false),
    ]),
    ("TestTerminatingEndpointsTrafficPolicyLocal", "no usable endpoints on any node", manifests!("terminating_local_no_usable"),
        &[("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP, no usable endpoints", "10.0.0.2", "172.30.1.1", 80, "REJECT", false),
        tcp("external to LB, no usable endpoints", "203.0.113.2", "1.2.3.4", 80, "REJECT", false),
    ]),
    ("TestTerminatingEndpointsTrafficPolicyCluster", "ready endpoints exist", manifests!("terminating_cluster_ready"),
        &[("10.0.1.1", "a1"), ("10.0.1.2", "a2"), ("10.0.1.3", "b2"), ("10.0.1.4", "b3"), ("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", false),
        tcp("external to LB", "203.0.113.2", "1.2.3.4", 80, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", true),
    ]),
    ("TestTerminatingEndpointsTrafficPolicyCluster", "only terminating endpoints exist", manifests!("terminating_cluster_only_terminating"),
        &[("10.0.1.2", "a2"), ("10.0.1.3", "a3"), ("10.0.1.4", "b3"), ("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", false),
        tcp("external to LB", "203.0.113.2", "1.2.3.4", 80, "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", true),
    ]),
    ("TestTerminatingEndpointsTrafficPolicyCluster", "terminating endpoints on remote node", manifests!("terminating_cluster_remote"),
        &[("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, "10.0.1.5:80", false),
        tcp("external to LB", "203.0.113.2", "1.2.3.4", 80, "10.0.1.5:80", true),
    ]),
    ("TestTerminatingEndpointsTrafficPolicyCluster", "no usable endpoints on any node", manifests!("terminating_cluster_no_usable"),
        &[("10.0.1.5", "b1")], &[
        tcp("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, "REJECT", false),
        tcp("external to LB", "203.0.113.2", "1.2.3.4", 80, "REJECT", false),
    ]),
];

// ---------------------------------------------------------------------------------------
// TestInternalExternalMasquerade
// ---------------------------------------------------------------------------------------

const MASQ_PODS: Pods = &[
    ("10.180.0.1", "a1"),
    ("10.180.1.1", "b1"),
    ("10.180.0.2", "a2"),
    ("10.180.1.2", "b2"),
    ("10.180.0.3", "a3"),
    ("10.180.1.3", "b3"),
];

const E1: &str = "10.180.0.1:80, 10.180.1.1:80";
const E2: &str = "10.180.0.2:80, 10.180.1.2:80";
const E3: &str = "10.180.0.3:80, 10.180.1.3:80";

/// The normal case (working local detector, no masqueradeAll); the configurations
/// override some rows (`MASQ_CONFIGS`).
#[rustfmt::skip] // one row per line, as upstream's tables read
const MASQ_FLOWS: &[Flow] = &[
    tcp("pod to ClusterIP", "10.0.0.2", "172.30.0.41", 80, E1, false),
    tcp("pod to NodePort", "10.0.0.2", KP_NODE_IP, 3001, E1, true),
    tcp("pod to LB", "10.0.0.2", "1.2.3.4", 80, E1, true),
    tcp("node to ClusterIP", KP_NODE_IP, "172.30.0.41", 80, E1, true),
    tcp("node to NodePort", KP_NODE_IP, KP_NODE_IP, 3001, E1, true),
    tcp("node to LB", KP_NODE_IP, "1.2.3.4", 80, E1, true),
    tcp("external to ClusterIP", "203.0.113.2", "172.30.0.41", 80, E1, true),
    tcp("external to NodePort", "203.0.113.2", KP_NODE_IP, 3001, E1, true),
    tcp("external to LB", "203.0.113.2", "1.2.3.4", 80, E1, true),
    tcp("pod to ClusterIP with eTP:Local", "10.0.0.2", "172.30.0.42", 80, E2, false),
    tcp("pod to NodePort with eTP:Local", "10.0.0.2", KP_NODE_IP, 3002, E2, false),
    tcp("pod to LB with eTP:Local", "10.0.0.2", "5.6.7.8", 80, E2, false),
    tcp("node to ClusterIP with eTP:Local", KP_NODE_IP, "172.30.0.42", 80, E2, true),
    // Port 3001 (svc1's NodePort), exactly as upstream.
    tcp("node to NodePort with eTP:Local", KP_NODE_IP, KP_NODE_IP, 3001, E1, true),
    tcp("node to LB with eTP:Local", KP_NODE_IP, "5.6.7.8", 80, E2, true),
    tcp("external to ClusterIP with eTP:Local", "203.0.113.2", "172.30.0.42", 80, E2, true),
    tcp("external to NodePort with eTP:Local", "203.0.113.2", KP_NODE_IP, 3002, "10.180.0.2:80", false),
    tcp("external to LB with eTP:Local", "203.0.113.2", "5.6.7.8", 80, "10.180.0.2:80", false),
    tcp("pod to ClusterIP with iTP:Local", "10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", false),
    tcp("pod to NodePort with iTP:Local", "10.0.0.2", KP_NODE_IP, 3003, E3, true),
    tcp("pod to LB with iTP:Local", "10.0.0.2", "9.10.11.12", 80, E3, true),
    tcp("node to ClusterIP with iTP:Local", KP_NODE_IP, "172.30.0.43", 80, "10.180.0.3:80", true),
    tcp("node to NodePort with iTP:Local", KP_NODE_IP, KP_NODE_IP, 3003, E3, true),
    tcp("node to LB with iTP:Local", KP_NODE_IP, "9.10.11.12", 80, E3, true),
    tcp("external to ClusterIP with iTP:Local", "203.0.113.2", "172.30.0.43", 80, "10.180.0.3:80", true),
    tcp("external to NodePort with iTP:Local", "203.0.113.2", KP_NODE_IP, 3003, E3, true),
    tcp("external to LB with iTP:Local", "203.0.113.2", "9.10.11.12", 80, E3, true),
];

/// Upstream's `packetFlowTestOverride`: a new output and/or masq for one row.
#[derive(Clone, Copy)]
enum Override {
    Masq(bool),
    Output(&'static str),
}

/// A configuration's overrides, by row name.
type Overrides = &'static [(&'static str, Override)];

/// Upstream's testCases: name, masqueradeAll, localDetector, overrides.
#[rustfmt::skip]
const MASQ_CONFIGS: &[(&str, bool, bool, Overrides)] = &[
    ("base", false, true, &[]),
    ("no LocalTrafficDetector", false, false, &[
        ("node to ClusterIP", Override::Masq(false)),
        ("node to ClusterIP with eTP:Local", Override::Masq(false)),
        ("node to ClusterIP with iTP:Local", Override::Masq(false)),
        ("external to ClusterIP", Override::Masq(false)),
        ("external to ClusterIP with eTP:Local", Override::Masq(false)),
        ("external to ClusterIP with iTP:Local", Override::Masq(false)),
        ("pod to NodePort with eTP:Local", Override::Output("10.180.0.2:80")),
        ("pod to LB with eTP:Local", Override::Output("10.180.0.2:80")),
    ]),
    ("masqueradeAll", true, true, &[
        ("pod to ClusterIP", Override::Masq(true)),
        ("pod to ClusterIP with eTP:Local", Override::Masq(true)),
        ("pod to ClusterIP with iTP:Local", Override::Masq(true)),
    ]),
    ("masqueradeAll, no LocalTrafficDetector", true, false, &[
        ("pod to ClusterIP", Override::Masq(true)),
        ("pod to ClusterIP with eTP:Local", Override::Masq(true)),
        ("pod to ClusterIP with iTP:Local", Override::Masq(true)),
        ("pod to NodePort with eTP:Local", Override::Output("10.180.0.2:80")),
        ("pod to LB with eTP:Local", Override::Output("10.180.0.2:80")),
    ]),
];

/// MASQ_FLOWS with a configuration's overrides merged, checked as upstream checks them
/// (an override must change its row, and name one).
fn masq_flows(config: &str, overrides: &[(&str, Override)]) -> Vec<Flow> {
    let mut applied = 0;
    let flows = MASQ_FLOWS
        .iter()
        .map(|base| {
            let mut flow = *base;
            for (_, o) in overrides.iter().filter(|(name, _)| *name == base.name) {
                applied += 1;
                match *o {
                    Override::Masq(m) => {
                        assert_ne!(
                            m, base.masq,
                            "{config}: {:?} override of masq is the base value",
                            base.name
                        );
                        flow.masq = m;
                    }
                    Override::Output(out) => {
                        assert_ne!(
                            out, base.output,
                            "{config}: {:?} override of output is the base value",
                            base.name
                        );
                        flow.output = out;
                    }
                }
            }
            flow
        })
        .collect();
    assert_eq!(
        applied,
        overrides.len(),
        "{config}: an override matches no row"
    );
    flows
}

/// Every setup, in the order they run (grouped by proxier settings, so node 1's agent
/// restarts only 4 times).
fn setups() -> Vec<Setup> {
    // 10.180.0.2, TestClusterIPGeneral's client, is no endpoint: the client pod.
    let cluster_ip_pods = &[("10.180.0.1", "a1"), ("10.180.2.1", "b1")];
    let mut all = vec![
        Setup::new(
            "TestNoEndpointsReject",
            &[],
            manifests!("no_endpoints_reject"),
        )
        .flows(NO_ENDPOINTS_FLOWS),
        Setup::new(
            "TestClusterIPGeneral",
            cluster_ip_pods,
            manifests!("cluster_ip_general"),
        )
        .flows(CLUSTER_IP_GENERAL_FLOWS),
        Setup {
            // The "SNATted to LB" rows' sources: node 1 holds the VIPs.
            node_addresses: &["1.2.3.4", "5.6.7.8"],
            ..Setup::new(
                "TestLoadBalancer",
                &[("10.180.0.1", "b1")],
                manifests!("load_balancer"),
            )
            .flows(LOAD_BALANCER_FLOWS)
        },
        Setup::new(
            "TestNodePorts/ipv4",
            TWO_ENDPOINTS_PODS,
            manifests!("node_ports"),
        )
        .flows(&[NODE_PORTS_FLOWS, &[NODE_PORTS_ALT_IGNORED]].concat()),
        Setup::new(
            "TestExternalTrafficPolicyLocal",
            TWO_ENDPOINTS_PODS,
            manifests!("external_traffic_policy_local"),
        )
        .flows(ETP_LOCAL_FLOWS),
        Setup::new(
            "TestExternalTrafficPolicyCluster",
            TWO_ENDPOINTS_PODS,
            manifests!("external_traffic_policy_cluster"),
        )
        .flows(ETP_CLUSTER_FLOWS),
    ];
    for &(sub, manifests, pods, flows) in ITP_CASES {
        all.push(Setup {
            after_delete: ITP_DELETED,
            ..Setup::new(&format!("TestInternalTrafficPolicy/{sub}"), pods, manifests).flows(flows)
        });
    }
    for &(test, sub, manifests, pods, flows) in TERMINATING_CASES {
        all.push(Setup {
            after_delete: TERMINATING_DELETED,
            ..Setup::new(&format!("{test}/{sub}"), pods, manifests).flows(flows)
        });
    }
    // The base configuration has the default proxier; TestNodePorts' multiple
    // nodeport-addresses and the other masquerade configurations need other flags.
    let (name, masquerade_all, local_detector, overrides) = MASQ_CONFIGS[0];
    all.push(masq_setup(name, masquerade_all, local_detector, overrides));
    all.push(Setup {
        proxier: Proxier {
            node_port_addresses: &["192.0.2.0/24", "192.168.1.0/24", "2001:db8::/64"],
            ..FAKE_PROXIER
        },
        ..Setup::new(
            "TestNodePorts/ipv4, multiple nodeport-addresses",
            TWO_ENDPOINTS_PODS,
            manifests!("node_ports"),
        )
        .flows(&[NODE_PORTS_FLOWS, &[NODE_PORTS_ALT_ALLOWED]].concat())
    });
    for &(name, masquerade_all, local_detector, overrides) in &MASQ_CONFIGS[1..] {
        all.push(masq_setup(name, masquerade_all, local_detector, overrides));
    }
    all
}

fn masq_setup(
    name: &str,
    masquerade_all: bool,
    local_detector: bool,
    overrides: &[(&str, Override)],
) -> Setup {
    Setup {
        proxier: Proxier {
            local_detector,
            masquerade_all,
            ..FAKE_PROXIER
        },
        ..Setup::new(
            &format!("TestInternalExternalMasquerade/{name}"),
            MASQ_PODS,
            manifests!("internal_external_masquerade"),
        )
        .flows(&masq_flows(name, overrides))
    }
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// Where a row's packets come from in the lab.
#[derive(Clone, Debug)]
enum Source {
    /// A pod (its name).
    Pod(&'static str),
    /// The outside host, from this address of its own.
    Outside(Ipv4Addr),
    /// A process of node 1, bound to this address if any.
    Node(Option<Ipv4Addr>),
}

/// What a row expects, in the lab's terms.
#[derive(Debug)]
enum Want {
    /// These endpoints (`<pod>:<port>`), every one of them.
    Endpoints(BTreeSet<String>),
    Reject,
    Drop,
    Untouched,
}

struct Env {
    /// Echo servers on the endpoint ports and node 1's listeners (stopped before the lab).
    _echo: Vec<EchoServers>,
    node1: Option<LabAgent>,
    node2: Option<LabAgent>,
    proxier: Option<Proxier>,
    dir: PathBuf,
    logs: Vec<PathBuf>,
    generation: u16,
    restarts: usize,
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up_two_nodes().expect("two-node lab");
        for (node, name, ip) in [
            (1, "a3", Ipv4Addr::new(10, 244, 1, 13)),
            (1, "a4", Ipv4Addr::new(10, 244, 1, 14)),
            (2, "b3", Ipv4Addr::new(10, 244, 2, 13)),
        ] {
            lab.add_backend_pod(node, name, ip).expect("backend pod");
        }
        let (n1, n2, ext) = (
            lab.node_ns_of(1).to_string(),
            lab.node_ns_of(2).to_string(),
            lab.ext_ns().to_string(),
        );
        let ip = |ns: &str, args: &[&str]| {
            netns::ip_in(ns, args).unwrap_or_else(|e| panic!("ip {args:?} in {ns}: {e:#}"))
        };
        // The outside clients, testExternalClient and testExternalClientBlocked.
        for client in ["203.0.113.2/32", "203.0.113.130/32"] {
            ip(&ext, &["addr", "add", client, "dev", "lo"]);
        }
        // testNodeIPAlt on node 1's eth0.
        ip(&n1, &["addr", "add", "192.168.1.2/32", "dev", NODE_EXT_IF]);
        let ext_ip = EXT_IP.to_string();
        let node1_ip = NODE_EXT_IP.to_string();
        ip(
            &n1,
            &[
                "route",
                "add",
                "203.0.113.0/24",
                "via",
                &ext_ip,
                "dev",
                NODE_EXT_IF,
            ],
        );
        for dst in ["203.0.113.0/24", "1.2.3.4/32", "5.6.7.8/32"] {
            ip(
                &n2,
                &["route", "add", dst, "via", &node1_ip, "dev", NODE_EXT_IF],
            );
        }
        for cidr in [
            "172.30.0.0/16",
            "192.168.99.11/32",
            "192.168.1.2/32",
            "1.2.3.4/32",
            "5.6.7.8/32",
            "9.10.11.12/32",
        ] {
            lab.ext_route(cidr, 1).expect("ext route");
        }

        // Every endpoint answers on the ports the slices name, with `<pod>:<port>`.
        let mut echo = Vec::new();
        let on = |pods: &[&str], port: u16| -> Vec<(String, String)> {
            pods.iter()
                .map(|p| (format!("{p}:{port}"), lab.pod_ns(p).to_string()))
                .collect()
        };
        let all = ["a1", "a2", "a3", "a4", "b1", "b2", "b3"];
        echo.push(EchoServers::start(&on(&all, 80), 80).expect("echo :80"));
        for port in [8443, 5353, 53] {
            echo.push(EchoServers::start(&on(&["a1", "b1"], port), port).expect("echo"));
        }
        // Node 1's own listeners on the NodePorts: what an untouched packet reaches.
        for port in [3001, 3002, 3003] {
            let me = [(NODE_LISTENER.to_string(), n1.clone())];
            echo.push(EchoServers::start(&me, port).expect("node listener"));
        }

        let dir = std::env::temp_dir().join(format!("svl-{}-kp-flows", lab.id()));
        std::fs::create_dir_all(&dir).expect("manifest dir");
        let mut env = Env {
            _echo: echo,
            node1: None,
            node2: None,
            proxier: None,
            dir,
            logs: Vec::new(),
            generation: 0,
            restarts: 0,
            lab,
        };
        let log = env.log_path("node2");
        let agent = LabAgent::start_in(
            &mut env.lab,
            2,
            &env.dir,
            &log,
            &[
                "--node-name",
                "lab-node2",
                "--service-cluster-ip-range",
                "172.30.0.0/16",
            ],
        )
        .expect("agent on node 2");
        env.node2 = Some(agent);
        env
    }

    fn log_path(&mut self, what: &str) -> PathBuf {
        let log = std::env::temp_dir().join(format!(
            "svl-{}-kp-flows-{what}-{}.log",
            self.lab.id(),
            self.logs.len()
        ));
        self.logs.push(log.clone());
        log
    }

    /// Node 1's agent with these proxier settings (restarted if they differ).
    fn configure(&mut self, proxier: Proxier) {
        if self.proxier == Some(proxier) {
            return;
        }
        if let Some(old) = self.node1.take() {
            old.process.stop().expect("stopping node 1's agent");
            self.restarts += 1;
        }
        let cgroup = self
            .lab
            .node_cgroup(1)
            .expect("node 1 cgroup")
            .display()
            .to_string();
        let mut args = vec![
            "--node-name",
            "test-node",
            "--cgroup",
            &cgroup,
            "--service-cluster-ip-range",
            "172.30.0.0/16",
        ];
        for cidr in proxier.node_port_addresses {
            args.extend(["--node-port-addresses", cidr]);
        }
        if proxier.masquerade_all {
            args.push("--masquerade-all");
        }
        let log = self.log_path("node1");
        let agent = LabAgent::start_with(
            &mut self.lab,
            &self.dir,
            &log,
            &args,
            proxier.local_detector,
        )
        .expect("agent on node 1");
        let ready = wait_for(SYNC, || agent.log_text().contains("maps ready"));
        assert!(ready, "node 1's agent did not start:\n{}", agent.log_text());
        // Its first pass over the manifests it finds (the previous setup's).
        std::thread::sleep(Duration::from_millis(300));
        self.node1 = Some(agent);
        self.proxier = Some(proxier);
    }

    fn node1(&self) -> &LabAgent {
        self.node1.as_ref().expect("node 1's agent")
    }

    /// Writes the setup's manifests (with or without its slices) in one rename, and waits
    /// until node 1's agent applied them: its log shows a new "synced" pass and the marker
    /// Service carries this write's number as its port.
    fn load(&mut self, setup: &Setup, with_slices: bool) {
        self.generation += 1;
        let generation = self.generation;
        let a1 = self.lab.pod_ip("a1");
        let marker = format!(
            "# The harness's marker: its port numbers the writes of this file.\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: generation, namespace: svc-lab}}\n\
             spec:\n  clusterIP: {MARKER_VIP}\n  ports: [{{port: {generation}, protocol: TCP}}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: generation-1, namespace: svc-lab, \
             labels: {{kubernetes.io/service-name: generation}}}}\n\
             addressType: IPv4\nports: [{{port: 80, protocol: TCP}}]\n\
             endpoints: [{{addresses: [\"{a1}\"], nodeName: test-node}}]\n"
        );
        let mut text = setup
            .manifests
            .split("\n---\n")
            .filter(|doc| with_slices || !doc.contains("kind: EndpointSlice"))
            .chain([marker.as_str()])
            .collect::<Vec<_>>()
            .join("\n---\n");
        for (kp, pod) in setup.pods {
            text = text.replace(
                &format!("\"{kp}\""),
                &format!("\"{}\"", self.lab.pod_ip(pod)),
            );
        }
        // The line the agent logs after a pass that wrote something.
        let synced = |agent: &LabAgent| agent.log_text().matches(" synced ").count();
        let before = synced(self.node1());
        let tmp = std::env::temp_dir().join(format!("svl-{}-kp-flows.tmp", self.lab.id()));
        std::fs::write(&tmp, text).expect("write manifests");
        std::fs::rename(&tmp, self.dir.join("flows.yaml")).expect("rename manifests");
        let agent = self.node1();
        let applied = wait_for(SYNC, || {
            agent.backend_count(MARKER_VIP, generation, PROTO_TCP) == Some(1)
                && synced(agent) > before
        });
        assert!(
            applied,
            "{}: node 1's agent did not apply write {generation}:\n{}",
            setup.test,
            agent.log_text()
        );
        // The pass that logged "synced" is over; let the one that wrote the marker end too.
        std::thread::sleep(Duration::from_millis(100));
    }

    fn set_node_addresses(&self, addresses: &[&str], add: bool) {
        for a in addresses {
            let cidr = format!("{a}/32");
            let op = if add { "add" } else { "del" };
            netns::ip_in(self.lab.node_ns_of(1), &["addr", op, &cidr, "dev", "lo"])
                .unwrap_or_else(|e| panic!("ip addr {op} {cidr} on node 1: {e:#}"));
        }
    }

    fn source(&self, setup: &Setup, ip: &str) -> Source {
        // An endpoint as client (hairpin) is its lab pod.
        if let Some(pod) = setup.pod_for(ip) {
            return Source::Pod(pod);
        }
        match ip {
            "10.0.0.2" | "10.180.0.2" => Source::Pod("ca"),
            "203.0.113.2" | "203.0.113.130" => Source::Outside(ip.parse().unwrap()),
            KP_NODE_IP => Source::Node(None),
            _ if setup.node_addresses.contains(&ip) => Source::Node(Some(ip.parse().unwrap())),
            _ => panic!("{}: no lab source for {ip}", setup.test),
        }
    }

    fn source_ip(&self, src: &Source) -> Ipv4Addr {
        match src {
            Source::Pod(p) => self.lab.pod_ip(p),
            Source::Outside(ip) => *ip,
            Source::Node(bound) => bound.unwrap_or(NODE_EXT_IP),
        }
    }

    /// Where `src` sends from: a namespace and the address to bind, if any.
    fn origin(&self, src: &Source) -> (&str, Option<Ipv4Addr>) {
        match src {
            Source::Pod(p) => (self.lab.pod_ns(p), None),
            Source::Outside(ip) => (self.lab.ext_ns(), Some(*ip)),
            Source::Node(bound) => (self.lab.node_ns_of(1), *bound),
        }
    }

    /// `n` new connections (or UDP flows) of `src` to `to`: the replies or errors.
    fn attempts(
        &self,
        src: &Source,
        to: SocketAddrV4,
        proto: Proto,
        n: usize,
        timeout: Duration,
    ) -> Vec<io::Result<EchoReply>> {
        let udp = proto == Proto::Udp;
        let (ns, bind) = self.origin(src);
        match src {
            Source::Node(_) => self.lab.node_requests(1, bind, to, udp, n, timeout),
            _ => (0..n)
                .map(|_| request_from(ns, bind, to, udp, timeout))
                .collect(),
        }
    }

    /// One new flow that tells REJECT (refused), DROP (silence, or EPERM for a node
    /// process) and untouched (an answer, or unreachable) apart.
    fn probe(
        &self,
        src: &Source,
        to: SocketAddrV4,
        proto: Proto,
        timeout: Duration,
    ) -> io::Result<String> {
        let udp = proto == Proto::Udp;
        let (ns, bind) = self.origin(src);
        match src {
            Source::Node(_) => self
                .lab
                .node_requests(1, bind, to, udp, 1, timeout)
                .remove(0)
                .map(|r| r.pod),
            _ => connect_probe(ns, bind, to, udp, timeout),
        }
    }

    /// The address an endpoint (`<pod>:<port>`) must see for a row from `src` with `masq`.
    fn seen(&self, src: &Source, masq: bool, endpoint: &str) -> Ipv4Addr {
        match src {
            // A node socket bound to an address keeps it (README, "Decisions").
            Source::Node(Some(bound)) => *bound,
            // The node's address towards the backend, whatever `masq` (module doc, "Node
            // sources"; README, "Decisions": *Masquerade address*).
            Source::Node(None) => {
                let pod = endpoint.split(':').next().unwrap_or_default();
                if self.lab.pod(pod).node == 1 {
                    POD_GATEWAY
                } else {
                    NODE_EXT_IP
                }
            }
            // Masquerade: the first --node-ip, for local endpoints too (README, *Masquerade
            // address*).
            _ if masq => NODE_EXT_IP,
            _ => self.source_ip(src),
        }
    }

    fn want(&self, setup: &Setup, output: &str) -> Want {
        match output {
            "" => Want::Untouched,
            "DROP" => Want::Drop,
            "REJECT" => Want::Reject,
            list => Want::Endpoints(
                list.split(", ")
                    .map(|ep| {
                        let (ip, port) = ep.rsplit_once(':').expect("ip:port");
                        let pod = setup
                            .pod_for(ip)
                            .unwrap_or_else(|| panic!("{}: no lab pod for {ip}", setup.test));
                        format!("{pod}:{port}")
                    })
                    .collect(),
            ),
        }
    }

    /// Sends the row's packets; Ok(what was seen) or Err(why the row fails).
    fn check(&self, setup: &Setup, flow: &Flow) -> Result<String, String> {
        let src = self.source(setup, flow.src);
        let dst: Ipv4Addr = if flow.dst == KP_NODE_IP {
            NODE_EXT_IP
        } else {
            flow.dst.parse().unwrap()
        };
        let to = SocketAddrV4::new(dst, flow.dport);
        let node = matches!(src, Source::Node(_));
        match self.want(setup, flow.output) {
            Want::Endpoints(want) => {
                let mut hits: BTreeMap<String, usize> = BTreeMap::new();
                let mut tried = 0;
                while tried < MAX_FLOWS {
                    for reply in self.attempts(&src, to, flow.proto, MIN_FLOWS, TIMEOUT) {
                        tried += 1;
                        let reply = reply.map_err(|e| format!("connection {tried}: {e}"))?;
                        if !want.contains(&reply.pod) {
                            return Err(format!("reached {}, expected one of {want:?}", reply.pod));
                        }
                        let expected = self.seen(&src, flow.masq, &reply.pod);
                        if *reply.client.ip() != expected {
                            return Err(format!(
                                "{} saw the client as {}, expected {expected} (masq {})",
                                reply.pod,
                                reply.client.ip(),
                                flow.masq
                            ));
                        }
                        *hits.entry(reply.pod).or_default() += 1;
                    }
                    if hits.len() == want.len() {
                        break;
                    }
                }
                if hits.len() != want.len() {
                    return Err(format!(
                        "only {hits:?} of {want:?} answered {tried} new connections"
                    ));
                }
                Ok(format!("{hits:?}"))
            }
            Want::Reject => match self.probe(&src, to, flow.proto, TIMEOUT) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok("refused".into()),
                other => Err(format!("expected connection refused, got {other:?}")),
            },
            Want::Drop => {
                match self.probe(&src, to, flow.proto, DROP_WAIT) {
                    // A node process is refused at connect() with EPERM (README, "Decisions":
                    // *A node process and policy DROP*).
                    Err(e) if node && e.kind() == io::ErrorKind::PermissionDenied => {
                        Ok("EPERM".into())
                    }
                    Err(e)
                        if !node
                            && matches!(
                                e.kind(),
                                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                            ) =>
                    {
                        Ok("silence".into())
                    }
                    other => Err(format!(
                        "expected {}, got {other:?}",
                        if node { "EPERM" } else { "silence" }
                    )),
                }
            }
            Want::Untouched => {
                let reply = self
                    .attempts(&src, to, flow.proto, 1, TIMEOUT)
                    .remove(0)
                    .map_err(|e| format!("expected node 1's own listener, got {e}"))?;
                if reply.pod != NODE_LISTENER || *reply.client.ip() != self.source_ip(&src) {
                    return Err(format!(
                        "expected node 1's own listener seeing {}, got {reply:?}",
                        self.source_ip(&src)
                    ));
                }
                Ok(format!("{} saw {}", reply.pod, reply.client.ip()))
            }
        }
    }

    fn tail_logs(&self) -> String {
        let mut out = String::new();
        for (name, agent) in [("node 1", &self.node1), ("node 2", &self.node2)] {
            if let Some(a) = agent {
                let text = a.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(40);
                out += &format!(
                    "--- {name}'s agent, last lines ---\n{}\n",
                    lines[from..].join("\n")
                );
            }
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.tail_logs());
        }
        for agent in [self.node1.take(), self.node2.take()].into_iter().flatten() {
            let _ = agent.process.stop();
        }
        for log in &self.logs {
            let _ = std::fs::remove_file(log);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn kube_proxy_packet_flow_rows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut env = Env::up();
    let setups = setups();
    let rows: usize = setups
        .iter()
        .map(|s| s.flows.len() + s.after_delete.len())
        .sum();
    let mut failures = Vec::new();
    for setup in &setups {
        env.configure(setup.proxier);
        env.set_node_addresses(setup.node_addresses, true);
        env.load(setup, true);
        let mut run = |env: &Env, flows: &[Flow]| {
            for flow in flows {
                let name = format!("{}/{}", setup.test, flow.name);
                let t = Instant::now();
                match env.check(setup, flow) {
                    Ok(seen) => println!("ok   {name} ({} ms): {seen}", t.elapsed().as_millis()),
                    Err(e) => {
                        println!("FAIL {name}: {e}");
                        failures.push(format!(
                            "{name} ({} -> {}:{} {:?}, want {:?} masq {}): {e}",
                            flow.src, flow.dst, flow.dport, flow.proto, flow.output, flow.masq
                        ));
                    }
                }
            }
        };
        run(&env, &setup.flows);
        if !setup.after_delete.is_empty() {
            env.load(setup, false);
            run(&env, setup.after_delete);
        }
        env.set_node_addresses(setup.node_addresses, false);
    }
    println!(
        "{rows} rows in {} setups, node 1's agent restarted {} times, {:.1} s",
        setups.len(),
        env.restarts,
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        eprintln!("{}", env.tail_logs());
    }
    assert!(
        failures.is_empty(),
        "{} of {rows} rows differ from kube-proxy:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
