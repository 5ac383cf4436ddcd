//! The snapshot of the maps and the documents svcctl prints with `-o json` / `-o yaml`: every
//! field's JSON name is its Rust name, and its meaning and form are documented here, next
//! to it. Field names are stable; new fields may be added, none are renamed or removed
//! without bumping [`SCHEMA_VERSION`], which every document carries as `version`.
//!
//! Forms: addresses are dotted-quad strings, ports host-order numbers, protocols `"TCP"` /
//! `"UDP"` (anything else: `"proto-<number>"`), an [`Endpoint`] is `{"addr", "port"}`,
//! words read from a map that this build does not know are `"unknown(<number>)"` (bits:
//! `"unknown(0x..)"`). Times are `bpf_ktime_get_ns()` nanoseconds (CLOCK_MONOTONIC).
//!
//! History. Version 3 (from 2): services gained `service` (namespace, name and port name,
//! from SVC_NAMES); `unserved` was added. Version 2 (from 1): services gained `kind`,
//! `affinity_timeout_secs`, `source_ranges`, `local_count`, `local_backends`; their
//! `flags` became words (the number is `flags_raw`); conntrack reply entries take
//! `translated_src` from SVC4_REVNAT and carry the masquerade translation; backends can be
//! `"terminating"`; `affinity` was added. Additions without a version change: backends
//! gained `references` and `flows`; conntrack entries gained `service`, `translated` and
//! `backend`; the section documents and `svcctl stats` were added; the snapshot and the
//! services document gained `problems`. Expired conntrack and affinity entries are left
//! out unless `--show-expired` (a filter, like `-n`: every field keeps its meaning, and
//! `expired` is still there, true only with the flag), counted in the new
//! `expired_hidden` (the snapshot: `{"conntrack", "affinity"}`; the conntrack and
//! affinity documents: a number). The snapshot and the services document gained
//! `service_cidrs` (the service CIDRs and the number of allocated ClusterIPs).
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

pub use crate::dataplane::layout::Endpoint;

/// Version of the JSON schema of every document here.
pub const SCHEMA_VERSION: u32 = 3;

/// `svcctl dump -o json`: everything the maps hold, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// CLOCK_MONOTONIC when the snapshot was taken (ages and expiry are relative to it).
    pub now_ns: u64,
    /// One per frontend (the slot-0 entry of scope all), sorted by vip, port, protocol.
    pub services: Vec<Service>,
    /// Services with no datapath entries (SVC_NAMES keys from NAME_KEY_UNSERVED), sorted by
    /// namespace, name.
    pub unserved: Vec<Unserved>,
    /// What a packet no frontend takes gets: the service CIDRs and the allocated
    /// ClusterIPs (not filtered by `-n`).
    pub service_cidrs: ServiceCidrs,
    /// The problems of the agent's input as it logged them (`<source> <object>: <reason>`,
    /// e.g. a file that does not parse, an invalid field, an address another Service
    /// holds), in the agent's order (SVC_PROBLEMS).
    pub problems: Vec<String>,
    /// Every SVC4_BACKENDS entry, sorted by id.
    pub backends: Vec<Backend>,
    /// Sorted by kind (service first), src, dst, protocol.
    pub conntrack: Vec<CtEntry>,
    /// Session affinity (SVC4_AFFINITY), sorted by rev_nat_id, client.
    pub affinity: Vec<AffinityEntry>,
    /// How many expired conntrack and affinity entries (of the selected Services) were
    /// left out of `conntrack` and `affinity`: svcctl shows only live ones unless
    /// `--show-expired`, which keeps them (with `"expired": true`) and makes both 0.
    pub expired_hidden: ExpiredHidden,
    /// Every verdict, in index order.
    pub stats: Vec<VerdictTotal>,
    /// Map states a packet could trip over (missing slots, missing backends, stale slots,
    /// rev-NAT mismatches, scope/flag mismatches, orphan source ranges, names of no
    /// frontend or of another kind), in words; transiently non-empty while the agent
    /// syncs. See [`super::consistency`].
    pub inconsistencies: Vec<String>,
}

