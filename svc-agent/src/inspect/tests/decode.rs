//! Decoding the maps into the snapshot and its documents; filters; rates.
use super::*;
use crate::dataplane::layout;

#[test]
fn decodes_a_service_entry() {
    let [_, (k, v)] = flow();
    let e = decode_ct(&k, &v, 112 * S + 5, None);
    assert_eq!(e.kind, "service");
    assert_eq!(e.protocol, "TCP");
    assert_eq!(e.src.to_string(), "10.244.1.20:40000");
    assert_eq!(e.dst.to_string(), "10.96.0.10:80");
    assert_eq!(e.translated_dst.unwrap().to_string(), "10.244.1.11:8080");
    assert_eq!(e.translated_src, None);
    assert_eq!((e.age_secs, e.idle_secs), (12, 1));
    assert_eq!(e.flags, vec!["replied"]);
    assert_eq!(e.timeout_secs, 21_600);
    assert!(!e.expired);
}

#[test]
fn decodes_a_reply_entry_with_the_service_address_from_revnat() {
    let [(k, v), _] = flow();
    let rev = revnat([10, 96, 0, 10], 80);
    let e = decode_ct(&k, &v, 112 * S, Some(layout::revnat_endpoint(&rev)));
    assert_eq!(e.kind, "reply");
    assert_eq!(
        format!("{} -> {}", e.src, e.dst),
        "10.244.1.11:8080 -> 10.244.1.20:40000"
    );
    assert_eq!(e.translated_src.unwrap().to_string(), "10.96.0.10:80");
    // Not masqueraded: the destination already is the client.
    assert_eq!(e.translated_dst, None);
    // Without the rev-NAT entry the service address is unknown.
    assert_eq!(decode_ct(&k, &v, 112 * S, None).translated_src, None);
}

#[test]
fn decodes_masqueraded_entries() {
    let [(rk, rv), (fk, fv)] = snat_flow();
    let fwd = decode_ct(&fk, &fv, 112 * S, None);
    assert_eq!(
        format!("{} -> {}", fwd.src, fwd.dst),
        "198.51.100.7:50000 -> 192.0.2.1:30080"
    );
    assert_eq!(fwd.translated_dst.unwrap().to_string(), "10.244.1.12:8080");
    assert_eq!(fwd.translated_src.unwrap().to_string(), "192.0.2.1:41000");
    assert_eq!(fwd.flags, vec!["replied", "snat"]);
    let rev = revnat([192, 0, 2, 1], 30080);
    let rep = decode_ct(&rk, &rv, 112 * S, Some(layout::revnat_endpoint(&rev)));
    assert_eq!(
        format!("{} -> {}", rep.src, rep.dst),
        "10.244.1.12:8080 -> 192.0.2.1:41000"
    );
    assert_eq!(rep.translated_src.unwrap().to_string(), "192.0.2.1:30080");
    assert_eq!(
        rep.translated_dst.unwrap().to_string(),
        "198.51.100.7:50000"
    );
}

#[test]
fn expiry_follows_the_datapath_timeouts() {
    let [_, (k, mut v)] = flow();
    v.flags = 0; // SYN only: 60s
    assert!(!decode_ct(&k, &v, v.last_seen_ns + 60 * S, None).expired);
    assert!(decode_ct(&k, &v, v.last_seen_ns + 60 * S + 1, None).expired);
    v.flags = CT_F_CLOSING | CT_F_REPLIED | 0x80;
    let e = decode_ct(&k, &v, v.last_seen_ns + 11 * S, None);
    assert!(e.expired);
    assert_eq!(e.flags, vec!["closing", "replied", "unknown(0x80)"]);
    // Timestamps after "now" (clock skew between reads) give 0, not an underflow.
    let e = decode_ct(&k, &v, 0, None);
    assert_eq!((e.age_secs, e.idle_secs, e.expired), (0, 0, false));
}

