//! Reads the pinned maps into a plain, serializable model ([`Snapshot`]) and renders it as
//! text tables. svcctl prints one or the other; nothing here writes to a map.
//!
//! # JSON and YAML documents
//!
//! svcctl prints one of these documents with `-o json` (or the hidden alias `--json`) and
//! the same document as YAML with `-o yaml`:
//!
//! | command | document |
//! |---|---|
//! | `svcctl dump` | the snapshot, below |
//! | `svcctl dump services` | `{"version", "services", "unserved", "inconsistencies"}` |
//! | `svcctl dump backends` | `{"version", "backends"}` |
//! | `svcctl dump conntrack` | `{"version", "now_ns", "conntrack"}` |
//! | `svcctl dump affinity` | `{"version", "now_ns", "affinity"}` |
//! | `svcctl dump stats` | `{"version", "stats"}` |
//! | `svcctl stats` | `{"version", "interval_s", "stats"}`: totals and rates, below |
//!
//! Every field of a section document has the meaning and form of the snapshot field of
//! the same name (the lists are filtered the same way, see the end of this section). All
//! documents share one `version`, [`SCHEMA_VERSION`]. Field names are stable; new fields
//! may be added, none are renamed or removed without bumping `version`. Addresses are
//! dotted-quad strings, ports host-order numbers, protocols `"TCP"` / `"UDP"` (anything
//! else: `"proto-<number>"`), `{ "addr", "port" }` an object with those two fields.
//!
//! `svcctl stats` reads the counters twice, `interval_s` apart, and prints one document
//! per refresh (under `--watch` one compact JSON document per line, or YAML documents
//! each starting with `---`). It lists every verdict, in index order, also those at 0:
//!
//! ```text
//! {
//!   "version": 3,
//!   "interval_s": f64,                 // seconds between the two readings, as measured
//!   "stats": [
//!     { "verdict": "dnat_new",         // svc_common::Verdict::label
//!       "packets": u64,                // total at the second reading, summed over CPUs
//!       "per_second": f64 } ]          // (second - first) / interval_s, 3 decimals; 0 if
//!                                      // the counter went down (maps recreated)
//! }
//! ```
//!
//! Additions without a version change: backends gained `references` and `flows`;
//! conntrack entries gained `service`, `translated` and `backend`; the section documents
//! and `svcctl stats` were added.
//!
//! ## The snapshot (`svcctl dump -o json`)
//!
//! Version 3 (from 2): services gained `service` (namespace, name and port name, from
//! SVC_NAMES); `unserved` was added (Services that get no datapath entries, with why).
//!
//! Version 2 (from 1): services gained `kind`, `affinity_timeout_secs`, `source_ranges`,
//! `local_count`, `local_backends`; their `flags` became words (the number is
//! `flags_raw`); conntrack reply entries take `translated_src` from SVC4_REVNAT and carry
//! the masquerade translation; backends can be `"terminating"`; `affinity` was added.
//!
//! ```text
//! {
//!   "version": 3,                      // schema version
//!   "now_ns": u64,                     // CLOCK_MONOTONIC when the snapshot was taken
//!   "services": [                      // one per frontend (the SCOPE_ALL slot-0 entry),
//!                                      // sorted by vip, port, protocol
//!     { "service": { "namespace": "default", "name": "echo",
//!                    "port_name": "http" } | null,  // SVC_NAMES entry of rev_nat_id
//!                                      // ("port_name": "" when the port has no name;
//!                                      // null: no name entry)
//!       "vip": "10.96.0.10", "port": 80, "protocol": "TCP",
//!       "kind": "clusterip" | "nodeport" | "externalip" | "loadbalancer",
//!       "rev_nat_id": u32, "count": u16,
//!       "flags": [ "external", "policy-local", "nodeport", "loadbalancer", "source-ranges",
//!                  "affinity", "externalip", "unknown(0x..)" ],  // every SVC_F_* bit set
//!       "flags_raw": u16,
//!       "affinity_timeout_secs": u32 | null,   // sessionAffinity ClientIP timeout
//!       "source_ranges": [ "203.0.113.0/24" ], // SVC4_SRC_RANGE entries of this rev_nat_id
//!       "rejects": bool,               // count == 0: new flows get TCP RST / ICMP port unreachable
//!       "note": string | null,         // human-readable remarks (rejects, no local endpoint)
//!       "backends": [                  // the valid slots 1..=count, in slot order
//!         { "slot": u16, "backend_id": u32, "addr": "10.244.1.11", "port": 8080,
//!           "protocol": "TCP", "state": "active" } ],
//!       "local_count": u16 | null,     // count of the SCOPE_LOCAL entry (null: there is none)
//!       "local_backends": [ ... ] } ], // this node's backends (traffic policy Local), as
//!                                      // "backends": the valid SCOPE_LOCAL slots
//!   "unserved": [                      // Services with no datapath entries (SVC_NAMES keys
//!                                      // from 0x10000), sorted by namespace, name
//!     { "namespace": "default", "name": "headless",
//!       "reason": "headless" | "externalname" | "other-proxy" | "no-ipv4-clusterip"
//!                 | "no-ports" | "unknown(<n>)" } ],
//!   "backends": [                      // every SVC4_BACKENDS entry, sorted by id
//!     { "id": u32, "addr": "10.244.1.11", "port": 8080, "protocol": "TCP",
//!       "state": "active" | "terminating" | "unknown(<n>)",  // terminating: only kept for
//!                                                            // the flows it already has
//!       "frontends": usize,            // how many frontends have it in a valid slot (any
//!                                      // scope): the length of "references"
//!       "references": [                // those frontends, sorted as "services"
//!         { "service": { "namespace", "name", "port_name" } | null,  // as in "services"
//!           "vip": "10.96.0.10", "port": 80, "protocol": "TCP",
//!           "kind": "clusterip" | ...,  // as in "services"
//!           "rev_nat_id": u32,
//!           "scopes": [ "all", "local" ] } ],  // the slot lists that hold it
//!       "flows": usize } ],            // live (not expired) service conntrack entries whose
//!                                      // backend is this one (same id and address); 0 when
//!                                      // the conntrack table was not read (never in svcctl
//!                                      // output that shows backends)
//!   "conntrack": [                     // sorted by kind (service first), src, dst, protocol
//!     { "service": { "namespace", "name", "port_name" } | null,  // SVC_NAMES entry of
//!                                      // rev_nat_id (null: none, e.g. the Service is gone)
//!       "kind": "service" | "reply" | "unknown(<n>)", "protocol": "TCP",
//!       "src": { "addr": "...", "port": u16 },   // the tuple of the map key. service:
//!       "dst": { "addr": "...", "port": u16 },   //   client -> VIP; reply: backend -> client
//!                                                //   (or -> the masquerade address:port)
//!       "translated_dst": { "addr", "port" } | null,  // service: the backend the VIP becomes;
//!                                                     // reply: the original client (masqueraded
//!                                                     // flows only, else null)
//!       "translated_src": { "addr", "port" } | null,  // service: the masquerade address:port
//!                                                     // (masqueraded flows only, else null);
//!                                                     // reply: the service address (from
//!                                                     // SVC4_REVNAT; null if it is missing)
//!       "translated": { "src": { "addr", "port" } | null,   // the whole tuple after
//!                       "dst": { "addr", "port" } | null }, // translation: src/dst with the
//!                                      // translated_* parts applied (null: unknown, i.e. a
//!                                      // reply without SVC4_REVNAT entry, or an unknown kind)
//!       "backend_id": u32,
//!       "backend": { "addr", "port" }, // the flow's backend as the entry remembers it (service:
//!                                      // translated_dst; reply: src)
//!       "rev_nat_id": u32,
//!       "flags": ["closing", "replied", "snat", "unknown(0x..)"], "flags_raw": u8,
//!       "created_ns": u64, "last_seen_ns": u64,  // bpf_ktime_get_ns() (CLOCK_MONOTONIC)
//!       "age_secs": u64,               // now - created (0 if in the future)
//!       "idle_secs": u64,              // now - last_seen
//!       "timeout_secs": u64,           // svc_common::ct_timeout_ns(protocol, flags)
//!       "expired": bool } ],           // idle longer than timeout: the datapath ignores it
//!   "affinity": [                      // session affinity (SVC4_AFFINITY), sorted by
//!                                      // rev_nat_id, client
//!     { "client": "10.244.1.20", "rev_nat_id": u32,
//!       "service": { "addr", "port" } | null,   // from SVC4_REVNAT
//!       "backend_id": u32, "backend": { "addr", "port" } | null,
//!       "scope": "all" | "local" | "unknown(<n>)", "slot": u16,
//!       "last_used_ns": u64, "idle_secs": u64,
//!       "timeout_secs": u32 | null,    // the frontend's affinity timeout (null: the frontend is
//!                                      // gone or has no affinity)
//!       "expired": bool,               // idle longer than timeout, or no timeout
//!       "current": bool } ],           // its slot still holds that backend, active: a new
//!                                      // flow that is not expired reuses it
//!   "stats": [                         // every Verdict, in index order
//!     { "verdict": "dnat_new", "total": u64 } ],
//!   "inconsistencies": [ string ]      // map states a packet could trip over (missing slots,
//!                                      // missing backends, stale slots, rev-NAT mismatches,
//!                                      // scope/flag mismatches, orphan source ranges,
//!                                      // names of no frontend or of another kind);
//!                                      // transiently non-empty while the agent syncs
//! }
//! ```
//!
//! `svcctl dump [SECTION] -n NAMESPACE [NAME]` keeps the services, unserved Services,
//! conntrack and affinity entries (by rev_nat_id) of the matching Services, and the
//! backends those services and flows use (each with all its references); frontends
//! without a name entry are left out. `stats` and `inconsistencies` are not filtered. See
//! [`Filter`].
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;
use svc_common::{
    AFFINITY4_MAP, Affinity4Key, Affinity4Value, BACKEND_STATE_ACTIVE, BACKEND_STATE_TERMINATING,
    Backend4, CT_F_CLOSING, CT_F_REPLIED, CT_F_SNAT, CT_KIND_REPLY, CT_KIND_SERVICE, Ct4Key,
    Ct4Value, NAME_EXTERNALNAME, NAME_HEADLESS, NAME_KEY_UNSERVED, NAME_KIND_CLUSTERIP,
    NAME_KIND_EXTERNALIP, NAME_KIND_LOADBALANCER, NAME_KIND_NODEPORT, NAME_NO_IPV4_CLUSTERIP,
    NAME_NO_PORTS, NAME_OTHER_PROXY, PROTO_TCP, PROTO_UDP, RevNat4, SCOPE_ALL, SCOPE_LOCAL,
    SRC_RANGE_PREFIX_BASE, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_EXTERNAL_IP, SVC_F_LOADBALANCER,
    SVC_F_LOCAL, SVC_F_NODEPORT, SVC_F_SOURCE_RANGES, Svc4Key, Svc4Value, SvcName, Verdict,
    ct_timeout_ns,
};

