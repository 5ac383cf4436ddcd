//! `cargo xtask test`: the whole test suite, as CI runs it. Installs what is missing, builds
//! the binaries the end-to-end tests start (svc-agent, svcctl), then runs every test of the
//! workspace one at a time (many touch kernel state: maps, namespaces, attached programs),
//! and ends with one line totalling every test binary's results. `SVC_TEST_IMAGE=1`: then
//! `cargo xtask image` too (not by default: its release build would double a cold CI run;
//! deploy/README.md "Building the image").
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{build, setup, target_dir, verbose_env, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Show cargo's whole output while building the binaries (also: SVC_XTASK_VERBOSE=1)
    /// instead of a progress line.
    #[arg(short, long)]
    pub verbose: bool,

    /// Extra arguments for the test binaries, e.g. a test name filter.
    #[arg(trailing_var_arg = true)]
    pub filter: Vec<String>,
}

/// Totals of libtest's `test result: ok. 7 passed; 0 failed; 1 ignored; ...` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    setup::ensure(&setup::Opts::default())?;
    build(
        &["--workspace", "--exclude", "svc-ebpf", "--bins"],
        "svc-agent, svcctl, the eBPF programs and the lab's binaries",
        !target_dir().join("debug/svc-agent").exists(),
        opts.verbose || verbose_env(),
    )?;
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo_bin)
        .args([
            "test",
            "--workspace",
            "--exclude",
            "svc-ebpf",
            "--no-fail-fast",
            "--",
            "--test-threads=1",
        ])
        .args(&opts.filter)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut totals = Totals::default();
    let stdout = std::io::stdout();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.context("reading cargo test output")?;
        totals.add_line(&line);
        let _ = writeln!(stdout.lock(), "{line}");
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "\nall test binaries: {} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
    println!("{} passed, {} failed", totals.passed, totals.failed);
    anyhow::ensure!(
        status.success() && totals.failed == 0,
        "tests failed ({status})"
    );
    anyhow::ensure!(totals.passed > 0, "no test ran");
    if image_wanted() {
        // The image, built and its binary tested as the DaemonSet runs it: on request
        // only (see deploy/README.md "Building the image" for the time it takes).
        crate::image::run(&crate::image::Opts {
            tag: crate::image::DEFAULT_TAG.into(),
            from_source: false,
            refresh_base: false,
            no_test: false,
            verbose: opts.verbose,
        })?;
    }
    Ok(())
}

/// `SVC_TEST_IMAGE=1`: `cargo xtask test` also runs `cargo xtask image` (build the image,
/// test its binary as the DaemonSet runs it) after the suite.
fn image_wanted() -> bool {
    std::env::var_os("SVC_TEST_IMAGE").is_some_and(|v| !v.is_empty() && v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_libtest_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 57 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.02s");
        t.add_line(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 4 tests");
        t.add_line("test foo ... ok");
        assert_eq!(
            t,
            Totals {
                passed: 60,
                failed: 1,
                ignored: 2
            }
        );
    }
}
