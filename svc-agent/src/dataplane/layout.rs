//! The encoding of every map key and value: typed values (addresses, words, flags) to the raw
//! `#[repr(C)]` structs of svc-common and back. The only place in userspace that knows byte
//! orders, bit layouts and the numbering of words; the reconciler writes through these
//! functions and svcctl, trace and the metrics read through them.
//!
//! Both families: an IPv4 address is a `u32` in network order, an IPv6 one an [`Ip6`]
//! (four words, each in network order). The encoders of what the reconciler writes take
//! the agent's `IpAddr` and return a value of the family's map ([`ServiceKey`],
//! [`BackendValue`], [`RevNatValue`], [`SrcRangeEntry`]); the decoders are generic over
//! the map's address ([`MapAddr`]), so one function reads either map.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use svc_common::{
    AddrRange4, AddrRange6, Backend, Backend4, Backend6, BackendState, CT_FLAG_LABELS,
    ClusterIpUse, DatapathConfig4, FrontendKind, Ip6, NAME_KEY_UNSERVED, NAME_KIND_NONE,
    NAME_SERVED, Protocol, RevNat, RevNat4, RevNat6, SRC_RANGE_PREFIX_BASE, SVC_F_AFFINITY,
    SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_SOURCE_RANGES, SVC_FLAG_LABELS, Scope, SrcRange4, SrcRange6,
    Svc4Key, Svc4Value, Svc6Key, SvcKey, SvcName, UnservedReason,
};

use super::config::DetectLocal;

use super::{DatapathConfig, MapSizes, config::DEFAULT_MASQUERADE_PORTS};
use crate::addr::{BackendAddr, Family, Frontend, HostPort, IpCidr, Ipv4Cidr, Ipv6Cidr};

/// An address and port as a map holds them, decoded (either family; an IPv6 one prints
/// in brackets, `[fd00::10]:80`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl Endpoint {
    /// From network-order fields of either family.
    pub fn from_be<A: MapAddr>(addr_be: A, port_be: u16) -> Endpoint {
        Endpoint {
            addr: addr_be.ip(),
            port: u16::from_be(port_be),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        HostPort(self.addr, self.port).fmt(f)
    }
}

/// An address field of a map: `u32` (IPv4, network order) or [`Ip6`].
pub trait MapAddr: Copy {
    fn ip(self) -> IpAddr;
}

impl MapAddr for u32 {
    fn ip(self) -> IpAddr {
        IpAddr::V4(ip_from_be(self))
    }
}

impl MapAddr for Ip6 {
    fn ip(self) -> IpAddr {
        IpAddr::V6(ip6_from_raw(self))
    }
}

/// An IPv6 address from an [`Ip6`] field.
pub fn ip6_from_raw(addr: Ip6) -> Ipv6Addr {
    Ipv6Addr::from(svc_common::ip6_octets(addr))
}

/// An IPv6 address as an [`Ip6`] field.
pub fn ip6_to_raw(addr: Ipv6Addr) -> Ip6 {
    svc_common::ip6_from_octets(addr.octets())
}

/// An IPv4 address from a network-order field.
pub fn ip_from_be(addr_be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(addr_be))
}

/// An IPv4 address as a network-order field.
pub fn ip_to_be(addr: Ipv4Addr) -> u32 {
    u32::from(addr).to_be()
}

/// The label of a word read from a map, or `unknown(<n>)` for a number no word has (a map
/// written by another version may hold anything).
pub fn word_label<W: std::fmt::Display>(word: Option<W>, raw: impl std::fmt::Display) -> String {
    word.map_or_else(|| format!("unknown({raw})"), |w| w.to_string())
}

/// A protocol number's label: `TCP`, `UDP`, else `proto-<n>`.
pub fn protocol_label(proto: u8) -> String {
    Protocol::from_raw(proto).map_or_else(|| format!("proto-{proto}"), |p| p.to_string())
}

/// The labels of the bits set in `flags`, in bit order; bits without a label as one
/// `unknown(0x..)`.
fn flag_labels<T>(flags: T, table: &[(T, &str)]) -> Vec<String>
where
    T: Copy
        + PartialEq
        + Default
        + std::ops::BitAnd<Output = T>
        + std::ops::BitOr<Output = T>
        + std::ops::Not<Output = T>
        + std::fmt::LowerHex,
{
    let zero = T::default();
    let mut words: Vec<String> = table
        .iter()
        .filter(|(bit, _)| flags & *bit != zero)
        .map(|(_, w)| w.to_string())
        .collect();
    let known = table.iter().fold(zero, |acc, (bit, _)| acc | *bit);
    let rest = flags & !known;
    if rest != zero {
        words.push(format!("unknown({rest:#x})"));
    }
    words
}

/// A frontend's SVC_F_* bits as labels.
pub fn frontend_flag_labels(flags: u16) -> Vec<String> {
    flag_labels(flags, &SVC_FLAG_LABELS)
}

/// A conntrack entry's CT_F_* bits as labels.
pub fn ct_flag_labels(flags: u8) -> Vec<String> {
    flag_labels(flags, &CT_FLAG_LABELS)
}

// ---------------------------------------------------------------------------------------
// SVC4_SERVICES / SVC6_SERVICES
// ---------------------------------------------------------------------------------------

