//! XDP on the single-node datapath (no pod CIDR: nothing masqueraded) from an outside
//! client 192.0.2.100: DNAT of a TCP flow and its retransmitted SYN, reverse NAT of the
//! SYN-ACK, UDP with a checksum and with checksum 0 and their replies.
use svc_agent::packet::{ACK, PROTO_TCP, PROTO_UDP, PacketBuilder, SYN};
use svc_common::Verdict;

use crate::support::*;
use crate::{conntrack, services};

fn cases() -> Vec<Case> {
    use Output::Exact;
    use Prog::Xdp;
    let be = services::LOCAL_BE;

    let syn = |dst: &str| {
        tcp("192.0.2.100:50000", dst)
            .flags(SYN)
            .seq(123_456)
            .build()
    };
    let synack = |src: &str| {
        PacketBuilder::tcp(sa(src), sa("192.0.2.100:50000"))
            .macs(NODE_MAC, CLIENT_MAC)
            .flags(SYN | ACK)
            .seq(9)
            .ack(123_457)
            .build()
    };
    let udp1 = |dst: &str| udp("192.0.2.100:50001", dst).payload(b"xdp udp").build();
    let udp0 = |dst: &str| {
        udp("192.0.2.100:50002", dst)
            .payload(b"xdp no csum")
            .udp_checksum_zero()
            .build()
    };
    let udp_back = |src: &str, zero: bool| {
        let b = udp_reply(src, "192.0.2.100:50002").payload(b"reply");
        if zero {
            b.udp_checksum_zero().build()
        } else {
            b.build()
        }
    };

    vec![
        case(
            "xdp: SYN 192.0.2.100:50000 -> 10.96.0.10:80 DNAT",
            Xdp,
            syn("10.96.0.10:80"),
            XDP_PASS,
            Exact(syn(be)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: same SYN again (retransmit), same backend",
            Xdp,
            syn("10.96.0.10:80"),
            XDP_PASS,
            Exact(syn(be)),
            Verdict::DnatEstablished,
        ),
        case(
            "xdp: SYN-ACK from the backend -> from 10.96.0.10:80",
            Xdp,
            synack(be),
            XDP_PASS,
            Exact(synack("10.96.0.10:80")),
            Verdict::RevNat,
        ),
        case(
            "xdp: UDP to 10.96.0.10:80 DNAT",
            Xdp,
            udp1("10.96.0.10:80"),
            XDP_PASS,
            Exact(udp1(be)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: UDP with checksum 0, stays 0",
            Xdp,
            udp0("10.96.0.10:80"),
            XDP_PASS,
            Exact(udp0(be)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: UDP reply (checksum 0) -> from 10.96.0.10:80, stays 0",
            Xdp,
            udp_back(be, true),
            XDP_PASS,
            Exact(udp_back("10.96.0.10:80", true)),
            Verdict::RevNat,
        ),
        case(
            "xdp: UDP reply (checksum) -> from 10.96.0.10:80",
            Xdp,
            udp_back(be, false),
            XDP_PASS,
            Exact(udp_back("10.96.0.10:80", false)),
            Verdict::RevNat,
        ),
    ]
}

#[test]
fn xdp_table() {
    let mut h = services::single_node("xdp");
    h.run_table(&cases());
    conntrack::assert_translated_flows(
        &h,
        &[
            ("192.0.2.100:50000", PROTO_TCP),
            ("192.0.2.100:50001", PROTO_UDP),
            ("192.0.2.100:50002", PROTO_UDP),
        ],
    );
}
