//! From the raw map contents ([`RawMaps`]) to the [`Snapshot`]: entries grouped by frontend
//! ([`Tables`], which the consistency checks read too), then every section decoded through
//! the dataplane's layout. Never fails: what does not fit together is left to
//! [`consistency::check`](super::consistency::check).
//!
//! Both families: the `*4` and `*6` maps are read into the same tables, each entry keyed
//! by its family (a frontend's address says which maps a packet to it reads: an IPv6
//! frontend's slots point into SVC6_BACKENDS, its rev_nat_id into SVC6_REVNAT).
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use svc_common::{
    Affinity4Value, BackendState, ClusterIpUse, CtKey, CtKind, CtValue, Scope, ServiceDrop,
    ServiceStats, Svc4Value, SvcKey, SvcName, Verdict, ct_timeout_ns,
};

use super::schema::*;
use crate::addr::{Family, HostPort, IpCidr};
use crate::dataplane::RawMaps;
use crate::dataplane::layout::{
    self, BackendValue, FrontendHead, MapAddr, ct_flag_labels, frontend_flag_labels,
    protocol_label, word_label,
};

pub(super) const NS_PER_SEC: u64 = 1_000_000_000;

/// A frontend's identity as the services maps key it: (address, port, protocol number).
/// The address's family is the maps'.
pub(super) type FrontendId = (IpAddr, u16, u8);

pub(super) fn frontend_id<A: MapAddr>(key: &SvcKey<A>) -> FrontendId {
    (key.vip_be.ip(), u16::from_be(key.port_be), key.proto)
}

/// The family of a frontend's maps.
pub(super) fn id_family(id: &FrontendId) -> Family {
    Family::of(id.0)
}

/// `10.96.0.10:80/TCP`, `[fd00::10]:80/TCP`.
pub(super) fn id_name(id: &FrontendId) -> String {
    format!("{}/{}", HostPort(id.0, id.1), protocol_label(id.2))
}

/// An id (backend, rev-NAT) in the maps of a family.
pub(super) type FamilyId = (Family, u32);

/// One scope's entries of a frontend: slot -> value (slot 0: its head).
pub(super) type ScopeSlots = BTreeMap<u16, Svc4Value>;

/// The raw maps indexed the way a packet reads them.
pub(super) struct Tables<'a> {
    pub raw: &'a RawMaps,
    /// SVC4_BACKENDS and SVC6_BACKENDS.
    pub backends: BTreeMap<FamilyId, BackendValue>,
    /// SVC4_REVNAT and SVC6_REVNAT, decoded.
    pub revnats: BTreeMap<FamilyId, Endpoint>,
    pub names: BTreeMap<u32, SvcName>,
    /// Indexed by scope (all, local): frontend -> its entries of that scope.
    pub scopes: [BTreeMap<FrontendId, ScopeSlots>; 2],
    /// Entries of a scope no word has (frontend, slot, scope number).
    pub unknown_scope: Vec<(FrontendId, u16, u8)>,
    /// The frontends: the slot-0 entries of scope all.
    pub frontends: BTreeMap<FrontendId, Svc4Value>,
    /// rev_nat_id (in its family's SVC*_SRC_RANGE) -> its loadBalancerSourceRanges.
    pub ranges: BTreeMap<FamilyId, BTreeSet<IpCidr>>,
    /// Source-range keys with a prefix length the agent never writes: (address, prefix
    /// length as the trie counts it, rev_nat_id).
    pub bad_ranges: Vec<(IpAddr, u32, u32)>,
}

