//! loadBalancerSourceRanges on node 1's LoadBalancer IP 203.0.113.10 (ranges 10.0.0.0/8
//! and 192.0.2.0/24): sources inside are translated (TC and XDP) and their replies reverse
//! translated, sources outside are dropped (also just past a range's end). And the node's
//! own rule, on a desired state computed from manifests: when the node's IP is inside a
//! Service's ranges, its LoadBalancer IPs are allowed sources too (kube-proxy's
//! TestLoadBalancer rows "node to LB1" and "same node to LB1, SNATted to LB1").
use svc_agent::desired::{self, NodeContext};
use svc_agent::manifest;
use svc_agent::packet::SYN;
use svc_common::Verdict;

use crate::services::{self, LOCAL_BE, REMOTE_BE};
use crate::support::*;

fn cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let n = node;
    vec![
        case(
            "tc: 192.0.2.100 (in 192.0.2.0/24) -> LB IP: DNAT + SNAT",
            Tc,
            segment("192.0.2.100:50050", "203.0.113.10:80", SYN, 10_000),
            TC_ACT_OK,
            Exact(segment(&n(50050), REMOTE_BE, SYN, 10_000)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: LB reply on eth0 -> 203.0.113.10:80 > 192.0.2.100:50050",
            Xdp,
            synack(REMOTE_BE, &n(50050), 9500, 10_001),
            XDP_PASS,
            Exact(synack("203.0.113.10:80", "192.0.2.100:50050", 9500, 10_001)),
            Verdict::RevNat,
        ),
        case(
            "xdp: 192.0.2.100 (in 192.0.2.0/24) -> LB IP: DNAT + SNAT",
            Xdp,
            segment("192.0.2.100:50051", "203.0.113.10:80", SYN, 10_100),
            XDP_PASS,
            Exact(segment(&n(50051), REMOTE_BE, SYN, 10_100)),
            Verdict::DnatNew,
        ),
        case(
            "tc: 10.1.2.3 (in 10.0.0.0/8) -> LB IP: allowed",
            Tc,
            segment("10.1.2.3:50052", "203.0.113.10:80", SYN, 10_200),
            TC_ACT_OK,
            Exact(segment(&n(50052), REMOTE_BE, SYN, 10_200)),
            Verdict::DnatNew,
        ),
        case(
            "tc: 198.51.100.7 (outside the ranges) -> LB IP: DROP",
            Tc,
            segment("198.51.100.7:50053", "203.0.113.10:80", SYN, 10_300),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        case(
            "xdp: 198.51.100.7 (outside the ranges) -> LB IP: DROP",
            Xdp,
            segment("198.51.100.7:50054", "203.0.113.10:80", SYN, 10_400),
            XDP_DROP,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        case(
            "xdp: 192.0.3.1 (just past 192.0.2.0/24) -> LB IP: DROP",
            Xdp,
            segment("192.0.3.1:50055", "203.0.113.10:80", SYN, 10_500),
            XDP_DROP,
            Unchanged,
            Verdict::DropSourceRange,
        ),
    ]
}

#[test]
fn source_ranges_table() {
    let mut h = services::node1("source-ranges");
    h.run_table(&cases());
}

/// Two LoadBalancer Services (externalTrafficPolicy Cluster) on node 1 (192.0.2.1):
/// `lb-node` (203.0.113.20) allows 192.0.2.0/30, which holds the node's IP; `lb-other`
/// (203.0.113.21) allows 10.0.0.0/8 only.
const NODE_RANGES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: lb-node, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.50
  loadBalancerSourceRanges: [" 192.0.2.0/30 "]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30050}
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.20}]
---
apiVersion: v1
kind: Service
metadata: {name: lb-other, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.51
  loadBalancerSourceRanges: ["10.0.0.0/8"]
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30051}
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.21}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-node-1
  namespace: default
  labels: {kubernetes.io/service-name: lb-node}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.11"], nodeName: node1}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-other-1
  namespace: default
  labels: {kubernetes.io/service-name: lb-other}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.11"], nodeName: node1}]
"#;

#[test]
fn load_balancer_ips_as_sources_when_the_node_ip_is_inside_the_ranges() {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let set = manifest::load_str(NODE_RANGES, "lb.yaml");
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    let node1 = NodeContext {
        node_name: Some("node1".into()),
        node_ips: vec![ip(NODE_IP).into()],
        ..Default::default()
    };
    let (state, problems) = desired::compute(&set.cluster, &node1);
    assert!(problems.is_empty(), "{problems:?}");
    let mut h = Harness::load("lb-node-ranges", &node1_fixture_config(false));
    h.sync(&state);
    let n = node;
    h.run_table(&[
        // The node's traffic to a VIP it has locally loops back with the VIP as source.
        case(
            "tc: 203.0.113.20 (the LB IP itself) -> LB IP, node IP in the ranges: allowed, SNAT",
            Tc,
            segment("203.0.113.20:50070", "203.0.113.20:80", SYN, 100),
            TC_ACT_OK,
            Exact(segment(&n(50070), LOCAL_BE, SYN, 100)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: 203.0.113.20 (the LB IP itself) -> LB IP: allowed",
            Xdp,
            segment("203.0.113.20:50071", "203.0.113.20:80", SYN, 200),
            XDP_PASS,
            Exact(segment(&n(50071), LOCAL_BE, SYN, 200)),
            Verdict::DnatNew,
        ),
        case(
            "tc: the node 192.0.2.1 -> LB IP (inside the ranges): allowed",
            Tc,
            segment("192.0.2.1:50072", "203.0.113.20:80", SYN, 300),
            TC_ACT_OK,
            Exact(segment(&n(50072), LOCAL_BE, SYN, 300)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: outside 192.0.2.100 (not in 192.0.2.0/30) -> LB IP: DROP",
            Xdp,
            segment("192.0.2.100:50073", "203.0.113.20:80", SYN, 400),
            XDP_DROP,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        case(
            "tc: pod -> LB IP (blocked by the ranges): DROP",
            Tc,
            segment("10.244.1.20:40074", "203.0.113.20:80", SYN, 500),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        // The node's IP outside the ranges: its LB IP is no source either.
        case(
            "tc: 203.0.113.21 (the LB IP itself) -> LB IP, node IP outside the ranges: DROP",
            Tc,
            segment("203.0.113.21:50075", "203.0.113.21:80", SYN, 600),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        case(
            "xdp: the node 192.0.2.1 -> LB IP (outside 10.0.0.0/8): DROP",
            Xdp,
            segment("192.0.2.1:50076", "203.0.113.21:80", SYN, 700),
            XDP_DROP,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        // One Service's LB IP is no source for another's.
        case(
            "tc: 203.0.113.20 -> the other Service's LB IP 203.0.113.21: DROP",
            Tc,
            segment("203.0.113.20:50077", "203.0.113.21:80", SYN, 800),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        case(
            "tc: 10.1.2.3 (in 10.0.0.0/8) -> 203.0.113.21: allowed",
            Tc,
            segment("10.1.2.3:50078", "203.0.113.21:80", SYN, 900),
            TC_ACT_OK,
            Exact(segment(&n(50078), LOCAL_BE, SYN, 900)),
            Verdict::DnatNew,
        ),
    ]);
}
