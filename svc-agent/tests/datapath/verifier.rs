//! The verifier's cost of the packet programs: the instructions it processed to accept
//! each one (bpf_prog_info.verified_insns), printed, and held below a budget well under
//! the kernel's limit of 1,000,000 so a change that makes the search loops or the parsing
//! much costlier shows here first, with the number, rather than as a load failure.
use svc_agent::dataplane::DatapathConfig;

use crate::support::*;

/// A fifth of the kernel's BPF_COMPLEXITY_LIMIT_INSNS: an inline loop over the 128
/// masquerade port probes instead of bpf_loop costs ~500,000 and fails. Measured
/// 2026-12-03, with IPv6: svc_tc_ingress 144,790, svc_xdp 86,665; 75,272 and 52,990 before
/// IPv6 fragments were handled (a first fragment's flag splits the verifier's states
/// through the whole decision). With svcctl monitor's report (svc-ebpf/src/monitor.rs,
/// walked at every path that ends in a verdict): 175,577 and 99,655. With the per-Service
/// counters and XDP's counted mark: 160,178 and 109,537 (a first version that read TC's
/// mark at the start of the run and kept the flag to the end cost TC 319,292: the flag
/// split every state in two). Both together: 177,751 and 120,064.
const BUDGET: u32 = 200_000;

#[test]
fn verifier_cost_is_within_budget() {
    let mut h = Harness::load("verifier", &DatapathConfig::default());
    let tc = h
        .datapath
        .tc_program()
        .expect("tc program")
        .info()
        .expect("tc program info")
        .verified_instruction_count()
        .expect("the kernel reports verified_insns");
    let xdp = h
        .datapath
        .xdp_program()
        .expect("xdp program")
        .info()
        .expect("xdp program info")
        .verified_instruction_count()
        .expect("the kernel reports verified_insns");
    println!("verifier: svc_tc_ingress {tc} instructions processed, svc_xdp {xdp}");
    assert!(tc < BUDGET, "svc_tc_ingress: {tc} verified instructions");
    assert!(xdp < BUDGET, "svc_xdp: {xdp} verified instructions");
}
