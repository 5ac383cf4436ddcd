//! A small run of sections 3 and 4 (programming time, memory) so the code cannot rot: the
//! real agent against the in-process API server in a scratch namespace. Needs root and the
//! svc-agent binary (`cargo build --workspace --exclude svc-ebpf --bins`).
use svc_bench::programming::{ProgrammingOpts, run};

#[test]
fn install_change_and_memory_are_measured() {
    let opts = ProgrammingOpts {
        services: 200,
        endpoints_per_service: 10,
        changes: 10,
        iptables: true,
        nft: true,
    };
    let p = run(&opts, &|l| eprintln!("{l}")).expect("sections 3 and 4");
    let layouts: Vec<&str> = p.install.iter().map(|i| i.layout.as_str()).collect();
    assert_eq!(
        layouts,
        ["ebpf-sync", "ebpf", "iptables-legacy-restore", "nft -f"]
    );
    assert!(
        p.install
            .iter()
            .all(|i| i.seconds > 0.0 && i.seconds < 120.0),
        "{:?}",
        p.install
    );
    let c = p.change.expect("endpoint changes");
    assert_eq!(c.changes, 10);
    assert!(c.p50_ms > 0.0 && c.p99_ms >= c.p50_ms, "{c:?}");
    assert_eq!(p.memory.len(), 1);
    assert!(p.memory[0].bytes > 1_000_000, "{:?}", p.memory);
}
