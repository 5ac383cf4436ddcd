//! svcctl: reads the maps svc-agent pinned and shows what the datapath sees. It never
//! writes a map and needs no running agent, only the pins (and root / CAP_BPF).
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use svc_agent::dataplane::{DEFAULT_BPFFS_DIR, Maps};
use svc_agent::inspect;

const EXAMPLES: &str = "\
Examples:
  svcctl dump                     services with their backends, then the conntrack table
  svcctl dump -n shop             only the Services of namespace shop (and their flows)
  svcctl dump -n default echo     only Service default/echo
  svcctl dump --json | jq '.services[] | select(.service.name == \"echo\") | .vip'
  svcctl dump --json | jq -r '.unserved[] | [.namespace, .name, .reason] | @tsv'
  svcctl dump --json | jq '.services[] | {vip, port, backends: [.backends[].addr]}'
  svcctl dump --json | jq '.conntrack[] | select(.kind == \"service\" and (.expired | not))'
  svcctl dump --json | jq '.services[] | select(.flags | index(\"policy-local\")) | [.vip, .local_backends[].addr]'
  svcctl dump stats               packets per verdict, summed over CPUs
  svcctl dump affinity            session affinity: client -> backend per service
  svcctl --bpffs /sys/fs/bpf/svc-test dump
  SVC_BPFFS=/sys/fs/bpf/svc-test svcctl dump stats --json

Exit status: 0 on success, 1 on an error (nothing pinned, incompatible pins, no
permission to open the maps, ...), 2 on a usage error. The JSON schema is documented in svc_agent::inspect.";

/// Inspect the eBPF Service dataplane (the maps svc-agent pinned).
#[derive(Debug, Parser)]
#[command(name = "svcctl", version, after_help = EXAMPLES)]
struct Cli {
    /// bpffs directory where svc-agent pinned its maps (svc-agent's --bpffs).
    #[arg(long, value_name = "DIR", env = "SVC_BPFFS", default_value = DEFAULT_BPFFS_DIR, global = true)]
    bpffs: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the map contents.
    ///
    /// Without a section: the services (with their Service name) and their backends, the
    /// Services that get no datapath entries and why, then the conntrack table; with
    /// --json, the whole snapshot (services, unserved, backends, conntrack, affinity,
    /// stats, inconsistencies) as one document.
    Dump(Dump),
}

#[derive(Debug, Args)]
struct Dump {
    /// Print one JSON document instead of tables (schema: svc_agent::inspect; stable field
    /// names, for scripts).
    #[arg(long, global = true)]
    json: bool,

    /// Only Services of this namespace (and their flows, affinity entries and backends).
    #[arg(short = 'n', long, value_name = "NAMESPACE", global = true)]
    namespace: Option<String>,

    /// Only Services with this name (in every namespace unless -n is given).
    #[arg(value_name = "SERVICE")]
    service: Option<String>,

    #[command(subcommand)]
    section: Option<Section>,
}

/// One part of the dump. More sections (services, backends, conntrack) may come here.
#[derive(Debug, Subcommand)]
enum Section {
    /// Packets per verdict (why the programs returned what they did), summed over CPUs.
    Stats,
    /// Session affinity entries (sessionAffinity: ClientIP): client and service -> the
    /// backend new flows reuse, with idle time and timeout.
    Affinity,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `svcctl dump | head` closes the pipe early: that is not an error.
            if e.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("svcctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Dump(dump) => {
            // DataplaneError already says what is wrong and what to do about it.
            let maps = Maps::open_pinned(&cli.bpffs)?;
            let out = render_dump(&maps, dump)?;
            let mut stdout = io::stdout().lock();
            stdout.write_all(out.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// `dump stats --json`: the `version` and `stats` fields of the full snapshot.
#[derive(serde::Serialize)]
struct StatsDocument {
    version: u32,
    stats: Vec<inspect::VerdictTotal>,
}

/// `dump affinity --json`: the `version`, `now_ns` and `affinity` fields of the full
/// snapshot.
#[derive(serde::Serialize)]
struct AffinityDocument {
    version: u32,
    now_ns: u64,
    affinity: Vec<inspect::AffinityEntry>,
}

fn render_dump(maps: &Maps, dump: &Dump) -> anyhow::Result<String> {
    let filter = inspect::Filter {
        namespace: dump.namespace.clone(),
        name: dump.service.clone(),
    };
    let snapshot = || -> anyhow::Result<inspect::Snapshot> {
        let mut snap = inspect::snapshot(maps).context("reading the maps")?;
        filter.apply(&mut snap);
        Ok(snap)
    };
    let mut out = match (&dump.section, dump.json) {
        (None, false) => {
            let snap = snapshot()?;
            format!(
                "{}\n{}",
                inspect::render_services(&snap),
                inspect::render_conntrack(&snap)
            )
        }
        (None, true) => {
            let snap = snapshot()?;
            serde_json::to_string_pretty(&snap)?
        }
        (Some(Section::Stats), false) => inspect::render_stats(
            &inspect::verdict_totals(maps).context("reading the verdict counters")?,
        ),
        (Some(Section::Stats), true) => {
            let stats = inspect::verdict_totals(maps).context("reading the verdict counters")?;
            serde_json::to_string_pretty(&StatsDocument {
                version: inspect::SCHEMA_VERSION,
                stats,
            })?
        }
        (Some(Section::Affinity), json) => {
            let (now_ns, affinity) =
                inspect::affinity(maps, &filter).context("reading the session affinity map")?;
            if json {
                serde_json::to_string_pretty(&AffinityDocument {
                    version: inspect::SCHEMA_VERSION,
                    now_ns,
                    affinity,
                })?
            } else {
                inspect::render_affinity(&affinity)
            }
        }
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}