#[test]
fn flag_words_and_kinds() {
    assert_eq!(frontend_kind(0), "clusterip");
    assert_eq!(frontend_kind(SVC_F_EXTERNAL | SVC_F_NODEPORT), "nodeport");
    assert_eq!(
        frontend_kind(SVC_F_EXTERNAL | SVC_F_LOADBALANCER),
        "loadbalancer"
    );
    assert_eq!(
        frontend_kind(SVC_F_EXTERNAL | SVC_F_EXTERNAL_IP),
        "externalip"
    );
    assert_eq!(
        frontend_flag_labels(SVC_F_LOCAL | SVC_F_SOURCE_RANGES | SVC_F_AFFINITY | 0x8000),
        [
            "policy-local",
            "source-ranges",
            "affinity",
            "unknown(0x8000)"
        ]
    );
    assert!(frontend_flag_labels(0).is_empty());
    assert_eq!(ct_flag_labels(CT_F_SNAT), ["snat"]);
}

#[test]
fn decodes_services_sorted_with_backends_in_slot_order() {
    let snap = decode(&sample(), 112 * S);
    assert!(
        snap.inconsistencies.is_empty(),
        "{:?}",
        snap.inconsistencies
    );
    let names: Vec<String> = snap
        .services
        .iter()
        .map(|s| format!("{}:{}", s.vip, s.port))
        .collect();
    assert_eq!(names, ["10.96.0.10:80", "10.96.0.11:80"]);
    let s = &snap.services[0];
    assert_eq!(
        s.backends
            .iter()
            .map(|b| (b.slot, b.backend_id))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    assert_eq!(s.backends[0].addr, Ipv4Addr::new(10, 244, 1, 11));
    assert!(!s.rejects);
    assert_eq!(s.kind, "clusterip");
    assert!(s.flags.is_empty() && s.local_backends.is_empty());
    assert_eq!((s.local_count, s.affinity_timeout_secs), (None, None));
    let empty = &snap.services[1];
    assert!(empty.rejects && empty.backends.is_empty() && empty.note.is_some());
    assert_eq!(
        snap.backends
            .iter()
            .map(|b| (b.id, b.frontends))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 1), (3, 0)]
    );
    assert_eq!(
        snap.conntrack
            .iter()
            .map(|e| e.kind.as_str())
            .collect::<Vec<_>>(),
        ["service", "reply"]
    );
    // The reply entry's service address comes from SVC4_REVNAT.
    assert_eq!(
        snap.conntrack[1].translated_src.unwrap().to_string(),
        "10.96.0.10:80"
    );
    assert_eq!(
        snap.stats[1],
        VerdictTotal {
            verdict: "dnat_new",
            total: 1
        }
    );
}

#[test]
fn decodes_scopes_flags_ranges_and_states() {
    let snap = decode(&lb_sample(), 110 * S);
    assert!(
        snap.inconsistencies.is_empty(),
        "{:?}",
        snap.inconsistencies
    );
    assert_eq!(
        snap.services.len(),
        1,
        "SCOPE_LOCAL slot 0 is not a frontend"
    );
    let s = &snap.services[0];
    assert_eq!(s.kind, "loadbalancer");
    assert_eq!(
        s.flags,
        [
            "external",
            "policy-local",
            "loadbalancer",
            "source-ranges",
            "affinity"
        ]
    );
    assert_eq!(s.affinity_timeout_secs, Some(10800));
    assert_eq!(s.source_ranges, ["198.51.100.7/32", "203.0.113.0/24"]);
    assert_eq!(s.backends.len(), 2);
    assert_eq!(s.local_count, Some(1));
    assert_eq!(
        s.local_backends
            .iter()
            .map(|b| (b.slot, b.backend_id, b.addr.to_string()))
            .collect::<Vec<_>>(),
        [(1, 2, "10.244.1.12".to_string())]
    );
    assert_eq!(s.note, None);
    assert_eq!(
        snap.backends
            .iter()
            .map(|b| (b.id, b.state.as_str(), b.frontends))
            .collect::<Vec<_>>(),
        [(1, "active", 1), (2, "active", 1), (3, "terminating", 0)]
    );
    // Affinity: the SCOPE_LOCAL entry still matches its slot; the other one's slot 2
    // holds backend 2, not 1.
    let a = &snap.affinity;
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].client, Ipv4Addr::new(198, 51, 100, 7));
    assert_eq!(a[0].service.unwrap().to_string(), "192.0.2.100:443");
    assert_eq!(a[0].backend.unwrap().to_string(), "10.244.1.12:8080");
    assert_eq!(
        (a[0].scope.as_str(), a[0].current, a[0].expired),
        ("local", true, false)
    );
    assert_eq!((a[0].idle_secs, a[0].timeout_secs), (10, Some(10800)));
    assert_eq!((a[1].scope.as_str(), a[1].current), ("all", false));
    assert!(decode(&lb_sample(), 100 * S + 10801 * S).affinity[0].expired);
}

