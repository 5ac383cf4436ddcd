//! TC ingress program on pod-facing interfaces (and the external interface, behind XDP):
//! translates packets to Service addresses, reverse-translates replies, rejects for Services
//! without endpoints. Rewrites go through the kernel's store/csum helpers, which keep
//! checksums right for CHECKSUM_PARTIAL skbs (what veth hands us). IPv4 and IPv6 share
//! everything but parsing, the rewrite and the reject (`TcFamily`); each family's path is
//! a BPF function of its own, so the verifier's stack limit applies to each alone.
use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use svc_common::{FRAG_KIND_DNAT, FRAG_KIND_REV_NAT, Ip6, PROTO_UDP, Verdict};

use crate::{
    clock::Clock,
    counters,
    family::Family,
    frag, frag6, icmp, icmp6,
    lb::{self, Action, Endpoint},
    monitor::{self, EventAddr, HOOK_TC},
    parse::{self, ETH_HLEN, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Packet},
    parse6::{self, IP6_DADDR_OFF, IP6_SADDR_OFF, IPV6_HLEN},
    reject, reject6, sctp,
};

/// Longest header stack we read: Ethernet, IPv4 with options, TCP without options.
const MAX_HEADERS: u32 = (ETH_HLEN + 60 + 20) as u32;
/// IPv6: Ethernet, IPv6, extension headers up to parse6's bound, TCP without options.
const MAX_HEADERS6: u32 = (ETH_HLEN + IPV6_HLEN + 512 + 20) as u32;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    if parse::is_ipv6(ctx.data(), ctx.data_end()) {
        let (mut verdict, mut action) = try_run6(ctx);
        // The reject's frame beside try_run6's, not on top of it (the 512-byte limit of a
        // call chain, as for icmp::translate below).
        if action == REJECT_PENDING {
            (verdict, action) = reject6(ctx);
        } else if verdict == Verdict::PassOtherProto {
            (verdict, action) = icmp6::translate(ctx);
        }
        counters::tc_run(ctx, verdict);
        return action;
    }
    let (mut verdict, mut action) = try_run(ctx);
    // An ICMP error about a translated flow is translated back (icmp.rs). Called from here,
    // not from try_run: the verifier limits the stack of a call chain to 512 bytes, and
    // try_run's frame and icmp's side by side fit where one on top of the other does not.
    if verdict == Verdict::PassOtherProto {
        (verdict, action) = icmp::translate(ctx);
    }
    counters::tc_run(ctx, verdict);
    action
}

#[inline(always)]
pub fn action_for(verdict: Verdict) -> i32 {
    if verdict.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

// A BPF function of its own, so the program's own frame stays small (see `run`).
#[inline(never)]
fn try_run(ctx: &TcContext) -> (Verdict, i32) {
    let mut pkt = match parse_skb(ctx) {
        Ok(pkt) => pkt,
        // A fragment after the first: the first one's translation (frag.rs).
        Err(Verdict::PassFragment) => return frag::tc_later(ctx),
        Err(verdict) => {
            monitor::unparsed(verdict, 4, skb_ifindex(ctx), HOOK_TC);
            return (verdict, action_for(verdict));
        }
    };
    // TC ingress: the interface the packet arrived on (detect-local by interface).
    // SAFETY: reading a field of the skb we were given.
    pkt.ifindex = unsafe { (*(ctx.skb.skb as *const __sk_buff)).ifindex };
    let clock = Clock::new();
    let action = lb::decide(&pkt, &clock);
    apply(ctx, &pkt, action, &clock)
}

/// The interface a packet entered through (TC ingress).
#[inline(always)]
fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the skb we were given.
    unsafe { (*(ctx.skb.skb as *const __sk_buff)).ifindex }
}