/// A services-map key of either family: which map it goes to follows the frontend's
/// address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKey {
    V4(Svc4Key),
    V6(Svc6Key),
}

impl ServiceKey {
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::V4(_) => Family::V4,
            ServiceKey::V6(_) => Family::V6,
        }
    }

    pub fn slot(&self) -> u16 {
        match self {
            ServiceKey::V4(k) => k.slot,
            ServiceKey::V6(k) => k.slot,
        }
    }

    /// The raw [`Scope`] number.
    pub fn scope(&self) -> u8 {
        match self {
            ServiceKey::V4(k) => k.scope,
            ServiceKey::V6(k) => k.scope,
        }
    }

    /// The frontend the key belongs to (see [`frontend_of`]).
    pub fn frontend(&self) -> Option<Frontend> {
        match self {
            ServiceKey::V4(k) => frontend_of(k),
            ServiceKey::V6(k) => frontend_of(k),
        }
    }
}

/// The key of `slot` of `scope` of a frontend (slot 0: the frontend entry itself), in the
/// services map of the frontend's family.
pub fn service_key(f: &Frontend, scope: Scope, slot: u16) -> ServiceKey {
    fn key<A>(vip_be: A, f: &Frontend, scope: Scope, slot: u16) -> SvcKey<A> {
        SvcKey {
            vip_be,
            port_be: f.port.to_be(),
            slot,
            proto: f.proto.raw(),
            scope: scope.raw(),
            _pad: [0; 2],
        }
    }
    match f.vip {
        IpAddr::V4(a) => ServiceKey::V4(key(ip_to_be(a), f, scope, slot)),
        IpAddr::V6(a) => ServiceKey::V6(key(ip6_to_raw(a), f, scope, slot)),
    }
}

/// The frontend a services-map key (of either family) belongs to; None for a protocol
/// this build does not serve.
pub fn frontend_of<A: MapAddr>(key: &SvcKey<A>) -> Option<Frontend> {
    Some(Frontend {
        vip: key.vip_be.ip(),
        port: u16::from_be(key.port_be),
        proto: Protocol::from_raw(key.proto)?,
    })
}

/// A frontend entry (slot 0 of a scope): everything a packet needs to choose a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendHead {
    /// Backend slots of this scope (0 = no endpoints: reject).
    pub count: u16,
    pub rev_nat_id: u32,
    pub kind: FrontendKind,
    /// Traffic policy Local: the frontend has a SCOPE_LOCAL list.
    pub local: bool,
    /// loadBalancerSourceRanges apply (SVC4_SRC_RANGE holds them).
    pub source_ranges: bool,
    /// sessionAffinity ClientIP: the timeout in seconds.
    pub affinity_timeout: Option<u32>,
}

impl FrontendHead {
    /// The SVC_F_* bits.
    pub fn flags(&self) -> u16 {
        let mut flags = self.kind.flags();
        if self.local {
            flags |= SVC_F_LOCAL;
        }
        if self.source_ranges {
            flags |= SVC_F_SOURCE_RANGES;
        }
        if self.affinity_timeout.is_some() {
            flags |= SVC_F_AFFINITY;
        }
        flags
    }

    pub fn encode(&self) -> Svc4Value {
        Svc4Value {
            // The affinity timeout shares the field with a slot's backend id (Cilium's
            // union): slot 0 has no backend.
            backend_id: self.affinity_timeout.unwrap_or(0),
            rev_nat_id: self.rev_nat_id,
            count: self.count,
            flags: self.flags(),
        }
    }

    pub fn decode(v: &Svc4Value) -> FrontendHead {
        FrontendHead {
            count: v.count,
            rev_nat_id: v.rev_nat_id,
            kind: FrontendKind::of_flags(v.flags),
            local: v.flags & SVC_F_LOCAL != 0,
            source_ranges: v.flags & SVC_F_SOURCE_RANGES != 0,
            affinity_timeout: (v.flags & SVC_F_AFFINITY != 0).then_some(v.backend_id),
        }
    }
}

/// True if a frontend's flags say it is external (NodePort, externalIP, LoadBalancer):
/// externalTrafficPolicy applies.
pub fn is_external(flags: u16) -> bool {
    flags & SVC_F_EXTERNAL != 0
}

/// A backend slot (1..=count) of a frontend.
pub fn slot_value(backend_id: u32, rev_nat_id: u32) -> Svc4Value {
    Svc4Value {
        backend_id,
        rev_nat_id,
        count: 0,
        flags: 0,
    }
}

// ---------------------------------------------------------------------------------------
// SVC4_BACKENDS / SVC6_BACKENDS and SVC4_REVNAT / SVC6_REVNAT
// ---------------------------------------------------------------------------------------

/// A backends-map value of either family (the id, its key, is shared by both maps: one
/// allocator hands them out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendValue {
    V4(Backend4),
    V6(Backend6),
}

impl BackendValue {
    pub fn family(&self) -> Family {
        match self {
            BackendValue::V4(_) => Family::V4,
            BackendValue::V6(_) => Family::V6,
        }
    }

    /// The backend's address; None for a protocol this build does not serve.
    pub fn addr(&self) -> Option<BackendAddr> {
        match self {
            BackendValue::V4(v) => backend_addr(v),
            BackendValue::V6(v) => backend_addr(v),
        }
    }