/// Expired entries left out of a snapshot (see [`Snapshot::expired_hidden`]):
/// `{"conntrack": 12, "affinity": 0}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExpiredHidden {
    pub conntrack: usize,
    pub affinity: usize,
}

/// The Service a frontend belongs to (its SVC_NAMES entry): `{"namespace": "default",
/// "name": "echo", "port_name": "http"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
    /// `""` when the Service port has no name.
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
    /// `"headless"`, `"externalname"`, `"other-proxy"`, `"no-ipv4-clusterip"`,
    /// `"no-ports"` (svc_common::UnservedReason) or `"unknown(<n>)"`.
    pub reason: String,
    /// The reason as a word (not in the JSON: `reason` is its label).
    #[serde(skip)]
    pub why: Option<svc_common::UnservedReason>,
}

/// The addresses no frontend takes (SVC4_SVC_CIDR, SVC4_CLUSTERIPS and their IPv6
/// counterparts), as kube-proxy's nftables mode treats them: `{"cidrs": ["10.96.0.0/12",
/// "fd00:10:96::/112"], "cluster_ips": 12, "ipv6_cluster_ips": 5,
/// "other_proxy_cluster_ips": 0}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCidrs {
    /// The service CIDRs of both families, sorted (IPv4 first), as `"10.96.0.0/12"` or
    /// `"fd00:10:96::/112"`: a packet to an address inside them that no Service has is
    /// dropped (`drop_unallocated`). Empty: none is dropped.
    pub cidrs: Vec<String>,
    /// Allocated ClusterIPs (every SVC4_CLUSTERIPS and SVC6_CLUSTERIPS entry): a packet to
    /// one on a port/protocol no Service has is rejected (TCP RST / ICMP or ICMPv6 port
    /// unreachable), unless it is one of `other_proxy_cluster_ips`.
    pub cluster_ips: usize,
    /// Of `cluster_ips`, the IPv6 ones (SVC6_CLUSTERIPS entries).
    pub ipv6_cluster_ips: usize,
    /// Those only other proxies' Services have (`other-proxy`): left alone.
    pub other_proxy_cluster_ips: usize,
}

/// A frontend (an address:port/protocol a Service answers on, either family) and its
/// backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The SVC_NAMES entry of rev_nat_id; null: no name entry.
    pub service: Option<ServiceName>,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// `"clusterip"`, `"nodeport"`, `"externalip"` or `"loadbalancer"`
    /// (svc_common::FrontendKind, from the flags).
    pub kind: &'static str,
    pub rev_nat_id: u32,
    /// Backend slots of scope all.
    pub count: u16,
    /// Every SVC_F_* bit set, as words: `"external"`, `"policy-local"`, `"nodeport"`,
    /// `"loadbalancer"`, `"source-ranges"`, `"affinity"`, `"externalip"`,
    /// `"unknown(0x..)"`.
    pub flags: Vec<String>,
    /// The flags as a number.
    pub flags_raw: u16,
    /// sessionAffinity ClientIP timeout; null without affinity.
    pub affinity_timeout_secs: Option<u32>,
    /// SVC4_SRC_RANGE (SVC6_SRC_RANGE for an IPv6 frontend) entries of this rev_nat_id, as
    /// `"203.0.113.0/24"` or `"2001:db8::/64"`.
    pub source_ranges: Vec<String>,
    /// count == 0: new flows get TCP RST / ICMP port unreachable.
    pub rejects: bool,
    /// Remarks for people (rejects, no local endpoint); null: none.
    pub note: Option<String>,
    /// The valid slots 1..=count, in slot order.
    pub backends: Vec<ServiceBackend>,
    /// Count of the scope-local entry; null: there is none.
    pub local_count: Option<u16>,
    /// This node's backends (traffic policy Local): the valid scope-local slots, as
    /// `backends`.
    pub local_backends: Vec<ServiceBackend>,
}

/// A valid slot of a frontend and the backend it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceBackend {
    pub slot: u16,
    pub backend_id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// `"active"`, `"terminating"` (svc_common::BackendState) or `"unknown(<n>)"`.
    pub state: String,
}

