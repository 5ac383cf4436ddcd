//! Per-Service counters (SVC_SVC_STATS): what each packet adds to its Service's entry, and
//! that nothing moves for a packet that is not to or from a Service. A translation and a
//! new flow, a retransmitted first packet (established), a reply, a reject (no endpoints)
//! and a policy-Local drop, by TC; XDP's translation counted once (its output carries the
//! mark that keeps TC from counting it again), its reject left to TC.
use std::collections::BTreeMap;

use svc_agent::dataplane::MapStore as _;
use svc_agent::packet::SYN;
use svc_common::{PROTO_TCP, PROTO_UDP, SCOPE_ALL, ServiceDrop, ServiceStats, Verdict};

use crate::services;
use crate::support::*;

/// The rev_nat_id of the frontend `vip:port` / `proto` (its slot-0 entry of scope all).
fn rev_nat_id(h: &Harness, frontend: &str, proto: u8) -> u32 {
    let fe = sa(frontend);
    h.maps
        .read_services()
        .expect("reading SVC4_SERVICES")
        .into_iter()
        .find(|(k, _)| {
            k.vip_be == u32::from(*fe.ip()).to_be()
                && k.port_be == fe.port().to_be()
                && k.proto == proto
                && k.slot == 0
                && k.scope == SCOPE_ALL
        })
        .unwrap_or_else(|| panic!("no frontend {frontend}/{proto}"))
        .1
        .rev_nat_id
}

fn counters(h: &Harness) -> BTreeMap<u32, ServiceStats> {
    h.maps
        .service_stats_totals()
        .expect("reading SVC_SVC_STATS")
        .into_iter()
        .collect()
}

/// Runs one case and returns what changed in the per-Service counters: (rev_nat_id, the
/// entry after) for each entry that changed.
fn step(
    h: &mut Harness,
    name: &str,
    prog: Prog,
    input: &[u8],
    ret: u32,
    verdict: Verdict,
) -> (Vec<u8>, Vec<(u32, ServiceStats)>) {
    let before = counters(h);
    let out = h.expect(name, prog, input, ret, verdict);
    let after = counters(h);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "case {name:?}: the programs never add or remove counter entries"
    );
    let changed = after
        .into_iter()
        .filter(|(id, s)| before.get(id) != Some(s))
        .collect();
    (out, changed)
}

fn stats(f: impl FnOnce(&mut ServiceStats)) -> ServiceStats {
    let mut s = ServiceStats::default();
    f(&mut s);
    s
}

