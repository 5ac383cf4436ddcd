//! The address family as a type: `u32` (an IPv4 address, network order) or `Ip6` (an IPv6
//! address as four network-order words). Each implements [`Family`], which names that
//! family's maps and node facts, so the rules in lb.rs, local.rs and rules.rs are written
//! once, generic over the address, and the compiler makes one copy per family (docs/ipv6.md:
//! "one decision code for both families"). A packet's family is known from its EtherType
//! before any lookup, so no lookup ever pays for the other family.
//!
//! What differs between the families beyond the maps lives here too, each with the reason:
//! loopback and first-fragment records (frag.rs, frag6.rs).
use aya_ebpf::maps::{HashMap, LpmTrie, LruHashMap, lpm_trie::Key};
use svc_common::{
    Affinity4Value, AffinityKey, Backend, CtKey, CtValue, FRAG_KIND_DROP, Ip6, RevNat, SrcRange,
    Svc4Value, SvcKey, Verdict,
};

use crate::{
    clock::Clock,
    config, frag, frag6,
    lb::Action,
    maps::{
        SVC4_AFFINITY, SVC4_BACKENDS, SVC4_CT, SVC4_POD_CIDRS, SVC4_REVNAT, SVC4_SERVICES,
        SVC4_SRC_RANGE, SVC6_AFFINITY, SVC6_BACKENDS, SVC6_CT, SVC6_POD_CIDRS, SVC6_REVNAT,
        SVC6_SERVICES, SVC6_SRC_RANGE,
    },
    parse::Packet,
    rules,
    unserved::{self, Unserved},
};

/// An address family, implemented by its address type. Comparisons go through `same`
/// rather than `==`: on an array, `==` may become a memcmp call, which BPF has not got.
pub trait Family: Copy + 'static {
    /// The unspecified address: "no address" in an `Endpoint` and in the globals.
    const ZERO: Self;
    /// Address bits (an LPM key's full prefix).
    const BITS: u32;
    /// Whether the masquerade port search (lb.rs) takes over a dead reply tuple of another
    /// flow at every candidate, or only at the first (the client's own port): IPv6 only
    /// at the first, for the stack limit (`lb::probe_reply`). An IPv6 flow whose
    /// own port is taken then skips dead tuples, which the LRU evicts in time.
    const PROBE_DEAD_IN_LOOP: bool;

    fn same(&self, other: &Self) -> bool;

    #[inline(always)]
    fn is_zero(&self) -> bool {
        self.same(&Self::ZERO)
    }

    fn services() -> &'static HashMap<SvcKey<Self>, Svc4Value>;
    fn backends() -> &'static HashMap<u32, Backend<Self>>;
    fn revnat() -> &'static HashMap<u32, RevNat<Self>>;
    fn ct() -> &'static LruHashMap<CtKey<Self>, CtValue<Self>>;
    fn affinity() -> &'static LruHashMap<AffinityKey<Self>, Affinity4Value>;
    fn src_ranges() -> &'static LpmTrie<SrcRange<Self>, u8>;

    /// Whether `self` is inside one of the pod CIDRs (detect-local by address).
    fn in_pod_cidrs(&self) -> bool;
    /// The address masqueraded flows get as their source; ZERO: never masquerade.
    fn masq_addr() -> Self;
    /// A loopback destination: never a Service's on a packet (rules::is_loopback).
    fn is_loopback(&self) -> bool;
    /// The rule for an address no frontend takes (unserved.rs).
    fn unserved_class(&self) -> Unserved;

    /// What a packet to this address, which no frontend takes and which is no reply, gets.
    #[inline(always)]
    fn unserved(&self) -> Action<Self> {
        match self.unserved_class() {
            Unserved::Pass => Action::Done(Verdict::PassNotService),
            Unserved::Reject => Action::Reject { rev_nat_id: 0 },
            Unserved::Drop => Action::Done(Verdict::DropUnallocated),
        }
    }

    /// Records, for a first fragment, what the rest of its datagram gets (frag.rs): its
    /// new addresses, that it was dropped (`kind` FRAG_KIND_DROP), or nothing to do.
    fn frag_translated(pkt: &Packet<Self>, kind: u8, saddr: Self, daddr: Self, clock: &Clock);
    fn frag_dropped(pkt: &Packet<Self>, clock: &Clock);
    fn frag_done(pkt: &Packet<Self>, verdict: Verdict, clock: &Clock);
}

impl Family for u32 {
    const ZERO: u32 = 0;
    const BITS: u32 = 32;
    const PROBE_DEAD_IN_LOOP: bool = true;

