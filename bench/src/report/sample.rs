//! Test fixtures: a full run with realistic figures, for the tests of the report's parts.
use std::collections::BTreeMap;
use std::time::Duration;

use crate::load::Report;
use crate::results::{
    ChangeLatency, E2eRun, InstallTime, Machine, Memory, PacketCost, Programming, RESULTS_VERSION,
    Results, SockLbRun,
};

fn pc(program: &str, case: &str, services: usize, repeat: u32, med: f64, net: f64) -> PacketCost {
    PacketCost {
        program: program.into(),
        case: case.into(),
        services,
        endpoints_per_service: if services == 0 { 0 } else { 10 },
        repeat,
        packets_per_run: u64::from(repeat) * if repeat == 1 { 100_000 } else { 1 },
        runs_ns: vec![med - 0.5, med, med + 0.7],
        median_ns: med,
        min_ns: med - 0.5,
        max_ns: med + 0.7,
        harness_ns: (repeat == 1).then_some(med - net),
        net_median_ns: net,
        verified: "XDP_TX counter = packets; output frame rewritten to the backend".into(),
    }
}

fn rep(rate: f64, errors: u64) -> Report {
    Report {
        requests: (rate * 5.0) as u64,
        errors,
        connections: (rate * 5.0) as u64,
        duration: Duration::from_secs(5),
        rate_per_s: rate,
        connect_p50_us: 60,
        connect_p99_us: 400,
        connect_p999_us: 900,
        request_p50_us: 900,
        request_p99_us: 3100,
        request_p999_us: 8000,
        errors_by_kind: BTreeMap::new(),
        cpu_seconds: None,
    }
}

fn e2e(layout: &str, services: usize, round: usize, rate: f64) -> E2eRun {
    E2eRun {
        layout: layout.into(),
        services,
        mode: "new_connections".into(),
        round,
        report: rep(rate, 0),
        bpf_us_per_connection: None,
    }
}

fn inst(layout: &str, services: usize, seconds: f64) -> InstallTime {
    InstallTime {
        layout: layout.into(),
        services,
        endpoints_per_service: 10,
        seconds,
        what: match layout {
            "ebpf" => "agent start to maps filled (EndpointSlices listed)".into(),
            "nft -f" => "`nft -f` of the whole table".into(),
            _ => "`iptables-legacy-restore` of the nat table".into(),
        },
    }
}

