//! IPv4 fragments (svc-ebpf/src/frag.rs): every fragment of a datagram gets the translation
//! of its first fragment. Datagrams of 4,000-6,000 bytes cut by `packet::fragment` as Linux
//! cuts them for an MTU of 1500, through TC and XDP: to a ClusterIP (first fragment DNAT as
//! a packet, the others the same addresses), the reply (larger than the request), the
//! reply of a masqueraded flow from outside, a TCP segment, a zero UDP checksum, a
//! fragment before its first one (passed), a datagram to no Service, an IPv4 id reused by
//! a datagram to no Service (the old entry must not translate it), an entry older than
//! Linux's ipfrag_time, a rejected datagram (the rest dropped), and XDP's output through
//! TC. Every case has the exact output bytes (built by fragmenting the datagram as it must
//! leave); the translated fragments must reassemble into that datagram with valid
//! checksums, which proves the first fragment's incremental L4 checksum update covers the
//! whole datagram.
use aya::maps::MapError;
use svc_agent::packet::{PacketBuilder, fragment, reassemble, verify_checksums};
use svc_common::{FRAG_KIND_DNAT, Frag4Key, Frag4Value, Verdict};

use crate::services;
use crate::support::*;

/// The lab's MTU: fragments of at most 1500 IPv4 bytes.
const MTU: usize = 1500;

/// Which way a datagram goes, for its MACs: from a client to the node, or out to one.
#[derive(Clone, Copy)]
enum Dir {
    In,
    Out,
}

/// A UDP datagram of `len` payload bytes (a pattern that depends on `id`) from `src` to
/// `dst` with IPv4 id `id`, in fragments.
fn udp_frags(src: &str, dst: &str, id: u16, len: usize, dir: Dir) -> Vec<Vec<u8>> {
    udp_frags_with(src, dst, id, len, dir, |b| b)
}

fn udp_frags_with(
    src: &str,
    dst: &str,
    id: u16,
    len: usize,
    dir: Dir,
    edit: impl FnOnce(PacketBuilder) -> PacketBuilder,
) -> Vec<Vec<u8>> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + usize::from(id)) as u8).collect();
    let (from, to) = match dir {
        Dir::In => (CLIENT_MAC, NODE_MAC),
        Dir::Out => (NODE_MAC, CLIENT_MAC),
    };
    let b = PacketBuilder::udp(sa(src), sa(dst))
        .macs(from, to)
        .ip_id(id)
        .payload(&payload);
    let frags = fragment(&edit(b).build(), MTU).expect("fragmenting the datagram");
    assert!(
        frags.len() >= 3,
        "{len} bytes make {} fragments",
        frags.len()
    );
    frags
}

/// The name of fragment `i` of a datagram case (the harness prints it).
fn name(what: &str, i: usize) -> &'static str {
    Box::leak(format!("{what}: fragment {i}").into_boxed_str())
}

/// Runs `input`'s fragments through `prog` in order, each expected to come out as the
/// same fragment of `expected`, with `first` counted for the first and `rest` for the
/// others; then checks the outputs reassemble into `expected`'s datagram, whose checksums
/// are valid.
fn datagram(
    h: &mut Harness,
    what: &str,
    prog: Prog,
    input: &[Vec<u8>],
    expected: &[Vec<u8>],
    first: Verdict,
    rest: Verdict,
) {
    let ret = match prog {
        Prog::Tc => TC_ACT_OK,
        Prog::Xdp => XDP_PASS,
    };
    let outs: Vec<Vec<u8>> = input
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (frag, out))| {
            let verdict = if i == 0 { first } else { rest };
            h.check(&case(
                name(what, i),
                prog,
                frag.clone(),
                ret,
                Output::Exact(out.clone()),
                verdict,
            ))
        })
        .collect();
    let whole = reassemble(&outs).unwrap_or_else(|e| panic!("{what}: reassembling: {e}"));
    verify_checksums(&whole).unwrap_or_else(|e| panic!("{what}: the reassembled datagram: {e}"));
    assert_eq!(whole, reassemble(expected).unwrap(), "{what}: reassembled");
}