use crate::dataplane::{DataplaneError, Maps};
use crate::reconcile::{MapStore, SrcRangeKey, StoreError};

/// Version of the JSON schema documented above.
pub const SCHEMA_VERSION: u32 = 3;

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
    pub unserved: Vec<Unserved>,
    pub backends: Vec<Backend>,
    pub conntrack: Vec<CtEntry>,
    pub affinity: Vec<AffinityEntry>,
    pub stats: Vec<VerdictTotal>,
    pub inconsistencies: Vec<String>,
}

/// The Service a frontend belongs to (its SVC_NAMES entry).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
    /// Empty when the Service port has no name.
    pub port_name: String,
}

impl std::fmt::Display for ServiceName {
    /// `namespace/name:port` (`namespace/name` when the port has no name).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        Ok(())
    }
}

/// A Service that gets no datapath entries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Unserved {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub service: Option<ServiceName>,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub kind: &'static str,
    pub rev_nat_id: u32,
    pub count: u16,
    pub flags: Vec<String>,
    pub flags_raw: u16,
    pub affinity_timeout_secs: Option<u32>,
    pub source_ranges: Vec<String>,
    pub rejects: bool,
    pub note: Option<String>,
    pub backends: Vec<ServiceBackend>,
    pub local_count: Option<u16>,
    pub local_backends: Vec<ServiceBackend>,
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
    /// How many frontends hold it in a valid slot (any scope): `references.len()`.
    pub frontends: usize,
    /// The frontends that hold it, in frontend order.
    pub references: Vec<BackendRef>,
    /// Live (not expired) service conntrack entries whose backend is this one (same id
    /// and address).
    pub flows: usize,
}

/// A frontend that holds a backend in one of its valid slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendRef {
    pub service: Option<ServiceName>,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub kind: &'static str,
    pub rev_nat_id: u32,
    /// `"all"` and/or `"local"`: the slot lists it is in.
    pub scopes: Vec<&'static str>,
}

impl BackendRef {
    /// `10.96.0.10:80/TCP`.
    pub fn frontend(&self) -> String {
        format!("{}:{}/{}", self.vip, self.port, self.protocol)
    }

    /// The Service name, or the frontend when it has no name entry.
    pub fn label(&self) -> String {
        self.service
            .as_ref()
            .map_or_else(|| self.frontend(), ServiceName::to_string)
    }
}

/// A packet's addresses after translation; None where they are not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tuple {
    pub src: Option<Endpoint>,
    pub dst: Option<Endpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CtEntry {
    /// The Service of the entry's rev_nat_id (its SVC_NAMES entry). [`decode_ct`] leaves
    /// it None; [`decode`] fills it in.
    pub service: Option<ServiceName>,
    pub kind: String,
    pub protocol: String,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub translated_dst: Option<Endpoint>,
    pub translated_src: Option<Endpoint>,
    /// The whole tuple after translation (`src`/`dst` with the translated parts applied).
    pub translated: Tuple,
    pub backend_id: u32,
    /// The backend address of the flow: service entries the translated destination, reply
    /// entries the source of the key.
    pub backend: Endpoint,
    pub rev_nat_id: u32,
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
pub struct AffinityEntry {
    pub client: Ipv4Addr,
    pub rev_nat_id: u32,
    pub service: Option<Endpoint>,
    pub backend_id: u32,
    pub backend: Option<Endpoint>,
    pub scope: String,
    pub slot: u16,
    pub last_used_ns: u64,
    pub idle_secs: u64,
    pub timeout_secs: Option<u32>,
    pub expired: bool,
    pub current: bool,
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
    pub src_ranges: Vec<SrcRangeKey>,
    pub affinity: Vec<(Affinity4Key, Affinity4Value)>,
    pub stats: Vec<(Verdict, u64)>,
    pub names: Vec<(u32, SvcName)>,
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

fn read_affinity(maps: &Maps) -> Result<Vec<(Affinity4Key, Affinity4Value)>, InspectError> {
    // Entries evicted while we iterate show up as errors of single lookups; skip them.
    let mut out = Vec::new();
    for item in maps.affinity.iter() {
        match item {
            Ok(kv) => out.push(kv),
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(source) => {
                return Err(DataplaneError::Map {
                    name: AFFINITY4_MAP,
                    source,
                }
                .into());
            }
        }
    }
    Ok(out)
}

/// Reads every map and decodes it.
pub fn snapshot(maps: &Maps) -> Result<Snapshot, InspectError> {
    snapshot_of(maps, Parts::ALL)
}

/// Which of the larger maps a snapshot reads. The small ones (services, backends, rev-NAT,
/// source ranges, names) are always read: every section needs them to name and filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// SVC4_CT: the conntrack list, and the backends' `flows`.
    pub conntrack: bool,
    /// SVC4_AFFINITY.
    pub affinity: bool,
    /// SVC_STATS.
    pub stats: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        conntrack: true,
        affinity: true,
        stats: true,
    };
    pub const NONE: Parts = Parts {
        conntrack: false,
        affinity: false,
        stats: false,
    };
}

/// Reads the maps `parts` asks for (and the small ones) and decodes them; what is not read
/// is empty in the snapshot.
pub fn snapshot_of(maps: &Maps, parts: Parts) -> Result<Snapshot, InspectError> {
    let raw = RawMaps {
        services: maps.read_services()?,
        backends: maps.read_backends()?,
        revnats: maps.read_revnats()?,
        conntrack: if parts.conntrack {
            maps.read_conntrack()?
        } else {
            Vec::new()
        },
        src_ranges: maps.read_src_ranges()?,
        affinity: if parts.affinity {
            read_affinity(maps)?
        } else {
            Vec::new()
        },
        stats: if parts.stats {
            maps.verdict_totals()?
        } else {
            Vec::new()
        },
        names: maps.read_names()?,
    };
    Ok(decode(&raw, monotonic_now_ns()))
}

/// The session affinity table only (no walk over the conntrack table), of the Services
/// `filter` selects. Returns the time it was decoded at and the entries.
pub fn affinity(maps: &Maps, filter: &Filter) -> Result<(u64, Vec<AffinityEntry>), InspectError> {
    let raw = RawMaps {
        services: maps.read_services()?,
        backends: maps.read_backends()?,
        revnats: maps.read_revnats()?,
        affinity: read_affinity(maps)?,
        names: maps.read_names()?,
        ..Default::default()
    };
    let mut snap = decode(&raw, monotonic_now_ns());
    filter.apply(&mut snap);
    Ok((snap.now_ns, snap.affinity))
}

/// Verdict totals only (no walk over the conntrack table).
pub fn verdict_totals(maps: &Maps) -> Result<Vec<VerdictTotal>, InspectError> {
    Ok(decode_stats(&maps.verdict_totals()?))
}

// ---------------------------------------------------------------------------------------
// The JSON / YAML documents (schema in the module documentation).
// ---------------------------------------------------------------------------------------

