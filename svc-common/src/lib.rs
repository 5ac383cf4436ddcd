//! Map keys, values, names and sizes shared by the eBPF programs (svc-ebpf), the agent and
//! svcctl. Every type is `#[repr(C)]` with explicit padding and derives bytemuck's
//! Pod/Zeroable, so a layout with a hole fails to compile instead of leaking stack bytes
//! into a map key.
//!
//! Byte order: fields that end in `_be` hold network byte order exactly as the packet
//! carries them (the kernel side compares them against packet bytes without converting).
//! Everything else is host order. Conversion happens in one place on the user side
//! (`svc_agent::dataplane`).
//!
//! IPv4 and IPv6 get separate maps (as in Cilium: `lb4_*` / `lb6_*`); this file defines the
//! `*4` types. IPv6 will add `*6` types and maps beside them without touching these.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// IP protocol numbers as they appear in the IPv4 header.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

// ---------------------------------------------------------------------------------------
// Map names (also the file names of the pins under the agent's bpffs directory) and sizes.
// BPF object names are limited to 15 characters.
// ---------------------------------------------------------------------------------------

pub const SVC4_MAP: &str = "SVC4_SERVICES";
pub const BACKEND4_MAP: &str = "SVC4_BACKENDS";
pub const REVNAT4_MAP: &str = "SVC4_REVNAT";
pub const CT4_MAP: &str = "SVC4_CT";
pub const STATS_MAP: &str = "SVC_STATS";
pub const AFFINITY4_MAP: &str = "SVC4_AFFINITY";
pub const SOCK_REVNAT4_MAP: &str = "SVC4_SOCK_RNAT";
pub const SRC_RANGE4_MAP: &str = "SVC4_SRC_RANGE";
/// Names of Services for svcctl (never read by the programs): see [`SvcName`].
pub const NAMES_MAP: &str = "SVC_NAMES";
/// The load-time configuration the running programs were loaded with (never read by the
/// programs, which get it as globals): see [`DatapathConfig4`].
pub const CONFIG_MAP: &str = "SVC_CONFIG";

/// The default capacity of the maps the agent writes (services, backends, rev-NAT; the
/// agent's --lb-map-max, like Cilium's --bpf-lb-map-max). Those maps are not preallocated,
/// so a large capacity costs nothing until it is used.
pub const DEFAULT_LB_MAP_MAX: u32 = 262_144;
/// Frontend slots plus one slot per backend of every service port.
pub const SVC4_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
pub const BACKEND4_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
pub const REVNAT4_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
/// Two entries per flow (forward and reply). LRU maps evict in per-CPU batches before they
/// are full, so this is sized well above the flows we expect to hold.
pub const CT4_MAP_SIZE: u32 = 262144;
pub const AFFINITY4_MAP_SIZE: u32 = 65536;
pub const SOCK_REVNAT4_MAP_SIZE: u32 = 65536;
pub const SRC_RANGE4_MAP_SIZE: u32 = 16384;
/// One entry per rev_nat_id plus the Services that get no entries.
pub const NAMES_MAP_SIZE: u32 = REVNAT4_MAP_SIZE + NAMES_UNSERVED_MAX;
/// Room in SVC_NAMES for Services without datapath entries.
pub const NAMES_UNSERVED_MAX: u32 = 16384;

/// Program names as they appear in the object file (and in `bpftool prog`).
pub const TC_PROG: &str = "svc_tc_ingress";
pub const XDP_PROG: &str = "svc_xdp";
/// Socket-level programs for traffic the node's own processes originate.
pub const CONNECT4_PROG: &str = "svc_connect4";
pub const SENDMSG4_PROG: &str = "svc_sendmsg4";
pub const RECVMSG4_PROG: &str = "svc_recvmsg4";
/// An XDP program that only passes: the benchmark's per-packet floor (never attached).
pub const BENCH_PASS_PROG: &str = "svc_bench_pass";

