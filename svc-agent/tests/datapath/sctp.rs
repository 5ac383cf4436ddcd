//! SCTP, translated by address only (svc-ebpf/src/sctp.rs): SCTP's CRC32c covers the SCTP
//! packet but not the IP addresses, so DNAT, masquerade and the reverse translation of a
//! Service whose targetPort is its port leave the SCTP bytes exactly as they were, and the
//! CRC valid (checked in every case by recomputing it: `verify_checksums` and
//! `assert_crc`). What needs a port change is refused: a client port that would have to be
//! remapped (its reply tuple is taken), a backend on another port. No endpoints: ICMP port
//! unreachable, as kube-proxy's REJECT for every protocol but TCP. The machine's kernel has
//! no SCTP sockets, so this is tested here and not end to end.
use std::collections::BTreeMap;

use svc_agent::desired::DesiredState;
use svc_agent::model::Protocol;
use svc_agent::packet::{PacketBuilder, SCTP_DATA, SCTP_INIT, SCTP_INIT_ACK, crc32c};
use svc_common::Verdict;

use crate::support::*;

const SCTP: Protocol = Protocol::Sctp;
const BE: &str = "10.244.1.11:5000";
const SVC: &str = "10.96.0.40:5000";
const EMPTY: &str = "10.96.0.41:5000";
/// A frontend whose backend listens on another port: the agent never writes one (the
/// model drops such ports), the programs refuse it anyway.
const MOVED: &str = "10.96.0.42:5000";
const LB_IP: &str = "203.0.113.40:5000";

fn services() -> DesiredState {
    DesiredState {
        frontends: BTreeMap::from([
            fe(SVC, SCTP, CIP, "sctp", &[BE], no_edit),
            fe(EMPTY, SCTP, CIP, "sctp-empty", &[], no_edit),
            fe(
                MOVED,
                SCTP,
                CIP,
                "sctp-moved",
                &["10.244.1.11:6000"],
                no_edit,
            ),
            // A LoadBalancer IP, externalTrafficPolicy Cluster: masqueraded.
            fe(LB_IP, SCTP, LB, "sctp-lb", &[BE], no_edit),
        ]),
        ..Default::default()
    }
}

/// An SCTP packet from a client (client MAC -> node MAC) with one chunk.
fn chunk(src: &str, dst: &str, vtag: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::sctp(sa(src), sa(dst), vtag, kind)
        .macs(CLIENT_MAC, NODE_MAC)
        .ip_id(0x5c7a)
        .payload(payload)
        .build()
}

/// The same from a backend (node MAC -> client MAC).
fn reply(src: &str, dst: &str, vtag: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::sctp(sa(src), sa(dst), vtag, kind)
        .macs(NODE_MAC, CLIENT_MAC)
        .ip_id(0x5c7a)
        .payload(payload)
        .build()
}

/// The stored checksum of an option-less frame's SCTP packet is the CRC32c of that packet
/// (checksum field zeroed), least significant byte first.
fn assert_crc(name: &str, frame: &[u8]) {
    let sctp = &frame[34..];
    let mut zeroed = sctp.to_vec();
    zeroed[8..12].copy_from_slice(&[0; 4]);
    assert_eq!(
        sctp[8..12],
        crc32c(&zeroed).to_le_bytes(),
        "case {name:?}: the SCTP CRC32c after translation"
    );
}

