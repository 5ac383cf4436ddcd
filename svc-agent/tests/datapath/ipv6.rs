//! IPv6 through TC and XDP (svc-ebpf/src/parse6.rs, the IPv6 half of lb.rs, tc.rs, xdp.rs,
//! reject6.rs), on IPv6 Services written straight into the SVC6_* maps:
//! - ClusterIP DNAT of TCP and UDP with exact output bytes (pseudo-header checksums
//!   verified), the established flow, the reply translated back, the conntrack entries;
//! - extension headers walked (hop-by-hop, routing, destination options, an atomic
//!   fragment header) and kept in the output; 8 of them translated, a 9th and AH passed
//!   (`pass_ipv6_unparsed`); a datagram in fragments (the first translated as a packet, a
//!   later one given the first one's addresses: `dnat_fragment`), a later fragment whose
//!   first never came passed (`pass_fragment`);
//! - a Service without endpoints: TCP RST and ICMPv6 port unreachable from TC (exact
//!   ICMPv6 bytes), handed to TC by XDP;
//! - what is never touched: neighbour discovery and echo (`pass_other_proto`), an address
//!   that is no Service's (`pass_not_service`), frames cut short or with a payload length
//!   beyond the frame (`drop_malformed`);
//! - the IPv4 Service beside them still translated;
//! - ICMPv6 errors about a translated flow (packet too big, with the whole TCP header
//!   quoted and with 8 bytes of it; unreachable about a reply) translated back with exact
//!   bytes, passed to TC by XDP; one about an untranslated flow untouched.
use std::net::{Ipv6Addr, SocketAddrV6};

use aya::maps::{HashMap, Map, MapData};
use svc_agent::packet::{
    ACK, ICMPV6_ECHO_REQUEST, Ipv6Builder, Ipv6Ext, PROTO_ICMPV6, SYN, checksum6,
};
use svc_common::{
    BACKEND_STATE_ACTIVE, Backend6, CT_KIND_REPLY, CT_KIND_SERVICE, Ct6Key, Ct6Value, Ip6,
    PROTO_TCP, PROTO_UDP, RevNat6, SCOPE_ALL, Svc4Value, Svc6Key, Verdict, ip6_from_octets,
    map_names,
};

use crate::services;
use crate::support::*;

const VIP: &str = "[fd00:10:96::10]";
const EMPTY: &str = "[fd00:10:96::20]";
const BACKEND: &str = "[fd00:10:244:1::11]";
const CLIENT: &str = "fd00:10:244:1::20";
/// Ids above any the reconciler gives the IPv4 Services of `services::single_node`.
const FIRST_ID: u32 = 9000;

fn sa6(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn words(a: &Ipv6Addr) -> Ip6 {
    ip6_from_octets(a.octets())
}

fn client(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip6(CLIENT), port, 0, 0)
}

fn open<K: aya::Pod, V: aya::Pod>(h: &Harness, name: &str) -> HashMap<MapData, K, V> {
    let data = MapData::from_pin(h.pin_dir().join(name)).expect(name);
    HashMap::try_from(Map::from_map_data(data).expect(name)).expect(name)
}

/// Writes one IPv6 frontend with its backends, as the agent lays them out (slot 0 counts
/// the slots, slots 1..=n name backend ids, rev-NAT by the frontend's id).
fn write_frontend(h: &Harness, vip: &str, port: u16, proto: u8, backends: &[(&str, u16)], id: u32) {
    let mut services: HashMap<_, Svc6Key, Svc4Value> = open(h, map_names::SVC6_SERVICES);
    let mut backend_map: HashMap<_, u32, Backend6> = open(h, map_names::SVC6_BACKENDS);
    let mut revnat: HashMap<_, u32, RevNat6> = open(h, map_names::SVC6_REVNAT);
    let vip = words(&ip6(vip.trim_matches(['[', ']'])));
    let key = |slot: u16| Svc6Key {
        vip_be: vip,
        port_be: port.to_be(),
        slot,
        proto,
        scope: SCOPE_ALL,
        _pad: [0; 2],
    };
    for (i, (addr, bport)) in backends.iter().enumerate() {
        let bid = id * 10 + i as u32 + 1;
        let b = Backend6 {
            addr_be: words(&ip6(addr.trim_matches(['[', ']']))),
            port_be: bport.to_be(),
            proto,
            state: BACKEND_STATE_ACTIVE,
        };
        backend_map.insert(bid, b, 0).unwrap();
        let slot = Svc4Value {
            backend_id: bid,
            rev_nat_id: id,
            count: 0,
            flags: 0,
        };
        services.insert(key(i as u16 + 1), slot, 0).unwrap();
    }
    revnat
        .insert(
            id,
            RevNat6 {
                vip_be: vip,
                port_be: port.to_be(),
                _pad: [0; 2],
            },
            0,
        )
        .unwrap();
    let frontend = Svc4Value {
        backend_id: 0,
        rev_nat_id: id,
        count: backends.len() as u16,
        flags: 0,
    };
    services.insert(key(0), frontend, 0).unwrap();
}