#[test]
fn policy_local_without_local_endpoints_is_noted() {
    let mut raw = lb_sample();
    raw.services
        .retain(|(k, _)| !(k.scope == SCOPE_LOCAL && k.slot == 1));
    for (k, v) in &mut raw.services {
        if k.scope == SCOPE_LOCAL {
            v.count = 0;
        }
    }
    let snap = decode(&raw, 110 * S);
    assert!(
        snap.inconsistencies.is_empty(),
        "{:?}",
        snap.inconsistencies
    );
    let s = &snap.services[0];
    assert_eq!(s.local_count, Some(0));
    assert!(s.local_backends.is_empty());
    assert!(
        s.note
            .as_deref()
            .unwrap()
            .contains("no endpoint on this node"),
        "{:?}",
        s.note
    );
    assert!(render_services(&snap).contains("(local: none)"));
}

#[test]
fn json_field_names_are_stable() {
    let v = serde_json::to_value(decode(&sample(), 112 * S)).unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(
        v["services"][0]["service"],
        serde_json::json!({"namespace": "default", "name": "echo", "port_name": "http"})
    );
    assert_eq!(v["services"][1]["service"], serde_json::Value::Null);
    assert_eq!(
        v["unserved"],
        serde_json::json!([
            {"namespace": "default", "name": "db-alias", "reason": "externalname"},
            {"namespace": "default", "name": "headless", "reason": "headless"},
        ])
    );
    assert_eq!(v["services"][0]["vip"], "10.96.0.10");
    assert_eq!(v["services"][0]["kind"], "clusterip");
    assert_eq!(v["services"][0]["flags"], serde_json::json!([]));
    assert_eq!(v["services"][0]["flags_raw"], 0);
    assert_eq!(
        v["services"][0]["affinity_timeout_secs"],
        serde_json::Value::Null
    );
    assert_eq!(v["services"][0]["source_ranges"], serde_json::json!([]));
    assert_eq!(v["services"][0]["local_count"], serde_json::Value::Null);
    assert_eq!(v["services"][0]["local_backends"], serde_json::json!([]));
    assert_eq!(v["services"][0]["backends"][1]["addr"], "10.244.1.12");
    assert_eq!(v["services"][0]["backends"][1]["state"], "active");
    assert_eq!(v["services"][1]["backends"], serde_json::json!([]));
    assert_eq!(v["services"][1]["rejects"], true);
    assert_eq!(v["conntrack"][0]["translated_dst"]["port"], 8080);
    assert_eq!(v["conntrack"][0]["translated_src"], serde_json::Value::Null);
    assert_eq!(v["conntrack"][0]["age_secs"], 12);
    assert_eq!(v["conntrack"][1]["translated_src"]["addr"], "10.96.0.10");
    assert_eq!(v["conntrack"][1]["translated_dst"], serde_json::Value::Null);
    assert_eq!(v["affinity"], serde_json::json!([]));
    assert_eq!(v["stats"][0]["verdict"], "pass_not_ip");
    assert_eq!(v["backends"][2]["frontends"], 0);

    let mut raw = lb_sample();
    raw.conntrack = snat_flow().to_vec();
    let v = serde_json::to_value(decode(&raw, 110 * S)).unwrap();
    let s = &v["services"][0];
    assert_eq!(s["kind"], "loadbalancer");
    assert_eq!(s["flags_raw"], 0x3b);
    assert_eq!(s["affinity_timeout_secs"], 10800);
    assert_eq!(s["source_ranges"][1], "203.0.113.0/24");
    assert_eq!(s["local_count"], 1);
    assert_eq!(s["local_backends"][0]["addr"], "10.244.1.12");
    assert_eq!(v["backends"][2]["state"], "terminating");
    assert_eq!(v["conntrack"][0]["translated_src"]["port"], 41000);
    assert_eq!(
        v["conntrack"][0]["flags"],
        serde_json::json!(["replied", "snat"])
    );
    assert_eq!(v["affinity"][0]["client"], "198.51.100.7");
    assert_eq!(v["affinity"][0]["scope"], "local");
    assert_eq!(v["affinity"][0]["timeout_secs"], 10800);
}