fn cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let init = |src: &str, dst: &str| chunk(src, dst, 0, SCTP_INIT, b"init: tag 0x1234");
    let init_ack = |src: &str, dst: &str| reply(src, dst, 0x1234, SCTP_INIT_ACK, b"cookie!!");
    let data = |src: &str, dst: &str| chunk(src, dst, 0xabcd, SCTP_DATA, b"some data, 19 bytes");
    let empty_init = init("10.244.1.20:40041", EMPTY);
    vec![
        // --- A pod to the ClusterIP: DNAT by address, reply translated back ---------------
        case(
            "tc: pod -> ClusterIP SCTP INIT: DNAT by address, CRC untouched",
            Tc,
            init("10.244.1.20:40040", SVC),
            TC_ACT_OK,
            Exact(init("10.244.1.20:40040", BE)),
            Verdict::DnatNew,
        ),
        case(
            "tc: backend INIT-ACK -> from the ClusterIP",
            Tc,
            init_ack(BE, "10.244.1.20:40040"),
            TC_ACT_OK,
            Exact(init_ack(SVC, "10.244.1.20:40040")),
            Verdict::RevNat,
        ),
        case(
            "tc: the association's DATA: the same backend",
            Tc,
            data("10.244.1.20:40040", SVC),
            TC_ACT_OK,
            Exact(data("10.244.1.20:40040", BE)),
            Verdict::DnatEstablished,
        ),
        // --- From outside: masqueraded by address, the client's port kept -----------------
        case(
            "xdp: outside -> ClusterIP: DNAT + SNAT to the node, client port 20000 kept (below the masquerade range)",
            Xdp,
            init("192.0.2.100:20000", SVC),
            XDP_PASS,
            Exact(init(&node(20000), BE)),
            Verdict::DnatNew,
        ),
        case(
            "tc: backend reply to the node -> ClusterIP to the outside client",
            Tc,
            init_ack(BE, &node(20000)),
            TC_ACT_OK,
            Exact(init_ack(SVC, "192.0.2.100:20000")),
            Verdict::RevNat,
        ),
        case(
            "xdp: the same reply arriving on eth0 is translated as well",
            Xdp,
            init_ack(BE, &node(20000)),
            XDP_PASS,
            Exact(init_ack(SVC, "192.0.2.100:20000")),
            Verdict::RevNat,
        ),
        case(
            "tc: LoadBalancer IP (policy Cluster) from outside: DNAT + SNAT, port kept",
            Tc,
            init("192.0.2.100:20001", LB_IP),
            TC_ACT_OK,
            Exact(init(&node(20001), BE)),
            Verdict::DnatNew,
        ),
        // Another client on the same port would need a port remap: refused, not mangled.
        case(
            "xdp: a second outside client on port 20000 (reply tuple taken): dropped, no remap",
            Xdp,
            init("192.0.2.101:20000", SVC),
            XDP_DROP,
            Unchanged,
            Verdict::DropNatFailed,
        ),
        // --- No endpoints: ICMP port unreachable, as for UDP ----------------------------
        case(
            "tc: SCTP to a Service without endpoints: ICMP port unreachable",
            Tc,
            empty_init.clone(),
            TC_ACT_REDIRECT,
            Exact(expected_port_unreachable(
                ip("10.96.0.41"),
                ip("10.244.1.20"),
                &empty_init,
            )),
            Verdict::RejectIcmp,
        ),
        case(
            "xdp: SCTP to a Service without endpoints: passed to TC",
            Xdp,
            init("192.0.2.100:20002", EMPTY),
            XDP_PASS,
            Unchanged,
            Verdict::XdpPassToTc,
        ),
        // --- What would change a port is refused ----------------------------------------
        case(
            "tc: a backend on another port (a CRC recompute): dropped",
            Tc,
            init("10.244.1.20:40042", MOVED),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropRewriteFailed,
        ),
        case(
            "xdp: the same from outside: dropped",
            Xdp,
            init("192.0.2.100:20003", MOVED),
            XDP_DROP,
            Unchanged,
            Verdict::DropRewriteFailed,
        ),
        // --- Odd packets ----------------------------------------------------------------
        case(
            "tc: SCTP common header cut short: dropped",
            Tc,
            PacketBuilder::sctp(sa("10.244.1.20:40043"), sa(SVC), 0, SCTP_INIT)
                .truncate(14 + 20 + 8)
                .build(),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "tc: SCTP to an address no Service has: passed",
            Tc,
            init("10.244.1.20:40044", "10.96.0.99:5000"),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
    ]
}

#[test]
fn sctp_is_translated_by_address_with_the_crc_kept_valid() {
    let mut h = Harness::load("sctp", &node1_fixture_config(false));
    h.sync(&services());
    for c in cases() {
        let out = h.check(&c);
        if matches!(c.output, Output::Exact(_)) && out[23] == 132 {
            assert_crc(c.name, &out);
        }
    }
}

/// A port change (here: the UDP/TCP checksum update the TC program applies to other
/// protocols) would corrupt the SCTP packet; the CRC of every translated frame is the
/// input's, byte for byte.
#[test]
fn translated_sctp_keeps_every_sctp_byte() {
    let mut h = Harness::load("sctp-bytes", &node1_fixture_config(false));
    h.sync(&services());
    let input = chunk("10.244.1.20:40050", SVC, 0x77, SCTP_DATA, &[0x42; 61]);
    for prog in [Prog::Tc, Prog::Xdp] {
        let r = h.run(prog, &input);
        assert_eq!(r.out[34..], input[34..], "{prog:?}: SCTP bytes changed");
        assert_eq!(&r.out[30..34], &ip("10.244.1.11").octets(), "{prog:?}");
        assert_crc("data", &r.out);
        svc_agent::packet::verify_checksums(&r.out).unwrap();
    }
}
