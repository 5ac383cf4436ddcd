//! kube-proxy's own packet-flow tables, ported row by row: every IPv4 row of every
//! `runPacketFlowTests` call in pkg/proxy/nftables/proxier_test.go (kubernetes/kubernetes,
//! checked at 81810de6), with its Services, EndpointSlices, proxier settings and literal
//! addresses, through the real manifest parser, desired-state computation, reconciler and
//! programs. Row names are upstream's, prefixed by the Go test, so each can be found there.
//!
//! What a row means, as kube-proxy's tracer does: `To(endpoints)` is the set of every
//! endpoint a new connection may be sent to (checked both ways: each new flow reaches one
//! of them, and new flows from other source ports reach every one of them within 64
//! tries), `masq` whether the backend sees the node's address (192.168.0.2) instead of
//! the client's; `Drop`, `Reject` (a TCP RST, or ICMP port unreachable for UDP/SCTP,
//! built by the program) and `Untouched` ("": no rule applies, the frame comes out as it
//! went in). A packet takes the path it would take on the node: from a pod (10.0.0.0/8,
//! kube-proxy's pod CIDR) through TC on the pod's interface; from anywhere else through
//! XDP on the external device and then TC on the same device (XDP's output is TC's input,
//! as in the kernel), so a row is the result of the whole chain. Translated frames must
//! have valid checksums.
//!
//! Not here, and why:
//! - Rows whose source is the node itself (192.168.0.2, "node to ..."): the node's own
//!   connections go through the cgroup socket programs (connect4/sendmsg4), which
//!   BPF_PROG_TEST_RUN cannot run. They are ported end to end, with real node processes,
//!   in tests/tests/kube_proxy_flows.rs (with every other row of these tables).
//! - TestNodePorts' IPv6 subtests: IPv6 is not supported yet.
//!
//! kube-proxy's tracer follows nftables rules in prerouting; where its result and ours
//! would differ for a documented reason, the row says so in a comment.
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};

use svc_agent::dataplane::{DatapathConfig, DetectLocal};
use svc_agent::desired::{self, DesiredState, Ipv4Cidr, NodeContext};
use svc_agent::manifest;
use svc_agent::packet::{PacketBuilder, RST, SCTP_INIT, SYN, parse_summary, verify_checksums};
use svc_common::Verdict;

use crate::support::*;

/// kube-proxy's testNodeIP: the node's primary address, the only NodePort address by
/// default (nodePortAddresses 192.168.0.2/32) and the masquerade source.
const NODE: &str = "192.168.0.2";

/// A Go test's Services and EndpointSlices with upstream's literal values, shared with the
/// end-to-end port (`tests/tests/kube_proxy_flows/<name>.yaml`, which swaps the endpoint
/// addresses for its lab pods').
macro_rules! manifests {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/tests/kube_proxy_flows/",
            $name,
            ".yaml"
        ))
    };
}

/// `manifests` without its EndpointSlices (the Go tests that delete them).
fn without_slices(manifests: &str) -> String {
    manifests
        .split("\n---")
        .filter(|doc| !doc.contains("kind: EndpointSlice"))
        .collect::<Vec<_>>()
        .join("\n---")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    /// Every one of these endpoints, and only these (kube-proxy's "a, b, c").
    To(&'static [&'static str]),
    Drop,
    Reject,
    /// kube-proxy's "": no rule touches the packet.
    Untouched,
}

use Out::{Drop, Reject, To, Untouched};

#[derive(Clone, Copy, Debug)]
struct Row {
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    port: u16,
    proto: Proto,
    out: Out,
    masq: bool,
}

const fn row(
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    port: u16,
    out: Out,
    masq: bool,
) -> Row {
    Row {
        name,
        src,
        dst,
        port,
        proto: Proto::Tcp,
        out,
        masq,
    }
}

const fn row_proto(
    name: &'static str,
    src: &'static str,
    proto: Proto,
    dst: &'static str,
    port: u16,
    out: Out,
    masq: bool,
) -> Row {
    Row {
        name,
        src,
        dst,
        port,
        proto,
        out,
        masq,
    }
}

/// What the chain of programs made of one new connection's first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Dnat { to: SocketAddrV4, from: Ipv4Addr },
    Drop(Verdict),
    Reject(Verdict),
    Untouched,
}