/// A full run with realistic figures.
pub(super) fn sample() -> Results {
    let mut packet = vec![
        pc("svc_bench_pass", "floor", 0, 1_000_000, 29.0, 29.0),
        pc("svc_bench_pass", "floor", 0, 1, 95.0, 95.0),
    ];
    for (s, nonsvc, est, newf) in [
        (10usize, 33.0, 61.0, 118.0),
        (1_000, 33.4, 63.5, 122.0),
        (10_000, 34.1, 66.0, 127.0),
        (100_000, 35.0, 68.9, 140.5),
    ] {
        packet.push(pc("svc_xdp", "non_service", s, 1_000_000, nonsvc, nonsvc));
        // A baseline object (--baseline-object) measured in the same run: this build's
        // no-Service packet at half its cost, established a little cheaper, new flows not.
        packet.push(pc(
            "svc_xdp@baseline",
            "non_service",
            s,
            1_000_000,
            nonsvc * 2.0,
            nonsvc * 2.0,
        ));
        packet.push(pc(
            "svc_xdp@baseline",
            "established",
            s,
            1_000_000,
            est + 5.0,
            est + 5.0,
        ));
        packet.push(pc("svc_xdp@baseline", "new_flow", s, 1, newf + 66.0, newf));
        packet.push(pc("svc_xdp", "established", s, 1_000_000, est, est));
        if s == 10 {
            // svcctl monitor on: every packet reported, and 1 in 100.
            packet.push(pc("svc_xdp", "established_monitor", s, 4096, 150.0, 150.0));
            let sampled = est + 3.0;
            packet.push(pc(
                "svc_xdp",
                "established_monitor_sampled",
                s,
                4096,
                sampled,
                sampled,
            ));
        }
        packet.push(pc("svc_xdp", "new_flow", s, 1, newf + 66.0, newf));
        packet.push(pc(
            "svc_tc_ingress",
            "established",
            s,
            1_000_000,
            est + 20.0,
            est + 20.0,
        ));
    }
    let mut e = Vec::new();
    for round in 0..3 {
        let j = round as f64 * 150.0;
        for (s, ebpf, ipt, nft) in [
            (1usize, 13_900.0, 13_650.0, 13_100.0),
            (1_000, 13_800.0, 11_900.0, 13_000.0),
            (10_000, 13_750.0, 9_850.0, 13_600.0),
        ] {
            e.push(e2e("ebpf", s, round, ebpf + j));
            e.push(e2e("iptables", s, round, ipt - j));
            e.push(e2e("nftables", s, round, nft + j / 2.0));
        }
    }
    e.push(E2eRun {
        mode: "keepalive".into(),
        ..e2e("ebpf", 10_000, 0, 31_000.0)
    });
    // Paced runs: 2,000 connections/s for 5 s, with the machine's CPU seconds (µs per
    // connection = cpu * 100).
    for (s, ebpf, ipt, nft) in [(1usize, 0.90, 0.95, 0.92), (10_000, 0.95, 3.1, 1.5)] {
        for (layout, cpu) in [("ebpf", ebpf), ("iptables", ipt), ("nftables", nft)] {
            let mut run = e2e(layout, s, 0, 2_000.0);
            run.mode = "paced".into();
            run.report.cpu_seconds = Some(cpu);
            if layout == "ebpf" {
                run.bpf_us_per_connection = Some(cpu * 10.0);
            }
            e.push(run);
        }
    }
    Results {
        version: RESULTS_VERSION,
        started: "2026-11-02T10:00:00Z".into(),
        finished: "2026-11-02T10:41:13Z".into(),
        quick: false,
        machine: Machine {
            kernel: "6.12.48+deb13-amd64".into(),
            cpus: 2,
            cpu_model: "AMD EPYC 7B13".into(),
            memory_mib: 24_000,
        },
        packet,
        e2e: e,
        programming: Programming {
            install: vec![
                inst("ebpf", 1, 0.004),
                inst("iptables-legacy-restore", 1, 0.005),
                inst("nft -f", 1, 0.011),
                inst("ebpf", 1_000, 0.061),
                inst("iptables-legacy-restore", 1_000, 0.41),
                inst("nft -f", 1_000, 0.73),
                inst("ebpf", 10_000, 0.52),
                inst("iptables-legacy-restore", 10_000, 4.3),
                inst("nft -f", 10_000, 113.0),
            ],
            endpoint_change: Some(ChangeLatency {
                services: 10_000,
                endpoints_per_service: 10,
                changes: 100,
                samples_ms: vec![4.0; 100],
                p50_ms: 4.2,
                p99_ms: 61.0,
                max_ms: 75.3,
                profile: String::new(),
            }),
        },
        socket_lb: ["node", "all"]
            .into_iter()
            .map(|mode| SockLbRun {
                mode: mode.into(),
                round: 0,
                connections: 500,
                bpf_ns_per_connection: if mode == "all" { 900.0 } else { 2_400.0 },
                bpf_runs_per_connection: if mode == "all" { 7.0 } else { 6.0 },
                wall_ms_per_connection: 1.2,
            })
            .collect(),
        memory: vec![
            Memory {
                what: "agent peak RSS (VmHWM)".into(),
                services: 1_000,
                endpoints_per_service: 10,
                bytes: 41_000_000,
            },
            Memory {
                what: "agent peak RSS (VmHWM)".into(),
                services: 10_000,
                endpoints_per_service: 10,
                bytes: 88_400_000,
            },
        ],
        goals: vec![],
        notes: vec!["section tc: skipped (no tc program attached in this lab)".into()],
    }
}