/// `svcctl dump services -o json`.
#[derive(Clone, Debug, Serialize)]
pub struct ServicesDocument<'a> {
    pub version: u32,
    pub services: &'a [Service],
    pub unserved: &'a [Unserved],
    pub inconsistencies: &'a [String],
}

/// `svcctl dump backends -o json`.
#[derive(Clone, Debug, Serialize)]
pub struct BackendsDocument<'a> {
    pub version: u32,
    pub backends: &'a [Backend],
}

/// `svcctl dump conntrack -o json`.
#[derive(Clone, Debug, Serialize)]
pub struct ConntrackDocument<'a> {
    pub version: u32,
    pub now_ns: u64,
    pub conntrack: &'a [CtEntry],
}

/// `svcctl dump affinity -o json`.
#[derive(Clone, Debug, Serialize)]
pub struct AffinityDocument<'a> {
    pub version: u32,
    pub now_ns: u64,
    pub affinity: &'a [AffinityEntry],
}

/// `svcctl dump stats -o json`.
#[derive(Clone, Debug, Serialize)]
pub struct StatsDocument<'a> {
    pub version: u32,
    pub stats: &'a [VerdictTotal],
}

impl Snapshot {
    pub fn services_document(&self) -> ServicesDocument<'_> {
        ServicesDocument {
            version: self.version,
            services: &self.services,
            unserved: &self.unserved,
            inconsistencies: &self.inconsistencies,
        }
    }

    pub fn backends_document(&self) -> BackendsDocument<'_> {
        BackendsDocument {
            version: self.version,
            backends: &self.backends,
        }
    }

    pub fn conntrack_document(&self) -> ConntrackDocument<'_> {
        ConntrackDocument {
            version: self.version,
            now_ns: self.now_ns,
            conntrack: &self.conntrack,
        }
    }

    pub fn affinity_document(&self) -> AffinityDocument<'_> {
        AffinityDocument {
            version: self.version,
            now_ns: self.now_ns,
            affinity: &self.affinity,
        }
    }

    pub fn stats_document(&self) -> StatsDocument<'_> {
        StatsDocument {
            version: self.version,
            stats: &self.stats,
        }
    }
}

/// One verdict of `svcctl stats`: its total and its rate between two readings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictRate {
    pub verdict: &'static str,
    pub packets: u64,
    pub per_second: f64,
}

/// `svcctl stats -o json`: one refresh.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RatesDocument {
    pub version: u32,
    pub interval_s: f64,
    pub stats: Vec<VerdictRate>,
}

/// Rounded to 3 decimals (milliseconds, millipackets): enough for people and scripts.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The totals of `after` and the rate of each verdict from `before` to `after`, taken
/// `interval_s` apart. A verdict missing in `before` counts from 0; a counter that went
/// down (the maps were recreated) and an interval that is not positive give rate 0.
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
    }
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
        BACKEND_STATE_TERMINATING => "terminating".into(),
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

fn scope_name(scope: u8) -> String {
    match scope {
        SCOPE_ALL => "all".into(),
        SCOPE_LOCAL => "local".into(),
        other => format!("unknown({other})"),
    }
}

/// CT_F_* bits as words.
pub fn ct_flag_words(flags: u8) -> Vec<String> {
    let mut words = Vec::new();
    for (bit, word) in [
        (CT_F_CLOSING, "closing"),
        (CT_F_REPLIED, "replied"),
        (CT_F_SNAT, "snat"),
    ] {
        if flags & bit != 0 {
            words.push(word.to_string());
        }
    }
    let rest = flags & !(CT_F_CLOSING | CT_F_REPLIED | CT_F_SNAT);
    if rest != 0 {
        words.push(format!("unknown({rest:#x})"));
    }
    words
}

/// SVC_F_* bits and their words, in bit order.
const SVC_FLAG_WORDS: [(u16, &str); 7] = [
    (SVC_F_EXTERNAL, "external"),
    (SVC_F_LOCAL, "policy-local"),
    (SVC_F_NODEPORT, "nodeport"),
    (SVC_F_LOADBALANCER, "loadbalancer"),
    (SVC_F_SOURCE_RANGES, "source-ranges"),
    (SVC_F_AFFINITY, "affinity"),
    (SVC_F_EXTERNAL_IP, "externalip"),
];

/// The bits that make up the kind (shown in TYPE, not in the table's FLAGS).
const SVC_KIND_BITS: u16 = SVC_F_EXTERNAL | SVC_F_NODEPORT | SVC_F_LOADBALANCER | SVC_F_EXTERNAL_IP;

/// Every SVC_F_* bit of a frontend as a word.
pub fn svc_flag_words(flags: u16) -> Vec<String> {
    let mut words: Vec<String> = SVC_FLAG_WORDS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, w)| w.to_string())
        .collect();
    let known = SVC_FLAG_WORDS.iter().fold(0, |acc, (bit, _)| acc | bit);
    let rest = flags & !known;
    if rest != 0 {
        words.push(format!("unknown({rest:#x})"));
    }
    words
}

/// The word for an unserved Service's SvcName::status.
pub fn unserved_reason(status: u8) -> String {
    match status {
        NAME_HEADLESS => "headless".into(),
        NAME_EXTERNALNAME => "externalname".into(),
        NAME_OTHER_PROXY => "other-proxy".into(),
        NAME_NO_IPV4_CLUSTERIP => "no-ipv4-clusterip".into(),
        NAME_NO_PORTS => "no-ports".into(),
        other => format!("unknown({other})"),
    }
}

/// What an unserved reason means, for the text table.
fn unserved_detail(reason: &str) -> &'static str {
    match reason {
        "headless" => "clusterIP None: DNS returns the endpoints",
        "externalname" => "DNS CNAME only",
        "other-proxy" => "labelled service.kubernetes.io/service-proxy-name: another proxy owns it",
        "no-ipv4-clusterip" => "no IPv4 cluster IP (IPv6 only or unset)",
        "no-ports" => "every port skipped (SCTP only, or addresses used by other Services)",
        _ => "-",
    }
}

/// The frontend kind word (as [`frontend_kind`]) of a served SvcName::kind.
fn name_kind(kind: u8) -> Option<&'static str> {
    match kind {
        NAME_KIND_CLUSTERIP => Some("clusterip"),
        NAME_KIND_NODEPORT => Some("nodeport"),
        NAME_KIND_EXTERNALIP => Some("externalip"),
        NAME_KIND_LOADBALANCER => Some("loadbalancer"),
        _ => None,
    }
}

/// The frontend's kind from its flags: nodeport, loadbalancer, externalip, or clusterip
/// when none of those is set (a mix is reported as an inconsistency; the first wins).
pub fn frontend_kind(flags: u16) -> &'static str {
    if flags & SVC_F_NODEPORT != 0 {
        "nodeport"
    } else if flags & SVC_F_LOADBALANCER != 0 {
        "loadbalancer"
    } else if flags & SVC_F_EXTERNAL_IP != 0 {
        "externalip"
    } else {
        "clusterip"
    }
}

type FrontendId = (Ipv4Addr, u16, u8);

fn frontend_id(key: &Svc4Key) -> FrontendId {
    (
        Ipv4Addr::from(u32::from_be(key.vip_be)),
        u16::from_be(key.port_be),
        key.proto,
    )
}

fn id_name(id: &FrontendId) -> String {
    format!("{}:{}/{}", id.0, id.1, protocol_name(id.2))
}

