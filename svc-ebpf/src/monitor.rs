//! svcctl monitor's events: one [`MonitorEvent`] per reported packet into the SVC_EVENTS ring
//! buffer, while svcctl monitor has SVC_MONITOR on.
//!
//! Cost: every packet the programs decide pays one array lookup (SVC_MONITOR, which the
//! verifier inlines) and one load; while nobody monitors (`until_ns` 0) that is all. While
//! a monitor runs, a packet whose verdict is reported reads the clock, maybe a random
//! number (sampling), and writes the event straight into the ring (reserve and submit: the
//! event never sits on the stack, whose 512 bytes the packet paths share). The Service and
//! backend are looked up by svcctl, not here (svc-common's `MonitorEvent` says why).
//!
//! Each packet is reported at most once: by the program that decided it, once it is
//! rewritten (`tc::apply`, `xdp::translate`): the tuple as it arrived is the parsed one, the
//! tuple as it leaves is read back from the packet. Pass verdicts are never reported
//! (`Verdict::is_monitored`), so a packet XDP passes on untouched or hands to TC (a reject)
//! is reported by TC alone, and a packet XDP translated, which TC then sees as a packet to
//! no Service, by XDP alone.
//!
//! Not reported yet: fragments after the first (frag.rs, frag6.rs), ICMP errors translated
//! back (icmp.rs, icmp6.rs) and the socket programs (sock.rs).
use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use svc_common::{Ip6, MonitorEvent, PROTO_TCP, Verdict};

use crate::{
    clock,
    family::Family,
    maps::{SVC_EVENTS, SVC_MONITOR},
    parse::{IP_DADDR_OFF, IP_SADDR_OFF, Packet},
    parse6::{IP6_DADDR_OFF, IP6_SADDR_OFF},
};

pub use svc_common::{MONITOR_HOOK_TC as HOOK_TC, MONITOR_HOOK_XDP as HOOK_XDP};

/// An address as an event holds it (16 bytes; IPv4 in the first 4), and where the packet
/// carries the source and destination.
pub trait EventAddr: Family {
    const FAMILY: u8;
    const SRC_OFF: usize;
    const DST_OFF: usize;
    /// 32-bit words in an address.
    const WORDS: usize;
    fn to_event(&self) -> Ip6;
}

impl EventAddr for u32 {
    const FAMILY: u8 = 4;
    const SRC_OFF: usize = IP_SADDR_OFF;
    const DST_OFF: usize = IP_DADDR_OFF;
    const WORDS: usize = 1;
    #[inline(always)]
    fn to_event(&self) -> Ip6 {
        [*self, 0, 0, 0]
    }
}

impl EventAddr for Ip6 {
    const FAMILY: u8 = 6;
    const SRC_OFF: usize = IP6_SADDR_OFF;
    const DST_OFF: usize = IP6_DADDR_OFF;
    const WORDS: usize = 4;
    #[inline(always)]
    fn to_event(&self) -> Ip6 {
        *self
    }
}

/// The packet as it is now, whichever program runs.
pub trait PacketData {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// Copies 4 bytes at `off` to `to` through the program's load helper (0 on success):
    /// for an offset that varies per packet (the L4 header's), where pointer arithmetic
    /// would make the verifier tell apart every path by that offset.
    fn load4(&self, off: usize, to: *mut u8) -> i64;
}

impl PacketData for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn load4(&self, off: usize, to: *mut u8) -> i64 {
        // SAFETY: the helper writes 4 bytes to `to`, which has room for them.
        unsafe { bpf_skb_load_bytes(self.skb.skb as *const _, off as u32, to.cast(), 4) }
    }
}

impl PacketData for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn load4(&self, off: usize, to: *mut u8) -> i64 {
        // SAFETY: as for TC.
        unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, to.cast(), 4) }
    }
}

/// Whether a packet with `verdict` is reported now: SVC_MONITOR on and not expired, the
/// verdict asked for, and (translations) this packet sampled. The lookup and one load are
/// all a packet pays while nobody monitors; the clock is read only while a monitor is on
/// (or was killed without turning it off: then until the next svcctl monitor).
#[inline(always)]
fn wanted(verdict: Verdict) -> bool {
    // A pass is never reported: no lookup (a verdict known where the program calls here
    // takes this branch at compile time).
    if !verdict.is_monitored() {
        return false;
    }
    let Some(control) = SVC_MONITOR.get(0) else {
        return false;
    };
    let until = control.until_ns;
    if until == 0 {
        return false;
    }
    // Verdicts are below 32 (STATS_MAP_SIZE): one bit each.
    if (control.verdict_mask.wrapping_shr(verdict as u32)) & 1 == 0 {
        return false;
    }
    // Sampled out before the clock is read: a packet not reported pays a random number,
    // not a clock read too.
    let sample = control.sample;
    // SAFETY: helper call without arguments.
    if sample > 1 && !verdict.is_drop_or_reject() && unsafe { bpf_get_prandom_u32() } % sample != 0
    {
        return false;
    }
    clock::now() <= until
}

/// Reports a parsed packet decided as `verdict`, once the program has rewritten it (or
/// not): `pkt` holds the packet as it arrived, `ctx` the packet as it leaves.
#[inline(always)]
pub fn packet<A: EventAddr, C: PacketData>(ctx: &C, pkt: &Packet<A>, verdict: Verdict, hook: u8) {
    if wanted(verdict) {
        emit(ctx, pkt, verdict as u32 | u32::from(hook) << 8);
    }
}

