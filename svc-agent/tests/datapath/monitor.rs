//! svcctl monitor's events (svc-ebpf/src/monitor.rs): with SVC_MONITOR on, a drop, a
//! translation and its reply each put one event in SVC_EVENTS, with the Service, both
//! tuples and the backend; with it off, expired, or the verdict not asked for, none; drops
//! are reported whatever the sampling, translations 1 in N. On node 1's datapath.
use std::collections::BTreeSet;

use svc_agent::dataplane::monotonic_ns;
use svc_agent::monitor::{self, Names, Record};
use svc_agent::packet::{ACK, SYN};
use svc_common::{MonitorControl, Verdict};

use crate::services::{self, REMOTE_BE};
use crate::support::*;

fn control(sample: u32, verdicts: &[&str], until_ns: u64) -> MonitorControl {
    let words: Vec<String> = verdicts.iter().map(|s| s.to_string()).collect();
    MonitorControl {
        until_ns,
        sample,
        verdict_mask: monitor::verdict_mask(&monitor::parse_verdicts(&words).unwrap()),
        ..Default::default()
    }
}

fn on(h: &mut Harness, sample: u32, verdicts: &[&str]) {
    let c = control(sample, verdicts, monotonic_ns() + 60_000_000_000);
    h.maps.set_monitor_control(&c).unwrap();
}

/// Every event in the ring, resolved with the maps' names.
fn drain(h: &mut Harness) -> Vec<Record> {
    let mut events = Vec::new();
    for _ in 0..100_000 {
        let Some(item) = h.maps.events.next() else {
            break;
        };
        events.push(monitor::decode(&item).expect("a MonitorEvent"));
    }
    let mut names = Names::default();
    names.read(&h.maps).unwrap();
    events
        .iter()
        .map(|ev| {
            let ids = monitor::lookup_ids(&h.maps, ev);
            monitor::resolve(ev, ids, &names, "node1", 0).expect("a known verdict")
        })
        .collect()
}

fn service(r: &Record) -> Option<&str> {
    r.service.as_ref().map(|s| s.name.as_str())
}

