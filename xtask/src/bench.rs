//! `cargo xtask bench [--quick]`: builds the workspace in release mode and runs svc-bench
//! (bench/src/main.rs), which writes bench/results/<timestamp>.{json,md} and PNG plots and
//! prints a summary. As root; everything it creates lives in lab namespaces.
use std::process::Command;

use anyhow::Context as _;

use crate::{cargo, setup, workspace_root};

/// The per-packet figures of the programs as issue 13 found them (main at 065f748), run on
/// this machine just before the first speed change: the default baseline of the
/// "vs baseline" goals.
pub const RECORDED_BASELINE: &str = "bench/published/2026-12-03T04-38-58-base.json";

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Fewer scales and shorter runs (a few minutes on 2 cores); the full run takes about
    /// 26 minutes here (the end-to-end section's `nft -f` of 10k Services alone takes 3 per
    /// round). Both after the release build (3.5 minutes from scratch).
    #[arg(long)]
    pub quick: bool,

    /// Only these sections (repeatable): packet, programming, e2e, socklb.
    #[arg(long = "only", value_name = "SECTION")]
    pub only: Vec<String>,

    /// Also measure the per-packet section on this eBPF object of another build (e.g. of
    /// main before a change: target/*/build/svc-agent-*/out/svc-ebpf), in the same run;
    /// the "vs baseline" goals compare this build with it. Without it, those goals compare
    /// with the figures recorded in bench/published/2026-12-03T04-38-58-base.json (the
    /// programs as issue 13 found them; svc-bench --baseline-results).
    #[arg(long, value_name = "FILE")]
    pub baseline_object: Option<std::path::PathBuf>,

    /// Further options for svc-bench, after `--`: e.g. `cargo xtask bench --only e2e --
    /// --e2e-services 1,10000` (the CPU-per-connection goals alone), or
    /// `--programming-services 100000` (the 100k goals); `svc-bench --help` lists them.
    #[arg(last = true, value_name = "SVC_BENCH_ARGS")]
    pub extra: Vec<std::ffi::OsString>,
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    setup::ensure(&setup::Opts::default())?;
    // Release binaries: the agent the end-to-end section starts is found next to svc-bench.
    cargo(&[
        "build",
        "--release",
        "--workspace",
        "--exclude",
        "svc-ebpf",
        "--bins",
    ])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let mut cmd = Command::new(target.join("release/svc-bench"));
    cmd.current_dir(workspace_root())
        .arg("--out")
        .arg(workspace_root().join("bench/results"));
    if opts.quick {
        cmd.arg("--quick");
    }
    for s in &opts.only {
        cmd.args(["--only", s]);
    }
    if let Some(object) = &opts.baseline_object {
        // svc-bench runs in the workspace root: a relative path stays the caller's.
        cmd.arg("--baseline-object")
            .arg(std::path::absolute(object).context("--baseline-object")?);
    } else if !opts.extra.iter().any(|a| a == "--baseline-results") {
        // Issue 13's per-packet goals are against the programs as it found them, whose
        // object this build cannot load (another map layout): their recorded figures.
        cmd.arg("--baseline-results")
            .arg(workspace_root().join(RECORDED_BASELINE));
    }
    cmd.args(&opts.extra);
    let status = cmd.status().context("running svc-bench")?;
    anyhow::ensure!(status.success(), "svc-bench failed ({status})");
    Ok(())
}
