//! A small run of section 5 (socket LB for pods, on and off) so the code cannot rot: the
//! lab, the real agent in each `--socket-lb` mode, a few connections from the client pod.
//! Needs root and the svc-agent binary (`cargo build --workspace --exclude svc-ebpf --bins`).
use svc_bench::socklb::run;

#[test]
fn both_modes_are_measured() {
    let runs = run(20, 1, &|l| eprintln!("{l}")).expect("section 5");
    let modes: Vec<&str> = runs.iter().map(|r| r.mode.as_str()).collect();
    assert_eq!(modes, ["node", "all"]);
    for r in &runs {
        assert_eq!(r.connections, 20);
        // A connection is at least a SYN, a SYN-ACK and a FIN each way through TC.
        assert!(r.bpf_runs_per_connection >= 4.0, "{r:?}");
        assert!(r.bpf_ns_per_connection > 0.0, "{r:?}");
    }
}