    pub fn state(&self) -> Option<BackendState> {
        match self {
            BackendValue::V4(v) => backend_state(v),
            BackendValue::V6(v) => backend_state(v),
        }
    }

    /// The raw state number (for labels of numbers no word has).
    pub fn state_raw(&self) -> u8 {
        match self {
            BackendValue::V4(v) => v.state,
            BackendValue::V6(v) => v.state,
        }
    }

    /// The raw protocol number.
    pub fn proto(&self) -> u8 {
        match self {
            BackendValue::V4(v) => v.proto,
            BackendValue::V6(v) => v.proto,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        match self {
            BackendValue::V4(v) => backend_endpoint(v),
            BackendValue::V6(v) => backend_endpoint(v),
        }
    }
}

/// The backends-map value of a backend, in its family's map.
pub fn backend_value(b: &BackendAddr, state: BackendState) -> BackendValue {
    fn value<A>(addr_be: A, b: &BackendAddr, state: BackendState) -> Backend<A> {
        Backend {
            addr_be,
            port_be: b.port.to_be(),
            proto: b.proto.raw(),
            state: state.raw(),
        }
    }
    match b.addr {
        IpAddr::V4(a) => BackendValue::V4(value(ip_to_be(a), b, state)),
        IpAddr::V6(a) => BackendValue::V6(value(ip6_to_raw(a), b, state)),
    }
}

/// The address of a backend entry; None for a protocol this build does not serve.
pub fn backend_addr<A: MapAddr>(v: &Backend<A>) -> Option<BackendAddr> {
    Some(BackendAddr {
        addr: v.addr_be.ip(),
        port: u16::from_be(v.port_be),
        proto: Protocol::from_raw(v.proto)?,
    })
}

pub fn backend_endpoint<A: MapAddr>(v: &Backend<A>) -> Endpoint {
    Endpoint::from_be(v.addr_be, v.port_be)
}

pub fn backend_state<A>(v: &Backend<A>) -> Option<BackendState> {
    BackendState::from_raw(v.state)
}

/// A rev-NAT value of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevNatValue {
    V4(RevNat4),
    V6(RevNat6),
}

/// The rev-NAT entry of a frontend: the address replies get as their source, in the
/// rev-NAT map of the frontend's family.
pub fn revnat_value(f: &Frontend) -> RevNatValue {
    fn value<A>(vip_be: A, f: &Frontend) -> RevNat<A> {
        RevNat {
            vip_be,
            port_be: f.port.to_be(),
            _pad: [0; 2],
        }
    }
    match f.vip {
        IpAddr::V4(a) => RevNatValue::V4(value(ip_to_be(a), f)),
        IpAddr::V6(a) => RevNatValue::V6(value(ip6_to_raw(a), f)),
    }
}

pub fn revnat_endpoint<A: MapAddr>(v: &RevNat<A>) -> Endpoint {
    Endpoint::from_be(v.vip_be, v.port_be)
}

// ---------------------------------------------------------------------------------------
// SVC4_SRC_RANGE (LPM trie)
// ---------------------------------------------------------------------------------------

/// A loadBalancerSourceRanges entry as the LPM trie holds it: (prefix length as the trie
/// counts it, data). The prefix length counts the 32 bits of rev_nat_id, then the address
/// bits (Cilium's lb4_src_range_key).
pub type SrcRangeKey = (u32, SrcRange4);
/// A SVC6_SRC_RANGE key: as [`SrcRangeKey`], with up to 128 address bits.
pub type SrcRange6Key = (u32, SrcRange6);

/// A source-range key of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SrcRangeEntry {
    V4(SrcRangeKey),
    V6(SrcRange6Key),
}

impl SrcRangeEntry {
    pub fn family(&self) -> Family {
        match self {
            SrcRangeEntry::V4(_) => Family::V4,
            SrcRangeEntry::V6(_) => Family::V6,
        }
    }

    /// The rev_nat_id the range belongs to.
    pub fn rev_nat_id(&self) -> u32 {
        match self {
            SrcRangeEntry::V4(k) => k.1.rev_nat_id,
            SrcRangeEntry::V6(k) => k.1.rev_nat_id,
        }
    }
}

/// The key of a source range of a frontend, in the map of the CIDR's family.
pub fn src_range_key(rev_nat_id: u32, cidr: &IpCidr) -> SrcRangeEntry {
    // rev_nat_id in host order, as the kernel side builds its probe; the first 32 bits
    // always match exactly, so only the two sides' agreement matters.
    match cidr {
        IpCidr::V4(c) => SrcRangeEntry::V4((
            SRC_RANGE_PREFIX_BASE + u32::from(c.prefix_len.min(32)),
            SrcRange4 {
                rev_nat_id,
                addr_be: ip_to_be(Ipv4Cidr::new(c.addr, c.prefix_len).addr),
            },
        )),
        IpCidr::V6(c) => SrcRangeEntry::V6((
            SRC_RANGE_PREFIX_BASE + u32::from(c.prefix_len.min(128)),
            SrcRange6 {
                rev_nat_id,
                addr_be: ip6_to_raw(Ipv6Cidr::new(c.addr, c.prefix_len).addr),
            },
        )),
    }
}

