//! The map states a packet could trip over, in words: the reconciler's write-order
//! invariant (every frontend's count points at existing slots whose backends exist, with a
//! rev-NAT entry; see `reconcile`) and the agreement of flags, scopes, source ranges and
//! names with the entries they describe. svcctl lists them (`inconsistencies`), and the
//! reconciler's tests assert that none exists after every write. Both families, each
//! against its own maps (an IPv6 frontend's backends must be in SVC6_BACKENDS, ...); the
//! messages name the IPv4 maps' `SVC4_*` / `SVC6_*` as the frontend's family says.
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use svc_common::{
    BackendState, CtKind, FrontendKind, SVC_F_EXTERNAL, SVC_F_EXTERNAL_IP, SVC_F_LOADBALANCER,
    SVC_F_LOCAL, SVC_F_NODEPORT, SVC_F_SOURCE_RANGES, Scope,
};

use super::decode::{FrontendId, SlotState, Tables, decode_ct, id_family, id_name};
use crate::addr::{Family, IpCidr};
use crate::dataplane::RawMaps;
use crate::dataplane::layout::{self, frontend_flag_labels, word_label};

/// `SVC4_<what>` or `SVC6_<what>`: the map of `family` a message names.
fn map_of(family: Family, what: &str) -> String {
    match family {
        Family::V4 => format!("SVC4_{what}"),
        Family::V6 => format!("SVC6_{what}"),
    }
}

/// Every inconsistency of `raw` as seen at `now_ns` (conntrack entries that expired are
/// ignored, as the datapath ignores them).
pub fn inconsistencies(raw: &RawMaps, now_ns: u64) -> Vec<String> {
    check(&Tables::new(raw), now_ns)
        .into_iter()
        .map(|f| f.message)
        .collect()
}

/// The inconsistencies a new flow trips over (a count past the existing slots, a slot
/// whose backend is missing, a frontend without its rev-NAT entry, a policy or
/// source-range flag without the entries it sends packets to). The reconciler's write
/// order keeps this empty after every single write, not only at the end of a sync; the
/// rest (slots past the count, orphans, names) may show while a sync is half done.
pub fn packet_hazards(raw: &RawMaps) -> Vec<String> {
    check(&Tables::new(raw), 0)
        .into_iter()
        .filter(|f| f.hazard)
        .map(|f| f.message)
        .collect()
}

/// One inconsistency.
pub(super) struct Finding {
    /// A packet can trip over it (see [`packet_hazards`]).
    hazard: bool,
    pub message: String,
}

fn hazard(message: String) -> Finding {
    Finding {
        hazard: true,
        message,
    }
}

fn note(message: String) -> Finding {
    Finding {
        hazard: false,
        message,
    }
}

/// Problems of the slots of one scope of a frontend: missing slots and backends,
/// terminating backends new flows may get, slots past the count.
fn slot_problems(
    t: &Tables<'_>,
    id: &FrontendId,
    scope: Scope,
    count: u16,
    out: &mut Vec<Finding>,
) {
    let name = id_name(id);
    let what = match scope {
        Scope::All => "slot",
        Scope::Local => "local slot",
    };
    let Some(entries) = t.slots(scope, id) else {
        return;
    };
    let mut entries = entries.clone();
    entries.remove(&0);
    let backends = map_of(id_family(id), "BACKENDS");
    for state in t.walk_slots(id_family(id), count, &entries) {
        match state {
            SlotState::Missing { slot } => {
                out.push(hazard(format!("{name}: {what} {slot} of {count} is missing")))
            }
            SlotState::NoBackend { slot, backend_id } => out.push(hazard(format!(
                "{name}: {what} {slot} points at backend {backend_id}, which is not in {backends}"
            ))),
            SlotState::Valid {
                slot,
                backend_id,
                backend,
            } if backend.state() == Some(BackendState::Terminating) => {
                out.push(note(format!(
                    "{name}: {what} {slot} points at backend {backend_id}, which is terminating (new flows may get it)"
                )))
            }
            SlotState::Valid { .. } => {}
            SlotState::Beyond { slot, backend_id } => out.push(note(format!(
                "{name}: {what} {slot} (backend {backend_id}) is beyond count {count}"
            ))),
        }
    }
}