/// Runs every fragment expecting it back unchanged with `verdict` (the first may differ).
fn unchanged(h: &mut Harness, what: &str, prog: Prog, input: &[Vec<u8>], first: Verdict) {
    for (i, frag) in input.iter().enumerate() {
        let verdict = if i == 0 { first } else { Verdict::PassFragment };
        let ret = match prog {
            Prog::Tc => TC_ACT_OK,
            Prog::Xdp => XDP_PASS,
        };
        h.check(&case(
            name(what, i),
            prog,
            frag.clone(),
            ret,
            Output::Unchanged,
            verdict,
        ));
    }
}

const CLIENT: &str = "10.244.1.20:40100";
const VIP: &str = "10.96.0.10:80";

#[test]
fn udp_to_a_clusterip_and_the_larger_reply_in_tc() {
    let mut h = services::single_node("frag-tc");
    let be = services::LOCAL_BE;
    datagram(
        &mut h,
        "tc: 4,000 bytes to 10.96.0.10:80 -> 10.244.1.11:8080",
        Prog::Tc,
        &udp_frags(CLIENT, VIP, 0x1001, 4000, Dir::In),
        &udp_frags(CLIENT, be, 0x1001, 4000, Dir::In),
        Verdict::DnatNew,
        Verdict::DnatFragment,
    );
    // DNS-like: the answer is larger than the question.
    datagram(
        &mut h,
        "tc: 6,000-byte reply from 10.244.1.11:8080 -> from 10.96.0.10:80",
        Prog::Tc,
        &udp_frags(be, CLIENT, 0x0777, 6000, Dir::Out),
        &udp_frags(VIP, CLIENT, 0x0777, 6000, Dir::Out),
        Verdict::RevNat,
        Verdict::RevNatFragment,
    );
    // The next datagram of the same flow, with checksum 0 ("none"): stays 0.
    let zero = |b: PacketBuilder| b.udp_checksum_zero();
    let input = udp_frags_with(CLIENT, VIP, 0x1002, 3000, Dir::In, zero);
    assert_eq!(&input[0][40..42], &[0, 0]);
    datagram(
        &mut h,
        "tc: 3,000 bytes with UDP checksum 0, same flow",
        Prog::Tc,
        &input,
        &udp_frags_with(CLIENT, be, 0x1002, 3000, Dir::In, zero),
        Verdict::DnatEstablished,
        Verdict::DnatFragment,
    );
}

#[test]
fn a_tcp_segment_in_fragments() {
    let mut h = services::single_node("frag-tcp");
    let seg = |dst: &str| {
        let b = tcp("10.244.1.20:40200", dst)
            .dont_fragment(false)
            .ip_id(0x3003)
            .flags(svc_agent::packet::ACK)
            .seq(1)
            .ack(1)
            .payload(&[0x5a; 3200]);
        fragment(&b.build(), MTU).unwrap()
    };
    datagram(
        &mut h,
        "tc: a 3,200-byte TCP segment to 10.96.0.10:80",
        Prog::Tc,
        &seg(VIP),
        &seg(services::LOCAL_BE),
        Verdict::DnatNew,
        Verdict::DnatFragment,
    );
}