/// The IPv6 path: as `try_run`, with IPv6 parsing. ICMPv6 errors are left to `run`
/// (icmp6.rs).
#[inline(never)]
fn try_run6(ctx: &TcContext) -> (Verdict, i32) {
    let mut pkt = match parse6_skb(ctx) {
        Ok(pkt) => pkt,
        // A fragment after the first: the first one's translation (frag6.rs).
        Err(Verdict::PassFragment) => return frag6::tc_later(ctx),
        Err(verdict) => {
            monitor::unparsed(verdict, 6, skb_ifindex(ctx), HOOK_TC);
            return (verdict, action_for(verdict));
        }
    };
    // SAFETY: reading a field of the skb we were given.
    pkt.ifindex = unsafe { (*(ctx.skb.skb as *const __sk_buff)).ifindex };
    let clock = Clock::new();
    let action = lb::decide(&pkt, &clock);
    apply(ctx, &pkt, action, &clock)
}

/// What TC does differently per family: where the addresses are, how an address and a
/// port are rewritten (`rewrite`, `rewrite6`), and the reject.
trait TcFamily: Family + EventAddr {
    const SADDR_OFF: usize;
    const DADDR_OFF: usize;
    #[allow(clippy::too_many_arguments)]
    fn rewrite_at(
        ctx: &TcContext,
        pkt: &Packet<Self>,
        addr_off: usize,
        old_addr: Self,
        new_addr: Self,
        port_off: usize,
        old_port: u16,
        new_port: u16,
    ) -> Result<(), i64>;
    fn reject(ctx: &TcContext, pkt: &Packet<Self>) -> (Verdict, i32);
}

/// Rewrites the destination (`dst`) or the source address and port of `pkt` to `to`.
#[inline(always)]
fn set<A: TcFamily>(
    ctx: &TcContext,
    pkt: &Packet<A>,
    dst: bool,
    to: Endpoint<A>,
) -> Result<(), i64> {
    if dst {
        A::rewrite_at(
            ctx,
            pkt,
            A::DADDR_OFF,
            pkt.daddr,
            to.addr,
            pkt.l4_off + 2,
            pkt.dport,
            to.port,
        )
    } else {
        A::rewrite_at(
            ctx,
            pkt,
            A::SADDR_OFF,
            pkt.saddr,
            to.addr,
            pkt.l4_off,
            pkt.sport,
            to.port,
        )
    }
}

impl TcFamily for u32 {
    const SADDR_OFF: usize = IP_SADDR_OFF;
    const DADDR_OFF: usize = IP_DADDR_OFF;
    #[inline(always)]
    fn rewrite_at(
        ctx: &TcContext,
        pkt: &Packet,
        addr_off: usize,
        old_addr: u32,
        new_addr: u32,
        port_off: usize,
        old_port: u16,
        new_port: u16,
    ) -> Result<(), i64> {
        rewrite(
            ctx, pkt, addr_off, old_addr, new_addr, port_off, old_port, new_port,
        )
    }
    #[inline(always)]
    fn reject(ctx: &TcContext, pkt: &Packet) -> (Verdict, i32) {
        reject::reject(ctx, pkt)
    }
}

/// The action `try_run6` returns for a packet to reject, which `run` then rejects: not a
/// TC action (those are small and non-negative).
const REJECT_PENDING: i32 = i32::MIN;

/// Rejects the IPv6 packet `try_run6` decided to reject (parsed again: a few bounds checks,
/// where passing the parsed packet along would put it on try_run6's stack).
#[inline(never)]
fn reject6(ctx: &TcContext) -> (Verdict, i32) {
    match parse6_skb(ctx) {
        Ok(pkt) => reject6::reject(ctx, &pkt),
        Err(verdict) => (verdict, TC_ACT_SHOT),
    }
}

impl TcFamily for Ip6 {
    const SADDR_OFF: usize = IP6_SADDR_OFF;
    const DADDR_OFF: usize = IP6_DADDR_OFF;
    #[inline(always)]
    fn rewrite_at(
        ctx: &TcContext,
        pkt: &Packet<Ip6>,
        addr_off: usize,
        old_addr: Ip6,
        new_addr: Ip6,
        port_off: usize,
        old_port: u16,
        new_port: u16,
    ) -> Result<(), i64> {
        rewrite6(
            ctx, pkt, addr_off, old_addr, new_addr, port_off, old_port, new_port,
        )
    }
    #[inline(always)]
    fn reject(_: &TcContext, _: &Packet<Ip6>) -> (Verdict, i32) {
        (Verdict::RejectTcpRst, REJECT_PENDING)
    }
}

