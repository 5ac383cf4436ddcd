//! Masquerade on node 1: SNAT to the node address for sources outside the pod CIDR (TC and
//! XDP, local and remote backends, TCP and UDP with and without checksum) and the reverse
//! translation of the replies, none for pods, hairpin, a kept client port that equals a
//! NodePort, NAT port collisions, and `masquerade_all` (ClusterIP traffic only: the
//! external addresses of an externalTrafficPolicy Local Service keep the client's address).
use svc_agent::packet::SYN;
use svc_common::Verdict;

use crate::conntrack;
use crate::services::{self, LOCAL_BE, REMOTE_BE};
use crate::support::*;

fn cases() -> Vec<Case> {
    use Output::Exact;
    use Prog::{Tc, Xdp};
    let n = node;
    vec![
        // --- ClusterIP 10.96.0.10:80 -> 10.244.1.11:8080 ---------------------------------
        case(
            "tc: pod 10.244.1.20 -> ClusterIP: DNAT, no SNAT",
            Tc,
            segment("10.244.1.20:40000", "10.96.0.10:80", SYN, 1000),
            TC_ACT_OK,
            Exact(segment("10.244.1.20:40000", LOCAL_BE, SYN, 1000)),
            Verdict::DnatNew,
        ),
        case(
            "tc: backend reply to the pod -> from 10.96.0.10:80",
            Tc,
            synack(LOCAL_BE, "10.244.1.20:40000", 7000, 1001),
            TC_ACT_OK,
            Exact(synack("10.96.0.10:80", "10.244.1.20:40000", 7000, 1001)),
            Verdict::RevNat,
        ),
        case(
            "xdp: outside 192.0.2.100:50000 -> ClusterIP: DNAT + SNAT to 192.0.2.1:50000",
            Xdp,
            segment("192.0.2.100:50000", "10.96.0.10:80", SYN, 2000),
            XDP_PASS,
            Exact(segment(&n(50000), LOCAL_BE, SYN, 2000)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: same flow, data segment: same DNAT + SNAT",
            Xdp,
            tcp_data("192.0.2.100:50000", "10.96.0.10:80", 2001, 1),
            XDP_PASS,
            Exact(tcp_data(&n(50000), LOCAL_BE, 2001, 1)),
            Verdict::DnatEstablished,
        ),
        case(
            "tc: local backend reply to 192.0.2.1:50000 -> 10.96.0.10:80 > 192.0.2.100:50000",
            Tc,
            synack(LOCAL_BE, &n(50000), 8000, 2001),
            TC_ACT_OK,
            Exact(synack("10.96.0.10:80", "192.0.2.100:50000", 8000, 2001)),
            Verdict::RevNat,
        ),
        case(
            "tc: outside 192.0.2.100:50001 -> ClusterIP: DNAT + SNAT to 192.0.2.1:50001",
            Tc,
            segment("192.0.2.100:50001", "10.96.0.10:80", SYN, 3000),
            TC_ACT_OK,
            Exact(segment(&n(50001), LOCAL_BE, SYN, 3000)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: reply on eth0 to 192.0.2.1:50001 -> 10.96.0.10:80 > 192.0.2.100:50001",
            Xdp,
            synack(LOCAL_BE, &n(50001), 9000, 3001),
            XDP_PASS,
            Exact(synack("10.96.0.10:80", "192.0.2.100:50001", 9000, 3001)),
            Verdict::RevNat,
        ),
        // Same paths with a backend on node 2 (10.96.0.12:80 -> 10.244.2.11:8080).
        case(
            "tc: outside 192.0.2.100:50002 -> ClusterIP (remote backend): DNAT + SNAT",
            Tc,
            segment("192.0.2.100:50002", "10.96.0.12:80", SYN, 4000),
            TC_ACT_OK,
            Exact(segment(&n(50002), REMOTE_BE, SYN, 4000)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: remote backend reply on eth0 -> 10.96.0.12:80 > 192.0.2.100:50002",
            Xdp,
            synack(REMOTE_BE, &n(50002), 9100, 4001),
            XDP_PASS,
            Exact(synack("10.96.0.12:80", "192.0.2.100:50002", 9100, 4001)),
            Verdict::RevNat,
        ),
        case(
            "xdp: pod 10.244.2.20 (node 2) via eth0 -> ClusterIP: DNAT, no SNAT",
            Xdp,
            segment("10.244.2.20:40001", "10.96.0.10:80", SYN, 4500),
            XDP_PASS,
            Exact(segment("10.244.2.20:40001", LOCAL_BE, SYN, 4500)),
            Verdict::DnatNew,
        ),
        // UDP with masquerade (checksum and checksum 0).
        case(
            "xdp: outside UDP 192.0.2.100:50060 -> ClusterIP: DNAT + SNAT",
            Xdp,
            datagram("192.0.2.100:50060", "10.96.0.10:80", b"udp snat", false),
            XDP_PASS,
            Exact(datagram(&n(50060), LOCAL_BE, b"udp snat", false)),
            Verdict::DnatNew,
        ),
        case(
            "tc: UDP reply to 192.0.2.1:50060 -> 10.96.0.10:80 > 192.0.2.100:50060",
            Tc,
            datagram(LOCAL_BE, &n(50060), b"udp reply", false),
            TC_ACT_OK,
            Exact(datagram(
                "10.96.0.10:80",
                "192.0.2.100:50060",
                b"udp reply",
                false,
            )),
            Verdict::RevNat,
        ),
        case(
            "tc: outside UDP (checksum 0) -> DNAT + SNAT, checksum stays 0",
            Tc,
            datagram("192.0.2.100:50061", "10.96.0.10:80", b"no csum", true),
            TC_ACT_OK,
            Exact(datagram(&n(50061), LOCAL_BE, b"no csum", true)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: UDP reply (checksum 0) -> reverse both, checksum stays 0",
            Xdp,
            datagram(LOCAL_BE, &n(50061), b"no csum back", true),
            XDP_PASS,
            Exact(datagram(
                "10.96.0.10:80",
                "192.0.2.100:50061",
                b"no csum back",
                true,
            )),
            Verdict::RevNat,
        ),
        // --- Hairpin ---------------------------------------------------------------------
        case(
            "tc: hairpin 10.244.1.11 -> its own ClusterIP: SNAT to 192.0.2.1:40100",
            Tc,
            segment("10.244.1.11:40100", "10.96.0.10:80", SYN, 5000),
            TC_ACT_OK,
            Exact(segment(&n(40100), LOCAL_BE, SYN, 5000)),
            Verdict::DnatNew,
        ),
        case(
            "tc: hairpin reply -> 10.96.0.10:80 > 10.244.1.11:40100",
            Tc,
            synack(LOCAL_BE, &n(40100), 9200, 5001),
            TC_ACT_OK,
            Exact(synack("10.96.0.10:80", "10.244.1.11:40100", 9200, 5001)),
            Verdict::RevNat,
        ),
        // --- A masqueraded flow whose kept client port is a NodePort --------------------------
        // The outside client's own port 30000 is free, so the flow is masqueraded to
        // 192.0.2.1:30000; its reply is addressed to 192.0.2.1:30000/TCP, which is also the
        // NodePort frontend np-cluster. (If the fix is to never keep a client port that is
        // a NodePort of the masquerade address, the first case's expected port changes.)
        case(
            "xdp: outside 192.0.2.100:30000 -> ClusterIP: SNAT keeps port 30000",
            Xdp,
            segment("192.0.2.100:30000", "10.96.0.10:80", SYN, 11_000),
            XDP_PASS,
            Exact(segment(&n(30000), LOCAL_BE, SYN, 11_000)),
            Verdict::DnatNew,
        ),
        case(
            "tc: reply to 192.0.2.1:30000 (= a NodePort) -> 10.96.0.10:80 > 192.0.2.100:30000",
            Tc,
            synack(LOCAL_BE, &n(30000), 9600, 11_001),
            TC_ACT_OK,
            Exact(synack("10.96.0.10:80", "192.0.2.100:30000", 9600, 11_001)),
            Verdict::RevNat,
        ),
        // Regression: decide() used to look the destination up as a frontend before the
        // reply entry, so this reply (to a masquerade port that equals a NodePort) was
        // DNATed as a new NodePort connection. Replies to the masquerade address now go
        // to conntrack first.
    ]
}

#[test]
fn masquerade_table() {
    let mut h = services::node1("masquerade");
    h.run_table(&cases());
    conntrack::assert_masqueraded_and_plain(
        &h,
        "192.0.2.100:50000",
        "10.96.0.10:80",
        LOCAL_BE,
        &node(50000),
        "10.244.1.20:40000",
    );
}

/// Two outside clients with the same source port to the same Service: the second gets
/// another NAT port of the range, and each one's replies go back to it.
#[test]
fn nat_port_collision() {
    use Prog::{Tc, Xdp};
    let mut h = services::node1("nat-collision");
    let n = node;
    let (lo, hi) = node1_fixture_config(false).masquerade_ports;
    let first = h.expect(
        "collision: first client",
        Xdp,
        &segment("192.0.2.100:51000", "10.96.0.10:80", SYN, 100),
        XDP_PASS,
        Verdict::DnatNew,
    );
    bytes_eq(
        "collision: first client keeps its port",
        &segment(&n(51000), LOCAL_BE, SYN, 100),
        &first,
    );
    let second = h.expect(
        "collision: second client, same port",
        Xdp,
        &segment("192.0.2.101:51000", "10.96.0.10:80", SYN, 200),
        XDP_PASS,
        Verdict::DnatNew,
    );
    let nat = src_of(&second);
    assert_eq!(*nat.ip(), ip(NODE_IP), "second client's source: {nat}");
    assert_ne!(
        nat.port(),
        51000,
        "second client got the first one's NAT port"
    );
    assert!(
        (lo..=hi).contains(&nat.port()),
        "NAT port {} outside {lo}..={hi}",
        nat.port()
    );
    bytes_eq(
        "collision: second client",
        &segment(&nat.to_string(), LOCAL_BE, SYN, 200),
        &second,
    );
    // Its next packet keeps the same NAT port.
    let out = h.expect(
        "collision: second client's next packet",
        Tc,
        &tcp_data("192.0.2.101:51000", "10.96.0.10:80", 201, 1),
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    bytes_eq(
        "collision: second client's next packet",
        &tcp_data(&nat.to_string(), LOCAL_BE, 201, 1),
        &out,
    );
    let out = h.expect(
        "collision: reply to the second NAT port",
        Tc,
        &synack(LOCAL_BE, &nat.to_string(), 300, 201),
        TC_ACT_OK,
        Verdict::RevNat,
    );
    bytes_eq(
        "collision: reply to the second NAT port -> second client",
        &synack("10.96.0.10:80", "192.0.2.101:51000", 300, 201),
        &out,
    );
    let out = h.expect(
        "collision: reply to the first NAT port",
        Xdp,
        &synack(LOCAL_BE, &n(51000), 400, 101),
        XDP_PASS,
        Verdict::RevNat,
    );
    bytes_eq(
        "collision: reply to the first NAT port -> first client",
        &synack("10.96.0.10:80", "192.0.2.100:51000", 400, 101),
        &out,
    );
    println!(
        "ok   NAT port collision: second client masqueraded to port {}, replies go back to each",
        nat.port()
    );
}

/// Node 1 with masquerade_all: ClusterIP traffic is masqueraded from every source, pods
/// included; the external addresses are not touched by it (kube-proxy's masqueradeAll
/// rule matches the cluster IP): externalTrafficPolicy Local keeps the client's address
/// on its NodePort, LoadBalancer IP and externalIP, from outside and from a pod, and
/// policy Cluster masquerades as it always does; hairpin too.
#[test]
fn masquerade_all() {
    use Output::Exact;
    use Prog::{Tc, Xdp};
    let mut h = Harness::load("masq-all", &node1_fixture_config(true));
    let mut desired = services::node1_services();
    let local_only = |s: &mut svc_agent::desired::FrontendState| {
        s.local_policy = true;
        s.local_backends = backends(&[LOCAL_BE], TCP);
    };
    let (f, s) = fe(
        "203.0.113.20:80",
        TCP,
        LB,
        "lb-local",
        &[LOCAL_BE],
        local_only,
    );
    desired.frontends.insert(f, s);
    let (f, s) = fe(
        "198.51.100.20:80",
        TCP,
        svc_agent::desired::FrontendKind::ExternalIp,
        "eip-local",
        &[LOCAL_BE],
        local_only,
    );
    desired.frontends.insert(f, s);
    h.sync(&desired);
    let n = node;
    h.run_table(&[
        // --- ClusterIP: every source ---------------------------------------------------
        case(
            "tc (masquerade_all): pod -> ClusterIP: DNAT + SNAT to 192.0.2.1:40000",
            Tc,
            segment("10.244.1.20:40000", "10.96.0.10:80", SYN, 1000),
            TC_ACT_OK,
            Exact(segment(&n(40000), LOCAL_BE, SYN, 1000)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): reply -> 10.96.0.10:80 > 10.244.1.20:40000",
            Tc,
            synack(LOCAL_BE, &n(40000), 7000, 1001),
            TC_ACT_OK,
            Exact(synack("10.96.0.10:80", "10.244.1.20:40000", 7000, 1001)),
            Verdict::RevNat,
        ),
        case(
            "xdp (masquerade_all): outside -> ClusterIP: DNAT + SNAT",
            Xdp,
            segment("192.0.2.100:50000", "10.96.0.10:80", SYN, 2000),
            XDP_PASS,
            Exact(segment(&n(50000), LOCAL_BE, SYN, 2000)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): pod -> ClusterIP (ITP Local, one local): SNAT",
            Tc,
            segment("10.244.1.20:40001", "10.96.0.14:80", SYN, 1100),
            TC_ACT_OK,
            Exact(segment(&n(40001), LOCAL_BE, SYN, 1100)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): hairpin -> SNAT",
            Tc,
            segment("10.244.1.11:40002", "10.96.0.10:80", SYN, 1200),
            TC_ACT_OK,
            Exact(segment(&n(40002), LOCAL_BE, SYN, 1200)),
            Verdict::DnatNew,
        ),
        // --- externalTrafficPolicy Local: the client's address is kept ------------------
        case(
            "xdp (masquerade_all): outside -> NodePort (Local): local backend, client kept",
            Xdp,
            segment("192.0.2.100:50010", &n(30001), SYN, 3000),
            XDP_PASS,
            Exact(segment("192.0.2.100:50010", LOCAL_BE, SYN, 3000)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): ETP Local reply -> from the NodePort, to the client",
            Tc,
            synack(LOCAL_BE, "192.0.2.100:50010", 7100, 3001),
            TC_ACT_OK,
            Exact(synack(&n(30001), "192.0.2.100:50010", 7100, 3001)),
            Verdict::RevNat,
        ),
        case(
            "tc (masquerade_all): outside -> NodePort (Local) via TC: client kept",
            Tc,
            segment("198.51.100.7:50011", &n(30001), SYN, 3100),
            TC_ACT_OK,
            Exact(segment("198.51.100.7:50011", LOCAL_BE, SYN, 3100)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): pod -> NodePort (Local): every endpoint, pod address kept",
            Tc,
            segment("10.244.1.20:40010", &n(30002), SYN, 3200),
            TC_ACT_OK,
            Exact(segment("10.244.1.20:40010", REMOTE_BE, SYN, 3200)),
            Verdict::DnatNew,
        ),
        case(
            "xdp (masquerade_all): outside -> LB IP (Local): client kept",
            Xdp,
            segment("192.0.2.100:50012", "203.0.113.20:80", SYN, 3300),
            XDP_PASS,
            Exact(segment("192.0.2.100:50012", LOCAL_BE, SYN, 3300)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): pod -> LB IP (Local): pod address kept",
            Tc,
            segment("10.244.1.20:40012", "203.0.113.20:80", SYN, 3400),
            TC_ACT_OK,
            Exact(segment("10.244.1.20:40012", LOCAL_BE, SYN, 3400)),
            Verdict::DnatNew,
        ),
        case(
            "xdp (masquerade_all): outside -> externalIP (Local): client kept",
            Xdp,
            segment("192.0.2.100:50013", "198.51.100.20:80", SYN, 3500),
            XDP_PASS,
            Exact(segment("192.0.2.100:50013", LOCAL_BE, SYN, 3500)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): pod -> externalIP (Local): pod address kept",
            Tc,
            segment("10.244.1.20:40013", "198.51.100.20:80", SYN, 3600),
            TC_ACT_OK,
            Exact(segment("10.244.1.20:40013", LOCAL_BE, SYN, 3600)),
            Verdict::DnatNew,
        ),
        // --- externalTrafficPolicy Cluster: masqueraded, as without the flag ------------
        case(
            "xdp (masquerade_all): outside -> NodePort (Cluster): SNAT",
            Xdp,
            segment("192.0.2.100:50014", &n(30000), SYN, 3700),
            XDP_PASS,
            Exact(segment(&n(50014), REMOTE_BE, SYN, 3700)),
            Verdict::DnatNew,
        ),
        case(
            "tc (masquerade_all): pod -> NodePort (Cluster): SNAT",
            Tc,
            segment("10.244.1.20:40014", &n(30000), SYN, 3800),
            TC_ACT_OK,
            Exact(segment(&n(40014), REMOTE_BE, SYN, 3800)),
            Verdict::DnatNew,
        ),
    ]);
}