/// The verdict a packet `lb::decide` said to reject gets (reported before the answer is
/// built: an answer that cannot be built is counted as its drop, but reported as the
/// reject that was decided).
#[inline(always)]
pub fn reject_verdict(proto: u8) -> Verdict {
    if proto == PROTO_TCP {
        Verdict::RejectTcpRst
    } else {
        Verdict::RejectIcmp
    }
}

/// Reports a packet dropped before it was parsed (`DropMalformed`): no tuple.
#[inline(always)]
pub fn unparsed(verdict: Verdict, family: u8, ifindex: u32, hook: u8) {
    if !wanted(verdict) {
        return;
    }
    let Some(mut entry) = SVC_EVENTS.reserve::<MonitorEvent>(0) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring buffer record of MonitorEvent's size; every
    // field is written (plain stores: the event is never built on the stack).
    unsafe {
        (*ev).time_ns = clock::now();
        (*ev).verdict = verdict as u32;
        (*ev).ifindex = ifindex;
        (*ev).family = family;
        (*ev).protocol = 0;
        (*ev).hook = hook;
        (*ev)._pad = 0;
        (*ev).sport_be = 0;
        (*ev).dport_be = 0;
        (*ev).nat_sport_be = 0;
        (*ev).nat_dport_be = 0;
        (*ev)._pad2 = 0;
        (*ev).saddr = [0; 4];
        (*ev).daddr = [0; 4];
        (*ev).nat_saddr = [0; 4];
        (*ev).nat_daddr = [0; 4];
    }
    entry.submit(0);
}

/// Offsets of the translated addresses in a [`MonitorEvent`].
const NAT_SADDR_OFF: usize = core::mem::offset_of!(MonitorEvent, nat_saddr);
const NAT_DADDR_OFF: usize = core::mem::offset_of!(MonitorEvent, nat_daddr);
const NAT_PORTS_OFF: usize = core::mem::offset_of!(MonitorEvent, nat_sport_be);
const _: () = assert!(
    core::mem::offset_of!(MonitorEvent, nat_dport_be) == NAT_PORTS_OFF + 2,
    "load4 fills both ports"
);

/// Writes the event. A BPF function of its own, called only for a reported packet, with no
/// frame: the IPv6 paths use up to 480 of the 512 bytes a call chain may have, and the
/// verifier rounds each frame up to 16, so this one must stay empty. So it keeps nothing
/// of its caller's alive (the translated tuple is read back from the packet, not carried
/// here from the decision), takes three arguments (the verdict and the hook packed in
/// `what`: verdict | hook << 8), which with the record fit the four registers a helper
/// call keeps, reads the clock last (when only the record is live), looks nothing up
/// (svcctl finds the Service and backend from the tuples: svc-common, `MonitorEvent`) and
/// writes every field straight into the ring.
#[inline(never)]
fn emit<A: EventAddr, C: PacketData>(ctx: &C, pkt: &Packet<A>, what: u32) {
    let Some(mut entry) = SVC_EVENTS.reserve::<MonitorEvent>(0) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: as in `unparsed`; the packet bytes read are bounds-checked.
    unsafe {
        (*ev).verdict = what & 0xff;
        (*ev).hook = (what >> 8) as u8;
        (*ev).ifindex = pkt.ifindex;
        (*ev).family = A::FAMILY;
        (*ev).protocol = pkt.proto;
        (*ev)._pad = 0;
        (*ev).sport_be = pkt.sport;
        (*ev).dport_be = pkt.dport;
        (*ev)._pad2 = 0;
        (*ev).saddr = pkt.saddr.to_event();
        (*ev).daddr = pkt.daddr.to_event();
        // As it leaves: read back from the packet (rewritten in place by XDP, through
        // the store helpers by TC, which leave the same bytes), 16 bits at a time: the
        // addresses and ports sit at even offsets of the frame (after the 14-byte
        // Ethernet header), so the loads are aligned (wider unaligned ones become byte
        // loads and shifts, whose registers would spill onto a stack this function must
        // not have). One bounds check for both addresses, one for the ports: each branch
        // here is walked by the verifier at every path that reports.
        let (start, end) = (ctx.start(), ctx.end());
        let (from, to) = (start + A::SRC_OFF, ev as usize + NAT_SADDR_OFF);
        // The destination follows the source: its end bounds both.
        if start + A::DST_OFF + A::WORDS * 4 > end {
            (*ev).nat_saddr = (*ev).saddr;
            (*ev).nat_daddr = (*ev).daddr;
        } else {
            let (from, to) = (from as *const u16, to as *mut u16);
            let dst_from = (start + A::DST_OFF) as *const u16;
            let dst_to = (ev as usize + NAT_DADDR_OFF) as *mut u16;
            let mut i = 0;
            while i < 8 {
                if i < 2 * A::WORDS {
                    *to.add(i) = *from.add(i);
                    *dst_to.add(i) = *dst_from.add(i);
                } else {
                    *to.add(i) = 0;
                    *dst_to.add(i) = 0;
                }
                i += 1;
            }
        }
        // The ports, adjacent in the record as in the header, through the load helper
        // (PacketData::load4 says why).
        // On failure (never: the header was parsed) the ports as they arrived, read back
        // from the record: volatile, so no register holds them across the helper call
        // (one more would spill).
        if ctx.load4(pkt.l4_off, (ev as usize + NAT_PORTS_OFF) as *mut u8) != 0 {
            (*ev).nat_sport_be = core::ptr::read_volatile(&raw const (*ev).sport_be);
            (*ev).nat_dport_be = core::ptr::read_volatile(&raw const (*ev).dport_be);
        }
        (*ev).time_ns = clock::now();
    }
    entry.submit(0);
}
