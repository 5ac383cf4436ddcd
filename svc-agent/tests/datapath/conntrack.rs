//! Conntrack: the checks of what a table left in SVC4_CT (run after the clusterip,
//! malformed, xdp, reject and masquerade tables), a half-open handshake's short lifetime,
//! a flow living while either of its entries does,
//! a closing flow's client port reused by a new SYN, and stickiness (every flow keeps the
//! backend its SYN got).
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use svc_agent::packet::{ACK, FIN, PROTO_TCP, PROTO_UDP, PacketBuilder, SYN};
use svc_common::{
    CT_F_HALF_OPEN, CT_F_REPLIED, CT_F_SNAT, CT_KIND_REPLY, CT_KIND_SERVICE, CT_TCP_SYN_TIMEOUT_NS,
    CT_TCP_TIMEOUT_NS, Ct4Key, Ct4Value, Verdict, ct_timeout_ns,
};

use crate::services;
use crate::support::*;

fn be32(s: &SocketAddrV4) -> u32 {
    u32::from(*s.ip()).to_be()
}

/// The key of the entry of `src` -> `dst` of this kind.
pub fn key(src: &str, dst: &str, proto: u8, kind: u8) -> Ct4Key {
    let (src, dst) = (sa(src), sa(dst));
    Ct4Key {
        saddr_be: be32(&src),
        daddr_be: be32(&dst),
        sport_be: src.port().to_be(),
        dport_be: dst.port().to_be(),
        proto,
        kind,
        _pad: [0; 2],
    }
}