#[test]
fn monotonic_clock_moves_forward() {
    let a = monotonic_now_ns();
    assert!(monotonic_now_ns() >= a && a > 0);
}

#[test]
fn filter_keeps_the_selected_services_and_their_flows() {
    let snap = decode(&sample(), 112 * S);
    let filtered = |namespace: Option<&str>, name: Option<&str>| {
        let mut s = snap.clone();
        Filter {
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
            ..Filter::default()
        }
        .apply(&mut s);
        s
    };
    assert_eq!(filtered(None, None), snap);
    let echo = filtered(Some("default"), Some("echo"));
    assert_eq!(echo.services.len(), 1);
    assert_eq!(echo.services[0].vip, Ipv4Addr::new(10, 96, 0, 10));
    assert!(echo.unserved.is_empty());
    assert_eq!(echo.conntrack.len(), 2, "the flow of rev_nat_id 1");
    assert_eq!(
        echo.backends.iter().map(|b| b.id).collect::<Vec<_>>(),
        [1, 2]
    );
    let by_name = filtered(None, Some("headless"));
    assert!(by_name.services.is_empty() && by_name.conntrack.is_empty());
    assert_eq!(by_name.unserved.len(), 1);
    let other_ns = filtered(Some("shop"), None);
    assert!(other_ns.services.is_empty() && other_ns.unserved.is_empty());
    assert_eq!(other_ns.stats, snap.stats, "stats are not filtered");
}
#[test]
fn backends_carry_their_references_scopes_and_live_flows() {
    let snap = decode(&sample(), 112 * S);
    let b = &snap.backends;
    assert_eq!(
        b.iter()
            .map(|b| (b.id, b.frontends, b.flows))
            .collect::<Vec<_>>(),
        [(1, 1, 1), (2, 1, 0), (3, 0, 0)]
    );
    let r = &b[0].references[0];
    assert_eq!(r.label(), "default/echo:http");
    assert_eq!(r.frontend(), "10.96.0.10:80/TCP");
    assert_eq!((r.kind, r.rev_nat_id), ("clusterip", 1));
    assert_eq!(r.scopes, ["all"]);

    // A LoadBalancer with policy Local: backend 2 is in both scopes; unnamed frontend.
    let snap = decode(&lb_sample(), 110 * S);
    let r = &snap.backends[1].references;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].scopes, ["all", "local"]);
    assert_eq!(r[0].service, None);
    assert_eq!(r[0].label(), "192.0.2.100:443/TCP");
    assert_eq!(r[0].kind, "loadbalancer");
    assert!(snap.backends[2].references.is_empty());

    // An expired flow, and a flow whose backend id now names another address, are not
    // live flows of that backend.
    let mut raw = sample();
    raw.backends[1].1.addr_be = ip([10, 244, 9, 9]); // id 1
    assert_eq!(decode(&raw, 112 * S).backends[0].flows, 0);
    assert_eq!(decode(&sample(), 30_000 * S).backends[0].flows, 0);
}

