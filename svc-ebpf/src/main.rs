//! svc-ebpf: the kernel side of the Service dataplane. Two programs share one set of maps:
//! `svc_tc_ingress` (TC ingress on pod-facing interfaces and the external interface) and
//! `svc_xdp` (XDP on the external interface). See README.md "Datapath" for the verdicts.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

mod config;
mod csum;
mod lb;
mod maps;
mod parse;
mod reject;
mod tc;
mod xdp;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[classifier]
pub fn svc_tc_ingress(ctx: TcContext) -> i32 {
    tc::run(&ctx)
}

#[xdp]
pub fn svc_xdp(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
