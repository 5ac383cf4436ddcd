//! svcctl: reads the maps svc-agent pinned and shows what the datapath sees. It needs no
//! running agent, only the pins (and root / CAP_BPF). It writes one map, and only under
//! `svcctl monitor`: SVC_MONITOR, the switch that has the programs report events.
//!
//! Adding a subcommand: a variant of [`Command`] with its own `Args` struct, and one arm
//! in [`run`] calling its handler; open the maps with [`open_maps`] (the errors that say
//! what is wrong with the pins) and print documents with [`print_document`].
use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use svc_agent::dataplane::{
    DEFAULT_BPFFS_DIR, Maps,
    report::{self, Task},
};
use svc_agent::inspect::{self, Parts, Width};

const EXAMPLES: &str = "\
Examples:
  svcctl dump                     services with their backends, then the conntrack table
  svcctl dump -o wide             the same with ids, raw flags, scopes, timestamps, NAT addresses
  svcctl dump -n shop             only the Services of namespace shop (and their flows)
  svcctl dump -A                  every namespace (as kubectl -A; also what no -n shows)
  svcctl dump -n default echo     only Service default/echo
  svcctl dump services            Services and their backends, the Services not served, and
                                  the service CIDRs (what addresses no Service has get)
  svcctl dump backends -n default echo   the backends of default/echo, with their live flows
  svcctl dump conntrack echo      the flows of the Services named echo
  svcctl dump affinity            session affinity: client -> backend per service
  svcctl dump stats               packets per verdict, summed over CPUs
  svcctl stats                    totals and per-second rates (two readings 1 s apart)
  svcctl stats --watch --interval 2    refresh every 2 s until Ctrl-C
  svcctl stats -n shop            per-Service counters of namespace shop only (and the verdicts)
  svcctl stats -n default echo -o json | jq '.services[] | {vip, packets, new_flows, drops}'
  svcctl dump --json | jq '.services[] | select(.service.name == \"echo\") | .vip'
  svcctl dump --json | jq -r '.unserved[] | [.namespace, .name, .reason] | @tsv'
  svcctl dump --json | jq '.service_cidrs'   {cidrs, cluster_ips, other_proxy_cluster_ips}
  svcctl dump --json | jq '.services[] | {vip, port, backends: [.backends[].addr]}'
  svcctl dump --json | jq '.conntrack[] | select(.kind == \"service\") | .translated'
  svcctl dump conntrack --show-expired   also the flows that expired (flag `expired`)
  svcctl dump --json | jq '.services[] | select(.flags | index(\"policy-local\")) | [.vip, .local_backends[].addr]'
  svcctl dump backends -o json | jq -r '.backends[] | select(.state == \"terminating\") | \"\\(.addr):\\(.port) \\(.flows)\"'
  svcctl dump conntrack -o json | jq '.conntrack[] | select(.service.name == \"echo\") | .translated'
  svcctl stats -o json | jq '.stats[] | select(.per_second > 0)'
  svcctl trace --from 10.244.1.20 --to 10.96.0.10:80      what a pod's new TCP flow gets
  svcctl trace --from 192.0.2.100:5555 --to 192.0.2.1:30080 --proto udp   a NodePort from outside
  svcctl trace --from 10.244.1.20 --to 10.96.0.10:80 -o json | jq .backend
  svcctl trace --from 10.244.1.20 --to 10.96.0.99:80     an unallocated address: dropped?
  svcctl trace --from '[fd00:10:244:1::20]' --to '[fd00:10:96::10]:80'   an IPv6 ClusterIP
  svcctl monitor                  every drop, reject and translation, live, until Ctrl-C
  svcctl monitor --verdict drop   only drops (also: reject, translate, or labels such as
                                  drop_no_local_backend, dnat_new; comma-separated or repeated)
  svcctl monitor -n shop web      only Service shop/web
  svcctl monitor --sample 100     translations 1 in 100 (drops and rejects always)
  svcctl monitor --from 10.244.1.0/24 --to 10.96.0.10    by source, and by destination
                                  (as the packet arrived or as it left: a backend matches)
  svcctl monitor -o json --count 10 | jq -c '{verdict, service, before, after}'
  svcctl monitor --duration 30 > events.txt   stop by itself after 30 s
  svcctl lb                       LoadBalancer pools, assignments, who answers ARP (asks the agent)
  svcctl lb --agent 127.0.0.1:10249 -o json | jq '.pools[] | {name, used}'
  svcctl dump services -o yaml
  svcctl --bpffs /sys/fs/bpf/svc-test dump
  SVC_BPFFS=/sys/fs/bpf/svc-test svcctl dump stats -o json