#[test]
fn conntrack_entries_carry_the_service_the_translated_tuple_and_the_backend() {
    let snap = decode(&sample(), 112 * S);
    let [fwd, rep] = [&snap.conntrack[0], &snap.conntrack[1]];
    for e in [fwd, rep] {
        assert_eq!(e.service.as_ref().unwrap().to_string(), "default/echo:http");
        assert_eq!(e.backend.to_string(), "10.244.1.11:8080");
    }
    assert_eq!(fwd.translated.src.unwrap().to_string(), "10.244.1.20:40000");
    assert_eq!(fwd.translated.dst.unwrap().to_string(), "10.244.1.11:8080");
    assert_eq!(rep.translated.src.unwrap().to_string(), "10.96.0.10:80");
    assert_eq!(rep.translated.dst.unwrap().to_string(), "10.244.1.20:40000");

    // Masqueraded: the forward source becomes the NAT address; the reply goes back to
    // the client. Without SVC4_REVNAT the reply's new source is unknown.
    let [(rk, rv), (fk, fv)] = snat_flow();
    let fwd = decode_ct(&fk, &fv, 112 * S, None);
    assert_eq!(fwd.service, None, "decode_ct leaves the name to decode");
    assert_eq!(fwd.translated.src.unwrap().to_string(), "192.0.2.1:41000");
    assert_eq!(fwd.translated.dst.unwrap().to_string(), "10.244.1.12:8080");
    let rep = decode_ct(&rk, &rv, 112 * S, None);
    assert_eq!(rep.translated.src, None);
    assert_eq!(
        rep.translated.dst.unwrap().to_string(),
        "198.51.100.7:50000"
    );
    assert_eq!(rep.backend.to_string(), "10.244.1.12:8080");
    // An unknown kind has no known translation.
    let mut k = fk;
    k.kind = 9;
    let e = decode_ct(&k, &fv, 112 * S, None);
    assert_eq!(
        e.translated,
        Tuple {
            src: None,
            dst: None
        }
    );
    assert_eq!(e.kind, "unknown(9)");
}

#[test]
fn section_documents_are_the_snapshot_fields_in_json_and_yaml() {
    let snap = decode(&sample(), 112 * S);
    let full = serde_json::to_value(&snap).unwrap();
    let docs = [
        (
            serde_json::to_value(snap.services_document()).unwrap(),
            &[
                "version",
                "services",
                "unserved",
                "service_cidrs",
                "problems",
                "inconsistencies",
            ][..],
        ),
        (
            serde_json::to_value(snap.backends_document()).unwrap(),
            &["version", "backends"][..],
        ),
        (
            serde_json::to_value(snap.conntrack_document()).unwrap(),
            &["version", "now_ns", "conntrack"][..],
        ),
        (
            serde_json::to_value(snap.affinity_document()).unwrap(),
            &["version", "now_ns", "affinity"][..],
        ),
        (
            serde_json::to_value(snap.stats_document()).unwrap(),
            &["version", "stats"][..],
        ),
    ];
    for (i, (doc, keys)) in docs.iter().enumerate() {
        let have: Vec<&String> = doc.as_object().unwrap().keys().collect();
        // The conntrack and affinity documents also count their hidden expired entries.
        let extra = usize::from(i == 2 || i == 3);
        assert_eq!(have.len(), keys.len() + extra, "{doc}");
        for key in *keys {
            assert_eq!(doc[key], full[key], "{key}");
        }
    }
    assert_eq!(
        docs[2].0["expired_hidden"],
        full["expired_hidden"]["conntrack"]
    );
    assert_eq!(
        docs[3].0["expired_hidden"],
        full["expired_hidden"]["affinity"]
    );
    assert_eq!(docs[0].0["version"], 3);
    // The new fields, by name.
    let b = &docs[1].0["backends"][0];
    assert_eq!(b["flows"], 1);
    assert_eq!(
        b["references"],
        serde_json::json!([{
            "service": {"namespace": "default", "name": "echo", "port_name": "http"},
            "vip": "10.96.0.10", "port": 80, "protocol": "TCP", "kind": "clusterip",
            "rev_nat_id": 1, "scopes": ["all"],
        }])
    );
    let e = &docs[2].0["conntrack"][0];
    assert_eq!(e["service"]["name"], "echo");
    assert_eq!(
        e["translated"],
        serde_json::json!({
            "src": {"addr": "10.244.1.20", "port": 40000},
            "dst": {"addr": "10.244.1.11", "port": 8080},
        })
    );
    assert_eq!(
        e["backend"],
        serde_json::json!({"addr": "10.244.1.11", "port": 8080})
    );
    // YAML is the same document.
    for doc in [
        serde_yaml::to_string(&snap).unwrap(),
        serde_yaml::to_string(&snap.backends_document()).unwrap(),
    ] {
        let back: serde_json::Value = serde_yaml::from_str(&doc).unwrap();
        assert!(back == full || back == docs[1].0, "{doc}");
    }
}

