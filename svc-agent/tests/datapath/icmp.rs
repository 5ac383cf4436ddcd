//! ICMP errors about translated flows on node 1 (svc-ebpf/src/icmp.rs): fragmentation
//! needed from a router between the node and a backend about a DNATed TCP flow (pod ->
//! ClusterIP) and about a masqueraded one (outside -> NodePort), with a Linux-sized quote
//! (the whole TCP header) and a minimal one (8 bytes); port unreachable from a backend about
//! UDP (with and without a UDP checksum); time exceeded and parameter problem; the other
//! direction, errors about replies on their way to the backend (frag needed from a router
//! on the client's side, port unreachable from a client whose socket is gone); XDP handing
//! errors to TC; errors that are not ours (unknown flow, addressed to someone else, a
//! redirect, a cut quote, a quoted non-first fragment) passing untouched; conntrack left as
//! it was. Every expected frame is built from scratch by the packet builder: the translated
//! quote must read exactly as the packet the receiver sent.
use std::collections::HashMap;

use svc_agent::packet::{
    ACK, ICMP_DEST_UNREACH, ICMP_PARAMETER_PROBLEM, ICMP_PORT_UNREACH, ICMP_TIME_EXCEEDED,
    PROTO_TCP, PSH, PacketBuilder, Quote, SYN,
};
use svc_common::{Ct4Key, Ct4Value, Verdict};

use crate::services::{self, LOCAL_BE, REMOTE_BE};
use crate::support::*;

/// A router between node 1 and a backend.
const ROUTER: &str = "198.51.100.1";
/// A router between node 1 and its clients.
const CLIENT_ROUTER: &str = "203.0.113.1";
/// Node 2: the router between node 1 and node 2's pods.
const NODE2: &str = "192.0.2.2";
const ROUTER_MAC: [u8; 6] = [0x02, 0xcc, 0x00, 0x00, 0x00, 0x03];
const MTU: u16 = 1280;

fn addr(endpoint: &str) -> &str {
    endpoint.split(':').next().expect("ip:port")
}

/// A full-sized data segment (1400 bytes of payload, DF) of a client.
fn big_segment(src: &str, dst: &str, seq: u32) -> Vec<u8> {
    tcp(src, dst)
        .ip_id(0x1c48)
        .flags(PSH | ACK)
        .seq(seq)
        .ack(1)
        .payload(&[0x5a; 1400])
        .build()
}

/// A full-sized data segment of a backend's reply.
fn big_reply(src: &str, dst: &str, seq: u32) -> Vec<u8> {
    tcp_reply(src, dst)
        .flags(PSH | ACK)
        .seq(seq)
        .ack(1)
        .payload(&[0xa5; 1400])
        .build()
}

/// An ICMP error as Linux sends it (TOS 0xc0, no DF) from `from` to `to` about
/// `offending`.
fn error(
    from: &str,
    to: &str,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    offending: &[u8],
    quote: Quote,
) -> Vec<u8> {
    PacketBuilder::icmp_error(ip(from), ip(to), kind, code, rest, offending, quote)
        .macs(ROUTER_MAC, NODE_MAC)
        .tos(0xc0)
        .ip_id(0x4d2)
        .build()
}

fn frag_needed(from: &str, to: &str, offending: &[u8], quote: Quote) -> Vec<u8> {
    let [a, b] = MTU.to_be_bytes();
    error(
        from,
        to,
        ICMP_DEST_UNREACH,
        4,
        [0, 0, a, b],
        offending,
        quote,
    )
}

fn port_unreachable(from: &str, to: &str, offending: &[u8]) -> Vec<u8> {
    error(
        from,
        to,
        ICMP_DEST_UNREACH,
        ICMP_PORT_UNREACH,
        [0; 4],
        offending,
        Quote::Linux,
    )
}

fn conntrack(h: &Harness) -> HashMap<Ct4Key, Ct4Value> {
    h.maps
        .read_conntrack()
        .expect("reading SVC4_CT")
        .into_iter()
        .collect()
}

/// Runs `setup`, then `errors`, and checks that the errors left conntrack as it was (an
/// error neither refreshes nor closes a flow).
fn run(h: &mut Harness, setup: &[Case], errors: &[Case]) {
    h.run_table(setup);
    let before = conntrack(h);
    h.run_table(errors);
    assert_eq!(conntrack(h), before, "the ICMP errors changed conntrack");
}