pub(super) fn check(t: &Tables<'_>, now_ns: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, slot, scope) in &t.unknown_scope {
        out.push(note(format!(
            "{}: slot {slot} has unknown scope {scope} (the datapath never reads it)",
            id_name(id)
        )));
    }
    for (addr, prefix_len, rev) in &t.bad_ranges {
        out.push(note(format!(
            "source range {addr} (prefix length {prefix_len}) for rev_nat_id {rev} has an invalid prefix length"
        )));
    }

    // Both families' service CIDRs and ClusterIPs, each from its family's maps.
    let service_cidrs: Vec<IpCidr> = t
        .raw
        .service_cidrs
        .iter()
        .filter_map(|k| layout::service_cidr_of(k).map(IpCidr::V4))
        .chain(
            t.raw
                .service_cidrs6
                .iter()
                .filter_map(|k| layout::service_cidr6_of(k).map(IpCidr::V6)),
        )
        .collect();
    let cluster_ips: BTreeSet<IpAddr> = t
        .raw
        .cluster_ips
        .iter()
        .map(|(k, _)| IpAddr::V4(layout::cluster_ip_of(*k)))
        .chain(
            t.raw
                .cluster_ips6
                .iter()
                .map(|(k, _)| IpAddr::V6(layout::cluster_ip6_of(*k))),
        )
        .collect();
    // The programs look a destination up in SVC4_CLUSTERIPS and SVC4_SVC_CIDR only inside
    // SVC4_SVC_RANGE (IPv6: SVC6_*): an entry outside it is never seen.
    let covers = |ip: IpAddr| match ip {
        IpAddr::V4(a) => layout::range_covers(&t.raw.unserved_range, a),
        IpAddr::V6(a) => layout::range6_covers(&t.raw.unserved_range6, a),
    };
    for ip in &cluster_ips {
        if !covers(*ip) {
            out.push(hazard(format!(
                "ClusterIP {ip} is outside {} (its unknown ports are passed, not rejected)",
                map_of(Family::of(*ip), "SVC_RANGE")
            )));
        }
    }
    for cidr in &service_cidrs {
        let (first, last) = match cidr {
            IpCidr::V4(c) => (
                IpAddr::V4(c.addr),
                IpAddr::V4(Ipv4Addr::from(u32::from(c.addr) | !c.netmask())),
            ),
            IpCidr::V6(c) => {
                let host = u128::MAX.checked_shr(u32::from(c.prefix_len)).unwrap_or(0);
                (
                    IpAddr::V6(c.addr),
                    IpAddr::V6(Ipv6Addr::from(u128::from(c.addr) | host)),
                )
            }
        };
        if !covers(first) || !covers(last) {
            out.push(hazard(format!(
                "service CIDR {cidr} is not inside {} (its unallocated addresses are passed, not dropped)",
                map_of(cidr.family(), "SVC_RANGE")
            )));
        }
    }
    for (id, value) in &t.frontends {
        let name = id_name(id);
        let family = id_family(id);
        slot_problems(t, id, Scope::All, value.count, &mut out);

        // A ClusterIP inside a service CIDR is an allocated ClusterIP: the reconciler writes
        // it before the frontend, so its other ports are rejected, never dropped.
        let vip = id.0;
        if FrontendKind::of_flags(value.flags) == FrontendKind::ClusterIp
            && !cluster_ips.contains(&vip)
            && let Some(cidr) = service_cidrs.iter().find(|c| c.contains(vip))
        {
            out.push(hazard(format!(
                "{name}: ClusterIP {vip} is inside service CIDR {cidr} but not in {} (its other ports are dropped, not rejected)",
                map_of(family, "CLUSTERIPS")
            )));
        }

        match t.revnats.get(&(family, value.rev_nat_id)) {
            None => out.push(hazard(format!(
                "{name}: rev_nat_id {} has no {} entry (replies are not reverse-translated)",
                value.rev_nat_id,
                map_of(family, "REVNAT")
            ))),
            Some(rev)
                if *rev
                    != layout::Endpoint {
                        addr: id.0,
                        port: id.1,
                    } =>
            {
                out.push(note(format!(
                    "{name}: rev_nat_id {} translates replies to {rev}, not to the frontend",
                    value.rev_nat_id,
                )))
            }
            Some(_) => {}
        }

        let flags = value.flags;
        let kind = FrontendKind::of_flags(flags);
        let kind_bits = flags & (SVC_F_NODEPORT | SVC_F_LOADBALANCER | SVC_F_EXTERNAL_IP);
        if kind_bits.count_ones() > 1 {
            out.push(note(format!(
                "{name}: flags {flags:#x} name more than one kind ({})",
                frontend_flag_labels(kind_bits).join(", ")
            )));
        }
        if (kind_bits != 0) != (flags & SVC_F_EXTERNAL != 0) {
            out.push(note(format!(
                "{name}: flags {flags:#x}: the external bit does not match the kind {kind}"
            )));
        }

        // Traffic policy Local: the scope-local entries.
        let local = flags & SVC_F_LOCAL != 0;
        let local_entries = t.slots(Scope::Local, id);
        let local_head = local_entries.and_then(|s| s.get(&0));
        if let Some(entries) = local_entries {
            if !local {
                out.push(note(format!(
                    "{name}: has SCOPE_LOCAL entries but not the policy-local flag (they are unused)"
                )));
            }
            match local_head {
                Some(head) => {
                    slot_problems(t, id, Scope::Local, head.count, &mut out);
                    if head.count > value.count {
                        out.push(note(format!(
                            "{name}: {} local backends but only {} in all",
                            head.count, value.count
                        )));
                    }
                }
                None => {
                    for (slot, v) in entries.range(1..) {
                        out.push(note(format!(
                            "{name}: local slot {slot} (backend {}) has no local slot 0",
                            v.backend_id
                        )));
                    }
                }
            }
        }
        if local && local_head.is_none() {
            out.push(hazard(format!(
                "{name}: policy Local but no SCOPE_LOCAL entry (new flows that need a local backend are dropped)"
            )));
        }

        // loadBalancerSourceRanges.
        let has_ranges = t
            .ranges
            .get(&(family, value.rev_nat_id))
            .is_some_and(|r| !r.is_empty());
        let ranges_map = map_of(family, "SRC_RANGE");
        if flags & SVC_F_SOURCE_RANGES != 0 && !has_ranges {
            out.push(hazard(format!(
                "{name}: source-ranges flag without {ranges_map} entries (every new flow is dropped)"
            )));
        }
        if flags & SVC_F_SOURCE_RANGES == 0 && has_ranges {
            out.push(note(format!(
                "{name}: {ranges_map} entries without the source-ranges flag (they are ignored)"
            )));
        }

        if let Some(n) = t.names.get(&{ value.rev_nat_id })
            && layout::name_kind(n) != Some(kind)
        {
            out.push(note(format!(
                "{name}: SVC_NAMES entry {} ({}/{}) is for kind {}, not {kind}",
                value.rev_nat_id,
                n.namespace(),
                n.name(),
                word_label(layout::name_kind(n), n.kind),
            )));
        }
    }

    // Entries of frontends that do not exist: no packet reads them.
    for scope in [Scope::All, Scope::Local] {
        let what = match scope {
            Scope::All => "slot",
            Scope::Local => "local slot",
        };
        for (id, entries) in &t.scopes[usize::from(scope.raw())] {
            if t.frontends.contains_key(id) {
                continue;
            }
            for (slot, v) in entries {
                let detail = if *slot == 0 {
                    format!("count {}", v.count)
                } else {
                    format!("backend {}", v.backend_id)
                };
                out.push(note(format!(
                    "{}: {what} {slot} ({detail}) has no frontend entry",
                    id_name(id)
                )));
            }
        }
    }

    // SVC_NAMES is keyed by rev_nat_id for both families (one allocator).
    let frontend_revs: std::collections::BTreeSet<(Family, u32)> = t
        .frontends
        .iter()
        .map(|(id, v)| (id_family(id), v.rev_nat_id))
        .collect();
    let named_revs: std::collections::BTreeSet<u32> =
        frontend_revs.iter().map(|(_, rev)| *rev).collect();
    for (key, n) in &t.names {
        if !layout::is_unserved_key(*key) && !named_revs.contains(key) {
            out.push(note(format!(
                "SVC_NAMES entry {key} ({}/{}) belongs to no frontend",
                n.namespace(),
                n.name()
            )));
        }
    }
    for (rev, cidrs) in &t.ranges {
        if !frontend_revs.contains(rev) {
            for cidr in cidrs {
                out.push(note(format!(
                    "source range {cidr} for rev_nat_id {} belongs to no frontend",
                    rev.1
                )));
            }
        }
    }

    let replies = t
        .raw
        .conntrack
        .iter()
        .filter(|(k, _)| k.kind == CtKind::Reply.raw())
        .map(|(k, v)| (Family::V4, v.rev_nat_id, decode_ct(k, v, now_ns, None)))
        .chain(
            t.raw
                .conntrack6
                .iter()
                .filter(|(k, _)| k.kind == CtKind::Reply.raw())
                .map(|(k, v)| (Family::V6, v.rev_nat_id, decode_ct(k, v, now_ns, None))),
        );
    for (family, rev, e) in replies {
        if t.revnats.contains_key(&(family, rev)) || e.expired {
            continue;
        }
        out.push(note(format!(
            "conntrack reply {} -> {}/{}: rev_nat_id {rev} has no {} entry (replies pass untranslated)",
            e.src,
            e.dst,
            e.protocol,
            map_of(family, "REVNAT")
        )));
    }
    out
}