#[test]
fn out_of_order_reused_ids_and_old_entries_in_tc() {
    let mut h = services::single_node("frag-order");
    let be = services::LOCAL_BE;

    // The last fragment before the first: nothing known yet, passed untouched (the
    // datagram is lost: its receiver never gets that fragment translated). The first and
    // the middle one are then translated.
    let input = udp_frags(CLIENT, VIP, 0x2001, 4000, Dir::In);
    let out = udp_frags(CLIENT, be, 0x2001, 4000, Dir::In);
    h.check(&case(
        "tc: last fragment before the first: passed",
        Prog::Tc,
        input[2].clone(),
        TC_ACT_OK,
        Output::Unchanged,
        Verdict::PassFragment,
    ));
    h.check(&case(
        "tc: then the first: DNAT",
        Prog::Tc,
        input[0].clone(),
        TC_ACT_OK,
        Output::Exact(out[0].clone()),
        Verdict::DnatNew,
    ));
    h.check(&case(
        "tc: then the middle one: the first one's addresses",
        Prog::Tc,
        input[1].clone(),
        TC_ACT_OK,
        Output::Exact(out[1].clone()),
        Verdict::DnatFragment,
    ));
    // The same fragments again (a retransmission by the sender's application reuses no
    // id, but a duplicate on the wire does): translated the same.
    h.check(&case(
        "tc: the last one again: now translated",
        Prog::Tc,
        input[2].clone(),
        TC_ACT_OK,
        Output::Exact(out[2].clone()),
        Verdict::DnatFragment,
    ));

    // A datagram to no Service: first and later fragments pass untouched.
    unchanged(
        &mut h,
        "tc: 4,000 bytes to a pod, no Service",
        Prog::Tc,
        &udp_frags(CLIENT, "10.244.1.13:9999", 0x2002, 4000, Dir::In),
        Verdict::PassNotService,
    );

    // The IPv4 id of the translated datagram above, reused with the same addresses by a
    // datagram to a port no Service has: its first fragment is not translated, so the
    // entry left by the earlier datagram must not translate its later fragments.
    unchanged(
        &mut h,
        "tc: id 0x2001 reused to 10.96.0.10:81 (no Service)",
        Prog::Tc,
        &udp_frags(CLIENT, "10.96.0.10:81", 0x2001, 4000, Dir::In),
        Verdict::PassNotService,
    );

    // An entry older than ipfrag_time (30 s) belongs to an earlier datagram: passed. The
    // entry of a translated first fragment is aged by hand (created at boot).
    let input = udp_frags(CLIENT, VIP, 0x2003, 4000, Dir::In);
    h.check(&case(
        "tc: first fragment of 0x2003: DNAT",
        Prog::Tc,
        input[0].clone(),
        TC_ACT_OK,
        Output::Exact(udp_frags(CLIENT, be, 0x2003, 4000, Dir::In)[0].clone()),
        Verdict::DnatEstablished,
    ));
    let key = Frag4Key {
        saddr_be: u32::from(ip("10.244.1.20")).to_be(),
        daddr_be: u32::from(ip("10.96.0.10")).to_be(),
        id_be: 0x2003u16.to_be(),
        proto: svc_agent::packet::PROTO_UDP,
        _pad: 0,
    };
    let entry: Frag4Value = h
        .maps
        .frags
        .get(&key, 0)
        .expect("the first fragment left an entry in SVC4_FRAG");
    assert_eq!(entry.kind, FRAG_KIND_DNAT);
    assert_eq!(entry.daddr_be, u32::from(ip("10.244.1.11")).to_be());
    assert_eq!(entry.saddr_be, key.saddr_be, "no SNAT for a pod");
    let aged = Frag4Value {
        created_ns: 1,
        ..entry
    };
    h.maps.frags.insert(key, aged, 0).expect("ageing the entry");
    h.check(&case(
        "tc: middle fragment of 0x2003 after 30 s: passed",
        Prog::Tc,
        input[1].clone(),
        TC_ACT_OK,
        Output::Unchanged,
        Verdict::PassFragment,
    ));

    // A datagram to no Service leaves no entry behind.
    let key = Frag4Key {
        daddr_be: u32::from(ip("10.244.1.13")).to_be(),
        id_be: 0x2002u16.to_be(),
        ..key
    };
    assert!(matches!(
        h.maps.frags.get(&key, 0),
        Err(MapError::KeyNotFound)
    ));
}

