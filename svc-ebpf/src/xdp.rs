//! XDP program on the node's external interface: translates traffic arriving from outside
//! to Service addresses before the stack sees it. It rewrites in place with incremental
//! checksums (XDP has no csum helpers), so it relies on complete checksums from the wire.
//! What it does not handle itself (rejects, IPv4 options, ICMP errors) it passes to the TC
//! program on the same interface. IPv4 fragments it handles as TC does (frag.rs). IPv6
//! takes the same path with its own parser and rewrite (`XdpFamily`), in a BPF function
//! of its own.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use svc_common::{FRAG_KIND_DNAT, FRAG_KIND_REV_NAT, Ip6, PROTO_TCP, Verdict};

use crate::{
    clock::Clock,
    counters, csum,
    family::Family,
    frag, frag6, icmp, icmp6,
    lb::{self, Action, Endpoint},
    monitor::{self, EventAddr, HOOK_XDP},
    parse::{self, ETH_HLEN, Ipv4Hdr, Packet, TcpHdr, UdpHdr, ptr_at},
    parse6::{self, Ipv6Hdr},
    sctp,
};

const L4_OFF: usize = ETH_HLEN + 20;

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let (verdict, action) = if parse::is_ipv6(ctx.data(), ctx.data_end()) {
        match try_run6(ctx) {
            // A fragment after the first: the first one's translation, in a frame beside
            // try_run6's (frag6.rs).
            (Verdict::PassFragment, _) => frag6::xdp_later(ctx),
            other => other,
        }
    } else {
        try_run(ctx)
    };
    // Dropped or translated packets only, the translated ones marked for TC (counters.rs).
    counters::xdp_run(ctx, verdict, action);
    action
}

/// The IPv6 path: parse6.rs, then the decision and rewrite every family shares.
#[inline(never)]
fn try_run6(ctx: &XdpContext) -> (Verdict, u32) {
    let mut pkt = match parse6::parse6(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data()) {
        Ok(pkt) => pkt,
        // ICMPv6 errors are translated by TC (icmp6.rs).
        Err(Verdict::PassOtherProto) if icmp6::is_error(ctx.data(), ctx.data_end()) => {
            return (Verdict::XdpPassToTc, XDP_PASS);
        }
        Err(verdict) => {
            // SAFETY: reading a field of the context we were given.
            monitor::unparsed(verdict, 6, unsafe { (*ctx.ctx).ingress_ifindex }, HOOK_XDP);
            return (verdict, action_for(verdict));
        }
    };
    // SAFETY: reading a field of the context we were given.
    pkt.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    translate(ctx, &pkt)
}