/// The IPv6 Services of the table: [fd00:10:96::10]:80/TCP and :53/UDP with one backend
/// (exact output bytes), [fd00:10:96::20]:80 TCP and UDP without endpoints.
fn ipv6_datapath() -> Harness {
    let h = services::single_node("ipv6");
    write_frontend(&h, VIP, 80, PROTO_TCP, &[(BACKEND, 8080)], FIRST_ID);
    write_frontend(&h, VIP, 53, PROTO_UDP, &[(BACKEND, 5353)], FIRST_ID + 1);
    write_frontend(&h, EMPTY, 80, PROTO_TCP, &[], FIRST_ID + 2);
    write_frontend(&h, EMPTY, 80, PROTO_UDP, &[], FIRST_ID + 3);
    h
}

fn syn(from: SocketAddrV6, to: &str) -> Ipv6Builder {
    Ipv6Builder::tcp(from, sa6(to)).flags(SYN)
}

/// A fragment of a UDP datagram from `from` to `to` (offset in 8-byte units, more
/// fragments or not): a first fragment carries the UDP header, a later one the builder's
/// bytes, which the programs never read.
fn fragment(from: SocketAddrV6, to: &str, id: u32, offset_units: u16, more: bool) -> Vec<u8> {
    Ipv6Builder::udp(from, sa6(to))
        .ext(Ipv6Ext::Fragment {
            offset_units,
            more,
            id,
        })
        .payload(&[0xab; 24])
        .build()
}

/// `n` destination options headers (8 bytes each) before the L4 header.
fn with_dest_opts(mut b: Ipv6Builder, n: usize) -> Ipv6Builder {
    for _ in 0..n {
        b = b.ext(Ipv6Ext::DestOpts(4));
    }
    b
}

