//! IPv4 fragments: every fragment of a datagram gets the translation its first fragment got.
//!
//! Only the first fragment (offset 0) carries the TCP/UDP header, so only it can be looked
//! up in conntrack; it goes through lb.rs as a whole packet would. `first` then records,
//! keyed by {source, destination, IPv4 id, protocol} as the datagram arrives (Cilium's
//! cilium_ipv4_frag_datagrams key), the addresses that fragment left with (or that it was
//! dropped); `later` gives each following fragment of the datagram the same addresses. A
//! fragment after the first has no L4 header to rewrite, and needs no L4 checksum update:
//! the first fragment's checksum covers the whole datagram, and its incremental update for
//! the new addresses (pseudo-header) and ports already accounts for every fragment, since
//! all of them get the same addresses. The IPv4 header checksum is per fragment.
//!
//! Decisions (README "The datapath", "IPv4 fragments"):
//! - The translation, not the ports, is recorded (Cilium records the ports and looks every
//!   fragment up again): a later fragment can then never get another backend than the
//!   first, even if the flow's entry changed in between, and costs one lookup.
//! - A fragment that arrives before its datagram's first fragment (reordering) finds no
//!   entry and is passed untouched (`pass_fragment`), as are fragments of datagrams that
//!   are not translated (pod to pod, to the node): the programs cannot tell the two apart
//!   without the ports, and dropping would break untranslated traffic that the receiver
//!   reassembles fine today. Such a datagram of a translated flow is lost (the receiver
//!   never completes it); on one host fragments arrive in order.
//! - A first fragment that is not translated removes any entry of its key, so a stale
//!   entry of an earlier datagram with the same IPv4 id never translates this one; entries
//!   older than FRAG_TIMEOUT_NS (Linux's ipfrag_time) are ignored.
//! - A first fragment that is dropped or rejected makes the rest be dropped
//!   (`drop_fragment`), instead of leaving them to be routed to a Service address.
use aya_ebpf::{
    bindings::{
        TC_ACT_OK, TC_ACT_SHOT,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    programs::{TcContext, XdpContext},
};
use svc_common::{
    FRAG_KIND_DNAT, FRAG_KIND_DROP, FRAG_KIND_REV_NAT, FRAG_TIMEOUT_NS, Frag4Key, Frag4Value,
    FragValue, Verdict,
};

use crate::{
    clock::{self, Clock},
    csum,
    maps::SVC4_FRAG,
    parse::{ETH_HLEN, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Ipv4Hdr, Packet, ptr_at},
};

#[inline(always)]
fn key(saddr: u32, daddr: u32, id: u16, proto: u8) -> Frag4Key {
    Frag4Key {
        saddr_be: saddr,
        daddr_be: daddr,
        id_be: id,
        proto,
        _pad: 0,
    }
}

/// What the first fragment of a datagram leaves for its later fragments: plain values, so
/// it can be made on the packet path and written by [`record`] in another BPF function.
#[derive(Clone, Copy)]
pub struct Plan {
    op: u8,
    key: Frag4Key,
    value: Frag4Value,
}

const PLAN_NOTHING: u8 = 0;
const PLAN_REMOVE: u8 = 1;
const PLAN_INSERT: u8 = 2;

impl Plan {
    pub const NOTHING: Plan = Plan {
        op: PLAN_NOTHING,
        key: Frag4Key {
            saddr_be: 0,
            daddr_be: 0,
            id_be: 0,
            proto: 0,
            _pad: 0,
        },
        value: Frag4Value {
            created_ns: 0,
            saddr_be: 0,
            daddr_be: 0,
            kind: 0,
            _pad: [0; 7],
        },
    };
}

/// For a first fragment translated (`FRAG_KIND_DNAT`) or reverse-translated
/// (`FRAG_KIND_REV_NAT`) to `saddr` -> `daddr`: what its datagram's later fragments get.
/// Nothing for unfragmented packets. The callers make the plan in the arm of the action
/// they apply, where its fields are known: a plan made from a whole `Action` let LLVM load
/// fields of variants the action was not (undefined registers, R3 !read_ok).
#[inline(always)]
pub fn translated(pkt: &Packet, kind: u8, saddr: u32, daddr: u32) -> Plan {
    if !pkt.first_fragment {
        return Plan::NOTHING;
    }
    Plan {
        op: PLAN_INSERT,
        key: key(pkt.saddr, pkt.daddr, pkt.ip_id as u16, pkt.proto),
        value: Frag4Value {
            // Stamped by `record`, which alone reads the clock.
            created_ns: 0,
            saddr_be: saddr,
            daddr_be: daddr,
            kind,
            _pad: [0; 7],
        },
    }
}

/// For a first fragment that is dropped or rejected: the rest of the datagram is dropped.
#[inline(always)]
pub fn dropped(pkt: &Packet) -> Plan {
    translated(pkt, FRAG_KIND_DROP, 0, 0)
}

/// For a first fragment that is not ours: no entry may translate the datagram's fragments.
#[inline(always)]
pub fn untouched(pkt: &Packet) -> Plan {
    if !pkt.first_fragment {
        return Plan::NOTHING;
    }
    Plan {
        op: PLAN_REMOVE,
        key: key(pkt.saddr, pkt.daddr, pkt.ip_id as u16, pkt.proto),
        ..Plan::NOTHING
    }
}

/// The plan of a first fragment whose action ended in `verdict` without a rewrite.
#[inline(always)]
pub fn done(pkt: &Packet, verdict: svc_common::Verdict) -> Plan {
    if verdict.is_drop() {
        dropped(pkt)
    } else {
        untouched(pkt)
    }
}

/// Writes what [`translated`], [`dropped`], [`untouched`] decided. Inlined: as a BPF function of its own on top of the TC
/// packet path's frame, the call chain passed the verifier's 512-byte stack limit once
/// ICMP errors were translated too. (It was a function of its own while `Action` carried
/// `Option`s, whose undefined bytes LLVM filled with any register when inlined: R4
/// !read_ok; `Action` is plain values now.)
#[inline(always)]
pub fn record(plan: &Plan, clock: &Clock) {
    match plan.op {
        PLAN_REMOVE => {
            let _ = SVC4_FRAG.remove(&plan.key);
        }
        // A failed insert leaves the later fragments untranslated (passed): nothing better
        // is possible, and the first fragment is still handled.
        PLAN_INSERT => {
            let value = Frag4Value {
                created_ns: clock.now(),
                ..plan.value
            };
            let _ = SVC4_FRAG.insert(&plan.key, &value, 0);
        }
        _ => {}
    }
}

/// What a fragment after the first gets; frag6.rs's too.
pub(crate) enum Later<A = u32> {
    Pass,
    Drop,
    Rewrite {
        saddr: A,
        daddr: A,
        verdict: Verdict,
    },
}

/// The entry of the datagram whose fragment (after the first) has IPv4 header `ip`.
#[inline(always)]
fn later(ip: &Ipv4Hdr) -> Later {
    let key = key(ip.saddr_be, ip.daddr_be, ip.id_be, ip.proto);
    // SAFETY: the value is copied out at once.
    later_of((unsafe { SVC4_FRAG.get(&key) }).copied())
}

/// What a later fragment gets from its datagram's entry `v`, of either family: nothing
/// without one, or once it is older than FRAG_TIMEOUT_NS.
#[inline(always)]
pub(crate) fn later_of<A: Copy>(v: Option<FragValue<A>>) -> Later<A> {
    let Some(v) = v else {
        return Later::Pass;
    };
    if clock::now().saturating_sub(v.created_ns) > FRAG_TIMEOUT_NS {
        return Later::Pass;
    }
    match v.kind {
        FRAG_KIND_DNAT => Later::Rewrite {
            saddr: v.saddr_be,
            daddr: v.daddr_be,
            verdict: Verdict::DnatFragment,
        },
        FRAG_KIND_REV_NAT => Later::Rewrite {
            saddr: v.saddr_be,
            daddr: v.daddr_be,
            verdict: Verdict::RevNatFragment,
        },
        FRAG_KIND_DROP => Later::Drop,
        _ => Later::Pass,
    }
}

/// TC: a fragment after the first (parse.rs returned PassFragment, so its IPv4 header is
/// valid and in the linear area). Addresses through the kernel's helpers, as tc.rs does.
#[inline(always)]
pub fn tc_later(ctx: &TcContext) -> (Verdict, i32) {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx.data(), ctx.data_end(), ETH_HLEN) else {
        return (Verdict::DropMalformed, TC_ACT_SHOT);
    };
    // SAFETY: bounds checked by ptr_at; copied before any helper moves the data.
    let ip = unsafe { *ip };
    match later(&ip) {
        Later::Pass => (Verdict::PassFragment, TC_ACT_OK),
        Later::Drop => (Verdict::DropFragment, TC_ACT_SHOT),
        Later::Rewrite {
            saddr,
            daddr,
            verdict,
        } => match tc_set(ctx, IP_SADDR_OFF, ip.saddr_be, saddr)
            .and_then(|()| tc_set(ctx, IP_DADDR_OFF, ip.daddr_be, daddr))
        {
            Ok(()) => (verdict, TC_ACT_OK),
            Err(_) => (Verdict::DropRewriteFailed, TC_ACT_SHOT),
        },
    }
}

