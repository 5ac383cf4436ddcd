//! Packets to an address no frontend takes, that are no reply of a translated flow:
//! kube-proxy nftables' `cluster-ips-check` chain. An allocated ClusterIP on a port or
//! protocol no Service has is rejected (TCP RST / ICMP port unreachable; a node process
//! gets ECONNREFUSED); an address inside a service CIDR that no Service has is dropped (a
//! node process gets EPERM); anything else passes, as before. The agent writes both maps
//! (SVC4_CLUSTERIPS, SVC4_SVC_CIDR; SVC6_* for IPv6); with both empty every such packet
//! passes. A third,
//! SVC4_SVC_RANGE, holds the address range both cover: a destination outside it (most
//! packets no frontend takes) is passed without looking up either.
//!
//! Only the destination is looked at, so traffic *from* a ClusterIP (a reply after reverse
//! NAT) is never affected, and a reply of a tracked flow is reverse-translated before this
//! runs (lb.rs). kube-proxy applies its rule to new connections in the forward and output
//! paths only; the agent keeps this node's own addresses out of both maps, so packets to
//! the node itself (kube-proxy's input path) still pass.
use aya_ebpf::maps::lpm_trie::Key;
use svc_common::{CLUSTERIP_OTHER_PROXY, Ip6};

use crate::maps::{
    SVC4_CLUSTERIPS, SVC4_SVC_CIDR, SVC4_SVC_RANGE, SVC6_CLUSTERIPS, SVC6_SVC_CIDR, SVC6_SVC_RANGE,
};

/// What a packet (or a node process's call) to an address no frontend takes gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unserved {
    /// Not ours: pass untouched (no allocated ClusterIP, outside every service CIDR, or a
    /// ClusterIP only another proxy's Services have).
    Pass,
    /// An allocated ClusterIP on a port/protocol no Service has: REJECT.
    Reject,
    /// Inside a service CIDR, allocated to no Service: DROP.
    Drop,
}

/// The rule for a destination `daddr` (network order) no frontend takes.
#[inline(always)]
pub fn classify(daddr: u32) -> Unserved {
    // Outside every ClusterIP and service CIDR (most packets no frontend takes): no lookup.
    match SVC4_SVC_RANGE.get(0) {
        Some(range) if range.contains(u32::from_be(daddr)) => {}
        _ => return Unserved::Pass,
    }
    // SAFETY: the value is copied out at once.
    if let Some(use_) = unsafe { SVC4_CLUSTERIPS.get(&daddr) } {
        return if *use_ == CLUSTERIP_OTHER_PROXY {
            Unserved::Pass
        } else {
            Unserved::Reject
        };
    }
    if SVC4_SVC_CIDR.get(&Key::new(32, daddr)).is_some() {
        Unserved::Drop
    } else {
        Unserved::Pass
    }
}

/// `classify` for IPv6: the same rule on SVC6_SVC_RANGE, SVC6_CLUSTERIPS and SVC6_SVC_CIDR.
#[inline(always)]
pub fn classify6(daddr: &Ip6) -> Unserved {
    // The address's halves, host order (AddrRange6).
    let halves = [
        ((u32::from_be(daddr[0]) as u64) << 32) | u32::from_be(daddr[1]) as u64,
        ((u32::from_be(daddr[2]) as u64) << 32) | u32::from_be(daddr[3]) as u64,
    ];
    match SVC6_SVC_RANGE.get(0) {
        Some(range) if range.contains(halves) => {}
        _ => return Unserved::Pass,
    }
    // SAFETY: the value is copied out at once.
    if let Some(use_) = unsafe { SVC6_CLUSTERIPS.get(daddr) } {
        return if *use_ == CLUSTERIP_OTHER_PROXY {
            Unserved::Pass
        } else {
            Unserved::Reject
        };
    }
    if SVC6_SVC_CIDR.get(&Key::new(128, *daddr)).is_some() {
        Unserved::Drop
    } else {
        Unserved::Pass
    }
}