fn cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let vip = format!("{VIP}:80");
    let be = format!("{BACKEND}:8080");
    let mut out = Vec::new();
    let mut push = |name, prog, input: Vec<u8>, ret, output, verdict| {
        out.push(case(name, prog, input, ret, output, verdict));
    };

    // DNAT of a new flow, TC then XDP (each its own client port), exact bytes.
    for (prog, port, ret, name) in [
        (
            Tc,
            41000,
            TC_ACT_OK,
            "TC: TCP SYN to the IPv6 ClusterIP, DNAT",
        ),
        (
            Xdp,
            41001,
            XDP_PASS,
            "XDP: TCP SYN to the IPv6 ClusterIP, DNAT",
        ),
    ] {
        let input = syn(client(port), &vip).build();
        let expected = syn(client(port), &be).build();
        push(name, prog, input, ret, Exact(expected), Verdict::DnatNew);
    }
    push(
        "TC: the flow's next segment goes to the same backend",
        Tc,
        Ipv6Builder::tcp(client(41000), sa6(&vip))
            .flags(ACK)
            .build(),
        TC_ACT_OK,
        Exact(Ipv6Builder::tcp(client(41000), sa6(&be)).flags(ACK).build()),
        Verdict::DnatEstablished,
    );
    push(
        "TC: the backend's SYN-ACK leaves from the Service address",
        Tc,
        Ipv6Builder::tcp(sa6(&be), client(41000))
            .flags(SYN | ACK)
            .build(),
        TC_ACT_OK,
        Exact(
            Ipv6Builder::tcp(sa6(&vip), client(41000))
                .flags(SYN | ACK)
                .build(),
        ),
        Verdict::RevNat,
    );
    for (prog, port, ret, name) in [
        (Tc, 41010, TC_ACT_OK, "TC: UDP to the IPv6 ClusterIP, DNAT"),
        (Xdp, 41011, XDP_PASS, "XDP: UDP to the IPv6 ClusterIP, DNAT"),
    ] {
        let input = Ipv6Builder::udp(client(port), sa6(&format!("{VIP}:53")))
            .payload(b"dns?")
            .build();
        let expected = Ipv6Builder::udp(client(port), sa6(&format!("{BACKEND}:5353")))
            .payload(b"dns?")
            .build();
        push(name, prog, input, ret, Exact(expected), Verdict::DnatNew);
    }

    // Extension headers: walked, kept, and the L4 header after them translated.
    let chain = |b: Ipv6Builder| {
        b.ext(Ipv6Ext::HopByHop(4))
            .ext(Ipv6Ext::Routing)
            .ext(Ipv6Ext::Fragment {
                offset_units: 0,
                more: false,
                id: 7,
            })
            .ext(Ipv6Ext::DestOpts(12))
    };
    for (prog, port, ret, name) in [
        (
            Tc,
            41020,
            TC_ACT_OK,
            "TC: behind hop-by-hop, routing, atomic fragment, destination options",
        ),
        (
            Xdp,
            41021,
            XDP_PASS,
            "XDP: behind hop-by-hop, routing, atomic fragment, destination options",
        ),
    ] {
        let input = chain(syn(client(port), &vip)).build();
        let expected = chain(syn(client(port), &be)).build();
        push(name, prog, input, ret, Exact(expected), Verdict::DnatNew);
    }
    for (prog, port, ret, name) in [
        (
            Tc,
            41030,
            TC_ACT_OK,
            "TC: 8 extension headers, the most walked",
        ),
        (
            Xdp,
            41031,
            XDP_PASS,
            "XDP: 8 extension headers, the most walked",
        ),
    ] {
        let input = with_dest_opts(syn(client(port), &vip), 8).build();
        let expected = with_dest_opts(syn(client(port), &be), 8).build();
        push(name, prog, input, ret, Exact(expected), Verdict::DnatNew);
    }
    let nine = with_dest_opts(syn(client(41040), &vip), 9).build();
    let mut ah = syn(client(41041), &vip).build();
    ah[20] = 51; // next header: AH
    let orphan_fragment = fragment(client(41042), &format!("{VIP}:53"), 77, 185, false);
    let cut = syn(client(41043), &vip).truncate(14 + 40 + 10).build();
    let mut short_payload = syn(client(41044), &vip).build();
    short_payload[18..20].copy_from_slice(&10u16.to_be_bytes()); // 10 of the TCP header's 20
    let ns =
        Ipv6Builder::neighbor_solicitation(ip6(CLIENT), ip6("fd00:10:96::10"), CLIENT_MAC).build();
    let echo = Ipv6Builder::icmpv6(
        ip6(CLIENT),
        ip6("fd00:10:96::10"),
        ICMPV6_ECHO_REQUEST,
        0,
        [0, 1, 0, 1],
    )
    .payload(b"abcdefgh")
    .build();
    let not_service = syn(client(41045), "[fd00:10:244:1::30]:80").build();
    for (prog, pass, drop) in [(Tc, TC_ACT_OK, TC_ACT_SHOT), (Xdp, XDP_PASS, XDP_DROP)] {
        let untouched = [
            ("9 extension headers", &nine, Verdict::PassIpv6Unparsed),
            ("an AH header", &ah, Verdict::PassIpv6Unparsed),
            (
                "a later fragment whose first never came",
                &orphan_fragment,
                Verdict::PassFragment,
            ),
            ("neighbour solicitation", &ns, Verdict::PassOtherProto),
            (
                "echo request to the ClusterIP",
                &echo,
                Verdict::PassOtherProto,
            ),
            (
                "TCP to a pod address",
                &not_service,
                Verdict::PassNotService,
            ),
        ];
        for (name, frame, verdict) in untouched {
            push(name, prog, frame.clone(), pass, Unchanged, verdict);
        }
        push(
            "cut inside the TCP header",
            prog,
            cut.clone(),
            drop,
            Unchanged,
            Verdict::DropMalformed,
        );
        push(
            "payload length shorter than the TCP header",
            prog,
            short_payload.clone(),
            drop,
            Unchanged,
            Verdict::DropMalformed,
        );
    }
    // A datagram in fragments, through TC and through XDP: the first is translated as a
    // packet, the later one gets its addresses.
    let dns = format!("{VIP}:53");
    let dns_be = format!("{BACKEND}:5353");
    for (prog, port, id, ret, first_name, later_name) in [
        (
            Tc,
            41046,
            8,
            TC_ACT_OK,
            "TC: first fragment to the IPv6 ClusterIP, DNAT",
            "TC: its later fragment, the same addresses",
        ),
        (
            Xdp,
            41047,
            9,
            XDP_PASS,
            "XDP: first fragment to the IPv6 ClusterIP, DNAT",
            "XDP: its later fragment, the same addresses",
        ),
    ] {
        let first = fragment(client(port), &dns, id, 0, true);
        let first_out = fragment(client(port), &dns_be, id, 0, true);
        push(
            first_name,
            prog,
            first,
            ret,
            Exact(first_out),
            Verdict::DnatNew,
        );
        let later = fragment(client(port), &dns, id, 185, false);
        let mut later_out = later.clone();
        later_out[38..54].copy_from_slice(&ip6("fd00:10:244:1::11").octets());
        push(
            later_name,
            prog,
            later,
            ret,
            Exact(later_out),
            Verdict::DnatFragment,
        );
    }
    let reject_syn = syn(client(41050), &format!("{EMPTY}:80")).build();
    push(
        "XDP: no endpoints, handed to TC",
        Xdp,
        reject_syn,
        XDP_PASS,
        Unchanged,
        Verdict::XdpPassToTc,
    );
    out
}

