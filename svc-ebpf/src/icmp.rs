//! ICMP errors about translated flows (destination unreachable, fragmentation needed
//! included; time exceeded; parameter problem), translated as netfilter translates the
//! RELATED errors of a NATed connection (nf_nat_icmp_reply_translation), so the socket that
//! sent the offending packet learns of it: path-MTU discovery through a Service works.
//!
//! An ICMP error carries the offending packet's IPv4 header and the first 8 bytes of its
//! TCP/UDP header (Linux quotes up to 576 bytes). Two directions:
//! - *Toward the client* (`rev_nat_icmp`): an error about a packet a client sent to a
//!   Service, generated behind the DNAT (a router between the node and the backend, or the
//!   backend itself: fragmentation needed, port unreachable, time exceeded). It quotes
//!   `client (or masquerade address):port -> backend:targetPort` and is addressed to that
//!   source; the quote reversed is the flow's *reply* entry. The quote becomes
//!   `client:port -> Service address:port`, the outer destination the client (when
//!   masqueraded), the outer source the Service address (netfilter rewrites it with the
//!   un-DNAT: a traceroute through a Service shows the Service address for the hops behind
//!   it, and no cluster-internal router address leaks to the client).
//! - *Toward the backend* (`dnat_icmp`): an error about a reply, generated between the node
//!   and the client (a router on the client's side with a lower MTU, a client whose UDP
//!   socket is gone). It quotes `Service address:port -> client (or masquerade address):port`
//!   and is addressed to the Service address; the quote reversed is the flow's *service*
//!   entry. The quote becomes `backend:targetPort -> client (or masquerade address):port`,
//!   the outer destination the backend, the outer source the masquerade address when the
//!   flow is masqueraded (netfilter's SNAT of the original direction).
//!
//! Checksums: the quoted IPv4 header checksum and the quoted TCP/UDP checksum are updated
//! incrementally as netfilter does (nf_nat_ipv4_manip_pkt on the quote), so the quote reads
//! exactly as the packet its receiver sent: a UDP checksum is always among the 8 quoted
//! bytes (zero, "none", stays zero); a TCP checksum only when the error quotes the whole
//! TCP header (Linux quotes up to 576 bytes; a minimal RFC 792 quote of 8 bytes ends
//! before it, and then only the ports change, as in netfilter's tcp_manip_pkt).
//! Linux does not verify the quoted L4 checksum on receipt (tcp_v4_err, __udp4_lib_err),
//! but it does verify the ICMP checksum, which covers the whole message: it is updated
//! incrementally (RFC 1624) over the 28 quoted bytes that change, never summed over the
//! variable-length message (aya #1562), so an error that arrived with a bad checksum leaves
//! with one and is dropped by its receiver, as it would have been. Every change is balanced
//! by its checksum field inside the packet, so a CHECKSUM_COMPLETE skb's sum stays right.
//!
//! Only errors whose outer destination is the quoted source are translated (an error goes
//! to the sender of the offending packet; netfilter's conntrack marks others invalid), and
//! only when the quoted tuple is a live flow; anything else passes untouched
//! (`pass_other_proto`), as do echo requests and replies, redirects and source quench.
//! Conntrack entries are only read: an error neither refreshes nor closes a flow.
//!
//! TC only: XDP passes ICMP errors to TC (`xdp_pass_to_tc`, see `is_error`). Errors the
//! node generates itself (its own forwarding toward a lower-MTU interface) leave through
//! egress, where no program of ours runs: those are not translated (README, "ICMP errors").
use core::mem::size_of;

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use svc_common::{CT_F_SNAT, CT_KIND_REPLY, CT_KIND_SERVICE, PROTO_TCP, PROTO_UDP, Verdict};

use crate::{
    clock, csum,
    family::Family,
    lb,
    parse::{ETH_HLEN, Ipv4Hdr, ptr_at},
    tc,
};

const IPPROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;
const IP_OFFSET_MASK: u16 = 0x1fff;
const IP_HLEN: usize = 20;
/// Offset of the checksum in a TCP header.
const TCP_CSUM_OFF: usize = 16;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub csum: u16,
    /// Unused, the next-hop MTU (fragmentation needed) or the pointer (parameter problem).
    pub rest: u32,
}

/// The 8 bytes of the offending packet's TCP/UDP header an ICMP error quotes: the ports,
/// then UDP's length and checksum (TCP: the sequence number).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct QuotedL4 {
    pub sport_be: u16,
    pub dport_be: u16,
    pub udp_len_be: u16,
    pub udp_csum: u16,
}

/// The ICMP types that quote an offending packet and that we translate. Source quench
/// (deprecated, RFC 6633) and redirect (sent to the previous hop about its route, not
/// about the path) pass untouched.
#[inline(always)]
fn is_error_type(kind: u8) -> bool {
    kind == ICMP_DEST_UNREACH || kind == ICMP_TIME_EXCEEDED || kind == ICMP_PARAMETERPROB
}

/// For XDP, on a frame `parse` found to be IPv4 but neither TCP nor UDP: whether it is an
/// ICMP error of a type TC translates. XDP hands those to TC, which has the load/store
/// helpers for the variable offsets of the quote (outer and quoted IPv4 options).
#[inline(always)]
pub fn is_error(start: usize, end: usize) -> bool {
    let Some(ip) = ptr_at::<Ipv4Hdr>(start, end, ETH_HLEN) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { *ip };
    if ip.proto != IPPROTO_ICMP {
        return false;
    }
    let off = ETH_HLEN + (ip.vihl & 0x0f) as usize * 4;
    match ptr_at::<IcmpHdr>(start, end, off) {
        // SAFETY: bounds checked by ptr_at.
        Some(icmp) => is_error_type(unsafe { (*icmp).kind }),
        None => false,
    }
}

/// The addresses and ports a translated error gets (network order); icmp6.rs's too.
pub(crate) struct Rewrite<A> {
    pub outer_saddr: A,
    pub outer_daddr: A,
    pub inner_saddr: A,
    pub inner_daddr: A,
    pub inner_sport: u16,
    pub inner_dport: u16,
    pub verdict: Verdict,
}

/// Offsets in the frame of the ICMP header, the quoted IPv4 header and the quoted L4 bytes.
struct Offsets {
    icmp: usize,
    inner: usize,
    l4: usize,
}

