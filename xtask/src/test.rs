//! `cargo xtask test`: the whole test suite, as CI runs it. Installs what is missing, builds
//! the binaries the end-to-end tests start (svc-agent, svcctl), then runs every test of the
//! workspace one at a time (many touch kernel state: maps, namespaces, attached programs).
use crate::{cargo, setup};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Extra arguments for the test binaries, e.g. a test name filter.
    #[arg(trailing_var_arg = true)]
    pub filter: Vec<String>,
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    setup::ensure(&setup::Opts::default())?;
    cargo(&["build", "--workspace", "--exclude", "svc-ebpf", "--bins"])?;
    let mut args = vec![
        "test",
        "--workspace",
        "--exclude",
        "svc-ebpf",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ];
    args.extend(opts.filter.iter().map(String::as_str));
    cargo(&args)
}
