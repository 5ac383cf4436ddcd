//! svcctl's views, tested on hand-made map contents: decoding, the consistency checks and
//! the tables. The fixtures are shared here.
use std::net::Ipv4Addr;

use svc_common::{
    Affinity4Key, Affinity4Value, BACKEND_STATE_ACTIVE, BACKEND_STATE_TERMINATING, Backend4,
    CT_F_CLOSING, CT_F_REPLIED, CT_F_SNAT, CT_KIND_REPLY, CT_KIND_SERVICE, Ct4Key, Ct4Value,
    FrontendKind, NAME_KEY_UNSERVED, NAME_KIND_NONE, NAME_SERVED, PROTO_TCP, RevNat4, SCOPE_ALL,
    SCOPE_LOCAL, SRC_RANGE_PREFIX_BASE, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_EXTERNAL_IP,
    SVC_F_LOADBALANCER, SVC_F_LOCAL, SVC_F_NODEPORT, SVC_F_SOURCE_RANGES, Svc4Key, Svc4Value,
    SvcName, UnservedReason, Verdict,
};

use super::*;
use crate::dataplane::RawMaps;
use crate::dataplane::layout::{SrcRangeKey, ct_flag_labels, frontend_flag_labels};

mod consistency;
mod decode;
mod ipv6;
mod render;

const NS_PER_SEC: u64 = 1_000_000_000;

/// The kind label of a frontend's flags.
fn frontend_kind(flags: u16) -> &'static str {
    FrontendKind::of_flags(flags).label()
}

fn ip(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a)).to_be()
}
fn scoped(vip: [u8; 4], port: u16, scope: u8, slot: u16) -> Svc4Key {
    Svc4Key {
        vip_be: ip(vip),
        port_be: port.to_be(),
        slot,
        proto: PROTO_TCP,
        scope,
        _pad: [0; 2],
    }
}
fn svc(vip: [u8; 4], port: u16, slot: u16) -> Svc4Key {
    scoped(vip, port, SCOPE_ALL, slot)
}
fn backend(last: u8) -> Backend4 {
    Backend4 {
        addr_be: ip([10, 244, 1, last]),
        port_be: 8080u16.to_be(),
        proto: PROTO_TCP,
        state: BACKEND_STATE_ACTIVE,
    }
}
fn front(count: u16, rev: u32) -> Svc4Value {
    Svc4Value {
        backend_id: 0,
        count,
        rev_nat_id: rev,
        flags: 0,
    }
}
fn front_flags(count: u16, rev: u32, flags: u16, timeout: u32) -> Svc4Value {
    Svc4Value {
        backend_id: timeout,
        flags,
        ..front(count, rev)
    }
}
fn slot(id: u32, rev: u32) -> Svc4Value {
    Svc4Value {
        backend_id: id,
        count: 0,
        rev_nat_id: rev,
        flags: 0,
    }
}
fn revnat(vip: [u8; 4], port: u16) -> RevNat4 {
    RevNat4 {
        vip_be: ip(vip),
        port_be: port.to_be(),
        _pad: [0; 2],
    }
}
fn src_range(rev: u32, addr: [u8; 4], len: u32) -> SrcRangeKey {
    (
        SRC_RANGE_PREFIX_BASE + len,
        svc_common::SrcRange4 {
            rev_nat_id: rev,
            addr_be: ip(addr),
        },
    )
}

const S: u64 = NS_PER_SEC;

fn ct_key(src: ([u8; 4], u16), dst: ([u8; 4], u16), kind: u8) -> Ct4Key {
    Ct4Key {
        saddr_be: ip(src.0),
        daddr_be: ip(dst.0),
        sport_be: src.1.to_be(),
        dport_be: dst.1.to_be(),
        proto: PROTO_TCP,
        kind,
        _pad: [0; 2],
    }
}

/// A pod-to-ClusterIP flow, not masqueraded: [reply, service].
fn flow() -> [(Ct4Key, Ct4Value); 2] {
    let fwd = Ct4Value {
        created_ns: 100 * S,
        last_seen_ns: 111 * S,
        backend_id: 1,
        addr_be: ip([10, 244, 1, 11]),
        port_be: 8080u16.to_be(),
        rev_nat_id: 1,
        flags: CT_F_REPLIED,
        ..Default::default()
    };
    let fwd_key = ct_key(
        ([10, 244, 1, 20], 40000),
        ([10, 96, 0, 10], 80),
        CT_KIND_SERVICE,
    );
    let rep_key = ct_key(
        ([10, 244, 1, 11], 8080),
        ([10, 244, 1, 20], 40000),
        CT_KIND_REPLY,
    );
    // Reply entries hold the original client.
    let rep = Ct4Value {
        addr_be: ip([10, 244, 1, 20]),
        port_be: 40000u16.to_be(),
        ..fwd
    };
    [(rep_key, rep), (fwd_key, fwd)]
}