Expired conntrack and affinity entries (idle past their timeout; the LRU maps keep them
until reused) are left out unless --show-expired; the headers (JSON: expired_hidden) count
them.

svcctl only reads (svcctl monitor also switches the programs' events on and off): it takes
no lock and works while svc-agent runs (or after it stopped); `svcctl lb` is the one
command that asks the running agent (its metrics address).
It needs root (uid 0: the pins are root's); `svcctl trace` also CAP_BPF, CAP_NET_ADMIN and
CAP_PERFMON (it loads a copy of the programs). Run it in the host's mount namespace: under
`ip netns exec`, which mounts a fresh /sys, /sys/fs/bpf is empty (or pass --bpffs with a
path on the host's bpffs).

Exit status: 0 on success, 1 on an error (nothing pinned and why, incompatible pins, a
missing privilege, ...), 2 on a usage error. The JSON and YAML documents are documented in
svc_agent::inspect::schema (svc-agent/src/inspect/schema.rs).";

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
    /// Services that get no datapath entries and why, the service CIDRs (addresses inside
    /// that no Service has are dropped) and the number of allocated ClusterIPs (their
    /// ports no Service has are rejected), the problems of the agent's input, then the
    /// conntrack table; with -o json or -o yaml, the whole snapshot (services, unserved,
    /// service_cidrs, problems, backends, conntrack, affinity, stats, inconsistencies) as
    /// one document. With a section: that part only (as a document
    /// `{"version": N, "<section>": [...]}` with -o json / yaml).
    ///
    /// A Service named like a section is selected after the section: `svcctl dump
    /// services stats`.
    Dump(Dump),
    /// LoadBalancer address pools, assignments and L2 announcements, as the agent sees them.
    ///
    /// Asks the running agent (its /loadbalancers endpoint, on --metrics-bind-address):
    /// each pool with its size per family and how many of its addresses Services hold;
    /// each LoadBalancer Service the pools serve, its addresses, their pool and whether
    /// they are in its status yet; the problems (full pools, refused requests, overlaps);
    /// and, with --l2-announcements, which node answers ARP for each Service's addresses.
    /// Needs no privilege.
    Lb(LbArgs),
    /// Verdict counters and per-Service counters, as totals and per-second rates.
    ///
    /// Reads the counters, waits --interval, reads them again and prints the totals and
    /// (second - first) / interval: first per verdict (why the programs returned what
    /// they did; tables list the verdicts that counted a packet, --all or -o wide every
    /// verdict; JSON and YAML always list every verdict), then per Service frontend
    /// (SVC_SVC_STATS): packets and bytes translated to a backend, new flows, replies
    /// translated back, and new flows dropped or rejected by reason. -n NAMESPACE, -A and
    /// SERVICE select the Services of the second table (the verdict counters are not per
    /// Service). Each packet is counted once, also on the external interface where XDP
    /// and then TC see it; bytes are whole frames, Ethernet header included.
    Stats(Stats),
    /// Where would this packet go, and why? Runs the loaded programs on one crafted packet.
    ///
    /// The real program code runs through BPF_PROG_TEST_RUN on a second instance of the
    /// programs, loaded with the running agent's configuration (SVC_CONFIG) over a copy of
    /// the live maps: the live conntrack, affinity and counters stay exactly as they were.
    /// Prints the program(s) the packet meets (a pod's packet: TC ingress on its interface;
    /// any other source: XDP on the external interface, then TC), the verdict, the chosen
    /// backend and the set a new flow can get, the translated source and destination (or
    /// the RST / ICMP answer), and the rule that decided. A TCP packet of a flow conntrack
    /// knows is traced as its next packet (ACK); else as a SYN.
    Trace(Trace),
    /// A live stream of what the datapath decides: every drop and reject with its reason,
    /// and translations (sampled with --sample), each with the Service, the packet as it
    /// arrived and as it left, the backend and the node.
    ///
    /// Switches the programs' reporting on (SVC_MONITOR) for as long as it runs, and off
    /// when it stops (Ctrl-C, --count, --duration); a killed svcctl monitor stops the
    /// programs reporting within 5 s by itself. While nobody monitors, the programs pay one
    /// array lookup per packet. One svcctl monitor per node at a time: a second one is
    /// refused (the events come through one ring buffer). Pass verdicts (packets left as
    /// they are) are never reported; fragments after the first, translated ICMP errors and
    /// the socket programs' calls are not reported yet. When svcctl falls behind by more
    /// than the ring buffer holds (about 9,000 events), the programs drop events (never
    /// packets).
    ///
    /// Lines: `TIME NODE WHAT DETAIL SERVICE PROTO SRC -> DST [=> [SRC' ->] DST']`, the
    /// time in UTC. -o json: one object per line (time, time_ns, node, kind, verdict,
    /// service {namespace, name, port}, rev_nat_id, protocol, family, hook, ifindex,
    /// before {src, dst}, after {src, dst}, backend {id, addr}).
    #[command(
        override_usage = "svcctl monitor [-n NAMESPACE | -A] [SERVICE] [--verdict V,...] [--from CIDR] [--to CIDR] [--sample N] [--count N] [--duration SECONDS] [-o table|json]"
    )]
    Monitor(Monitor),
}