/// TC, on a frame `parse` found to be IPv4 but neither TCP nor UDP: translates an ICMP
/// error about a translated flow (`rev_nat_icmp` / `dnat_icmp`); anything else passes
/// untouched as `pass_other_proto`.
// A BPF function of its own, as reject.rs's: called only for non-TCP/UDP packets, it keeps
// the common path's verification unchanged.
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
    // Loads through bpf_skb_load_bytes: the quote may lie beyond the linear area, and a
    // read past the end of the packet fails instead of reading padding.
    let outer: Ipv4Hdr = ctx.load(ETH_HLEN).map_err(|_| PASS)?;
    if outer.proto != IPPROTO_ICMP {
        return Err(PASS);
    }
    // parse() checked version 4, IHL >= 5 and the total length against the frame.
    let icmp_off = ETH_HLEN + (outer.vihl & 0x0f) as usize * 4;
    let icmp: IcmpHdr = ctx.load(icmp_off).map_err(|_| PASS)?;
    if !is_error_type(icmp.kind) {
        return Err(PASS);
    }
    let inner_off = icmp_off + size_of::<IcmpHdr>();
    let inner: Ipv4Hdr = ctx.load(inner_off).map_err(|_| PASS)?;
    let inner_hlen = (inner.vihl & 0x0f) as usize * 4;
    // Linux never sends an error about a non-first fragment (icmp_send); a quote of one
    // would hold no ports.
    if inner.vihl >> 4 != 4
        || inner_hlen < IP_HLEN
        || u16::from_be(inner.frag_off_be) & IP_OFFSET_MASK != 0
        || (inner.proto != PROTO_TCP && inner.proto != PROTO_UDP)
    {
        return Err(PASS);
    }
    let l4_off = inner_off + inner_hlen;
    // The quoted ports must be part of the IPv4 packet, not Ethernet padding.
    if l4_off + size_of::<QuotedL4>() > ETH_HLEN + u16::from_be(outer.tot_len_be) as usize {
        return Err(PASS);
    }
    let l4: QuotedL4 = ctx.load(l4_off).map_err(|_| PASS)?;
    if outer.daddr_be != inner.saddr_be {
        return Err(PASS);
    }
    // A quoted TCP header's checksum, when the quote reaches it.
    let tcp_csum_off = l4_off + TCP_CSUM_OFF;
    let tcp_csum = if inner.proto == PROTO_TCP
        && tcp_csum_off + 2 <= ETH_HLEN + u16::from_be(outer.tot_len_be) as usize
    {
        ctx.load::<u16>(tcp_csum_off).ok()
    } else {
        None
    };
    let rw = related(
        outer.saddr_be,
        inner.saddr_be,
        inner.daddr_be,
        &l4,
        inner.proto,
        clock::now(),
    )
    .ok_or(PASS)?;
    let at = Offsets {
        icmp: icmp_off,
        inner: inner_off,
        l4: l4_off,
    };
    apply(ctx, outer, icmp, inner, l4, tcp_csum, &at, &rw)
}

/// The translation of an error from `outer_saddr` quoting `inner_saddr` -> `inner_daddr`
/// and `l4`, if the quote is a packet of a live translated flow (see the module doc for
/// the two directions). Both families: icmp6.rs calls it with IPv6 addresses.
#[inline(always)]
pub(crate) fn related<A: Family>(
    outer_saddr: A,
    inner_saddr: A,
    inner_daddr: A,
    l4: &QuotedL4,
    proto: u8,
    now: u64,
) -> Option<Rewrite<A>> {
    // About a packet that went to a backend: the quote reversed is the reply entry.
    let key = lb::ct_key(
        inner_daddr,
        inner_saddr,
        l4.dport_be,
        l4.sport_be,
        proto,
        CT_KIND_REPLY,
    );
    // SAFETY: values are copied out at once.
    if let Some(rev) = unsafe { A::ct().get(&key) } {
        if !lb::expired(rev, proto, now) || lb::service_side_alive(&key, rev, now) {
            // None if the Service is gone: the error is then left as it is, as replies are.
            let svc = unsafe { A::revnat().get(&rev.rev_nat_id) }?;
            return Some(Rewrite {
                outer_saddr: svc.vip_be,
                outer_daddr: rev.addr_be,
                inner_saddr: rev.addr_be,
                inner_daddr: svc.vip_be,
                inner_sport: rev.port_be,
                inner_dport: svc.port_be,
                verdict: Verdict::RevNatIcmp,
            });
        }
    }
    // About a reply on its way to the client: the quote reversed is the service entry.
    let key = lb::ct_key(
        inner_daddr,
        inner_saddr,
        l4.dport_be,
        l4.sport_be,
        proto,
        CT_KIND_SERVICE,
    );
    let fwd = unsafe { A::ct().get(&key) }?;
    if lb::expired(fwd, proto, now) && !lb::reply_side_alive(&key, fwd, now) {
        return None;
    }
    let snat = fwd.flags & CT_F_SNAT != 0;
    Some(Rewrite {
        outer_saddr: if snat { fwd.nat_addr_be } else { outer_saddr },
        outer_daddr: fwd.addr_be,
        inner_saddr: fwd.addr_be,
        inner_daddr: if snat { fwd.nat_addr_be } else { inner_daddr },
        inner_sport: fwd.port_be,
        inner_dport: if snat { fwd.nat_port_be } else { l4.dport_be },
        verdict: Verdict::DnatIcmp,
    })
}