#[inline(always)]
fn action_for(verdict: Verdict) -> u32 {
    if verdict.is_drop() {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

// A BPF function of its own, beside try_run6: each family's frame alone under the limit.
#[inline(never)]
fn try_run(ctx: &XdpContext) -> (Verdict, u32) {
    // A program without the xdp.frags flag only ever sees single-buffer frames: the
    // frame is [data, data_end).
    let mut pkt = match parse::parse(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data()) {
        Ok(pkt) => pkt,
        // A fragment after the first: the first one's translation (frag.rs).
        Err(Verdict::PassFragment) => return frag::xdp_later(ctx),
        // ICMP errors are translated by TC (icmp.rs).
        Err(Verdict::PassOtherProto) if icmp::is_error(ctx.data(), ctx.data_end()) => {
            return (Verdict::XdpPassToTc, XDP_PASS);
        }
        Err(verdict) => {
            // SAFETY: reading a field of the context we were given.
            monitor::unparsed(verdict, 4, unsafe { (*ctx.ctx).ingress_ifindex }, HOOK_XDP);
            return (verdict, action_for(verdict));
        }
    };
    // SAFETY: reading a field of the context we were given.
    pkt.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if pkt.has_ip_options {
        return (Verdict::XdpPassToTc, XDP_PASS);
    }
    translate(ctx, &pkt)
}

/// Decides and applies the translation of a parsed packet of either family, and counts it
/// for its Service (counters.rs) when XDP decides its fate (not for a reject, which TC
/// answers and counts).
#[inline(always)]
fn translate<A: XdpFamily>(ctx: &XdpContext, pkt: &Packet<A>) -> (Verdict, u32) {
    let clock = Clock::new();
    let action = lb::decide(pkt, &clock);
    // For a first fragment, what the rest of its datagram gets (frag.rs), recorded in
    // each arm where the action's fields are known.
    let (verdict, rev_nat_id) = match action {
        Action::Forward {
            dst,
            src,
            verdict,
            rev_nat_id,
        } => {
            let saddr = if src.is_set() { src.addr } else { pkt.saddr };
            A::frag_translated(pkt, FRAG_KIND_DNAT, saddr, dst.addr, &clock);
            let done = A::rewrite(ctx, pkt, true, dst)
                .and_then(|()| {
                    if src.is_set() {
                        A::rewrite(ctx, pkt, false, src)
                    } else {
                        Some(())
                    }
                })
                .map_or(Verdict::DropRewriteFailed, |()| verdict);
            (done, rev_nat_id)
        }
        Action::Reply {
            src,
            dst,
            rev_nat_id,
        } => {
            let daddr = if dst.is_set() { dst.addr } else { pkt.daddr };
            A::frag_translated(pkt, FRAG_KIND_REV_NAT, src.addr, daddr, &clock);
            let done = A::rewrite(ctx, pkt, false, src)
                .and_then(|()| {
                    if dst.is_set() {
                        A::rewrite(ctx, pkt, true, dst)
                    } else {
                        Some(())
                    }
                })
                .map_or(Verdict::DropRewriteFailed, |()| Verdict::RevNat);
            (done, rev_nat_id)
        }
        // TC rejects it (and counts and reports it); the rest of the datagram is dropped
        // (here as in TC).
        Action::Reject { .. } => {
            A::frag_dropped(pkt, &clock);
            return (Verdict::XdpPassToTc, XDP_PASS);
        }
        Action::Drop {
            verdict,
            rev_nat_id,
        } => {
            A::frag_done(pkt, verdict, &clock);
            (verdict, rev_nat_id)
        }
        Action::Done(verdict) => {
            A::frag_done(pkt, verdict, &clock);
            monitor::packet(ctx, pkt, verdict, HOOK_XDP);
            return (verdict, action_for(verdict));
        }
    };
    // The frame's length, read here rather than kept from the start: XDP rewrites in place
    // (the length does not change), and a value live across the decision costs the IPv6
    // path's frame the stack it has no room for (512 bytes per call chain).
    counters::service(rev_nat_id, verdict, (ctx.data_end() - ctx.data()) as u64);
    // svcctl monitor (monitor.rs): the packet as it arrived (pkt) and as it leaves (ctx).
    monitor::packet(ctx, pkt, verdict, HOOK_XDP);
    (verdict, action_for(verdict))
}

/// What XDP does differently per family: the rewrite.
trait XdpFamily: Family + EventAddr {
    fn rewrite(ctx: &XdpContext, pkt: &Packet<Self>, dst: bool, to: Endpoint<Self>) -> Option<()>;
}

impl XdpFamily for u32 {
    #[inline(always)]
    fn rewrite(ctx: &XdpContext, pkt: &Packet, dst: bool, to: Endpoint) -> Option<()> {
        rewrite(ctx, pkt, dst, to)
    }
}

impl XdpFamily for Ip6 {
    #[inline(always)]
    fn rewrite(ctx: &XdpContext, pkt: &Packet<Ip6>, dst: bool, to: Endpoint<Ip6>) -> Option<()> {
        rewrite6(ctx, pkt, dst, to)
    }
}

/// Rewrites the destination (`dst`) or source address and port of an option-less IPv4
/// packet (called once per side; each call reads the checksums the previous one left) and updates the IPv4 and L4 checksums incrementally. A zero UDP checksum means
/// "none" and stays zero; a computed zero is sent as 0xffff (RFC 768).
#[inline(always)]
fn rewrite(ctx: &XdpContext, pkt: &Packet, dst: bool, to: Endpoint) -> Option<()> {
    let (addr, port) = (to.addr, to.port);
    let (start, end) = (ctx.data(), ctx.data_end());
    let ip: *mut Ipv4Hdr = ptr_at(start, end, ETH_HLEN)?;
    let (old_addr, old_port) = if dst {
        (pkt.daddr, pkt.dport)
    } else {
        (pkt.saddr, pkt.sport)
    };
    // Unchanged fields are not fed to the checksum update: replacing a value by itself
    // can turn a checksum field of 0xffff into 0x0000 (the two one's complement zeros),
    // which is valid but not the frame that came in. A port-only SNAT keeps the address.
    let addr_changes = old_addr != addr;
    let port_changes = old_port != port;
    // SCTP: the address only; its CRC32c covers no IP header, and a port change is refused
    // (sctp.rs).
    let fixed = sctp::ports_fixed(pkt.proto);
    if fixed && port_changes {
        return None;
    }
    // SAFETY: every pointer below was bounds-checked by ptr_at.
    unsafe {
        if addr_changes {
            (*ip).csum = csum::replace4((*ip).csum, old_addr, addr);
        }
        if dst {
            (*ip).daddr_be = addr
        } else {
            (*ip).saddr_be = addr
        }
        if fixed {
            // Nothing in the SCTP header changes.
        } else if pkt.proto == PROTO_TCP {
            let tcp: *mut TcpHdr = ptr_at(start, end, L4_OFF)?;
            if addr_changes {
                (*tcp).csum = csum::replace4((*tcp).csum, old_addr, addr);
            }
            if port_changes {
                (*tcp).csum = csum::replace2((*tcp).csum, old_port, port);
            }
            if dst {
                (*tcp).dport_be = port
            } else {
                (*tcp).sport_be = port
            }
        } else {
            let udp: *mut UdpHdr = ptr_at(start, end, L4_OFF)?;
            if (*udp).csum != 0 && (addr_changes || port_changes) {
                let mut c = (*udp).csum;
                if addr_changes {
                    c = csum::replace4(c, old_addr, addr);
                }
                if port_changes {
                    c = csum::replace2(c, old_port, port);
                }
                (*udp).csum = if c == 0 { 0xffff } else { c };
            }
            if dst {
                (*udp).dport_be = port
            } else {
                (*udp).sport_be = port
            }
        }
    }
    Some(())
}

/// `rewrite` for IPv6: no IP header checksum; the L4 checksum takes the address change
/// (its pseudo-header holds both addresses) word by word, skipping the words that stay,
/// and the port change. The L4 header is at `pkt.l4_off` (after any extension headers).
/// A UDP checksum of zero is invalid on IPv6 (the stack drops it), so it is never made:
/// a computed zero is sent as 0xffff, and a zero that came in is updated like any other.
#[inline(always)]
fn rewrite6(ctx: &XdpContext, pkt: &Packet<Ip6>, dst: bool, to: Endpoint<Ip6>) -> Option<()> {
    let (addr, port) = (to.addr, to.port);
    let (start, end) = (ctx.data(), ctx.data_end());
    let ip: *mut Ipv6Hdr = ptr_at(start, end, ETH_HLEN)?;
    let (old_addr, old_port) = if dst {
        (pkt.daddr, pkt.dport)
    } else {
        (pkt.saddr, pkt.sport)
    };
    let port_changes = old_port != port;
    let fixed = sctp::ports_fixed(pkt.proto);
    if fixed && port_changes {
        return None;
    }
    // SAFETY: every pointer below was bounds-checked by ptr_at.
    unsafe {
        if dst {
            (*ip).daddr = addr
        } else {
            (*ip).saddr = addr
        }
        if fixed {
            return Some(());
        }
        let csum_off = pkt.l4_csum_off();
        let port_off = if dst { pkt.l4_off + 2 } else { pkt.l4_off };
        let c: *mut u16 = ptr_at(start, end, csum_off)?;
        let p: *mut u16 = ptr_at(start, end, port_off)?;
        let mut sum = *c;
        let mut i = 0;
        while i < 4 {
            if old_addr[i] != addr[i] {
                sum = csum::replace4(sum, old_addr[i], addr[i]);
            }
            i += 1;
        }
        if port_changes {
            sum = csum::replace2(sum, old_port, port);
        }
        if pkt.proto != PROTO_TCP && sum == 0 {
            sum = 0xffff;
        }
        *c = sum;
        *p = port;
    }
    Some(())
}
