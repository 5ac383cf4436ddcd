//! The inconsistencies svcctl reports.
use super::*;

#[test]
fn scope_and_flag_mismatches_are_reported() {
    let mut raw = lb_sample();
    let lb = [192, 0, 2, 100];
    // Policy Local without its SCOPE_LOCAL head; a local slot past it; ranges without
    // the flag; a terminating backend in a slot; an orphan range; an unknown scope.
    raw.services
        .retain(|(k, _)| !(k.scope == SCOPE_LOCAL && k.slot == 0));
    for (k, v) in &mut raw.services {
        if k.slot == 0 {
            v.flags &= !SVC_F_SOURCE_RANGES;
        }
    }
    raw.backends[0].1.state = BACKEND_STATE_TERMINATING;
    raw.src_ranges.push(src_range(77, [10, 0, 0, 0], 8));
    raw.services.push((scoped(lb, 443, 7, 1), slot(1, 5)));
    raw.services
        .push((scoped([10, 96, 0, 99], 53, SCOPE_LOCAL, 0), front(1, 9)));
    let snap = decode(&raw, 110 * S);
    let text = snap.inconsistencies.join("\n");
    for want in [
        "192.0.2.100:443/TCP: slot 1 has unknown scope 7",
        "192.0.2.100:443/TCP: slot 1 points at backend 1, which is terminating",
        "192.0.2.100:443/TCP: local slot 1 (backend 2) has no local slot 0",
        "192.0.2.100:443/TCP: policy Local but no SCOPE_LOCAL entry",
        "192.0.2.100:443/TCP: SVC4_SRC_RANGE entries without the source-ranges flag",
        "10.96.0.99:53/TCP: local slot 0 (count 1) has no frontend entry",
        "source range 10.0.0.0/8 for rev_nat_id 77 belongs to no frontend",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert_eq!(snap.inconsistencies.len(), 7, "{text}");
    let s = &snap.services[0];
    assert_eq!(s.backends[0].state, "terminating");
    assert_eq!(s.local_count, None);
    // Ranges are listed even when the flag is off.
    assert_eq!(s.source_ranges.len(), 2);
    assert!(render_services(&snap).contains("(local: <missing>)"));

    // SCOPE_LOCAL entries of a frontend without the flag, and the flag without ranges.
    let mut raw = lb_sample();
    raw.src_ranges.clear();
    for (k, v) in &mut raw.services {
        if k.slot == 0 && k.scope == SCOPE_ALL {
            v.flags &= !SVC_F_LOCAL;
        }
    }
    let text = decode(&raw, 110 * S).inconsistencies.join("\n");
    assert!(
        text.contains("has SCOPE_LOCAL entries but not the policy-local flag"),
        "{text}"
    );
    assert!(
        text.contains("source-ranges flag without SVC4_SRC_RANGE entries"),
        "{text}"
    );
}

#[test]
fn reply_entries_without_revnat_are_reported_while_live() {
    let mut raw = sample();
    raw.revnats.retain(|(id, _)| *id != 1);
    let snap = decode(&raw, 112 * S);
    let reply = snap.conntrack.iter().find(|e| e.kind == "reply").unwrap();
    assert_eq!(reply.translated_src, None);
    let text = snap.inconsistencies.join("\n");
    assert!(
        text.contains("conntrack reply 10.244.1.11:8080 -> 10.244.1.20:40000/TCP: rev_nat_id 1 has no SVC4_REVNAT entry"),
        "{text}"
    );
    assert!(render_conntrack(&snap).contains("src -> ?"));
    // Expired entries are left alone.
    let snap = decode(&raw, 112 * S + 30_000 * S);
    assert!(!snap.inconsistencies.join("\n").contains("conntrack reply"));
}

#[test]
fn broken_maps_are_reported_not_fatal() {
    let mut raw = sample();
    raw.services.push((svc([10, 96, 0, 11], 80, 1), slot(3, 2))); // beyond count 0
    raw.services.push((svc([10, 96, 0, 12], 80, 1), slot(3, 3))); // no frontend
    raw.services
        .retain(|(k, _)| !(k.vip_be == ip([10, 96, 0, 10]) && k.slot == 2));
    raw.services
        .push((svc([10, 96, 0, 13], 80, 0), front(1, 9)));
    raw.services
        .push((svc([10, 96, 0, 13], 80, 1), slot(42, 9)));
    let snap = decode(&raw, 0);
    let text = snap.inconsistencies.join("\n");
    assert!(
        text.contains("10.96.0.10:80/TCP: slot 2 of 2 is missing"),
        "{text}"
    );
    assert!(
        text.contains("10.96.0.11:80/TCP: slot 1 (backend 3) is beyond count 0"),
        "{text}"
    );
    assert!(
        text.contains("10.96.0.12:80/TCP: slot 1 (backend 3) has no frontend entry"),
        "{text}"
    );
    assert!(
        text.contains("10.96.0.13:80/TCP: slot 1 points at backend 42"),
        "{text}"
    );
    assert!(
        text.contains("10.96.0.13:80/TCP: rev_nat_id 9 has no SVC4_REVNAT entry"),
        "{text}"
    );
    assert_eq!(snap.services[0].backends.len(), 1);
    assert!(render_services(&snap).contains("INCONSISTENCIES (5)"));
}

#[test]
fn names_of_no_frontend_or_another_kind_are_reported() {
    let mut raw = sample();
    raw.names.push((
        2,
        SvcName::new(
            "default",
            "empty",
            "",
            FrontendKind::NodePort.raw(),
            NAME_SERVED,
        ),
    ));
    raw.names.push((
        9,
        SvcName::new(
            "default",
            "gone",
            "",
            FrontendKind::ClusterIp.raw(),
            NAME_SERVED,
        ),
    ));
    raw.names.push((
        NAME_KEY_UNSERVED + 2,
        SvcName::new("default", "odd", "", NAME_KIND_NONE, 77),
    ));
    let snap = decode(&raw, 112 * S);
    assert_eq!(
        snap.inconsistencies,
        vec![
            "10.96.0.11:80/TCP: SVC_NAMES entry 2 (default/empty) is for kind nodeport, not clusterip",
            "SVC_NAMES entry 9 (default/gone) belongs to no frontend",
        ]
    );
    assert_eq!(snap.unserved[2].reason, "unknown(77)");
    assert_eq!(
        snap.services[1].service.as_ref().unwrap().to_string(),
        "default/empty"
    );
}