#[test]
fn service_counters_follow_each_packet() {
    let mut h = services::single_node("svcstats");
    let one = rev_nat_id(&h, "10.96.0.10:80", PROTO_TCP);
    let empty_tcp = rev_nat_id(&h, "10.96.0.11:80", PROTO_TCP);
    let empty_udp = rev_nat_id(&h, "10.96.0.11:80", PROTO_UDP);
    // The agent made one zeroed entry per frontend.
    let all = counters(&h);
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(
        all.values().all(|s| *s == ServiceStats::default()),
        "{all:?}"
    );

    let syn = segment("10.244.1.20:40000", "10.96.0.10:80", SYN, 1);
    let len = syn.len() as u64;
    let (_, changed) = step(
        &mut h,
        "new flow",
        Prog::Tc,
        &syn,
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    let want = stats(|s| {
        s.packets = 1;
        s.bytes = len;
        s.new_flows = 1;
    });
    assert_eq!(changed, vec![(one, want)]);

    let (_, changed) = step(
        &mut h,
        "the SYN again: the same flow",
        Prog::Tc,
        &syn,
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    let want = stats(|s| {
        s.packets = 2;
        s.bytes = 2 * len;
        s.new_flows = 1;
    });
    assert_eq!(changed, vec![(one, want)]);

    let reply = synack(services::LOCAL_BE, "10.244.1.20:40000", 7, 2);
    let (_, changed) = step(
        &mut h,
        "reply",
        Prog::Tc,
        &reply,
        TC_ACT_OK,
        Verdict::RevNat,
    );
    let want = stats(|s| {
        s.packets = 2;
        s.bytes = 2 * len;
        s.new_flows = 1;
        s.reply_packets = 1;
        s.reply_bytes = reply.len() as u64;
    });
    assert_eq!(changed, vec![(one, want)]);

    let no_endpoints = |s: &mut ServiceStats| s.drops[ServiceDrop::NoEndpoints.raw() as usize] = 1;
    let rst = segment("10.244.1.20:40001", "10.96.0.11:80", SYN, 1);
    let (_, changed) = step(
        &mut h,
        "TCP to a Service without endpoints",
        Prog::Tc,
        &rst,
        TC_ACT_REDIRECT,
        Verdict::RejectTcpRst,
    );
    assert_eq!(changed, vec![(empty_tcp, stats(no_endpoints))]);
    let dgram = datagram("10.244.1.20:40002", "10.96.0.11:80", b"x", false);
    let (_, changed) = step(
        &mut h,
        "UDP to a Service without endpoints",
        Prog::Tc,
        &dgram,
        TC_ACT_REDIRECT,
        Verdict::RejectIcmp,
    );
    assert_eq!(changed, vec![(empty_udp, stats(no_endpoints))]);

    // Not to or from a Service: nothing moves (no lookup either: rev_nat_id 0).
    for (name, frame) in [
        (
            "pod to pod",
            segment("10.244.1.20:40003", services::LOCAL_BE, SYN, 1),
        ),
        (
            "to an address no Service has",
            segment("10.244.1.20:40004", "198.51.100.7:80", SYN, 1),
        ),
    ] {
        let (_, changed) = step(
            &mut h,
            name,
            Prog::Tc,
            &frame,
            TC_ACT_OK,
            Verdict::PassNotService,
        );
        assert_eq!(changed, vec![], "case {name:?}");
    }

    // XDP: a new flow from outside, translated and counted by XDP, marked for TC.
    let outside = segment("192.0.2.100:50000", "10.96.0.10:80", SYN, 1);
    let (out, changed) = step(
        &mut h,
        "xdp: new flow",
        Prog::Xdp,
        &outside,
        XDP_PASS,
        Verdict::DnatNew,
    );
    let want = stats(|s| {
        s.packets = 3;
        s.bytes = 2 * len + outside.len() as u64;
        s.new_flows = 2;
        s.reply_packets = 1;
        s.reply_bytes = reply.len() as u64;
    });
    assert_eq!(changed, vec![(one, want)]);
    // TC on the translated frame (the test run cannot hand it the metadata): no Service
    // in it any more, so its per-Service counters do not move. (That TC also skips
    // SVC_STATS for the marked packet is shown end to end: tests/tests/service_stats.rs.)
    let (_, changed) = step(
        &mut h,
        "tc after xdp: the translated frame",
        Prog::Tc,
        &out,
        TC_ACT_OK,
        Verdict::PassNotService,
    );
    assert_eq!(changed, vec![]);

    // XDP hands a reject to TC untouched and counts nothing; TC rejects and counts it.
    let outside_rst = segment("192.0.2.100:50001", "10.96.0.11:80", SYN, 1);
    let (out, changed) = step(
        &mut h,
        "xdp: to a Service without endpoints, left to TC",
        Prog::Xdp,
        &outside_rst,
        XDP_PASS,
        Verdict::XdpPassToTc,
    );
    assert_eq!(out, outside_rst);
    assert_eq!(changed, vec![]);
    let (_, changed) = step(
        &mut h,
        "tc: the reject",
        Prog::Tc,
        &outside_rst,
        TC_ACT_REDIRECT,
        Verdict::RejectTcpRst,
    );
    let twice = stats(|s| s.drops[ServiceDrop::NoEndpoints.raw() as usize] = 2);
    assert_eq!(changed, vec![(empty_tcp, twice)]);
}

/// A drop by reason other than a reject: internalTrafficPolicy Local without a local
/// endpoint, by TC and by XDP (each counts its own packet once).
#[test]
fn service_counters_count_drops_by_reason() {
    let mut h = services::node1("svcstats-drop");
    let itp_none = rev_nat_id(&h, "10.96.0.13:80", PROTO_TCP);
    let drop = |n| stats(|s| s.drops[ServiceDrop::NoLocalBackend.raw() as usize] = n);
    let frame = segment("10.244.1.20:40030", "10.96.0.13:80", SYN, 1);
    let (_, changed) = step(
        &mut h,
        "policy Local, no local endpoint",
        Prog::Tc,
        &frame,
        TC_ACT_SHOT,
        Verdict::DropNoLocalBackend,
    );
    assert_eq!(changed, vec![(itp_none, drop(1))]);
    let frame = segment("192.0.2.100:50030", "10.96.0.13:80", SYN, 1);
    let (_, changed) = step(
        &mut h,
        "xdp: policy Local, no local endpoint",
        Prog::Xdp,
        &frame,
        XDP_DROP,
        Verdict::DropNoLocalBackend,
    );
    assert_eq!(changed, vec![(itp_none, drop(2))]);
}
