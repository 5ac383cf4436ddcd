//! The reconciler's unit tests, on the in-memory maps.
use std::net::Ipv4Addr;

use svc_common::{
    FrontendKind, NAME_KEY_UNSERVED, NAME_KIND_NONE, NAME_SERVED, Protocol, Svc4Key, UnservedReason,
};

use super::*;
use crate::dataplane::FakeMaps;
use crate::desired::FrontendState;
use crate::model::ObjectRef;

/// The SVC4_SERVICES key of an IPv4 frontend's entry.
fn svc_key(f: &Frontend, scope: Scope, slot: u16) -> Svc4Key {
    match layout::service_key(f, scope, slot) {
        layout::ServiceKey::V4(k) => k,
        layout::ServiceKey::V6(_) => panic!("{f} is not an IPv4 frontend"),
    }
}

fn fe(vip: [u8; 4], port: u16) -> Frontend {
    Frontend {
        vip: Ipv4Addr::from(vip).into(),
        port,
        proto: Protocol::Tcp,
    }
}
fn be(last: u8) -> BackendAddr {
    BackendAddr {
        addr: Ipv4Addr::new(10, 244, 1, last).into(),
        port: 8080,
        proto: Protocol::Tcp,
    }
}
fn desired(entries: &[(Frontend, Vec<BackendAddr>)]) -> DesiredState {
    let mut d = DesiredState::default();
    for (f, b) in entries {
        d.frontends.insert(
            *f,
            FrontendState {
                service: ObjectRef::new("default", "svc"),
                backends: b.clone(),
                ..Default::default()
            },
        );
    }
    d
}

/// A partial sync of the frontends whose backends changed leaves the maps exactly as a
/// full sync does: new backends in, the backends only they used out, shared ones kept.
#[test]
fn partial_sync_equals_a_full_sync_for_endpoint_changes() {
    let (f1, f2, f3) = (
        fe([10, 96, 0, 1], 80),
        fe([10, 96, 0, 2], 80),
        fe([10, 96, 0, 3], 80),
    );
    let before = desired(&[
        (f1, vec![be(1), be(2)]),
        (f2, vec![be(2), be(3)]),
        (f3, vec![be(4)]),
    ]);
    let mut after = desired(&[
        (f1, vec![be(1), be(5)]),
        (f2, vec![be(3)]),
        (f3, vec![be(4)]),
    ]);
    // be(6) stays for f3's established flows only.
    after.frontends.get_mut(&f3).unwrap().terminating = vec![be(6)];
    let mut full = maps();
    let mut r_full = Reconciler::adopt(&full).unwrap();
    assert!(r_full.sync(&before, &mut full).errors.is_empty());
    let mut part = full.clone();
    let mut r_part = Reconciler::adopt(&part).unwrap();
    assert!(r_full.sync(&after, &mut full).errors.is_empty());
    let report = r_part.sync_partial(&after, &[f1, f2, f3], &mut part);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(part.services, full.services);
    assert_eq!(part.backends, full.backends);
    assert_eq!(part.revnats, full.revnats);
    assert_consistent(&part);
    // be(2) (only f1 and f2 used it) is gone; be(6) is there, terminating.
    assert_eq!(report.backends_removed, 1);
    // A second partial sync of the same state writes nothing.
    let again = r_part.sync_partial(&after, &[f1, f2], &mut part);
    assert!(!again.changed(), "{again:?}");
}