/// kube-proxy's NewFakeProxier(IPv4): node test-node with addresses 192.168.0.2,
/// 192.168.1.2 and 192.168.99.11 (eth0's), NodePorts on 192.168.0.2/32 only, service CIDR
/// 172.30.0.0/16.
fn fake_node() -> NodeContext {
    NodeContext {
        node_name: Some("test-node".into()),
        node_ips: vec![
            ip(NODE).into(),
            ip("192.168.1.2").into(),
            ip("192.168.99.11").into(),
        ],
        node_port_addresses: vec![Ipv4Cidr::new(ip(NODE), 32).into()],
        service_cluster_ip_range: vec![Ipv4Cidr::new(ip("172.30.0.0"), 16).into()],
        ..Default::default()
    }
}

/// Its datapath side: pods told by the pod CIDR 10.0.0.0/8 (DetectLocalByCIDR),
/// masquerade to the node's address.
fn fake_config() -> DatapathConfig {
    DatapathConfig {
        detect_local: DetectLocal::Cidr,
        pod_cidrs: vec![Ipv4Cidr::new(ip("10.0.0.0"), 8).into()],
        masquerade_addr: Some(ip(NODE)),
        ..Default::default()
    }
}

/// The same without a local-traffic detector (kube-proxy's NewNoOpLocalDetector): no
/// source is known to be a pod.
fn no_detector(config: DatapathConfig) -> DatapathConfig {
    DatapathConfig {
        detect_local: DetectLocal::None,
        pod_cidrs: Vec::new(),
        ..config
    }
}

fn masquerade_all(config: DatapathConfig) -> DatapathConfig {
    DatapathConfig {
        masquerade_all: true,
        ..config
    }
}

fn desired_state(test: &str, manifests: &str, node: &NodeContext) -> DesiredState {
    let set = manifest::load_str(manifests, &format!("{test}.yaml"));
    // Upstream's fixtures give eTP:Cluster Services a healthCheckNodePort, which the API
    // server would refuse; the parser says it is ignored and serves the Service.
    let problems: Vec<_> = set
        .problems
        .iter()
        .filter(|p| !p.reason.starts_with("spec.healthCheckNodePort ignored"))
        .collect();
    assert!(problems.is_empty(), "{test}: {problems:?}");
    let (state, problems) = desired::compute(&set.cluster, node);
    assert!(problems.is_empty(), "{test}: {problems:?}");
    state
}

fn is_pod(src: Ipv4Addr) -> bool {
    Ipv4Cidr::new(ip("10.0.0.0"), 8).contains(src)
}

fn frame(row: &Row, sport: u16) -> Vec<u8> {
    let src = SocketAddrV4::new(ip(row.src), sport);
    let dst = SocketAddrV4::new(ip(row.dst), row.port);
    match row.proto {
        Proto::Tcp => tcp(&src.to_string(), &dst.to_string())
            .flags(SYN)
            .seq(1000)
            .build(),
        Proto::Udp => udp(&src.to_string(), &dst.to_string())
            .payload(b"kube-proxy row")
            .build(),
        Proto::Sctp => PacketBuilder::sctp(src, dst, 0, SCTP_INIT)
            .macs(CLIENT_MAC, NODE_MAC)
            .payload(&[0; 16])
            .build(),
    }
}

/// Runs one new connection's first packet from `sport` through the programs on its path.
fn trace(h: &mut Harness, row: &Row, sport: u16) -> Result<Outcome, String> {
    let input = frame(row, sport);
    let path: &[Prog] = if is_pod(ip(row.src)) {
        &[Prog::Tc]
    } else {
        &[Prog::Xdp, Prog::Tc]
    };
    let mut packet = input.clone();
    let mut dnat = false;
    for &prog in path {
        let r = h.run(prog, &packet);
        // XDP counts nothing for a packet it passes on untouched: TC counts it.
        let verdict = match (prog, &r.delta[..]) {
            (_, [(verdict, 1)]) => *verdict,
            (Prog::Xdp, []) if r.ret == XDP_PASS => Verdict::XdpPassToTc,
            _ => return Err(format!("{prog:?}: verdict counters moved {:?}", r.delta)),
        };
        match (prog, r.ret) {
            (Prog::Xdp, XDP_DROP) | (Prog::Tc, TC_ACT_SHOT) => return Ok(Outcome::Drop(verdict)),
            (Prog::Tc, TC_ACT_REDIRECT) => {
                check_reject(row, sport, &r.out)?;
                return Ok(Outcome::Reject(verdict));
            }
            (Prog::Xdp, XDP_PASS) | (Prog::Tc, TC_ACT_OK) => {}
            (_, ret) => return Err(format!("{prog:?} returned {ret} ({verdict:?})")),
        }
        if r.out != packet {
            if dnat {
                return Err(format!(
                    "{prog:?} rewrote a frame XDP had translated already ({verdict:?}): {}",
                    summary(&r.out)
                ));
            }
            dnat = true;
            verify_checksums(&r.out).map_err(|e| format!("{prog:?} output: {e}"))?;
        }
        packet = r.out;
    }
    if !dnat {
        return Ok(Outcome::Untouched);
    }
    let s = parse_summary(&packet).ok_or("translated frame unreadable")?;
    let to = s.dst_socket().ok_or("translated frame without ports")?;
    Ok(Outcome::Dnat { to, from: s.src })
}