#[test]
fn events_for_drops_and_translations_only_while_on() {
    use Prog::{Tc, Xdp};
    let mut h = services::node1("monitor");
    let n = node;

    // Off (as loaded): nothing reported.
    h.expect(
        "tc: pod -> ClusterIP (remote backend): DNAT, monitor off",
        Tc,
        &segment("10.244.1.20:41000", "10.96.0.12:80", SYN, 1),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    h.expect(
        "tc: pod -> ClusterIP (ITP Local, none local): DROP, monitor off",
        Tc,
        &segment("10.244.1.20:41001", "10.96.0.13:80", SYN, 1),
        TC_ACT_SHOT,
        Verdict::DropNoLocalBackend,
    );
    assert_eq!(drain(&mut h), vec![], "events while off");

    // On: one event per packet.
    on(&mut h, 1, &[]);
    h.expect(
        "tc: pod -> ClusterIP (ITP Local, none local): DROP",
        Tc,
        &segment("10.244.1.20:41002", "10.96.0.13:80", SYN, 1),
        TC_ACT_SHOT,
        Verdict::DropNoLocalBackend,
    );
    let ev = drain(&mut h);
    assert_eq!(ev.len(), 1, "{ev:?}");
    let drop = &ev[0];
    assert_eq!(drop.verdict, "drop_no_local_backend");
    assert_eq!(service(drop), Some("itp-none"));
    assert_eq!(drop.hook, "tc");
    assert_eq!(drop.protocol, "TCP");
    assert_eq!(drop.before.src.to_string(), "10.244.1.20:41002");
    assert_eq!(drop.before.dst.to_string(), "10.96.0.13:80");
    assert_eq!(drop.after, drop.before);
    assert_eq!(drop.backend, None);
    assert!(drop.time_ns > 0 && drop.time_ns <= monotonic_ns());

    h.expect(
        "tc: pod -> ClusterIP (remote backend): DNAT",
        Tc,
        &segment("10.244.1.20:41003", "10.96.0.12:80", SYN, 1),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    h.expect(
        "tc: its SYN-ACK from the backend: reverse NAT",
        Tc,
        &synack(REMOTE_BE, "10.244.1.20:41003", 500, 2),
        TC_ACT_OK,
        Verdict::RevNat,
    );
    h.expect(
        "tc: its ACK: DNAT established",
        Tc,
        &segment("10.244.1.20:41003", "10.96.0.12:80", ACK, 2),
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    let ev = drain(&mut h);
    let verdicts: Vec<&str> = ev.iter().map(|r| r.verdict.as_str()).collect();
    assert_eq!(
        verdicts,
        ["dnat_new", "rev_nat", "dnat_established"],
        "{ev:?}"
    );
    for r in &ev {
        assert_eq!(service(r), Some("remote"), "{r:?}");
        let b = r.backend.as_ref().expect("a backend");
        assert_eq!(b.addr.map(|a| a.to_string()).as_deref(), Some(REMOTE_BE));
    }
    assert_eq!(ev[0].before.dst.to_string(), "10.96.0.12:80");
    assert_eq!(ev[0].after.dst.to_string(), REMOTE_BE);
    assert_eq!(ev[0].after.src, ev[0].before.src);
    assert_eq!(ev[1].before.src.to_string(), REMOTE_BE);
    assert_eq!(ev[1].after.src.to_string(), "10.96.0.12:80");
    assert_eq!(ev[1].after.dst.to_string(), "10.244.1.20:41003");

    // XDP reports what it decides itself; what it hands to TC or passes, TC reports.
    h.expect(
        "xdp: outside -> NodePort (Local, no local endpoint): DROP",
        Xdp,
        &segment("192.0.2.100:51000", &n(30002), SYN, 1),
        XDP_DROP,
        Verdict::DropNoLocalBackend,
    );
    h.expect(
        "xdp: outside -> 192.0.2.1:22 (no Service): pass, not reported",
        Xdp,
        &segment("192.0.2.100:51001", &n(22), SYN, 1),
        XDP_PASS,
        Verdict::PassNotService,
    );
    let ev = drain(&mut h);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].hook, "xdp");
    assert_eq!(ev[0].verdict, "drop_no_local_backend");
    assert_eq!(ev[0].before.dst.to_string(), n(30002));

    // Only the verdicts asked for.
    on(&mut h, 1, &["drop"]);
    h.expect(
        "tc: DNAT, drops only",
        Tc,
        &segment("10.244.1.20:41004", "10.96.0.12:80", SYN, 1),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    h.expect(
        "tc: DROP, drops only",
        Tc,
        &segment("10.244.1.20:41005", "10.96.0.13:80", SYN, 1),
        TC_ACT_SHOT,
        Verdict::DropNoLocalBackend,
    );
    let ev = drain(&mut h);
    let verdicts: Vec<&str> = ev.iter().map(|r| r.verdict.as_str()).collect();
    assert_eq!(verdicts, ["drop_no_local_backend"]);

    // Expired (a killed svcctl monitor): nothing. A second ago: the programs' coarse
    // clock lags CLOCK_MONOTONIC by up to a tick.
    let c = control(1, &[], monotonic_ns() - 1_000_000_000);
    h.maps.set_monitor_control(&c).unwrap();
    h.expect(
        "tc: DROP, monitor expired",
        Tc,
        &segment("10.244.1.20:41006", "10.96.0.13:80", SYN, 1),
        TC_ACT_SHOT,
        Verdict::DropNoLocalBackend,
    );
    assert_eq!(drain(&mut h), vec![], "events after until_ns");
}

#[test]
fn translations_are_sampled_drops_never() {
    use Prog::Tc;
    let mut h = services::node1("monitor-sample");
    // 1 in 2^32 - 1: no translation is reported (a chance of 1 in 20 million here), every
    // drop is.
    on(&mut h, u32::MAX, &[]);
    for i in 0..5u16 {
        let client = format!("10.244.1.21:{}", 42000 + i);
        h.expect(
            "tc: DNAT, sampled away",
            Tc,
            &segment(&client, "10.96.0.12:80", SYN, 1),
            TC_ACT_OK,
            Verdict::DnatNew,
        );
        h.expect(
            "tc: DROP, always reported",
            Tc,
            &segment(&client, "10.96.0.13:80", SYN, 1),
            TC_ACT_SHOT,
            Verdict::DropNoLocalBackend,
        );
    }
    let ev = drain(&mut h);
    let kinds: BTreeSet<&str> = ev.iter().map(|r| r.verdict.as_str()).collect();
    assert_eq!(ev.len(), 5, "{ev:?}");
    assert_eq!(kinds, BTreeSet::from(["drop_no_local_backend"]));

    // 1 in 2: about half of 400 packets of one flow (binomial: 200 ± 10; bounds at 7 sigma).
    on(&mut h, 2, &["translate"]);
    let syn = segment("10.244.1.22:43000", "10.96.0.12:80", SYN, 1);
    for _ in 0..400 {
        let r = h.run(Tc, &syn);
        assert_eq!(r.ret, TC_ACT_OK);
    }
    let n = drain(&mut h).len();
    assert!(
        (130..=270).contains(&n),
        "{n} of 400 translations reported at 1 in 2"
    );
}