/// A partial sync of one frontend keeps a backend it no longer uses when a frontend
/// outside the partial list still has it in a slot (the per-backend slot counts), and
/// deletes it once that one drops it too.
#[test]
fn partial_sync_keeps_a_backend_another_frontend_uses() {
    let (f1, f4) = (fe([10, 96, 0, 1], 80), fe([10, 96, 0, 4], 80));
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let both = desired(&[(f1, vec![be(1), be(7)]), (f4, vec![be(7)])]);
    assert!(r.sync(&both, &mut maps).errors.is_empty());
    let f1_drops = desired(&[(f1, vec![be(1)]), (f4, vec![be(7)])]);
    let rep = r.sync_partial(&f1_drops, &[f1], &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(rep.backends_removed, 0, "be(7) is still in f4's slot");
    assert_eq!(maps.backends.len(), 2);
    // A restarted agent counts the slots from the maps and decides the same.
    let mut again = Reconciler::adopt(&maps).unwrap();
    let f4_drops = desired(&[(f1, vec![be(1)]), (f4, vec![be(1)])]);
    let rep = again.sync_partial(&f4_drops, &[f4], &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(rep.backends_removed, 1, "nothing uses be(7) now");
    assert_eq!(maps.backends.len(), 1);
    assert_consistent(&maps);
}

/// Maps that check, after every single write, that no packet can trip over what they
/// hold (svcctl's packet hazards: counts past the slots, missing backends, a frontend
/// without its rev-NAT entry, a policy flag without its entries).
fn maps() -> FakeMaps {
    FakeMaps {
        after_every_write: Some(crate::inspect::consistency::packet_hazards),
        ..Default::default()
    }
}

/// Checks the invariant write by write, and that the sync left nothing svcctl would
/// report.
fn assert_consistent(m: &FakeMaps) {
    assert!(m.violations.is_empty(), "{:#?}", m.violations);
    let found = crate::inspect::consistency::inconsistencies(&m.raw(), 0);
    assert!(found.is_empty(), "{found:#?}");
}

fn backends_of(m: &FakeMaps, f: &Frontend) -> Vec<Ipv4Addr> {
    let front = m.services[&svc_key(f, Scope::All, 0)];
    let mut v: Vec<Ipv4Addr> = (1..=front.count)
        .map(|s| {
            Ipv4Addr::from(u32::from_be(
                m.backends[&m.services[&svc_key(f, Scope::All, s)].backend_id].addr_be,
            ))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn installs_then_writes_nothing_when_unchanged() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let d = desired(&[(fe([10, 96, 0, 10], 80), vec![be(11), be(12), be(13)])]);
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty());
    assert_eq!(
        (rep.backends_added, rep.frontends_written, rep.slots_written),
        (3, 1, 3)
    );
    assert_consistent(&maps);
    assert_eq!(backends_of(&maps, &fe([10, 96, 0, 10], 80)).len(), 3);
    maps.log.clear();
    let rep = r.sync(&d, &mut maps);
    assert!(!rep.changed(), "{rep:?}");
    assert!(maps.log.is_empty());
}

#[test]
fn write_order_is_safe_for_growth_and_shrink() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let f = fe([10, 96, 0, 10], 80);
    r.sync(&desired(&[(f, vec![be(11)])]), &mut maps);
    maps.log.clear();
    r.sync(&desired(&[(f, vec![be(11), be(12), be(13)])]), &mut maps);
    // Backends, then new slots, then the frontend's count.
    assert_eq!(
        maps.log,
        vec![
            "put backend 2",
            "put backend 3",
            "put svc slot 2 count 0 backend 2",
            "put svc slot 3 count 0 backend 3",
            "put svc slot 0 count 3 backend 0"
        ]
    );
    maps.log.clear();
    r.sync(&desired(&[(f, vec![be(13)])]), &mut maps);
    // Slot 1 rewritten, count lowered, then extra slots removed, then unused backends.
    assert_eq!(
        maps.log,
        vec![
            "put svc slot 1 count 0 backend 3",
            "put svc slot 0 count 1 backend 0",
            "del svc slot 2",
            "del svc slot 3",
            "del backend 1",
            "del backend 2"
        ]
    );
    assert_consistent(&maps);
}

#[test]
fn removal_deletes_frontend_first_and_everything_after() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let f = fe([10, 96, 0, 10], 80);
    r.sync(&desired(&[(f, vec![be(11), be(12)])]), &mut maps);
    maps.log.clear();
    r.sync(&DesiredState::default(), &mut maps);
    assert_eq!(maps.log[0], "del svc slot 0");
    assert!(
        maps.services.is_empty() && maps.backends.is_empty() && maps.revnats.is_empty(),
        "{maps:?}"
    );
}

#[test]
fn no_endpoints_gives_count_zero() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let f = fe([10, 96, 0, 11], 80);
    r.sync(&desired(&[(f, vec![])]), &mut maps);
    assert_eq!(maps.services[&svc_key(&f, Scope::All, 0)].count, 0);
    assert_eq!(maps.services.len(), 1);
    assert_consistent(&maps);
}