/// The CIDR of a SVC6_SRC_RANGE key; None if its prefix length is not one the agent writes
/// (32 + 0..=128).
pub fn src_range6_cidr(key: &SrcRange6Key) -> Option<Ipv6Cidr> {
    let len = key
        .0
        .checked_sub(SRC_RANGE_PREFIX_BASE)
        .filter(|l| *l <= 128)?;
    Some(Ipv6Cidr::new(ip6_from_raw(key.1.addr_be), len as u8))
}

/// The CIDR of a source-range key; None if its prefix length is not one the agent writes
/// (32 + 0..=32).
pub fn src_range_cidr(key: &SrcRangeKey) -> Option<Ipv4Cidr> {
    let len = key
        .0
        .checked_sub(SRC_RANGE_PREFIX_BASE)
        .filter(|l| *l <= 32)?;
    Some(Ipv4Cidr::new(ip_from_be(key.1.addr_be), len as u8))
}

// ---------------------------------------------------------------------------------------
// SVC4_POD_CIDRS (detect-local by address)
// ---------------------------------------------------------------------------------------

/// A SVC4_POD_CIDRS key: (prefix length, the prefix in network order), host bits cleared.
pub fn pod_cidr_key(cidr: &Ipv4Cidr) -> (u32, u32) {
    let c = Ipv4Cidr::new(cidr.addr, cidr.prefix_len.min(32));
    (u32::from(c.prefix_len), ip_to_be(c.addr))
}

/// The CIDR of a SVC4_POD_CIDRS key; None for a prefix length beyond 32.
pub fn pod_cidr_of(key: (u32, u32)) -> Option<Ipv4Cidr> {
    let len = u8::try_from(key.0).ok().filter(|l| *l <= 32)?;
    Some(Ipv4Cidr::new(ip_from_be(key.1), len))
}

/// A SVC6_POD_CIDRS key: (prefix length, the prefix as an [`Ip6`]), host bits cleared.
pub fn pod_cidr6_key(cidr: &Ipv6Cidr) -> (u32, Ip6) {
    let c = Ipv6Cidr::new(cidr.addr, cidr.prefix_len);
    (u32::from(c.prefix_len), ip6_to_raw(c.addr))
}

/// The CIDR of a SVC6_POD_CIDRS key; None for a prefix length beyond 128.
pub fn pod_cidr6_of(key: (u32, Ip6)) -> Option<Ipv6Cidr> {
    let len = u8::try_from(key.0).ok().filter(|l| *l <= 128)?;
    Some(Ipv6Cidr::new(ip6_from_raw(key.1), len))
}

// ---------------------------------------------------------------------------------------
// SVC4_CLUSTERIPS (hash) and SVC4_SVC_CIDR (LPM trie): addresses no frontend takes
// ---------------------------------------------------------------------------------------

/// The SVC4_CLUSTERIPS key of a ClusterIP: the address in network order.
pub fn cluster_ip_key(ip: Ipv4Addr) -> u32 {
    ip_to_be(ip)
}

/// The ClusterIP of a SVC4_CLUSTERIPS key.
pub fn cluster_ip_of(key: u32) -> Ipv4Addr {
    ip_from_be(key)
}

/// The SVC4_CLUSTERIPS value of a ClusterIP.
pub fn cluster_ip_value(use_: ClusterIpUse) -> u8 {
    use_.raw()
}

/// The word of a SVC4_CLUSTERIPS value; None for a number no word has (the kernel side
/// rejects on every value but `other-proxy`).
pub fn cluster_ip_use(value: u8) -> Option<ClusterIpUse> {
    ClusterIpUse::from_raw(value)
}

/// A service CIDR as the LPM trie holds it: (prefix length, address in network order).
pub type ServiceCidrKey = (u32, u32);

pub fn service_cidr_key(cidr: &Ipv4Cidr) -> ServiceCidrKey {
    let cidr = Ipv4Cidr::new(cidr.addr, cidr.prefix_len);
    (u32::from(cidr.prefix_len), ip_to_be(cidr.addr))
}

/// The CIDR of a SVC4_SVC_CIDR key; None for a prefix length above 32.
pub fn service_cidr_of(key: &ServiceCidrKey) -> Option<Ipv4Cidr> {
    let len = u8::try_from(key.0).ok().filter(|l| *l <= 32)?;
    Some(Ipv4Cidr::new(ip_from_be(key.1), len))
}

/// The SVC6_CLUSTERIPS key of an IPv6 ClusterIP.
pub fn cluster_ip6_key(ip: Ipv6Addr) -> Ip6 {
    ip6_to_raw(ip)
}

/// The ClusterIP of a SVC6_CLUSTERIPS key.
pub fn cluster_ip6_of(key: Ip6) -> Ipv6Addr {
    ip6_from_raw(key)
}

/// A SVC6_SVC_CIDR key: (prefix length in address bits, the prefix as an [`Ip6`]).
pub type ServiceCidr6Key = (u32, Ip6);

pub fn service_cidr6_key(cidr: &Ipv6Cidr) -> ServiceCidr6Key {
    let cidr = Ipv6Cidr::new(cidr.addr, cidr.prefix_len);
    (u32::from(cidr.prefix_len), ip6_to_raw(cidr.addr))
}

/// The CIDR of a SVC6_SVC_CIDR key; None for a prefix length above 128.
pub fn service_cidr6_of(key: &ServiceCidr6Key) -> Option<Ipv6Cidr> {
    let len = u8::try_from(key.0).ok().filter(|l| *l <= 128)?;
    Some(Ipv6Cidr::new(ip6_from_raw(key.1), len))
}

