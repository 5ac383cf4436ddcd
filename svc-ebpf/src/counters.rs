//! Counting packets, not program runs: the verdict counters (SVC_STATS) and the per-Service
//! counters (SVC_SVC_STATS), each packet once. A packet from outside meets XDP and then TC
//! on the same interface; the program that decides what happens to it counts it (the
//! rules are in svc-common, above `Verdict`). XDP marks the translated packets it counted
//! in the XDP metadata area, which the kernel hands to TC with the skb (skb->data_meta);
//! TC skips a marked packet. Cilium hands XDP's facts to TC the same way (its
//! `ctx_move_xfer` / `ctx_get_xfer`).
use aya_ebpf::{
    bindings::{__sk_buff, xdp_action::XDP_DROP},
    helpers::bpf_xdp_adjust_meta,
    programs::{TcContext, XdpContext},
};
use svc_common::{ServiceDrop, Verdict, XDP_COUNTED_MARK};

use crate::maps::{SVC_SVC_STATS, count};

/// Counts the end of an XDP run: the packets XDP dropped or translated, marking a
/// translated one it passes on so that TC does not count it again; nothing for a packet
/// it passes untouched (TC decides it and counts that).
#[inline(always)]
pub fn xdp_run(ctx: &XdpContext, verdict: Verdict, action: u32) {
    if action == XDP_DROP {
        count(verdict);
        return;
    }
    if matches!(
        verdict,
        Verdict::DnatNew
            | Verdict::DnatEstablished
            | Verdict::RevNat
            | Verdict::DnatFragment
            | Verdict::RevNatFragment
    ) {
        // Without the mark (a driver without room for metadata) TC counts the packet
        // again as pass_not_service: better twice than not at all.
        mark(ctx);
        count(verdict);
    }
}

/// Prepends 4 bytes of metadata holding XDP_COUNTED_MARK.
#[inline(always)]
fn mark(ctx: &XdpContext) {
    // SAFETY: the helper checks the adjustment against the frame's headroom; the pointers
    // are read again after it (it moves data_meta), and checked against data.
    unsafe {
        if bpf_xdp_adjust_meta(ctx.ctx, -4) != 0 {
            return;
        }
        let meta = ctx.metadata();
        if meta + 4 > ctx.data() {
            return;
        }
        *(meta as *mut u32) = XDP_COUNTED_MARK;
    }
}

/// Counts the end of a TC run, unless XDP counted the packet already (a packet XDP
/// translated: TC then finds no Service in it). Checked at the end of the run, not kept
/// from its start: a flag live across the whole program doubles what the verifier walks.
/// The metadata stays in front of the packet while TC works on it (TC only rewrites a
/// packet XDP did not translate).
#[inline(always)]
pub fn tc_run(ctx: &TcContext, verdict: Verdict) {
    if !tc_counted_by_xdp(ctx) {
        count(verdict);
    }
}

/// Whether XDP counted this packet already (its metadata holds XDP_COUNTED_MARK). On pod
/// interfaces (no XDP) data_meta equals data: two context loads and a compare.
#[inline(always)]
fn tc_counted_by_xdp(ctx: &TcContext) -> bool {
    // SAFETY: reading fields of the skb we were given; the metadata is read only after the
    // bounds check against data, which the verifier requires.
    unsafe {
        let skb = ctx.skb.skb as *const __sk_buff;
        let meta = (*skb).data_meta as usize;
        let data = (*skb).data as usize;
        meta + 4 <= data && *(meta as *const u32) == XDP_COUNTED_MARK
    }
}

/// Counts a packet of the Service with rev-NAT id `rev_nat_id` (0: none, nothing counted)
/// by what happened to it: translated towards a backend (a new flow or not), a reply
/// translated back, or a new flow dropped or rejected. `len`: the frame's bytes. One hash
/// lookup; an id without an entry (the agent creates one per id) counts nothing.
#[inline(always)]
pub fn service(rev_nat_id: u32, verdict: Verdict, len: u64) {
    if rev_nat_id == 0 {
        return;
    }
    let Some(s) = SVC_SVC_STATS.get_ptr_mut(&rev_nat_id) else {
        return;
    };
    // SAFETY: this CPU's value of the entry; per-CPU, so nothing else writes it now.
    let s = unsafe { &mut *s };
    match verdict {
        Verdict::DnatNew => {
            s.new_flows += 1;
            s.packets += 1;
            s.bytes += len;
        }
        Verdict::DnatEstablished => {
            s.packets += 1;
            s.bytes += len;
        }
        Verdict::RevNat => {
            s.reply_packets += 1;
            s.reply_bytes += len;
        }
        v => {
            if let Some(reason) = ServiceDrop::of_verdict(v) {
                let i = reason.raw() as usize;
                if i < s.drops.len() {
                    s.drops[i] += 1;
                }
            }
        }
    }
}
