//! Section 2 end to end, small: the lab, nginx in the three pods, the real svc-agent (socket
//! LB for pods off and on) and kube-proxy's two layouts at 1 and 50 Services, one short round (needs root, nginx,
//! iptables-legacy and nft: `cargo xtask setup`; and the agent binary:
//! `cargo build --workspace --exclude svc-ebpf --bins`, which also builds svc-bench-load). Figures are printed, not asserted.

use std::time::Duration;

use svc_bench::e2e::{self, E2eOpts};

#[test]
fn every_layout_carries_both_loads_at_two_scales() {
    let log = |line: &str| eprintln!("{line}");
    let opts = E2eOpts {
        scales: vec![1, 50],
        rounds: 1,
        duration: Duration::from_secs(1),
        concurrency: 4,
        paced_rate: 200,
        endpoints_per_service: 10,
        log: &log,
    };
    let (runs, installs) = e2e::run(&opts).unwrap_or_else(|e| panic!("{e:#}"));

    for n in [1, 50] {
        let at: Vec<_> = runs.iter().filter(|r| r.services == n).collect();
        assert_eq!(at.len(), 12, "4 layouts x 3 modes at {n} services: {at:#?}");
        // (Each ebpf run also checked, by the agent's counters, that its connections were
        // translated where its --socket-lb says, or the section failed.)
        for layout in ["ebpf", "ebpf-socklb", "iptables", "nftables"] {
            for mode in ["new_connections", "keepalive", "paced"] {
                let r = at
                    .iter()
                    .find(|r| r.layout == layout && r.mode == mode)
                    .unwrap_or_else(|| panic!("no {layout} {mode} run at {n}"));
                assert_eq!(r.round, 0);
                assert!(r.report.requests > 0, "{layout} {mode} {n}: {:?}", r.report);
                assert_eq!(
                    r.report.errors, 0,
                    "{layout} {mode} {n}: {:?}",
                    r.report.errors_by_kind
                );
                let cpu = r.report.cpu_seconds.expect("the CPU time of every run");
                assert!(cpu > 0.0, "{layout} {mode} {n}: {cpu} CPU seconds");
                // Our programs' share: in the paced runs of our layouts only, and a part
                // of the whole.
                match r.bpf_us_per_connection {
                    Some(bpf) => {
                        assert!(mode == "paced" && layout.starts_with("ebpf"), "{r:?}");
                        let all = r.report.cpu_us_per_request().unwrap();
                        assert!(bpf > 0.0 && bpf < all, "{layout} {n}: {bpf} of {all} µs");
                    }
                    None => assert!(mode != "paced" || !layout.starts_with("ebpf"), "{r:?}"),
                }
            }
            // The paced run offers 200/s for 1 s: about 200 connections, never a burst
            // to the ceiling.
            let paced = at
                .iter()
                .find(|r| r.layout == layout && r.mode == "paced")
                .unwrap();
            assert!(
                (100..=260).contains(&paced.report.requests),
                "{layout} paced {n}: {:?}",
                paced.report
            );
        }
        for layout in ["iptables-legacy-restore", "nft -f"] {
            let i: Vec<_> = installs
                .iter()
                .filter(|i| i.layout == layout && i.services == n)
                .collect();
            assert_eq!(i.len(), 1, "{layout} at {n}: {installs:#?}");
            assert_eq!(i[0].endpoints_per_service, 10);
            assert!(i[0].seconds > 0.0 && i[0].seconds < 60.0, "{:?}", i[0]);
        }
    }
    assert_eq!(installs.len(), 4, "{installs:#?}");
    // Nothing left behind: no lab namespace of this process.
    let me = format!("svl-{}-", std::process::id());
    let left: Vec<String> = svc_lab::netns::list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&me))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
