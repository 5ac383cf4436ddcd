//! The SVC6_* maps in svcctl's views: IPv6 frontends, backends and conntrack entries next to
//! the IPv4 ones, and the consistency checks against each family's own maps.
use std::net::Ipv6Addr;

use svc_common::{Backend6, Ct6Key, Ct6Value, RevNat6, Svc6Key, ip6_from_octets};

use super::*;

fn ip6(s: &str) -> svc_common::Ip6 {
    ip6_from_octets(s.parse::<Ipv6Addr>().unwrap().octets())
}
fn svc6(vip: &str, port: u16, slot: u16) -> Svc6Key {
    Svc6Key {
        vip_be: ip6(vip),
        port_be: port.to_be(),
        slot,
        proto: PROTO_TCP,
        scope: SCOPE_ALL,
        _pad: [0; 2],
    }
}
fn backend6(addr: &str) -> Backend6 {
    Backend6 {
        addr_be: ip6(addr),
        port_be: 8080u16.to_be(),
        proto: PROTO_TCP,
        state: BACKEND_STATE_ACTIVE,
    }
}

/// The IPv4 sample plus the echo Service's IPv6 ClusterIP fd00:10:96::10:80 with backends
/// 3 and 4 (ids shared with the IPv4 ones: 1 and 2 are IPv4), rev_nat_id 3, and one
/// IPv6 flow to it.
fn dual() -> RawMaps {
    let mut raw = sample();
    raw.services6 = vec![
        (svc6("fd00:10:96::10", 80, 0), front(2, 3)),
        (svc6("fd00:10:96::10", 80, 1), slot(3, 3)),
        (svc6("fd00:10:96::10", 80, 2), slot(4, 3)),
    ];
    raw.backends6 = vec![
        (3, backend6("fd00:10:244:1::11")),
        (4, backend6("fd00:10:244:1::12")),
    ];
    raw.revnats6 = vec![(
        3,
        RevNat6 {
            vip_be: ip6("fd00:10:96::10"),
            port_be: 80u16.to_be(),
            _pad: [0; 2],
        },
    )];
    raw.names.push((
        3,
        SvcName::new(
            "default",
            "echo",
            "http",
            FrontendKind::ClusterIp.raw(),
            NAME_SERVED,
        ),
    ));
    let key = Ct6Key {
        saddr_be: ip6("fd00:10:244:1::20"),
        daddr_be: ip6("fd00:10:96::10"),
        sport_be: 40000u16.to_be(),
        dport_be: 80u16.to_be(),
        proto: PROTO_TCP,
        kind: CT_KIND_SERVICE,
        _pad: [0; 2],
    };
    let value = Ct6Value {
        created_ns: 100 * S,
        last_seen_ns: 111 * S,
        backend_id: 4,
        addr_be: ip6("fd00:10:244:1::12"),
        port_be: 8080u16.to_be(),
        rev_nat_id: 3,
        ..Default::default()
    };
    raw.conntrack6 = vec![(key, value)];
    raw
}

#[test]
fn ipv6_frontends_backends_and_flows_are_listed_after_the_ipv4_ones() {
    let raw = dual();
    let snap = decode(&raw, 112 * S);
    assert!(
        snap.inconsistencies.is_empty(),
        "{:#?}",
        snap.inconsistencies
    );
    let v6 = snap.services.last().unwrap();
    assert_eq!(
        v6.vip,
        "fd00:10:96::10".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        v6.service.as_ref().unwrap().to_string(),
        "default/echo:http"
    );
    let addrs: Vec<String> = v6
        .backends
        .iter()
        .map(|b| {
            Endpoint {
                addr: b.addr,
                port: b.port,
            }
            .to_string()
        })
        .collect();
    assert_eq!(
        addrs,
        ["[fd00:10:244:1::11]:8080", "[fd00:10:244:1::12]:8080"]
    );
    // The IPv4 services come first, unchanged.
    assert_eq!(
        snap.services.len(),
        decode(&sample(), 112 * S).services.len() + 1
    );
    let text = render_services(&snap);
    assert!(
        text.lines()
            .any(|l| l.contains("[fd00:10:96::10]:80") && l.contains("[fd00:10:244:1::11]:8080")),
        "{text}"
    );
    // Backends of both families, each id once; the IPv6 flow counts for its backend.
    let b4 = snap.backends.iter().find(|b| b.id == 4).unwrap();
    assert_eq!(b4.addr.to_string(), "fd00:10:244:1::12");
    assert_eq!(b4.flows, 1);
    assert_eq!(b4.references[0].frontend(), "[fd00:10:96::10]:80/TCP");
    // The IPv6 flow, after the IPv4 ones.
    let ct = snap.conntrack.last().unwrap();
    assert_eq!(ct.src.to_string(), "[fd00:10:244:1::20]:40000");
    assert_eq!(
        ct.translated_dst.unwrap().to_string(),
        "[fd00:10:244:1::12]:8080"
    );
    // JSON: the same fields, an IPv6 address as a string.
    let json = serde_json::to_value(&snap).unwrap();
    let last = json["services"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["vip"], "fd00:10:96::10");
    assert_eq!(last["backends"][0]["addr"], "fd00:10:244:1::11");
}

#[test]
fn each_family_is_checked_against_its_own_maps() {
    // A slot of the IPv6 frontend pointing at an IPv4 backend id: a packet to the IPv6
    // frontend reads SVC6_BACKENDS and finds nothing.
    let mut raw = dual();
    raw.services6[1].1 = slot(1, 3);
    let found = crate::inspect::consistency::packet_hazards(&raw);
    assert_eq!(
        found,
        vec!["[fd00:10:96::10]:80/TCP: slot 1 points at backend 1, which is not in SVC6_BACKENDS"]
    );
    // Its rev-NAT entry in the IPv4 map only: replies are not reverse-translated.
    let mut raw = dual();
    let moved = raw.revnats6.remove(0);
    raw.revnats.push((
        moved.0,
        RevNat4 {
            vip_be: 0,
            port_be: 80u16.to_be(),
            _pad: [0; 2],
        },
    ));
    let found = crate::inspect::consistency::packet_hazards(&raw);
    assert_eq!(
        found,
        vec![
            "[fd00:10:96::10]:80/TCP: rev_nat_id 3 has no SVC6_REVNAT entry (replies are not reverse-translated)"
        ]
    );
}
