//! svc-bench: the benchmark `cargo xtask bench` runs (as root, in lab namespaces only).
//! Sections, in this order: 1 per-packet cost (BPF_PROG_TEST_RUN), 3+4 programming time and
//! agent memory, 2 end to end against kube-proxy's iptables and nftables layouts. A section
//! that fails is recorded as a note and the others still run. Writes
//! `<out>/<timestamp>.json`, `.md` and the PNG plots, and prints a summary.
use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::Parser;
use svc_bench::{
    e2e::{self, E2eOpts},
    prog::{self, ProgOpts},
    programming::{self, ProgrammingOpts},
    report,
    results::{Machine, RESULTS_VERSION, Results},
};

/// Benchmarks of svc-ebpf next to kube-proxy's iptables and nftables modes.
///
/// Everything runs in network namespaces this program creates and removes; every load is
/// bounded in count and time. Needs root. `cargo xtask bench` builds it in release mode and
/// runs it.
#[derive(Debug, Parser)]
#[command(name = "svc-bench", version)]
struct Args {
    /// Fewer scales and shorter runs: under 5 minutes on 2 cores (end to end at 1 and 1,000
    /// Services only, one round; no nft -f of 10k Services).
    #[arg(long)]
    quick: bool,

    /// Directory for the results (JSON, markdown report, PNG plots).
    #[arg(long, value_name = "DIR", default_value = "bench/results")]
    out: PathBuf,

    /// Run only these sections (repeatable): packet, programming, e2e, socklb. Default: all.
    #[arg(long = "only", value_name = "SECTION")]
    only: Vec<String>,

    /// Measure nothing: write the report and plots again from this results file (e.g.
    /// after a change of the report), into --out, under the file's own name.
    #[arg(long, value_name = "FILE")]
    from_json: Option<PathBuf>,

    /// Also measure the per-packet section on this eBPF object, built from another
    /// revision (any build leaves it at target/*/build/svc-agent-*/out/svc-ebpf), in the
    /// same run, before this build's: its rows are `svc_xdp@baseline`, and the goals of
    /// the "vs baseline" kind compare this build with it. Its map layout must be this
    /// build's (LAYOUT_VERSION); across a layout change, run the earlier revision's own
    /// svc-bench just before this one instead.
    #[arg(long, value_name = "FILE", conflicts_with = "baseline_results")]
    baseline_object: Option<PathBuf>,

    /// The baseline rows from an earlier run's results file instead (its own build's
    /// per-packet rows, e.g. bench/published/2026-12-03T04-38-58-base.json, the programs
    /// as issue 13 found them), for when the baseline object cannot be loaded by this build;
    /// the report notes both runs' floors, since the machine's speed may have drifted.
    /// Also with --from-json.
    #[arg(long, value_name = "FILE")]
    baseline_results: Option<PathBuf>,

    /// Services for the programming and memory sections. 100000 gives the 100k goals
    /// (install, RSS); the agent part takes about 1.5 minutes here, and with --quick the
    /// iptables-legacy-restore comparison is left out above 10k (it takes minutes).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    programming_services: usize,

    /// Service counts of the end-to-end section, instead of 1,1000,10000 (quick: 1,1000),
    /// e.g. `--e2e-services 1,10000` for the CPU-per-connection goals alone.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    e2e_services: Vec<usize>,

    /// Service counts of the per-packet section, instead of 10,1000,10000,100000.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    packet_services: Vec<usize>,

    /// Only these cases of the per-packet section: non_service, ipv6, established,
    /// established6, established_monitor, established_monitor_sampled, new_flow,
    /// new_flow6, new_flow_hot (the floor always runs). For
    /// profiling one path, e.g.
    /// `perf record -a -g -- svc-bench --only packet --packet-cases new_flow`.
    #[arg(long, value_name = "CASE,...", value_delimiter = ',')]
    packet_cases: Vec<String>,

    /// Rounds of the end-to-end section, instead of 3 (quick: 1).
    #[arg(long, value_name = "N")]
    e2e_rounds: Option<usize>,
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    Machine {
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_default(),
        memory_mib: meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024),
    }
}

/// `--baseline-results`: the earlier run's rows replace any baseline rows of `r`; a file
/// that cannot be used is a note, not a failure of the run.
fn add_recorded_baseline(r: &mut Results, file: &std::path::Path) {
    match prog::recorded_baseline(file, &r.packet) {
        Ok((rows, note)) => {
            r.packet
                .retain(|p| !p.program.ends_with(prog::BASELINE_SUFFIX));
            r.packet.extend(rows);
            r.notes.push(note);
        }
        Err(e) => r.notes.push(format!("--baseline-results not used: {e:#}")),
    }
}

