//! `cargo xtask <command>`: developer and CI tasks for the workspace
//! (`.cargo/config.toml` aliases `xtask` to `run --quiet --package xtask --`).
//!
//! Each subcommand lives in its own module and is one variant of [`Cmd`]; to add one, add
//! `mod <name>;`, a variant `Name(<name>::Opts)` and a match arm in `dispatch`. Commands that need
//! the BPF toolchain can call [`setup::ensure`] first.

mod bench;
mod image;
mod run;
mod setup;
mod soak;
mod test;

use std::process::ExitCode;

use anyhow::Context as _;
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
    /// Try it: a lab node with three echo pods, svc-agent serving a temp copy of examples/,
    /// until Ctrl-C.
    Run(run::Opts),
    /// Run every test (unit, BPF_PROG_TEST_RUN fixtures, end-to-end in the lab), serially;
    /// with SVC_TEST_IMAGE=1 also `cargo xtask image` (build the image, test its binary).
    Test(test::Opts),
    /// Benchmarks next to kube-proxy's iptables and nftables modes: bench/results/.
    Bench(bench::Opts),
    /// Build the container image (deploy/Dockerfile) with podman from a Debian base image
    /// made here, then test its svc-agent as the DaemonSet runs it.
    Image(image::Opts),
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
        Cmd::Image(opts) => image::run(&opts),
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

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR`, else target/ in the workspace.
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), Into::into)
}

/// How long the first build of svc-agent and the eBPF programs takes, in minutes, from a
/// clean target dir: 6 min 57 s on the 2-core development machine (2026-12-03, shared with
/// other builds; of which 1 min 48 s is the eBPF object). The compilation of xtask
/// itself, silent under `cargo xtask`, comes before it: 59 s.
const FIRST_BUILD_MINUTES: u64 = 7;

/// Whether builds show cargo's whole output as it comes (`--verbose` or
/// `SVC_XTASK_VERBOSE=1`) instead of a progress line.
fn verbose_env() -> bool {
    std::env::var_os("SVC_XTASK_VERBOSE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `cargo build ARGS`, showing a progress line instead of cargo's output (dozens of
/// lines of build-script warnings for the eBPF object): "building WHAT (...) ...", and
/// then "built in X s". The whole output goes to target/xtask-build.log; when the build
/// fails, its last lines are printed with the log's path. `verbose`: cargo's output as it
/// comes, as [`cargo`] does. `first`: the binaries do not exist yet, so the line says how
/// long a first build takes.
fn build(args: &[&str], what: &str, first: bool, verbose: bool) -> anyhow::Result<()> {
    let mut full = vec!["build"];
    full.extend_from_slice(args);
    if verbose {
        return cargo(&full);
    }
    let expect = if first {
        format!(
            "the first build takes about {FIRST_BUILD_MINUTES} minutes on 2 cores, later ones seconds; \
             --verbose or SVC_XTASK_VERBOSE=1 shows cargo's output"
        )
    } else {
        "seconds when little changed; --verbose shows cargo's output".to_string()
    };
    println!("building {what} ({expect}) ...");
    let target = target_dir();
    std::fs::create_dir_all(&target).with_context(|| format!("mkdir {}", target.display()))?;
    let log_path = target.join("xtask-build.log");
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(&full).current_dir(workspace_root());
    let took = run_logged(cmd, &format!("cargo {}", full.join(" ")), &log_path)?;
    println!(
        "built in {:.1} s (cargo's output: {})",
        took.as_secs_f64(),
        log_path.display()
    );
    Ok(())
}

/// A line cargo relays from a build script (`warning: svc-agent@0.1.0: ...`: the eBPF
/// build's own cargo output), left out of a failure's tail, where it would push the
/// compiler's errors out.
fn is_build_script_note(line: &str) -> bool {
    line.strip_prefix("warning: ")
        .and_then(|rest| rest.split(' ').next())
        .is_some_and(|package| package.ends_with(':') && package.contains('@'))
}

/// How many of the last lines of a failed command's output are printed.
const TAIL_LINES: usize = 40;

/// Runs `cmd` with its stdout and stderr in a new file `log_path`; on a terminal, one
/// line rewritten in place says how long it has run and what cargo is compiling. Returns
/// how long it ran; when it fails, prints the last [`TAIL_LINES`] lines of its stderr
/// (without build scripts' notes) and fails with the log's path.
fn run_logged(
    mut cmd: std::process::Command,
    what: &str,
    log_path: &std::path::Path,
) -> anyhow::Result<std::time::Duration> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};

    let mut log = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let mut child = cmd
        .stdout(log.try_clone().context("the build log")?)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let live = std::io::stderr().is_terminal();
    let mut doing = String::new();
    let mut tail = std::collections::VecDeque::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if let Some(rest) = line.trim_start().strip_prefix("Compiling ") {
                    doing = format!("compiling {}", rest.split(' ').next().unwrap_or(rest));
                }
                if is_build_script_note(&line) {
                    continue;
                }
                tail.push_back(line);
                if tail.len() > TAIL_LINES {
                    tail.pop_front();
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if live {
            let s = started.elapsed().as_secs();
            eprint!("\r\x1b[K  {}:{:02} {doing}", s / 60, s % 60);
        }
    }
    if live {
        eprint!("\r\x1b[K");
    }
    let _ = reader.join();
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    if !status.success() {
        eprintln!("--- the last lines of its output ---");
        for line in &tail {
            eprintln!("{line}");
        }
        anyhow::bail!(
            "{what} failed ({status}); its whole output: {}",
            log_path.display()
        );
    }
    Ok(started.elapsed())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing build: every line in the log, the error names the log; a passing one
    /// leaves its output in the log only.
    #[test]
    fn logged_runs_keep_the_whole_output() {
        let dir = std::env::temp_dir().join(format!("xtask-run-logged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("build.log");
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "echo out; for i in $(seq 1 60); do echo \"warning: line $i\" >&2; done; exit 3",
        ]);
        let e = run_logged(cmd, "the script", &log).unwrap_err().to_string();
        assert!(e.starts_with("the script failed"), "{e}");
        assert!(e.ends_with(&log.display().to_string()), "{e}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("out\n"));
        assert_eq!(text.matches("warning: line").count(), 60);

        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo '   Compiling x v0.1.0' >&2"]);
        run_logged(cmd, "the script", &log).unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "   Compiling x v0.1.0\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn build_script_notes_are_told_from_errors() {
        assert!(is_build_script_note(
            "warning: svc-agent@0.1.0:    Compiling core v0.0.0"
        ));
        assert!(is_build_script_note("warning: svc-agent@0.1.0: "));
        assert!(is_build_script_note("warning: svc-agent@0.1.0:"));
        assert!(!is_build_script_note("warning: unused variable: `x`"));
        assert!(!is_build_script_note(
            "warning: build failed, waiting for other jobs to finish..."
        ));
        assert!(!is_build_script_note("error[E0308]: mismatched types"));
    }
}
