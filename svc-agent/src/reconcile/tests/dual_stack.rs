//! IPv6 frontends on the in-memory maps: each family's entries in its own maps (`*6` for
//! IPv6), ids from one allocator, removal and adoption as for IPv4.
use std::net::{IpAddr, Ipv6Addr};

use svc_common::{FrontendKind, SCOPE_ALL, Svc6Key};

use super::*;
use crate::addr::IpCidr;

fn fe6(vip: &str, port: u16) -> Frontend {
    Frontend {
        vip: vip.parse().unwrap(),
        port,
        proto: Protocol::Tcp,
    }
}

fn be6(last: u16) -> BackendAddr {
    BackendAddr {
        addr: IpAddr::V6(std::net::Ipv6Addr::new(
            0xfd00, 0x10, 0x244, 1, 0, 0, 0, last,
        )),
        port: 8080,
        proto: Protocol::Tcp,
    }
}

fn svc6_key(f: &Frontend, scope: Scope, slot: u16) -> Svc6Key {
    match layout::service_key(f, scope, slot) {
        layout::ServiceKey::V6(k) => k,
        layout::ServiceKey::V4(_) => panic!("{f} is not an IPv6 frontend"),
    }
}

/// The backend addresses SVC6_SERVICES and SVC6_BACKENDS give `f`, sorted.
fn backends6_of(m: &FakeMaps, f: &Frontend) -> Vec<BackendAddr> {
    let front = m.services6[&svc6_key(f, Scope::All, 0)];
    let mut v: Vec<BackendAddr> = (1..=front.count)
        .map(|s| {
            let id = m.services6[&svc6_key(f, Scope::All, s)].backend_id;
            layout::backend_addr(&m.backends6[&id]).unwrap()
        })
        .collect();
    v.sort();
    v
}

/// One dual-stack Service: an IPv4 and an IPv6 ClusterIP, each with its family's
/// backends.
fn dual() -> (Frontend, Frontend, DesiredState) {
    let (f4, f6) = (fe([10, 96, 0, 10], 80), fe6("fd00:10:96::10", 80));
    let d = desired(&[(f4, vec![be(11), be(12)]), (f6, vec![be6(11), be6(12)])]);
    (f4, f6, d)
}

#[test]
fn each_family_goes_to_its_own_maps() {
    let (f4, f6, d) = dual();
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(
        (rep.backends_added, rep.frontends_written, rep.slots_written),
        (4, 2, 4)
    );
    assert_consistent(&maps);
    assert_eq!(backends_of(&maps, &f4).len(), 2);
    assert_eq!(backends6_of(&maps, &f6), vec![be6(11), be6(12)]);
    // Nothing of one family in the other's maps.
    assert_eq!((maps.services.len(), maps.services6.len()), (3, 3));
    assert_eq!((maps.backends.len(), maps.backends6.len()), (2, 2));
    assert_eq!((maps.revnats.len(), maps.revnats6.len()), (1, 1));
    // One allocator: an id names one thing in either map, and both names are in SVC_NAMES.
    let ids4: BTreeSet<u32> = maps.backends.keys().copied().collect();
    let ids6: BTreeSet<u32> = maps.backends6.keys().copied().collect();
    assert!(ids4.is_disjoint(&ids6), "{ids4:?} {ids6:?}");
    let rev4 = maps.services[&svc_key(&f4, Scope::All, 0)].rev_nat_id;
    let rev6 = maps.services6[&svc6_key(&f6, Scope::All, 0)].rev_nat_id;
    assert_ne!(rev4, rev6);
    assert!(maps.revnats.contains_key(&rev4) && maps.revnats6.contains_key(&rev6));
    assert_eq!(
        layout::revnat_endpoint(&maps.revnats6[&rev6]).to_string(),
        "[fd00:10:96::10]:80"
    );
    assert!(maps.names.contains_key(&rev4) && maps.names.contains_key(&rev6));
    // The IPv6 frontend's writes in the safe order: backends, rev-NAT, slots, then slot 0.
    let v6: Vec<&str> = maps
        .log
        .iter()
        .map(String::as_str)
        .filter(|w| w.contains('6'))
        .collect();
    assert_eq!(
        v6,
        vec![
            // The fresh (zeroed) SVC6_SVC_RANGE entry is made empty, as SVC4_SVC_RANGE's.
            "put range6 empty",
            "put backend6 3",
            "put backend6 4",
            "put revnat6 2",
            "put svc6 slot 1 count 0 backend 3",
            "put svc6 slot 2 count 0 backend 4",
            "put svc6 slot 0 count 2 backend 0",
        ]
    );
    // Unchanged: nothing written.
    maps.log.clear();
    assert!(!r.sync(&d, &mut maps).changed());
    assert!(maps.log.is_empty(), "{:?}", maps.log);
}

