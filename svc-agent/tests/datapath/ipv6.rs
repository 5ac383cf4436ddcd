//! IPv6 on the single-node datapath, whose programs serve IPv4 only for now (docs/ipv6.md):
//! every IPv6 frame, through TC and through XDP, passes untouched and counts
//! `pass_not_ipv4`: TCP and UDP to an IPv6 service address, neighbour discovery, echo,
//! a chain of extension headers, a later fragment, a frame cut inside its TCP header, and
//! a frame whose bytes where IPv4 keeps its destination read the Service address
//! 10.96.0.10:80. No conntrack entry is made.
use std::net::{Ipv6Addr, SocketAddrV6};

use svc_agent::packet::{ICMPV6_ECHO_REQUEST, Ipv6Builder, Ipv6Ext, SYN};
use svc_common::Verdict;

use crate::support::*;
use crate::{conntrack, services};

fn sa6(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// (name, frame) of every IPv6 case; each runs through TC and through XDP.
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let pod = sa6("[fd00:10:244:1::20]:40000");
    let vip = sa6("[fd00:10:96::10]:80");
    // Its bytes 8..12 and 14..16 sit where an IPv4 header keeps its destination address
    // and (with a 20-byte header) the TCP destination port: 10.96.0.10 and 80.
    let mimic = SocketAddrV6::new(
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0x0a60, 0x000a, 0, 0x0050),
        40000,
        0,
        0,
    );
    vec![
        (
            "TCP SYN to an IPv6 address",
            Ipv6Builder::tcp(pod, vip).flags(SYN).build(),
        ),
        ("UDP", Ipv6Builder::udp(pod, vip).payload(b"dns?").build()),
        (
            "neighbour solicitation",
            Ipv6Builder::neighbor_solicitation(
                ip6("fd00:10:244:1::20"),
                ip6("fd00:10:244:1::1"),
                CLIENT_MAC,
            )
            .build(),
        ),
        (
            "echo request",
            Ipv6Builder::icmpv6(
                ip6("fd00:10:244:1::20"),
                ip6("fd00:10:96::10"),
                ICMPV6_ECHO_REQUEST,
                0,
                [0, 1, 0, 1],
            )
            .payload(b"abcdefgh")
            .build(),
        ),
        (
            "TCP behind hop-by-hop, routing, fragment and destination options",
            Ipv6Builder::tcp(pod, vip)
                .flags(SYN)
                .ext(Ipv6Ext::HopByHop(4))
                .ext(Ipv6Ext::Routing)
                .ext(Ipv6Ext::Fragment {
                    offset_units: 0,
                    more: false,
                    id: 1,
                })
                .ext(Ipv6Ext::DestOpts(6))
                .build(),
        ),
        (
            "a later fragment (offset 185)",
            Ipv6Builder::udp(pod, vip)
                .ext(Ipv6Ext::Fragment {
                    offset_units: 185,
                    more: false,
                    id: 9,
                })
                .payload(&[0xab; 24])
                .build(),
        ),
        (
            "cut inside the TCP header",
            Ipv6Builder::tcp(pod, vip)
                .flags(SYN)
                .truncate(14 + 40 + 10)
                .build(),
        ),
        (
            "bytes at the IPv4 destination offsets read 10.96.0.10:80",
            Ipv6Builder::tcp(mimic, vip).flags(SYN).build(),
        ),
    ]
}

#[test]
fn ipv6_passes_untouched() {
    use Output::Unchanged;
    let mut h = services::single_node("ipv6");
    for (name, frame) in frames() {
        for (prog, ret) in [(Prog::Tc, TC_ACT_OK), (Prog::Xdp, XDP_PASS)] {
            h.check(&case(
                name,
                prog,
                frame.clone(),
                ret,
                Unchanged,
                Verdict::PassNotIpv4,
            ));
        }
    }
    conntrack::assert_translated_flows(&h, &[]);
    // The IPv4 Service the mimic imitates is there, and translated for IPv4.
    let syn = tcp("10.244.1.20:40000", "10.96.0.10:80").flags(SYN).build();
    let r = h.run(Prog::Tc, &syn);
    assert_eq!(r.delta, vec![(Verdict::DnatNew, 1)], "{:?}", r.delta);
}