/// Applies what lb.rs decided to the packet, and records for a first fragment what the
/// rest of its datagram gets (frag.rs), in each arm where the action's fields are known.
/// Counts the packet for its Service (counters.rs), by the verdict it ends with.
#[inline(always)]
fn apply<A: TcFamily>(
    ctx: &TcContext,
    pkt: &Packet<A>,
    action: Action<A>,
    clock: &Clock,
) -> (Verdict, i32) {
    // The frame as it arrived (a reject rewrites it into the answer).
    let len = ctx.len() as u64;
    let (result, rev_nat_id) = match action {
        Action::Forward {
            dst,
            src,
            verdict,
            rev_nat_id,
        } => {
            let saddr = if src.is_set() { src.addr } else { pkt.saddr };
            A::frag_translated(pkt, FRAG_KIND_DNAT, saddr, dst.addr, clock);
            let result = set(ctx, pkt, true, dst)
                .and_then(|()| {
                    if src.is_set() {
                        set(ctx, pkt, false, src)
                    } else {
                        Ok(())
                    }
                })
                .map(|()| verdict)
                .map_err(|_| Verdict::DropRewriteFailed);
            (result, rev_nat_id)
        }
        Action::Reply {
            src,
            dst,
            rev_nat_id,
        } => {
            let daddr = if dst.is_set() { dst.addr } else { pkt.daddr };
            A::frag_translated(pkt, FRAG_KIND_REV_NAT, src.addr, daddr, clock);
            let result = set(ctx, pkt, false, src)
                .and_then(|()| {
                    if dst.is_set() {
                        set(ctx, pkt, true, dst)
                    } else {
                        Ok(())
                    }
                })
                .map(|()| Verdict::RevNat)
                .map_err(|_| Verdict::DropRewriteFailed);
            (result, rev_nat_id)
        }
        Action::Reject { rev_nat_id } => {
            A::frag_dropped(pkt, clock);
            monitor::packet(ctx, pkt, monitor::reject_verdict(pkt.proto), HOOK_TC);
            let (verdict, action) = A::reject(ctx, pkt);
            counters::service(rev_nat_id, verdict, len);
            return (verdict, action);
        }
        // A drop of a Service's packet: counted for the Service and reported below, as
        // every outcome but the reject.
        Action::Drop {
            verdict,
            rev_nat_id,
        } => {
            A::frag_done(pkt, verdict, clock);
            (Err(verdict), rev_nat_id)
        }
        Action::Done(verdict) => {
            A::frag_done(pkt, verdict, clock);
            (Err(verdict), 0)
        }
    };
    let (verdict, tc_action) = match result {
        Ok(verdict) => (verdict, TC_ACT_OK),
        // Nothing to translate (Done), or a rewrite helper failed.
        Err(verdict) if verdict != Verdict::DropRewriteFailed => (verdict, action_for(verdict)),
        Err(_) => (Verdict::DropRewriteFailed, TC_ACT_SHOT),
    };
    counters::service(rev_nat_id, verdict, len);
    // svcctl monitor (monitor.rs): the packet as it arrived (pkt) and as it leaves (ctx).
    // One call for every outcome but the reject (reported before the answer replaces the
    // packet): each call site costs the verifier a walk of the report per path.
    monitor::packet(ctx, pkt, verdict, HOOK_TC);
    (verdict, tc_action)
}

/// Parses the headers in the skb's linear area; if they are not all there (a non-linear
/// skb), pulls them in once and parses again.
#[inline(always)]
fn parse_skb(ctx: &TcContext) -> Result<Packet, Verdict> {
    // skb->len counts the whole frame from the Ethernet header (TC ingress runs with the
    // MAC header pushed), linear part or not.
    let frame_len = ctx.len() as usize;
    match parse::parse(ctx.data(), ctx.data_end(), frame_len) {
        Err(Verdict::DropMalformed) if (ctx.len() as usize) > ctx.data_end() - ctx.data() => {
            let want = if ctx.len() < MAX_HEADERS {
                ctx.len()
            } else {
                MAX_HEADERS
            };
            ctx.pull_data(want).map_err(|_| Verdict::DropMalformed)?;
            parse::parse(ctx.data(), ctx.data_end(), frame_len)
        }
        result => result,
    }
}

