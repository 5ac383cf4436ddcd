//! Reads the pinned maps into a plain, serializable model ([`Snapshot`]) and renders it as
//! text tables. svcctl prints one or the other; nothing here writes to a map.
//!
//! # JSON schema (`svcctl dump --json`)
//!
//! One object. Field names are stable; new fields may be added, none are renamed or
//! removed without bumping `version`. Addresses are dotted-quad strings, ports host-order
//! numbers, protocols `"TCP"` / `"UDP"` (anything else: `"proto-<number>"`).
//!
//! ```text
//! {
//!   "version": 1,                      // schema version
//!   "now_ns": u64,                     // CLOCK_MONOTONIC when the snapshot was taken
//!   "services": [                      // one per frontend (slot 0 entry), sorted by vip, port, protocol
//!     { "vip": "10.96.0.10", "port": 80, "protocol": "TCP",
//!       "rev_nat_id": u16, "count": u16, "flags": u16,
//!       "rejects": bool,               // count == 0: new flows get TCP RST / ICMP port unreachable
//!       "note": string | null,         // human-readable remark (set when rejects)
//!       "backends": [                  // the valid slots 1..=count, in slot order
//!         { "slot": u16, "backend_id": u32, "addr": "10.244.1.11", "port": 8080,
//!           "protocol": "TCP", "state": "active" } ] } ],
//!   "backends": [                      // every SVC4_BACKENDS entry, sorted by id
//!     { "id": u32, "addr": "10.244.1.11", "port": 8080, "protocol": "TCP",
//!       "state": "active",             // or "unknown(<n>)"
//!       "frontends": usize } ],        // how many frontends have it in a valid slot
//!   "conntrack": [                     // sorted by kind (service first), src, dst, protocol
//!     { "kind": "service" | "reply" | "unknown(<n>)", "protocol": "TCP",
//!       "src": { "addr": "...", "port": u16 },   // the tuple of the map key:
//!       "dst": { "addr": "...", "port": u16 },   //   service: client -> VIP; reply: backend -> client
//!       "translated_dst": { "addr", "port" } | null,  // service: the backend the VIP becomes
//!       "translated_src": { "addr", "port" } | null,  // reply: the service address the backend becomes
//!       "backend_id": u32, "rev_nat_id": u16,
//!       "flags": ["closing", "replied", "unknown(0x..)"], "flags_raw": u8,
//!       "created_ns": u64, "last_seen_ns": u64,  // bpf_ktime_get_ns() (CLOCK_MONOTONIC)
//!       "age_secs": u64,               // now - created (0 if in the future)
//!       "idle_secs": u64,              // now - last_seen
//!       "timeout_secs": u64,           // svc_common::ct_timeout_ns(protocol, flags)
//!       "expired": bool } ],           // idle longer than timeout: the datapath ignores it
//!   "stats": [                         // every Verdict, in index order
//!     { "verdict": "dnat_new", "total": u64 } ],
//!   "inconsistencies": [ string ]      // map states a packet could trip over (missing slots,
//!                                      // missing backends, stale slots, rev-NAT mismatches);
//!                                      // transiently non-empty while the agent syncs
//! }
//! ```
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;
use svc_common::{
    BACKEND_STATE_ACTIVE, Backend4, CT_F_CLOSING, CT_F_REPLIED, CT_KIND_REPLY, CT_KIND_SERVICE,
    Ct4Key, Ct4Value, PROTO_TCP, PROTO_UDP, RevNat4, Svc4Key, Svc4Value, Verdict, ct_timeout_ns,
};

use crate::dataplane::{DataplaneError, Maps};
use crate::reconcile::{MapStore, StoreError};

/// Version of the JSON schema documented above.
pub const SCHEMA_VERSION: u32 = 1;