/// A reject goes back to the client from the address it asked for: a TCP RST, or an ICMP
/// port unreachable for UDP and SCTP (kube-proxy's `reject` with the default
/// icmp-port-unreachable, which the kernel sends as a RST for TCP).
fn check_reject(row: &Row, sport: u16, out: &[u8]) -> Result<(), String> {
    let s = parse_summary(out).ok_or("reject unreadable")?;
    let client = SocketAddrV4::new(ip(row.src), sport);
    let ok = match row.proto {
        Proto::Tcp => {
            s.src_socket() == Some(SocketAddrV4::new(ip(row.dst), row.port))
                && s.dst_socket() == Some(client)
                && s.tcp_flags.is_some_and(|f| f & RST != 0)
        }
        Proto::Udp | Proto::Sctp => {
            s.src == ip(row.dst) && s.dst == *client.ip() && s.icmp == Some((3, 3))
        }
    };
    verify_checksums(out).map_err(|e| format!("reject: {e}"))?;
    if ok {
        Ok(())
    } else {
        Err(format!("not a reject of this packet: {}", summary(out)))
    }
}

/// The next 64 client ports, never used before in this process: every row's flows are
/// new connections, as kube-proxy's tracer assumes (a port reused after an EndpointSlice
/// change would be an established TCP connection, which keeps its backend).
fn fresh_ports() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(1024);
    let base = NEXT.fetch_add(64, Ordering::Relaxed);
    assert!(base < 65535 - 64, "out of client ports");
    base
}

/// Checks one row: a mismatch is returned as text (all of a table's are listed at once).
fn check_row(h: &mut Harness, test: &str, row: &Row) -> Result<String, String> {
    let sport = fresh_ports();
    let want_from = if row.masq { ip(NODE) } else { ip(row.src) };
    match row.out {
        To(endpoints) => {
            let want: BTreeSet<SocketAddrV4> = endpoints.iter().map(|e| sa(e)).collect();
            let mut seen = BTreeSet::new();
            for i in 0..64 {
                match trace(h, row, sport + i)? {
                    Outcome::Dnat { to, from } if want.contains(&to) && from == want_from => {
                        seen.insert(to);
                    }
                    other => {
                        return Err(format!(
                            "got {other:?}, expected one of {endpoints:?} seeing {want_from}"
                        ));
                    }
                }
                if seen == want {
                    break;
                }
            }
            if seen != want {
                return Err(format!("64 new flows reached only {seen:?} of {want:?}"));
            }
            Ok(format!("{} (masq {})", endpoints.join(", "), row.masq))
        }
        expected => {
            if row.masq {
                return Err("kube-proxy never marks a DROP, REJECT or untouched row".into());
            }
            let got = trace(h, row, sport)?;
            match (expected, &got) {
                (Drop, Outcome::Drop(v)) => Ok(format!("DROP ({})", v.label())),
                (Reject, Outcome::Reject(v)) => Ok(format!("REJECT ({})", v.label())),
                (Untouched, Outcome::Untouched) => Ok("untouched".into()),
                _ => Err(format!("got {got:?}")),
            }
        }
    }
    .map_err(|e| {
        format!(
            "{test}/{}: {} -> {}:{} {:?}: {e}",
            row.name, row.src, row.dst, row.port, row.proto
        )
    })
}

/// A node's own traffic: ported end to end (see the module doc).
fn from_node(row: &Row) -> bool {
    row.src == NODE
}

