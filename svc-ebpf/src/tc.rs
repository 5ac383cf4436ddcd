//! TC ingress program on pod-facing interfaces (and the external interface, behind XDP):
//! translates packets to Service addresses, reverse-translates replies, rejects for Services
//! without endpoints. Rewrites go through the kernel's store/csum helpers, which keep
//! checksums right for CHECKSUM_PARTIAL skbs (what veth hands us).
use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use svc_common::{FRAG_KIND_DNAT, FRAG_KIND_REV_NAT, PROTO_UDP, Verdict};

use crate::{
    clock::Clock,
    frag, icmp,
    lb::{self, Action, Endpoint},
    maps::count,
    parse::{self, ETH_HLEN, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Packet},
    reject, sctp,
};

/// Longest header stack we read: Ethernet, IPv4 with options, TCP without options.
const MAX_HEADERS: u32 = (ETH_HLEN + 60 + 20) as u32;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let (mut verdict, mut action) = try_run(ctx);
    // An ICMP error about a translated flow is translated back (icmp.rs). Called from here,
    // not from try_run: the verifier limits the stack of a call chain to 512 bytes, and
    // try_run's frame and icmp's side by side fit where one on top of the other does not.
    if verdict == Verdict::PassOtherProto {
        (verdict, action) = icmp::translate(ctx);
    }
    count(verdict);
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
        Err(verdict) => return (verdict, action_for(verdict)),
    };
    // TC ingress: the interface the packet arrived on (detect-local by interface).
    // SAFETY: reading a field of the skb we were given.
    pkt.ifindex = unsafe { (*(ctx.skb.skb as *const __sk_buff)).ifindex };
    let clock = Clock::new();
    let action = lb::decide(&pkt, &clock);
    apply(ctx, &pkt, action, &clock)
}

/// Applies what lb.rs decided to the packet, and records for a first fragment what the
/// rest of its datagram gets (frag.rs), in each arm where the action's fields are known.
#[inline(always)]
fn apply(ctx: &TcContext, pkt: &Packet, action: Action, clock: &Clock) -> (Verdict, i32) {
    let pkt = *pkt;
    let result = match action {
        Action::Forward { dst, src, verdict } => {
            let saddr = if src.is_set() { src.addr } else { pkt.saddr };
            frag::record(
                &frag::translated(&pkt, FRAG_KIND_DNAT, saddr, dst.addr),
                clock,
            );
            set_dst(ctx, &pkt, dst)
                .and_then(|()| {
                    if src.is_set() {
                        set_src(ctx, &pkt, src)
                    } else {
                        Ok(())
                    }
                })
                .map(|()| verdict)
        }
        Action::Reply { src, dst } => {
            let daddr = if dst.is_set() { dst.addr } else { pkt.daddr };
            frag::record(
                &frag::translated(&pkt, FRAG_KIND_REV_NAT, src.addr, daddr),
                clock,
            );
            set_src(ctx, &pkt, src)
                .and_then(|()| {
                    if dst.is_set() {
                        set_dst(ctx, &pkt, dst)
                    } else {
                        Ok(())
                    }
                })
                .map(|()| Verdict::RevNat)
        }
        Action::Reject => {
            frag::record(&frag::dropped(&pkt), clock);
            return reject::reject(ctx, &pkt);
        }
        Action::Done(verdict) => {
            frag::record(&frag::done(&pkt, verdict), clock);
            return (verdict, action_for(verdict));
        }
    };
    match result {
        Ok(verdict) => (verdict, TC_ACT_OK),
        Err(_) => (Verdict::DropRewriteFailed, TC_ACT_SHOT),
    }
}

#[inline(always)]
fn set_dst(ctx: &TcContext, pkt: &Packet, to: Endpoint) -> Result<(), i64> {
    rewrite(
        ctx,
        pkt,
        IP_DADDR_OFF,
        pkt.daddr,
        to.addr,
        pkt.l4_off + 2,
        pkt.dport,
        to.port,
    )
}

#[inline(always)]
fn set_src(ctx: &TcContext, pkt: &Packet, to: Endpoint) -> Result<(), i64> {
    rewrite(
        ctx,
        pkt,
        IP_SADDR_OFF,
        pkt.saddr,
        to.addr,
        pkt.l4_off,
        pkt.sport,
        to.port,
    )
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
