use super::*;

fn v4(a: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(a), 0, 0, 0]
}

/// An IPv4 event: `src:sport -> dst:dport`, translated to `nat_src -> nat_dst`.
fn event(
    verdict: Verdict,
    (src, sport): ([u8; 4], u16),
    (dst, dport): ([u8; 4], u16),
    (nsrc, nsport): ([u8; 4], u16),
    (ndst, ndport): ([u8; 4], u16),
) -> MonitorEvent {
    MonitorEvent {
        time_ns: 1_000_000_000,
        verdict: verdict as u32,
        ifindex: 2,
        family: 4,
        protocol: 6,
        hook: MONITOR_HOOK_TC,
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        nat_sport_be: nsport.to_be(),
        nat_dport_be: ndport.to_be(),
        saddr: v4(src),
        daddr: v4(dst),
        nat_saddr: v4(nsrc),
        nat_daddr: v4(ndst),
        ..bytemuck::Zeroable::zeroed()
    }
}

/// The ids the maps would give `ev` (Service 7; backend 3 for a translation).
fn ids(ev: &MonitorEvent) -> Ids {
    let v = Verdict::from_raw(ev.verdict).unwrap_or(Verdict::DropMalformed);
    Ids {
        rev_nat_id: 7,
        backend_id: if v.is_drop_or_reject() { 0 } else { 3 },
    }
}

fn names() -> Names {
    let mut n = Names::default();
    n.services.insert(
        7,
        ServiceRef {
            namespace: "default".into(),
            name: "web".into(),
            port: "http".into(),
        },
    );
    n.backends.insert(3, "10.244.1.3:8080".parse().unwrap());
    n
}

// 1970-01-01T00:00:01Z is monotonic 1 s with offset 0; 12:00:01.123 with this offset.
const NOON: i128 = 12 * 3600 * 1_000_000_000 + 123_000_000;

#[test]
fn a_drop_is_one_line_with_its_reason_and_service() {
    let ev = event(
        Verdict::DropNoLocalBackend,
        ([10, 0, 0, 5], 40000),
        ([192, 0, 2, 10], 80),
        ([10, 0, 0, 5], 40000),
        ([192, 0, 2, 10], 80),
    );
    let r = resolve(&ev, ids(&ev), &names(), "node-a", NOON).unwrap();
    assert_eq!(r.kind, Kind::Drop);
    assert_eq!(r.time, "1970-01-01T12:00:01.123Z");
    assert_eq!(
        render_line(&r),
        "12:00:01.123 node-a DROP no_local_backend default/web:http TCP 10.0.0.5:40000 -> 192.0.2.10:80"
    );
    assert!(r.backend.is_none());
}

#[test]
fn a_translation_shows_what_changed() {
    let ev = event(
        Verdict::DnatNew,
        ([10, 0, 0, 5], 40000),
        ([10, 96, 0, 10], 80),
        ([10, 0, 0, 5], 40000),
        ([10, 244, 1, 3], 8080),
    );
    let r = resolve(&ev, ids(&ev), &names(), "node-a", NOON).unwrap();
    assert_eq!(
        render_line(&r),
        "12:00:01.123 node-a DNAT new default/web:http TCP 10.0.0.5:40000 -> 10.96.0.10:80 => 10.244.1.3:8080"
    );
    assert_eq!(
        r.backend,
        Some(BackendRef {
            id: 3,
            addr: Some("10.244.1.3:8080".parse().unwrap())
        })
    );
    // Masqueraded: both ends.
    let ev = event(
        Verdict::DnatNew,
        ([192, 0, 2, 100], 5555),
        ([192, 0, 2, 1], 30080),
        ([192, 0, 2, 1], 61000),
        ([10, 244, 1, 3], 8080),
    );
    let line = render_line(&resolve(&ev, ids(&ev), &names(), "n", NOON).unwrap());
    assert!(
        line.ends_with(
            "TCP 192.0.2.100:5555 -> 192.0.2.1:30080 => 192.0.2.1:61000 -> 10.244.1.3:8080"
        ),
        "{line}"
    );
    let ev = event(
        Verdict::RevNat,
        ([10, 244, 1, 3], 8080),
        ([10, 0, 0, 5], 40000),
        ([10, 96, 0, 10], 80),
        ([10, 0, 0, 5], 40000),
    );
    let line = render_line(&resolve(&ev, ids(&ev), &names(), "n", NOON).unwrap());
    assert!(line.contains(" REVNAT default/web:http TCP 10.244.1.3:8080 -> 10.0.0.5:40000 => 10.96.0.10:80 -> 10.0.0.5:40000"), "{line}");
}