/// A ClusterIP's key in its family's map (SVC4_CLUSTERIPS or SVC6_CLUSTERIPS). IPv4 keys
/// order before IPv6 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterIpKey {
    V4(u32),
    V6(Ip6),
}

impl ClusterIpKey {
    pub fn of(ip: IpAddr) -> ClusterIpKey {
        match ip {
            IpAddr::V4(a) => ClusterIpKey::V4(cluster_ip_key(a)),
            IpAddr::V6(a) => ClusterIpKey::V6(cluster_ip6_key(a)),
        }
    }

    pub fn ip(&self) -> IpAddr {
        match self {
            ClusterIpKey::V4(k) => IpAddr::V4(cluster_ip_of(*k)),
            ClusterIpKey::V6(k) => IpAddr::V6(cluster_ip6_of(*k)),
        }
    }
}

/// A service CIDR's key in its family's LPM trie (SVC4_SVC_CIDR or SVC6_SVC_CIDR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceCidrEntry {
    V4(ServiceCidrKey),
    V6(ServiceCidr6Key),
}

impl ServiceCidrEntry {
    pub fn of(cidr: &IpCidr) -> ServiceCidrEntry {
        match cidr {
            IpCidr::V4(c) => ServiceCidrEntry::V4(service_cidr_key(c)),
            IpCidr::V6(c) => ServiceCidrEntry::V6(service_cidr6_key(c)),
        }
    }

    /// The CIDR; None for a prefix length the family does not have.
    pub fn cidr(&self) -> Option<IpCidr> {
        match self {
            ServiceCidrEntry::V4(k) => service_cidr_of(k).map(IpCidr::V4),
            ServiceCidrEntry::V6(k) => service_cidr6_of(k).map(IpCidr::V6),
        }
    }
}

// ---------------------------------------------------------------------------------------
// SVC4_SVC_RANGE: the address range SVC4_CLUSTERIPS and SVC4_SVC_CIDR cover
// ---------------------------------------------------------------------------------------

/// The SVC4_SVC_RANGE entry that covers these SVC4_CLUSTERIPS keys and SVC4_SVC_CIDR keys
/// ([`AddrRange4::EMPTY`] for none).
pub fn unserved_range<'a>(
    cluster_ips: impl IntoIterator<Item = &'a u32>,
    cidrs: impl IntoIterator<Item = &'a ServiceCidrKey>,
) -> AddrRange4 {
    let mut range = AddrRange4::EMPTY;
    let mut add = |lo: u32, hi: u32| {
        if range.lo > range.hi {
            range = AddrRange4 { lo, hi };
        } else {
            range.lo = range.lo.min(lo);
            range.hi = range.hi.max(hi);
        }
    };
    for key in cluster_ips {
        let addr = u32::from(cluster_ip_of(*key));
        add(addr, addr);
    }
    for cidr in cidrs.into_iter().filter_map(service_cidr_of) {
        let lo = u32::from(cidr.addr) & cidr.netmask();
        add(lo, lo | !cidr.netmask());
    }
    range
}

/// Whether the programs, reading `range`, look up a packet to `addr` in SVC4_CLUSTERIPS and
/// SVC4_SVC_CIDR.
pub fn range_covers(range: &AddrRange4, addr: Ipv4Addr) -> bool {
    range.contains(u32::from(addr))
}

/// The SVC6_SVC_RANGE entry that covers these SVC6_CLUSTERIPS keys and SVC6_SVC_CIDR keys
/// ([`AddrRange6::EMPTY`] for none), as [`unserved_range`] for IPv4.
pub fn unserved_range6<'a>(
    cluster_ips: impl IntoIterator<Item = &'a Ip6>,
    cidrs: impl IntoIterator<Item = &'a ServiceCidr6Key>,
) -> AddrRange6 {
    // As u128 (host order) here, converted to halves once at the end.
    let mut range: Option<(u128, u128)> = None;
    let mut add = |lo: u128, hi: u128| {
        range = Some(match range {
            None => (lo, hi),
            Some((l, h)) => (l.min(lo), h.max(hi)),
        });
    };
    for key in cluster_ips {
        let addr = u128::from(cluster_ip6_of(*key));
        add(addr, addr);
    }
    for cidr in cidrs.into_iter().filter_map(service_cidr6_of) {
        let host_bits = 128 - u32::from(cidr.prefix_len);
        let host = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
        let lo = u128::from(cidr.addr);
        add(lo, lo | host);
    }
    match range {
        None => AddrRange6::EMPTY,
        Some((lo, hi)) => AddrRange6 {
            lo: AddrRange6::halves(lo.to_be_bytes()),
            hi: AddrRange6::halves(hi.to_be_bytes()),
        },
    }
}