impl<'a> Tables<'a> {
    pub fn new(raw: &'a RawMaps) -> Tables<'a> {
        let mut scopes: [BTreeMap<FrontendId, ScopeSlots>; 2] = Default::default();
        let mut unknown_scope = Vec::new();
        let services = raw
            .services
            .iter()
            .map(|(k, v)| (frontend_id(k), k.slot, k.scope, v))
            .chain(
                raw.services6
                    .iter()
                    .map(|(k, v)| (frontend_id(k), k.slot, k.scope, v)),
            );
        for (id, slot, scope, value) in services {
            let key = KeyParts { slot, scope };
            match Scope::from_raw(key.scope) {
                Some(scope) => {
                    scopes[usize::from(scope.raw())]
                        .entry(id)
                        .or_default()
                        .insert(key.slot, *value);
                }
                None => unknown_scope.push((id, key.slot, key.scope)),
            }
        }
        let frontends = scopes[usize::from(Scope::All.raw())]
            .iter()
            .filter_map(|(id, slots)| slots.get(&0).map(|v| (*id, *v)))
            .collect();
        let mut ranges: BTreeMap<FamilyId, BTreeSet<IpCidr>> = BTreeMap::new();
        let mut bad_ranges = Vec::new();
        for key in &raw.src_ranges {
            match layout::src_range_cidr(key) {
                Some(cidr) => {
                    ranges
                        .entry((Family::V4, key.1.rev_nat_id))
                        .or_default()
                        .insert(IpCidr::V4(cidr));
                }
                None => bad_ranges.push((key.1.addr_be.ip(), key.0, key.1.rev_nat_id)),
            }
        }
        for key in &raw.src_ranges6 {
            match layout::src_range6_cidr(key) {
                Some(cidr) => {
                    ranges
                        .entry((Family::V6, key.1.rev_nat_id))
                        .or_default()
                        .insert(IpCidr::V6(cidr));
                }
                None => bad_ranges.push((key.1.addr_be.ip(), key.0, key.1.rev_nat_id)),
            }
        }
        let backends = raw
            .backends
            .iter()
            .map(|(id, b)| ((Family::V4, *id), BackendValue::V4(*b)))
            .chain(
                raw.backends6
                    .iter()
                    .map(|(id, b)| ((Family::V6, *id), BackendValue::V6(*b))),
            )
            .collect();
        let revnats = raw
            .revnats
            .iter()
            .map(|(id, r)| ((Family::V4, *id), layout::revnat_endpoint(r)))
            .chain(
                raw.revnats6
                    .iter()
                    .map(|(id, r)| ((Family::V6, *id), layout::revnat_endpoint(r))),
            )
            .collect();
        Tables {
            raw,
            backends,
            revnats,
            names: raw.names.iter().copied().collect(),
            scopes,
            unknown_scope,
            frontends,
            ranges,
            bad_ranges,
        }
    }

    /// A frontend's entries of `scope` (empty if it has none).
    pub fn slots(&self, scope: Scope, id: &FrontendId) -> Option<&ScopeSlots> {
        self.scopes[usize::from(scope.raw())].get(id)
    }

    /// What each slot 1..=count of `slots` (of a frontend of `family`) holds, and the
    /// slots past the count.
    pub fn walk_slots(&self, family: Family, count: u16, slots: &ScopeSlots) -> Vec<SlotState> {
        let mut out = Vec::new();
        for slot in 1..=count {
            out.push(match slots.get(&slot) {
                None => SlotState::Missing { slot },
                Some(v) => match self.backends.get(&(family, v.backend_id)) {
                    None => SlotState::NoBackend {
                        slot,
                        backend_id: v.backend_id,
                    },
                    Some(b) => SlotState::Valid {
                        slot,
                        backend_id: v.backend_id,
                        backend: *b,
                    },
                },
            });
        }
        for (slot, v) in slots.range(count.saturating_add(1)..) {
            out.push(SlotState::Beyond {
                slot: *slot,
                backend_id: v.backend_id,
            });
        }
        out
    }

    /// The Service of a rev_nat_id, from its name entry.
    pub fn service_name(&self, rev: u32) -> Option<ServiceName> {
        self.names.get(&rev).map(|n| ServiceName {
            namespace: n.namespace().to_string(),
            name: n.name().to_string(),
            port_name: n.port_name().to_string(),
        })
    }
}

/// The slot and scope of a services-map key, whatever its family.
struct KeyParts {
    slot: u16,
    scope: u8,
}

/// What one slot of a frontend's scope holds.
pub(super) enum SlotState {
    /// Within the count, pointing at an existing backend: a packet may use it.
    Valid {
        slot: u16,
        backend_id: u32,
        backend: BackendValue,
    },
    /// Within the count, but not in the map.
    Missing { slot: u16 },
    /// Within the count, pointing at a backend id SVC4_BACKENDS does not hold.
    NoBackend { slot: u16, backend_id: u32 },
    /// Past the count: no packet reads it.
    Beyond { slot: u16, backend_id: u32 },
}

fn state_label(b: &BackendValue) -> String {
    word_label(b.state(), b.state_raw())
}

/// The valid slots of one scope, as the snapshot lists them; records which frontends hold
/// which backend.
fn valid_slots(
    tables: &Tables<'_>,
    id: FrontendId,
    scope: Scope,
    count: u16,
    references: &mut References,
) -> Vec<ServiceBackend> {
    let Some(slots) = tables.slots(scope, &id) else {
        return Vec::new();
    };
    tables
        .walk_slots(id_family(&id), count, slots)
        .into_iter()
        .filter_map(|s| match s {
            SlotState::Valid {
                slot,
                backend_id,
                backend,
            } => {
                references
                    .entry((id_family(&id), backend_id))
                    .or_default()
                    .entry(id)
                    .or_default()
                    .insert(scope);
                let ep = backend.endpoint();
                Some(ServiceBackend {
                    slot,
                    backend_id,
                    addr: ep.addr,
                    port: ep.port,
                    protocol: protocol_label(backend.proto()),
                    state: state_label(&backend),
                })
            }
            _ => None,
        })
        .collect()
}

/// backend (family, id) -> frontend -> the scopes it holds the backend in.
type References = BTreeMap<FamilyId, BTreeMap<FrontendId, BTreeSet<Scope>>>;

/// Decodes one conntrack entry (SVC4_CT or SVC6_CT) as seen at `now_ns`. `revnat` is the
/// address of the entry's rev_nat_id in the rev-NAT map of its family (used by reply
/// entries: the address replies get as source).
pub fn decode_ct<A: MapAddr>(
    key: &CtKey<A>,
    value: &CtValue<A>,
    now_ns: u64,
    revnat: Option<Endpoint>,
) -> CtEntry {
    let target = Endpoint::from_be(value.addr_be, value.port_be);
    let snat = value.flags & svc_common::CT_F_SNAT != 0;
    let kind = CtKind::from_raw(key.kind);
    let (translated_dst, translated_src) = match kind {
        // Forward: the VIP becomes the backend; a masqueraded client becomes the NAT
        // endpoint.
        Some(CtKind::Service) => (
            Some(target),
            snat.then(|| Endpoint::from_be(value.nat_addr_be, value.nat_port_be)),
        ),
        // Reply: the backend becomes the service address; the destination goes back to
        // the original client when masqueraded (else it already is the client).
        Some(CtKind::Reply) => (snat.then_some(target), revnat),
        None => (None, None),
    };
    let idle_ns = now_ns.saturating_sub(value.last_seen_ns);
    let timeout_ns = ct_timeout_ns(key.proto, value.flags);
    let src = Endpoint::from_be(key.saddr_be, key.sport_be);
    let dst = Endpoint::from_be(key.daddr_be, key.dport_be);
    let (translated, backend) = match kind {
        Some(CtKind::Service) => (
            Tuple {
                src: Some(translated_src.unwrap_or(src)),
                dst: translated_dst,
            },
            target,
        ),
        Some(CtKind::Reply) => (
            Tuple {
                src: translated_src,
                dst: Some(translated_dst.unwrap_or(dst)),
            },
            src,
        ),
        None => (
            Tuple {
                src: None,
                dst: None,
            },
            target,
        ),
    };
    CtEntry {
        service: None,
        kind: word_label(kind, key.kind),
        protocol: protocol_label(key.proto),
        src,
        dst,
        translated_dst,
        translated_src,
        translated,
        backend_id: value.backend_id,
        backend,
        rev_nat_id: value.rev_nat_id,
        flags: ct_flag_labels(value.flags),
        flags_raw: value.flags,
        created_ns: value.created_ns,
        last_seen_ns: value.last_seen_ns,
        age_secs: now_ns.saturating_sub(value.created_ns) / NS_PER_SEC,
        idle_secs: idle_ns / NS_PER_SEC,
        timeout_secs: timeout_ns / NS_PER_SEC,
        // The same test as the datapath's `expired()`.
        expired: idle_ns > timeout_ns,
    }
}

pub(super) fn decode_stats(totals: &[(Verdict, u64)]) -> Vec<VerdictTotal> {
    totals
        .iter()
        .map(|(v, total)| VerdictTotal {
            verdict: v.label(),
            total: *total,
        })
        .collect()
}

/// The note of a frontend for people: why it rejects or drops.
fn note(head: &FrontendHead, local_head: Option<&Svc4Value>) -> Option<String> {
    if head.count == 0 {
        Some("no endpoints: new connections are rejected (TCP RST / ICMP port unreachable)".into())
    } else if head.local && local_head.is_some_and(|h| h.count == 0) {
        Some(if head.kind.is_external() {
            "policy Local and no endpoint on this node: new flows from outside the cluster are dropped".into()
        } else {
            "policy Local and no endpoint on this node: new flows are dropped".into()
        })
    } else {
        None
    }
}

/// Decodes raw map contents as seen at `now_ns`; never fails: what does not fit together
/// is listed in `inconsistencies`.
pub fn decode(raw: &RawMaps, now_ns: u64) -> Snapshot {
    let t = Tables::new(raw);
    let mut references = References::new();
    let mut services = Vec::new();
    for (id, value) in &t.frontends {
        let family = id_family(id);
        let head = FrontendHead::decode(value);
        let backends = valid_slots(&t, *id, Scope::All, value.count, &mut references);
        let local_head = t.slots(Scope::Local, id).and_then(|s| s.get(&0));
        let local_backends = match local_head {
            Some(h) => valid_slots(&t, *id, Scope::Local, h.count, &mut references),
            None => Vec::new(),
        };
        services.push(Service {
            service: t.service_name(value.rev_nat_id),
            vip: id.0,
            port: id.1,
            protocol: protocol_label(id.2),
            kind: head.kind.label(),
            rev_nat_id: value.rev_nat_id,
            count: value.count,
            flags: frontend_flag_labels(value.flags),
            flags_raw: value.flags,
            affinity_timeout_secs: head.affinity_timeout,
            source_ranges: t
                .ranges
                .get(&(family, value.rev_nat_id))
                .into_iter()
                .flatten()
                .map(IpCidr::to_string)
                .collect(),
            rejects: value.count == 0,
            note: note(&head, local_head),
            backends,
            local_count: local_head.map(|h| h.count),
            local_backends,
        });
    }

    let mut unserved: Vec<Unserved> = t
        .names
        .iter()
        .filter(|(key, _)| layout::is_unserved_key(**key))
        .map(|(_, n)| Unserved {
            namespace: n.namespace().to_string(),
            name: n.name().to_string(),
            reason: layout::unserved_reason(n).map_or_else(|e| e, |r| r.to_string()),
            why: layout::unserved_reason(n).ok(),
        })
        .collect();
    unserved.sort();

    // (kind, protocol, family) of each entry, with the entry: sorted as before, IPv4 first.
    let ct4 = raw.conntrack.iter().map(|(k, v)| {
        let mut e = decode_ct(
            k,
            v,
            now_ns,
            t.revnats.get(&(Family::V4, v.rev_nat_id)).copied(),
        );
        e.service = t.service_name(v.rev_nat_id);
        ((k.kind, k.proto, Family::V4), e)
    });
    let ct6 = raw.conntrack6.iter().map(|(k, v)| {
        let mut e = decode_ct(
            k,
            v,
            now_ns,
            t.revnats.get(&(Family::V6, v.rev_nat_id)).copied(),
        );
        e.service = t.service_name(v.rev_nat_id);
        ((k.kind, k.proto, Family::V6), e)
    });
    let mut ct: Vec<((u8, u8, Family), CtEntry)> = ct4.chain(ct6).collect();
    ct.sort_by_key(|((kind, proto, family), e)| (*family, *kind, e.src, e.dst, *proto));

    // Live flows per backend: service entries whose remembered backend address is still
    // the one of their backend id (a reused id gives the flow a fresh backend).
    let mut flows: BTreeMap<FamilyId, usize> = BTreeMap::new();
    for ((kind, _, family), e) in &ct {
        let bid = (*family, e.backend_id);
        if *kind == CtKind::Service.raw()
            && !e.expired
            && t.backends
                .get(&bid)
                .is_some_and(|b| b.endpoint() == e.backend)
        {
            *flows.entry(bid).or_default() += 1;
        }
    }
    let backend_list = t
        .backends
        .iter()
        .map(|(bid, b)| {
            let ep = b.endpoint();
            let refs: Vec<BackendRef> = references
                .get(bid)
                .into_iter()
                .flatten()
                .map(|(id, scopes)| {
                    let front = t.frontends.get(id);
                    BackendRef {
                        service: front.and_then(|f| t.service_name(f.rev_nat_id)),
                        vip: id.0,
                        port: id.1,
                        protocol: protocol_label(id.2),
                        kind: front.map_or(svc_common::FrontendKind::ClusterIp.label(), |f| {
                            FrontendHead::decode(f).kind.label()
                        }),
                        rev_nat_id: front.map_or(0, |f| f.rev_nat_id),
                        scopes: scopes.iter().map(|s| s.label()).collect(),
                    }
                })
                .collect();
            Backend {
                id: bid.1,
                addr: ep.addr,
                port: ep.port,
                protocol: protocol_label(b.proto()),
                state: state_label(b),
                frontends: refs.len(),
                references: refs,
                flows: flows.get(bid).copied().unwrap_or(0),
            }
        })
        .collect();

    let by_rev: BTreeMap<FamilyId, (&FrontendId, &Svc4Value)> = t
        .frontends
        .iter()
        .map(|(id, v)| ((id_family(id), v.rev_nat_id), (id, v)))
        .collect();
    // One entry of SVC4_AFFINITY or SVC6_AFFINITY (`family`), with its client's address.
    let affinity_entry = |family: Family, client: IpAddr, rev_nat_id: u32, v: &Affinity4Value| {
        let frontend = by_rev.get(&(family, rev_nat_id)).copied();
        let timeout_secs = frontend.and_then(|(_, f)| FrontendHead::decode(f).affinity_timeout);
        let idle_ns = now_ns.saturating_sub(v.last_used_ns);
        let expired = timeout_secs.is_none_or(|t| idle_ns > t as u64 * NS_PER_SEC);
        let backend = t.backends.get(&(family, v.backend_id));
        // The datapath's test: the slot of that scope (within its count) still holds
        // the backend, and the backend is active.
        let current = frontend.is_some_and(|(id, _)| {
            let Some(entries) = Scope::from_raw(v.scope).and_then(|s| t.slots(s, id)) else {
                return false;
            };
            let count = entries.get(&0).map_or(0, |h| h.count);
            v.slot >= 1
                && v.slot <= count
                && entries
                    .get(&v.slot)
                    .is_some_and(|s| s.backend_id == v.backend_id)
                && backend.is_some_and(|b| b.state() == Some(BackendState::Active))
        });
        AffinityEntry {
            client,
            rev_nat_id,
            service: t.revnats.get(&(family, rev_nat_id)).copied(),
            backend_id: v.backend_id,
            backend: backend.map(BackendValue::endpoint),
            scope: word_label(Scope::from_raw(v.scope), v.scope),
            slot: v.slot,
            last_used_ns: v.last_used_ns,
            idle_secs: idle_ns / NS_PER_SEC,
            timeout_secs,
            expired,
            current,
        }
    };
    let mut affinity: Vec<AffinityEntry> = raw
        .affinity
        .iter()
        .map(|(k, v)| affinity_entry(Family::V4, k.client_be.ip(), k.rev_nat_id, v))
        .chain(
            raw.affinity6
                .iter()
                .map(|(k, v)| affinity_entry(Family::V6, k.client_be.ip(), k.rev_nat_id, v)),
        )
        .collect();
    affinity.sort_by_key(|a| (Family::of(a.client), a.rev_nat_id, a.client));

    let mut problems = raw.problems.clone();
    problems.sort_by_key(|(k, _)| *k);
    let mut cidrs: Vec<IpCidr> = raw
        .service_cidrs
        .iter()
        .filter_map(|k| layout::service_cidr_of(k).map(IpCidr::V4))
        .chain(
            raw.service_cidrs6
                .iter()
                .filter_map(|k| layout::service_cidr6_of(k).map(IpCidr::V6)),
        )
        .collect();
    cidrs.sort();
    let other_proxy = |v: &u8| layout::cluster_ip_use(*v) == Some(ClusterIpUse::OtherProxy);
    let service_cidrs = ServiceCidrs {
        cidrs: cidrs.iter().map(IpCidr::to_string).collect(),
        cluster_ips: raw.cluster_ips.len() + raw.cluster_ips6.len(),
        ipv6_cluster_ips: raw.cluster_ips6.len(),
        other_proxy_cluster_ips: raw
            .cluster_ips
            .iter()
            .filter(|(_, v)| other_proxy(v))
            .count()
            + raw
                .cluster_ips6
                .iter()
                .filter(|(_, v)| other_proxy(v))
                .count(),
    };
    Snapshot {
        version: SCHEMA_VERSION,
        now_ns,
        services,
        unserved,
        service_cidrs,
        problems: problems.iter().map(|(_, p)| p.text().to_string()).collect(),
        backends: backend_list,
        conntrack: ct.into_iter().map(|(_, e)| e).collect(),
        affinity,
        expired_hidden: ExpiredHidden::default(),
        stats: decode_stats(&raw.stats),
        inconsistencies: super::consistency::check(&t, now_ns)
            .into_iter()
            .map(|f| f.message)
            .collect(),
    }
}

/// Rounded to 3 decimals (milliseconds, millipackets): enough for people and scripts.
pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The totals of `after` and the rate of each verdict from `before` to `after`, taken
/// `interval_s` apart. A verdict missing in `before` counts from 0; a counter that went
/// down (the maps were recreated) and an interval that is not positive give rate 0.
/// The per-Service counters of `after` (rev_nat_id -> totals) for the frontends in
/// `services` (the snapshot's, already filtered), in their order, with the rates since
/// `before`. A frontend without a counter entry (an agent that has not written it yet)
/// is left out.
pub fn service_rates(
    services: &[Service],
    before: &[(u32, ServiceStats)],
    after: &[(u32, ServiceStats)],
    interval_s: f64,
) -> Vec<ServiceRate> {
    let before: BTreeMap<u32, &ServiceStats> = before.iter().map(|(k, v)| (*k, v)).collect();
    let after: BTreeMap<u32, &ServiceStats> = after.iter().map(|(k, v)| (*k, v)).collect();
    let rate = |a: u64, b: u64| {
        if interval_s > 0.0 && interval_s.is_finite() {
            round3(a.saturating_sub(b) as f64 / interval_s)
        } else {
            0.0
        }
    };
    services
        .iter()
        .filter_map(|svc| {
            let a = after.get(&svc.rev_nat_id)?;
            let zero = ServiceStats::default();
            let b = before.get(&svc.rev_nat_id).copied().unwrap_or(&zero);
            Some(ServiceRate {
                service: svc.service.clone(),
                kind: svc.kind,
                vip: svc.vip,
                port: svc.port,
                protocol: svc.protocol.clone(),
                rev_nat_id: svc.rev_nat_id,
                packets: a.packets,
                bytes: a.bytes,
                new_flows: a.new_flows,
                reply_packets: a.reply_packets,
                reply_bytes: a.reply_bytes,
                drops: ServiceDrop::ALL
                    .iter()
                    .map(|r| (r.label(), a.drops[r.raw() as usize]))
                    .collect(),
                dropped: a.dropped(),
                packets_per_second: rate(a.packets, b.packets),
                bytes_per_second: rate(a.bytes, b.bytes),
                new_flows_per_second: rate(a.new_flows, b.new_flows),
                reply_packets_per_second: rate(a.reply_packets, b.reply_packets),
                dropped_per_second: rate(a.dropped(), b.dropped()),
            })
        })
        .collect()
}

pub fn verdict_rates(
    before: &[VerdictTotal],
    after: &[VerdictTotal],
    interval_s: f64,
) -> RatesDocument {
    let stats = after
        .iter()
        .map(|a| {
            let b = before
                .iter()
                .find(|b| b.verdict == a.verdict)
                .map_or(0, |b| b.total);
            let per_second = if interval_s > 0.0 && interval_s.is_finite() {
                round3(a.total.saturating_sub(b) as f64 / interval_s)
            } else {
                0.0
            };
            VerdictRate {
                verdict: a.verdict,
                packets: a.total,
                per_second,
            }
        })
        .collect();
    RatesDocument {
        version: SCHEMA_VERSION,
        interval_s: round3(interval_s),
        stats,
        services: Vec::new(),
    }
}