#[test]
fn json_names_every_field() {
    let ev = event(
        Verdict::DnatNew,
        ([10, 0, 0, 5], 40000),
        ([10, 96, 0, 10], 80),
        ([10, 0, 0, 5], 40000),
        ([10, 244, 1, 3], 8080),
    );
    let r = resolve(&ev, ids(&ev), &names(), "node-a", NOON).unwrap();
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["kind"], "translate");
    assert_eq!(v["verdict"], "dnat_new");
    assert_eq!(v["service"]["name"], "web");
    assert_eq!(v["before"]["dst"], "10.96.0.10:80");
    assert_eq!(v["after"]["dst"], "10.244.1.3:8080");
    assert_eq!(v["backend"]["addr"], "10.244.1.3:8080");
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(v["hook"], "tc");
}

#[test]
fn unknown_service_and_no_service() {
    let mut ev = event(
        Verdict::DropUnallocated,
        ([10, 0, 0, 5], 1),
        ([10, 96, 0, 99], 80),
        ([10, 0, 0, 5], 1),
        ([10, 96, 0, 99], 80),
    );
    let none = Ids::default();
    let line = render_line(&resolve(&ev, none, &names(), "n", 0).unwrap());
    assert!(line.contains(" DROP unallocated - TCP "), "{line}");
    let unknown = Ids {
        rev_nat_id: 99,
        backend_id: 0,
    };
    let line = render_line(&resolve(&ev, unknown, &names(), "n", 0).unwrap());
    assert!(line.contains(" DROP unallocated rev-nat-99 TCP "), "{line}");
    ev.verdict = 1000;
    assert!(resolve(&ev, none, &names(), "n", 0).is_none());
}

#[test]
fn ipv6_addresses_print_in_brackets() {
    let a: std::net::Ipv6Addr = "fd00:10:96::10".parse().unwrap();
    let c: std::net::Ipv6Addr = "fd00:10:244:1::5".parse().unwrap();
    let ev = MonitorEvent {
        verdict: Verdict::RejectTcpRst as u32,
        family: 6,
        protocol: 6,
        sport_be: 40000u16.to_be(),
        dport_be: 80u16.to_be(),
        nat_sport_be: 40000u16.to_be(),
        nat_dport_be: 80u16.to_be(),
        saddr: svc_common::ip6_from_octets(c.octets()),
        daddr: svc_common::ip6_from_octets(a.octets()),
        nat_saddr: svc_common::ip6_from_octets(c.octets()),
        nat_daddr: svc_common::ip6_from_octets(a.octets()),
        ..bytemuck::Zeroable::zeroed()
    };
    let line = render_line(&resolve(&ev, Ids::default(), &Names::default(), "n", 0).unwrap());
    assert!(
        line.ends_with("REJECT tcp_rst - TCP [fd00:10:244:1::5]:40000 -> [fd00:10:96::10]:80"),
        "{line}"
    );
}

#[test]
fn decode_takes_exactly_one_event() {
    let ev = event(
        Verdict::DnatNew,
        ([1, 2, 3, 4], 1),
        ([5, 6, 7, 8], 2),
        ([1, 2, 3, 4], 1),
        ([9, 9, 9, 9], 3),
    );
    let bytes = bytemuck::bytes_of(&ev);
    assert_eq!(decode(bytes), Some(ev));
    assert_eq!(decode(&bytes[1..]), None);
}