#[test]
fn rates_are_the_difference_over_the_interval() {
    let before = totals(&[("pass_not_ip", 10), ("dnat_new", 4), ("rev_nat", 9)]);
    let after = totals(&[
        ("pass_not_ip", 10),
        ("dnat_new", 10),
        ("rev_nat", 3),      // went down: the maps were recreated
        ("sock_rev_nat", 1), // not in the first reading
    ]);
    let doc = verdict_rates(&before, &after, 2.0);
    assert_eq!(doc.version, SCHEMA_VERSION);
    assert_eq!(doc.interval_s, 2.0);
    assert_eq!(
        doc.stats
            .iter()
            .map(|r| (r.verdict, r.packets, r.per_second))
            .collect::<Vec<_>>(),
        [
            ("pass_not_ip", 10, 0.0),
            ("dnat_new", 10, 3.0),
            ("rev_nat", 3, 0.0),
            ("sock_rev_nat", 1, 0.5),
        ]
    );
    assert_eq!(verdict_rates(&before, &after, 3.0).stats[1].per_second, 2.0);
    assert_eq!(verdict_rates(&before, &after, 0.0).stats[1].per_second, 0.0);
    assert_eq!(
        round3(verdict_rates(&before, &after, 0.7).stats[1].per_second),
        8.571
    );
    assert_eq!(
        serde_json::to_value(verdict_rates(&before, &after, 1.0)).unwrap()["stats"][1],
        serde_json::json!({"verdict": "dnat_new", "packets": 10, "per_second": 6.0})
    );
}