/// The SVC4_SVC_RANGE and SVC6_SVC_RANGE entries that cover these keys of both families.
pub fn unserved_ranges<'a>(
    cluster_ips: impl IntoIterator<Item = &'a ClusterIpKey>,
    cidrs: impl IntoIterator<Item = &'a ServiceCidrEntry>,
) -> (AddrRange4, AddrRange6) {
    let (mut ips4, mut ips6) = (Vec::new(), Vec::new());
    for key in cluster_ips {
        match key {
            ClusterIpKey::V4(k) => ips4.push(*k),
            ClusterIpKey::V6(k) => ips6.push(*k),
        }
    }
    let (mut cidrs4, mut cidrs6) = (Vec::new(), Vec::new());
    for key in cidrs {
        match key {
            ServiceCidrEntry::V4(k) => cidrs4.push(*k),
            ServiceCidrEntry::V6(k) => cidrs6.push(*k),
        }
    }
    (
        unserved_range(&ips4, &cidrs4),
        unserved_range6(&ips6, &cidrs6),
    )
}

/// Whether the programs, reading `range`, look up a packet to `addr` in SVC6_CLUSTERIPS and
/// SVC6_SVC_CIDR.
pub fn range6_covers(range: &AddrRange6, addr: Ipv6Addr) -> bool {
    range.contains(AddrRange6::halves(addr.octets()))
}

// ---------------------------------------------------------------------------------------
// SVC_NAMES (svcctl only)
// ---------------------------------------------------------------------------------------

/// The SVC_NAMES key of the `n`-th Service without datapath entries.
pub fn unserved_key(n: usize) -> u32 {
    NAME_KEY_UNSERVED.saturating_add(u32::try_from(n).unwrap_or(u32::MAX))
}

/// True for keys of Services without entries (above every rev_nat_id).
pub fn is_unserved_key(key: u32) -> bool {
    key >= NAME_KEY_UNSERVED
}

/// The name entry of a served frontend (key: its rev_nat_id).
pub fn served_name(namespace: &str, name: &str, port_name: &str, kind: FrontendKind) -> SvcName {
    SvcName::new(namespace, name, port_name, kind.raw(), NAME_SERVED)
}

/// The name entry of a Service without datapath entries (key: [`unserved_key`]).
pub fn unserved_name(namespace: &str, name: &str, reason: UnservedReason) -> SvcName {
    SvcName::new(namespace, name, "", NAME_KIND_NONE, reason.raw())
}

/// The kind recorded in a served frontend's name entry (None: not a kind this build knows).
pub fn name_kind(v: &SvcName) -> Option<FrontendKind> {
    FrontendKind::from_raw(v.kind)
}

/// The label of an unserved Service's reason (`unknown(<n>)` for a number no reason has).
pub fn unserved_reason(v: &SvcName) -> Result<UnservedReason, String> {
    UnservedReason::from_raw(v.status).ok_or_else(|| format!("unknown({})", v.status))
}

// ---------------------------------------------------------------------------------------
// The load-time globals, and SVC_CONFIG (the same values, for svcctl trace)
// ---------------------------------------------------------------------------------------

impl DatapathConfig {
    /// The globals' values, as the programs read them.
    pub fn to_raw(&self) -> DatapathConfig4 {
        DatapathConfig4 {
            layout_version: svc_common::LAYOUT_VERSION,
            detect_local: self.detect_local.raw(),
            _pad0: 0,
            masq_addr_be: self.masquerade_addr.map_or(0, ip_to_be),
            masquerade_all: u32::from(self.masquerade_all),
            nat_port_min: u32::from(self.masquerade_ports.0),
            nat_port_max: u32::from(self.masquerade_ports.1),
            _pad: 0,
            masq_addr6_be: self.masquerade_addr6.map_or([0; 4], ip6_to_raw),
        }
    }