#[test]
fn verdict_words_and_labels() {
    let all = parse_verdicts(&[]).unwrap();
    assert!(all.contains(&(Verdict::DnatNew as u32)));
    assert!(all.contains(&(Verdict::DropNoLocalBackend as u32)));
    assert!(!all.contains(&(Verdict::PassNotService as u32)));
    let drops = parse_verdicts(&["drop".into()]).unwrap();
    assert!(
        drops
            .iter()
            .all(|v| Verdict::from_raw(*v).unwrap().is_drop())
    );
    assert!(drops.contains(&(Verdict::DropUnallocated as u32)));
    let some = parse_verdicts(&["reject,dnat_new".into(), "rev_nat".into()]).unwrap();
    assert_eq!(
        some,
        BTreeSet::from([
            Verdict::RejectTcpRst as u32,
            Verdict::RejectIcmp as u32,
            Verdict::SockReject as u32,
            Verdict::SockNoBackend as u32,
            Verdict::DnatNew as u32,
            Verdict::RevNat as u32,
        ])
    );
    let translate = parse_verdicts(&["TRANSLATE".into()]).unwrap();
    assert!(translate.contains(&(Verdict::DnatEstablished as u32)));
    assert!(!translate.contains(&(Verdict::RejectIcmp as u32)));
    let e = parse_verdicts(&["pass_not_service".into()]).unwrap_err();
    assert!(e.contains("is a pass"), "{e}");
    let e = parse_verdicts(&["dorp".into()]).unwrap_err();
    assert!(e.contains("unknown verdict `dorp`"), "{e}");
    assert_eq!(
        verdict_mask(&BTreeSet::from([0, 5, 31])),
        1 | (1 << 5) | (1 << 31)
    );
}

#[test]
fn cidrs_and_addresses() {
    let c: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    assert!(!c.contains("::a00:1".parse().unwrap()));
    let one: Cidr = "192.0.2.1".parse().unwrap();
    assert_eq!(one.len, 32);
    assert!(one.contains("192.0.2.1".parse().unwrap()));
    assert!(!one.contains("192.0.2.2".parse().unwrap()));
    let six: Cidr = "fd00:10:244::/48".parse().unwrap();
    assert!(six.contains("fd00:10:244:1::5".parse().unwrap()));
    assert!(!six.contains("fd00:10:245::5".parse().unwrap()));
    let any: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(any.contains("8.8.8.8".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("web".parse::<Cidr>().is_err());
    assert!("[fd00::1]".parse::<Cidr>().is_ok());
}

#[test]
fn filters() {
    let ev = |v, s, d, ns, nd| {
        let e = event(v, s, d, ns, nd);
        resolve(&e, ids(&e), &names(), "n", 0).unwrap()
    };
    let drop = ev(
        Verdict::DropNoLocalBackend,
        ([10, 0, 0, 5], 40000),
        ([192, 0, 2, 10], 80),
        ([10, 0, 0, 5], 40000),
        ([192, 0, 2, 10], 80),
    );
    let dnat = ev(
        Verdict::DnatNew,
        ([10, 0, 0, 6], 40000),
        ([10, 96, 0, 10], 80),
        ([10, 0, 0, 6], 40000),
        ([10, 244, 1, 3], 8080),
    );
    let all = Filter::default();
    assert!(all.matches(&drop) && all.matches(&dnat));
    let drops = Filter {
        verdicts: parse_verdicts(&["drop".into()]).unwrap(),
        ..Default::default()
    };
    assert!(drops.matches(&drop) && !drops.matches(&dnat));
    let ns = Filter {
        namespace: Some("default".into()),
        service: Some("web".into()),
        ..Default::default()
    };
    assert!(ns.matches(&drop));
    let other = Filter {
        namespace: Some("shop".into()),
        ..Default::default()
    };
    assert!(!other.matches(&drop));
    let from = Filter {
        from: vec!["10.0.0.6".parse().unwrap()],
        ..Default::default()
    };
    assert!(!from.matches(&drop) && from.matches(&dnat));
    // --to matches the destination before or after the translation.
    let to_backend = Filter {
        to: vec!["10.244.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    assert!(!to_backend.matches(&drop) && to_backend.matches(&dnat));
    let to_vip = Filter {
        to: vec!["10.96.0.10".parse().unwrap()],
        ..Default::default()
    };
    assert!(to_vip.matches(&dnat));
    let mut anon = drop.clone();
    anon.service = None;
    assert!(!ns.matches(&anon));
}