/// Decodes one conntrack entry as seen at `now_ns`. `revnat` is the SVC4_REVNAT entry of
/// the entry's rev_nat_id (used by reply entries: the address replies get as source).
pub fn decode_ct(key: &Ct4Key, value: &Ct4Value, now_ns: u64, revnat: Option<&RevNat4>) -> CtEntry {
    let target = Endpoint::from_be(value.addr_be, value.port_be);
    let snat = value.flags & CT_F_SNAT != 0;
    let (translated_dst, translated_src) = match key.kind {
        // Forward: the VIP becomes the backend; a masqueraded client becomes the NAT
        // endpoint.
        CT_KIND_SERVICE => (
            Some(target),
            snat.then(|| Endpoint::from_be(value.nat_addr_be, value.nat_port_be)),
        ),
        // Reply: the backend becomes the service address; the destination goes back to
        // the original client when masqueraded (else it already is the client).
        CT_KIND_REPLY => (
            snat.then_some(target),
            revnat.map(|r| Endpoint::from_be(r.vip_be, r.port_be)),
        ),
        _ => (None, None),
    };
    let idle_ns = now_ns.saturating_sub(value.last_seen_ns);
    let timeout_ns = ct_timeout_ns(key.proto, value.flags);
    let src = Endpoint::from_be(key.saddr_be, key.sport_be);
    let dst = Endpoint::from_be(key.daddr_be, key.dport_be);
    let (translated, backend) = match key.kind {
        CT_KIND_SERVICE => (
            Tuple {
                src: Some(translated_src.unwrap_or(src)),
                dst: translated_dst,
            },
            target,
        ),
        CT_KIND_REPLY => (
            Tuple {
                src: translated_src,
                dst: Some(translated_dst.unwrap_or(dst)),
            },
            src,
        ),
        _ => (
            Tuple {
                src: None,
                dst: None,
            },
            target,
        ),
    };
    CtEntry {
        service: None,
        kind: ct_kind_name(key.kind),
        protocol: protocol_name(key.proto),
        src,
        dst,
        translated_dst,
        translated_src,
        translated,
        backend_id: value.backend_id,
        backend,
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

/// `a.b.c.d/len` for a SVC4_SRC_RANGE key; None if the prefix length is not one the agent
/// writes (32 + 0..=32).
fn src_range_cidr(key: &SrcRangeKey) -> Option<(Ipv4Addr, u32)> {
    let len = key
        .0
        .checked_sub(SRC_RANGE_PREFIX_BASE)
        .filter(|l| *l <= 32)?;
    Some((Ipv4Addr::from(u32::from_be(key.1.addr_be)), len))
}

/// backend id -> frontend -> the scopes (SCOPE_ALL, SCOPE_LOCAL) it holds the backend in.
type References = BTreeMap<u32, BTreeMap<FrontendId, BTreeSet<u8>>>;

/// The valid slots 1..=count of one scope of a frontend, reporting missing slots, missing
/// backends, terminating backends in slots and slots past the count.
#[allow(clippy::too_many_arguments)]
fn decode_slots(
    name: &str,
    scope: u8,
    count: u16,
    slots: &BTreeMap<u16, Svc4Value>,
    backends: &BTreeMap<u32, Backend4>,
    id: FrontendId,
    references: &mut References,
    inconsistencies: &mut Vec<String>,
) -> Vec<ServiceBackend> {
    let what = if scope == SCOPE_LOCAL {
        "local slot"
    } else {
        "slot"
    };
    let mut list = Vec::new();
    for slot in 1..=count {
        let Some(slot_value) = slots.get(&slot) else {
            inconsistencies.push(format!("{name}: {what} {slot} of {count} is missing"));
            continue;
        };
        let Some(b) = backends.get(&slot_value.backend_id) else {
            inconsistencies.push(format!(
                "{name}: {what} {slot} points at backend {}, which is not in SVC4_BACKENDS",
                slot_value.backend_id
            ));
            continue;
        };
        references
            .entry(slot_value.backend_id)
            .or_default()
            .entry(id)
            .or_default()
            .insert(scope);
        if b.state == BACKEND_STATE_TERMINATING {
            inconsistencies.push(format!(
                "{name}: {what} {slot} points at backend {}, which is terminating (new flows may get it)",
                slot_value.backend_id
            ));
        }
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
    for (slot, slot_value) in slots.range(count.saturating_add(1)..) {
        inconsistencies.push(format!(
            "{name}: {what} {slot} (backend {}) is beyond count {count}",
            slot_value.backend_id
        ));
    }
    list
}

/// Decodes raw map contents; never fails: what does not fit together is listed in
/// `inconsistencies`.
pub fn decode(raw: &RawMaps, now_ns: u64) -> Snapshot {
    let backends: BTreeMap<u32, Backend4> = raw.backends.iter().copied().collect();
    let revnats: BTreeMap<u32, RevNat4> = raw.revnats.iter().copied().collect();
    let names: BTreeMap<u32, SvcName> = raw.names.iter().copied().collect();
    let mut inconsistencies = Vec::new();

    // [SCOPE_ALL, SCOPE_LOCAL]: (vip, port, proto) -> slot -> value. Frontends are the
    // SCOPE_ALL slot-0 entries.
    let mut scopes: [BTreeMap<FrontendId, BTreeMap<u16, Svc4Value>>; 2] = Default::default();
    for (key, value) in &raw.services {
        let id = frontend_id(key);
        match key.scope {
            SCOPE_ALL | SCOPE_LOCAL => {
                scopes[key.scope as usize]
                    .entry(id)
                    .or_default()
                    .insert(key.slot, *value);
            }
            other => inconsistencies.push(format!(
                "{}: slot {} has unknown scope {other} (the datapath never reads it)",
                id_name(&id),
                key.slot
            )),
        }
    }
    let [all_scope, local_scope] = &scopes;
    let frontends: BTreeMap<FrontendId, Svc4Value> = all_scope
        .iter()
        .filter_map(|(id, slots)| slots.get(&0).map(|v| (*id, *v)))
        .collect();

    // rev_nat_id -> source ranges, as (address, length) for numeric sorting.
    let mut ranges: BTreeMap<u32, BTreeSet<(Ipv4Addr, u32)>> = BTreeMap::new();
    for key in &raw.src_ranges {
        match src_range_cidr(key) {
            Some(cidr) => {
                ranges.entry(key.1.rev_nat_id).or_default().insert(cidr);
            }
            None => inconsistencies.push(format!(
                "source range {} (prefix length {}) for rev_nat_id {} has an invalid prefix length",
                Ipv4Addr::from(u32::from_be(key.1.addr_be)),
                key.0,
                key.1.rev_nat_id
            )),
        }
    }

    let mut references = References::new();
    let mut services = Vec::new();
    let empty = BTreeMap::new();
    for (id, value) in &frontends {
        let name = id_name(id);
        let my_slots = all_scope.get(id).unwrap_or(&empty);
        let mut all_slots = my_slots.clone();
        all_slots.remove(&0);
        let list = decode_slots(
            &name,
            SCOPE_ALL,
            value.count,
            &all_slots,
            &backends,
            *id,
            &mut references,
            &mut inconsistencies,
        );

        match revnats.get(&{ value.rev_nat_id }) {
            None => inconsistencies.push(format!(
                "{name}: rev_nat_id {} has no SVC4_REVNAT entry (replies are not reverse-translated)",
                value.rev_nat_id
            )),
            Some(rev)
                if Endpoint::from_be(rev.vip_be, rev.port_be) != Endpoint { addr: id.0, port: id.1 } =>
            {
                inconsistencies.push(format!(
                    "{name}: rev_nat_id {} translates replies to {}, not to the frontend",
                    value.rev_nat_id,
                    Endpoint::from_be(rev.vip_be, rev.port_be)
                ))
            }
            Some(_) => {}
        }

        let flags = value.flags;
        let kind_bits = flags & (SVC_F_NODEPORT | SVC_F_LOADBALANCER | SVC_F_EXTERNAL_IP);
        if kind_bits.count_ones() > 1 {
            inconsistencies.push(format!(
                "{name}: flags {flags:#x} name more than one kind ({})",
                svc_flag_words(kind_bits).join(", ")
            ));
        }
        if (kind_bits != 0) != (flags & SVC_F_EXTERNAL != 0) {
            inconsistencies.push(format!(
                "{name}: flags {flags:#x}: the external bit does not match the kind {}",
                frontend_kind(flags)
            ));
        }

        // Traffic policy Local: the SCOPE_LOCAL entries.
        let local = flags & SVC_F_LOCAL != 0;
        let local_entries = local_scope.get(id);
        let local_head = local_entries.and_then(|s| s.get(&0)).copied();
        let mut local_backends = Vec::new();
        if let Some(entries) = local_entries {
            if !local {
                inconsistencies.push(format!(
                    "{name}: has SCOPE_LOCAL entries but not the policy-local flag (they are unused)"
                ));
            }
            let mut slots = entries.clone();
            slots.remove(&0);
            match &local_head {
                Some(head) => {
                    local_backends = decode_slots(
                        &name,
                        SCOPE_LOCAL,
                        head.count,
                        &slots,
                        &backends,
                        *id,
                        &mut references,
                        &mut inconsistencies,
                    );
                    if head.count > value.count {
                        inconsistencies.push(format!(
                            "{name}: {} local backends but only {} in all",
                            head.count, value.count
                        ));
                    }
                }
                None => {
                    for (slot, v) in &slots {
                        inconsistencies.push(format!(
                            "{name}: local slot {slot} (backend {}) has no local slot 0",
                            v.backend_id
                        ));
                    }
                }
            }
        }
        if local && local_head.is_none() {
            inconsistencies.push(format!(
                "{name}: policy Local but no SCOPE_LOCAL entry (new flows that need a local backend are dropped)"
            ));
        }

        // loadBalancerSourceRanges.
        let my_ranges: Vec<String> = ranges
            .get(&value.rev_nat_id)
            .into_iter()
            .flatten()
            .map(|(addr, len)| format!("{addr}/{len}"))
            .collect();
        if flags & SVC_F_SOURCE_RANGES != 0 && my_ranges.is_empty() {
            inconsistencies.push(format!(
                "{name}: source-ranges flag without SVC4_SRC_RANGE entries (every new flow is dropped)"
            ));
        }
        if flags & SVC_F_SOURCE_RANGES == 0 && !my_ranges.is_empty() {
            inconsistencies.push(format!(
                "{name}: SVC4_SRC_RANGE entries without the source-ranges flag (they are ignored)"
            ));
        }

        let svc_name = names.get(&{ value.rev_nat_id });
        if let Some(n) = svc_name
            && name_kind(n.kind) != Some(frontend_kind(flags))
        {
            inconsistencies.push(format!(
                "{}: SVC_NAMES entry {} ({}/{}) is for kind {}, not {}",
                id_name(id),
                value.rev_nat_id,
                n.namespace(),
                n.name(),
                name_kind(n.kind).map_or_else(|| format!("unknown({})", n.kind), str::to_string),
                frontend_kind(flags)
            ));
        }
        let rejects = value.count == 0;
        let mut notes = Vec::new();
        if rejects {
            notes.push(
                "no endpoints: new connections are rejected (TCP RST / ICMP port unreachable)"
                    .to_string(),
            );
        } else if local && local_head.is_some_and(|h| h.count == 0) {
            notes.push(if flags & SVC_F_EXTERNAL != 0 {
                "policy Local and no endpoint on this node: new flows from outside the cluster are dropped".to_string()
            } else {
                "policy Local and no endpoint on this node: new flows are dropped".to_string()
            });
        }
        services.push(Service {
            service: svc_name.map(|n| ServiceName {
                namespace: n.namespace().to_string(),
                name: n.name().to_string(),
                port_name: n.port_name().to_string(),
            }),
            vip: id.0,
            port: id.1,
            protocol: protocol_name(id.2),
            kind: frontend_kind(flags),
            rev_nat_id: value.rev_nat_id,
            count: value.count,
            flags: svc_flag_words(flags),
            flags_raw: flags,
            affinity_timeout_secs: (flags & SVC_F_AFFINITY != 0).then_some(value.backend_id),
            source_ranges: my_ranges,
            rejects,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            backends: list,
            local_count: local_head.map(|h| h.count),
            local_backends,
        });
    }
    for (scope, what) in [(all_scope, "slot"), (local_scope, "local slot")] {
        for (id, my_slots) in scope {
            if frontends.contains_key(id) {
                continue;
            }
            for (slot, v) in my_slots {
                if *slot == 0 && what == "slot" {
                    continue; // would be a frontend
                }
                let detail = if *slot == 0 {
                    format!("count {}", v.count)
                } else {
                    format!("backend {}", v.backend_id)
                };
                inconsistencies.push(format!(
                    "{}: {what} {slot} ({detail}) has no frontend entry",
                    id_name(id)
                ));
            }
        }
    }
    let frontend_revs: BTreeSet<u32> = frontends.values().map(|v| v.rev_nat_id).collect();
    let mut unserved = Vec::new();
    for (key, n) in &names {
        if *key >= NAME_KEY_UNSERVED {
            unserved.push(Unserved {
                namespace: n.namespace().to_string(),
                name: n.name().to_string(),
                reason: unserved_reason(n.status),
            });
        } else if !frontend_revs.contains(key) {
            inconsistencies.push(format!(
                "SVC_NAMES entry {key} ({}/{}) belongs to no frontend",
                n.namespace(),
                n.name()
            ));
        }
    }
    unserved.sort();
    for (rev, cidrs) in &ranges {
        if !frontend_revs.contains(rev) {
            for (addr, len) in cidrs {
                inconsistencies.push(format!(
                    "source range {addr}/{len} for rev_nat_id {rev} belongs to no frontend"
                ));
            }
        }
    }

    let service_name = |rev: u32| {
        names.get(&rev).map(|n| ServiceName {
            namespace: n.namespace().to_string(),
            name: n.name().to_string(),
            port_name: n.port_name().to_string(),
        })
    };
    let mut ct: Vec<(Ct4Key, CtEntry)> = raw
        .conntrack
        .iter()
        .map(|(k, v)| {
            let rev = revnats.get(&{ v.rev_nat_id });
            let mut e = decode_ct(k, v, now_ns, rev);
            e.service = service_name(v.rev_nat_id);
            if k.kind == CT_KIND_REPLY && rev.is_none() && !e.expired {
                inconsistencies.push(format!(
                    "conntrack reply {} -> {}/{}: rev_nat_id {} has no SVC4_REVNAT entry (replies pass untranslated)",
                    e.src, e.dst, e.protocol, v.rev_nat_id
                ));
            }
            (*k, e)
        })
        .collect();
    ct.sort_by_key(|(k, e)| (k.kind, e.src, e.dst, k.proto));

    // Live flows per backend: service entries whose remembered backend address is still
    // the one of their backend id (a reused id gives the flow a fresh backend).
    let mut flows: BTreeMap<u32, usize> = BTreeMap::new();
    for (k, e) in &ct {
        if k.kind == CT_KIND_SERVICE
            && !e.expired
            && backends
                .get(&e.backend_id)
                .is_some_and(|b| Endpoint::from_be(b.addr_be, b.port_be) == e.backend)
        {
            *flows.entry(e.backend_id).or_default() += 1;
        }
    }
    let backend_list = backends
        .iter()
        .map(|(bid, b)| {
            let ep = Endpoint::from_be(b.addr_be, b.port_be);
            let refs: Vec<BackendRef> = references
                .get(bid)
                .into_iter()
                .flatten()
                .map(|(id, scopes)| {
                    let front = frontends.get(id);
                    BackendRef {
                        service: front.and_then(|f| service_name(f.rev_nat_id)),
                        vip: id.0,
                        port: id.1,
                        protocol: protocol_name(id.2),
                        kind: front.map_or("clusterip", |f| frontend_kind(f.flags)),
                        rev_nat_id: front.map_or(0, |f| f.rev_nat_id),
                        scopes: scopes
                            .iter()
                            .map(|s| if *s == SCOPE_LOCAL { "local" } else { "all" })
                            .collect(),
                    }
                })
                .collect();
            Backend {
                id: *bid,
                addr: ep.addr,
                port: ep.port,
                protocol: protocol_name(b.proto),
                state: backend_state_name(b.state),
                frontends: refs.len(),
                references: refs,
                flows: flows.get(bid).copied().unwrap_or(0),
            }
        })
        .collect();

    let by_rev: BTreeMap<u32, (FrontendId, Svc4Value)> = frontends
        .iter()
        .map(|(id, v)| (v.rev_nat_id, (*id, *v)))
        .collect();
    let mut affinity: Vec<AffinityEntry> = raw
        .affinity
        .iter()
        .map(|(k, v)| {
            let frontend = by_rev.get(&k.rev_nat_id);
            let timeout_secs = frontend
                .filter(|(_, f)| f.flags & SVC_F_AFFINITY != 0)
                .map(|(_, f)| f.backend_id);
            let idle_ns = now_ns.saturating_sub(v.last_used_ns);
            let expired = timeout_secs.is_none_or(|t| idle_ns > t as u64 * NS_PER_SEC);
            // The datapath's test: the slot of that scope (within its count) still holds
            // the backend, and the backend is active.
            let current = frontend.is_some_and(|(id, _)| {
                let Some(entries) = scopes.get(v.scope as usize).and_then(|s| s.get(id)) else {
                    return false;
                };
                let count = entries.get(&0).map_or(0, |h| h.count);
                v.slot >= 1
                    && v.slot <= count
                    && entries
                        .get(&v.slot)
                        .is_some_and(|s| s.backend_id == v.backend_id)
                    && backends
                        .get(&v.backend_id)
                        .is_some_and(|b| b.state == BACKEND_STATE_ACTIVE)
            });
            AffinityEntry {
                client: Ipv4Addr::from(u32::from_be(k.client_be)),
                rev_nat_id: k.rev_nat_id,
                service: revnats
                    .get(&{ k.rev_nat_id })
                    .map(|r| Endpoint::from_be(r.vip_be, r.port_be)),
                backend_id: v.backend_id,
                backend: backends
                    .get(&v.backend_id)
                    .map(|b| Endpoint::from_be(b.addr_be, b.port_be)),
                scope: scope_name(v.scope),
                slot: v.slot,
                last_used_ns: v.last_used_ns,
                idle_secs: idle_ns / NS_PER_SEC,
                timeout_secs,
                expired,
                current,
            }
        })
        .collect();
    affinity.sort_by_key(|a| (a.rev_nat_id, a.client));

    Snapshot {
        version: SCHEMA_VERSION,
        now_ns,
        services,
        unserved,
        backends: backend_list,
        conntrack: ct.into_iter().map(|(_, e)| e).collect(),
        affinity,
        stats: decode_stats(&raw.stats),
        inconsistencies,
    }
}

/// kubectl-style selection of Services: `-n NAMESPACE` and/or a Service name. A name
/// without a namespace matches that name in every namespace (svcctl shows all namespaces
/// by default, unlike kubectl).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.name.is_none()
    }

    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
    }

    /// Keeps the matching Services' frontends (those without a name entry never match),
    /// unserved entries, conntrack and affinity entries (by rev_nat_id) and the backends
    /// they use. Stats and inconsistencies stay as they are.
    pub fn apply(&self, snap: &mut Snapshot) {
        if self.is_empty() {
            return;
        }
        snap.services.retain(|s| {
            s.service
                .as_ref()
                .is_some_and(|n| self.matches(&n.namespace, &n.name))
        });
        snap.unserved
            .retain(|u| self.matches(&u.namespace, &u.name));
        let revs: BTreeSet<u32> = snap.services.iter().map(|s| s.rev_nat_id).collect();
        snap.conntrack.retain(|e| revs.contains(&e.rev_nat_id));
        snap.affinity.retain(|a| revs.contains(&a.rev_nat_id));
        let used: BTreeSet<u32> = snap
            .services
            .iter()
            .flat_map(|s| s.backends.iter().chain(&s.local_backends))
            .map(|b| b.backend_id)
            .chain(snap.conntrack.iter().map(|e| e.backend_id))
            .chain(snap.affinity.iter().map(|a| a.backend_id))
            .collect();
        snap.backends.retain(|b| used.contains(&b.id));
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

/// How much a table shows: `-o table` or `-o wide` (more columns: ids, raw flags, scopes,
/// timestamps, NAT addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Width {
    #[default]
    Normal,
    Wide,
}

/// `10.244.1.11:8080` (with its state when not active); wide: also `(id 1)`.
fn backend_list(list: &[ServiceBackend], width: Width) -> String {
    list.iter()
        .map(|b| {
            let mut cell = format!("{}:{}", b.addr, b.port);
            match (width, b.state.as_str()) {
                (Width::Wide, "active") => {
                    let _ = write!(cell, " (id {})", b.backend_id);
                }
                (Width::Wide, state) => {
                    let _ = write!(cell, " (id {}, {state})", b.backend_id);
                }
                (Width::Normal, "active") => {}
                (Width::Normal, state) => {
                    let _ = write!(cell, " ({state})");
                }
            }
            cell
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table's FLAGS cell: the frontend's flags other than its kind.
fn service_flags_cell(s: &Service) -> String {
    let words: Vec<String> = svc_flag_words(s.flags_raw & !SVC_KIND_BITS)
        .into_iter()
        .map(|w| match (w.as_str(), s.affinity_timeout_secs) {
            ("affinity", Some(t)) => format!("affinity({t}s)"),
            _ => w,
        })
        .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(",")
    }
}

fn dash_if_empty(cell: String) -> String {
    if cell.is_empty() { "-".into() } else { cell }
}

fn service_name_cell(name: Option<&ServiceName>) -> String {
    name.map_or_else(|| "-".to_string(), ServiceName::to_string)
}

/// The SERVICES section (then NOT SERVED, NOT ACTIVE BACKENDS and INCONSISTENCIES, when
/// there are any), as `-o table`.
pub fn render_services(snap: &Snapshot) -> String {
    render_services_as(snap, Width::Normal)
}

/// The SERVICES section. Wide: rev-NAT id, count, every flag word with the raw bits, the
/// affinity timeout, source ranges and local backends in their own columns, backend ids.
pub fn render_services_as(snap: &Snapshot, width: Width) -> String {
    let local_cell = |s: &Service| match s.local_count {
        None if s.flags_raw & SVC_F_LOCAL != 0 => Some("<missing>".to_string()),
        None => None,
        Some(_) if s.local_backends.is_empty() => Some("none".to_string()),
        Some(_) => Some(backend_list(&s.local_backends, width)),
    };
    let backends_cell = |s: &Service| {
        if s.rejects {
            "<none: rejects>".to_string()
        } else if s.backends.is_empty() {
            "<none usable: see inconsistencies>".to_string()
        } else {
            backend_list(&s.backends, width)
        }
    };
    let rows: Vec<Vec<String>> = snap
        .services
        .iter()
        .map(|s| {
            let name = service_name_cell(s.service.as_ref());
            let frontend = format!("{}:{}", s.vip, s.port);
            match width {
                Width::Normal => {
                    let mut backends = backends_cell(s);
                    if let Some(local) = local_cell(s) {
                        let _ = write!(backends, " (local: {local})");
                    }
                    if !s.source_ranges.is_empty() {
                        let _ = write!(backends, " (from: {})", s.source_ranges.join(", "));
                    }
                    vec![
                        name,
                        frontend,
                        s.protocol.clone(),
                        s.kind.to_string(),
                        service_flags_cell(s),
                        backends,
                    ]
                }
                Width::Wide => vec![
                    name,
                    frontend,
                    s.protocol.clone(),
                    s.kind.to_string(),
                    s.rev_nat_id.to_string(),
                    s.count.to_string(),
                    if s.flags_raw == 0 {
                        "-".to_string()
                    } else {
                        format!("{} ({:#x})", s.flags.join(","), s.flags_raw)
                    },
                    s.affinity_timeout_secs
                        .map_or("-".to_string(), |t| format!("{t}s")),
                    dash_if_empty(s.source_ranges.join(",")),
                    match local_cell(s) {
                        None => "-".to_string(),
                        Some(local) => match s.local_count {
                            Some(n) => format!("{n}: {local}"),
                            None => local,
                        },
                    },
                    backends_cell(s),
                ],
            }
        })
        .collect();
    let mut out = format!(
        "SERVICES ({} frontends, {} backends)\n",
        snap.services.len(),
        snap.backends.len()
    );
    let header: &[&str] = match width {
        Width::Normal => &["SERVICE", "FRONTEND", "PROTO", "TYPE", "FLAGS", "BACKENDS"],
        Width::Wide => &[
            "SERVICE",
            "FRONTEND",
            "PROTO",
            "TYPE",
            "REVNAT",
            "COUNT",
            "FLAGS",
            "AFFINITY",
            "SOURCE-RANGES",
            "LOCAL-BACKENDS",
            "BACKENDS",
        ],
    };
    if rows.is_empty() {
        out.push_str("(none)\n");
    } else {
        out.push_str(&render_table(header, &rows));
    }
    if !snap.unserved.is_empty() {
        let rows: Vec<Vec<String>> = snap
            .unserved
            .iter()
            .map(|u| {
                vec![
                    format!("{}/{}", u.namespace, u.name),
                    u.reason.clone(),
                    unserved_detail(&u.reason).to_string(),
                ]
            })
            .collect();
        let _ = write!(
            out,
            "\nNOT SERVED ({} Services without datapath entries)\n{}",
            rows.len(),
            render_table(&["SERVICE", "REASON", "WHY"], &rows)
        );
    }
    let terminating: Vec<String> = snap
        .backends
        .iter()
        .filter(|b| b.state != "active")
        .map(|b| format!("{}:{} (id {}, {})", b.addr, b.port, b.id, b.state))
        .collect();
    if !terminating.is_empty() {
        let _ = writeln!(
            out,
            "\nNOT ACTIVE BACKENDS (kept for established flows only)\n{}",
            terminating.join("\n")
        );
    }
    if !snap.inconsistencies.is_empty() {
        let _ = writeln!(out, "\nINCONSISTENCIES ({})", snap.inconsistencies.len());
        for line in &snap.inconsistencies {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}

/// The BACKENDS section (`svcctl dump backends`): every SVC4_BACKENDS entry with the
/// Services that use it. Wide: the frontends, their rev-NAT ids and slot scopes.
pub fn render_backends(snap: &Snapshot, width: Width) -> String {
    let rows: Vec<Vec<String>> = snap
        .backends
        .iter()
        .map(|b| {
            let mut row = vec![
                b.id.to_string(),
                format!("{}:{}", b.addr, b.port),
                b.protocol.clone(),
                b.state.clone(),
                b.flows.to_string(),
            ];
            match width {
                Width::Normal => {
                    let mut labels: Vec<String> = Vec::new();
                    for r in &b.references {
                        let label = r.label();
                        if !labels.contains(&label) {
                            labels.push(label);
                        }
                    }
                    row.push(dash_if_empty(labels.join(", ")));
                }
                Width::Wide => {
                    row.push(b.frontends.to_string());
                    let refs: Vec<String> = b
                        .references
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} rev={} scope={}",
                                r.frontend(),
                                service_name_cell(r.service.as_ref()),
                                r.rev_nat_id,
                                r.scopes.join(",")
                            )
                        })
                        .collect();
                    row.push(dash_if_empty(refs.join("; ")));
                }
            }
            row
        })
        .collect();
    let mut out = format!("BACKENDS ({} entries)\n", snap.backends.len());
    let header: &[&str] = match width {
        Width::Normal => &["ID", "BACKEND", "PROTO", "STATE", "FLOWS", "SERVICES"],
        Width::Wide => &[
            "ID",
            "BACKEND",
            "PROTO",
            "STATE",
            "FLOWS",
            "FRONTENDS",
            "REFERENCED-BY",
        ],
    };
    if rows.is_empty() {
        out.push_str("(none)\n");
    } else {
        out.push_str(&render_table(header, &rows));
    }
    out
}

/// The CONNTRACK section, as `-o table`.
pub fn render_conntrack(snap: &Snapshot) -> String {
    render_conntrack_as(snap, Width::Normal)
}

/// The CONNTRACK section. Normal: the main rewrite of each entry (service entries: the
/// destination, reply entries: the source). Wide: the whole translated tuple (with the
/// masquerade address), backend and rev-NAT ids, timeout and the raw timestamps.
pub fn render_conntrack_as(snap: &Snapshot, width: Width) -> String {
    let show = |ep: Option<Endpoint>| ep.map_or("?".to_string(), |ep| ep.to_string());
    let rows: Vec<Vec<String>> = snap
        .conntrack
        .iter()
        .map(|e| {
            let translated = match width {
                Width::Normal => match e.kind.as_str() {
                    "service" => format!("dst -> {}", show(e.translated_dst)),
                    "reply" => format!("src -> {}", show(e.translated_src)),
                    _ => "-".to_string(),
                },
                Width::Wide if e.kind == "service" || e.kind == "reply" => {
                    format!("{} -> {}", show(e.translated.src), show(e.translated.dst))
                }
                Width::Wide => "-".to_string(),
            };
            let mut flags = e.flags.clone();
            if e.expired {
                flags.push("expired".into());
            }
            let flags = dash_if_empty(flags.join(","));
            let mut row = vec![
                service_name_cell(e.service.as_ref()),
                e.kind.clone(),
                e.protocol.clone(),
                format!("{} -> {}", e.src, e.dst),
                translated,
            ];
            if width == Width::Wide {
                row.push(e.backend_id.to_string());
                row.push(e.rev_nat_id.to_string());
            }
            row.push(human_duration(e.age_secs));
            row.push(human_duration(e.idle_secs));
            if width == Width::Wide {
                row.push(human_duration(e.timeout_secs));
                row.push(e.created_ns.to_string());
                row.push(e.last_seen_ns.to_string());
            }
            row.push(flags);
            row
        })
        .collect();
    let mut out = format!("CONNTRACK ({} entries)\n", snap.conntrack.len());
    let header: &[&str] = match width {
        Width::Normal => &[
            "SERVICE",
            "KIND",
            "PROTO",
            "ORIGINAL",
            "TRANSLATED",
            "AGE",
            "IDLE",
            "FLAGS",
        ],
        Width::Wide => &[
            "SERVICE",
            "KIND",
            "PROTO",
            "ORIGINAL",
            "TRANSLATED",
            "BACKEND",
            "REVNAT",
            "AGE",
            "IDLE",
            "TIMEOUT",
            "CREATED-NS",
            "LAST-SEEN-NS",
            "FLAGS",
        ],
    };
    if !rows.is_empty() {
        out.push_str(&render_table(header, &rows));
    }
    out
}

/// The AFFINITY section (`svcctl dump affinity`), as `-o table`.
pub fn render_affinity(entries: &[AffinityEntry]) -> String {
    render_affinity_as(entries, Width::Normal)
}

/// The AFFINITY section. Wide: also the last-used timestamp in ns.
pub fn render_affinity_as(entries: &[AffinityEntry], width: Width) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|a| {
            let mut flags = Vec::new();
            if a.expired {
                flags.push("expired");
            }
            if !a.current {
                flags.push("stale");
            }
            let mut row = vec![
                a.client.to_string(),
                a.service
                    .map_or_else(|| format!("? (rev {})", a.rev_nat_id), |s| s.to_string()),
                a.rev_nat_id.to_string(),
                match a.backend {
                    Some(b) => format!("{b} (id {})", a.backend_id),
                    None => format!("? (id {})", a.backend_id),
                },
                format!("{}/{}", a.scope, a.slot),
                human_duration(a.idle_secs),
                a.timeout_secs
                    .map_or("-".to_string(), |t| human_duration(t as u64)),
            ];
            if width == Width::Wide {
                row.push(a.last_used_ns.to_string());
            }
            row.push(dash_if_empty(flags.join(",")));
            row
        })
        .collect();
    let mut out = format!("AFFINITY ({} entries)\n", entries.len());
    let header: &[&str] = match width {
        Width::Normal => &[
            "CLIENT", "SERVICE", "REVNAT", "BACKEND", "SLOT", "IDLE", "TIMEOUT", "FLAGS",
        ],
        Width::Wide => &[
            "CLIENT",
            "SERVICE",
            "REVNAT",
            "BACKEND",
            "SLOT",
            "IDLE",
            "TIMEOUT",
            "LAST-USED-NS",
            "FLAGS",
        ],
    };
    if !rows.is_empty() {
        out.push_str(&render_table(header, &rows));
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

/// `svcctl stats`: totals and rates; only the verdicts that counted a packet unless `all`.
pub fn render_rates(doc: &RatesDocument, all: bool) -> String {
    let rows: Vec<Vec<String>> = doc
        .stats
        .iter()
        .filter(|s| all || s.packets > 0)
        .map(|s| {
            vec![
                s.verdict.to_string(),
                s.packets.to_string(),
                format!("{:.1}", s.per_second),
            ]
        })
        .collect();
    let mut out = format!(
        "STATS (packets per verdict; rates over {:.1}s)\n",
        doc.interval_s
    );
    if rows.is_empty() {
        out.push_str("(no packets counted yet)\n");
    } else {
        out.push_str(&render_table(&["VERDICT", "PACKETS", "PER-SECOND"], &rows));
    }
    let hidden = doc.stats.len() - rows.len();
    if hidden > 0 {
        let _ = writeln!(
            out,
            "({hidden} verdicts at 0 not shown; --all or -o wide lists them)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use svc_common::{NAME_KIND_NONE, NAME_SERVED};

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
        let e = decode_ct(&k, &v, 112 * S, Some(&rev));
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
        let rep = decode_ct(&rk, &rv, 112 * S, Some(&rev));
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
            svc_flag_words(SVC_F_LOCAL | SVC_F_SOURCE_RANGES | SVC_F_AFFINITY | 0x8000),
            [
                "policy-local",
                "source-ranges",
                "affinity",
                "unknown(0x8000)"
            ]
        );
        assert!(svc_flag_words(0).is_empty());
        assert_eq!(ct_flag_words(CT_F_SNAT), ["snat"]);
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
            // rev 1 is named; rev 2 has no name entry.
            names: vec![
                (
                    1,
                    SvcName::new("default", "echo", "http", NAME_KIND_CLUSTERIP, NAME_SERVED),
                ),
                (
                    NAME_KEY_UNSERVED + 1,
                    SvcName::new("default", "db-alias", "", NAME_KIND_NONE, NAME_EXTERNALNAME),
                ),
                (
                    NAME_KEY_UNSERVED,
                    SvcName::new("default", "headless", "", NAME_KIND_NONE, NAME_HEADLESS),
                ),
            ],
            ..Default::default()
        }
    }

    /// A LoadBalancer with policy Local, source ranges and affinity: two backends, one of
    /// them on this node; plus a terminating backend (id 3) that no slot holds.
    fn lb_sample() -> RawMaps {
        let lb = [192, 0, 2, 100];
        let flags = SVC_F_EXTERNAL
            | SVC_F_LOADBALANCER
            | SVC_F_LOCAL
            | SVC_F_SOURCE_RANGES
            | SVC_F_AFFINITY;
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
        assert_eq!(v["stats"][0]["verdict"], "pass_not_ipv4");
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
    fn tables_are_aligned() {
        let snap = decode(&sample(), 112 * S);
        let text = render_services(&snap);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "SERVICE            FRONTEND       PROTO  TYPE       FLAGS  BACKENDS"
        );
        assert_eq!(
            lines[2],
            "default/echo:http  10.96.0.10:80  TCP    clusterip  -      10.244.1.11:8080, 10.244.1.12:8080"
        );
        assert_eq!(
            lines[3],
            "-                  10.96.0.11:80  TCP    clusterip  -      <none: rejects>"
        );
        assert_eq!(
            &lines[4..],
            [
                "",
                "NOT SERVED (2 Services without datapath entries)",
                "SERVICE           REASON        WHY",
                "default/db-alias  externalname  DNS CNAME only",
                "default/headless  headless      clusterIP None: DNS returns the endpoints",
            ]
        );
        let ct = render_conntrack(&snap);
        let lines: Vec<&str> = ct.lines().collect();
        assert_eq!(lines[0], "CONNTRACK (2 entries)");
        let col = lines[1].find("TRANSLATED").unwrap();
        assert_eq!(&lines[2][col..col + 6], "dst ->");
        assert_eq!(&lines[3][col..col + 6], "src ->");
        assert!(lines[2].ends_with("12s  1s    replied"), "{}", lines[2]);
    }

    #[test]
    fn lb_tables_show_type_flags_local_backends_and_snat() {
        let mut raw = lb_sample();
        raw.conntrack = snat_flow().to_vec();
        raw.revnats.push((3, revnat([192, 0, 2, 1], 30080)));
        let snap = decode(&raw, 112 * S);
        let text = render_services(&snap);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "SERVICE  FRONTEND         PROTO  TYPE          FLAGS                                        BACKENDS"
        );
        assert_eq!(
            lines[2],
            "-        192.0.2.100:443  TCP    loadbalancer  policy-local,source-ranges,affinity(10800s)  \
             10.244.1.11:8080, 10.244.1.12:8080 (local: 10.244.1.12:8080) \
             (from: 198.51.100.7/32, 203.0.113.0/24)"
        );
        assert!(
            text.contains("NOT ACTIVE BACKENDS (kept for established flows only)\n10.244.1.13:8080 (id 3, terminating)"),
            "{text}"
        );
        // The table shows the main rewrite and the snat flag; wide the whole translated
        // tuple, with the masquerade address.
        let ct = render_conntrack(&snap);
        assert!(
            ct.contains("198.51.100.7:50000 -> 192.0.2.1:30080  dst -> 10.244.1.12:8080  "),
            "{ct}"
        );
        assert!(
            ct.contains("10.244.1.12:8080 -> 192.0.2.1:41000    src -> 192.0.2.1:30080   "),
            "{ct}"
        );
        assert!(ct.contains("replied,snat"), "{ct}");
        let wide = render_conntrack_as(&snap, Width::Wide);
        assert!(
            wide.contains(
                "198.51.100.7:50000 -> 192.0.2.1:30080  192.0.2.1:41000 -> 10.244.1.12:8080"
            ),
            "{wide}"
        );
        assert!(
            wide.contains(
                "10.244.1.12:8080 -> 192.0.2.1:41000    192.0.2.1:30080 -> 198.51.100.7:50000"
            ),
            "{wide}"
        );
        let aff = render_affinity(&snap.affinity);
        let lines: Vec<&str> = aff.lines().collect();
        assert_eq!(lines[0], "AFFINITY (2 entries)");
        assert!(lines[1].starts_with("CLIENT"), "{aff}");
        assert!(
            lines[2].starts_with(
                "198.51.100.7  192.0.2.100:443  5       10.244.1.12:8080 (id 2)  local/1"
            ),
            "{aff}"
        );
        assert!(lines[2].ends_with("3h0m     -"), "{aff}");
        assert!(lines[3].ends_with("stale"), "{aff}");
    }

    #[test]
    fn every_verdict_is_listed() {
        let totals: Vec<(Verdict, u64)> = Verdict::ALL.iter().map(|v| (*v, 0)).collect();
        let text = render_stats(&decode_stats(&totals));
        for label in [
            "drop_no_local_backend",
            "drop_source_range",
            "drop_nat_failed",
        ] {
            assert!(text.contains(label), "{text}");
        }
        assert_eq!(text.lines().count(), Verdict::ALL.len() + 2);
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

    #[test]
    fn names_of_no_frontend_or_another_kind_are_reported() {
        let mut raw = sample();
        raw.names.push((
            2,
            SvcName::new("default", "empty", "", NAME_KIND_NODEPORT, NAME_SERVED),
        ));
        raw.names.push((
            9,
            SvcName::new("default", "gone", "", NAME_KIND_CLUSTERIP, NAME_SERVED),
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

    #[test]
    fn filter_keeps_the_selected_services_and_their_flows() {
        let snap = decode(&sample(), 112 * S);
        let filtered = |namespace: Option<&str>, name: Option<&str>| {
            let mut s = snap.clone();
            Filter {
                namespace: namespace.map(Into::into),
                name: name.map(Into::into),
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
    fn backends_table_names_the_services_wide_the_frontends_and_scopes() {
        let snap = decode(&sample(), 112 * S);
        let text = render_backends(&snap, Width::Normal);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "BACKENDS (3 entries)",
                "ID  BACKEND           PROTO  STATE   FLOWS  SERVICES",
                "1   10.244.1.11:8080  TCP    active  1      default/echo:http",
                "2   10.244.1.12:8080  TCP    active  0      default/echo:http",
                "3   10.244.1.13:8080  TCP    active  0      -",
            ]
        );
        let mut raw = lb_sample();
        raw.conntrack = snat_flow().to_vec();
        let wide = render_backends(&decode(&raw, 112 * S), Width::Wide);
        let lines: Vec<&str> = wide.lines().collect();
        assert_eq!(
            lines[1],
            "ID  BACKEND           PROTO  STATE        FLOWS  FRONTENDS  REFERENCED-BY"
        );
        assert_eq!(
            lines[3],
            "2   10.244.1.12:8080  TCP    active       1      1          192.0.2.100:443/TCP - rev=5 scope=all,local"
        );
        assert_eq!(
            lines[4],
            "3   10.244.1.13:8080  TCP    terminating  0      0          -"
        );
        assert_eq!(
            render_backends(&decode(&RawMaps::default(), 0), Width::Normal),
            "BACKENDS (0 entries)\n(none)\n"
        );
    }

    #[test]
    fn wide_tables_show_ids_flags_scopes_and_timestamps() {
        let mut raw = lb_sample();
        raw.conntrack = snat_flow().to_vec();
        raw.revnats.push((3, revnat([192, 0, 2, 1], 30080)));
        let snap = decode(&raw, 112 * S);
        let text = render_services_as(&snap, Width::Wide);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "SERVICE",
                "FRONTEND",
                "PROTO",
                "TYPE",
                "REVNAT",
                "COUNT",
                "FLAGS",
                "AFFINITY",
                "SOURCE-RANGES",
                "LOCAL-BACKENDS",
                "BACKENDS"
            ]
        );
        // Cells are separated by two spaces at least.
        let cells: Vec<&str> = lines[2]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            [
                "-",
                "192.0.2.100:443",
                "TCP",
                "loadbalancer",
                "5",
                "2",
                "external,policy-local,loadbalancer,source-ranges,affinity (0x3b)",
                "10800s",
                "198.51.100.7/32,203.0.113.0/24",
                "1: 10.244.1.12:8080 (id 2)",
                "10.244.1.11:8080 (id 1), 10.244.1.12:8080 (id 2)"
            ]
        );
        // Aligned: the last column starts at the same place in both lines.
        assert_eq!(
            lines[1].rfind("  BACKENDS").unwrap() + 2,
            lines[2].find("10.244.1.11:8080 (id 1)").unwrap()
        );
        let ct = render_conntrack_as(&snap, Width::Wide);
        let lines: Vec<&str> = ct.lines().collect();
        assert!(lines[1].starts_with("SERVICE  KIND"), "{ct}");
        assert!(
            lines[1].ends_with(
                "BACKEND  REVNAT  AGE  IDLE  TIMEOUT  CREATED-NS    LAST-SEEN-NS  FLAGS"
            ),
            "{ct}"
        );
        assert!(
            lines[2].ends_with(
                "2        3       12s  1s    6h0m     100000000000  111000000000  replied,snat"
            ),
            "{ct}"
        );
        let aff = render_affinity_as(&snap.affinity, Width::Wide);
        assert!(
            aff.lines().nth(1).unwrap().contains("LAST-USED-NS"),
            "{aff}"
        );
        assert!(aff.contains("100000000000"), "{aff}");
    }

    #[test]
    fn section_documents_are_the_snapshot_fields_in_json_and_yaml() {
        let snap = decode(&sample(), 112 * S);
        let full = serde_json::to_value(&snap).unwrap();
        let docs = [
            (
                serde_json::to_value(snap.services_document()).unwrap(),
                &["version", "services", "unserved", "inconsistencies"][..],
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
        for (doc, keys) in &docs {
            let have: Vec<&String> = doc.as_object().unwrap().keys().collect();
            assert_eq!(have.len(), keys.len(), "{doc}");
            for key in *keys {
                assert_eq!(doc[key], full[key], "{key}");
            }
        }
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

    fn totals(pairs: &[(&'static str, u64)]) -> Vec<VerdictTotal> {
        pairs
            .iter()
            .map(|(verdict, total)| VerdictTotal {
                verdict,
                total: *total,
            })
            .collect()
    }

    #[test]
    fn rates_are_the_difference_over_the_interval() {
        let before = totals(&[("pass_not_ipv4", 10), ("dnat_new", 4), ("rev_nat", 9)]);
        let after = totals(&[
            ("pass_not_ipv4", 10),
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
                ("pass_not_ipv4", 10, 0.0),
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
    fn rates_table_hides_zero_verdicts_unless_all() {
        let before = totals(&[("pass_not_ipv4", 0), ("dnat_new", 4), ("rev_nat", 0)]);
        let after = totals(&[("pass_not_ipv4", 0), ("dnat_new", 10), ("rev_nat", 0)]);
        let doc = verdict_rates(&before, &after, 2.0);
        assert_eq!(
            render_rates(&doc, false).lines().collect::<Vec<_>>(),
            [
                "STATS (packets per verdict; rates over 2.0s)",
                "VERDICT   PACKETS  PER-SECOND",
                "dnat_new  10       3.0",
                "(2 verdicts at 0 not shown; --all or -o wide lists them)",
            ]
        );
        let all = render_rates(&doc, true);
        assert_eq!(all.lines().count(), 5, "{all}");
        assert!(all.contains("pass_not_ipv4  0        0.0"), "{all}");
        let zero = verdict_rates(&before[..1], &after[..1], 1.0);
        assert!(render_rates(&zero, false).contains("(no packets counted yet)"));
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
            SvcName::new("shop", "cart", "", NAME_KIND_CLUSTERIP, NAME_SERVED),
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
}