#[derive(Debug, Args)]
struct Monitor {
    /// Only events of Services of this namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,

    /// Every namespace (what no -n shows anyway), as kubectl's -A.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,

    /// Only events of Services with this name (in every namespace unless -n is given).
    #[arg(value_name = "SERVICE")]
    service: Option<String>,

    /// Only these verdicts: `drop`, `reject`, `translate`, or verdict labels (`svcctl
    /// stats --all` lists them), comma-separated or repeated. Default: all three kinds.
    #[arg(long, value_name = "VERDICT,...")]
    verdict: Vec<String>,

    /// Only packets from this address or CIDR (as they arrived); repeatable.
    #[arg(long, value_name = "CIDR")]
    from: Vec<svc_agent::monitor::Cidr>,

    /// Only packets to this address or CIDR, as they arrived or as they left (a Service
    /// address or a backend); repeatable.
    #[arg(long, value_name = "CIDR")]
    to: Vec<svc_agent::monitor::Cidr>,

    /// Report translations 1 in N, at random per packet (drops and rejects always). Every
    /// packet of every flow is a translation: on a busy node, sample.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,

    /// Stop after N events (those the filters let through).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    duration: Option<Duration>,

    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        value_name = "FORMAT",
        default_value_t
    )]
    output: MonitorFormat,
}

/// svcctl monitor's -o.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum MonitorFormat {
    /// One line per event.
    #[default]
    Table,
    /// One JSON object per event and line.
    Json,
}

#[derive(Debug, Args)]
struct Trace {
    /// The packet's source: ADDRESS or ADDRESS:PORT (default port 40000); IPv6 as IPV6 or
    /// [IPV6]:PORT (an IPv6 trace does not say why a backend was chosen or why a flow was
    /// masqueraded, as an IPv4 one does; it enters through the external interface unless
    /// --via pod). A pod address
    /// (inside the agent's pod CIDRs, when it tells pods by address) enters through a pod
    /// interface; another address through the external one (with --detect-local-mode
    /// InterfaceNamePrefix or BridgeInterface, pass --via pod for a pod). The node's own addresses are refused: node processes go
    /// through the cgroup socket hooks, which BPF_PROG_TEST_RUN cannot run.
    #[arg(long, value_name = "SRC[:PORT]", value_parser = svc_agent::trace::parse_source)]
    from: (std::net::IpAddr, Option<u16>),

    /// The destination: ADDRESS:PORT or [IPV6]:PORT (a ClusterIP, NodePort, externalIP,
    /// LoadBalancer IP, or anything else), of the source's family.
    #[arg(long, value_name = "DST:PORT", value_parser = svc_agent::trace::parse_destination)]
    to: std::net::SocketAddr,

    /// The protocol.
    #[arg(long, value_enum, default_value_t = TraceProto::Tcp)]
    proto: TraceProto,

    /// The interface the packet enters through, instead of deciding from --from: `pod`
    /// (TC ingress) or `external` (XDP, then TC).
    #[arg(long, value_enum, value_name = "ENTRY")]
    via: Option<TraceVia>,

    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TraceProto {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TraceVia {
    Pod,
    External,
}

/// How to print: kubectl's -o.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Readable tables.
    #[default]
    Table,
    /// Tables with more columns (ids, raw flags, scopes, timestamps in ns, NAT addresses).
    Wide,
    /// One JSON document (schema: svc_agent::inspect::schema).
    Json,
    /// The same document as YAML.
    Yaml,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        value_name = "FORMAT",
        default_value_t,
        global = true
    )]
    output: Format,

    /// Same as -o json (kept for scripts).
    #[arg(long, hide = true, global = true, conflicts_with = "output")]
    json: bool,
}

