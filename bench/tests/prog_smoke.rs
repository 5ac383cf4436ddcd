//! A small run of section 1 (BPF_PROG_TEST_RUN), so the benchmark code cannot rot: every
//! case measured and checked, plausible figures. Needs root and bpffs.
use svc_bench::prog::{BASELINE_SUFFIX, Object, ProgOpts, run};

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
    let costs = run(&opts, &Object::ThisBuild, &|l| eprintln!("{l}")).expect("section 1");
    let cases: Vec<(&str, usize)> = costs
        .iter()
        .map(|c| (c.case.as_str(), c.services))
        .collect();
    assert_eq!(
        cases,
        [
            ("floor", 0),
            ("non_service", 10),
            ("ipv6", 10),
            ("established", 10),
            ("established6", 10),
            ("established_monitor", 10),
            ("established_monitor_sampled", 10),
            ("new_flow", 10),
            ("new_flow6", 10),
            ("new_flow_hot", 10),
            ("non_service", 200),
            ("ipv6", 200),
            ("established", 200),
            ("established6", 200),
            ("established_monitor", 200),
            ("established_monitor_sampled", 200),
            ("new_flow", 200),
            ("new_flow6", 200),
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

/// `--baseline-object`: another build's object file is loaded and measured the same way,
/// its rows named apart (here the file is this build's own object).
#[test]
fn a_baseline_object_is_measured_under_its_own_names() {
    let file = std::env::temp_dir().join(format!("svb-{}-baseline.o", std::process::id()));
    std::fs::write(&file, svc_agent::dataplane::EBPF_OBJECT).unwrap();
    let opts = ProgOpts {
        scales: vec![10],
        runs: 1,
        repeat: 1_000,
        new_flows_per_run: 50,
        established_flows: 5,
        ..ProgOpts::full()
    };
    let costs = run(&opts, &Object::Baseline(file.clone()), &|l| {
        eprintln!("{l}")
    });
    std::fs::remove_file(&file).ok();
    let names: Vec<String> = costs
        .expect("section 1 on the baseline object")
        .iter()
        .map(|c| format!("{} {}", c.program, c.case))
        .collect();
    assert_eq!(
        names,
        [
            format!("svc_bench_pass{BASELINE_SUFFIX} floor"),
            format!("svc_xdp{BASELINE_SUFFIX} non_service"),
            format!("svc_xdp{BASELINE_SUFFIX} ipv6"),
            format!("svc_xdp{BASELINE_SUFFIX} established"),
            format!("svc_xdp{BASELINE_SUFFIX} established6"),
            format!("svc_xdp{BASELINE_SUFFIX} new_flow"),
            format!("svc_xdp{BASELINE_SUFFIX} new_flow6"),
            format!("svc_xdp{BASELINE_SUFFIX} new_flow_hot"),
        ]
    );
    let missing = std::env::temp_dir().join("svb-no-such-object.o");
    let err = run(&opts, &Object::Baseline(missing), &|_| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("svb-no-such-object.o"),
        "{err:#}"
    );
}

/// `--packet-cases`: only the cases asked for run (and the floor, which new flows need).
#[test]
fn only_the_cases_asked_for_run() {
    let opts = ProgOpts {
        scales: vec![10],
        runs: 1,
        repeat: 1_000,
        new_flows_per_run: 50,
        established_flows: 5,
        cases: vec!["new_flow6".into(), "ipv6".into(), "established6".into()],
        ..ProgOpts::full()
    };
    let costs = run(&opts, &Object::ThisBuild, &|l| eprintln!("{l}")).expect("section 1");
    let cases: Vec<&str> = costs.iter().map(|c| c.case.as_str()).collect();
    assert_eq!(cases, ["floor", "ipv6", "established6", "new_flow6"]);
}