#[test]
fn errors_toward_the_client() {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let mut h = services::node1("icmp-client");

    // Pod -> ClusterIP 10.96.0.10:80 -> 10.244.1.11:8080, TCP and UDP; pod -> ClusterIP
    // 10.96.0.12:80 -> 10.244.2.11:8080 (on node 2).
    let (pod, vip) = ("10.244.1.20:40000", "10.96.0.10:80");
    let sent = big_segment(pod, vip, 1001);
    let fwd = big_segment(pod, LOCAL_BE, 1001);
    let ttl = |src: &str, dst: &str, t: u8| tcp(src, dst).flags(SYN).seq(77).ttl(t).build();
    let (ttl_pod, remote_vip) = ("10.244.1.20:40001", "10.96.0.12:80");
    let (udp_pod, udp0_pod) = ("10.244.1.20:40100", "10.244.1.20:40101");
    let udp_sent = datagram(udp_pod, vip, b"dns-ish query", false);
    let udp_fwd = datagram(udp_pod, LOCAL_BE, b"dns-ish query", false);
    let udp0_sent = datagram(udp0_pod, vip, b"no checksum", true);
    let udp0_fwd = datagram(udp0_pod, LOCAL_BE, b"no checksum", true);
    // Outside 192.0.2.100:50000 -> NodePort 192.0.2.1:30000 -> 10.244.2.11:8080,
    // masqueraded to 192.0.2.1:50000 (the client's port, free and in the range).
    let (outside, np, masq) = ("192.0.2.100:50000", "192.0.2.1:30000", "192.0.2.1:50000");
    let np_sent = big_segment(outside, np, 5001);
    let np_fwd = big_segment(masq, REMOTE_BE, 5001);

    let setup = vec![
        case(
            "tc: pod SYN -> ClusterIP",
            Tc,
            segment(pod, vip, SYN, 1000),
            TC_ACT_OK,
            Exact(segment(pod, LOCAL_BE, SYN, 1000)),
            Verdict::DnatNew,
        ),
        case(
            "tc: SYN-ACK",
            Tc,
            synack(LOCAL_BE, pod, 9000, 1001),
            TC_ACT_OK,
            Exact(synack(vip, pod, 9000, 1001)),
            Verdict::RevNat,
        ),
        case(
            "tc: pod's 1440-byte segment, DF -> backend",
            Tc,
            sent.clone(),
            TC_ACT_OK,
            Exact(fwd.clone()),
            Verdict::DnatEstablished,
        ),
        case(
            "tc: pod SYN with TTL 2 -> ClusterIP (remote backend)",
            Tc,
            ttl(ttl_pod, remote_vip, 2),
            TC_ACT_OK,
            Exact(ttl(ttl_pod, REMOTE_BE, 2)),
            Verdict::DnatNew,
        ),
        case(
            "tc: pod UDP -> ClusterIP",
            Tc,
            udp_sent.clone(),
            TC_ACT_OK,
            Exact(udp_fwd.clone()),
            Verdict::DnatNew,
        ),
        case(
            "tc: pod UDP (checksum 0) -> ClusterIP",
            Tc,
            udp0_sent.clone(),
            TC_ACT_OK,
            Exact(udp0_fwd.clone()),
            Verdict::DnatNew,
        ),
        case(
            "xdp: outside SYN -> NodePort, masqueraded",
            Xdp,
            segment(outside, np, SYN, 5000),
            XDP_PASS,
            Exact(segment(masq, REMOTE_BE, SYN, 5000)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: SYN-ACK from node 2's pod",
            Xdp,
            synack(REMOTE_BE, masq, 9100, 5001),
            XDP_PASS,
            Exact(synack(np, outside, 9100, 5001)),
            Verdict::RevNat,
        ),
        case(
            "xdp: outside's 1440-byte segment -> backend",
            Xdp,
            np_sent.clone(),
            XDP_PASS,
            Exact(np_fwd.clone()),
            Verdict::DnatEstablished,
        ),
    ];

    let (client, svc_ip, far) = (addr(pod), addr(vip), addr(LOCAL_BE));
    let errors = vec![
        // --- Fragmentation needed about the DNATed flow -----------------------------------
        case(
            "tc: frag needed (Linux quote, whole TCP header) from a router -> from 10.96.0.10, quoting the pod's own segment",
            Tc,
            frag_needed(ROUTER, client, &fwd, Quote::Linux),
            TC_ACT_OK,
            Exact(frag_needed(svc_ip, client, &sent, Quote::Linux)),
            Verdict::RevNatIcmp,
        ),
        case(
            "tc: frag needed (8-byte quote, ports and seq only) -> translated the same",
            Tc,
            frag_needed(ROUTER, client, &fwd, Quote::Minimal),
            TC_ACT_OK,
            Exact(frag_needed(svc_ip, client, &sent, Quote::Minimal)),
            Verdict::RevNatIcmp,
        ),
        case(
            "xdp: the same error on the external interface: handed to TC untouched",
            Xdp,
            frag_needed(ROUTER, client, &fwd, Quote::Linux),
            XDP_PASS,
            Unchanged,
            Verdict::XdpPassToTc,
        ),
        // --- Masqueraded: outer destination back to the outside client ----------------------
        case(
            "tc: frag needed from node 2 to 192.0.2.1 about the masqueraded flow -> 192.0.2.1 > 192.0.2.100, quoting 192.0.2.100:50000 > 192.0.2.1:30000",
            Tc,
            frag_needed(NODE2, addr(masq), &np_fwd, Quote::Linux),
            TC_ACT_OK,
            Exact(frag_needed(addr(np), addr(outside), &np_sent, Quote::Linux)),
            Verdict::RevNatIcmp,
        ),
        case(
            "xdp: the masqueraded flow's error on eth0: handed to TC",
            Xdp,
            frag_needed(NODE2, addr(masq), &np_fwd, Quote::Linux),
            XDP_PASS,
            Unchanged,
            Verdict::XdpPassToTc,
        ),
        // --- Other errors --------------------------------------------------------------------
        case(
            "tc: time exceeded from node 2 (the SYN arrived with TTL 1) -> quoting the pod's SYN",
            Tc,
            error(
                NODE2,
                client,
                ICMP_TIME_EXCEEDED,
                0,
                [0; 4],
                &ttl(ttl_pod, REMOTE_BE, 1),
                Quote::Linux,
            ),
            TC_ACT_OK,
            Exact(error(
                addr(remote_vip),
                client,
                ICMP_TIME_EXCEEDED,
                0,
                [0; 4],
                &ttl(ttl_pod, remote_vip, 1),
                Quote::Linux,
            )),
            Verdict::RevNatIcmp,
        ),
        case(
            "tc: UDP port unreachable from the backend itself -> from 10.96.0.10, quoting the pod's datagram (UDP checksum translated back)",
            Tc,
            port_unreachable(far, client, &udp_fwd),
            TC_ACT_OK,
            Exact(port_unreachable(svc_ip, client, &udp_sent)),
            Verdict::RevNatIcmp,
        ),
        case(
            "tc: UDP port unreachable about a datagram without checksum: the quoted checksum stays 0",
            Tc,
            port_unreachable(far, client, &udp0_fwd),
            TC_ACT_OK,
            Exact(port_unreachable(svc_ip, client, &udp0_sent)),
            Verdict::RevNatIcmp,
        ),
        case(
            "tc: parameter problem (minimal quote) about the UDP flow",
            Tc,
            error(
                far,
                client,
                ICMP_PARAMETER_PROBLEM,
                0,
                [20, 0, 0, 0],
                &udp_fwd,
                Quote::Minimal,
            ),
            TC_ACT_OK,
            Exact(error(
                svc_ip,
                client,
                ICMP_PARAMETER_PROBLEM,
                0,
                [20, 0, 0, 0],
                &udp_sent,
                Quote::Minimal,
            )),
            Verdict::RevNatIcmp,
        ),
        // --- Not ours: untouched ------------------------------------------------------------------
        case(
            "tc: frag needed about a packet to a pod directly (no flow): untouched",
            Tc,
            frag_needed(
                ROUTER,
                client,
                &big_segment("10.244.1.20:40999", "10.244.1.12:8080", 1),
                Quote::Linux,
            ),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassOtherProto,
        ),
        case(
            "tc: frag needed about the flow but addressed to another host: untouched",
            Tc,
            frag_needed(ROUTER, "10.244.1.99", &fwd, Quote::Linux),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassOtherProto,
        ),
        case(
            "tc: a redirect quoting the flow: untouched",
            Tc,
            error(ROUTER, client, 5, 1, [10, 244, 1, 1], &fwd, Quote::Minimal),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassOtherProto,
        ),
        case(
            "tc: frag needed whose quote ends before the ports: untouched",
            Tc,
            PacketBuilder::icmp(ip(ROUTER), ip(client), ICMP_DEST_UNREACH, 4, [0, 0, 5, 0])
                .macs(ROUTER_MAC, NODE_MAC)
                .payload(&fwd[14..14 + 20 + 2])
                .build(),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassOtherProto,
        ),
        case(
            "tc: an error quoting a non-first fragment (no ports): untouched",
            Tc,
            frag_needed(
                ROUTER,
                client,
                &PacketBuilder::ipv4_raw(ip(client), ip(far), PROTO_TCP)
                    .fragment(false, 185)
                    .payload(&fwd[34..74])
                    .build(),
                Quote::Linux,
            ),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassOtherProto,
        ),
    ];
    run(&mut h, &setup, &errors);
}

#[test]
fn errors_toward_the_backend() {
    use Output::Exact;
    use Prog::{Tc, Xdp};
    let mut h = services::node1("icmp-backend");

    // Pod -> ClusterIP 10.96.0.10:80 -> 10.244.1.11:8080: the backend's reply leaves as
    // 10.96.0.10:80 > pod.
    let (pod, vip) = ("10.244.1.20:40200", "10.96.0.10:80");
    let reply_sent = big_reply(LOCAL_BE, pod, 9001);
    let reply_out = big_reply(vip, pod, 9001);
    let udp_pod = "10.244.1.20:40300";
    let udp_back = |src: &str| udp_reply(src, udp_pod).payload(b"answer").build();
    // Outside -> NodePort 192.0.2.1:30000 -> 10.244.2.11:8080, masqueraded to
    // 192.0.2.1:50001: node 2's pod replies to 192.0.2.1:50001, which leaves as
    // 192.0.2.1:30000 > 192.0.2.100:50001.
    let (outside, np, masq) = ("192.0.2.100:50001", "192.0.2.1:30000", "192.0.2.1:50001");
    let np_reply_sent = big_reply(REMOTE_BE, masq, 7001);
    let np_reply_out = big_reply(np, outside, 7001);

    let setup = vec![
        case(
            "tc: pod SYN -> ClusterIP",
            Tc,
            segment(pod, vip, SYN, 100),
            TC_ACT_OK,
            Exact(segment(pod, LOCAL_BE, SYN, 100)),
            Verdict::DnatNew,
        ),
        case(
            "tc: SYN-ACK",
            Tc,
            synack(LOCAL_BE, pod, 9000, 101),
            TC_ACT_OK,
            Exact(synack(vip, pod, 9000, 101)),
            Verdict::RevNat,
        ),
        case(
            "tc: backend's 1440-byte segment -> pod",
            Tc,
            reply_sent.clone(),
            TC_ACT_OK,
            Exact(reply_out.clone()),
            Verdict::RevNat,
        ),
        case(
            "tc: pod UDP -> ClusterIP",
            Tc,
            datagram(udp_pod, vip, b"question", false),
            TC_ACT_OK,
            Exact(datagram(udp_pod, LOCAL_BE, b"question", false)),
            Verdict::DnatNew,
        ),
        case(
            "tc: backend's UDP answer",
            Tc,
            udp_back(LOCAL_BE),
            TC_ACT_OK,
            Exact(udp_back(vip)),
            Verdict::RevNat,
        ),
        case(
            "xdp: outside SYN -> NodePort, masqueraded",
            Xdp,
            segment(outside, np, SYN, 700),
            XDP_PASS,
            Exact(segment(masq, REMOTE_BE, SYN, 700)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: node 2's pod's 1440-byte segment -> outside",
            Xdp,
            np_reply_sent.clone(),
            XDP_PASS,
            Exact(np_reply_out.clone()),
            Verdict::RevNat,
        ),
    ];

    let errors = vec![
        case(
            "tc: frag needed from a router on the client's side to 10.96.0.10 about the reply -> to the backend, quoting its own segment",
            Tc,
            frag_needed(CLIENT_ROUTER, addr(vip), &reply_out, Quote::Linux),
            TC_ACT_OK,
            Exact(frag_needed(
                CLIENT_ROUTER,
                addr(LOCAL_BE),
                &reply_sent,
                Quote::Linux,
            )),
            Verdict::DnatIcmp,
        ),
        case(
            "tc: the same with an 8-byte quote",
            Tc,
            frag_needed(CLIENT_ROUTER, addr(vip), &reply_out, Quote::Minimal),
            TC_ACT_OK,
            Exact(frag_needed(
                CLIENT_ROUTER,
                addr(LOCAL_BE),
                &reply_sent,
                Quote::Minimal,
            )),
            Verdict::DnatIcmp,
        ),
        case(
            "tc: port unreachable from a pod whose UDP socket is gone -> to the backend",
            Tc,
            port_unreachable(addr(udp_pod), addr(vip), &udp_back(vip)),
            TC_ACT_OK,
            Exact(port_unreachable(
                addr(udp_pod),
                addr(LOCAL_BE),
                &udp_back(LOCAL_BE),
            )),
            Verdict::DnatIcmp,
        ),
        case(
            "tc: frag needed to 192.0.2.1 about the masqueraded reply -> 192.0.2.1 > node 2's pod, quoting 10.244.2.11:8080 > 192.0.2.1:50001",
            Tc,
            frag_needed(CLIENT_ROUTER, addr(np), &np_reply_out, Quote::Linux),
            TC_ACT_OK,
            Exact(frag_needed(
                addr(masq),
                addr(REMOTE_BE),
                &np_reply_sent,
                Quote::Linux,
            )),
            Verdict::DnatIcmp,
        ),
    ];
    run(&mut h, &setup, &errors);
}
