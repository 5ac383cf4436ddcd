//! ClusterIP in TC on the single-node datapath: DNAT of new and established TCP and UDP
//! flows, reverse NAT of the replies, UDP checksum 0, Service port = target port, Ethernet
//! padding, one of three backends; then the conntrack entries those flows left.
use svc_agent::packet::{ACK, PROTO_TCP, PROTO_UDP, SYN};
use svc_common::Verdict;

use crate::support::*;
use crate::{conntrack, services};

fn cases() -> Vec<Case> {
    use Output::{Exact, OneOf};
    use Prog::Tc;

    // Flow A: 10.244.1.20:40000 -> 10.96.0.10:80/TCP (one backend). DNAT expectations are
    // built with the same parameters and the backend as destination.
    let client_a = "10.244.1.20:40000";
    let syn_a = |dst: &str| {
        tcp(client_a, dst)
            .flags(SYN)
            .seq(1_000_000)
            .tcp_options(&[2, 4, 0x05, 0xb4])
            .build()
    };
    let ack_a = |dst: &str| {
        tcp(client_a, dst)
            .flags(ACK)
            .seq(1_000_001)
            .ack(555_001)
            .payload(b"GET / HTTP/1.1\r\n\r\n")
            .build()
    };
    let synack_a = |src: &str| {
        tcp_reply(src, client_a)
            .flags(SYN | ACK)
            .seq(555_000)
            .ack(1_000_001)
            .build()
    };

    // UDP flows to 10.96.0.10:80: with a checksum, with checksum 0, padded to 60 bytes.
    let udp_b = |dst: &str| udp("10.244.1.20:40001", dst).payload(b"ping-udp").build();
    let udp_b_reply = |src: &str| udp_reply(src, "10.244.1.20:40001").payload(b"pong").build();
    let udp_c = |dst: &str| {
        udp("10.244.1.20:40002", dst)
            .payload(b"no checksum")
            .udp_checksum_zero()
            .build()
    };
    let udp_c_reply = |src: &str| {
        udp_reply(src, "10.244.1.20:40002")
            .payload(b"zero back")
            .udp_checksum_zero()
            .build()
    };
    let udp_padded = |dst: &str| {
        udp("10.244.1.20:40003", dst)
            .payload(b"hi")
            .pad_to(60)
            .build()
    };
    let same_port = |dst: &str| tcp("10.244.1.20:40041", dst).flags(SYN).seq(8).build();

    // 10.96.0.20:80/TCP, three backends.
    let multi_syn = |dst: &str| tcp("10.244.1.20:40010", dst).flags(SYN).seq(77).build();
    let multi_candidates = ["10.244.1.11:8080", "10.244.1.12:8080", "10.244.1.13:8080"]
        .iter()
        .map(|b| multi_syn(b))
        .collect();

    let be = services::LOCAL_BE;
    vec![
        case(
            "tc: SYN to 10.96.0.10:80 -> 10.244.1.11:8080",
            Tc,
            syn_a("10.96.0.10:80"),
            TC_ACT_OK,
            Exact(syn_a(be)),
            Verdict::DnatNew,
        ),
        case(
            "tc: ACK of the same flow, same backend",
            Tc,
            ack_a("10.96.0.10:80"),
            TC_ACT_OK,
            Exact(ack_a(be)),
            Verdict::DnatEstablished,
        ),
        case(
            "tc: SYN-ACK from the backend -> from 10.96.0.10:80",
            Tc,
            synack_a(be),
            TC_ACT_OK,
            Exact(synack_a("10.96.0.10:80")),
            Verdict::RevNat,
        ),
        case(
            "tc: UDP to 10.96.0.10:80 -> 10.244.1.11:8080",
            Tc,
            udp_b("10.96.0.10:80"),
            TC_ACT_OK,
            Exact(udp_b(be)),
            Verdict::DnatNew,
        ),
        case(
            "tc: UDP again, same flow",
            Tc,
            udp_b("10.96.0.10:80"),
            TC_ACT_OK,
            Exact(udp_b(be)),
            Verdict::DnatEstablished,
        ),
        case(
            "tc: UDP reply from the backend -> from 10.96.0.10:80",
            Tc,
            udp_b_reply(be),
            TC_ACT_OK,
            Exact(udp_b_reply("10.96.0.10:80")),
            Verdict::RevNat,
        ),
        case(
            "tc: UDP with checksum 0 translated, checksum stays 0",
            Tc,
            udp_c("10.96.0.10:80"),
            TC_ACT_OK,
            Exact(udp_c(be)),
            Verdict::DnatNew,
        ),
        case(
            "tc: UDP reply with checksum 0 -> from 10.96.0.10:80, stays 0",
            Tc,
            udp_c_reply(be),
            TC_ACT_OK,
            Exact(udp_c_reply("10.96.0.10:80")),
            Verdict::RevNat,
        ),
        case(
            "tc: SYN to 10.96.0.30:8080 -> address-only DNAT",
            Tc,
            same_port("10.96.0.30:8080"),
            TC_ACT_OK,
            Exact(same_port(be)),
            Verdict::DnatNew,
        ),
        case(
            "tc: UDP padded to 60 bytes -> DNAT, padding kept",
            Tc,
            udp_padded("10.96.0.10:80"),
            TC_ACT_OK,
            Exact(udp_padded(be)),
            Verdict::DnatNew,
        ),
        case(
            "tc: SYN to 10.96.0.20:80 -> one of three backends",
            Tc,
            multi_syn("10.96.0.20:80"),
            TC_ACT_OK,
            OneOf(multi_candidates),
            Verdict::DnatNew,
        ),
    ]
}

#[test]
fn clusterip_table() {
    let mut h = services::single_node("clusterip");
    h.run_table(&cases());
    conntrack::assert_replied_flow(&h, "10.244.1.20:40000", "10.96.0.10:80", services::LOCAL_BE);
    conntrack::assert_translated_flows(
        &h,
        &[
            ("10.244.1.20:40000", PROTO_TCP),
            ("10.244.1.20:40001", PROTO_UDP),
            ("10.244.1.20:40002", PROTO_UDP),
            ("10.244.1.20:40003", PROTO_UDP),
            ("10.244.1.20:40041", PROTO_TCP),
            ("10.244.1.20:40010", PROTO_TCP),
        ],
    );
}