/// Replaces one IPv4 address and fixes the header checksum (no L4 header here).
#[inline(always)]
fn tc_set(ctx: &TcContext, off: usize, old: u32, new: u32) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 4)?;
    ctx.store(off, &new, 0)
}

/// XDP: a fragment after the first, rewritten in place with an incremental header
/// checksum (IPv4 options, which TC handles for first fragments, do not matter here: the
/// addresses sit at fixed offsets).
#[inline(always)]
pub fn xdp_later(ctx: &XdpContext) -> (Verdict, u32) {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx.data(), ctx.data_end(), ETH_HLEN) else {
        return (Verdict::DropMalformed, XDP_DROP);
    };
    // SAFETY: bounds checked by ptr_at.
    match later(unsafe { &*ip }) {
        Later::Pass => (Verdict::PassFragment, XDP_PASS),
        Later::Drop => (Verdict::DropFragment, XDP_DROP),
        Later::Rewrite {
            saddr,
            daddr,
            verdict,
        } => {
            // SAFETY: bounds checked by ptr_at. Unchanged addresses are not fed to the
            // checksum update (see xdp.rs: it could turn 0xffff into 0x0000).
            unsafe {
                if (*ip).saddr_be != saddr {
                    (*ip).csum = csum::replace4((*ip).csum, (*ip).saddr_be, saddr);
                    (*ip).saddr_be = saddr;
                }
                if (*ip).daddr_be != daddr {
                    (*ip).csum = csum::replace4((*ip).csum, (*ip).daddr_be, daddr);
                    (*ip).daddr_be = daddr;
                }
            }
            (verdict, XDP_PASS)
        }
    }
}