/// An outside client to a NodePort, masqueraded to 192.0.2.1:41000: [reply, service].
fn snat_flow() -> [(Ct4Key, Ct4Value); 2] {
    let fwd = Ct4Value {
        created_ns: 100 * S,
        last_seen_ns: 111 * S,
        backend_id: 2,
        addr_be: ip([10, 244, 1, 12]),
        port_be: 8080u16.to_be(),
        rev_nat_id: 3,
        flags: CT_F_REPLIED | CT_F_SNAT,
        nat_addr_be: ip([192, 0, 2, 1]),
        nat_port_be: 41000u16.to_be(),
        ..Default::default()
    };
    let fwd_key = ct_key(
        ([198, 51, 100, 7], 50000),
        ([192, 0, 2, 1], 30080),
        CT_KIND_SERVICE,
    );
    let rep_key = ct_key(
        ([10, 244, 1, 12], 8080),
        ([192, 0, 2, 1], 41000),
        CT_KIND_REPLY,
    );
    let rep = Ct4Value {
        addr_be: ip([198, 51, 100, 7]),
        port_be: 50000u16.to_be(),
        ..fwd
    };
    [(rep_key, rep), (fwd_key, fwd)]
}

fn sample() -> RawMaps {
    RawMaps {
        services: vec![
            (svc([10, 96, 0, 11], 80, 0), front(0, 2)),
            (svc([10, 96, 0, 10], 80, 2), slot(2, 1)),
            (svc([10, 96, 0, 10], 80, 0), front(2, 1)),
            (svc([10, 96, 0, 10], 80, 1), slot(1, 1)),
        ],
        backends: vec![(2, backend(12)), (1, backend(11)), (3, backend(13))],
        revnats: vec![
            (1, revnat([10, 96, 0, 10], 80)),
            (2, revnat([10, 96, 0, 11], 80)),
        ],
        conntrack: flow().to_vec(),
        stats: vec![(Verdict::PassNotIp, 3), (Verdict::DnatNew, 1)],
        // rev 1 is named; rev 2 has no name entry.
        names: vec![
            (
                1,
                SvcName::new(
                    "default",
                    "echo",
                    "http",
                    FrontendKind::ClusterIp.raw(),
                    NAME_SERVED,
                ),
            ),
            (
                NAME_KEY_UNSERVED + 1,
                SvcName::new(
                    "default",
                    "db-alias",
                    "",
                    NAME_KIND_NONE,
                    UnservedReason::ExternalName.raw(),
                ),
            ),
            (
                NAME_KEY_UNSERVED,
                SvcName::new(
                    "default",
                    "headless",
                    "",
                    NAME_KIND_NONE,
                    UnservedReason::Headless.raw(),
                ),
            ),
        ],
        ..Default::default()
    }
}

/// A LoadBalancer with policy Local, source ranges and affinity: two backends, one of
/// them on this node; plus a terminating backend (id 3) that no slot holds.
fn lb_sample() -> RawMaps {
    let lb = [192, 0, 2, 100];
    let flags =
        SVC_F_EXTERNAL | SVC_F_LOADBALANCER | SVC_F_LOCAL | SVC_F_SOURCE_RANGES | SVC_F_AFFINITY;
    let mut terminating = backend(13);
    terminating.state = BACKEND_STATE_TERMINATING;
    RawMaps {
        services: vec![
            (svc(lb, 443, 0), front_flags(2, 5, flags, 10800)),
            (svc(lb, 443, 1), slot(1, 5)),
            (svc(lb, 443, 2), slot(2, 5)),
            (
                scoped(lb, 443, SCOPE_LOCAL, 0),
                front_flags(1, 5, flags, 10800),
            ),
            (scoped(lb, 443, SCOPE_LOCAL, 1), slot(2, 5)),
        ],
        backends: vec![(1, backend(11)), (2, backend(12)), (3, terminating)],
        revnats: vec![(5, revnat(lb, 443))],
        src_ranges: vec![
            src_range(5, [203, 0, 113, 0], 24),
            src_range(5, [198, 51, 100, 7], 32),
        ],
        affinity: vec![
            (
                Affinity4Key {
                    client_be: ip([198, 51, 100, 7]),
                    rev_nat_id: 5,
                },
                Affinity4Value {
                    last_used_ns: 100 * S,
                    backend_id: 2,
                    slot: 1,
                    scope: SCOPE_LOCAL,
                    _pad: 0,
                },
            ),
            (
                Affinity4Key {
                    client_be: ip([203, 0, 113, 9]),
                    rev_nat_id: 5,
                },
                Affinity4Value {
                    last_used_ns: 100 * S,
                    backend_id: 1,
                    slot: 2,
                    scope: SCOPE_ALL,
                    _pad: 0,
                },
            ),
        ],
        ..Default::default()
    }
}

fn totals(pairs: &[(&'static str, u64)]) -> Vec<VerdictTotal> {
    pairs
        .iter()
        .map(|(verdict, total)| VerdictTotal {
            verdict,
            total: *total,
        })
        .collect()
}