#[test]
fn rejected_datagrams_lose_every_fragment() {
    let mut h = services::single_node("frag-reject");
    let input = udp_frags(CLIENT, "10.96.0.11:80", 0x4004, 4000, Dir::In);
    h.check(&case(
        "tc: first fragment to 10.96.0.11:80 (no endpoints): ICMP port unreachable",
        Prog::Tc,
        input[0].clone(),
        TC_ACT_REDIRECT,
        Output::Exact(expected_port_unreachable(
            ip("10.96.0.11"),
            ip("10.244.1.20"),
            &input[0],
        )),
        Verdict::RejectIcmp,
    ));
    for (i, frag) in input.iter().enumerate().skip(1) {
        h.check(&case(
            name("tc: the rest of the rejected datagram: dropped", i),
            Prog::Tc,
            frag.clone(),
            TC_ACT_SHOT,
            Output::Unchanged,
            Verdict::DropFragment,
        ));
    }
    // XDP leaves rejects to TC, and drops the rest of the datagram as TC would.
    let input = udp_frags("192.0.2.100:50300", "10.96.0.11:80", 0x4005, 4000, Dir::In);
    h.check(&case(
        "xdp: first fragment to 10.96.0.11:80 (no endpoints): to TC",
        Prog::Xdp,
        input[0].clone(),
        XDP_PASS,
        Output::Unchanged,
        Verdict::XdpPassToTc,
    ));
    h.check(&case(
        "xdp: the rest of the rejected datagram: dropped",
        Prog::Xdp,
        input[1].clone(),
        XDP_DROP,
        Output::Unchanged,
        Verdict::DropFragment,
    ));
}

#[test]
fn udp_from_outside_through_xdp_then_tc() {
    let mut h = services::single_node("frag-xdp");
    let be = services::LOCAL_BE;
    let client = "192.0.2.100:50100";
    let input = udp_frags(client, VIP, 0x5005, 4000, Dir::In);
    let out = udp_frags(client, be, 0x5005, 4000, Dir::In);
    datagram(
        &mut h,
        "xdp: 4,000 bytes from outside to 10.96.0.10:80",
        Prog::Xdp,
        &input,
        &out,
        Verdict::DnatNew,
        Verdict::DnatFragment,
    );
    // On the external interface TC runs after XDP: the translated fragments are no
    // Service's, and TC leaves them alone.
    unchanged(
        &mut h,
        "tc after xdp: the translated fragments",
        Prog::Tc,
        &out,
        Verdict::PassNotService,
    );
    // Replies of remote backends come in through XDP too.
    datagram(
        &mut h,
        "xdp: 6,000-byte reply -> from 10.96.0.10:80",
        Prog::Xdp,
        &udp_frags(be, client, 0x0888, 6000, Dir::Out),
        &udp_frags(VIP, client, 0x0888, 6000, Dir::Out),
        Verdict::RevNat,
        Verdict::RevNatFragment,
    );
}

#[test]
fn masqueraded_from_outside_both_ways() {
    // Node 1: a ClusterIP from outside the pod CIDR is masqueraded to 192.0.2.1 (the
    // fixture config keeps the client's port).
    let mut h = services::node1("frag-masq");
    let be = services::LOCAL_BE;
    for (prog, client, id) in [
        (Prog::Tc, "192.0.2.100:50400", 0x6006),
        (Prog::Xdp, "192.0.2.100:50401", 0x6007),
    ] {
        let port = sa(client).port();
        let nat = node(port);
        let what = format!("{prog:?}: 4,000 bytes from {client}: DNAT + SNAT to {nat}");
        datagram(
            &mut h,
            &what,
            prog,
            &udp_frags(client, VIP, id, 4000, Dir::In),
            &udp_frags(&nat, be, id, 4000, Dir::In),
            Verdict::DnatNew,
            Verdict::DnatFragment,
        );
        let what = format!("{prog:?}: 5,000-byte reply to {nat} -> 10.96.0.10:80 > {client}");
        datagram(
            &mut h,
            &what,
            prog,
            &udp_frags(be, &nat, id + 0x100, 5000, Dir::Out),
            &udp_frags(VIP, client, id + 0x100, 5000, Dir::Out),
            Verdict::RevNat,
            Verdict::RevNatFragment,
        );
    }
}
