//! `cargo xtask <command>`: developer and CI tasks for the workspace
//! (`.cargo/config.toml` aliases `xtask` to `run --quiet --package xtask --`).
//!
//! Each subcommand lives in its own module and is one variant of [`Cmd`]; to add one, add
//! `mod <name>;`, a variant `Name(<name>::Opts)` and a match arm in `dispatch`. Commands that need
//! the BPF toolchain can call [`setup::ensure`] first.

mod bench;
mod run;
mod setup;
mod soak;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Workspace tasks for the svc dataplane"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install (only what is missing) the BPF toolchain and lab tools on Debian 12, as root.
    Setup(setup::Opts),
    /// Try it: a lab node with three echo pods, svc-agent serving examples/, until Ctrl-C.
    Run(run::Opts),
    /// Run every test (unit, BPF_PROG_TEST_RUN fixtures, end-to-end in the lab), serially.
    Test(test::Opts),
    /// Benchmarks next to kube-proxy's iptables and nftables modes: bench/results/.
    Bench(bench::Opts),
    /// The soak test (traffic through Services whose endpoints churn while the agent is
    /// killed and restarted) for as long as asked; prints what failed or misrouted.
    Soak(soak::Opts),
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Setup(opts) => setup::ensure(&opts),
        Cmd::Run(opts) => run::run(&opts),
        Cmd::Test(opts) => test::run(&opts),
        Cmd::Bench(opts) => bench::run(&opts),
        Cmd::Soak(opts) => soak::run(&opts),
    }
}

/// The workspace's top directory.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs cargo (the one that runs xtask) from the workspace root; fails if it fails.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| anyhow::anyhow!("running cargo {}: {e}", args.join(" ")))?;
    anyhow::ensure!(
        status.success(),
        "cargo {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line and no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