#[test]
fn removing_the_ipv6_frontend_leaves_the_ipv4_one() {
    let (f4, f6, d) = dual();
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    r.sync(&d, &mut maps);
    maps.log.clear();
    let rep = r.sync(&desired(&[(f4, vec![be(11), be(12)])]), &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!((rep.frontends_removed, rep.backends_removed), (1, 2));
    assert!(maps.services6.is_empty() && maps.backends6.is_empty());
    assert!(maps.revnats6.is_empty());
    assert_eq!(backends_of(&maps, &f4).len(), 2);
    assert_eq!(maps.names.len(), 1);
    // The frontend first, then its slots, its rev-NAT entry, its name, its backends.
    assert_eq!(
        maps.log,
        vec![
            "del svc6 slot 0",
            "del svc6 slot 1",
            "del svc6 slot 2",
            "del revnat6 2",
            "del name 0x2",
            "del backend6 3",
            "del backend6 4",
        ]
    );
    assert_consistent(&maps);
    // And back: the freed ids are reused.
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(backends6_of(&maps, &f6), vec![be6(11), be6(12)]);
    assert_consistent(&maps);
}

#[test]
fn a_restarted_agent_adopts_both_families() {
    let (f4, f6, d) = dual();
    let mut maps = maps();
    Reconciler::adopt(&maps).unwrap().sync(&d, &mut maps);
    let before = maps.clone();
    maps.log.clear();
    let mut restarted = Reconciler::adopt(&maps).unwrap();
    assert_eq!(restarted.sizes(), (2, 4));
    let rep = restarted.sync(&d, &mut maps);
    assert!(!rep.changed(), "{rep:?}");
    assert_eq!(maps.services6, before.services6);
    // A new IPv6 backend gets an id no family uses yet.
    let mut more = d.clone();
    more.frontends.get_mut(&f6).unwrap().backends.push(be6(13));
    let rep = restarted.sync(&more, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(
        maps.backends6.contains_key(&5),
        "{:?}",
        maps.backends6.keys()
    );
    assert_eq!(backends_of(&maps, &f4).len(), 2);
    assert_consistent(&maps);
    // Removal after adoption works as for IPv4.
    let rep = restarted.sync(&DesiredState::default(), &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(maps.services6.is_empty() && maps.backends6.is_empty() && maps.revnats6.is_empty());
    assert!(maps.services.is_empty() && maps.backends.is_empty());
}

#[test]
fn orphan_ipv6_slots_are_removed_on_first_sync() {
    let mut maps = maps();
    let f = fe6("fd00:10:96::10", 80);
    maps.services6.insert(
        svc6_key(&f, Scope::All, 3),
        Svc4Value {
            backend_id: 9,
            ..Default::default()
        },
    );
    let mut r = Reconciler::adopt(&maps).unwrap();
    r.sync(&DesiredState::default(), &mut maps);
    assert!(maps.services6.is_empty());
}

/// A backend id in both families' maps (never written so): the IPv4 entry is adopted,
/// the IPv6 one deleted.
#[test]
fn an_id_in_both_backends_maps_is_adopted_once() {
    let mut maps = maps();
    let f4 = fe([10, 96, 0, 10], 80);
    let d = desired(&[(f4, vec![be(11)])]);
    Reconciler::adopt(&maps).unwrap().sync(&d, &mut maps);
    let id = *maps.backends.keys().next().unwrap();
    let BackendValue::V6(stray) = layout::backend_value(&be6(11), BackendState::Active) else {
        panic!("IPv6")
    };
    maps.backends6.insert(id, stray);
    let mut r = Reconciler::adopt(&maps).unwrap();
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(maps.backends6.is_empty());
    assert_eq!(backends_of(&maps, &f4).len(), 1);
    assert_consistent(&maps);
}

#[test]
fn ipv6_source_ranges_go_to_svc6_src_range() {
    let f = fe6("2001:db8:5::1", 80);
    let mut d = desired(&[(f, vec![be6(11)])]);
    let state = d.frontends.get_mut(&f).unwrap();
    state.kind = FrontendKind::LoadBalancer;
    state.source_ranges = vec![
        "2001:db8::/64".parse::<IpCidr>().unwrap(),
        "2001:db8:5::1/128".parse().unwrap(),
    ];
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(maps.src_ranges.is_empty());
    let lens: Vec<u32> = maps.src_ranges6.iter().map(|k| k.0).collect();
    assert_eq!(lens, vec![32 + 64, 32 + 128]);
    let head = FrontendHead::decode(&maps.services6[&svc6_key(&f, Scope::All, 0)]);
    assert!(head.source_ranges);
    assert!(
        maps.src_ranges6
            .iter()
            .all(|k| k.1.rev_nat_id == head.rev_nat_id)
    );
    // A range of the IPv6 frontend's rev_nat_id in SVC4_SRC_RANGE is no range of it: the
    // first sync of a restarted agent deletes it.
    let layout::SrcRangeEntry::V4(stray) =
        layout::src_range_key(head.rev_nat_id, &"10.0.0.0/8".parse().unwrap())
    else {
        panic!("IPv4")
    };
    maps.src_ranges.insert(stray);
    // Adopted with their frontend, and removed with it.
    let mut restarted = Reconciler::adopt(&maps).unwrap();
    maps.log.clear();
    restarted.sync(&d, &mut maps);
    assert_eq!(maps.log, vec!["del range /40"]);
    assert!(maps.src_ranges.is_empty() && maps.src_ranges6.len() == 2);
    restarted.sync(&DesiredState::default(), &mut maps);
    assert!(maps.src_ranges6.is_empty());
    assert_consistent(&maps);
}

/// --lb-map-max is each backends map's capacity: a full IPv4 map does not stop IPv6
/// backends.
#[test]
fn each_family_has_its_own_backend_capacity() {
    let (f4, f6) = (fe([10, 96, 0, 10], 80), fe6("fd00:10:96::10", 80));
    let mut maps = maps();
    let mut r = Reconciler::adopt_with_capacity(&maps, 2).unwrap();
    let d = desired(&[(f4, vec![be(11), be(12)]), (f6, vec![be6(11), be6(12)])]);
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!((maps.backends.len(), maps.backends6.len()), (2, 2));
    // One more IPv6 backend does not fit; the IPv6 frontend keeps the two it has.
    let mut more = d.clone();
    more.frontends.get_mut(&f6).unwrap().backends.push(be6(13));
    let rep = r.sync(&more, &mut maps);
    assert!(
        matches!(
            rep.errors[..],
            [(
                None,
                StoreError::Full {
                    map: map_names::SVC6_BACKENDS
                }
            )]
        ),
        "{rep:?}"
    );
    assert_eq!(backends6_of(&maps, &f6), vec![be6(11), be6(12)]);
    assert_eq!(
        maps.services6[&svc6_key(&f6, Scope::All, 0)].count,
        2,
        "scope {SCOPE_ALL}"
    );
}

/// SVC6_SVC_RANGE's entry from the first to the last address.
fn range6(lo: &str, hi: &str) -> svc_common::AddrRange6 {
    let halves = |s: &str| svc_common::AddrRange6::halves(s.parse::<Ipv6Addr>().unwrap().octets());
    svc_common::AddrRange6 {
        lo: halves(lo),
        hi: halves(hi),
    }
}

/// IPv6 ClusterIPs and service CIDRs go to SVC6_CLUSTERIPS and SVC6_SVC_CIDR in the IPv4
/// order (ClusterIPs before their frontends, CIDRs after them; out in the reverse order),
/// SVC6_SVC_RANGE widened before the first write and narrowed after the last, checked
/// write by write; a restarted agent adopts them.
#[test]
fn ipv6_cluster_ips_and_cidrs_go_to_their_own_maps() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let (a, b) = (fe6("fd00:10:96::1", 80), fe6("fd00:10:96::2", 80));
    let first = with_cidrs(
        &[(a, vec![be6(11)]), (b, vec![be6(12)])],
        &["fd00:10:96::/112"],
    );
    let rep = r.sync(&first, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!((rep.cluster_ips_written, rep.cidrs_written), (2, 1));
    let unserved = [
        "put range6 ",
        "put clusterip",
        "del clusterip",
        "put cidr",
        "del cidr",
    ];
    assert_eq!(
        writes(&maps, &unserved),
        [
            "put range6 fd00:10:96::-fd00:10:96::ffff",
            "put clusterip6 fd00:10:96::1",
            "put clusterip6 fd00:10:96::2",
            "put cidr6 fd00:10:96::/112",
        ]
    );
    // The frontends come between the ClusterIPs and the CIDR.
    let log = &maps.log;
    let at = |w: &str| log.iter().position(|l| l == w).unwrap();
    let slot0 = at("put svc6 slot 0 count 1 backend 0");
    assert!(at("put clusterip6 fd00:10:96::2") < slot0);
    assert!(slot0 < at("put cidr6 fd00:10:96::/112"));
    // Nothing in the IPv4 maps; their range is made empty.
    assert!(maps.cluster_ips.is_empty() && maps.service_cidrs.is_empty());
    assert_eq!(maps.unserved_range, svc_common::AddrRange4::EMPTY);
    assert_eq!(
        maps.cluster_ips6[&layout::cluster_ip6_key("fd00:10:96::1".parse().unwrap())],
        svc_common::CLUSTERIP_REJECT
    );
    assert_eq!(
        maps.unserved_range6,
        range6("fd00:10:96::", "fd00:10:96::ffff")
    );
    assert_consistent(&maps);

    // b goes, a ClusterIP and a CIDR come elsewhere: the range is widened to cover old
    // and new first, narrowed to what is left last.
    maps.log.clear();
    let c = fe6("fd00:10:97::5", 80);
    let second = with_cidrs(
        &[(a, vec![be6(11)]), (c, vec![be6(13)])],
        &["fd00:10:97::/112"],
    );
    let rep = r.sync(&second, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(
        (
            rep.cluster_ips_written,
            rep.cluster_ips_removed,
            rep.cidrs_written,
            rep.cidrs_removed
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        writes(&maps, &unserved),
        [
            "put range6 fd00:10:96::-fd00:10:97::ffff",
            "put clusterip6 fd00:10:97::5",
            "del cidr6 fd00:10:96::/112",
            "put cidr6 fd00:10:97::/112",
            "del clusterip6 fd00:10:96::2",
            "put range6 fd00:10:96::1-fd00:10:97::ffff",
        ]
    );
    assert_consistent(&maps);

    // A restarted agent adopts the three maps and writes nothing.
    let mut again = Reconciler::adopt(&maps).unwrap();
    maps.log.clear();
    assert!(!again.sync(&second, &mut maps).changed());
    assert!(maps.log.is_empty(), "{:?}", maps.log);

    // A dual-stack set: each family in its own maps and range.
    let f4 = fe([10, 96, 0, 1], 80);
    let dual = with_cidrs(
        &[(f4, vec![be(11)]), (a, vec![be6(11)])],
        &["10.96.0.0/16", "fd00:10:96::/112"],
    );
    let rep = again.sync(&dual, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(maps.cluster_ips.len(), 1);
    assert_eq!(maps.cluster_ips6.len(), 1);
    assert_eq!(
        (maps.service_cidrs.len(), maps.service_cidrs6.len()),
        (1, 1)
    );
    assert_eq!(
        maps.unserved_range6,
        range6("fd00:10:96::", "fd00:10:96::ffff")
    );
    assert_consistent(&maps);

    // Everything goes: both ranges are empty again, after the entries.
    maps.log.clear();
    let rep = again.sync(&DesiredState::default(), &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(maps.cluster_ips6.is_empty() && maps.service_cidrs6.is_empty());
    assert_eq!(maps.unserved_range6, svc_common::AddrRange6::EMPTY);
    assert_eq!(
        maps.log.last().map(String::as_str),
        Some("put range6 empty")
    );
    assert!(maps.violations.is_empty(), "{:?}", maps.violations);
}

/// The packet-hazard check covers the IPv6 maps: an entry outside SVC6_SVC_RANGE, and a
/// served IPv6 ClusterIP inside a service CIDR but not in SVC6_CLUSTERIPS.
#[test]
fn the_per_write_check_covers_the_ipv6_maps() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let a = fe6("fd00:10:96::1", 80);
    r.sync(
        &with_cidrs(&[(a, vec![be6(11)])], &["fd00:10:96::/112"]),
        &mut maps,
    );
    assert!(maps.violations.is_empty(), "{:?}", maps.violations);
    let hazards = |m: &FakeMaps| crate::inspect::consistency::packet_hazards(&m.raw());
    let full = maps.unserved_range6;
    maps.unserved_range6.hi[1] -= 1;
    assert_eq!(
        hazards(&maps),
        [
            "service CIDR fd00:10:96::/112 is not inside SVC6_SVC_RANGE (its unallocated addresses are passed, not dropped)"
        ]
    );
    maps.unserved_range6 = svc_common::AddrRange6 {
        lo: [full.lo[0], full.lo[1] + 2],
        ..full
    };
    assert_eq!(
        hazards(&maps),
        [
            "ClusterIP fd00:10:96::1 is outside SVC6_SVC_RANGE (its unknown ports are passed, not rejected)",
            "service CIDR fd00:10:96::/112 is not inside SVC6_SVC_RANGE (its unallocated addresses are passed, not dropped)"
        ]
    );

    let mut maps = super::maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let mut d = with_cidrs(&[(a, vec![be6(11)])], &["fd00:10:96::/112"]);
    d.cluster_ips.clear();
    r.sync(&d, &mut maps);
    assert_eq!(
        maps.violations,
        vec![
            "after \"put cidr6 fd00:10:96::/112\": [fd00:10:96::1]:80/TCP: ClusterIP fd00:10:96::1 is inside service CIDR fd00:10:96::/112 but not in SVC6_CLUSTERIPS (its other ports are dropped, not rejected)"
        ]
    );
}