#[test]
fn shared_backend_is_kept_until_no_frontend_uses_it() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let (a, b) = (fe([10, 96, 0, 1], 80), fe([10, 96, 0, 2], 80));
    r.sync(&desired(&[(a, vec![be(11)]), (b, vec![be(11)])]), &mut maps);
    assert_eq!(maps.backends.len(), 1);
    r.sync(&desired(&[(b, vec![be(11)])]), &mut maps);
    assert_eq!(maps.backends.len(), 1);
    assert_consistent(&maps);
    r.sync(&DesiredState::default(), &mut maps);
    assert!(maps.backends.is_empty());
}

#[test]
fn full_map_skips_one_frontend_and_keeps_the_rest() {
    let mut maps = FakeMaps {
        services_capacity: Some(4),
        ..maps()
    };
    let mut r = Reconciler::adopt(&maps).unwrap();
    let (a, b) = (fe([10, 96, 0, 1], 80), fe([10, 96, 0, 2], 80));
    // a needs 3 entries, b needs 3: only a fits.
    let rep = r.sync(
        &desired(&[(a, vec![be(11), be(12)]), (b, vec![be(13), be(14)])]),
        &mut maps,
    );
    assert_eq!(rep.errors.len(), 1);
    assert!(matches!(rep.errors[0], (Some(f), StoreError::Full { .. }) if f == b));
    assert_eq!(backends_of(&maps, &a).len(), 2);
    assert!(
        !maps.services.contains_key(&svc_key(&b, Scope::All, 0)),
        "b must not have a frontend pointing at missing slots"
    );
    // What b wrote before the map was full (a slot, its name) stays until the retry: no
    // packet can reach it, though svcctl lists it.
    assert!(maps.violations.is_empty(), "{:#?}", maps.violations);
    // Room appears (a removed): b is installed on the next sync.
    let rep = r.sync(&desired(&[(b, vec![be(13), be(14)])]), &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(backends_of(&maps, &b).len(), 2);
    assert_consistent(&maps);
}

#[test]
fn adoption_after_restart_rewrites_nothing() {
    let mut maps = maps();
    let d = desired(&[
        (fe([10, 96, 0, 10], 80), vec![be(11), be(12)]),
        (fe([10, 96, 0, 10], 53), vec![be(13)]),
    ]);
    Reconciler::adopt(&maps).unwrap().sync(&d, &mut maps);
    let before = maps.clone();
    maps.log.clear();
    let mut restarted = Reconciler::adopt(&maps).unwrap();
    let rep = restarted.sync(&d, &mut maps);
    assert!(!rep.changed(), "{rep:?}");
    assert_eq!(maps.services, before.services);
    // New ids continue after the adopted ones.
    let rep = restarted.sync(
        &desired(&[(fe([10, 96, 0, 10], 80), vec![be(11), be(12), be(20)])]),
        &mut maps,
    );
    assert!(rep.errors.is_empty());
    assert!(maps.backends.contains_key(&4), "{:?}", maps.backends.keys());
    assert_consistent(&maps);
}

#[test]
fn orphan_slots_are_removed_on_first_sync() {
    let mut maps = maps();
    let f = fe([10, 96, 0, 10], 80);
    maps.services.insert(
        svc_key(&f, Scope::All, 3),
        Svc4Value {
            backend_id: 9,
            ..Default::default()
        },
    );
    let mut r = Reconciler::adopt(&maps).unwrap();
    r.sync(&DesiredState::default(), &mut maps);
    assert!(maps.services.is_empty());
}

fn named(entries: &[(Frontend, &str, &str, FrontendKind)]) -> DesiredState {
    let mut d = DesiredState::default();
    for (f, svc, port, kind) in entries {
        d.frontends.insert(
            *f,
            FrontendState {
                service: ObjectRef::new("default", *svc),
                port_name: port.to_string(),
                kind: *kind,
                ..Default::default()
            },
        );
    }
    d
}

fn name_of(m: &FakeMaps, key: u32) -> (String, String, String, u8, u8) {
    let n = &m.names[&key];
    (
        n.namespace().into(),
        n.name().into(),
        n.port_name().into(),
        n.kind,
        n.status,
    )
}

#[test]
fn names_follow_frontends_and_unserved_services() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let (a, b) = (fe([10, 96, 0, 10], 80), fe([192, 0, 2, 1], 30080));
    let mut d = named(&[
        (a, "echo", "http", FrontendKind::ClusterIp),
        (b, "web", "", FrontendKind::NodePort),
    ]);
    d.unserved = vec![
        (
            ObjectRef::new("default", "db-alias"),
            UnservedReason::ExternalName,
        ),
        (
            ObjectRef::new("default", "headless"),
            UnservedReason::Headless,
        ),
    ];
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(rep.names_written, 4);
    // The name right after the rev-NAT entry, before any slot of the frontend.
    let pos = |m: &FakeMaps, s: &str| {
        m.log
            .iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("{s} not in {:?}", m.log))
    };
    assert_eq!(pos(&maps, "put name 0x1"), pos(&maps, "put revnat 1") + 1);
    let rev_a = maps.services[&svc_key(&a, Scope::All, 0)].rev_nat_id;
    let rev_b = maps.services[&svc_key(&b, Scope::All, 0)].rev_nat_id;
    assert_eq!(
        name_of(&maps, rev_a),
        (
            "default".into(),
            "echo".into(),
            "http".into(),
            FrontendKind::ClusterIp.raw(),
            NAME_SERVED
        )
    );
    assert_eq!(
        name_of(&maps, rev_b),
        (
            "default".into(),
            "web".into(),
            String::new(),
            FrontendKind::NodePort.raw(),
            NAME_SERVED
        )
    );
    assert_eq!(
        name_of(&maps, NAME_KEY_UNSERVED),
        (
            "default".into(),
            "db-alias".into(),
            String::new(),
            NAME_KIND_NONE,
            UnservedReason::ExternalName.raw()
        )
    );
    assert_eq!(
        name_of(&maps, NAME_KEY_UNSERVED + 1).4,
        UnservedReason::Headless.raw()
    );

    // Unchanged: nothing written.
    maps.log.clear();
    assert!(!r.sync(&d, &mut maps).changed());
    assert!(maps.log.is_empty(), "{:?}", maps.log);

    // A frontend goes: its name goes with it (after its rev-NAT entry); one unserved
    // Service goes and the other moves to key 0: rewritten by diff.
    let mut d2 = named(&[(a, "echo", "http", FrontendKind::ClusterIp)]);
    d2.unserved = vec![(
        ObjectRef::new("default", "headless"),
        UnservedReason::Headless,
    )];
    maps.log.clear();
    let rep = r.sync(&d2, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(
        pos(&maps, &format!("del name {rev_b:#x}")),
        pos(&maps, &format!("del revnat {rev_b}")) + 1
    );
    assert_eq!(maps.names.len(), 2);
    assert_eq!(name_of(&maps, NAME_KEY_UNSERVED).1, "headless");
    assert!(!maps.names.contains_key(&(NAME_KEY_UNSERVED + 1)));

    // The port is renamed: the entry is rewritten in place.
    let d3 = named(&[(a, "echo", "web", FrontendKind::ClusterIp)]);
    r.sync(&d3, &mut maps);
    assert_eq!(maps.names.len(), 1);
    assert_eq!(name_of(&maps, rev_a).2, "web");
    r.sync(&DesiredState::default(), &mut maps);
    assert!(maps.names.is_empty());
}