const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl Endpoint {
    /// From network-order fields.
    pub fn from_be(addr_be: u32, port_be: u16) -> Endpoint {
        Endpoint {
            addr: Ipv4Addr::from(u32::from_be(addr_be)),
            port: u16::from_be(port_be),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub version: u32,
    pub now_ns: u64,
    pub services: Vec<Service>,
    pub backends: Vec<Backend>,
    pub conntrack: Vec<CtEntry>,
    pub stats: Vec<VerdictTotal>,
    pub inconsistencies: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub rev_nat_id: u16,
    pub count: u16,
    pub flags: u16,
    pub rejects: bool,
    pub note: Option<String>,
    pub backends: Vec<ServiceBackend>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceBackend {
    pub slot: u16,
    pub backend_id: u32,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub id: u32,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub state: String,
    pub frontends: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CtEntry {
    pub kind: String,
    pub protocol: String,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub translated_dst: Option<Endpoint>,
    pub translated_src: Option<Endpoint>,
    pub backend_id: u32,
    pub rev_nat_id: u16,
    pub flags: Vec<String>,
    pub flags_raw: u8,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub age_secs: u64,
    pub idle_secs: u64,
    pub timeout_secs: u64,
    pub expired: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerdictTotal {
    pub verdict: &'static str,
    pub total: u64,
}

/// The raw map contents a snapshot is decoded from.
#[derive(Clone, Debug, Default)]
pub struct RawMaps {
    pub services: Vec<(Svc4Key, Svc4Value)>,
    pub backends: Vec<(u32, Backend4)>,
    pub revnats: Vec<(u32, RevNat4)>,
    pub conntrack: Vec<(Ct4Key, Ct4Value)>,
    pub stats: Vec<(Verdict, u64)>,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns().
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * NS_PER_SEC + ts.tv_nsec as u64
}

/// Reads every map and decodes it.
pub fn snapshot(maps: &Maps) -> Result<Snapshot, InspectError> {
    let raw = RawMaps {
        services: maps.read_services()?,
        backends: maps.read_backends()?,
        revnats: maps.read_revnats()?,
        conntrack: maps.read_conntrack()?,
        stats: maps.verdict_totals()?,
    };
    Ok(decode(&raw, monotonic_now_ns()))
}

/// Verdict totals only (no walk over the conntrack table).
pub fn verdict_totals(maps: &Maps) -> Result<Vec<VerdictTotal>, InspectError> {
    Ok(decode_stats(&maps.verdict_totals()?))
}

pub fn protocol_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "TCP".into(),
        PROTO_UDP => "UDP".into(),
        other => format!("proto-{other}"),
    }
}

fn backend_state_name(state: u8) -> String {
    match state {
        BACKEND_STATE_ACTIVE => "active".into(),
        other => format!("unknown({other})"),
    }
}

fn ct_kind_name(kind: u8) -> String {
    match kind {
        CT_KIND_SERVICE => "service".into(),
        CT_KIND_REPLY => "reply".into(),
        other => format!("unknown({other})"),
    }
}

/// CT_F_* bits as words.
pub fn ct_flag_words(flags: u8) -> Vec<String> {
    let mut words = Vec::new();
    if flags & CT_F_CLOSING != 0 {
        words.push("closing".to_string());
    }
    if flags & CT_F_REPLIED != 0 {
        words.push("replied".to_string());
    }
    let rest = flags & !(CT_F_CLOSING | CT_F_REPLIED);
    if rest != 0 {
        words.push(format!("unknown({rest:#x})"));
    }
    words
}

fn frontend_name(key: &Svc4Key) -> String {
    format!(
        "{}/{}",
        Endpoint::from_be(key.vip_be, key.port_be),
        protocol_name(key.proto)
    )
}

/// Decodes one conntrack entry as seen at `now_ns`.
pub fn decode_ct(key: &Ct4Key, value: &Ct4Value, now_ns: u64) -> CtEntry {
    let nat = Endpoint::from_be(value.addr_be, value.port_be);
    let (translated_dst, translated_src) = match key.kind {
        CT_KIND_SERVICE => (Some(nat), None),
        CT_KIND_REPLY => (None, Some(nat)),
        _ => (None, None),
    };
    let idle_ns = now_ns.saturating_sub(value.last_seen_ns);
    let timeout_ns = ct_timeout_ns(key.proto, value.flags);
    CtEntry {
        kind: ct_kind_name(key.kind),
        protocol: protocol_name(key.proto),
        src: Endpoint::from_be(key.saddr_be, key.sport_be),
        dst: Endpoint::from_be(key.daddr_be, key.dport_be),
        translated_dst,
        translated_src,
        backend_id: value.backend_id,
        rev_nat_id: value.rev_nat_id,
        flags: ct_flag_words(value.flags),
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

fn decode_stats(totals: &[(Verdict, u64)]) -> Vec<VerdictTotal> {
    totals
        .iter()
        .map(|(v, total)| VerdictTotal {
            verdict: v.label(),
            total: *total,
        })
        .collect()
}

/// Decodes raw map contents; never fails: what does not fit together is listed in
/// `inconsistencies`.
pub fn decode(raw: &RawMaps, now_ns: u64) -> Snapshot {
    let backends: BTreeMap<u32, Backend4> = raw.backends.iter().copied().collect();
    let revnats: BTreeMap<u32, RevNat4> = raw.revnats.iter().copied().collect();
    let mut frontends: BTreeMap<(Ipv4Addr, u16, u8), (Svc4Key, Svc4Value)> = BTreeMap::new();
    // (vip, port, proto) -> slot -> value
    let mut slots: BTreeMap<(Ipv4Addr, u16, u8), BTreeMap<u16, Svc4Value>> = BTreeMap::new();
    for (key, value) in &raw.services {
        let id = (
            Ipv4Addr::from(u32::from_be(key.vip_be)),
            u16::from_be(key.port_be),
            key.proto,
        );
        if key.slot == 0 {
            frontends.insert(id, (*key, *value));
        } else {
            slots.entry(id).or_default().insert(key.slot, *value);
        }
    }

    let mut inconsistencies = Vec::new();
    let mut references: BTreeMap<u32, BTreeSet<(Ipv4Addr, u16, u8)>> = BTreeMap::new();
    let mut services = Vec::new();
    for (id, (key, value)) in &frontends {
        let name = frontend_name(key);
        let empty = BTreeMap::new();
        let my_slots = slots.get(id).unwrap_or(&empty);
        let mut list = Vec::new();
        for slot in 1..=value.count {
            let Some(slot_value) = my_slots.get(&slot) else {
                inconsistencies.push(format!("{name}: slot {slot} of {} is missing", value.count));
                continue;
            };
            let Some(b) = backends.get(&slot_value.backend_id) else {
                inconsistencies.push(format!(
                    "{name}: slot {slot} points at backend {}, which is not in SVC4_BACKENDS",
                    slot_value.backend_id
                ));
                continue;
            };
            references
                .entry(slot_value.backend_id)
                .or_default()
                .insert(*id);
            let ep = Endpoint::from_be(b.addr_be, b.port_be);
            list.push(ServiceBackend {
                slot,
                backend_id: slot_value.backend_id,
                addr: ep.addr,
                port: ep.port,
                protocol: protocol_name(b.proto),
                state: backend_state_name(b.state),
            });
        }
        for (slot, slot_value) in my_slots.range(value.count.saturating_add(1)..) {
            inconsistencies.push(format!(
                "{name}: slot {slot} (backend {}) is beyond count {}",
                slot_value.backend_id, value.count
            ));
        }
        match revnats.get(&(value.rev_nat_id as u32)) {
            None => inconsistencies.push(format!(
                "{name}: rev_nat_id {} has no SVC4_REVNAT entry (replies are not reverse-translated)",
                value.rev_nat_id
            )),
            Some(rev) if rev.vip_be != key.vip_be || rev.port_be != key.port_be => inconsistencies.push(format!(
                "{name}: rev_nat_id {} translates replies to {}, not to the frontend",
                value.rev_nat_id,
                Endpoint::from_be(rev.vip_be, rev.port_be)
            )),
            Some(_) => {}
        }
        let rejects = value.count == 0;
        services.push(Service {
            vip: id.0,
            port: id.1,
            protocol: protocol_name(id.2),
            rev_nat_id: value.rev_nat_id,
            count: value.count,
            flags: value.flags,
            rejects,
            note: rejects.then(|| {
                "no endpoints: new connections are rejected (TCP RST / ICMP port unreachable)"
                    .to_string()
            }),
            backends: list,
        });
    }
    for (id, my_slots) in &slots {
        if !frontends.contains_key(id) {
            for (slot, v) in my_slots {
                inconsistencies.push(format!(
                    "{}:{}/{}: slot {slot} (backend {}) has no frontend entry",
                    id.0,
                    id.1,
                    protocol_name(id.2),
                    v.backend_id
                ));
            }
        }
    }

    let backend_list = backends
        .iter()
        .map(|(bid, b)| {
            let ep = Endpoint::from_be(b.addr_be, b.port_be);
            Backend {
                id: *bid,
                addr: ep.addr,
                port: ep.port,
                protocol: protocol_name(b.proto),
                state: backend_state_name(b.state),
                frontends: references.get(bid).map_or(0, BTreeSet::len),
            }
        })
        .collect();

    let mut ct: Vec<(Ct4Key, CtEntry)> = raw
        .conntrack
        .iter()
        .map(|(k, v)| (*k, decode_ct(k, v, now_ns)))
        .collect();
    ct.sort_by_key(|(k, e)| (k.kind, e.src, e.dst, k.proto));

    Snapshot {
        version: SCHEMA_VERSION,
        now_ns,
        services,
        backends: backend_list,
        conntrack: ct.into_iter().map(|(_, e)| e).collect(),
        stats: decode_stats(&raw.stats),
        inconsistencies,
    }
}

// ---------------------------------------------------------------------------------------
// Text rendering.
// ---------------------------------------------------------------------------------------

/// Left-aligned columns separated by at least two spaces (as `kubectl get`); the last
/// column is not padded.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Durations as `kubectl` shows ages: 45s, 3m12s, 5h4m, 2d3h.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// The SERVICES section (and INCONSISTENCIES, when there are any).
pub fn render_services(snap: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = snap
        .services
        .iter()
        .map(|s| {
            let backends = if s.rejects {
                "<none: rejects>".to_string()
            } else if s.backends.is_empty() {
                "<none usable: see inconsistencies>".to_string()
            } else {
                s.backends
                    .iter()
                    .map(|b| format!("{}:{}", b.addr, b.port))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                format!("{}:{}", s.vip, s.port),
                s.protocol.clone(),
                s.rev_nat_id.to_string(),
                backends,
            ]
        })
        .collect();
    let mut out = format!(
        "SERVICES ({} frontends, {} backends)\n",
        snap.services.len(),
        snap.backends.len()
    );
    if rows.is_empty() {
        out.push_str("(none)\n");
    } else {
        out.push_str(&render_table(
            &["FRONTEND", "PROTO", "REVNAT", "BACKENDS"],
            &rows,
        ));
    }
    if !snap.inconsistencies.is_empty() {
        let _ = writeln!(out, "\nINCONSISTENCIES ({})", snap.inconsistencies.len());
        for line in &snap.inconsistencies {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}

/// The CONNTRACK section.
pub fn render_conntrack(snap: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = snap
        .conntrack
        .iter()
        .map(|e| {
            let translated = match (e.translated_dst, e.translated_src) {
                (Some(dst), _) => format!("dst -> {dst}"),
                (None, Some(src)) => format!("src -> {src}"),
                (None, None) => "-".to_string(),
            };
            let mut flags = e.flags.clone();
            if e.expired {
                flags.push("expired".into());
            }
            vec![
                e.kind.clone(),
                e.protocol.clone(),
                format!("{} -> {}", e.src, e.dst),
                translated,
                e.backend_id.to_string(),
                e.rev_nat_id.to_string(),
                human_duration(e.age_secs),
                human_duration(e.idle_secs),
                if flags.is_empty() {
                    "-".into()
                } else {
                    flags.join(",")
                },
            ]
        })
        .collect();
    let mut out = format!("CONNTRACK ({} entries)\n", snap.conntrack.len());
    if !rows.is_empty() {
        out.push_str(&render_table(
            &[
                "KIND",
                "PROTO",
                "ORIGINAL",
                "TRANSLATED",
                "BACKEND",
                "REVNAT",
                "AGE",
                "IDLE",
                "FLAGS",
            ],
            &rows,
        ));
    }
    out
}

/// The STATS section: every verdict with its total.
pub fn render_stats(stats: &[VerdictTotal]) -> String {
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| vec![s.verdict.to_string(), s.total.to_string()])
        .collect();
    format!("STATS\n{}", render_table(&["VERDICT", "PACKETS"], &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a)).to_be()
    }
    fn svc(vip: [u8; 4], port: u16, slot: u16) -> Svc4Key {
        Svc4Key {
            vip_be: ip(vip),
            port_be: port.to_be(),
            slot,
            proto: PROTO_TCP,
            _pad: [0; 3],
        }
    }
    fn backend(last: u8) -> Backend4 {
        Backend4 {
            addr_be: ip([10, 244, 1, last]),
            port_be: 8080u16.to_be(),
            proto: PROTO_TCP,
            state: BACKEND_STATE_ACTIVE,
        }
    }
    fn front(count: u16, rev: u16) -> Svc4Value {
        Svc4Value {
            backend_id: 0,
            count,
            rev_nat_id: rev,
            flags: 0,
            _pad: [0; 2],
        }
    }
    fn slot(id: u32, rev: u16) -> Svc4Value {
        Svc4Value {
            backend_id: id,
            count: 0,
            rev_nat_id: rev,
            flags: 0,
            _pad: [0; 2],
        }
    }
    fn revnat(vip: [u8; 4], port: u16) -> RevNat4 {
        RevNat4 {
            vip_be: ip(vip),
            port_be: port.to_be(),
            _pad: [0; 2],
        }
    }

    const S: u64 = NS_PER_SEC;

    fn flow() -> [(Ct4Key, Ct4Value); 2] {
        let fwd = Ct4Value {
            created_ns: 100 * S,
            last_seen_ns: 111 * S,
            backend_id: 1,
            addr_be: ip([10, 244, 1, 11]),
            port_be: 8080u16.to_be(),
            rev_nat_id: 1,
            flags: CT_F_REPLIED,
            _pad: [0; 3],
        };
        let fwd_key = Ct4Key {
            saddr_be: ip([10, 244, 1, 20]),
            daddr_be: ip([10, 96, 0, 10]),
            sport_be: 40000u16.to_be(),
            dport_be: 80u16.to_be(),
            proto: PROTO_TCP,
            kind: CT_KIND_SERVICE,
            _pad: [0; 2],
        };
        let rep_key = Ct4Key {
            saddr_be: ip([10, 244, 1, 11]),
            daddr_be: ip([10, 244, 1, 20]),
            sport_be: 8080u16.to_be(),
            dport_be: 40000u16.to_be(),
            proto: PROTO_TCP,
            kind: CT_KIND_REPLY,
            _pad: [0; 2],
        };
        let rep = Ct4Value {
            addr_be: ip([10, 96, 0, 10]),
            port_be: 80u16.to_be(),
            ..fwd
        };
        [(rep_key, rep), (fwd_key, fwd)]
    }

    #[test]
    fn decodes_a_service_entry() {
        let [_, (k, v)] = flow();
        let e = decode_ct(&k, &v, 112 * S + 5);
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
    fn decodes_a_reply_entry() {
        let [(k, v), _] = flow();
        let e = decode_ct(&k, &v, 112 * S);
        assert_eq!(e.kind, "reply");
        assert_eq!(
            format!("{} -> {}", e.src, e.dst),
            "10.244.1.11:8080 -> 10.244.1.20:40000"
        );
        assert_eq!(e.translated_src.unwrap().to_string(), "10.96.0.10:80");
        assert_eq!(e.translated_dst, None);
    }

    #[test]
    fn expiry_follows_the_datapath_timeouts() {
        let [_, (k, mut v)] = flow();
        v.flags = 0; // SYN only: 60s
        assert!(!decode_ct(&k, &v, v.last_seen_ns + 60 * S).expired);
        assert!(decode_ct(&k, &v, v.last_seen_ns + 60 * S + 1).expired);
        v.flags = CT_F_CLOSING | CT_F_REPLIED | 0x80;
        let e = decode_ct(&k, &v, v.last_seen_ns + 11 * S);
        assert!(e.expired);
        assert_eq!(e.flags, vec!["closing", "replied", "unknown(0x80)"]);
        // Timestamps after "now" (clock skew between reads) give 0, not an underflow.
        let e = decode_ct(&k, &v, 0);
        assert_eq!((e.age_secs, e.idle_secs, e.expired), (0, 0, false));
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
            stats: vec![(Verdict::PassNotIpv4, 3), (Verdict::DnatNew, 1)],
        }
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
        assert_eq!(
            snap.stats[1],
            VerdictTotal {
                verdict: "dnat_new",
                total: 1
            }
        );
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
    fn json_field_names_are_stable() {
        let v = serde_json::to_value(decode(&sample(), 112 * S)).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["services"][0]["vip"], "10.96.0.10");
        assert_eq!(v["services"][0]["backends"][1]["addr"], "10.244.1.12");
        assert_eq!(v["services"][1]["backends"], serde_json::json!([]));
        assert_eq!(v["services"][1]["rejects"], true);
        assert_eq!(v["conntrack"][0]["translated_dst"]["port"], 8080);
        assert_eq!(v["conntrack"][0]["translated_src"], serde_json::Value::Null);
        assert_eq!(v["conntrack"][0]["age_secs"], 12);
        assert_eq!(v["conntrack"][1]["translated_src"]["addr"], "10.96.0.10");
        assert_eq!(v["stats"][0]["verdict"], "pass_not_ipv4");
        assert_eq!(v["backends"][2]["frontends"], 0);
    }

    #[test]
    fn tables_are_aligned() {
        let snap = decode(&sample(), 112 * S);
        let text = render_services(&snap);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "FRONTEND       PROTO  REVNAT  BACKENDS");
        assert_eq!(
            lines[2],
            "10.96.0.10:80  TCP    1       10.244.1.11:8080, 10.244.1.12:8080"
        );
        assert_eq!(lines[3], "10.96.0.11:80  TCP    2       <none: rejects>");
        let ct = render_conntrack(&snap);
        let lines: Vec<&str> = ct.lines().collect();
        assert_eq!(lines[0], "CONNTRACK (2 entries)");
        let col = lines[1].find("TRANSLATED").unwrap();
        assert_eq!(&lines[2][col..col + 6], "dst ->");
        assert_eq!(&lines[3][col..col + 6], "src ->");
        assert!(lines[2].ends_with("12s  1s    replied"), "{}", lines[2]);
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(5 * 3600 + 4 * 60 + 9), "5h4m");
        assert_eq!(human_duration(2 * 86400 + 3 * 3600), "2d3h");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now_ns();
        assert!(monotonic_now_ns() >= a && a > 0);
    }
}