/// Runs `rows` of Go test `test` on the loaded datapath; panics listing every mismatch.
/// Returns how many rows ran here (node rows are left to the end-to-end table).
fn run_rows(h: &mut Harness, test: &str, rows: &[Row]) -> usize {
    let mut failures = Vec::new();
    let mut ran = 0;
    for row in rows {
        if from_node(row) {
            println!("e2e  {test}/{}: the node's own traffic", row.name);
            continue;
        }
        ran += 1;
        match check_row(h, test, row) {
            Ok(got) => println!("ok   {test}/{}: {got}", row.name),
            Err(e) => {
                println!("FAIL {e}");
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of kube-proxy's rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    ran
}

/// Loads a datapath with `config`, syncs the state of `manifests` on `node` and runs the
/// rows.
fn run_test(
    test: &str,
    manifests: &str,
    node: &NodeContext,
    config: &DatapathConfig,
    rows: &[Row],
) -> usize {
    let mut h = Harness::load("kube-proxy", config);
    h.sync(&desired_state(test, manifests, node));
    run_rows(&mut h, test, rows)
}

// ---------------------------------------------------------------------------------------
// TestNoEndpointsReject

#[test]
#[rustfmt::skip]
fn no_endpoints_reject() {
    run_test(
        "TestNoEndpointsReject",
        manifests!("no_endpoints_reject"),
        &fake_node(),
        &fake_config(),
        &[
            row("pod to cluster IP with no endpoints", "10.0.0.2", "172.30.0.41", 80, Reject, false),
            row("external to external IP with no endpoints", "203.0.113.2", "192.168.99.11", 80, Reject, false),
            row("pod to NodePort with no endpoints", "10.0.0.2", NODE, 3001, Reject, false),
            row("external to NodePort with no endpoints", "203.0.113.2", NODE, 3001, Reject, false),
            row("pod to LoadBalancer IP with no endpoints", "10.0.0.2", "1.2.3.4", 80, Reject, false),
            row("external to LoadBalancer IP with no endpoints", "203.0.113.2", "1.2.3.4", 80, Reject, false),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// TestClusterIPGeneral

#[test]
#[rustfmt::skip]
fn cluster_ip_general() {
    const BOTH_80: &[&str] = &["10.180.0.1:80", "10.180.2.1:80"];
    const BOTH_53: &[&str] = &["10.180.0.1:53", "10.180.2.1:53"];
    run_test(
        "TestClusterIPGeneral",
        manifests!("cluster_ip_general"),
        &fake_node(),
        &fake_config(),
        &[
            row("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, To(&["10.180.0.1:80"]), false),
            row("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, To(&["10.180.0.1:80"]), true),
            row("clusterIP with multiple endpoints", "10.180.0.2", "172.30.0.42", 80, To(BOTH_80), false),
            row("clusterIP with TargetPort", "10.180.0.2", "172.30.0.42", 443, To(&["10.180.0.1:8443", "10.180.2.1:8443"]), false),
            row_proto("clusterIP with TCP, UDP, and SCTP on same port (TCP)", "10.180.0.2", Proto::Tcp, "172.30.0.42", 53, To(&["10.180.0.1:5353", "10.180.2.1:5353"]), false),
            // Upstream names this row "(TCP)" too; it sends UDP.
            row_proto("clusterIP with TCP, UDP, and SCTP on same port (TCP)#01", "10.180.0.2", Proto::Udp, "172.30.0.42", 53, To(BOTH_53), false),
            row_proto("clusterIP with TCP, UDP, and SCTP on same port (SCTP)", "10.180.0.2", Proto::Sctp, "172.30.0.42", 53, To(BOTH_53), false),
            row_proto("TCP-only port does not match UDP traffic", "10.180.0.2", Proto::Udp, "172.30.0.42", 80, Reject, false),
            row("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, Reject, false),
            row("packet to unallocated cluster ip", "10.180.0.2", "172.30.0.50", 80, Drop, false),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// TestLoadBalancer

#[test]
#[rustfmt::skip]
fn load_balancer() {
    const EP: Out = To(&["10.180.0.1:80"]);
    run_test(
        "TestLoadBalancer",
        // The file holds the lab's node network (192.0.2.0/24) where upstream has its
        // own (192.168.0.0/24), the only value it changes.
        &manifests!("load_balancer").replace("\"192.0.2.0/24\"", "\"192.168.0.0/24\""),
        &fake_node(),
        &fake_config(),
        &[
            row("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, EP, false),
            row("external to nodePort", "203.0.113.2", NODE, 3001, EP, true),
            row("nodePort bypasses LoadBalancerSourceRanges", "203.0.113.130", NODE, 3001, EP, true),
            row("accepted external to LB1", "203.0.113.2", "1.2.3.4", 80, EP, true),
            row("accepted external to LB2", "203.0.113.2", "5.6.7.8", 80, EP, true),
            row("blocked external to LB1", "203.0.113.130", "1.2.3.4", 80, Drop, false),
            row("blocked external to LB2", "203.0.113.130", "5.6.7.8", 80, Drop, false),
            row("pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "1.2.3.4", 80, Drop, false),
            row("pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "5.6.7.8", 80, Drop, false),
            row("node to LB1 (allowed by LoadBalancerSourceRanges)", NODE, "1.2.3.4", 80, EP, true),
            row("node to LB2 (allowed by LoadBalancerSourceRanges)", NODE, "5.6.7.8", 80, EP, true),
            // The node's packet looped back with the VIP as source arrives like any other.
            row("same node to LB1, SNATted to LB1 (implicitly allowed)", "1.2.3.4", "1.2.3.4", 80, EP, true),
            row("same node to LB2, SNATted to LB2 (implicitly allowed)", "5.6.7.8", "5.6.7.8", 80, EP, true),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// TestNodePorts (the IPv4 subtests)

#[test]
#[rustfmt::skip]
fn node_ports() {
    const OUT: Out = To(&["10.180.0.1:80", "10.180.2.1:80"]);
    let common = [
        row("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, OUT, false),
        row("external to nodePort", "203.0.113.2", NODE, 3001, OUT, true),
        row("node to nodePort", NODE, NODE, 3001, OUT, true),
    ];
    // "ipv4": the default nodePortAddresses (192.168.0.2/32).
    let mut rows = common.to_vec();
    rows.push(row("secondary nodeIP ignores NodePorts", "203.0.113.2", "192.168.1.2", 3001, Untouched, false));
    run_test("TestNodePorts/ipv4", manifests!("node_ports"), &fake_node(), &fake_config(), &rows);

    // "ipv4, multiple nodeport-addresses": 192.168.0.0/24, 192.168.1.0/24 (and an IPv6
    // CIDR, which an IPv4 proxier ignores).
    let node = NodeContext {
        node_port_addresses: vec![
            Ipv4Cidr::new(ip("192.168.0.0"), 24).into(),
            Ipv4Cidr::new(ip("192.168.1.0"), 24).into(),
        ],
        ..fake_node()
    };
    let mut rows = common.to_vec();
    rows.push(row("external to nodePort on secondary IP", "203.0.113.2", "192.168.1.2", 3001, OUT, true));
    run_test("TestNodePorts/ipv4, multiple nodeport-addresses", manifests!("node_ports"), &node, &fake_config(), &rows);
}

// ---------------------------------------------------------------------------------------
// TestExternalTrafficPolicyLocal and TestExternalTrafficPolicyCluster

#[test]
#[rustfmt::skip]
fn external_traffic_policy_local() {
    const BOTH: Out = To(&["10.180.0.1:80", "10.180.2.1:80"]);
    const LOCAL: Out = To(&["10.180.2.1:80"]);
    run_test(
        "TestExternalTrafficPolicyLocal",
        manifests!("external_traffic_policy_local"),
        &fake_node(),
        &fake_config(),
        &[
            row("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, BOTH, false),
            row("pod to external IP hits both endpoints, unmasqueraded", "10.0.0.2", "192.168.99.11", 80, BOTH, false),
            row("external to external IP hits only local endpoint, unmasqueraded", "203.0.113.2", "192.168.99.11", 80, LOCAL, false),
            row("pod to LB IP hits only both endpoints, unmasqueraded", "10.0.0.2", "1.2.3.4", 80, BOTH, false),
            row("external to LB IP hits only local endpoint, unmasqueraded", "203.0.113.2", "1.2.3.4", 80, LOCAL, false),
            row("pod to NodePort hits both endpoints, unmasqueraded", "10.0.0.2", NODE, 3001, BOTH, false),
            row("external to NodePort hits only local endpoint, unmasqueraded", "203.0.113.2", NODE, 3001, LOCAL, false),
        ],
    );
}

#[test]
#[rustfmt::skip]
fn external_traffic_policy_cluster() {
    const BOTH: Out = To(&["10.180.0.1:80", "10.180.2.1:80"]);
    run_test(
        "TestExternalTrafficPolicyCluster",
        manifests!("external_traffic_policy_cluster"),
        &fake_node(),
        &fake_config(),
        &[
            row("pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, BOTH, false),
            row("pod to external IP hits both endpoints, masqueraded", "10.0.0.2", "192.168.99.11", 80, BOTH, true),
            row("external to external IP hits both endpoints, masqueraded", "203.0.113.2", "192.168.99.11", 80, BOTH, true),
            row("pod to LB IP hits both endpoints, masqueraded", "10.0.0.2", "1.2.3.4", 80, BOTH, true),
            row("external to LB IP hits both endpoints, masqueraded", "203.0.113.2", "1.2.3.4", 80, BOTH, true),
            row("pod to NodePort hits both endpoints, masqueraded", "10.0.0.2", NODE, 3001, BOTH, true),
            row("external to NodePort hits both endpoints, masqueraded", "203.0.113.2", NODE, 3001, BOTH, true),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// The tests that run rows, delete the EndpointSlice, and run rows again

/// The rows of `test` on `manifests`, then `after_deletion` once its EndpointSlices are
/// deleted.
fn with_and_without_slices(test: &str, manifests: &str, rows: &[Row], after_deletion: &[Row]) {
    let node = fake_node();
    let mut h = Harness::load("kube-proxy", &fake_config());
    h.sync(&desired_state(test, manifests, &node));
    run_rows(&mut h, test, rows);
    h.sync(&desired_state(test, &without_slices(manifests), &node));
    run_rows(&mut h, &format!("{test} (slice deleted)"), after_deletion);
}

#[test]
#[rustfmt::skip]
fn internal_traffic_policy() {
    let subtests: [(&str, &str, Row); 4] = [
        (
            "internalTrafficPolicy is cluster",
            manifests!("internal_traffic_policy_cluster"),
            row("pod to ClusterIP hits all endpoints", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]), false),
        ),
        (
            "internalTrafficPolicy is local and there is one local endpoint",
            manifests!("internal_traffic_policy_one_local"),
            row("pod to ClusterIP hits only local endpoint", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.1:80"]), false),
        ),
        (
            "internalTrafficPolicy is local and there are multiple local endpoints",
            manifests!("internal_traffic_policy_two_local"),
            row("pod to ClusterIP hits all local endpoints", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.1:80", "10.0.1.2:80"]), false),
        ),
        (
            "internalTrafficPolicy is local and there are no local endpoints",
            manifests!("internal_traffic_policy_no_local"),
            row("no endpoints", "10.0.0.2", "172.30.1.1", 80, Drop, false),
        ),
    ];
    for (name, manifests, r) in subtests {
        with_and_without_slices(
            &format!("TestInternalTrafficPolicy/{name}"),
            manifests,
            &[r],
            &[row("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, Reject, false)],
        );
    }
}

#[rustfmt::skip]
fn terminating_after_deletion() -> [Row; 2] {
    [
        row("pod to clusterIP after endpoints deleted", "10.0.0.2", "172.30.1.1", 80, Reject, false),
        row("external to LB after endpoints deleted", "203.0.113.2", "1.2.3.4", 80, Reject, false),
    ]
}

/// TestTerminatingEndpointsTrafficPolicyLocal: a LoadBalancer without a NodePort, eTP
/// Local; its subtests' endpoints are in the files (ready/serving/terminating, node).
#[test]
#[rustfmt::skip]
fn terminating_endpoints_traffic_policy_local() {
    let subtests: [(&str, &str, [Row; 2]); 4] = [
        (
            "ready endpoints exist",
            manifests!("terminating_local_ready"),
            [
                row("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]), false),
                row("external to LB", "203.0.113.2", "1.2.3.4", 80, To(&["10.0.1.1:80", "10.0.1.2:80"]), false),
            ],
        ),
        (
            "only terminating endpoints exist",
            manifests!("terminating_local_only_terminating"),
            [
                row("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.5:80"]), false),
                row("external to LB", "203.0.113.2", "1.2.3.4", 80, To(&["10.0.1.2:80", "10.0.1.3:80"]), false),
            ],
        ),
        (
            "terminating endpoints on remote node",
            manifests!("terminating_local_remote"),
            [
                row("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.5:80"]), false),
                row("external to LB, no locally-usable endpoints", "203.0.113.2", "1.2.3.4", 80, Drop, false),
            ],
        ),
        (
            "no usable endpoints on any node",
            manifests!("terminating_local_no_usable"),
            [
                row("pod to clusterIP, no usable endpoints", "10.0.0.2", "172.30.1.1", 80, Reject, false),
                row("external to LB, no usable endpoints", "203.0.113.2", "1.2.3.4", 80, Reject, false),
            ],
        ),
    ];
    for (name, manifests, rows) in subtests {
        with_and_without_slices(
            &format!("TestTerminatingEndpointsTrafficPolicyLocal/{name}"),
            manifests,
            &rows,
            &terminating_after_deletion(),
        );
    }
}

/// TestTerminatingEndpointsTrafficPolicyCluster: the same Service with eTP Cluster.
#[test]
#[rustfmt::skip]
fn terminating_endpoints_traffic_policy_cluster() {
    let subtests: [(&str, &str, [Row; 2]); 4] = [
        (
            "ready endpoints exist",
            manifests!("terminating_cluster_ready"),
            [
                row("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]), false),
                row("external to LB", "203.0.113.2", "1.2.3.4", 80, To(&["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]), true),
            ],
        ),
        (
            "only terminating endpoints exist",
            manifests!("terminating_cluster_only_terminating"),
            [
                row("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.2:80", "10.0.1.3:80", "10.0.1.5:80"]), false),
                row("external to LB", "203.0.113.2", "1.2.3.4", 80, To(&["10.0.1.2:80", "10.0.1.3:80", "10.0.1.5:80"]), true),
            ],
        ),
        (
            "terminating endpoints on remote node",
            manifests!("terminating_cluster_remote"),
            [
                row("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, To(&["10.0.1.5:80"]), false),
                row("external to LB", "203.0.113.2", "1.2.3.4", 80, To(&["10.0.1.5:80"]), true),
            ],
        ),
        (
            "no usable endpoints on any node",
            manifests!("terminating_cluster_no_usable"),
            [
                row("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, Reject, false),
                row("external to LB", "203.0.113.2", "1.2.3.4", 80, Reject, false),
            ],
        ),
    ];
    for (name, manifests, rows) in subtests {
        with_and_without_slices(
            &format!("TestTerminatingEndpointsTrafficPolicyCluster/{name}"),
            manifests,
            &rows,
            &terminating_after_deletion(),
        );
    }
}

// ---------------------------------------------------------------------------------------
// TestInternalExternalMasquerade

const E1: Out = To(&["10.180.0.1:80", "10.180.1.1:80"]);
const E2: Out = To(&["10.180.0.2:80", "10.180.1.2:80"]);
const E2L: Out = To(&["10.180.0.2:80"]);
const E3: Out = To(&["10.180.0.3:80", "10.180.1.3:80"]);
const E3L: Out = To(&["10.180.0.3:80"]);

/// The base table (kube-proxy's configuration "base": masqueradeAll false, pods told by
/// CIDR).
#[rustfmt::skip]
fn masquerade_rows() -> Vec<Row> {
    const P: &str = "10.0.0.2";
    const X: &str = "203.0.113.2";
    vec![
        row("pod to ClusterIP", P, "172.30.0.41", 80, E1, false),
        row("pod to NodePort", P, NODE, 3001, E1, true),
        row("pod to LB", P, "1.2.3.4", 80, E1, true),
        row("node to ClusterIP", NODE, "172.30.0.41", 80, E1, true),
        row("node to NodePort", NODE, NODE, 3001, E1, true),
        row("node to LB", NODE, "1.2.3.4", 80, E1, true),
        row("external to ClusterIP", X, "172.30.0.41", 80, E1, true),
        row("external to NodePort", X, NODE, 3001, E1, true),
        row("external to LB", X, "1.2.3.4", 80, E1, true),
        row("pod to ClusterIP with eTP:Local", P, "172.30.0.42", 80, E2, false),
        row("pod to NodePort with eTP:Local", P, NODE, 3002, E2, false),
        row("pod to LB with eTP:Local", P, "5.6.7.8", 80, E2, false),
        row("node to ClusterIP with eTP:Local", NODE, "172.30.0.42", 80, E2, true),
        // Upstream sends this one to 3001 (svc1's NodePort), not 3002.
        row("node to NodePort with eTP:Local", NODE, NODE, 3001, E1, true),
        row("node to LB with eTP:Local", NODE, "5.6.7.8", 80, E2, true),
        row("external to ClusterIP with eTP:Local", X, "172.30.0.42", 80, E2, true),
        row("external to NodePort with eTP:Local", X, NODE, 3002, E2L, false),
        row("external to LB with eTP:Local", X, "5.6.7.8", 80, E2L, false),
        row("pod to ClusterIP with iTP:Local", P, "172.30.0.43", 80, E3L, false),
        row("pod to NodePort with iTP:Local", P, NODE, 3003, E3, true),
        row("pod to LB with iTP:Local", P, "9.10.11.12", 80, E3, true),
        row("node to ClusterIP with iTP:Local", NODE, "172.30.0.43", 80, E3L, true),
        row("node to NodePort with iTP:Local", NODE, NODE, 3003, E3, true),
        row("node to LB with iTP:Local", NODE, "9.10.11.12", 80, E3, true),
        row("external to ClusterIP with iTP:Local", X, "172.30.0.43", 80, E3L, true),
        row("external to NodePort with iTP:Local", X, NODE, 3003, E3, true),
        row("external to LB with iTP:Local", X, "9.10.11.12", 80, E3, true),
    ]
}

/// kube-proxy's overrides of one configuration: a row's name, its new output and/or masq.
type Overrides = &'static [(&'static str, Option<Out>, Option<bool>)];

/// The base rows with `overrides` applied; as upstream, an override must name a row and
/// change it.
fn overridden(overrides: Overrides) -> Vec<Row> {
    let mut rows = masquerade_rows();
    for (name, out, masq) in overrides {
        let row = rows
            .iter_mut()
            .find(|r| r.name == *name)
            .unwrap_or_else(|| panic!("override {name:?} names no row"));
        let before = (row.out, row.masq);
        if let Some(out) = out {
            row.out = *out;
        }
        if let Some(masq) = masq {
            row.masq = *masq;
        }
        assert_ne!(
            before,
            (row.out, row.masq),
            "override {name:?} changes nothing"
        );
    }
    rows
}

const NO_DETECTOR_OVERRIDES: Overrides = &[
    // Without a local detector nothing marks non-pod ClusterIP traffic.
    ("node to ClusterIP", None, Some(false)),
    ("node to ClusterIP with eTP:Local", None, Some(false)),
    ("node to ClusterIP with iTP:Local", None, Some(false)),
    ("external to ClusterIP", None, Some(false)),
    ("external to ClusterIP with eTP:Local", None, Some(false)),
    ("external to ClusterIP with iTP:Local", None, Some(false)),
    // And no rule short-circuits pods to all endpoints of an eTP:Local Service.
    ("pod to NodePort with eTP:Local", Some(E2L), None),
    ("pod to LB with eTP:Local", Some(E2L), None),
];

const MASQUERADE_ALL_OVERRIDES: Overrides = &[
    ("pod to ClusterIP", None, Some(true)),
    ("pod to ClusterIP with eTP:Local", None, Some(true)),
    ("pod to ClusterIP with iTP:Local", None, Some(true)),
];

const BOTH_OVERRIDES: Overrides = &[
    ("pod to ClusterIP", None, Some(true)),
    ("pod to ClusterIP with eTP:Local", None, Some(true)),
    ("pod to ClusterIP with iTP:Local", None, Some(true)),
    ("pod to NodePort with eTP:Local", Some(E2L), None),
    ("pod to LB with eTP:Local", Some(E2L), None),
];

#[test]
fn internal_external_masquerade() {
    let node = fake_node();
    let configurations = [
        ("base", fake_config(), overridden(&[])),
        (
            "no LocalTrafficDetector",
            no_detector(fake_config()),
            overridden(NO_DETECTOR_OVERRIDES),
        ),
        (
            "masqueradeAll",
            masquerade_all(fake_config()),
            overridden(MASQUERADE_ALL_OVERRIDES),
        ),
        (
            "masqueradeAll, no LocalTrafficDetector",
            masquerade_all(no_detector(fake_config())),
            overridden(BOTH_OVERRIDES),
        ),
    ];
    let mut ran = 0;
    for (name, config, rows) in configurations {
        ran += run_test(
            &format!("TestInternalExternalMasquerade/{name}"),
            manifests!("internal_external_masquerade"),
            &node,
            &config,
            &rows,
        );
    }
    // 4 configurations of 27 rows, 9 of them from the node itself.
    assert_eq!(ran, 4 * 18);
}