/// The ICMPv6 port unreachable TC answers `datagram` with: from the Service address, MACs
/// swapped, quoting the IPv6 header and 8 bytes after it.
fn expected_port_unreachable(datagram: &[u8]) -> Vec<u8> {
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&datagram[38..54]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&datagram[22..38]).unwrap());
    let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&datagram[14..14 + 48]);
    let csum = checksum6(src, dst, PROTO_ICMPV6, &icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&datagram[6..12]);
    f.extend_from_slice(&datagram[0..6]);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[PROTO_ICMPV6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn ipv6_table() {
    let mut h = ipv6_datapath();
    h.run_table(&cases());

    // Rejects: a RST that acknowledges the SYN, and an exact ICMPv6 port unreachable.
    let syn_in = syn(client(41060), &format!("{EMPTY}:80")).build();
    let rst = h.check(&case(
        "TC: TCP to a Service without endpoints, RST",
        Prog::Tc,
        syn_in,
        TC_ACT_REDIRECT,
        Output::Any,
        Verdict::RejectTcpRst,
    ));
    assert_eq!(rst.len(), 14 + 40 + 20, "{}", summary(&rst));
    assert_eq!(&rst[22..38], &ip6("fd00:10:96::20").octets(), "RST source");
    assert_eq!(&rst[38..54], &ip6(CLIENT).octets(), "RST destination");
    let [hi, lo] = 41060u16.to_be_bytes();
    assert_eq!(&rst[54..58], &[0, 80, hi, lo], "RST ports");
    assert_eq!(rst[54 + 13], 0x14, "RST|ACK");
    assert_eq!(
        &rst[54 + 8..54 + 12],
        &1u32.to_be_bytes(),
        "acknowledges the SYN"
    );
    let udp_in = Ipv6Builder::udp(client(41061), sa6(&format!("{EMPTY}:80")))
        .payload(b"dns?")
        .build();
    h.check(&case(
        "TC: UDP to a Service without endpoints, ICMPv6 port unreachable",
        Prog::Tc,
        udp_in.clone(),
        TC_ACT_REDIRECT,
        Output::Exact(expected_port_unreachable(&udp_in)),
        Verdict::RejectIcmp,
    ));

    // Two entries per translated flow, in the IPv6 conntrack map.
    let ct: HashMap<_, Ct6Key, Ct6Value> = open(&h, map_names::SVC6_CT);
    let entries: Vec<(Ct6Key, Ct6Value)> = ct.iter().map(|e| e.unwrap()).collect();
    let services = entries
        .iter()
        .filter(|(k, _)| k.kind == CT_KIND_SERVICE)
        .count();
    let replies = entries
        .iter()
        .filter(|(k, _)| k.kind == CT_KIND_REPLY)
        .count();
    // TCP 41000, 41001, 41020, 41021, 41030, 41031; UDP 41010, 41011, and the first
    // fragments' 41046, 41047.
    assert_eq!((services, replies), (10, 10), "{entries:?}");
    let backend = words(&ip6("fd00:10:244:1::11"));
    assert!(
        entries
            .iter()
            .filter(|(k, _)| k.kind == CT_KIND_SERVICE)
            .all(|(_, v)| v.addr_be == backend),
        "{entries:?}"
    );

    // The IPv4 Service of the same datapath is still translated.
    let syn4 = tcp("10.244.1.20:40000", "10.96.0.10:80").flags(SYN).build();
    let r = h.run(Prog::Tc, &syn4);
    assert_eq!(r.delta, vec![(Verdict::DnatNew, 1)], "{:?}", r.delta);
}

/// An ICMPv6 error from `from` to `to` quoting the IP packet of `frame` (its first
/// `quote` bytes after the Ethernet header).
fn icmp6_error(
    from: &str,
    to: &str,
    kind: u8,
    rest: [u8; 4],
    frame: &[u8],
    quote: usize,
) -> Vec<u8> {
    Ipv6Builder::icmpv6(ip6(from), ip6(to), kind, 0, rest)
        .payload(&frame[14..14 + quote])
        .build()
}

#[test]
fn ipv6_icmp_errors_about_translated_flows() {
    use Output::{Exact, Unchanged};
    let mut h = ipv6_datapath();
    let vip = format!("{VIP}:80");
    let be = format!("{BACKEND}:8080");
    let router = "fd00:10:244:1::1";
    // A flow from the client, translated to the backend.
    let syn_in = syn(client(42000), &vip).build();
    let syn_out = syn(client(42000), &be).build();
    h.check(&case(
        "TC: the flow's SYN, DNAT",
        Prog::Tc,
        syn_in.clone(),
        TC_ACT_OK,
        Exact(syn_out.clone()),
        Verdict::DnatNew,
    ));
    // Packet too big (MTU 1280) about the translated SYN, from a router behind the node:
    // the quote back to client -> Service, the source to the Service address.
    let mtu = 1280u32.to_be_bytes();
    for (quote, name) in [
        (
            60,
            "TC: packet too big about the flow, the whole TCP header quoted",
        ),
        (
            48,
            "TC: packet too big about the flow, 8 bytes of TCP quoted",
        ),
    ] {
        let input = icmp6_error(router, CLIENT, 2, mtu, &syn_out, quote);
        // (A 48-byte quote ends before the TCP checksum, which is then not updated.)
        let expected = icmp6_error("fd00:10:96::10", CLIENT, 2, mtu, &syn_in, quote);
        h.check(&case(
            name,
            Prog::Tc,
            input,
            TC_ACT_OK,
            Exact(expected),
            Verdict::RevNatIcmp,
        ));
    }
    // Port unreachable about the reply, from a router on the client's side, addressed to
    // the Service address: to the backend, the quote back to backend -> client.
    let reply_out = Ipv6Builder::tcp(sa6(&vip), client(42000))
        .flags(SYN | ACK)
        .build();
    let reply_in = Ipv6Builder::tcp(sa6(&be), client(42000))
        .flags(SYN | ACK)
        .build();
    let input = icmp6_error(
        "fd00:10:244:1::99",
        "fd00:10:96::10",
        1,
        [0; 4],
        &reply_out,
        60,
    );
    let expected = icmp6_error(
        "fd00:10:244:1::99",
        "fd00:10:244:1::11",
        1,
        [0; 4],
        &reply_in,
        60,
    );
    h.check(&case(
        "TC: unreachable about the reply, to the backend",
        Prog::Tc,
        input.clone(),
        TC_ACT_OK,
        Exact(expected),
        Verdict::DnatIcmp,
    ));
    h.check(&case(
        "XDP: an ICMPv6 error is TC's",
        Prog::Xdp,
        input,
        XDP_PASS,
        Unchanged,
        Verdict::XdpPassToTc,
    ));
    // Not about a translated flow, and an echo request: untouched.
    let other = syn(client(42001), "[fd00:10:244:1::30]:80").build();
    let unrelated = icmp6_error(router, CLIENT, 2, mtu, &other, 60);
    h.check(&case(
        "TC: packet too big about an untranslated flow",
        Prog::Tc,
        unrelated,
        TC_ACT_OK,
        Unchanged,
        Verdict::PassOtherProto,
    ));
}
