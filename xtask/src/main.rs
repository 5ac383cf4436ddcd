//! `cargo xtask <command>`: developer and CI tasks for the workspace
//! (`.cargo/config.toml` aliases `xtask` to `run --quiet --package xtask --`).
//!
//! Each subcommand lives in its own module and is one variant of [`Cmd`]; to add one, add
//! `mod <name>;`, a variant `Name(<name>::Opts)` and a match arm in `main`. Commands that need
//! the BPF toolchain can call [`setup::ensure`] first.

mod setup;

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
    // Run(run::Opts),     -- `cargo xtask run`:   to be added (module `run`)
    // Test(test::Opts),   -- `cargo xtask test`:  to be added (module `test`; .ci/run calls it)
    // Bench(bench::Opts), -- `cargo xtask bench`: to be added (module `bench`)
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Setup(opts) => setup::ensure(&opts),
    }
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
