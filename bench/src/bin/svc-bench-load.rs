//! svc-bench-load: one load run of the bench's generator as a process of its own, so that it
//! can run as a pod's process (in the pod's network namespace and cgroup, where its sockets
//! meet the socket-level programs and its CPU time is the pod's). Started by
//! `svc_bench::load::run_process`; not meant to be run by hand.
//!
//! Usage: `svc-bench-load --spec JSON` (a `svc_bench::load::Spec`); prints the
//! `svc_bench::load::Report` as JSON on stdout; exits 1 with the error on stderr.
use std::process::ExitCode;

use anyhow::Context;
use svc_bench::load::{self, Spec};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svc-bench-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(flag), Some(json), None) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: svc-bench-load --spec JSON");
    };
    anyhow::ensure!(flag == "--spec", "usage: svc-bench-load --spec JSON");
    let spec: Spec = serde_json::from_str(&json).context("--spec")?;
    let report = load::run_spec(&spec)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