#[test]
fn names_are_adopted_and_strays_removed() {
    let mut maps = maps();
    let f = fe([10, 96, 0, 10], 80);
    let mut d = named(&[(f, "echo", "http", FrontendKind::ClusterIp)]);
    d.unserved = vec![(
        ObjectRef::new("default", "headless"),
        UnservedReason::Headless,
    )];
    Reconciler::adopt(&maps).unwrap().sync(&d, &mut maps);
    // A name nothing owns (e.g. left by a crash between writes).
    maps.names
        .insert(77, SvcName::new("x", "y", "", 0, NAME_SERVED));
    maps.log.clear();
    let mut restarted = Reconciler::adopt(&maps).unwrap();
    let rep = restarted.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(maps.log, vec!["del name 0x4d"]);
    assert_eq!(maps.names.len(), 2);
}

#[test]
fn a_full_names_map_does_not_stop_the_datapath() {
    let mut maps = FakeMaps {
        names_capacity: Some(0),
        ..maps()
    };
    let mut r = Reconciler::adopt(&maps).unwrap();
    let f = fe([10, 96, 0, 10], 80);
    let mut d = named(&[(f, "echo", "http", FrontendKind::ClusterIp)]);
    d.frontends.get_mut(&f).unwrap().backends = vec![be(11)];
    d.unserved = vec![(
        ObjectRef::new("default", "headless"),
        UnservedReason::Headless,
    )];
    let rep = r.sync(&d, &mut maps);
    assert_eq!(rep.errors.len(), 2, "{rep:?}");
    assert!(matches!(rep.errors[0], (Some(e), StoreError::Full { .. }) if e == f));
    assert_eq!(backends_of(&maps, &f).len(), 1);
    assert_consistent(&maps);
    // Room appears: both names are written on the next sync.
    maps.names_capacity = None;
    let rep = r.sync(&d, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!((rep.names_written, maps.names.len()), (2, 2));
}

/// The per-write check is not vacuous: a frontend written before its slot is caught.
#[test]
fn the_per_write_check_catches_a_count_written_before_its_slots() {
    let mut maps = maps();
    let f = fe([10, 96, 0, 10], 80);
    maps.put_revnat_entry(1, &layout::revnat_value(&f)).unwrap();
    assert!(maps.violations.is_empty(), "{:#?}", maps.violations);
    let head = FrontendHead {
        count: 1,
        rev_nat_id: 1,
        ..Default::default()
    };
    maps.put_service(&svc_key(&f, Scope::All, 0), &head.encode())
        .unwrap();
    assert_eq!(
        maps.violations,
        vec![
            "after \"put svc slot 0 count 1 backend 0\": 10.96.0.10:80/TCP: slot 1 of 1 is missing"
        ]
    );
}

#[test]
fn problems_are_written_in_order_rewritten_by_diff_and_capped() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let texts = vec!["a.yaml: bad".to_string(), "b.yaml: worse".to_string()];
    let rep = r.sync_problems(&texts, &mut maps);
    assert_eq!((rep.problems_written, rep.problems_removed), (2, 0));
    assert_eq!(maps.problems[&1].text(), "b.yaml: worse");
    // Unchanged: nothing written. One fixed: the rest shifts, the tail goes.
    assert!(!r.sync_problems(&texts, &mut maps).changed());
    let rep = r.sync_problems(&texts[1..], &mut maps);
    assert_eq!((rep.problems_written, rep.problems_removed), (1, 1));
    assert_eq!(maps.problems.len(), 1);
    // A restarted agent adopts them.
    let mut again = Reconciler::adopt(&maps).unwrap();
    assert!(!again.sync_problems(&texts[1..], &mut maps).changed());
    // More than the map holds: the last entry counts the rest.
    let many: Vec<String> = (0..PROBLEMS_MAP_SIZE + 5)
        .map(|i| format!("p{i}"))
        .collect();
    r.sync_problems(&many, &mut maps);
    assert_eq!(maps.problems.len(), PROBLEMS_MAP_SIZE as usize);
    let last = maps.problems[&(PROBLEMS_MAP_SIZE - 1)].text().to_string();
    assert_eq!(last, "... and 6 more problems (see the agent's log)");
}