// ---------------------------------------------------------------------------------------
// Services map: one frontend entry (slot 0) and `count` backend-slot entries (1..=count)
// per {VIP, port, protocol}. Cilium's lb4_key / lb4_service model.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Svc4Key {
    /// Service address (ClusterIP), network order.
    pub vip_be: u32,
    /// Service port, network order.
    pub port_be: u16,
    /// 0 = the frontend entry; 1..=count = backend slots.
    pub slot: u16,
    /// PROTO_TCP or PROTO_UDP.
    pub proto: u8,
    /// SCOPE_ALL: every usable backend. SCOPE_LOCAL: only this node's, present for
    /// frontends with SVC_F_LOCAL (traffic policy Local); its slot 0 counts them.
    pub scope: u8,
    pub _pad: [u8; 2],
}

pub const SCOPE_ALL: u8 = 0;
pub const SCOPE_LOCAL: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Svc4Value {
    /// Backend slots: the id in SVC4_BACKENDS. Frontend (slot 0): the session affinity
    /// timeout in seconds when SVC_F_AFFINITY is set (as Cilium's union), else 0.
    pub backend_id: u32,
    /// Frontend and slots: the id in SVC4_REVNAT, unique per {VIP, port, protocol}. 32
    /// bits (Cilium's is 16), so more than 65535 frontends fit.
    pub rev_nat_id: u32,
    /// Frontend: number of backend slots (0 = no endpoints: reject). Backend slots: 0.
    pub count: u16,
    /// Frontend: SVC_F_* bits.
    pub flags: u16,
}

// Flag bits of a frontend's Svc4Value::flags (slot 0, SCOPE_ALL entry).

/// A NodePort, externalIP or LoadBalancer address: externalTrafficPolicy applies, and
/// with policy Cluster every flow is masqueraded.
pub const SVC_F_EXTERNAL: u16 = 1 << 0;
/// Traffic policy Local (internalTrafficPolicy for ClusterIPs, externalTrafficPolicy for
/// external addresses): a SCOPE_LOCAL entry lists this node's backends.
pub const SVC_F_LOCAL: u16 = 1 << 1;
/// The address is one of the node's (NodePort).
pub const SVC_F_NODEPORT: u16 = 1 << 2;
/// A status.loadBalancer.ingress IP.
pub const SVC_F_LOADBALANCER: u16 = 1 << 3;
/// loadBalancerSourceRanges apply: sources not in SVC4_SRC_RANGE are dropped.
pub const SVC_F_SOURCE_RANGES: u16 = 1 << 4;
/// sessionAffinity: ClientIP; the timeout is in backend_id.
pub const SVC_F_AFFINITY: u16 = 1 << 5;
/// A spec.externalIPs address.
pub const SVC_F_EXTERNAL_IP: u16 = 1 << 6;

// ---------------------------------------------------------------------------------------
// Backends map: id -> pod address and target port.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Backend4 {
    /// Pod (endpoint) address, network order.
    pub addr_be: u32,
    /// Target port, network order.
    pub port_be: u16,
    pub proto: u8,
    /// BACKEND_STATE_*.
    pub state: u8,
}

pub const BACKEND_STATE_ACTIVE: u8 = 0;
/// Terminating: kept for the flows it already has, never chosen for a new one.
pub const BACKEND_STATE_TERMINATING: u8 = 1;

// ---------------------------------------------------------------------------------------
// Reverse NAT map: rev_nat_id (widened to u32) -> the service address replies must carry.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RevNat4 {
    pub vip_be: u32,
    pub port_be: u16,
    pub _pad: [u8; 2],
}

// ---------------------------------------------------------------------------------------
// Conntrack (LRU hash). Every translated flow has two entries:
// - CT_KIND_SERVICE keyed by the client's original tuple {client, VIP, client port,
//   service port}: which backend the flow was given. The VIP in the key keeps entries
//   unique per service (Cilium #11810).
// - CT_KIND_REPLY keyed by the reply tuple as it leaves the backend {backend, client,
//   target port, client port}: which service address replies are reverse-translated to.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Ct4Key {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// CT_KIND_*.
    pub kind: u8,
    pub _pad: [u8; 2],
}

