//! The programs' clock: `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE), read only by
//! the paths that need a time, at most once per packet.
//!
//! Time stamps conntrack, affinity and fragment entries and ages them; lifetimes are
//! seconds, so the coarse clock's resolution (one tick, 1–10 ms) is plenty, and it costs a
//! few ns where `bpf_ktime_get_ns()` costs about 34 ns on this VM (issue 13's measurement).
//! A packet to no Service and no tracked flow reads no clock at all. Userspace (svcctl's
//! ages, expired entries) reads CLOCK_MONOTONIC, the same clock at full resolution: it is
//! never behind the coarse one, so an age is never negative.
use core::cell::Cell;

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

/// The time now, in ns of CLOCK_MONOTONIC_COARSE.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// One packet's time, read at its first use: the packet's paths that need no time never
/// pay for it, and those that do see one time throughout.
pub struct Clock(Cell<u64>);

impl Clock {
    #[inline(always)]
    pub const fn new() -> Clock {
        Clock(Cell::new(0))
    }

    #[inline(always)]
    pub fn now(&self) -> u64 {
        let t = self.0.get();
        if t != 0 {
            return t;
        }
        let t = now();
        self.0.set(t);
        t
    }
}
