//! frag.rs for IPv6: every fragment of a datagram gets the translation its first fragment
//! got, with the same decisions (README "Fragments"). The key is {source, destination,
//! fragment header identification (32 bits), upper-layer protocol} as the datagram
//! arrives (SVC6_FRAG).
//!
//! Differences from IPv4:
//! - The entry is built in SVC6_FRAG_TMP, a per-CPU scratch entry, not on the stack: the
//!   IPv6 packet path's frame is close to the verifier's 512-byte limit, and an entry is
//!   88 bytes. `record` fills it in place and inserts from it.
//! - A later fragment carries no checksum at all (no IPv6 header checksum, no L4 header):
//!   its addresses are simply replaced. TC stores them with BPF_F_RECOMPUTE_CSUM, so a
//!   CHECKSUM_COMPLETE skb's sum follows; reassembly then checks the first fragment's L4
//!   checksum, which the translation of the first fragment updated for every fragment.
//! - The fragment header is found by walking the extension headers again (at most
//!   parse6's MAX_EXT_HEADERS).
use aya_ebpf::{
    bindings::{
        BPF_F_RECOMPUTE_CSUM, TC_ACT_OK, TC_ACT_SHOT,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    programs::{TcContext, XdpContext},
};
use svc_common::{FRAG_KIND_DROP, Frag6Key, Ip6, Verdict};

use crate::{
    clock::Clock,
    frag::{Later, later_of},
    maps::{SVC6_FRAG, SVC6_FRAG_TMP},
    parse::{ETH_HLEN, Packet, ptr_at},
    parse6::{IP6_DADDR_OFF, IP6_SADDR_OFF, IPV6_HLEN, Ipv6Hdr, MAX_EXT_HEADERS},
};

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;

/// For a first fragment: records what the rest of its datagram gets (`kind`, and the
/// addresses it left with), or, `remove`, that no entry may translate it (a first fragment
/// that is not ours). Nothing for other packets.
#[inline(always)]
pub fn record(pkt: &Packet<Ip6>, kind: u8, saddr: Ip6, daddr: Ip6, remove: bool, clock: &Clock) {
    if !pkt.first_fragment {
        return;
    }
    let Some(e) = SVC6_FRAG_TMP.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a pointer to this CPU's entry of the per-CPU array, valid for the program's
    // run; the entry is written field by field, never copied to the stack.
    unsafe {
        (*e).key.saddr_be = pkt.saddr;
        (*e).key.daddr_be = pkt.daddr;
        (*e).key.id_be = pkt.ip_id;
        (*e).key.proto = pkt.proto;
        (*e).key._pad = [0; 3];
        if remove {
            let _ = SVC6_FRAG.remove(&(*e).key);
            return;
        }
        (*e).value.created_ns = clock.now();
        (*e).value.saddr_be = saddr;
        (*e).value.daddr_be = daddr;
        (*e).value.kind = kind;
        (*e).value._pad = [0; 7];
        // A failed insert leaves the later fragments untranslated (passed).
        let _ = SVC6_FRAG.insert(&(*e).key, &(*e).value, 0);
    }
}

/// For a first fragment whose action ended in `verdict` without a rewrite: the rest is
/// dropped after a drop, and left alone otherwise.
#[inline(always)]
pub fn done(pkt: &Packet<Ip6>, verdict: Verdict, clock: &Clock) {
    let drop = verdict.is_drop();
    record(pkt, FRAG_KIND_DROP, [0; 4], [0; 4], !drop, clock);
}

/// The entry of the later fragment in [start, end), found through its fragment header.
#[inline(always)]
fn later(start: usize, end: usize) -> Later<Ip6> {
    let Some(ip) = ptr_at::<Ipv6Hdr>(start, end, ETH_HLEN) else {
        return Later::Pass;
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let mut next = ip.nexthdr;
    let mut off = ETH_HLEN + IPV6_HLEN;
    let mut walked = 0;
    while walked < MAX_EXT_HEADERS && next != NEXTHDR_FRAGMENT {
        if !matches!(next, NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST) {
            return Later::Pass;
        }
        let Some(h) = ptr_at::<[u8; 2]>(start, end, off) else {
            return Later::Pass;
        };
        // SAFETY: bounds checked by ptr_at.
        let h = unsafe { *h };
        next = h[0];
        off += (h[1] as usize + 1) * 8;
        walked += 1;
    }
    if next != NEXTHDR_FRAGMENT {
        return Later::Pass;
    }
    // The fragment header: next header, reserved, offset and flags, identification.
    let Some(f) = ptr_at::<[u32; 2]>(start, end, off) else {
        return Later::Pass;
    };
    // SAFETY: bounds checked by ptr_at.
    let f = unsafe { *f };
    let key = Frag6Key {
        saddr_be: ip.saddr,
        daddr_be: ip.daddr,
        id_be: f[1],
        // The first byte of the header, whatever the byte order of the word.
        proto: f[0].to_ne_bytes()[0],
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out at once.
    later_of((unsafe { SVC6_FRAG.get(&key) }).copied())
}

/// TC: a fragment after the first (parse6 returned PassFragment). Inlined into the IPv6
/// path, where it returns before any of the path's own state is made. (As a BPF function
/// of its own, LLVM passed it the context's packet pointers as 32-bit values and
/// zero-extended them there, which the verifier refuses: pointer arithmetic on pkt_end.)
#[inline(always)]
pub fn tc_later(ctx: &TcContext) -> (Verdict, i32) {
    match later(ctx.data(), ctx.data_end()) {
        Later::Pass => (Verdict::PassFragment, TC_ACT_OK),
        Later::Drop => (Verdict::DropFragment, TC_ACT_SHOT),
        Later::Rewrite {
            saddr,
            daddr,
            verdict,
        } => {
            let flags = BPF_F_RECOMPUTE_CSUM as u64;
            match ctx
                .store(IP6_SADDR_OFF, &saddr, flags)
                .and_then(|()| ctx.store(IP6_DADDR_OFF, &daddr, flags))
            {
                Ok(()) => (verdict, TC_ACT_OK),
                Err(_) => (Verdict::DropRewriteFailed, TC_ACT_SHOT),
            }
        }
    }
}

/// XDP: a fragment after the first, rewritten in place (nothing to checksum). A BPF
/// function of its own, beside the IPv6 path's (whose frame has no room for it). The
/// context's packet pointers are read with volatile loads: with plain ones LLVM moved the
/// loads into the caller and passed 32-bit values that this function then zero-extended,
/// which the verifier refuses (pointer arithmetic on pkt_end).
#[inline(never)]
pub fn xdp_later(ctx: &XdpContext) -> (Verdict, u32) {
    // SAFETY: reading two fields of the context the kernel passed.
    let (start, end) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    };
    match later(start, end) {
        Later::Pass => (Verdict::PassFragment, XDP_PASS),
        Later::Drop => (Verdict::DropFragment, XDP_DROP),
        Later::Rewrite {
            saddr,
            daddr,
            verdict,
        } => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(start, end, ETH_HLEN) else {
                return (Verdict::DropMalformed, XDP_DROP);
            };
            // SAFETY: bounds checked by ptr_at.
            unsafe {
                (*ip).saddr = saddr;
                (*ip).daddr = daddr;
            }
            (verdict, XDP_PASS)
        }
    }
}
