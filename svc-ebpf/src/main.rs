//! svc-ebpf: the kernel side of the Service dataplane. Two programs share one set of maps:
//! `svc_tc_ingress` (TC ingress on pod-facing interfaces and the external interface) and
//! `svc_xdp` (XDP on the external interface), plus socket-level programs for the node's own
//! processes (`svc_connect4`, `svc_sendmsg4`, `svc_recvmsg4`), and `svc_bench_pass`, the
//! empty program the benchmark measures as the floor; IPv6 sockets get `svc_connect6`,
//! `svc_sendmsg6` and `svc_recvmsg6`. See README.md for the verdicts.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

mod clock;
mod config;
mod counters;
mod csum;
mod family;
mod frag;
mod frag6;
mod icmp;
mod icmp6;
mod lb;
mod local;
mod maps;
mod monitor;
mod parse;
mod parse6;
mod reject;
mod reject6;
mod rules;
mod sctp;
mod sock;
mod tc;
mod unserved;
mod xdp;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};

#[classifier]
pub fn svc_tc_ingress(ctx: TcContext) -> i32 {
    tc::run(&ctx)
}

#[xdp]
pub fn svc_xdp(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
}

/// The per-packet floor for `cargo xtask bench`: an XDP program that only returns
/// XDP_PASS. Never attached; loaded only by the benchmark.
#[xdp]
pub fn svc_bench_pass(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

#[cgroup_sock_addr(connect4)]
pub fn svc_connect4(ctx: SockAddrContext) -> i32 {
    sock::connect4(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn svc_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::sendmsg4(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn svc_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::reverse(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn svc_connect6(ctx: SockAddrContext) -> i32 {
    sock::connect6(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn svc_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock::sendmsg6(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn svc_recvmsg6(ctx: SockAddrContext) -> i32 {
    sock::reverse6(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