pub const CT_KIND_SERVICE: u8 = 1;
pub const CT_KIND_REPLY: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Ct4Value {
    /// bpf_ktime_get_ns() when the flow was created (CLOCK_MONOTONIC).
    pub created_ns: u64,
    /// bpf_ktime_get_ns() of the last packet in either direction.
    pub last_seen_ns: u64,
    /// The backend chosen for this flow (both entries of the flow).
    pub backend_id: u32,
    /// Service entries: the backend the destination is translated to. Reply entries: the
    /// original client, which the destination of a reply is translated back to (it differs
    /// from the key's destination when the flow is masqueraded). The source goes back to
    /// the Service address from SVC4_REVNAT by rev_nat_id. Network order.
    pub addr_be: u32,
    pub port_be: u16,
    /// CT_F_* bits.
    pub flags: u8,
    pub _pad: u8,
    pub rev_nat_id: u32,
    /// Service entries of masqueraded flows (CT_F_SNAT): the source the flow is translated
    /// to (the node address and a port). Network order; 0 otherwise.
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub _pad2: [u8; 2],
}

/// A FIN or RST was seen: the entry expires after CT_CLOSING_TIMEOUT_NS.
pub const CT_F_CLOSING: u8 = 1;
/// The flow has seen a reply (TCP: SYN-ACK; UDP: any reply).
pub const CT_F_REPLIED: u8 = 2;
/// The flow is masqueraded: its source is translated to nat_addr:nat_port.
pub const CT_F_SNAT: u8 = 4;

/// Lifetimes after the last packet (Cilium's defaults).
pub const CT_TCP_TIMEOUT_NS: u64 = 21_600 * 1_000_000_000;
pub const CT_TCP_SYN_TIMEOUT_NS: u64 = 60 * 1_000_000_000;
pub const CT_CLOSING_TIMEOUT_NS: u64 = 10 * 1_000_000_000;
pub const CT_UDP_TIMEOUT_NS: u64 = 60 * 1_000_000_000;

/// Source ports masqueraded flows get by default (host order, inclusive); the agent's
/// configuration may narrow or move it. Above Linux's default ip_local_port_range
/// (32768-60999) and the NodePort range (30000-32767): a masquerade port equal to a port of
/// one of the node's own connections to the same backend would take that connection's
/// replies. The one definition: the kernel side's defaults and the agent's come from here.
pub const MASQUERADE_PORTS: (u16, u16) = (61000, 65535);

/// Seconds an entry may live after its last packet, as the kernel side decides it.
pub const fn ct_timeout_ns(proto: u8, flags: u8) -> u64 {
    if flags & CT_F_CLOSING != 0 {
        CT_CLOSING_TIMEOUT_NS
    } else if proto == PROTO_TCP {
        if flags & CT_F_REPLIED != 0 {
            CT_TCP_TIMEOUT_NS
        } else {
            CT_TCP_SYN_TIMEOUT_NS
        }
    } else {
        CT_UDP_TIMEOUT_NS
    }
}

// ---------------------------------------------------------------------------------------
// Session affinity (LRU): {client address, rev_nat_id} -> the backend it was last given.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Affinity4Key {
    pub client_be: u32,
    pub rev_nat_id: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Affinity4Value {
    pub last_used_ns: u64,
    pub backend_id: u32,
    /// The slot the backend had when chosen: a new flow checks the slot still holds it,
    /// so a backend removed from this Service (but alive for another) is not reused.
    pub slot: u16,
    pub scope: u8,
    pub _pad: u8,
}

// ---------------------------------------------------------------------------------------
// loadBalancerSourceRanges (LPM trie): {prefix length, {rev_nat_id, source prefix}} -> 1.
// The prefix length (aya's lpm_trie::Key) counts the 32 bits of rev_nat_id + padding, then
// the address bits (Cilium's lb4_src_range_key).
// ---------------------------------------------------------------------------------------

/// The data part of a SVC4_SRC_RANGE key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct SrcRange4 {
    pub rev_nat_id: u32,
    pub addr_be: u32,
}

pub const SRC_RANGE_PREFIX_BASE: u32 = 32;