#[test]
fn removals_keep_leaves_what_the_desired_state_lacks_in_place() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let (a, b) = (fe([10, 96, 0, 1], 80), fe([10, 96, 0, 2], 80));
    r.sync(&desired(&[(a, vec![be(11)]), (b, vec![be(12)])]), &mut maps);
    let before = maps.clone();
    // b is missing from the view: kept as it is, a is still updated.
    let rep = r.sync_with(
        &desired(&[(a, vec![be(11), be(13)])]),
        &mut maps,
        Removals::Keep,
    );
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(rep.frontends_kept, 1);
    assert_eq!(backends_of(&maps, &b), backends_of(&before, &b));
    assert_eq!(backends_of(&maps, &a).len(), 2);
    assert_eq!(maps.names.len(), before.names.len());
    assert_consistent(&maps);
    // Pruning again: b goes.
    let rep = r.sync(&desired(&[(a, vec![be(11), be(13)])]), &mut maps);
    assert_eq!((rep.frontends_removed, rep.frontends_kept), (1, 0));
    assert!(!maps.services.contains_key(&svc_key(&b, Scope::All, 0)));
}

/// `desired` with ClusterIP frontends for `entries` (their VIPs allocated) and `cidrs`.
fn with_cidrs(entries: &[(Frontend, Vec<BackendAddr>)], cidrs: &[&str]) -> DesiredState {
    let mut d = desired(entries);
    for (f, _) in entries {
        d.cluster_ips
            .insert(f.vip, svc_common::ClusterIpUse::Reject);
    }
    d.service_cidrs.cidrs = cidrs.iter().map(|c| c.parse().unwrap()).collect();
    d
}