#[inline(always)]
pub(crate) fn replace4(csum: u16, from: u32, to: u32) -> u16 {
    // Unchanged values are not fed to the update (see xdp.rs `rewrite`).
    if from == to {
        csum
    } else {
        csum::replace4(csum, from, to)
    }
}

#[inline(always)]
pub(crate) fn replace2(csum: u16, from: u16, to: u16) -> u16 {
    if from == to {
        csum
    } else {
        csum::replace2(csum, from, to)
    }
}

/// The quoted TCP/UDP checksum `c` after the quote's addresses and ports change to `rw`'s
/// (the addresses are part of the pseudo-header).
#[inline(always)]
fn l4_csum(c: u16, inner: &Ipv4Hdr, l4: &QuotedL4, rw: &Rewrite<u32>) -> u16 {
    let c = replace4(c, inner.saddr_be, rw.inner_saddr);
    let c = replace4(c, inner.daddr_be, rw.inner_daddr);
    let c = replace2(c, l4.sport_be, rw.inner_sport);
    replace2(c, l4.dport_be, rw.inner_dport)
}

/// Rewrites the quote, the ICMP checksum and the outer addresses (see the module doc).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn apply(
    ctx: &TcContext,
    mut outer: Ipv4Hdr,
    mut icmp: IcmpHdr,
    mut inner: Ipv4Hdr,
    mut l4: QuotedL4,
    tcp_csum: Option<u16>,
    at: &Offsets,
    rw: &Rewrite<u32>,
) -> Result<Verdict, Verdict> {
    let old_sum = csum::sum_words::<_, 10>(&inner) + csum::sum_words::<_, 4>(&l4);
    // Zero means "no UDP checksum" and stays zero; a computed zero is sent as 0xffff
    // (RFC 768).
    if inner.proto == PROTO_UDP && l4.udp_csum != 0 {
        let c = l4_csum(l4.udp_csum, &inner, &l4, rw);
        l4.udp_csum = if c == 0 { 0xffff } else { c };
    }
    if let Some(old) = tcp_csum {
        let new = l4_csum(old, &inner, &l4, rw);
        icmp.csum = replace2(icmp.csum, old, new);
        store(ctx, at.l4 + TCP_CSUM_OFF, &new)?;
    }
    inner.csum = replace4(
        replace4(inner.csum, inner.saddr_be, rw.inner_saddr),
        inner.daddr_be,
        rw.inner_daddr,
    );
    inner.saddr_be = rw.inner_saddr;
    inner.daddr_be = rw.inner_daddr;
    l4.sport_be = rw.inner_sport;
    l4.dport_be = rw.inner_dport;
    // RFC 1624 eqn. 3 over the 14 quoted words: HC' = ~(~HC + ~m + m').
    let new_sum = csum::sum_words::<_, 10>(&inner) + csum::sum_words::<_, 4>(&l4);
    icmp.csum = !csum::fold((!icmp.csum) as u64 + (!csum::fold(old_sum)) as u64 + new_sum);
    outer.csum = replace4(
        replace4(outer.csum, outer.saddr_be, rw.outer_saddr),
        outer.daddr_be,
        rw.outer_daddr,
    );
    outer.saddr_be = rw.outer_saddr;
    outer.daddr_be = rw.outer_daddr;
    store(ctx, at.l4, &l4)?;
    store(ctx, at.inner, &inner)?;
    store(ctx, at.icmp, &icmp)?;
    // The fixed 20 bytes only: outer IPv4 options are not touched.
    store(ctx, ETH_HLEN, &outer)?;
    Ok(rw.verdict)
}

#[inline(always)]
pub(crate) fn store<T>(ctx: &TcContext, offset: usize, value: &T) -> Result<(), Verdict> {
    ctx.store(offset, value, 0)
        .map_err(|_| Verdict::DropRewriteFailed)
}
