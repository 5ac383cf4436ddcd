//! icmp.rs for IPv6: ICMPv6 errors about translated flows (destination unreachable, packet
//! too big, time exceeded, parameter problem) translated back, both directions, so that
//! path-MTU discovery works through an IPv6 Service: an IPv6 router never fragments, so a
//! "packet too big" that does not reach the sending socket leaves its connection stuck.
//! The directions, the conntrack lookups and the rewrite (`icmp::related`) are icmp.rs's.
//!
//! Differences from ICMP on IPv4:
//! - The ICMPv6 checksum covers a pseudo-header (RFC 4443 2.3): the outer addresses count
//!   in it, so a change of the outer source or destination is folded into it too. It is
//!   updated incrementally over every changed word (outer addresses, quoted addresses,
//!   quoted ports, the quoted TCP/UDP checksum): every change is balanced by that field,
//!   so a CHECKSUM_COMPLETE skb's sum stays right.
//! - There is no IPv6 header checksum, outer or quoted.
//! - A quoted UDP checksum is never zero on IPv6 (RFC 8200 8.1): it is always updated.
//!
//! Only errors whose outer IPv6 header is followed by the ICMPv6 header, and whose quote's
//! IPv6 header is followed by TCP or UDP, are looked at: extension headers before either
//! are passed untouched (`pass_other_proto`), as are errors not about a live translated
//! flow, and every informational message (echo, neighbour discovery, MLD).
//!
//! TC only: XDP passes ICMPv6 errors to TC (`xdp_pass_to_tc`, see `is_error`).
use core::mem::size_of;

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use svc_common::{Ip6, PROTO_TCP, PROTO_UDP, Verdict};

use crate::{
    clock,
    icmp::{IcmpHdr, QuotedL4, Rewrite, related, replace2, replace4, store},
    parse::{ETH_HLEN, ptr_at},
    parse6::{IPV6_HLEN, Ipv6Hdr},
    tc,
};

const IPPROTO_ICMPV6: u8 = 58;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PARAMPROB: u8 = 4;
/// Offset of the checksum in a TCP header.
const TCP_CSUM_OFF: usize = 16;
const ICMP_OFF: usize = ETH_HLEN + IPV6_HLEN;
const INNER_OFF: usize = ICMP_OFF + size_of::<IcmpHdr>();
const L4_OFF: usize = INNER_OFF + IPV6_HLEN;

/// Destination unreachable (1), packet too big (2), time exceeded (3), parameter problem
/// (4): the error types, which all quote the offending packet.
#[inline(always)]
fn is_error_type(kind: u8) -> bool {
    (ICMPV6_DEST_UNREACH..=ICMPV6_PARAMPROB).contains(&kind)
}

/// For XDP, on a frame parse6 found to be IPv6 but neither TCP, UDP nor SCTP: whether it is
/// an ICMPv6 error TC may translate.
#[inline(always)]
pub fn is_error(start: usize, end: usize) -> bool {
    let Some(ip) = ptr_at::<Ipv6Hdr>(start, end, ETH_HLEN) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*ip).nexthdr } != IPPROTO_ICMPV6 {
        return false;
    }
    match ptr_at::<IcmpHdr>(start, end, ICMP_OFF) {
        // SAFETY: bounds checked by ptr_at.
        Some(icmp) => is_error_type(unsafe { (*icmp).kind }),
        None => false,
    }
}

/// TC, on a frame parse6 found to be IPv6 but neither TCP, UDP nor SCTP: translates an
/// ICMPv6 error about a translated flow (`rev_nat_icmp` / `dnat_icmp`); anything else
/// passes untouched as `pass_other_proto`. A BPF function of its own, beside the packet
/// path's, as icmp::translate.
#[inline(never)]
pub fn translate(ctx: &TcContext) -> (Verdict, i32) {
    match try_translate(ctx) {
        Ok(verdict) => (verdict, TC_ACT_OK),
        Err(verdict) => (verdict, tc::action_for(verdict)),
    }
}