/// A SVC4_BACKENDS or SVC6_BACKENDS entry and who uses it (ids are unique across the two).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// `"active"`, `"terminating"` (only kept for the flows it already has) or
    /// `"unknown(<n>)"`.
    pub state: String,
    /// How many frontends hold it in a valid slot (any scope): `references.len()`.
    pub frontends: usize,
    /// The frontends that hold it, sorted as `services`.
    pub references: Vec<BackendRef>,
    /// Live (not expired) service conntrack entries whose backend is this one (same id
    /// and address); 0 when the conntrack table was not read (never in svcctl output that
    /// shows backends).
    pub flows: usize,
}

/// A frontend that holds a backend in one of its valid slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendRef {
    /// As in [`Service::service`].
    pub service: Option<ServiceName>,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// As in [`Service::kind`].
    pub kind: &'static str,
    pub rev_nat_id: u32,
    /// `"all"` and/or `"local"` (svc_common::Scope): the slot lists that hold it.
    pub scopes: Vec<&'static str>,
}

impl BackendRef {
    /// `10.96.0.10:80/TCP`, `[fd00::10]:80/TCP`.
    pub fn frontend(&self) -> String {
        format!(
            "{}/{}",
            crate::addr::HostPort(self.vip, self.port),
            self.protocol
        )
    }

    /// The Service name, or the frontend when it has no name entry.
    pub fn label(&self) -> String {
        self.service
            .as_ref()
            .map_or_else(|| self.frontend(), ServiceName::to_string)
    }
}

/// A packet's addresses after translation; null where they are not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tuple {
    pub src: Option<Endpoint>,
    pub dst: Option<Endpoint>,
}

/// A conntrack entry (SVC4_CT or SVC6_CT).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CtEntry {
    /// The SVC_NAMES entry of rev_nat_id; null: none (e.g. the Service is gone).
    pub service: Option<ServiceName>,
    /// `"service"`, `"reply"` (svc_common::CtKind) or `"unknown(<n>)"`.
    pub kind: String,
    pub protocol: String,
    /// The tuple of the map key. service: client -> VIP; reply: backend -> client (or
    /// -> the masquerade address:port).
    pub src: Endpoint,
    pub dst: Endpoint,
    /// service: the backend the VIP becomes; reply: the original client (masqueraded
    /// flows only, else null).
    pub translated_dst: Option<Endpoint>,
    /// service: the masquerade address:port (masqueraded flows only, else null); reply:
    /// the service address (from SVC4_REVNAT; null if it is missing).
    pub translated_src: Option<Endpoint>,
    /// The whole tuple after translation: src/dst with the translated_* parts applied
    /// (null: unknown, i.e. a reply without SVC4_REVNAT entry, or an unknown kind).
    pub translated: Tuple,
    pub backend_id: u32,
    /// The flow's backend as the entry remembers it (service: translated_dst; reply: src).
    pub backend: Endpoint,
    pub rev_nat_id: u32,
    /// CT_F_* bits as words: `"closing"`, `"replied"`, `"snat"`, `"unknown(0x..)"`.
    pub flags: Vec<String>,
    pub flags_raw: u8,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// now - created (0 if in the future).
    pub age_secs: u64,
    /// now - last seen.
    pub idle_secs: u64,
    /// svc_common::ct_timeout_ns(protocol, flags).
    pub timeout_secs: u64,
    /// Idle longer than the timeout: the datapath ignores it.
    pub expired: bool,
}

/// A session affinity entry (SVC4_AFFINITY or SVC6_AFFINITY).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AffinityEntry {
    pub client: IpAddr,
    pub rev_nat_id: u32,
    /// From SVC4_REVNAT; null if missing.
    pub service: Option<Endpoint>,
    pub backend_id: u32,
    /// null if the backend is gone.
    pub backend: Option<Endpoint>,
    /// `"all"`, `"local"` or `"unknown(<n>)"`.
    pub scope: String,
    pub slot: u16,
    pub last_used_ns: u64,
    pub idle_secs: u64,
    /// The frontend's affinity timeout (null: the frontend is gone or has no affinity).
    pub timeout_secs: Option<u32>,
    /// Idle longer than the timeout, or no timeout.
    pub expired: bool,
    /// Its slot still holds that backend, active: a new flow that is not expired reuses
    /// it.
    pub current: bool,
}