impl OutputArgs {
    fn format(&self) -> Format {
        if self.json { Format::Json } else { self.output }
    }
}

#[derive(Debug, Args)]
#[command(
    subcommand_value_name = "SECTION",
    subcommand_help_heading = "Sections",
    disable_help_subcommand = true,
    override_usage = "svcctl dump [SECTION] [-n NAMESPACE | -A] [SERVICE] [--show-expired] [-o table|wide|json|yaml]"
)]
struct Dump {
    #[command(flatten)]
    output: OutputArgs,

    /// Only Services of this namespace (and their backends and flows). Ignored by the
    /// stats section.
    #[arg(short = 'n', long, value_name = "NAMESPACE", global = true)]
    namespace: Option<String>,

    /// Services of every namespace, as kubectl's -A: what svcctl shows without -n anyway
    /// (so kubectl habits work).
    #[arg(short = 'A', long, global = true, conflicts_with = "namespace")]
    all_namespaces: bool,

    /// Only Services with this name (in every namespace unless -n is given). Ignored by the
    /// stats section.
    #[arg(value_name = "SERVICE")]
    service: Option<String>,

    /// Also list the conntrack and affinity entries that expired (idle past their timeout:
    /// the datapath ignores them, but the LRU maps keep them until they are reused). By
    /// default they are left out and the section headers (JSON: `expired_hidden`) say how
    /// many.
    #[arg(long, visible_alias = "all", global = true)]
    show_expired: bool,

    #[command(subcommand)]
    section: Option<Section>,
}

/// One part of the dump. -n NAMESPACE and SERVICE select Services in each (not in stats).
#[derive(Debug, Subcommand)]
enum Section {
    /// Services (frontends) of both families (IPv6 ones as `[fd00::10]:80`) with their
    /// backends, the Services that get no datapath entries and why, backends kept only for
    /// established flows, and inconsistencies.
    Services(SectionArgs),
    /// Every SVC4_BACKENDS and SVC6_BACKENDS entry: id, address, protocol, state (active / terminating), the
    /// live flows it serves and the Services (frontends) whose slots hold it. With a
    /// filter: the backends the matching Services and their flows use.
    Backends(SectionArgs),
    /// The conntrack tables (SVC4_CT, then SVC6_CT): original and translated tuples, the Service, age, idle time,
    /// flags. With a filter: the flows of the matching Services.
    Conntrack(SectionArgs),
    /// Session affinity entries (sessionAffinity: ClientIP): client and service -> the
    /// backend new flows reuse, with idle time and timeout.
    Affinity(SectionArgs),
    /// Packets per verdict (why the programs returned what they did), summed over CPUs;
    /// each packet once. Counters are per verdict, not per Service: -n and SERVICE are
    /// ignored. For rates and the per-Service counters, see `svcctl stats`.
    Stats(SectionArgs),
}

#[derive(Debug, Args)]
struct LbArgs {
    /// The agent's metrics address (its --metrics-bind-address): HOST:PORT or
    /// http://HOST:PORT.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:10249")]
    agent: String,

    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct SectionArgs {
    /// Only Services with this name (in every namespace unless -n is given).
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
}

#[derive(Debug, Args)]
struct Stats {
    /// Seconds between the two readings a rate is computed from, and between refreshes
    /// under --watch (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    interval: Duration,

    /// Refresh every --interval, like watch(1), until Ctrl-C or --count refreshes. The
    /// screen is cleared only when stdout is a terminal; when it is not and --count is not
    /// given, svcctl stops after one refresh.
    #[arg(short = 'w', long)]
    watch: bool,

    /// Stop after N refreshes (implies --watch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// List every verdict in the table, also those at 0 (as -o wide).
    #[arg(long)]
    all: bool,

    /// Only the Services of this namespace in the per-Service table.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,

    /// Services of every namespace, as kubectl's -A: what svcctl shows without -n anyway
    /// (so kubectl habits work).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,

    /// Only the Services with this name (in every namespace unless -n is given) in the
    /// per-Service table.
    #[arg(value_name = "SERVICE")]
    service: Option<String>,

