//! `cargo xtask soak`: the soak test of tests/tests/soak.rs (steady traffic through two
//! Services while their endpoints churn and the agent is killed and restarted), for as
//! long as asked. `cargo xtask test` runs the same test for 30 s.
use anyhow::Context as _;

use crate::{cargo, setup, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// How long the traffic and the churn run, in seconds (5 to 86400).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub secs: u64,
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    setup::ensure(&setup::Opts::default())?;
    cargo(&["build", "--workspace", "--exclude", "svc-ebpf", "--bins"])?;
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo_bin)
        .args(["test", "-p", "svc-lab", "--test", "soak", "--"])
        .args([
            "--test-threads=1",
            "--nocapture",
            "soak_endpoint_churn_and_agent_restarts",
        ])
        .env("SVC_SOAK_SECS", opts.secs.to_string())
        .current_dir(workspace_root())
        .status()
        .context("running the soak test")?;
    anyhow::ensure!(status.success(), "the soak failed ({status})");
    Ok(())
}