/// One verdict counter, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerdictTotal {
    /// svc_common::Verdict::label, e.g. `"dnat_new"`.
    pub verdict: &'static str,
    pub total: u64,
}

/// `svcctl dump services -o json`: the snapshot fields of the same names.
#[derive(Clone, Debug, Serialize)]
pub struct ServicesDocument<'a> {
    pub version: u32,
    pub services: &'a [Service],
    pub unserved: &'a [Unserved],
    pub service_cidrs: &'a ServiceCidrs,
    pub problems: &'a [String],
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
    /// Expired entries left out of `conntrack` (0 with `--show-expired`).
    pub expired_hidden: usize,
}

/// `svcctl dump affinity -o json`.
#[derive(Clone, Debug, Serialize)]
pub struct AffinityDocument<'a> {
    pub version: u32,
    pub now_ns: u64,
    pub affinity: &'a [AffinityEntry],
    /// Expired entries left out of `affinity` (0 with `--show-expired`).
    pub expired_hidden: usize,
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
            service_cidrs: &self.service_cidrs,
            problems: &self.problems,
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
            expired_hidden: self.expired_hidden.conntrack,
        }
    }

    pub fn affinity_document(&self) -> AffinityDocument<'_> {
        AffinityDocument {
            version: self.version,
            now_ns: self.now_ns,
            affinity: &self.affinity,
            expired_hidden: self.expired_hidden.affinity,
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
    /// svc_common::Verdict::label.
    pub verdict: &'static str,
    /// The total at the second reading, summed over CPUs.
    pub packets: u64,
    /// (second - first) / interval_s, 3 decimals; 0 if the counter went down (the maps
    /// were recreated).
    pub per_second: f64,
}

/// `svcctl stats -o json`: one refresh (under `--watch` one compact JSON document per
/// line, or YAML documents each starting with `---`). Lists every verdict, in index
/// order, also those at 0, and the per-Service counters of the selected Services.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RatesDocument {
    pub version: u32,
    /// Seconds between the two readings, as measured.
    pub interval_s: f64,
    pub stats: Vec<VerdictRate>,
    /// One entry per frontend (SVC_SVC_STATS, by rev_nat_id) of the Services `-n` and
    /// SERVICE select (every frontend without them; frontends without a name entry only
    /// then), sorted as `services` of the snapshot.
    pub services: Vec<ServiceRate>,
}

/// One frontend's per-Service counters (SVC_SVC_STATS summed over CPUs) at the second
/// reading, and their rates. Each packet is counted once (XDP then TC on the external
/// interface count it once); bytes are whole frames as they arrived, Ethernet header
/// included.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceRate {
    /// The SVC_NAMES entry of rev_nat_id; null: no name entry.
    pub service: Option<ServiceName>,
    /// The frontend, as `services` of the snapshot shows it.
    pub kind: &'static str,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub rev_nat_id: u32,
    /// Packets to the Service translated towards a backend, and their bytes.
    pub packets: u64,
    pub bytes: u64,
    /// New flows given a backend.
    pub new_flows: u64,
    /// Replies translated back to the Service address, and their bytes.
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// New flows dropped or rejected, by reason (svc_common::ServiceDrop's labels:
    /// `no_endpoints` (rejected: TCP RST / ICMP port unreachable), `no_local_backend`,
    /// `source_range`, `no_backend`, `nat_failed`, `ct_failed`, `rewrite_failed`); every
    /// reason, also at 0.
    pub drops: BTreeMap<&'static str, u64>,
    /// The sum of `drops`.
    pub dropped: u64,
    /// (second - first) / interval_s of `packets`, `bytes`, `new_flows`, `reply_packets`
    /// and `dropped`, 3 decimals; 0 if a counter went down (the entry was recreated).
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
    pub new_flows_per_second: f64,
    pub reply_packets_per_second: f64,
    pub dropped_per_second: f64,
}