// ---------------------------------------------------------------------------------------
// Socket LB reverse NAT (LRU): {socket cookie, backend} -> the Service address a node
// process sent to, so a reply datagram's source can be shown as that address (recvmsg4).
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevNat4Key {
    pub cookie: u64,
    pub backend_be: u32,
    pub backend_port_be: u16,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevNat4Value {
    pub vip_be: u32,
    pub rev_nat_id: u32,
    pub port_be: u16,
    pub _pad: [u8; 2],
}

// ---------------------------------------------------------------------------------------
// Service names (hash): key -> the Service (namespace/name) and port a frontend belongs to,
// or a Service that gets no datapath entries and why. Written by the agent for svcctl
// only; the programs never read it. Keys:
// - 1..NAME_KEY_UNSERVED: a served frontend's rev_nat_id;
// - NAME_KEY_UNSERVED + n: the n-th Service (namespace/name order) without entries.
// Strings are UTF-8, NUL-padded, truncated at a character boundary when too long.
// ---------------------------------------------------------------------------------------

/// First key of the unserved Services in SVC_NAMES (above every rev_nat_id).
pub const NAME_KEY_UNSERVED: u32 = 0x8000_0000;

pub const NAME_NAMESPACE_LEN: usize = 64;
pub const NAME_NAME_LEN: usize = 64;
pub const NAME_PORT_LEN: usize = 32;

/// SvcName::kind of a served frontend (as FrontendKind), or NAME_KIND_NONE.
pub const NAME_KIND_CLUSTERIP: u8 = 0;
pub const NAME_KIND_NODEPORT: u8 = 1;
pub const NAME_KIND_EXTERNALIP: u8 = 2;
pub const NAME_KIND_LOADBALANCER: u8 = 3;
/// A Service without datapath entries (its status says why).
pub const NAME_KIND_NONE: u8 = 255;

/// SvcName::status.
pub const NAME_SERVED: u8 = 0;
/// clusterIP: None.
pub const NAME_HEADLESS: u8 = 1;
/// type ExternalName: DNS only.
pub const NAME_EXTERNALNAME: u8 = 2;
/// Labelled service.kubernetes.io/service-proxy-name: another proxy owns it.
pub const NAME_OTHER_PROXY: u8 = 3;
/// No IPv4 cluster IP (and no other address to serve).
pub const NAME_NO_IPV4_CLUSTERIP: u8 = 4;
/// Every port was skipped (SCTP only, or every address already used by another Service).
pub const NAME_NO_PORTS: u8 = 5;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SvcName {
    pub namespace: [u8; NAME_NAMESPACE_LEN],
    pub name: [u8; NAME_NAME_LEN],
    /// Empty when the Service port has no name.
    pub port_name: [u8; NAME_PORT_LEN],
    /// NAME_KIND_*.
    pub kind: u8,
    /// NAME_SERVED or why there are no entries (NAME_HEADLESS, ...).
    pub status: u8,
    pub _pad: [u8; 6],
}

impl Default for SvcName {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Copies `s` into `out`, NUL-padded, cut at the last character boundary that fits.
fn put_str(out: &mut [u8], s: &str) {
    let mut len = s.len().min(out.len());
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    out[..len].copy_from_slice(&s.as_bytes()[..len]);
    for b in &mut out[len..] {
        *b = 0;
    }
}

/// The string in a NUL-padded field: up to the first NUL, and up to the last valid UTF-8
/// character (a map written by someone else may hold anything).
fn get_str(field: &[u8]) -> &str {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    match core::str::from_utf8(&field[..end]) {
        Ok(s) => s,
        // The prefix up to valid_up_to() is valid UTF-8 by definition.
        Err(e) => core::str::from_utf8(&field[..e.valid_up_to()]).unwrap_or_default(),
    }
}

impl SvcName {
    pub fn new(namespace: &str, name: &str, port_name: &str, kind: u8, status: u8) -> SvcName {
        let mut v = SvcName {
            kind,
            status,
            ..Default::default()
        };
        put_str(&mut v.namespace, namespace);
        put_str(&mut v.name, name);
        put_str(&mut v.port_name, port_name);
        v
    }
    pub fn namespace(&self) -> &str {
        get_str(&self.namespace)
    }
    pub fn name(&self) -> &str {
        get_str(&self.name)
    }
    pub fn port_name(&self) -> &str {
        get_str(&self.port_name)
    }
}

// ---------------------------------------------------------------------------------------
// Verdict counters: a per-CPU array indexed by `Verdict as u32`. Every program exit bumps
// exactly one counter.
// ---------------------------------------------------------------------------------------

macro_rules! verdicts {
    ($($(#[doc = $doc:literal])* $name:ident = $idx:literal, $label:literal;)*) => {
        /// Why a program returned what it returned. Indexes SVC_STATS.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Verdict {
            $($(#[doc = $doc])* $name = $idx,)*
        }
        impl Verdict {
            pub const ALL: &'static [Verdict] = &[$(Verdict::$name,)*];
            /// Stable snake_case name, used by svcctl and metrics.
            pub const fn label(self) -> &'static str {
                match self { $(Verdict::$name => $label,)* }
            }
            /// The program drops the packet (TC_ACT_SHOT / XDP_DROP) for this verdict.
            pub const fn is_drop(self) -> bool {
                matches!(
                    self,
                    Verdict::DropMalformed
                        | Verdict::DropNoBackend
                        | Verdict::DropCtFailed
                        | Verdict::DropRewriteFailed
                        | Verdict::DropNoLocalBackend
                        | Verdict::DropSourceRange
                        | Verdict::DropNatFailed
                )
            }
        }
    };
}

verdicts! {
    /// Not IPv4 (ARP, IPv6, VLAN, ...): passed untouched.
    PassNotIpv4 = 0, "pass_not_ipv4";
    /// IPv4 but not addressed to a Service and not a reply of a translated flow.
    PassNotService = 1, "pass_not_service";
    /// An IPv4 fragment (MF set or offset > 0): passed untouched, never translated.
    PassFragment = 2, "pass_fragment";
    /// Neither TCP nor UDP (ICMP, SCTP, ...): passed untouched.
    PassOtherProto = 3, "pass_other_proto";
    /// Headers cut short (Ethernet, IPv4, TCP/UDP) or an invalid IPv4 version/IHL: dropped.
    DropMalformed = 4, "drop_malformed";
    /// A new flow to a Service: backend chosen, destination translated.
    DnatNew = 5, "dnat_new";
    /// A packet of a known flow: destination translated to its backend.
    DnatEstablished = 6, "dnat_established";
    /// A reply from a backend: source translated back to the Service address.
    RevNat = 7, "rev_nat";
    /// TCP to a Service without endpoints: answered with a RST.
    RejectTcpRst = 8, "reject_tcp_rst";
    /// UDP to a Service without endpoints: answered with ICMP port unreachable.
    RejectIcmp = 9, "reject_icmp";
    /// The frontend points at a slot or backend that is not there (a sync in progress).
    DropNoBackend = 10, "drop_no_backend";
    /// The conntrack entry could not be written.
    DropCtFailed = 11, "drop_ct_failed";
    /// A rewrite helper failed.
    DropRewriteFailed = 12, "drop_rewrite_failed";
    /// XDP: a packet XDP does not translate itself (reject, IPv4 options) handed to TC.
    XdpPassToTc = 13, "xdp_pass_to_tc";
    /// Traffic policy Local and this node has none of the Service's endpoints.
    DropNoLocalBackend = 14, "drop_no_local_backend";
    /// A LoadBalancer address with loadBalancerSourceRanges, from a source outside them.
    DropSourceRange = 15, "drop_source_range";
    /// No free source port to masquerade the flow with.
    DropNatFailed = 16, "drop_nat_failed";
    /// Socket LB (a node process): connect/sendmsg to a Service address sent to a backend.
    SockTranslate = 17, "sock_translate";
    /// Socket LB: connect/sendmsg to a Service refused: no endpoints (ECONNREFUSED), policy
    /// Local without a local one, or a source outside loadBalancerSourceRanges (EPERM).
    SockReject = 18, "sock_reject";
    /// Socket LB: a reply datagram's source translated back to the Service address.
    SockRevNat = 19, "sock_rev_nat";
    /// Socket LB: connect/sendmsg to a Service whose frontend points at a slot or backend
    /// that is not there (a sync in progress) failed with EHOSTUNREACH, never sent
    /// untranslated.
    SockNoBackend = 20, "sock_no_backend";
}

pub const STATS_MAP_SIZE: u32 = 32;

// ---------------------------------------------------------------------------------------
// The load-time globals (svc-ebpf/src/config.rs) as the agent set them, in a one-entry
// array beside the maps, so svcctl can load a second instance of the programs that decides
// exactly as the live one (svcctl trace).
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct DatapathConfig4 {
    /// [`LAYOUT_VERSION`] of the agent that pinned the maps.
    pub layout_version: u32,
    /// CLUSTER_CIDR_BE / CLUSTER_MASK_BE: the pod CIDR (mask 0: unknown).
    pub cluster_cidr_be: u32,
    pub cluster_mask_be: u32,
    /// MASQ_ADDR_BE: the masquerade source (0: never masquerade).
    pub masq_addr_be: u32,
    /// MASQUERADE_ALL (0 or 1).
    pub masquerade_all: u32,
    /// NAT_PORT_MIN / NAT_PORT_MAX (host order).
    pub nat_port_min: u32,
    pub nat_port_max: u32,
    pub _pad: u32,
}

pub const CONFIG_MAP_SIZE: u32 = 1;

/// The version of every map layout together. Bump it whenever a key or value type, or the
/// meaning of a field, changes: pins of another layout version are refused (equal sizes do
/// not make equal layouts), and so are pins without a SVC_CONFIG map (made before the
/// version was recorded).
pub const LAYOUT_VERSION: u32 = 2;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, with explicit padding (checked by bytemuck's
    // Pod derive), so any bit pattern is valid and none has uninitialised bytes.
    unsafe impl aya::Pod for Svc4Key {}
    unsafe impl aya::Pod for Svc4Value {}
    unsafe impl aya::Pod for Backend4 {}
    unsafe impl aya::Pod for RevNat4 {}
    unsafe impl aya::Pod for Ct4Key {}
    unsafe impl aya::Pod for Ct4Value {}
    unsafe impl aya::Pod for Affinity4Key {}
    unsafe impl aya::Pod for Affinity4Value {}
    unsafe impl aya::Pod for SrcRange4 {}
    unsafe impl aya::Pod for SockRevNat4Key {}
    unsafe impl aya::Pod for SockRevNat4Value {}
    unsafe impl aya::Pod for SvcName {}
    unsafe impl aya::Pod for DatapathConfig4 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_stable() {
        // The sizes are part of the pinned-map ABI: changing one needs a migration.
        assert_eq!(size_of::<Svc4Key>(), 12);
        assert_eq!(size_of::<Svc4Value>(), 12);
        assert_eq!(size_of::<Backend4>(), 8);
        assert_eq!(size_of::<RevNat4>(), 8);
        assert_eq!(size_of::<Ct4Key>(), 16);
        assert_eq!(size_of::<Ct4Value>(), 40);
        assert_eq!(size_of::<Affinity4Key>(), 8);
        assert_eq!(size_of::<Affinity4Value>(), 16);
        assert_eq!(size_of::<SrcRange4>(), 8);
        assert_eq!(size_of::<SockRevNat4Key>(), 16);
        assert_eq!(size_of::<SockRevNat4Value>(), 12);
        assert_eq!(size_of::<SvcName>(), 168);
        assert_eq!(size_of::<DatapathConfig4>(), 32);
        assert_eq!(core::mem::align_of::<SvcName>(), 1);
    }

    #[test]
    fn names_round_trip_and_truncate_at_a_char_boundary() {
        let v = SvcName::new("default", "echo", "http", NAME_KIND_CLUSTERIP, NAME_SERVED);
        assert_eq!(
            (v.namespace(), v.name(), v.port_name()),
            ("default", "echo", "http")
        );
        assert!(v.namespace[7..].iter().all(|b| *b == 0));
        // 31 ASCII bytes then a 2-byte character: the character does not fit in 32.
        let long = "p".repeat(31) + "é";
        let v = SvcName::new("ns", "n", &long, 0, 0);
        assert_eq!(v.port_name(), "p".repeat(31));
        let exact = "n".repeat(64);
        assert_eq!(SvcName::new("ns", &exact, "", 0, 0).name(), exact);
        // Garbage from another writer decodes to its valid prefix.
        let mut v = SvcName::default();
        v.name[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(v.name(), "a");
    }

    #[test]
    fn drop_verdicts_are_the_drop_labels() {
        for v in Verdict::ALL {
            assert_eq!(v.is_drop(), v.label().starts_with("drop_"), "{v:?}");
        }
    }

    #[test]
    fn verdict_indexes_fit_the_stats_map() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
            assert!((*v as u32) < STATS_MAP_SIZE);
        }
    }
}