#[inline(always)]
fn try_translate(ctx: &TcContext) -> Result<Verdict, Verdict> {
    const PASS: Verdict = Verdict::PassOtherProto;
    let outer: Ipv6Hdr = ctx.load(ETH_HLEN).map_err(|_| PASS)?;
    if outer.nexthdr != IPPROTO_ICMPV6 {
        return Err(PASS);
    }
    let icmp: IcmpHdr = ctx.load(ICMP_OFF).map_err(|_| PASS)?;
    if !is_error_type(icmp.kind) {
        return Err(PASS);
    }
    let inner: Ipv6Hdr = ctx.load(INNER_OFF).map_err(|_| PASS)?;
    if u32::from_be(inner.vtc_flow_be) >> 28 != 6
        || (inner.nexthdr != PROTO_TCP && inner.nexthdr != PROTO_UDP)
    {
        return Err(PASS);
    }
    // The quoted ports must be part of the packet, not Ethernet padding.
    let end = ICMP_OFF + u16::from_be(outer.payload_len_be) as usize;
    if L4_OFF + size_of::<QuotedL4>() > end {
        return Err(PASS);
    }
    let l4: QuotedL4 = ctx.load(L4_OFF).map_err(|_| PASS)?;
    // An error goes to the sender of the offending packet.
    if !same(&outer.daddr, &inner.saddr) {
        return Err(PASS);
    }
    let tcp_csum = if inner.nexthdr == PROTO_TCP && L4_OFF + TCP_CSUM_OFF + 2 <= end {
        ctx.load::<u16>(L4_OFF + TCP_CSUM_OFF).ok()
    } else {
        None
    };
    let rw = related(
        outer.saddr,
        inner.saddr,
        inner.daddr,
        &l4,
        inner.nexthdr,
        clock::now(),
    )
    .ok_or(PASS)?;
    apply(ctx, &outer, icmp, &inner, l4, tcp_csum, &rw)
}

#[inline(always)]
fn same(a: &Ip6, b: &Ip6) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// The checksum `c` after address `from` became `to`, word by word.
#[inline(always)]
fn replace16(mut c: u16, from: &Ip6, to: &Ip6) -> u16 {
    let mut i = 0;
    while i < 4 {
        c = replace4(c, from[i], to[i]);
        i += 1;
    }
    c
}

/// The quoted TCP/UDP checksum `c` after the quote's addresses and ports change to `rw`'s
/// (the addresses are part of its pseudo-header).
#[inline(always)]
fn l4_csum(c: u16, inner: &Ipv6Hdr, l4: &QuotedL4, rw: &Rewrite<Ip6>) -> u16 {
    let c = replace16(c, &inner.saddr, &rw.inner_saddr);
    let c = replace16(c, &inner.daddr, &rw.inner_daddr);
    let c = replace2(c, l4.sport_be, rw.inner_sport);
    replace2(c, l4.dport_be, rw.inner_dport)
}

/// Rewrites the quote, the ICMPv6 checksum and the outer addresses.
#[inline(always)]
fn apply(
    ctx: &TcContext,
    outer: &Ipv6Hdr,
    mut icmp: IcmpHdr,
    inner: &Ipv6Hdr,
    mut l4: QuotedL4,
    tcp_csum: Option<u16>,
    rw: &Rewrite<Ip6>,
) -> Result<Verdict, Verdict> {
    // The ICMPv6 checksum, over every changed word: the outer addresses (pseudo-header),
    // the quoted addresses, ports and L4 checksum.
    let mut c = icmp.csum;
    c = replace16(c, &outer.saddr, &rw.outer_saddr);
    c = replace16(c, &outer.daddr, &rw.outer_daddr);
    c = replace16(c, &inner.saddr, &rw.inner_saddr);
    c = replace16(c, &inner.daddr, &rw.inner_daddr);
    if let Some(old) = tcp_csum {
        let new = l4_csum(old, inner, &l4, rw);
        c = replace2(c, old, new);
        store(ctx, L4_OFF + TCP_CSUM_OFF, &new)?;
    }
    if inner.nexthdr == PROTO_UDP {
        let old = l4.udp_csum;
        let new = l4_csum(old, inner, &l4, rw);
        let new = if new == 0 { 0xffff } else { new };
        c = replace2(c, old, new);
        l4.udp_csum = new;
    }
    c = replace2(c, l4.sport_be, rw.inner_sport);
    c = replace2(c, l4.dport_be, rw.inner_dport);
    icmp.csum = c;
    l4.sport_be = rw.inner_sport;
    l4.dport_be = rw.inner_dport;
    store(ctx, L4_OFF, &l4)?;
    store(ctx, INNER_OFF + 8, &rw.inner_saddr)?;
    store(ctx, INNER_OFF + 24, &rw.inner_daddr)?;
    store(ctx, ICMP_OFF, &icmp)?;
    store(ctx, ETH_HLEN + 8, &rw.outer_saddr)?;
    store(ctx, ETH_HLEN + 24, &rw.outer_daddr)?;
    Ok(rw.verdict)
}