/// `--from-json`: the report of an earlier run, written again (with `--baseline-results`'s
/// rows, if given).
fn rewrite(
    file: &std::path::Path,
    out: &std::path::Path,
    baseline_results: Option<&std::path::Path>,
) -> ExitCode {
    let read = std::fs::read_to_string(file)
        .map_err(anyhow::Error::from)
        .and_then(|t| serde_json::from_str::<Results>(&t).map_err(anyhow::Error::from));
    let mut r = match read {
        Ok(r) => r,
        Err(e) => {
            eprintln!("svc-bench: {}: {e:#}", file.display());
            return ExitCode::FAILURE;
        }
    };
    if let Some(b) = baseline_results {
        add_recorded_baseline(&mut r, b);
    }
    r.goals = report::goals(&r);
    let stamp = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    match report::write(&r, out, &stamp) {
        Ok(paths) => {
            for p in paths {
                eprintln!("wrote {}", p.display());
            }
            println!("{}", report::summary(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("svc-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    for case in &args.packet_cases {
        if !prog::CASES.contains(&case.as_str()) {
            eprintln!(
                "svc-bench: --packet-cases: unknown case {case:?} (one of {})",
                prog::CASES.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("svc-bench: needs root (network namespaces, bpffs, BPF programs)");
        return ExitCode::FAILURE;
    }
    if let Some(file) = &args.from_json {
        return rewrite(file, &args.out, args.baseline_results.as_deref());
    }
    if let Err(e) = tear_down_on_signal() {
        eprintln!(
            "svc-bench: cannot handle SIGINT/SIGTERM ({e}): stopping it by a signal would leave its lab behind"
        );
    }
    let wanted = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let log = |line: &str| eprintln!("{line}");
    let clock = Instant::now();
    let mut r = Results {
        version: RESULTS_VERSION,
        started: now_rfc3339(),
        quick: args.quick,
        machine: machine(),
        ..Default::default()
    };

    hold_if_stopping();
    if wanted("packet") {
        let mut opts = if args.quick {
            ProgOpts::quick()
        } else {
            ProgOpts::full()
        };
        if !args.packet_services.is_empty() {
            opts.scales = args.packet_services.clone();
        }
        opts.cases = args.packet_cases.clone();
        let mut objects = Vec::new();
        if let Some(path) = &args.baseline_object {
            objects.push(prog::Object::Baseline(path.clone()));
        }
        objects.push(prog::Object::ThisBuild);
        for object in objects {
            let opts = opts.clone();
            // Its own thread: the section pins the thread it runs on to one CPU.
            let result =
                std::thread::spawn(move || prog::run(&opts, &object, &|l| eprintln!("{l}")))
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the packet section panicked")));
            match result {
                Ok(costs) => r.packet.extend(costs),
                Err(e) => r.notes.push(format!("packet section failed: {e:#}")),
            }
        }
        if let Some(file) = &args.baseline_results {
            add_recorded_baseline(&mut r, file);
        }
        log(&format!(
            "[{:.0} s] packet section done",
            clock.elapsed().as_secs_f64()
        ));
    }
    hold_if_stopping();
    if wanted("programming") {
        let opts = ProgrammingOpts {
            services: args.programming_services,
            endpoints_per_service: 10,
            changes: 100,
            // iptables-legacy-restore of 100k Services (1.1 M rules) takes more than
            // 3 minutes here and no goal compares it: not in a --quick run above 10k.
            iptables: !(args.quick && args.programming_services > 10_000),
            // nft -f of 10k Services takes about a minute here: only in the full run.
            nft: !args.quick,
        };
        match programming::run(&opts, &log) {
            Ok(p) => {
                r.programming.install.extend(p.install);
                r.programming.endpoint_change = p.change;
                r.memory.extend(p.memory);
            }
            Err(e) => r.notes.push(format!("programming section failed: {e:#}")),
        }
        if args.quick {
            r.notes.push(format!(
                "--quick: nft -f of {} Services not measured (about a minute at 10k on this machine){}",
                args.programming_services,
                if opts.iptables {
                    ""
                } else {
                    "; nor iptables-legacy-restore (minutes above 10k)"
                }
            ));
        }
        log(&format!(
            "[{:.0} s] programming section done",
            clock.elapsed().as_secs_f64()
        ));
    }
    hold_if_stopping();
    if wanted("e2e") {
        let mut opts = if args.quick {
            E2eOpts::quick(&log)
        } else {
            E2eOpts::full(&log)
        };
        if !args.e2e_services.is_empty() {
            opts.scales = args.e2e_services.clone();
        }
        if let Some(rounds) = args.e2e_rounds {
            opts.rounds = rounds;
        }
        match e2e::run(&opts) {
            Ok((runs, installs)) => {
                r.e2e = runs;
                // The programming section measured 10k itself; keep the others.
                let measured: Vec<(String, usize)> = r
                    .programming
                    .install
                    .iter()
                    .map(|i| (i.layout.clone(), i.services))
                    .collect();
                r.programming.install.extend(
                    installs
                        .into_iter()
                        .filter(|i| !measured.contains(&(i.layout.clone(), i.services))),
                );
            }
            Err(e) => r.notes.push(format!("end-to-end section failed: {e:#}")),
        }
        log(&format!(
            "[{:.0} s] end-to-end section done",
            clock.elapsed().as_secs_f64()
        ));
    }

    hold_if_stopping();
    if wanted("socklb") {
        let (connections, rounds) = if args.quick { (200, 1) } else { (500, 3) };
        match svc_bench::socklb::run(connections, rounds, &log) {
            Ok(runs) => r.socket_lb = runs,
            Err(e) => r.notes.push(format!("socket LB section failed: {e:#}")),
        }
        log(&format!(
            "[{:.0} s] socket LB section done",
            clock.elapsed().as_secs_f64()
        ));
    }

    hold_if_stopping();
    r.goals = report::goals(&r);
    r.finished = now_rfc3339();
    let stamp = r
        .started
        .replace(':', "-")
        .split('.')
        .next()
        .unwrap_or("run")
        .to_string();
    match report::write(&r, &args.out, &stamp) {
        Ok(paths) => {
            for p in paths {
                log(&format!("wrote {}", p.display()));
            }
        }
        // The JSON and the report are written; only plots are missing (a font, say).
        Err(e) if e.downcast_ref::<report::PlotsNotWritten>().is_some() => {
            eprintln!("svc-bench: warning: {e:#}");
        }
        Err(e) => {
            eprintln!("svc-bench: writing the results: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}", report::summary(&r));
    println!("took {:.0} s", clock.elapsed().as_secs_f64());
    if r.notes.iter().any(|n| n.contains("failed")) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Set by the signal thread: the main thread must start nothing more (see
/// [`hold_if_stopping`]).
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called between sections and before the report: once a signal came, the main thread waits
/// here for the signal thread to finish the teardown and end the process, so it neither
/// makes new namespaces behind the teardown nor writes a report of a stopped run.
fn hold_if_stopping() {
    while STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// On SIGINT or SIGTERM, from a thread of its own: the sections' Drop guards never run
/// when a signal ends the process, so this stops every process the bench started (agents,
/// nginx, loaders, clients: all its descendants) and removes what it made, all named with
/// its pid (`svl-<pid>-*` labs: namespaces, cgroups, bpffs dirs; `svb-<pid>-*`: scratch
/// namespaces, bpffs dirs, temp dirs), then exits with 128 + the signal.
fn tear_down_on_signal() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signal-teardown".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
                eprintln!("svc-bench: signal {sig}: stopping child processes, removing the lab");
                let pid = std::process::id();
                kill_descendants(pid);
                svc_lab::Lab::cleanup_owned_by(pid);
                svc_bench::scratch::cleanup_owned_by(pid);
                remove_owned_paths(pid);
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// SIGKILL to every descendant of `pid` (from /proc: parent of each process).
fn kill_descendants(pid: u32) {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // /proc/<pid>/stat: "pid (comm) state ppid ...", comm may hold spaces.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((child, ppid));
        }
    }
    let mut doomed = vec![pid];
    let mut i = 0;
    while i < doomed.len() {
        let p = doomed[i];
        doomed.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    for child in doomed.into_iter().skip(1) {
        // SAFETY: kill(2) with a pid and a signal number; a pid gone meanwhile is ESRCH.
        unsafe { libc::kill(child as i32, libc::SIGKILL) };
    }
    // Give the kernel a moment to reap them before their namespaces go.
    std::thread::sleep(std::time::Duration::from_millis(200));
}

/// The bench's own bpffs dirs and temp dirs (`svb-<pid>-*`, `svl-<pid>-*`): pinned maps and
/// links go with their pins.
fn remove_owned_paths(pid: u32) {
    let prefixes = [format!("svb-{pid}-"), format!("svl-{pid}-")];
    for dir in [PathBuf::from("/sys/fs/bpf"), std::env::temp_dir()] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| name.starts_with(p.as_str()))
                && let Err(err) = std::fs::remove_dir_all(e.path())
            {
                eprintln!("svc-bench: removing {}: {err}", e.path().display());
            }
        }
    }
}
