//! Load-time configuration: globals the agent sets with `EbpfLoader::override_global`
//! before loading (Cilium's DECLARE_CONFIG), so node facts need no recompile. Read with
//! volatile loads: the compiler must not fold them into the initial zeroes.
use core::ptr::read_volatile;

use svc_common::MASQUERADE_PORTS;

/// How new flows from pods are told apart: a svc_common::DetectLocal (0: not at all; the
/// CIDRs and interfaces are in maps, see local.rs).
#[unsafe(no_mangle)]
static DETECT_LOCAL: u32 = 0;
/// The address masqueraded flows get as their source (the node's IP); 0 = never masquerade.
#[unsafe(no_mangle)]
static MASQ_ADDR_BE: u32 = 0;
/// The IPv6 masquerade source (the node's IPv6 address, four network-order words); all
/// zero: never masquerade IPv6.
#[unsafe(no_mangle)]
static MASQ_ADDR6_BE: [u32; 4] = [0; 4];
/// Source ports masqueraded flows may get (host order, inclusive); the default and why it
/// sits where it does: svc_common::MASQUERADE_PORTS.
#[unsafe(no_mangle)]
static NAT_PORT_MIN: u32 = MASQUERADE_PORTS.0 as u32;
#[unsafe(no_mangle)]
static NAT_PORT_MAX: u32 = MASQUERADE_PORTS.1 as u32;
/// Non-zero: masquerade every translated flow (kube-proxy's --masquerade-all).
#[unsafe(no_mangle)]
static MASQUERADE_ALL: u32 = 0;

/// Non-zero: the socket programs also translate pods' sockets, for what needs no packet
/// rule (sock.rs, "Pods"); zero: only the node's own (sockets of HOST_NETNS_COOKIE).
#[unsafe(no_mangle)]
static SOCK_LB_PODS: u32 = 0;
/// The network namespace cookie of the node itself (the agent's namespace); 0: unknown
/// (a kernel without SO_NETNS_COOKIE), every socket counts as the node's.
#[unsafe(no_mangle)]
static HOST_NETNS_COOKIE: u64 = 0;

#[inline(always)]
pub fn sock_lb_pods() -> bool {
    unsafe { read_volatile(&SOCK_LB_PODS) != 0 }
}

#[inline(always)]
pub fn host_netns_cookie() -> u64 {
    unsafe { read_volatile(&HOST_NETNS_COOKIE) }
}

#[inline(always)]
pub fn masq_addr() -> u32 {
    unsafe { read_volatile(&MASQ_ADDR_BE) }
}

#[inline(always)]
pub fn masq_addr6() -> [u32; 4] {
    unsafe { read_volatile(&MASQ_ADDR6_BE) }
}

/// (first port, number of ports) of the masquerade range.
#[inline(always)]
pub fn nat_ports() -> (u32, u32) {
    let (min, max) = unsafe { (read_volatile(&NAT_PORT_MIN), read_volatile(&NAT_PORT_MAX)) };
    if min == 0 || max < min || max > 65535 {
        let (min, max) = (MASQUERADE_PORTS.0 as u32, MASQUERADE_PORTS.1 as u32);
        (min, max - min + 1)
    } else {
        (min, max - min + 1)
    }
}

#[inline(always)]
pub fn masquerade_all() -> bool {
    unsafe { read_volatile(&MASQUERADE_ALL) != 0 }
}

/// The DETECT_LOCAL mode (a svc_common::DetectLocal number).
#[inline(always)]
pub fn detect_local() -> u32 {
    unsafe { read_volatile(&DETECT_LOCAL) }
}