    /// Back from the globals' values (SVC_CONFIG), the pod CIDRs (SVC4_POD_CIDRS and
    /// SVC6_POD_CIDRS) and the
    /// maps' capacities. A detect-local number this build does not know reads as none. The
    /// socket programs' settings are not recorded (svcctl trace runs the packet programs):
    /// they read as the defaults.
    pub fn from_raw(
        raw: &DatapathConfig4,
        pod_cidrs: Vec<IpCidr>,
        map_sizes: MapSizes,
    ) -> DatapathConfig {
        DatapathConfig {
            detect_local: DetectLocal::from_raw(raw.detect_local).unwrap_or(DetectLocal::None),
            pod_cidrs,
            masquerade_addr: (raw.masq_addr_be != 0).then(|| ip_from_be(raw.masq_addr_be)),
            masquerade_addr6: (raw.masq_addr6_be != [0; 4])
                .then(|| ip6_from_raw(raw.masq_addr6_be)),
            masquerade_all: raw.masquerade_all != 0,
            masquerade_ports: (
                u16::try_from(raw.nat_port_min).unwrap_or(DEFAULT_MASQUERADE_PORTS.0),
                u16::try_from(raw.nat_port_max).unwrap_or(DEFAULT_MASQUERADE_PORTS.1),
            ),
            map_sizes,
            ..DatapathConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_heads_round_trip() {
        for kind in FrontendKind::ALL {
            let head = FrontendHead {
                count: 3,
                rev_nat_id: 7,
                kind: *kind,
                local: true,
                source_ranges: *kind == FrontendKind::LoadBalancer,
                affinity_timeout: Some(10800),
            };
            assert_eq!(FrontendHead::decode(&head.encode()), head);
        }
        let plain = FrontendHead::default();
        assert_eq!(plain.encode().flags, 0);
        assert_eq!(FrontendHead::decode(&plain.encode()), plain);
    }

    #[test]
    fn keys_and_addresses_round_trip() {
        let f = Frontend {
            vip: Ipv4Addr::new(10, 96, 0, 10).into(),
            port: 80,
            proto: Protocol::Udp,
        };
        let ServiceKey::V4(k) = service_key(&f, Scope::Local, 2) else {
            panic!("an IPv4 frontend's key is an IPv4 key")
        };
        assert_eq!((k.slot, k.scope, k.proto), (2, 1, 17));
        assert_eq!(k.vip_be.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(frontend_of(&k), Some(f));
        assert_eq!(
            frontend_of(&Svc4Key { proto: 132, ..k }).map(|f| f.proto),
            Some(Protocol::Sctp)
        );
        assert_eq!(frontend_of(&Svc4Key { proto: 1, ..k }), None);
        let b = BackendAddr {
            addr: Ipv4Addr::new(10, 244, 1, 11).into(),
            port: 8080,
            proto: Protocol::Tcp,
        };
        let BackendValue::V4(v) = backend_value(&b, BackendState::Terminating) else {
            panic!("an IPv4 backend's value is an IPv4 value")
        };
        assert_eq!(backend_addr(&v), Some(b));
        assert_eq!(backend_state(&v), Some(BackendState::Terminating));
        assert_eq!(backend_endpoint(&v).to_string(), "10.244.1.11:8080");
        let RevNatValue::V4(r) = revnat_value(&f) else {
            panic!("IPv4")
        };
        assert_eq!(revnat_endpoint(&r).to_string(), "10.96.0.10:80");
    }

    #[test]
    fn ipv6_keys_and_addresses_round_trip() {
        let f = Frontend {
            vip: "fd00::10".parse().unwrap(),
            port: 80,
            proto: Protocol::Tcp,
        };
        let ServiceKey::V6(k) = service_key(&f, Scope::All, 1) else {
            panic!("an IPv6 frontend's key is an IPv6 key")
        };
        // Network order, as the packet carries the address.
        assert_eq!(
            svc_common::ip6_octets(k.vip_be),
            "fd00::10".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!((k.slot, k.port_be), (1, 80u16.to_be()));
        assert_eq!(frontend_of(&k), Some(f));
        let b = BackendAddr {
            addr: "fd00:10:244:1::11".parse().unwrap(),
            port: 8080,
            proto: Protocol::Udp,
        };
        let v = backend_value(&b, BackendState::Active);
        assert_eq!(v.family(), Family::V6);
        assert_eq!(v.addr(), Some(b));
        let BackendValue::V6(raw) = v else {
            panic!("IPv6")
        };
        assert_eq!(
            backend_endpoint(&raw).to_string(),
            "[fd00:10:244:1::11]:8080"
        );
        let RevNatValue::V6(r) = revnat_value(&f) else {
            panic!("IPv6")
        };
        assert_eq!(revnat_endpoint(&r).to_string(), "[fd00::10]:80");
        let cidr: IpCidr = "2001:db8:7::/48".parse().unwrap();
        let SrcRangeEntry::V6(key) = src_range_key(9, &cidr) else {
            panic!("IPv6")
        };
        assert_eq!((key.0, key.1.rev_nat_id), (32 + 48, 9));
        assert_eq!(src_range6_cidr(&key).map(IpCidr::V6), Some(cidr));
        assert_eq!(src_range6_cidr(&(32 + 129, key.1)), None);
        let pod: Ipv6Cidr = "fd00:10:244::/56"
            .parse::<IpCidr>()
            .ok()
            .and_then(|c| match c {
                IpCidr::V6(c) => Some(c),
                IpCidr::V4(_) => None,
            })
            .unwrap();
        assert_eq!(pod_cidr6_of(pod_cidr6_key(&pod)), Some(pod));
    }

    #[test]
    fn source_ranges_round_trip_and_bad_lengths_are_refused() {
        let cidr: Ipv4Cidr = "203.0.113.0/24".parse().unwrap();
        let SrcRangeEntry::V4(key) = src_range_key(5, &IpCidr::V4(cidr)) else {
            panic!("IPv4")
        };
        assert_eq!(key.0, 32 + 24);
        assert_eq!(src_range_cidr(&key), Some(cidr));
        assert_eq!(src_range_cidr(&(31, key.1)), None);
        assert_eq!(src_range_cidr(&(65, key.1)), None);
    }

    #[test]
    fn cluster_ips_and_service_cidrs_round_trip() {
        let ip = Ipv4Addr::new(10, 96, 0, 10);
        assert_eq!(cluster_ip_key(ip).to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(cluster_ip_of(cluster_ip_key(ip)), ip);
        for w in ClusterIpUse::ALL {
            assert_eq!(cluster_ip_use(cluster_ip_value(*w)), Some(*w));
        }
        assert_eq!(cluster_ip_use(0), None);
        let cidr: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
        let key = service_cidr_key(&cidr);
        assert_eq!(key.0, 12);
        assert_eq!(key.1.to_ne_bytes(), [10, 96, 0, 0]);
        assert_eq!(service_cidr_of(&key), Some(cidr));
        // Host bits never reach the trie.
        let sloppy = Ipv4Cidr {
            addr: Ipv4Addr::new(10, 96, 7, 1),
            prefix_len: 16,
        };
        assert_eq!(service_cidr_key(&sloppy).1.to_ne_bytes(), [10, 96, 0, 0]);
        assert_eq!(service_cidr_of(&(33, key.1)), None);
    }

    #[test]
    fn ipv6_cluster_ips_cidrs_and_range_round_trip() {
        let ip: Ipv6Addr = "fd00:10:96::a".parse().unwrap();
        assert_eq!(svc_common::ip6_octets(cluster_ip6_key(ip)), ip.octets());
        assert_eq!(cluster_ip6_of(cluster_ip6_key(ip)), ip);
        assert_eq!(ClusterIpKey::of(IpAddr::V6(ip)).ip(), IpAddr::V6(ip));
        let cidr: IpCidr = "fd00:10:96::7/112".parse().unwrap();
        let ServiceCidrEntry::V6(key) = ServiceCidrEntry::of(&cidr) else {
            panic!("IPv6")
        };
        // Address bits only, host bits cleared.
        assert_eq!(key.0, 112);
        assert_eq!(
            svc_common::ip6_octets(key.1),
            "fd00:10:96::".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(ServiceCidrEntry::V6(key).cidr(), Some(cidr));
        assert_eq!(service_cidr6_of(&(129, key.1)), None);
        // The range: from the CIDR's first address to the ClusterIP past its end.
        let beyond = cluster_ip6_key("fd00:10:97::1".parse().unwrap());
        let r = unserved_range6(&[beyond], &[key]);
        let h = |s: &str| AddrRange6::halves(s.parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!((r.lo, r.hi), (h("fd00:10:96::"), h("fd00:10:97::1")));
        assert!(range6_covers(&r, "fd00:10:96::ffff".parse().unwrap()));
        assert!(!range6_covers(&r, "fd00:10:97::2".parse().unwrap()));
        assert_eq!(unserved_range6(&[], &[]), AddrRange6::EMPTY);
        // ::/0 and a /128 at the top: the whole space.
        let all = service_cidr6_key(&Ipv6Cidr::new(Ipv6Addr::UNSPECIFIED, 0));
        let r = unserved_range6(&[], &[all]);
        assert_eq!((r.lo, r.hi), ([0, 0], [u64::MAX, u64::MAX]));
        // Both families at once, each to its own range.
        let (r4, r6) = unserved_ranges(
            &[ClusterIpKey::of("10.96.0.1".parse().unwrap())],
            &[ServiceCidrEntry::V6(key)],
        );
        assert_eq!((r4.lo, r4.hi), (0x0a60_0001, 0x0a60_0001));
        assert_eq!((r6.lo, r6.hi), (h("fd00:10:96::"), h("fd00:10:96::ffff")));
    }

    #[test]
    fn flag_labels_name_unknown_bits() {
        assert_eq!(
            frontend_flag_labels(SVC_F_EXTERNAL | SVC_F_LOCAL | 0x8000),
            vec!["external", "policy-local", "unknown(0x8000)"]
        );
        assert_eq!(ct_flag_labels(0), Vec::<String>::new());
        assert_eq!(protocol_label(132), "SCTP");
        assert_eq!(protocol_label(47), "proto-47");
        assert_eq!(word_label(Scope::from_raw(9), 9), "unknown(9)");
    }

    #[test]
    fn pod_cidrs_round_trip() {
        let c: Ipv4Cidr = "10.244.7.9/16".parse().unwrap();
        let key = pod_cidr_key(&c);
        assert_eq!(key, (16, u32::from_ne_bytes([10, 244, 0, 0])));
        assert_eq!(pod_cidr_of(key), Some("10.244.0.0/16".parse().unwrap()));
        assert_eq!(pod_cidr_of((33, 0)), None);
    }

    #[test]
    fn the_config_round_trips() {
        let c = DatapathConfig {
            detect_local: DetectLocal::Cidr,
            pod_cidrs: vec![
                "10.244.0.0/16".parse().unwrap(),
                "10.200.0.0/16".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap(),
            ],
            masquerade_addr: Some(Ipv4Addr::new(192, 0, 2, 1)),
            masquerade_addr6: Some("fd00:192:0:2::1".parse().unwrap()),
            masquerade_all: true,
            masquerade_ports: (30000, 40000),
            map_sizes: MapSizes { lb: 10, ct: 20 },
            // The socket programs' settings are not recorded: they read back as defaults.
            ..DatapathConfig::default()
        };
        assert_eq!(
            DatapathConfig::from_raw(&c.to_raw(), c.pod_cidrs.clone(), c.map_sizes),
            c
        );
        let d = DatapathConfig::default();
        assert_eq!(
            DatapathConfig::from_raw(&d.to_raw(), Vec::new(), d.map_sizes),
            d
        );
        let i = DatapathConfig {
            detect_local: DetectLocal::Interface,
            ..DatapathConfig::default()
        };
        assert_eq!(
            DatapathConfig::from_raw(&i.to_raw(), Vec::new(), i.map_sizes),
            i
        );
    }

    #[test]
    fn names_carry_their_words() {
        let n = served_name("default", "echo", "http", FrontendKind::NodePort);
        assert_eq!(name_kind(&n), Some(FrontendKind::NodePort));
        let u = unserved_name("default", "db", UnservedReason::ExternalName);
        assert_eq!(unserved_reason(&u), Ok(UnservedReason::ExternalName));
        assert_eq!(name_kind(&u), None);
        assert!(is_unserved_key(unserved_key(0)) && !is_unserved_key(1));
    }
}