/// The entry of `src` -> `dst` of this kind, or a panic that shows the whole table.
pub fn entry(h: &Harness, src: &str, dst: &str, proto: u8, kind: u8) -> Ct4Value {
    let ct = h.maps.read_conntrack().expect("reading SVC4_CT");
    let what = if kind == CT_KIND_SERVICE {
        "CT_KIND_SERVICE"
    } else {
        "CT_KIND_REPLY"
    };
    let key = key(src, dst, proto, kind);
    ct.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {what} entry for {src} -> {dst} in {ct:#?}"))
}

/// The two entries of a TCP flow `client` -> `service` translated to `backend` (not
/// masqueraded) whose SYN-ACK went through: the service entry holds the backend, whose id
/// is in SVC4_BACKENDS; the reply entry, keyed by the backend's reply, holds the original
/// client and the same backend and rev-NAT ids; both are marked replied.
pub fn assert_replied_flow(h: &Harness, client: &str, service: &str, backend: &str) {
    let (c, b) = (sa(client), sa(backend));
    let fwd = entry(h, client, service, PROTO_TCP, CT_KIND_SERVICE);
    assert_eq!(
        (fwd.addr_be, fwd.port_be),
        (be32(&b), b.port().to_be()),
        "service entry's backend: {fwd:?}"
    );
    let stored = h
        .maps
        .backends
        .get(&fwd.backend_id, 0)
        .expect("the service entry's backend id is in SVC4_BACKENDS");
    assert_eq!(
        (stored.addr_be, stored.port_be, stored.proto),
        (be32(&b), b.port().to_be(), PROTO_TCP)
    );
    assert!(
        fwd.flags & CT_F_REPLIED != 0,
        "the SYN-ACK marks the forward entry replied: {fwd:?}"
    );
    let rev = entry(h, backend, client, PROTO_TCP, CT_KIND_REPLY);
    assert_eq!(rev.rev_nat_id, fwd.rev_nat_id, "reply entry: {rev:?}");
    assert_eq!(rev.backend_id, fwd.backend_id, "reply entry: {rev:?}");
    assert_eq!(
        (rev.addr_be, rev.port_be),
        (be32(&c), c.port().to_be()),
        "reply entry holds the original client (the reply's destination to restore): {rev:?}"
    );
    assert!(rev.flags & CT_F_REPLIED != 0, "reply entry: {rev:?}");
}

/// The service entries are exactly those of these flows (client address:port, protocol),
/// with one reply entry each: every translated flow of the table has both entries, and
/// none of its passed, dropped or rejected packets left one.
pub fn assert_translated_flows(h: &Harness, flows: &[(&str, u8)]) {
    let ct = h.maps.read_conntrack().expect("reading SVC4_CT");
    // As "address:port/protocol", so a failure reads.
    let services: BTreeSet<String> = ct
        .iter()
        .filter(|(k, _)| k.kind == CT_KIND_SERVICE)
        .map(|(k, _)| {
            let addr = Ipv4Addr::from(u32::from_be(k.saddr_be));
            format!("{addr}:{}/{}", u16::from_be(k.sport_be), k.proto)
        })
        .collect();
    let expected: BTreeSet<String> = flows
        .iter()
        .map(|(client, proto)| format!("{}/{proto}", sa(client)))
        .collect();
    assert_eq!(services, expected, "CT_KIND_SERVICE entries");
    let replies = ct.iter().filter(|(k, _)| k.kind == CT_KIND_REPLY).count();
    assert_eq!(
        replies,
        expected.len(),
        "one CT_KIND_REPLY entry per translated flow"
    );
    println!(
        "ok   conntrack: forward and reply entries for {} flows",
        expected.len()
    );
}

/// A masqueraded TCP flow and a plain one: the service entry of `client` -> `service` is
/// marked CT_F_SNAT with `nat` as its source; the reply entry, keyed by the backend's reply
/// to `nat`, restores the client; the service entry of `plain` -> `service` has no SNAT.
pub fn assert_masqueraded_and_plain(
    h: &Harness,
    client: &str,
    service: &str,
    backend: &str,
    nat: &str,
    plain: &str,
) {
    let (c, n) = (sa(client), sa(nat));
    let fwd = entry(h, client, service, PROTO_TCP, CT_KIND_SERVICE);
    assert!(fwd.flags & CT_F_SNAT != 0, "CT_F_SNAT on {fwd:?}");
    assert_eq!(
        (fwd.nat_addr_be, fwd.nat_port_be),
        (be32(&n), n.port().to_be()),
        "{fwd:?}"
    );
    let rev = entry(h, backend, nat, PROTO_TCP, CT_KIND_REPLY);
    assert_eq!(
        (rev.addr_be, rev.port_be),
        (be32(&c), c.port().to_be()),
        "the reply entry restores the client: {rev:?}"
    );
    // The pod flow is not masqueraded.
    let pod = entry(h, plain, service, PROTO_TCP, CT_KIND_SERVICE);
    assert_eq!(pod.flags & CT_F_SNAT, 0, "{pod:?}");
    assert_eq!((pod.nat_addr_be, pod.nat_port_be), (0, 0), "{pod:?}");
    println!("ok   conntrack: masqueraded and plain flows recorded as such");
}

/// The client's SYN to `vip` (translated to `be`, a new flow) and the backend's SYN-ACK
/// (reverse-translated), through TC.
fn syn_and_syn_ack(h: &mut Harness, client: &str, vip: &str, be: &str) {
    h.expect(
        "SYN",
        Prog::Tc,
        &segment(client, vip, SYN, 1),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    h.expect(
        "SYN-ACK",
        Prog::Tc,
        &synack(be, client, 7, 2),
        TC_ACT_OK,
        Verdict::RevNat,
    );
}

/// A handshake the client never completes keeps the short SYN lifetime: the SYN-ACK marks
/// both entries replied and half-open (CT_F_HALF_OPEN, 60 s as netfilter's SYN_RECV), and
/// only the client's next packet clears it (the 6 h established lifetime). Before, a
/// SYN-ACK alone gave a scanned or spoofed flow 6 h, and with it its masquerade port.
#[test]
fn half_open_until_the_client_answers() {
    let mut h = services::single_node("half-open");
    let (client, vip, be) = ("10.244.1.20:40050", "10.96.0.10:80", services::LOCAL_BE);
    syn_and_syn_ack(&mut h, client, vip, be);
    let timeouts = |h: &Harness| {
        [
            entry(h, client, vip, PROTO_TCP, CT_KIND_SERVICE),
            entry(h, be, client, PROTO_TCP, CT_KIND_REPLY),
        ]
        .map(|v| {
            (
                v.flags & (CT_F_REPLIED | CT_F_HALF_OPEN),
                ct_timeout_ns(PROTO_TCP, v.flags),
            )
        })
    };
    let half_open = (CT_F_REPLIED | CT_F_HALF_OPEN, CT_TCP_SYN_TIMEOUT_NS);
    assert_eq!(
        timeouts(&h),
        [half_open; 2],
        "after the SYN-ACK (service, reply entry)"
    );
    // A retransmitted SYN is no answer to the SYN-ACK.
    h.expect(
        "SYN again",
        Prog::Tc,
        &segment(client, vip, SYN, 1),
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    assert_eq!(timeouts(&h), [half_open; 2], "after a retransmitted SYN");
    h.expect(
        "ACK",
        Prog::Tc,
        &segment(client, vip, ACK, 2),
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    let established = (CT_F_REPLIED, CT_TCP_TIMEOUT_NS);
    assert_eq!(timeouts(&h), [established; 2], "after the client's ACK");
    println!("ok   half-open: 60 s until the client's ACK, then 6 h, on both entries");
}

/// A flow lives while either of its entries does: each is refreshed only by its own
/// direction, so a flow whose traffic goes one way for a while (a UDP stream) must keep
/// being translated both ways, and keep its backend. Entries are aged by hand (last seen
/// at boot).
#[test]
fn a_flow_lives_while_either_entry_does() {
    use Output::Exact;
    use Prog::Tc;
    let mut h = services::single_node("either-entry");
    let (client, vip, be) = ("10.244.1.20:40060", "10.96.0.10:80", services::LOCAL_BE);
    let age = |h: &mut Harness, src: &str, dst: &str, kind: u8| {
        let k = key(src, dst, PROTO_UDP, kind);
        let mut v = h.maps.ct.get(&k, 0).expect("the entry to age");
        v.last_seen_ns = 0;
        h.maps.ct.insert(k, v, 0).expect("ageing the entry");
    };
    h.check(&case(
        "UDP out",
        Tc,
        datagram(client, vip, b"1", false),
        TC_ACT_OK,
        Exact(datagram(client, be, b"1", false)),
        Verdict::DnatNew,
    ));
    h.check(&case(
        "UDP back",
        Tc,
        datagram(be, client, b"2", false),
        TC_ACT_OK,
        Exact(datagram(vip, client, b"2", false)),
        Verdict::RevNat,
    ));
    age(&mut h, be, client, CT_KIND_REPLY);
    h.check(&case(
        "reply entry expired, service entry alive: the reply is still translated",
        Tc,
        datagram(be, client, b"3", false),
        TC_ACT_OK,
        Exact(datagram(vip, client, b"3", false)),
        Verdict::RevNat,
    ));
    age(&mut h, client, vip, CT_KIND_SERVICE);
    h.check(&case(
        "service entry expired, reply entry alive: still the same flow",
        Tc,
        datagram(client, vip, b"4", false),
        TC_ACT_OK,
        Exact(datagram(client, be, b"4", false)),
        Verdict::DnatEstablished,
    ));
    age(&mut h, be, client, CT_KIND_REPLY);
    age(&mut h, client, vip, CT_KIND_SERVICE);
    h.check(&case(
        "both expired: a new flow",
        Tc,
        datagram(client, vip, b"5", false),
        TC_ACT_OK,
        Exact(datagram(client, be, b"5", false)),
        Verdict::DnatNew,
    ));
}

/// Client port reuse: a bare SYN on a flow whose conntrack entry is closing is a new flow.
#[test]
fn port_reuse() {
    use Output::Exact;
    use Prog::Tc;
    let mut h = services::single_node("port-reuse");
    let reuse = |flags: u8, seq: u32, dst: &str| {
        tcp("10.244.1.20:40040", dst).flags(flags).seq(seq).build()
    };
    let be = services::LOCAL_BE;
    h.run_table(&[
        case(
            "tc: port reuse: SYN",
            Tc,
            reuse(SYN, 1, "10.96.0.10:80"),
            TC_ACT_OK,
            Exact(reuse(SYN, 1, be)),
            Verdict::DnatNew,
        ),
        case(
            "tc: port reuse: FIN|ACK closes the flow",
            Tc,
            reuse(FIN | ACK, 2, "10.96.0.10:80"),
            TC_ACT_OK,
            Exact(reuse(FIN | ACK, 2, be)),
            Verdict::DnatEstablished,
        ),
        case(
            "tc: port reuse: ACK on the closing flow",
            Tc,
            reuse(ACK, 3, "10.96.0.10:80"),
            TC_ACT_OK,
            Exact(reuse(ACK, 3, be)),
            Verdict::DnatEstablished,
        ),
        case(
            "tc: port reuse: backend's FIN|ACK",
            Tc,
            tcp_reply(be, "10.244.1.20:40040")
                .flags(FIN | ACK)
                .seq(9)
                .build(),
            TC_ACT_OK,
            Exact(
                tcp_reply("10.96.0.10:80", "10.244.1.20:40040")
                    .flags(FIN | ACK)
                    .seq(9)
                    .build(),
            ),
            Verdict::RevNat,
        ),
        case(
            "tc: port reuse: new SYN from the same port is a new flow",
            Tc,
            reuse(SYN, 1000, "10.96.0.10:80"),
            TC_ACT_OK,
            Exact(reuse(SYN, 1000, be)),
            Verdict::DnatNew,
        ),
        // The new flow's SYN-ACK is its own: reverse-translated.
        case(
            "tc: port reuse: the new flow's SYN-ACK",
            Tc,
            synack(be, "10.244.1.20:40040", 50, 1001),
            TC_ACT_OK,
            Exact(synack("10.96.0.10:80", "10.244.1.20:40040", 50, 1001)),
            Verdict::RevNat,
        ),
    ]);
    assert_translated_flows(&h, &[("10.244.1.20:40040", PROTO_TCP)]);
}

/// A closed flow's tuple reused by a direct connection (not through the Service, e.g.
/// translated at the socket: `--socket-lb all`): the backend's SYN-ACK answers a SYN the
/// Service never saw. It and what follows reach the client as they are, from the backend,
/// not turned into the Service's replies by the closed flow's entries, which go (both: the
/// backend holds one connection per tuple). Before, the SYN-ACK came back from the
/// Service address and the connection timed out (the bench's socket-LB section: 4 of 500
/// connections right after TC-translated ones).
#[test]
fn a_syn_ack_on_a_closed_flow_answers_a_direct_connection() {
    let mut h = services::single_node("direct-reuse");
    let (client, vip, be) = ("10.244.1.20:40060", "10.96.0.10:80", services::LOCAL_BE);
    syn_and_syn_ack(&mut h, client, vip, be);
    h.expect(
        "FIN",
        Prog::Tc,
        &segment(client, vip, FIN | ACK, 2),
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    // The same client port, now straight to the backend.
    let direct_synack = synack(be, client, 500, 1001);
    let out = h.expect(
        "SYN-ACK of the direct connection",
        Prog::Tc,
        &direct_synack,
        TC_ACT_OK,
        Verdict::PassNotService,
    );
    bytes_eq("the direct SYN-ACK, untouched", &direct_synack, &out);
    let data = tcp_data(be, client, 501, 1001);
    let out = h.expect(
        "data of the direct connection",
        Prog::Tc,
        &data,
        TC_ACT_OK,
        Verdict::PassNotService,
    );
    bytes_eq("the direct connection's data, untouched", &data, &out);
    assert_translated_flows(&h, &[]);
    println!("ok   a closed flow's tuple reused directly: its replies stay the backend's");
}

/// 20 flows to 10.96.0.20 (three backends): each keeps the backend its SYN got, and they
/// do not all get the same one.
#[test]
fn stickiness() {
    let mut h = services::single_node("stickiness");
    let backends = ["10.244.1.11", "10.244.1.12", "10.244.1.13"];
    let mut chosen = Vec::new();
    for i in 0..20u16 {
        let client = format!("10.244.1.30:{}", 41000 + i);
        let syn = PacketBuilder::tcp(sa(&client), sa("10.96.0.20:80"))
            .flags(SYN)
            .seq(u32::from(i))
            .build();
        let name = format!("sticky flow {client}: SYN");
        let out = h.expect(&name, Prog::Tc, &syn, TC_ACT_OK, Verdict::DnatNew);
        let dst = dst_of(&out);
        assert!(
            backends.contains(&dst.ip().to_string().as_str()) && dst.port() == 8080,
            "{name} went to {dst}"
        );
        let expected = PacketBuilder::tcp(sa(&client), dst)
            .flags(SYN)
            .seq(u32::from(i))
            .build();
        bytes_eq("sticky SYN", &expected, &out);
        chosen.push((client, dst));
    }
    for (i, (client, dst)) in chosen.iter().enumerate() {
        let ack = |to: SocketAddrV4| {
            PacketBuilder::tcp(sa(client), to)
                .flags(ACK)
                .seq(i as u32 + 1)
                .ack(1)
                .payload(b"data")
                .build()
        };
        let name = format!("sticky flow {client}: ACK");
        let out = h.expect(
            &name,
            Prog::Tc,
            &ack(sa("10.96.0.20:80")),
            TC_ACT_OK,
            Verdict::DnatEstablished,
        );
        bytes_eq("sticky ACK (same backend as the SYN)", &ack(*dst), &out);
    }
    let distinct: BTreeSet<_> = chosen.iter().map(|(_, d)| *d).collect();
    // 20 random picks out of 3 all landing on one backend: probability 3^-19.
    assert!(
        distinct.len() > 1,
        "20 flows all went to {distinct:?}: backend choice is not spread"
    );
    println!(
        "ok   stickiness: 20 flows over {} backends, each kept its backend",
        distinct.len()
    );
}