/// Writes whose log line starts with one of `prefixes`, in order.
fn writes(m: &FakeMaps, prefixes: &[&str]) -> Vec<String> {
    m.log
        .iter()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .cloned()
        .collect()
}

/// ClusterIPs go in before their frontends and out after them; service CIDRs go in last
/// and out (when no longer wanted) before the ClusterIPs: a packet to a served
/// ClusterIP's other ports is never dropped as unallocated, write by write (the fake runs
/// the packet-hazard check after every write, which includes that rule).
#[test]
fn cluster_ips_and_cidrs_are_written_around_the_frontends() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let (a, b) = (fe([10, 96, 0, 1], 80), fe([10, 96, 0, 2], 80));
    let first = with_cidrs(&[(a, vec![be(11)]), (b, vec![be(12)])], &["10.96.0.0/16"]);
    let rep = r.sync(&first, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!((rep.cluster_ips_written, rep.cidrs_written), (2, 1));
    assert_eq!(
        writes(
            &maps,
            &["put range ", "put clusterip", "put svc slot 0", "put cidr"]
        ),
        [
            "put range 10.96.0.0-10.96.255.255",
            "put clusterip 10.96.0.1",
            "put clusterip 10.96.0.2",
            "put svc slot 0 count 1 backend 0",
            "put svc slot 0 count 1 backend 0",
            "put cidr 10.96.0.0/16",
        ]
    );
    assert_consistent(&maps);
    // Nothing changed: nothing written.
    assert!(!r.sync(&first, &mut maps).changed());

    // b's Service goes, and the CIDR moves: the CIDR is replaced, b's ClusterIP goes
    // after its frontend.
    maps.log.clear();
    let second = with_cidrs(&[(a, vec![be(11)])], &["10.96.0.0/12"]);
    let rep = r.sync(&second, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(
        (
            rep.cidrs_removed,
            rep.cidrs_written,
            rep.cluster_ips_removed
        ),
        (1, 1, 1)
    );
    assert_eq!(
        writes(
            &maps,
            &[
                "del clusterip",
                "del svc slot 0",
                "put cidr",
                "del cidr",
                "put range"
            ]
        ),
        [
            // Widened first (to the old and the new entries), narrowed last.
            "put range 10.96.0.0-10.111.255.255",
            "del svc slot 0",
            "del cidr 10.96.0.0/16",
            "put cidr 10.96.0.0/12",
            "del clusterip 10.96.0.2",
        ]
    );
    assert_consistent(&maps);

    // A restarted agent adopts both maps and writes nothing.
    let mut again = Reconciler::adopt(&maps).unwrap();
    assert!(!again.sync(&second, &mut maps).changed());

    // Keep (an incomplete view): nothing is deleted, new ones are written.
    let mut third = with_cidrs(&[(a, vec![be(11)])], &["172.30.0.0/16"]);
    third.cluster_ips.clear();
    third.cluster_ips.insert(
        Ipv4Addr::new(10, 96, 0, 9).into(),
        svc_common::ClusterIpUse::OtherProxy,
    );
    let rep = again.sync_with(&third, &mut maps, Removals::Keep);
    assert_eq!(
        (
            rep.cidrs_removed,
            rep.cidrs_written,
            rep.cluster_ips_removed,
            rep.cluster_ips_written
        ),
        (0, 1, 0, 1)
    );
    assert_eq!(maps.service_cidrs.len(), 2);
    assert_eq!(
        maps.cluster_ips[&layout::cluster_ip_key(Ipv4Addr::new(10, 96, 0, 9))],
        svc_common::CLUSTERIP_OTHER_PROXY
    );
    assert_eq!(maps.cluster_ips.len(), 2);
    assert_eq!(
        maps.unserved_range,
        svc_common::AddrRange4 {
            lo: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            hi: u32::from(Ipv4Addr::new(172, 30, 255, 255)),
        }
    );
    // Everything goes: the range is empty again, after the entries.
    maps.log.clear();
    let rep = again.sync(&DesiredState::default(), &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(maps.unserved_range, svc_common::AddrRange4::EMPTY);
    assert_eq!(
        maps.log.last().map(String::as_str),
        Some("put range 0.0.0.1-0.0.0.0")
    );
    assert!(maps.violations.is_empty(), "{:?}", maps.violations);
}

/// The range the programs look ClusterIPs and service CIDRs up in must cover every one of
/// them: an entry outside it is a hazard (its packets would pass).
#[test]
fn the_per_write_check_catches_an_entry_outside_the_range() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let a = fe([10, 96, 0, 1], 80);
    r.sync(
        &with_cidrs(&[(a, vec![be(11)])], &["10.96.0.0/16"]),
        &mut maps,
    );
    assert!(maps.violations.is_empty(), "{:?}", maps.violations);
    let hazards = |m: &FakeMaps| crate::inspect::consistency::packet_hazards(&m.raw());
    // A range one address short at either end.
    let full = maps.unserved_range;
    maps.unserved_range.hi -= 1;
    assert_eq!(
        hazards(&maps),
        [
            "service CIDR 10.96.0.0/16 is not inside SVC4_SVC_RANGE (its unallocated addresses are passed, not dropped)"
        ]
    );
    maps.unserved_range = svc_common::AddrRange4 {
        lo: full.lo + 2,
        ..full
    };
    assert_eq!(
        hazards(&maps),
        [
            "ClusterIP 10.96.0.1 is outside SVC4_SVC_RANGE (its unknown ports are passed, not rejected)",
            "service CIDR 10.96.0.0/16 is not inside SVC4_SVC_RANGE (its unallocated addresses are passed, not dropped)"
        ]
    );
}

/// The hazard the order above prevents: a served ClusterIP inside a service CIDR that is
/// not in SVC4_CLUSTERIPS (its other ports would be dropped instead of rejected).
#[test]
fn the_per_write_check_catches_a_cidr_before_its_cluster_ips() {
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let a = fe([10, 96, 0, 1], 80);
    // The desired state forgot the ClusterIP: the check says so at the CIDR's write.
    let mut d = with_cidrs(&[(a, vec![be(11)])], &["10.96.0.0/16"]);
    d.cluster_ips.clear();
    r.sync(&d, &mut maps);
    assert_eq!(
        maps.violations,
        vec![
            "after \"put cidr 10.96.0.0/16\": 10.96.0.1:80/TCP: ClusterIP 10.96.0.1 is inside service CIDR 10.96.0.0/16 but not in SVC4_CLUSTERIPS (its other ports are dropped, not rejected)"
        ]
    );
}

mod dual_stack;

/// The report names the Services whose frontends a sync wrote or removed, and only those;
/// a removed frontend is named from the maps (also by an agent that adopted them).
#[test]
fn report_names_the_services_changed() {
    let named = |entries: &[(Frontend, &str, Vec<BackendAddr>)]| {
        let mut d = DesiredState::default();
        for (f, name, b) in entries {
            d.frontends.insert(
                *f,
                FrontendState {
                    service: ObjectRef::new("shop", *name),
                    backends: b.clone(),
                    ..Default::default()
                },
            );
        }
        d
    };
    let (f1, f2, f3) = (
        fe([10, 96, 0, 1], 80),
        fe([10, 96, 0, 2], 80),
        fe([10, 96, 0, 2], 443),
    );
    let mut maps = maps();
    let mut r = Reconciler::adopt(&maps).unwrap();
    let first = named(&[
        (f1, "cart", vec![be(1)]),
        (f2, "web", vec![be(2)]),
        (f3, "web", vec![be(2)]),
    ]);
    let rep = r.sync(&first, &mut maps);
    assert_eq!(
        rep.services.iter().collect::<Vec<_>>(),
        ["shop/cart", "shop/web"]
    );
    assert!(
        r.sync(&first, &mut maps).services.is_empty(),
        "nothing changed"
    );
    // web's endpoint changes: only web.
    let second = named(&[
        (f1, "cart", vec![be(1)]),
        (f2, "web", vec![be(3)]),
        (f3, "web", vec![be(3)]),
    ]);
    let rep = r.sync_partial(&second, &[f2, f3], &mut maps);
    assert_eq!(rep.services.iter().collect::<Vec<_>>(), ["shop/web"]);
    // cart removed, seen by a new agent that adopted the maps.
    let mut adopted = Reconciler::adopt(&maps).unwrap();
    let third = named(&[(f2, "web", vec![be(3)]), (f3, "web", vec![be(3)])]);
    let rep = adopted.sync(&third, &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(rep.services.iter().collect::<Vec<_>>(), ["shop/cart"]);
}

/// One per-Service counter entry per frontend, by its rev_nat_id: created with the
/// frontend, deleted with it, kept (counts and all) across a restart, and the entries of
/// no frontend removed by the first sync after adoption.
#[test]
fn service_counters_follow_the_frontends() {
    let mut maps = maps();
    let (a, b) = (fe([10, 96, 0, 10], 80), fe([10, 96, 0, 10], 53));
    let mut r = Reconciler::adopt(&maps).unwrap();
    let rep = r.sync(&desired(&[(a, vec![be(11)]), (b, vec![])]), &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    let revs: BTreeSet<u32> = maps.revnats.keys().copied().collect();
    assert_eq!(maps.service_stats, revs);
    assert_eq!(revs.len(), 2);
    let rev_b = maps.services[&svc_key(&b, Scope::All, 0)].rev_nat_id;

    // A restart keeps them (adopted, not rewritten); a stray entry goes.
    maps.service_stats.insert(77);
    let mut restarted = Reconciler::adopt(&maps).unwrap();
    let rep = restarted.sync(&desired(&[(a, vec![be(11)]), (b, vec![])]), &mut maps);
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert_eq!(maps.service_stats, revs);

    // Removing a frontend removes its entry.
    restarted.sync(&desired(&[(a, vec![be(11)])]), &mut maps);
    assert!(
        !maps.service_stats.contains(&rev_b),
        "{:?}",
        maps.service_stats
    );
    assert_eq!(maps.service_stats.len(), 1);
    // Pins from before the counters existed: an adopted frontend without an entry gets
    // one from the first sync, unchanged as it is.
    maps.service_stats.clear();
    let mut upgraded = Reconciler::adopt(&maps).unwrap();
    upgraded.sync(&desired(&[(a, vec![be(11)])]), &mut maps);
    assert_eq!(maps.service_stats.len(), 1);
    assert_consistent(&maps);
}
