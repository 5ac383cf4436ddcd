//! A small run of section 1 (BPF_PROG_TEST_RUN), so the benchmark code cannot rot: every
//! case measured and checked, plausible figures. Needs root and bpffs.
use svc_bench::prog::{ProgOpts, run};

#[test]
fn packet_costs_are_measured_and_checked() {
    let opts = ProgOpts {
        scales: vec![10, 200],
        runs: 3,
        repeat: 20_000,
        new_flows_per_run: 300,
        established_flows: 20,
        ..ProgOpts::full()
    };
    let costs = run(&opts, &|l| eprintln!("{l}")).expect("section 1");
    let cases: Vec<(&str, usize)> = costs
        .iter()
        .map(|c| (c.case.as_str(), c.services))
        .collect();
    assert_eq!(
        cases,
        [
            ("floor", 0),
            ("non_service", 10),
            ("established", 10),
            ("new_flow", 10),
            ("new_flow_hot", 10),
            ("non_service", 200),
            ("established", 200),
            ("new_flow", 200),
            ("new_flow_hot", 200)
        ]
    );
    for c in &costs {
        assert_eq!(c.runs_ns.len(), 3, "{c:?}");
        assert!(c.median_ns > 0.0 && c.median_ns < 100_000.0, "{c:?}");
        assert!(!c.verified.is_empty());
    }
    let floor = costs[0].median_ns;
    assert!(
        costs.iter().skip(1).all(|c| c.median_ns >= floor * 0.5),
        "{costs:?}"
    );
}