    #[inline(always)]
    fn same(&self, other: &u32) -> bool {
        *self == *other
    }
    #[inline(always)]
    fn services() -> &'static HashMap<SvcKey<u32>, Svc4Value> {
        &SVC4_SERVICES
    }
    #[inline(always)]
    fn backends() -> &'static HashMap<u32, Backend<u32>> {
        &SVC4_BACKENDS
    }
    #[inline(always)]
    fn revnat() -> &'static HashMap<u32, RevNat<u32>> {
        &SVC4_REVNAT
    }
    #[inline(always)]
    fn ct() -> &'static LruHashMap<CtKey<u32>, CtValue<u32>> {
        &SVC4_CT
    }
    #[inline(always)]
    fn affinity() -> &'static LruHashMap<AffinityKey<u32>, Affinity4Value> {
        &SVC4_AFFINITY
    }
    #[inline(always)]
    fn src_ranges() -> &'static LpmTrie<SrcRange<u32>, u8> {
        &SVC4_SRC_RANGE
    }
    #[inline(always)]
    fn in_pod_cidrs(&self) -> bool {
        SVC4_POD_CIDRS.get(&Key::new(32, *self)).is_some()
    }
    #[inline(always)]
    fn masq_addr() -> u32 {
        config::masq_addr()
    }
    #[inline(always)]
    fn is_loopback(&self) -> bool {
        rules::is_loopback(*self)
    }
    #[inline(always)]
    fn unserved_class(&self) -> Unserved {
        unserved::classify(*self)
    }
    #[inline(always)]
    fn frag_translated(pkt: &Packet<u32>, kind: u8, saddr: u32, daddr: u32, clock: &Clock) {
        frag::record(&frag::translated(pkt, kind, saddr, daddr), clock);
    }
    #[inline(always)]
    fn frag_dropped(pkt: &Packet<u32>, clock: &Clock) {
        frag::record(&frag::dropped(pkt), clock);
    }
    #[inline(always)]
    fn frag_done(pkt: &Packet<u32>, verdict: Verdict, clock: &Clock) {
        frag::record(&frag::done(pkt, verdict), clock);
    }
}

impl Family for Ip6 {
    const ZERO: Ip6 = [0; 4];
    const BITS: u32 = 128;
    const PROBE_DEAD_IN_LOOP: bool = false;

    #[inline(always)]
    fn same(&self, other: &Ip6) -> bool {
        self[0] == other[0] && self[1] == other[1] && self[2] == other[2] && self[3] == other[3]
    }
    #[inline(always)]
    fn services() -> &'static HashMap<SvcKey<Ip6>, Svc4Value> {
        &SVC6_SERVICES
    }
    #[inline(always)]
    fn backends() -> &'static HashMap<u32, Backend<Ip6>> {
        &SVC6_BACKENDS
    }
    #[inline(always)]
    fn revnat() -> &'static HashMap<u32, RevNat<Ip6>> {
        &SVC6_REVNAT
    }
    #[inline(always)]
    fn ct() -> &'static LruHashMap<CtKey<Ip6>, CtValue<Ip6>> {
        &SVC6_CT
    }
    #[inline(always)]
    fn affinity() -> &'static LruHashMap<AffinityKey<Ip6>, Affinity4Value> {
        &SVC6_AFFINITY
    }
    #[inline(always)]
    fn src_ranges() -> &'static LpmTrie<SrcRange<Ip6>, u8> {
        &SVC6_SRC_RANGE
    }
    #[inline(always)]
    fn in_pod_cidrs(&self) -> bool {
        SVC6_POD_CIDRS.get(&Key::new(128, *self)).is_some()
    }
    #[inline(always)]
    fn masq_addr() -> Ip6 {
        config::masq_addr6()
    }
    /// ::1. A packet to it on a real interface is a martian, as 127/8 on IPv4; no
    /// frontend is ever written at ::1 (localhost NodePorts are IPv4 only in kube-proxy).
    #[inline(always)]
    fn is_loopback(&self) -> bool {
        self[0] == 0 && self[1] == 0 && self[2] == 0 && self[3] == 1u32.to_be()
    }
    #[inline(always)]
    fn unserved_class(&self) -> Unserved {
        unserved::classify6(self)
    }
    #[inline(always)]
    fn frag_translated(pkt: &Packet<Ip6>, kind: u8, saddr: Ip6, daddr: Ip6, clock: &Clock) {
        frag6::record(pkt, kind, saddr, daddr, false, clock);
    }
    #[inline(always)]
    fn frag_dropped(pkt: &Packet<Ip6>, clock: &Clock) {
        frag6::record(pkt, FRAG_KIND_DROP, [0; 4], [0; 4], false, clock);
    }
    #[inline(always)]
    fn frag_done(pkt: &Packet<Ip6>, verdict: Verdict, clock: &Clock) {
        frag6::done(pkt, verdict, clock);
    }
}