/// `parse_skb` for IPv6.
#[inline(always)]
fn parse6_skb(ctx: &TcContext) -> Result<Packet<Ip6>, Verdict> {
    let frame_len = ctx.len() as usize;
    match parse6::parse6(ctx.data(), ctx.data_end(), frame_len) {
        Err(Verdict::DropMalformed) if (ctx.len() as usize) > ctx.data_end() - ctx.data() => {
            let want = if ctx.len() < MAX_HEADERS6 {
                ctx.len()
            } else {
                MAX_HEADERS6
            };
            ctx.pull_data(want).map_err(|_| Verdict::DropMalformed)?;
            parse6::parse6(ctx.data(), ctx.data_end(), frame_len)
        }
        result => result,
    }
}

/// Replaces one address and one port (destination for DNAT, source for reverse NAT) and
/// fixes the IPv4 and L4 checksums. The address is part of the L4 pseudo-header, hence
/// BPF_F_PSEUDO_HDR; BPF_F_MARK_MANGLED_0 keeps a zero (absent) UDP checksum zero. SCTP:
/// the address only; its CRC32c covers no IP header, and a port change is refused
/// (sctp.rs).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite(
    ctx: &TcContext,
    pkt: &Packet,
    addr_off: usize,
    old_addr: u32,
    new_addr: u32,
    port_off: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    if sctp::ports_fixed(pkt.proto) {
        if old_port != new_port {
            return Err(-1);
        }
        if old_addr != new_addr {
            ctx.l3_csum_replace(IP_CSUM_OFF, old_addr as u64, new_addr as u64, 4)?;
            ctx.store(addr_off, &new_addr, 0)?;
        }
        return Ok(());
    }
    let l4_csum = pkt.l4_csum_off();
    let mangled = if pkt.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    if old_addr != new_addr {
        ctx.l4_csum_replace(
            l4_csum,
            old_addr as u64,
            new_addr as u64,
            BPF_F_PSEUDO_HDR as u64 | mangled | 4,
        )?;
        ctx.l3_csum_replace(IP_CSUM_OFF, old_addr as u64, new_addr as u64, 4)?;
        ctx.store(addr_off, &new_addr, 0)?;
    }
    if old_port != new_port {
        ctx.l4_csum_replace(l4_csum, old_port as u64, new_port as u64, mangled | 2)?;
        ctx.store(port_off, &new_port, 0)?;
    }
    Ok(())
}

/// `rewrite` for IPv6: no IP header checksum; the address change is folded into the L4
/// checksum (its pseudo-header holds both addresses) one 32-bit word at a time, skipping
/// the words that stay (an address in the same /64 changes one or two). SCTP as on IPv4.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite6(
    ctx: &TcContext,
    pkt: &Packet<Ip6>,
    addr_off: usize,
    old_addr: Ip6,
    new_addr: Ip6,
    port_off: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    if sctp::ports_fixed(pkt.proto) {
        if old_port != new_port {
            return Err(-1);
        }
        if !old_addr.same(&new_addr) {
            ctx.store(addr_off, &new_addr, 0)?;
        }
        return Ok(());
    }
    let l4_csum = pkt.l4_csum_off();
    let mangled = if pkt.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    if !old_addr.same(&new_addr) {
        let mut i = 0;
        while i < 4 {
            if old_addr[i] != new_addr[i] {
                ctx.l4_csum_replace(
                    l4_csum,
                    old_addr[i] as u64,
                    new_addr[i] as u64,
                    BPF_F_PSEUDO_HDR as u64 | mangled | 4,
                )?;
            }
            i += 1;
        }
        ctx.store(addr_off, &new_addr, 0)?;
    }
    if old_port != new_port {
        ctx.l4_csum_replace(l4_csum, old_port as u64, new_port as u64, mangled | 2)?;
        ctx.store(port_off, &new_port, 0)?;
    }
    Ok(())
}