    #[command(flatten)]
    output: OutputArgs,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "the interval must be more than 0 and at most 86400 seconds, not {s}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
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
            // Each cause once, no backtrace (whatever RUST_BACKTRACE says), and the
            // privilege this process lacks when that is why.
            eprintln!("svcctl: {}", report::chain_text(e.as_ref()));
            let task = match cli.command {
                Command::Trace(_) => Task::Trace,
                Command::Dump(_) | Command::Stats(_) | Command::Lb(_) | Command::Monitor(_) => {
                    Task::Read
                }
            };
            if let Some(hint) = report::privilege_hint(task, e.chain()) {
                eprintln!("svcctl: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Dump(dump) => run_dump(&cli.bpffs, dump),
        Command::Stats(stats) => run_stats(&cli.bpffs, stats),
        Command::Trace(t) => run_trace(&cli.bpffs, t),
        Command::Lb(lb) => run_lb(lb),
        Command::Monitor(m) => run_monitor(&cli.bpffs, m),
    }
}

/// Set by SIGINT / SIGTERM: svcctl monitor then stops and switches the events off.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The node name events carry: the agent's --node-name (recorded in SVC_MONITOR), else
/// this host's name.
fn monitor_node_name(recorded: &str) -> String {
    if !recorded.is_empty() {
        return recorded.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn run_monitor(bpffs: &Path, args: &Monitor) -> anyhow::Result<()> {
    use svc_agent::{dataplane::monotonic_ns, monitor};
    use svc_common::MONITOR_LEASE_NS;
    let json = args.output == MonitorFormat::Json;
    let filter = monitor::Filter {
        namespace: args.namespace.clone().filter(|_| !args.all_namespaces),
        service: args.service.clone(),
        verdicts: monitor::parse_verdicts(&args.verdict).map_err(anyhow::Error::msg)?,
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let mut maps = open_maps(bpffs)?;
    let me = std::process::id();
    let control = maps.monitor_control()?;
    if control.owner_pid != 0
        && control.owner_pid != me
        && control.until_ns > monotonic_ns()
        && Path::new(&format!("/proc/{}", control.owner_pid)).exists()
    {
        anyhow::bail!(
            "another svcctl monitor (pid {}) reads this node's events: one at a time (the events come through one ring buffer, which two readers would split)",
            control.owner_pid
        );
    }
    let node = monitor_node_name(control.node_name());
    let mut names = monitor::Names::default();
    names.read(&maps).context("reading the Service names")?;
    // Events a killed monitor left in the ring are old: not shown.
    for _ in 0..1_000_000 {
        if maps.events.next().is_none() {
            break;
        }
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
    }
    let mask = monitor::verdict_mask(&filter.verdicts);
    let switch_on = |maps: &mut Maps| -> anyhow::Result<()> {
        let mut c = maps.monitor_control()?;
        c.until_ns = monotonic_ns() + MONITOR_LEASE_NS;
        c.sample = args.sample;
        c.verdict_mask = mask;
        c.owner_pid = me;
        maps.set_monitor_control(&c)?;
        Ok(())
    };
    switch_on(&mut maps)?;
    let sampled = if args.sample > 1 {
        format!(", translations 1 in {}", args.sample)
    } else {
        String::new()
    };
    eprintln!("svcctl monitor: reporting on {node}{sampled} (Ctrl-C to stop)");
    let result = monitor_loop(
        &mut maps, args, &filter, &mut names, &node, json, &switch_on,
    );
    // Off, whatever ended the loop (unless another monitor took over meanwhile).
    let off = maps.monitor_control().and_then(|mut c| {
        if c.owner_pid == me {
            c.until_ns = 0;
            c.owner_pid = 0;
            maps.set_monitor_control(&c)?;
        }
        Ok(())
    });
    result?;
    off.context("switching the events off")?;
    Ok(())
}

fn monitor_loop(
    maps: &mut Maps,
    args: &Monitor,
    filter: &svc_agent::monitor::Filter,
    names: &mut svc_agent::monitor::Names,
    node: &str,
    json: bool,
    switch_on: &dyn Fn(&mut Maps) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    use svc_agent::monitor;
    let offset = monitor::clock_offset_ns();
    let start = Instant::now();
    let mut refreshed = Instant::now();
    let mut shown = 0u64;
    let mut out = io::stdout().lock();
    loop {
        if STOP.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let mut wait = Duration::from_millis(250);
        if let Some(d) = args.duration {
            let left = d.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            wait = wait.min(left);
        }
        if refreshed.elapsed() >= Duration::from_secs(1) {
            switch_on(maps)?;
            refreshed = Instant::now();
        }
        let mut fd = libc::pollfd {
            fd: maps.events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own. EINTR (a signal) is checked at the top of the loop.
        unsafe { libc::poll(&mut fd, 1, wait.as_millis() as libc::c_int) };
        // Bounded: at most what the ring holds arrives between two polls, but a busy node
        // refills it; come back to the checks above every 4,096 events.
        for _ in 0..4096 {
            let Some(item) = maps.events.next() else {
                break;
            };
            let Some(ev) = monitor::decode(&item) else {
                continue;
            };
            drop(item);
            let ids = monitor::lookup_ids(maps, &ev);
            names
                .refresh_for(maps, ids)
                .context("reading the Service names")?;
            let Some(record) = monitor::resolve(&ev, ids, names, node, offset) else {
                continue;
            };
            if !filter.matches(&record) {
                continue;
            }
            if json {
                writeln!(out, "{}", serde_json::to_string(&record)?)?;
            } else {
                writeln!(out, "{}", monitor::render_line(&record))?;
            }
            out.flush()?;
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                return Ok(());
            }
        }
    }
}

fn run_lb(args: &LbArgs) -> anyhow::Result<()> {
    use std::io::Read as _;
    use std::net::{TcpStream, ToSocketAddrs as _};
    let hostport = args
        .agent
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| anyhow::anyhow!("--agent {}: not HOST:PORT", args.agent))?;
    let context = || {
        format!(
            "cannot reach the agent at {addr} (svc-agent's --metrics-bind-address; pass it with --agent)"
        )
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(context)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /loadbalancers HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .with_context(context)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).with_context(context)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("the agent at {addr} sent no HTTP answer"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "the agent at {addr} answered {} (an agent older than LoadBalancer pools?)",
        head.lines().next().unwrap_or_default()
    );
    let report: svc_agent::lbipam::plan::LbReport = serde_json::from_str(body)
        .with_context(|| format!("the agent at {addr} sent a report svcctl cannot read"))?;
    match args.output.format() {
        Format::Table | Format::Wide => print_text(&svc_agent::inspect::render_lb(&report)),
        format => print_document(&report, format),
    }
}

fn run_trace(bpffs: &Path, t: &Trace) -> anyhow::Result<()> {
    use svc_agent::trace;
    let maps = open_maps(bpffs)?;
    use std::net::{IpAddr, SocketAddr};
    let protocol = match t.proto {
        TraceProto::Tcp => svc_agent::model::Protocol::Tcp,
        TraceProto::Udp => svc_agent::model::Protocol::Udp,
        TraceProto::Sctp => svc_agent::model::Protocol::Sctp,
    };
    let entry = t.via.map(|v| match v {
        TraceVia::Pod => trace::Entry::Pod,
        TraceVia::External => trace::Entry::External,
    });
    let result = match (t.from.0, t.to) {
        (IpAddr::V4(src), SocketAddr::V4(dst)) => trace::trace(
            bpffs,
            &maps,
            &trace::TraceRequest {
                src,
                src_port: t.from.1,
                dst,
                protocol,
                entry,
            },
        )?,
        (IpAddr::V6(src), SocketAddr::V6(dst)) => trace::trace6(
            bpffs,
            &maps,
            &trace::Trace6Request {
                src,
                src_port: t.from.1,
                dst,
                protocol,
                entry,
            },
        )?,
        (src, dst) => {
            return Err(trace::TraceError::MixedFamilies {
                src: src.to_string(),
                dst: dst.to_string(),
            }
            .into());
        }
    };
    match t.output.format() {
        Format::Table | Format::Wide => print_text(&trace::render(&result)),
        format => print_document(&result, format),
    }
}

/// Every subcommand opens the pins here: `DataplaneError` already says what is wrong
/// (nothing pinned, pins of an incompatible version) and what to do about it.
fn open_maps(bpffs: &Path) -> anyhow::Result<Maps> {
    Ok(Maps::open_pinned(bpffs)?)
}

/// Writes `text` to stdout, with a final newline.
fn print_text(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// A document as pretty JSON or YAML (`format` is json or yaml).
fn document_text<T: Serialize>(doc: &T, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Yaml => serde_yaml::to_string(doc)?,
        _ => serde_json::to_string_pretty(doc)?,
    })
}

fn print_document<T: Serialize>(doc: &T, format: Format) -> anyhow::Result<()> {
    print_text(&document_text(doc, format)?)
}

fn run_dump(bpffs: &Path, dump: &Dump) -> anyhow::Result<()> {
    let section_service = match &dump.section {
        Some(
            Section::Services(a)
            | Section::Backends(a)
            | Section::Conntrack(a)
            | Section::Affinity(a)
            | Section::Stats(a),
        ) => a.service.clone(),
        None => None,
    };
    if section_service.is_some() && dump.service.is_some() {
        anyhow::bail!("give SERVICE once, after the section (`svcctl dump SECTION SERVICE`)");
    }
    let filter = inspect::Filter {
        // -A is every namespace, as no -n (clap refuses both).
        namespace: dump.namespace.clone().filter(|_| !dump.all_namespaces),
        name: section_service.or_else(|| dump.service.clone()),
        show_expired: dump.show_expired,
    };
    let format = dump.output.format();
    let width = if format == Format::Wide {
        Width::Wide
    } else {
        Width::Normal
    };
    let structured = matches!(format, Format::Json | Format::Yaml);
    let maps = open_maps(bpffs)?;

    if let Some(Section::Stats(_)) = dump.section {
        let stats = inspect::verdict_totals(&maps).context("reading the verdict counters")?;
        return if structured {
            print_document(
                &inspect::StatsDocument {
                    version: inspect::SCHEMA_VERSION,
                    stats: &stats,
                },
                format,
            )
        } else {
            print_text(&inspect::render_stats(&stats))
        };
    }
    if let Some(Section::Affinity(_)) = dump.section {
        let snap = inspect::affinity(&maps, &filter).context("reading the session affinity map")?;
        return if structured {
            print_document(&snap.affinity_document(), format)
        } else {
            print_text(&inspect::render_affinity_as(&snap, width))
        };
    }

    // What each section reads besides the small maps.
    let parts = match dump.section {
        None => Parts::ALL,
        // The backends' live flows, and under a filter the backends the flows still use.
        Some(Section::Backends(_) | Section::Conntrack(_)) => Parts {
            conntrack: true,
            ..Parts::NONE
        },
        _ => Parts::NONE,
    };
    let mut snap = inspect::snapshot_of(&maps, parts).context("reading the maps")?;
    filter.apply(&mut snap);
    match (&dump.section, structured) {
        (None, true) => print_document(&snap, format),
        (None, false) => print_text(&format!(
            "{}\n{}",
            inspect::render_services_as(&snap, width),
            inspect::render_conntrack_as(&snap, width)
        )),
        (Some(Section::Services(_)), true) => print_document(&snap.services_document(), format),
        (Some(Section::Services(_)), false) => {
            print_text(&inspect::render_services_as(&snap, width))
        }
        (Some(Section::Backends(_)), true) => print_document(&snap.backends_document(), format),
        (Some(Section::Backends(_)), false) => print_text(&inspect::render_backends(&snap, width)),
        (Some(Section::Conntrack(_)), true) => print_document(&snap.conntrack_document(), format),
        (Some(Section::Conntrack(_)), false) => {
            print_text(&inspect::render_conntrack_as(&snap, width))
        }
        (Some(Section::Affinity(_) | Section::Stats(_)), _) => unreachable!("handled above"),
    }
}

/// ANSI: cursor home, clear the screen (what watch(1) does between refreshes).
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

fn run_stats(bpffs: &Path, args: &Stats) -> anyhow::Result<()> {
    let format = args.output.format();
    let maps = open_maps(bpffs)?;
    let tty = io::stdout().is_terminal();
    let watch = args.watch || args.count.is_some();
    // Every loop is bounded unless a person is watching it on a terminal.
    let refreshes = match args.count {
        Some(n) => n,
        None if watch && tty => u64::MAX,
        None => 1,
    };
    let filter = inspect::Filter {
        namespace: args.namespace.clone(),
        name: args.service.clone(),
        show_expired: false,
    };
    let read = || {
        let verdicts = inspect::verdict_totals(&maps).context("reading the verdict counters")?;
        let services = maps
            .service_stats_totals()
            .context("reading the per-Service counters")?;
        anyhow::Ok((verdicts, services))
    };
    let mut before = read()?;
    let mut before_at = Instant::now();
    for refresh in 0..refreshes {
        std::thread::sleep((before_at + args.interval).saturating_duration_since(Instant::now()));
        let after = read()?;
        let after_at = Instant::now();
        let interval_s = after_at.duration_since(before_at).as_secs_f64();
        let mut doc = inspect::verdict_rates(&before.0, &after.0, interval_s);
        // The frontends and their names as they are now (small maps; no conntrack walk).
        let mut snap = inspect::snapshot_of(&maps, Parts::NONE).context("reading the maps")?;
        filter.apply(&mut snap);
        doc.services = inspect::service_rates(&snap.services, &before.1, &after.1, interval_s);
        let text = match format {
            Format::Json if watch => serde_json::to_string(&doc)? + "\n",
            Format::Yaml if watch => format!("---\n{}", serde_yaml::to_string(&doc)?),
            Format::Json | Format::Yaml => document_text(&doc, format)?,
            Format::Table | Format::Wide => {
                let table = inspect::render_rates(&doc, args.all || format == Format::Wide)
                    + "\n"
                    + &inspect::render_service_rates(&doc, format == Format::Wide);
                if watch && tty {
                    format!(
                        "{CLEAR_SCREEN}Every {}s: svcctl stats (Ctrl-C to stop)\n\n{table}",
                        args.interval.as_secs_f64()
                    )
                } else if watch && refresh > 0 {
                    format!("\n{table}")
                } else {
                    table
                }
            }
        };
        print_text(&text)?;
        before = after;
        before_at = after_at;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(args: &[&str]) -> Result<Dump, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        match cli.command {
            Command::Dump(d) => Ok(d),
            other => panic!("not dump: {other:?}"),
        }
    }

    /// svcctl monitor's flags: filters, sampling, stop conditions, JSON lines.
    #[test]
    fn monitor_flags() {
        let cli = Cli::try_parse_from([
            "svcctl",
            "monitor",
            "-n",
            "shop",
            "web",
            "--verdict",
            "drop,dnat_new",
            "--verdict",
            "reject",
            "--from",
            "10.244.0.0/16",
            "--to",
            "10.96.0.10",
            "--sample",
            "100",
            "--count",
            "5",
            "--duration",
            "1.5",
            "-o",
            "json",
        ])
        .unwrap();
        let Command::Monitor(m) = cli.command else {
            panic!("not monitor");
        };
        assert_eq!(m.namespace.as_deref(), Some("shop"));
        assert_eq!(m.service.as_deref(), Some("web"));
        assert_eq!(m.verdict, ["drop,dnat_new", "reject"]);
        assert_eq!(m.from[0].len, 16);
        assert_eq!(m.to[0].len, 32);
        assert_eq!((m.sample, m.count), (100, Some(5)));
        assert_eq!(m.duration, Some(Duration::from_millis(1500)));
        assert_eq!(m.output, MonitorFormat::Json);
        for bad in [
            &["svcctl", "monitor", "--sample", "0"][..],
            &["svcctl", "monitor", "-o", "yaml"],
            &["svcctl", "monitor", "--from", "nowhere"],
            &["svcctl", "monitor", "-A", "-n", "shop"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    /// kubectl's -A / --all-namespaces: every namespace, before or after the section;
    /// refused with -n; not the --all of --show-expired.
    #[test]
    fn dump_takes_all_namespaces_as_kubectl() {
        for args in [
            &["svcctl", "dump", "-A"][..],
            &["svcctl", "dump", "--all-namespaces"],
            &["svcctl", "dump", "services", "-A"],
            &["svcctl", "dump", "-A", "conntrack", "echo"],
        ] {
            let d = dump(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(d.all_namespaces, "{args:?}");
            assert!(d.namespace.is_none() && !d.show_expired, "{args:?}");
        }
        let e = dump(&["svcctl", "dump", "-A", "-n", "shop"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let d = dump(&["svcctl", "dump", "--all"]).unwrap();
        assert!(d.show_expired && !d.all_namespaces);
        let d = dump(&["svcctl", "dump", "-n", "shop"]).unwrap();
        assert_eq!(d.namespace.as_deref(), Some("shop"));
        assert!(!d.all_namespaces);
    }

    fn stats(args: &[&str]) -> Result<Stats, clap::Error> {
        match Cli::try_parse_from(args)?.command {
            Command::Stats(s) => Ok(s),
            other => panic!("not stats: {other:?}"),
        }
    }

    /// `svcctl stats` selects the per-Service rows as dump selects Services: -n, -A (not
    /// with -n), a Service name; --all stays "every verdict".
    #[test]
    fn stats_selects_services_as_kubectl() {
        let s = stats(&["svcctl", "stats", "-n", "shop", "cart", "-o", "json"]).unwrap();
        assert_eq!(
            (s.namespace.as_deref(), s.service.as_deref()),
            (Some("shop"), Some("cart"))
        );
        assert_eq!(s.output.format(), Format::Json);
        let s = stats(&["svcctl", "stats", "-A", "--all", "echo"]).unwrap();
        assert!(s.all_namespaces && s.all && s.namespace.is_none());
        assert_eq!(s.service.as_deref(), Some("echo"));
        let e = stats(&["svcctl", "stats", "-A", "-n", "shop"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