#[test]
fn filter_keeps_the_backends_of_the_selected_services_with_all_their_references() {
    let mut raw = sample();
    // A second named Service sharing backend 2, and backend 3 used by a flow of echo
    // only (terminating, in no slot).
    raw.services
        .push((svc([10, 96, 0, 12], 80, 0), front(1, 3)));
    raw.services.push((svc([10, 96, 0, 12], 80, 1), slot(2, 3)));
    raw.revnats.push((3, revnat([10, 96, 0, 12], 80)));
    raw.names.push((
        3,
        SvcName::new(
            "shop",
            "cart",
            "",
            FrontendKind::ClusterIp.raw(),
            NAME_SERVED,
        ),
    ));
    raw.backends[2].1.state = BACKEND_STATE_TERMINATING;
    let [_, (mut k, mut v)] = flow();
    k.sport_be = 40001u16.to_be();
    v.backend_id = 3;
    v.addr_be = ip([10, 244, 1, 13]);
    raw.conntrack.push((k, v));
    let mut snap = decode(&raw, 112 * S);
    assert_eq!(snap.backends[1].references.len(), 2);
    assert_eq!(snap.backends[2].flows, 1);
    Filter {
        namespace: Some("default".into()),
        name: Some("echo".into()),
        ..Filter::default()
    }
    .apply(&mut snap);
    assert_eq!(
        snap.backends.iter().map(|b| b.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let text = render_backends(&snap, Width::Normal);
    assert!(
        text.contains("default/echo:http, shop/cart"),
        "a backend keeps every reference: {text}"
    );
    assert!(
        text.contains("3   10.244.1.13:8080  TCP    terminating  1      -"),
        "{text}"
    );
    assert_eq!(snap.conntrack.len(), 3);
    assert!(
        snap.conntrack
            .iter()
            .all(|e| e.service.as_ref().unwrap().name == "echo")
    );
}

#[test]
fn expired_entries_are_hidden_and_counted_unless_asked_for() {
    // sample()'s live flow (rev 1, backend 1), plus a flow of the same Service to backend 3
    // that never got a reply and was last seen 102 s ago: past the 60 s of an unreplied
    // flow, so the datapath ignores it.
    let mut raw = sample();
    let [_, (mut k, mut v)] = flow();
    k.sport_be = 40001u16.to_be();
    v.backend_id = 3;
    v.addr_be = ip([10, 244, 1, 13]);
    v.flags = 0;
    v.last_seen_ns = 10 * S;
    raw.conntrack.push((k, v));
    let snap = decode(&raw, 112 * S);
    assert_eq!(snap.conntrack.iter().filter(|e| e.expired).count(), 1);
    assert_eq!(
        snap.expired_hidden,
        ExpiredHidden::default(),
        "decode hides nothing"
    );

    let shown = |filter: Filter| {
        let mut s = snap.clone();
        filter.apply(&mut s);
        s
    };
    // By default: only the live flow's two entries, and a count of the one left out.
    let live = shown(Filter::default());
    assert_eq!(live.conntrack.len(), 2);
    assert!(live.conntrack.iter().all(|e| !e.expired));
    assert_eq!(
        live.expired_hidden,
        ExpiredHidden {
            conntrack: 1,
            affinity: 0
        }
    );
    let table = render_conntrack(&live);
    assert!(
        table.starts_with(
            "CONNTRACK (2 entries; 1 expired not shown (--show-expired lists them))\n"
        ),
        "{table}"
    );
    assert!(!table.contains("10.244.1.20:40001"), "{table}");
    let doc = serde_json::to_value(live.conntrack_document()).unwrap();
    assert_eq!(doc["expired_hidden"], 1);
    assert_eq!(doc["conntrack"].as_array().unwrap().len(), 2);
    let full = serde_json::to_value(&live).unwrap();
    assert_eq!(
        full["expired_hidden"],
        serde_json::json!({"conntrack": 1, "affinity": 0})
    );

    // --show-expired: everything, flagged, nothing counted as hidden.
    let all = shown(Filter {
        show_expired: true,
        ..Filter::default()
    });
    assert_eq!(all.conntrack, snap.conntrack);
    assert_eq!(all.expired_hidden, ExpiredHidden::default());
    let table = render_conntrack(&all);
    assert!(table.starts_with("CONNTRACK (3 entries)\n"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("10.244.1.20:40001"))
        .unwrap_or_else(|| panic!("the expired flow is listed: {table}"));
    assert!(row.ends_with("expired"), "{row}");

    // With a Service selected, the count is of its entries, and a backend only the expired
    // flow remembers is not one it uses.
    let echo = |show_expired| {
        shown(Filter {
            namespace: Some("default".into()),
            name: Some("echo".into()),
            show_expired,
        })
    };
    assert_eq!(echo(false).expired_hidden.conntrack, 1);
    assert_eq!(
        echo(false)
            .backends
            .iter()
            .map(|b| b.id)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        echo(true).backends.iter().map(|b| b.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let other = shown(Filter {
        name: Some("nothing".into()),
        ..Filter::default()
    });
    assert_eq!(other.expired_hidden, ExpiredHidden::default());

    // Affinity: of lb_sample's two clients, one used 3 h ago (past the 10800 s timeout of
    // its frontend) and one 10 s ago.
    let mut raw = lb_sample();
    raw.affinity[1].1.last_used_ns = 10_890 * S;
    let snap = decode(&raw, 10_900 * S + 1);
    assert_eq!(snap.affinity.iter().filter(|a| a.expired).count(), 1);
    let mut live = snap.clone();
    Filter::default().apply(&mut live);
    assert_eq!(live.affinity.len(), 1);
    assert_eq!(live.affinity[0].client, Ipv4Addr::new(203, 0, 113, 9));
    assert_eq!(live.expired_hidden.affinity, 1);
    let table = render_affinity(&live);
    assert!(
        table
            .starts_with("AFFINITY (1 entries; 1 expired not shown (--show-expired lists them))\n"),
        "{table}"
    );
    assert_eq!(
        serde_json::to_value(live.affinity_document()).unwrap()["expired_hidden"],
        1
    );
    let mut all = snap.clone();
    Filter {
        show_expired: true,
        ..Filter::default()
    }
    .apply(&mut all);
    assert_eq!(all.affinity.len(), 2);
    assert!(render_affinity(&all).starts_with("AFFINITY (2 entries)\n"));
}
