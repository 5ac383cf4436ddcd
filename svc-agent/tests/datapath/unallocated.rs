//! Addresses no frontend takes (kube-proxy nftables' `cluster-ips-check` chain): an
//! allocated ClusterIP on a port/protocol no Service has is rejected (TCP RST / ICMP port
//! unreachable; XDP hands it to TC), an address inside the service CIDR that no Service has
//! is dropped (XDP drops it itself), anything else passes; replies of translated flows and
//! traffic *from* a ClusterIP are untouched, and another proxy's ClusterIP is left alone.
//!
//! The Services are kube-proxy's TestClusterIPGeneral ones (pkg/proxy/nftables/
//! proxier_test.go: svc1 172.30.0.41 80/TCP; svc2 172.30.0.42 80/TCP, 443/TCP, 53/UDP,
//! 53/TCP, 53/SCTP) with its service CIDR 172.30.0.0/16, as manifests, through the real
//! model, desired-state computation and reconciler, on node 1 of the two-node lab.
use svc_agent::desired::{self, DesiredState, NodeContext};
use svc_agent::manifest;
use svc_agent::packet::{ACK, PacketBuilder, RST, SYN};
use svc_common::Verdict;

use crate::support::*;

const MANIFESTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: ["172.30.0.0/16"]}
---
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  clusterIP: 172.30.0.41
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-1, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints: [{addresses: ["10.244.1.11"]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: ns2}
spec:
  clusterIP: 172.30.0.42
  ports:
    - {name: http, port: 80, protocol: TCP}
    - {name: https, port: 443, protocol: TCP, targetPort: 8443}
    - {name: dns-udp, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353}
    - {name: dns-sctp, port: 53, protocol: SCTP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc2-1, namespace: ns2, labels: {kubernetes.io/service-name: svc2}}
addressType: IPv4
ports:
  - {name: http, port: 80, protocol: TCP}
  - {name: https, port: 8443, protocol: TCP}
  - {name: dns-udp, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 5353, protocol: TCP}
endpoints: [{addresses: ["10.244.1.11"]}, {addresses: ["10.244.2.11"]}]
---
apiVersion: v1
kind: Service
metadata:
  name: other
  namespace: ns3
  labels: {service.kubernetes.io/service-proxy-name: another-proxy}
spec:
  clusterIP: 172.30.0.44
  ports: [{name: http, port: 80, protocol: TCP}]
"#;

/// The desired state of [`MANIFESTS`] on node 1 (192.0.2.1).
fn desired_state() -> DesiredState {
    let set = manifest::load_str(MANIFESTS, "general.yaml");
    // The SCTP port keeps its number (targetPort = port): it is served, by address.
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    let node = NodeContext {
        node_ips: vec![ip(NODE_IP).into()],
        ..Default::default()
    };
    let (state, problems) = desired::compute(&set.cluster, &node);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(state.cluster_ips.len(), 3);
    assert_eq!(
        state.service_cidrs.to_string(),
        "172.30.0.0/16 (ServiceCIDR kubernetes)"
    );
    state
}

fn load(tag: &str) -> Harness {
    let mut h = Harness::load(tag, &node1_fixture_config(false));
    let report = h.sync(&desired_state());
    assert_eq!(
        (report.cluster_ips_written, report.cidrs_written),
        (3, 1),
        "{report:?}"
    );
    h
}

/// From a pod (TC on its interface): kube-proxy's rows, then what must stay untouched.
fn pod_cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::Tc;
    let pod = "10.244.1.20";
    let udp_dns80 = udp("10.244.1.20:40101", "172.30.0.42:80")
        .payload(b"dns?")
        .build();
    let icmp80 = expected_port_unreachable(ip("172.30.0.42"), ip(pod), &udp_dns80);
    let udp_svc1_53 = udp("10.244.1.20:40102", "172.30.0.41:53")
        .payload(b"dns?")
        .build();
    let icmp53 = expected_port_unreachable(ip("172.30.0.41"), ip(pod), &udp_svc1_53);
    let ping = PacketBuilder::icmp_echo(ip(pod), ip("172.30.0.50"), 7, 1)
        .macs(CLIENT_MAC, NODE_MAC)
        .build();
    vec![
        case(
            "simple clusterIP: 172.30.0.41:80 -> 10.244.1.11:80",
            Tc,
            segment("10.244.1.20:40100", "172.30.0.41:80", SYN, 1),
            TC_ACT_OK,
            Exact(segment("10.244.1.20:40100", "10.244.1.11:80", SYN, 1)),
            Verdict::DnatNew,
        ),
        case(
            "svc1 does not accept svc2's ports: 172.30.0.41:443 -> RST",
            Tc,
            segment("10.244.1.20:40103", "172.30.0.41:443", SYN, 4242),
            TC_ACT_REDIRECT,
            Exact(expected_rst(
                "172.30.0.41:443",
                "10.244.1.20:40103",
                0,
                4243,
                RST | ACK,
            )),
            Verdict::RejectTcpRst,
        ),
        case(
            "TCP-only port does not match UDP traffic: UDP 172.30.0.42:80 -> ICMP port unreachable",
            Tc,
            udp_dns80,
            TC_ACT_REDIRECT,
            Exact(icmp80),
            Verdict::RejectIcmp,
        ),
        case(
            "svc1 has no UDP port at all: UDP 172.30.0.41:53 -> ICMP port unreachable",
            Tc,
            udp_svc1_53,
            TC_ACT_REDIRECT,
            Exact(icmp53),
            Verdict::RejectIcmp,
        ),
        case(
            "a RST to a ClusterIP's unknown port is never answered",
            Tc,
            segment("10.244.1.20:40104", "172.30.0.41:443", RST, 5),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropNoBackend,
        ),
        case(
            "packet to unallocated cluster ip: 172.30.0.50:80 -> dropped",
            Tc,
            segment("10.244.1.20:40105", "172.30.0.50:80", SYN, 1),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropUnallocated,
        ),
        case(
            "UDP to an unallocated address of the service CIDR -> dropped",
            Tc,
            udp("10.244.1.20:40106", "172.30.255.255:53")
                .payload(b"x")
                .build(),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropUnallocated,
        ),
        case(
            "outside the service CIDRs: 172.31.0.50:80 passes untouched",
            Tc,
            segment("10.244.1.20:40107", "172.31.0.50:80", SYN, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "another proxy's ClusterIP 172.30.0.44:80 passes untouched",
            Tc,
            segment("10.244.1.20:40108", "172.30.0.44:80", SYN, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "another proxy's ClusterIP, another port: passes untouched",
            Tc,
            segment("10.244.1.20:40109", "172.30.0.44:81", SYN, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "ICMP to an unallocated address: other protocols are left alone",
            Tc,
            ping,
            TC_ACT_OK,
            Unchanged,
            Verdict::PassOtherProto,
        ),
        // Replies: the backend's SYN-ACK of the first case is reverse-translated (its source
        // becomes the ClusterIP), the client's next packet is the known flow's.
        case(
            "reply of the translated flow: source back to 172.30.0.41:80",
            Tc,
            synack("10.244.1.11:80", "10.244.1.20:40100", 7000, 2),
            TC_ACT_OK,
            Exact(synack("172.30.0.41:80", "10.244.1.20:40100", 7000, 2)),
            Verdict::RevNat,
        ),
        case(
            "the client's ACK: the known flow",
            Tc,
            tcp("10.244.1.20:40100", "172.30.0.41:80")
                .flags(ACK)
                .seq(2)
                .ack(7001)
                .build(),
            TC_ACT_OK,
            Exact(
                tcp("10.244.1.20:40100", "10.244.1.11:80")
                    .flags(ACK)
                    .seq(2)
                    .ack(7001)
                    .build(),
            ),
            Verdict::DnatEstablished,
        ),
        // Traffic from a ClusterIP or an unallocated address (no tracked flow): only the
        // destination decides, and a pod is neither.
        case(
            "from a ClusterIP to a pod, no tracked flow: untouched",
            Tc,
            synack("172.30.0.41:80", "10.244.1.20:40110", 1, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "from an unallocated address to a pod: untouched",
            Tc,
            synack("172.30.0.50:80", "10.244.1.20:40111", 1, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
    ]
}

#[test]
fn unknown_ports_reject_unallocated_addresses_drop() {
    let mut h = load("unallocated");
    h.run_table(&pod_cases());
}

/// From outside, through XDP on the external interface: XDP drops an unallocated address
/// itself and hands a reject to TC, as every reject.
fn outside_cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    vec![
        case(
            "xdp: outside -> 172.30.0.41:443 (unknown port): passed to TC",
            Xdp,
            segment("192.0.2.100:50100", "172.30.0.41:443", SYN, 9000),
            XDP_PASS,
            Unchanged,
            Verdict::XdpPassToTc,
        ),
        case(
            "tc: outside -> 172.30.0.41:443 (unknown port): RST",
            Tc,
            segment("192.0.2.100:50100", "172.30.0.41:443", SYN, 9000),
            TC_ACT_REDIRECT,
            Exact(expected_rst(
                "172.30.0.41:443",
                "192.0.2.100:50100",
                0,
                9001,
                RST | ACK,
            )),
            Verdict::RejectTcpRst,
        ),
        case(
            "xdp: outside -> 172.30.0.50:80 (unallocated): dropped by XDP",
            Xdp,
            segment("192.0.2.100:50101", "172.30.0.50:80", SYN, 1),
            XDP_DROP,
            Unchanged,
            Verdict::DropUnallocated,
        ),
        case(
            "xdp: outside -> 172.31.0.50:80 (outside the CIDRs): passed",
            Xdp,
            segment("192.0.2.100:50102", "172.31.0.50:80", SYN, 1),
            XDP_PASS,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "xdp: outside -> the node itself (192.0.2.1:22): passed",
            Xdp,
            segment("192.0.2.100:50103", &node(22), SYN, 1),
            XDP_PASS,
            Unchanged,
            Verdict::PassNotService,
        ),
    ]
}

#[test]
fn from_outside_xdp_drops_and_hands_rejects_to_tc() {
    let mut h = load("unallocated-xdp");
    h.run_table(&outside_cases());
}

/// Without ServiceCIDRs and ClusterIPs in the maps (an agent without any, or the fixtures
/// of the other tables), every one of these packets passes, as before this rule.
#[test]
fn without_cluster_ips_and_cidrs_everything_passes() {
    use Output::Unchanged;
    use Prog::{Tc, Xdp};
    let mut h = Harness::load("unallocated-none", &node1_fixture_config(false));
    let mut state = desired_state();
    state.cluster_ips.clear();
    state.service_cidrs = Default::default();
    h.sync(&state);
    h.run_table(&[
        case(
            "no ClusterIPs known: 172.30.0.41:443 passes",
            Tc,
            segment("10.244.1.20:40200", "172.30.0.41:443", SYN, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "no service CIDR: 172.30.0.50:80 passes",
            Xdp,
            segment("192.0.2.100:50200", "172.30.0.50:80", SYN, 1),
            XDP_PASS,
            Unchanged,
            Verdict::PassNotService,
        ),
    ]);
    // And a sync back to the full state turns the rules on for the same packets.
    h.sync(&desired_state());
    let r = h.run(
        Prog::Tc,
        &segment("10.244.1.20:40201", "172.30.0.41:443", SYN, 1),
    );
    assert_eq!(r.delta, vec![(Verdict::RejectTcpRst, 1)]);
    let r = h.run(
        Prog::Xdp,
        &segment("192.0.2.100:50201", "172.30.0.50:80", SYN, 1),
    );
    assert_eq!(
        (r.ret, r.delta),
        (XDP_DROP, vec![(Verdict::DropUnallocated, 1)])
    );
}

/// SVC4_SVC_RANGE spans every ClusterIP and service CIDR, also a ClusterIP outside the
/// CIDRs (no ServiceCIDR holds it): its unknown ports are still rejected, and an address
/// inside the range but in neither map still passes; below and above the range nothing is
/// looked up and everything passes.
#[test]
fn the_range_covers_a_cluster_ip_outside_the_cidrs() {
    use Output::{Exact, Unchanged};
    use Prog::Tc;
    let mut h = Harness::load("unallocated-range", &node1_fixture_config(false));
    let mut state = desired_state();
    state.cluster_ips.insert(
        ip("10.100.0.5").into(),
        svc_agent::desired::ClusterIpUse::Reject,
    );
    h.sync(&state);
    h.run_table(&[
        case(
            "ClusterIP 10.100.0.5, outside the service CIDR: unknown port -> RST",
            Tc,
            segment("10.244.1.20:40300", "10.100.0.5:443", SYN, 7),
            TC_ACT_REDIRECT,
            Exact(expected_rst(
                "10.100.0.5:443",
                "10.244.1.20:40300",
                0,
                8,
                RST | ACK,
            )),
            Verdict::RejectTcpRst,
        ),
        case(
            "inside the range, in neither map (10.200.0.1): passes",
            Tc,
            segment("10.244.1.20:40301", "10.200.0.1:80", SYN, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "below the range (10.100.0.4): passes",
            Tc,
            segment("10.244.1.20:40302", "10.100.0.4:443", SYN, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "above the range (172.31.0.0): passes",
            Tc,
            segment("10.244.1.20:40303", "172.31.0.0:80", SYN, 1),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "the range's last address, 172.30.255.255, unallocated: dropped",
            Tc,
            segment("10.244.1.20:40304", "172.30.255.255:80", SYN, 1),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropUnallocated,
        ),
    ]);
    let range = svc_agent::dataplane::MapStore::read_unserved_range(&h.maps).unwrap();
    assert_eq!(
        (ip_of(range.lo), ip_of(range.hi)),
        (ip("10.100.0.5"), ip("172.30.255.255"))
    );
}

fn ip_of(host_order: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(host_order)
}
