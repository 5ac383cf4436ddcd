//! Section 1: per-packet cost of the programs through BPF_PROG_TEST_RUN, next to an empty
//! XDP program (`svc_bench_pass`, which only returns XDP_PASS: the floor).
//!
//! The real object is loaded with its maps pinned in a scratch bpffs directory and filled
//! through the real reconciler with N Services of `endpoints_per_service` endpoints each,
//! N growing over the scales (10, 1k, 10k, 100k), each Service's ClusterIP allocated
//! (SVC4_CLUSTERIPS) inside the service CIDR 10.96.0.0/12 (SVC4_SVC_CIDR), as on a cluster
//! (a packet no frontend takes pays for kube-proxy nftables' rules: svc-ebpf/src/unserved.rs).
//! Every Service is dual-stack here: beside its IPv4 frontend it has an IPv6 twin,
//! `[fd00:96::<i>]:80` with endpoints `fd00:244::<k>`, in the SVC6_* maps, so the scales
//! apply to both families. The twins exist only in this section's desired state (the other
//! sections build their own, IPv4, Services). They leave the IPv4 cases' conditions as
//! they were: the SVC4_* maps hold the same entries with the same max_entries (`lb` also
//! covers the rev-NAT ids both families share; backend ids are hash keys); what they add
//! is the SVC6_* entries (the `ipv6` case now looks up in full maps) and install time
//! (logged, not measured). Their ClusterIPs are in no IPv6 unserved-address map (the agent
//! writes those for IPv4 only).
//! With `--baseline-object`, the section runs first on that object (another build's) and
//! its rows are named `svc_xdp@baseline`, so one run compares two builds. What is
//! measured, and how each run is
//! checked so that a repeat cannot take another path unnoticed:
//!
//! - **floor**: the empty program on a 64-byte TCP frame, `repeat` times per call.
//! - **non_service**: `svc_xdp` on a TCP packet to an address that is no Service, `repeat`
//!   times; every repeat must count `pass_not_service` and the frame must come out as it
//!   went in.
//! - **ipv6**: `svc_xdp` on an IPv6 TCP segment to an address that is no Service, `repeat`
//!   times: every repeat must count `pass_not_service` and leave the frame as it was; the
//!   IPv6 twin of `non_service` (IPv6 parsing, the frontend and reply lookups in the
//!   SVC6_* maps, which hold the twins).
//! - **established**: `svc_xdp` on the next packet (ACK) of a known flow. BPF_PROG_TEST_RUN
//!   runs every repeat on the same buffer, so a rewrite made by the first repeat would be
//!   what the second one sees. The flows are therefore made with a backend equal to the
//!   Service address itself (one of each sampled Service's endpoints is its own VIP:port;
//!   the flow is created by the real program, retried until it picks that endpoint): the
//!   program does all the work of an established packet (conntrack lookup, backend
//!   lookup, rewrite, checksum update) and leaves the frame byte for byte as it was. Every
//!   repeat must count `dnat_established` and the output must equal the input. The flows go
//!   to Services spread evenly over all N.
//! - **established6**: the same over IPv6, to the sampled Services' IPv6 twins (one of
//!   whose endpoints is the twin's own `[fd00:96::<i>]:80`): every repeat must count
//!   `dnat_established` and the frame must come out as it went in.
//! - **new_flow**: every packet must be a new flow, so each call runs once (repeat = 1) on
//!   a new 5-tuple, to Services spread over all N. The kernel times each call; its timer's
//!   own cost per call (measured the same way on the empty program, minus the floor) is
//!   subtracted (`harness_ns`, `net_median_ns`). Every call must count `dnat_new` and the
//!   destination that comes out must be one of that Service's endpoints. The flows'
//!   conntrack entries are removed after each run so the map stays the same size.
//! - **new_flow6**: the same over IPv6: SYNs from IPv6 clients (`fd00:c::<k>`, a new
//!   source address or port per packet) to the IPv6 twins spread over all N; every call
//!   must count `dnat_new` and reach one of the twin's IPv6 endpoints.
//! - **new_flow_hot**: as `new_flow`, but only to the Services of the established case,
//!   whose map entries stay in the CPU caches: next to `new_flow` it shows what cold service
//!   and backend entries cost as the maps grow.
//!
//! The thread is pinned to one CPU for the whole section; each case is `runs` runs (11 by
//! default) and the median of their per-packet times is reported. The datapath is loaded
//! without a pod CIDR and without a masquerade address, so nothing is masqueraded (a
//! masqueraded flow rewrites its source, which the repeat trick above cannot keep stable).
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};
use aya::programs::{TestRun, TestRunOptions};
use svc_agent::{
    addr::Family,
    dataplane::{Datapath, DatapathConfig, MapSizes, Maps},
    desired::{
        BackendAddr, CidrSource, DesiredState, Frontend, FrontendKind, FrontendState, Ipv4Cidr,
        ServiceCidrs,
    },
    model::{ObjectRef, Protocol},
    packet::{ACK, ETH_P_IPV6, Ipv6Builder, PacketBuilder, SYN, parse_summary},
    reconcile::Reconciler,
};
use svc_common::{CT_KIND_REPLY, CT_KIND_SERVICE, ClusterIpUse, CtKey, Verdict};

use crate::results::{PacketCost, median};

/// The cases of the section besides the floor, in the order they run at each scale.
pub const CASES: [&str; 9] = [
    "non_service",
    "ipv6",
    "established",
    "established6",
    "established_monitor",
    "established_monitor_sampled",
    "new_flow",
    "new_flow6",
    "new_flow_hot",
];

/// `established_monitor_sampled`'s --sample: translations reported 1 in this many.
pub const MONITOR_SAMPLE: u32 = 100;
/// Repeats per BPF_PROG_TEST_RUN call with monitoring on: fewer than SVC_EVENTS holds
/// (about 9,300 events), drained after every call, so no event is lost and every packet
/// pays for a written event, never for a full ring.
const MONITOR_REPEAT_MAX: u32 = 4096;

/// What to measure.
#[derive(Clone, Debug)]
pub struct ProgOpts {
    /// Service counts, ascending.
    pub scales: Vec<usize>,
    pub endpoints_per_service: usize,
    /// Runs per case (the median is reported).
    pub runs: usize,
    /// BPF_PROG_TEST_RUN repeat per run for the floor, non-service and established cases.
    pub repeat: u32,
    /// New flows per run.
    pub new_flows_per_run: usize,
    /// Established flows the repeats are spread over (at most one per Service).
    pub established_flows: usize,
    /// The CPU the thread is pinned to.
    pub cpu: usize,
    /// Only these cases (one of [`CASES`]; the floor always runs, the new flows' harness
    /// cost comes from it); empty: all. For profiling one path, e.g. `perf record` of the
    /// new flows alone.
    pub cases: Vec<String>,
}

/// The eBPF object a packet section measures: this build's, or another build's file
/// (`--baseline-object`), whose rows carry [`BASELINE_SUFFIX`] after the program name.
pub enum Object {
    ThisBuild,
    Baseline(PathBuf),
}

/// Appended to the program names of the baseline object's rows (`svc_xdp@baseline`), so
/// that every figure and goal about this build ignores them.
pub const BASELINE_SUFFIX: &str = "@baseline";

/// `--baseline-results FILE`: the per-packet rows of an earlier run (this build's figures of
/// that run: `svc_xdp` and the floor), renamed into baseline rows (`svc_xdp@baseline`), for
/// when the baseline build's object cannot be loaded by this build (another map layout).
/// Recorded figures are from another run, so a machine whose speed drifted between the two
/// shifts every ratio: the note this returns (for the report's notes) gives both floors.
pub fn recorded_baseline(
    file: &Path,
    this_run: &[PacketCost],
) -> anyhow::Result<(Vec<PacketCost>, String)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let earlier: crate::results::Results = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a svc-bench results file", file.display()))?;
    let floor = |rows: &[PacketCost]| {
        rows.iter()
            .find(|p| p.program == svc_common::BENCH_PASS_PROG && p.case == "floor")
            .map(|p| p.net_median_ns)
    };
    let earlier_floor = floor(&earlier.packet);
    let rows: Vec<PacketCost> = earlier
        .packet
        .into_iter()
        .filter(|p| p.program == svc_common::XDP_PROG || p.program == svc_common::BENCH_PASS_PROG)
        .map(|mut p| {
            p.program = format!("{}{BASELINE_SUFFIX}", p.program);
            p.verified = format!("recorded in run {}: {}", earlier.started, p.verified);
            p
        })
        .collect();
    ensure!(
        rows.iter()
            .any(|p| p.program.starts_with(svc_common::XDP_PROG)),
        "{}: no {} rows",
        file.display(),
        svc_common::XDP_PROG
    );
    let ns = |f: Option<f64>| f.map_or("-".to_string(), |f| format!("{f:.1} ns"));
    let note = format!(
        "the baseline rows ({}{BASELINE_SUFFIX}) were not measured in this run: they are this \
         section's figures recorded in run {} ({}), whose empty program cost {} against {} \
         here; a machine whose speed drifted between the runs shifts every vs-baseline ratio",
        svc_common::XDP_PROG,
        earlier.started,
        file.display(),
        ns(earlier_floor),
        ns(floor(this_run)),
    );
    Ok((rows, note))
}

/// An object file's bytes in a buffer aligned for the ELF parser (as
/// `include_bytes_aligned!` gives this build's).
struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn read(path: &std::path::Path) -> anyhow::Result<AlignedObject> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let words = bytes
            .chunks(8)
            .map(|chunk| {
                let mut b = [0u8; 8];
                b[..chunk.len()].copy_from_slice(chunk);
                u64::from_ne_bytes(b)
            })
            .collect();
        Ok(AlignedObject {
            words,
            len: bytes.len(),
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: u64 words seen as their bytes (u8 has no alignment or validity
        // requirement), cut to the file's length.
        let all = unsafe {
            std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.words.len() * 8)
        };
        &all[..self.len]
    }
}

impl ProgOpts {
    pub fn full() -> ProgOpts {
        ProgOpts {
            scales: vec![10, 1_000, 10_000, 100_000],
            endpoints_per_service: 10,
            runs: 11,
            repeat: 1_000_000,
            new_flows_per_run: 20_000,
            established_flows: 100,
            cpu: 1,
            cases: Vec::new(),
        }
    }

    pub fn quick() -> ProgOpts {
        ProgOpts {
            new_flows_per_run: 5_000,
            ..ProgOpts::full()
        }
    }
}

const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
const XDP_PASS: u32 = 2;

/// The i-th Service's address: 10.96.0.0/12 holds a million.
fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32)
}

/// The k-th endpoint address: 10.128.0.0/12, far from any Service address.
fn endpoint(k: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + k as u32)
}

/// The i-th Service's IPv6 twin address: fd00:96::/64 + i.
fn vip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0)) + i as u128)
}

/// The k-th IPv6 endpoint address: fd00:244::/64 + k.
fn endpoint6(k: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, 0)) + k as u128)
}

/// The i-th Service's address in `family`.
fn vip_of(family: Family, i: usize) -> IpAddr {
    match family {
        Family::V4 => vip(i).into(),
        Family::V6 => vip6(i).into(),
    }
}

/// The k-th endpoint address in `family`.
fn endpoint_of(family: Family, k: usize) -> IpAddr {
    match family {
        Family::V4 => endpoint(k).into(),
        Family::V6 => endpoint6(k).into(),
    }
}

/// The k-th client address of `family`: IPv4 clients are taken from the endpoint range
/// (the callers pass k past most endpoints, as this bench always has); IPv6 ones from
/// fd00:c::/64, a prefix of their own.
fn client_of(family: Family, k: usize) -> IpAddr {
    match family {
        Family::V4 => endpoint(k).into(),
        Family::V6 => {
            Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0xc, 0, 0, 0, 0, 0, 0)) + k as u128)
                .into()
        }
    }
}

/// The Services whose repeats make up the established case: evenly spread.
fn sampled(n: usize, flows: usize) -> Vec<usize> {
    let k = flows.clamp(1, n);
    (0..k).map(|j| j * n / k).collect()
}

fn frontend(family: Family, i: usize) -> Frontend {
    Frontend {
        vip: vip_of(family, i),
        port: SERVICE_PORT,
        proto: Protocol::Tcp,
    }
}

/// The endpoints of Service `i` in `family`; a sampled Service's first one is its own
/// address.
fn endpoints(family: Family, i: usize, per_service: usize, self_backend: bool) -> Vec<BackendAddr> {
    let mut v: Vec<BackendAddr> = (0..per_service)
        .map(|e| BackendAddr {
            addr: endpoint_of(family, i * per_service + e),
            port: TARGET_PORT,
            proto: Protocol::Tcp,
        })
        .collect();
    if self_backend {
        v[0] = BackendAddr {
            addr: vip_of(family, i),
            port: SERVICE_PORT,
            proto: Protocol::Tcp,
        };
    }
    v.sort();
    v
}

/// N dual-stack Services: each has its IPv4 frontend and its IPv6 twin.
fn desired(n: usize, per_service: usize, sampled: &BTreeSet<usize>) -> DesiredState {
    let mut state = DesiredState::default();
    for i in 0..n {
        for family in Family::ALL {
            state.frontends.insert(
                frontend(family, i),
                FrontendState {
                    service: ObjectRef::new("bench", format!("s{i}")),
                    port_name: "http".into(),
                    kind: FrontendKind::ClusterIp,
                    local_policy: false,
                    backends: endpoints(family, i, per_service, sampled.contains(&i)),
                    local_backends: Vec::new(),
                    terminating: Vec::new(),
                    affinity_timeout: None,
                    source_ranges: Vec::new(),
                },
            );
            // Every ClusterIP is an allocated one, of either family (the unserved rules).
            state
                .cluster_ips
                .insert(frontend(family, i).vip, ClusterIpUse::Reject);
        }
    }
    // As on a cluster: every ClusterIP allocated, inside the service CIDR, so a packet no
    // frontend takes pays for kube-proxy nftables' rules (unserved.rs) as it would there.
    state.service_cidrs = ServiceCidrs {
        cidrs: vec![Ipv4Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 12).into()],
        from: CidrSource::Flag,
    };
    state
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The scratch pin directory, removed (with everything pinned in it) on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = svc_agent::dataplane::cleanup(&self.0);
    }
}

/// One test run of `which` on `frame`: (return code, ns per repeat, output frame).
fn test_run(
    dp: &mut Datapath,
    which: Prog,
    frame: &[u8],
    repeat: u32,
) -> anyhow::Result<(u32, f64, Vec<u8>)> {
    let mut out = vec![0u8; 4096];
    // An xdp_md in and out: the output starts with the metadata svc_xdp leaves on a packet
    // it translated and counted (its mark for TC, svc-ebpf/src/counters.rs); `data` out
    // says how long it is.
    let ctx_in = svc_agent::trace::XdpMd {
        data_end: frame.len() as u32,
        ..Default::default()
    };
    let mut ctx_out = svc_agent::trace::XdpMd::default();
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(bytemuck::bytes_of(&ctx_in)),
        ctx_out: Some(bytemuck::bytes_of_mut(&mut ctx_out)),
        repeat,
        ..TestRunOptions::new()
    };
    let r = match which {
        Prog::Floor => dp.bench_pass_program()?.test_run(opts),
        Prog::Xdp => dp.xdp_program()?.test_run(opts),
    }
    .context("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    out.drain(..(ctx_out.data as usize).min(out.len()));
    Ok((r.return_value, r.duration.as_nanos() as f64, out))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Prog {
    Floor,
    Xdp,
}

fn count(maps: &Maps, v: Verdict) -> anyhow::Result<u64> {
    Ok(maps
        .verdict_totals()?
        .into_iter()
        .find(|(x, _)| *x == v)
        .map_or(0, |(_, n)| n))
}

/// What a case is, before its runs are summarised into a [`PacketCost`].
struct Case<'a> {
    program: &'a str,
    case: &'a str,
    services: usize,
    per_service: usize,
    repeat: u32,
    packets_per_run: u64,
}

fn cost(c: Case<'_>, runs_ns: Vec<f64>, harness_ns: Option<f64>, verified: String) -> PacketCost {
    let med = median(&runs_ns);
    PacketCost {
        program: c.program.into(),
        case: c.case.into(),
        services: c.services,
        endpoints_per_service: c.per_service,
        repeat: c.repeat,
        packets_per_run: c.packets_per_run,
        min_ns: runs_ns.iter().copied().fold(f64::INFINITY, f64::min),
        max_ns: runs_ns.iter().copied().fold(0.0, f64::max),
        median_ns: med,
        net_median_ns: (med - harness_ns.unwrap_or(0.0)).max(0.0),
        harness_ns,
        runs_ns,
        verified,
    }
}

/// Runs section 1; `log` gets a line per step.
pub fn run(
    opts: &ProgOpts,
    object: &Object,
    log: &dyn Fn(&str),
) -> anyhow::Result<Vec<PacketCost>> {
    ensure!(
        opts.runs >= 1 && opts.repeat >= 1,
        "runs and repeat must be at least 1"
    );
    svc_lab::ensure_bpffs()?;
    pin_to(opts.cpu)?;
    let scratch = Scratch(PathBuf::from(format!(
        "/sys/fs/bpf/svb-{}-prog",
        std::process::id()
    )));
    let _ = svc_agent::dataplane::cleanup(&scratch.0);
    std::fs::create_dir_all(&scratch.0)?;
    let largest = opts.scales.iter().copied().max().unwrap_or(10);
    let config = DatapathConfig {
        map_sizes: MapSizes {
            lb: ((largest * (opts.endpoints_per_service + 1)) as u32 + 1024).max(65_536),
            ct: 1 << 18,
        },
        ..DatapathConfig::default()
    };
    let (suffix, (mut dp, mut maps)) = match object {
        Object::ThisBuild => ("", Datapath::load(&scratch.0, &config)?),
        Object::Baseline(path) => {
            let object = AlignedObject::read(path)?;
            let loaded = Datapath::load_object(&scratch.0, &config, object.bytes())
                .with_context(|| format!("loading the baseline object {}", path.display()))?;
            log(&format!(
                "packet: measuring the baseline object {}",
                path.display()
            ));
            (BASELINE_SUFFIX, loaded)
        }
    };
    let mut reconciler = Reconciler::adopt_with_capacity(&maps, config.map_sizes.lb)?;
    let mut out = Vec::new();
    let per = opts.endpoints_per_service;

    // The floor, and the kernel timer's own cost per call at repeat = 1.
    let floor_frame = PacketBuilder::tcp(sa("10.200.0.1:1234"), sa("10.201.0.1:80"))
        .flags(ACK)
        .build();
    let ipv6_frame = svc_agent::packet::Ipv6Builder::tcp(
        "[fd00:10:244:1::20]:40000"
            .parse()
            .expect("an IPv6 socket address"),
        "[fd00:10:96::10]:80"
            .parse()
            .expect("an IPv6 socket address"),
    )
    .flags(ACK)
    .build();
    let mut floor_runs = Vec::new();
    for _ in 0..opts.runs {
        let (ret, ns, _) = test_run(&mut dp, Prog::Floor, &floor_frame, opts.repeat)?;
        ensure!(ret == XDP_PASS, "the empty program returned {ret}");
        floor_runs.push(ns);
    }
    let floor = median(&floor_runs);
    let calls = opts.new_flows_per_run.max(1000);
    let mut single = Vec::new();
    for _ in 0..opts.runs {
        let mut sum = 0.0;
        for _ in 0..calls {
            sum += test_run(&mut dp, Prog::Floor, &floor_frame, 1)?.1;
        }
        single.push(sum / calls as f64);
    }
    let harness = (median(&single) - floor).max(0.0);
    log(&format!(
        "packet: floor {floor:.1} ns/packet (repeat {}), harness at repeat 1: {harness:.1} ns/call",
        opts.repeat
    ));
    out.push(cost(
        Case {
            program: &format!("{}{suffix}", svc_common::BENCH_PASS_PROG),
            case: "floor",
            services: 0,
            per_service: 0,
            repeat: opts.repeat,
            packets_per_run: u64::from(opts.repeat),
        },
        floor_runs,
        None,
        "XDP_PASS every run".into(),
    ));

    let xdp_name = format!("{}{suffix}", svc_common::XDP_PROG);
    let mut next_client: u32 = 0;
    let mut scales = opts.scales.clone();
    scales.sort_unstable();
    for &n in &scales {
        let sample = sampled(n, opts.established_flows);
        let sample_set: BTreeSet<usize> = sample.iter().copied().collect();
        let started = Instant::now();
        let report = reconciler.sync(&desired(n, per, &sample_set), &mut maps);
        ensure!(
            report.errors.is_empty(),
            "programming {n} Services: {:?}",
            &report.errors[..report.errors.len().min(3)]
        );
        log(&format!(
            "packet: {n} Services x {per} endpoints programmed in {:.2} s",
            started.elapsed().as_secs_f64()
        ));

        let wanted = |case: &str| opts.cases.is_empty() || opts.cases.iter().any(|c| c == case);

        // Not a Service; and its IPv6 twin (a TCP segment to an IPv6 address no Service
        // has, while SVC6_* hold the Services' IPv6 twins): what IPv6 traffic that is not
        // to a Service pays for crossing the programs.
        for (case, frame, verdict, what) in [
            (
                "non_service",
                &floor_frame,
                Verdict::PassNotService,
                "TCP to no Service",
            ),
            (
                "ipv6",
                &ipv6_frame,
                Verdict::PassNotService,
                "IPv6 TCP segment",
            ),
        ] {
            if !wanted(case) {
                continue;
            }
            let runs = passed_runs(&mut dp, &maps, opts, frame, verdict)
                .with_context(|| format!("{case} at {n} Services"))?;
            out.push(cost(
                Case {
                    program: &xdp_name,
                    case,
                    services: n,
                    per_service: per,
                    repeat: opts.repeat,
                    packets_per_run: u64::from(opts.repeat),
                },
                runs,
                None,
                format!(
                    "{what}; passed untouched ({}, counted by TC, not XDP); frame unchanged",
                    verdict.label()
                ),
            ));
        }

        // Established flows, each pinned to its Service's own address as backend; then the
        // same over IPv6, to the sampled Services' IPv6 twins.
        for (case, family, what) in [
            (
                "established",
                Family::V4,
                format!("Services spread across all {n}"),
            ),
            (
                "established6",
                Family::V6,
                format!("the IPv6 twins of Services spread across all {n}"),
            ),
        ] {
            if !wanted(case) {
                continue;
            }
            let flows = established_flows(&mut dp, &mut maps, family, &sample, &mut next_client)
                .with_context(|| format!("{case} at {n} Services"))?;
            let (per_flow, runs) = established_runs(&mut dp, &maps, opts, &flows)
                .with_context(|| format!("{case} at {n} Services"))?;
            out.push(cost(
                Case {
                    program: &xdp_name,
                    case,
                    services: n,
                    per_service: per,
                    repeat: per_flow,
                    packets_per_run: u64::from(per_flow) * flows.len() as u64,
                },
                runs,
                None,
                format!(
                    "{} {} flows over {what}; every repeat counted dnat_established; frames unchanged",
                    flows.len(),
                    family.label()
                ),
            ));
        }

        // svcctl monitor on: the established case with every packet reported (an event
        // written to SVC_EVENTS, drained after each call), and with translations sampled 1
        // in MONITOR_SAMPLE (the check and a random number per packet, an event now and
        // then). `established` above is the same path with monitoring off. This build's
        // object only: a baseline object may predate SVC_MONITOR.
        for (case, one_in) in [
            ("established_monitor", 1),
            ("established_monitor_sampled", MONITOR_SAMPLE),
        ] {
            if !wanted(case) || !matches!(object, Object::ThisBuild) {
                continue;
            }
            let flows =
                established_flows(&mut dp, &mut maps, Family::V4, &sample, &mut next_client)
                    .with_context(|| format!("{case} at {n} Services"))?;
            let (per_flow, runs, reported) = monitor_runs(&mut dp, &mut maps, opts, &flows, one_in)
                .with_context(|| format!("{case} at {n} Services"))?;
            let packets = u64::from(per_flow) * flows.len() as u64;
            out.push(cost(
                Case {
                    program: &xdp_name,
                    case,
                    services: n,
                    per_service: per,
                    repeat: per_flow,
                    packets_per_run: packets,
                },
                runs,
                None,
                format!(
                    "as established, svcctl monitor on (translations 1 in {one_in}): {reported} events for {} packets; frames unchanged",
                    packets * opts.runs as u64
                ),
            ));
        }

        // New flows, repeat 1: to Services spread over all n (IPv4, then their IPv6
        // twins); then only to the sampled Services, whose entries stay in the CPU caches
        // (the difference is what cold service and backend entries cost).
        let spread = |p: usize| (p * n / opts.new_flows_per_run.max(1) + p % 7) % n;
        let hot = |p: usize| sample[p % sample.len()];
        for (case, family, dest, what) in [
            (
                "new_flow",
                Family::V4,
                &spread as &dyn Fn(usize) -> usize,
                format!("over all {n} Services"),
            ),
            (
                "new_flow6",
                Family::V6,
                &spread as &dyn Fn(usize) -> usize,
                format!("from IPv6 clients over the IPv6 twins of all {n} Services"),
            ),
            (
                "new_flow_hot",
                Family::V4,
                &hot as &dyn Fn(usize) -> usize,
                format!("to the same {} Services (cache-warm)", sample.len()),
            ),
        ] {
            if !wanted(case) {
                continue;
            }
            let runs = new_flow_runs(
                &mut dp,
                &mut maps,
                opts,
                family,
                &mut next_client,
                dest,
                &|i| endpoints(family, i, per, sample_set.contains(&i)),
            )
            .with_context(|| format!("{case} at {n} Services"))?;
            out.push(cost(
                Case {
                    program: &xdp_name,
                    case,
                    services: n,
                    per_service: per,
                    repeat: 1,
                    packets_per_run: opts.new_flows_per_run as u64,
                },
                runs,
                Some(harness),
                format!(
                    "{} new 5-tuples per run {what}; every call counted dnat_new and went to one of its Service's endpoints",
                    opts.new_flows_per_run
                ),
            ));
        }
        let this_scale: Vec<_> = out.iter().filter(|c| c.services == n).collect();
        for c in this_scale {
            log(&format!(
                "packet: {n} Services, {}: {:.1} ns/packet (net {:.1})",
                c.case, c.median_ns, c.net_median_ns
            ));
        }
    }
    drop(dp);
    drop(maps);
    drop(scratch);
    Ok(out)
}

/// The established flows of `family`, one per Service of `sample`, each made by the real
/// program and retried until it chose the Service's own address as backend: the frames of
/// their next packet (an ACK).
fn established_flows(
    dp: &mut Datapath,
    maps: &mut Maps,
    family: Family,
    sample: &[usize],
    next_client: &mut u32,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut flows = Vec::new();
    for &i in sample {
        *next_client += 1;
        let client = SocketAddr::new(client_of(family, 0x0f_0000 + *next_client as usize), 40000);
        let to = SocketAddr::new(vip_of(family, i), SERVICE_PORT);
        let syn = tcp_frame(client, to, SYN);
        let mut made = false;
        for _ in 0..400 {
            let (_, _, o) = test_run(dp, Prog::Xdp, &syn, 1)?;
            let dst = dst_of(&o);
            if dst == Some(to) {
                made = true;
                break;
            }
            // Another endpoint: forget the flow and let the program choose again.
            if let Some(d) = dst {
                remove_flow(maps, client, to, d);
            }
        }
        ensure!(made, "flow to {to} never chose the Service's own address");
        flows.push(tcp_frame(client, to, ACK));
    }
    Ok(flows)
}

/// `opts.runs` runs over `flows`, `opts.repeat` repeats split among them: every repeat
/// must count `dnat_established` and every frame come out unchanged. Returns the repeat
/// per flow and ns per packet of each run.
fn established_runs(
    dp: &mut Datapath,
    maps: &Maps,
    opts: &ProgOpts,
    flows: &[Vec<u8>],
) -> anyhow::Result<(u32, Vec<f64>)> {
    ensure!(!flows.is_empty(), "no established flows");
    let per_flow = (opts.repeat / flows.len() as u32).max(1);
    let mut runs = Vec::new();
    for _ in 0..opts.runs {
        let before = count(maps, Verdict::DnatEstablished)?;
        let mut total = 0.0;
        for f in flows {
            let (ret, ns, o) = test_run(dp, Prog::Xdp, f, per_flow)?;
            ensure!(
                ret == XDP_PASS && o == *f,
                "established packet came out changed (return {ret})"
            );
            total += ns * f64::from(per_flow);
        }
        let packets = u64::from(per_flow) * flows.len() as u64;
        let counted = count(maps, Verdict::DnatEstablished)? - before;
        ensure!(
            counted == packets,
            "established run took another path: {counted} of {packets} counted dnat_established"
        );
        runs.push(total / packets as f64);
    }
    Ok((per_flow, runs))
}

/// Events waiting in SVC_EVENTS, read and counted (bounded by what the ring holds).
fn drain_events(maps: &mut Maps) -> u64 {
    let mut n = 0;
    while n < 1_000_000 && maps.events.next().is_some() {
        n += 1;
    }
    n
}

/// As [`established_runs`] with svcctl monitor's switch on (every monitored verdict,
/// translations 1 in `sample`), the ring drained after every call, and off again at the
/// end. With `sample` 1 every packet must have written its event. Returns the repeat per
/// flow, ns per packet of each run and the events read.
fn monitor_runs(
    dp: &mut Datapath,
    maps: &mut Maps,
    opts: &ProgOpts,
    flows: &[Vec<u8>],
    sample: u32,
) -> anyhow::Result<(u32, Vec<f64>, u64)> {
    use svc_agent::{dataplane::monotonic_ns, monitor};
    ensure!(!flows.is_empty(), "no established flows");
    let mut control = maps.monitor_control()?;
    control.until_ns = monotonic_ns() + 3_600_000_000_000;
    control.sample = sample;
    control.verdict_mask =
        monitor::verdict_mask(&monitor::parse_verdicts(&[]).map_err(anyhow::Error::msg)?);
    maps.set_monitor_control(&control)?;
    drain_events(maps);
    let per_flow = (opts.repeat / flows.len() as u32).clamp(1, MONITOR_REPEAT_MAX);
    let mut runs = Vec::new();
    let mut reported = 0;
    let result = (|| -> anyhow::Result<()> {
        for _ in 0..opts.runs {
            let before = count(maps, Verdict::DnatEstablished)?;
            let mut total = 0.0;
            let mut events = 0;
            for f in flows {
                let (ret, ns, o) = test_run(dp, Prog::Xdp, f, per_flow)?;
                ensure!(
                    ret == XDP_PASS && o == *f,
                    "established packet came out changed (return {ret})"
                );
                total += ns * f64::from(per_flow);
                events += drain_events(maps);
            }
            let packets = u64::from(per_flow) * flows.len() as u64;
            let counted = count(maps, Verdict::DnatEstablished)? - before;
            ensure!(
                counted == packets,
                "monitored run took another path: {counted} of {packets} counted dnat_established"
            );
            ensure!(
                sample > 1 || events == packets,
                "{events} events for {packets} packets with every packet reported"
            );
            reported += events;
            runs.push(total / packets as f64);
        }
        Ok(())
    })();
    control.until_ns = 0;
    maps.set_monitor_control(&control)?;
    result?;
    Ok((per_flow, runs, reported))
}

/// `opts.runs` runs of `opts.repeat` repeats of `frame` through `svc_xdp`, which must pass
/// it unchanged and count nothing (a packet XDP passes on untouched is TC's to count, see
/// svc-common's `Verdict`; `verdict` is TC's word for it): ns per packet of each run.
fn passed_runs(
    dp: &mut Datapath,
    maps: &Maps,
    opts: &ProgOpts,
    frame: &[u8],
    verdict: Verdict,
) -> anyhow::Result<Vec<f64>> {
    let total = |maps: &Maps| -> anyhow::Result<u64> {
        Ok(maps.verdict_totals()?.iter().map(|(_, n)| n).sum())
    };
    let mut runs = Vec::new();
    for _ in 0..opts.runs {
        let before = total(maps)?;
        let (ret, ns, frame_out) = test_run(dp, Prog::Xdp, frame, opts.repeat)?;
        let counted = total(maps)? - before;
        ensure!(
            ret == XDP_PASS && counted == 0 && frame_out == frame,
            "the run took another path: return {ret}, {counted} of {} counted (none expected: \
             XDP passes a packet that is {} untouched and TC counts it)",
            opts.repeat,
            verdict.label()
        );
        runs.push(ns);
    }
    Ok(runs)
}

/// `opts.runs` runs of `opts.new_flows_per_run` new flows of `family`, flow `p` to Service
/// `dest(p)`'s address in that family, each checked to reach one of `endpoints(i)`; the
/// flows are removed after each run. Returns ns per packet of each run.
fn new_flow_runs(
    dp: &mut Datapath,
    maps: &mut Maps,
    opts: &ProgOpts,
    family: Family,
    next_client: &mut u32,
    dest: &dyn Fn(usize) -> usize,
    endpoints: &dyn Fn(usize) -> Vec<BackendAddr>,
) -> anyhow::Result<Vec<f64>> {
    let mut runs = Vec::new();
    for _ in 0..opts.runs {
        let before = count(maps, Verdict::DnatNew)?;
        let mut total = 0.0;
        let mut made = Vec::with_capacity(opts.new_flows_per_run);
        for p in 0..opts.new_flows_per_run {
            let i = dest(p);
            *next_client += 1;
            let client = SocketAddr::new(
                client_of(family, 0x10_0000 + (*next_client as usize >> 14)),
                1024 + (*next_client & 0x3fff) as u16,
            );
            let to = SocketAddr::new(vip_of(family, i), SERVICE_PORT);
            let syn = tcp_frame(client, to, SYN);
            let (ret, ns, o) = test_run(dp, Prog::Xdp, &syn, 1)?;
            let dst = dst_of(&o);
            let ok = dst.is_some_and(|d| {
                endpoints(i)
                    .iter()
                    .any(|b| b.addr == d.ip() && b.port == d.port())
            });
            ensure!(ret == XDP_PASS && ok, "new flow to {to} went to {dst:?}");
            total += ns;
            made.push((client, to, dst.expect("checked")));
        }
        let counted = count(maps, Verdict::DnatNew)? - before;
        ensure!(
            counted == opts.new_flows_per_run as u64,
            "new-flow run took another path: {counted} of {} counted dnat_new",
            opts.new_flows_per_run
        );
        for (c, t, d) in made {
            remove_flow(maps, c, t, d);
        }
        runs.push(total / opts.new_flows_per_run as f64);
    }
    Ok(runs)
}

/// A TCP segment from `from` to `to` (one family) with `flags`, as the wire has it.
fn tcp_frame(from: SocketAddr, to: SocketAddr, flags: u8) -> Vec<u8> {
    match (from, to) {
        (SocketAddr::V4(f), SocketAddr::V4(t)) => PacketBuilder::tcp(f, t).flags(flags).build(),
        (SocketAddr::V6(f), SocketAddr::V6(t)) => Ipv6Builder::tcp(f, t).flags(flags).build(),
        _ => panic!("a TCP segment from {from} to {to}: two families"),
    }
}

/// The destination of a TCP frame that came out of the program. IPv6 is read at fixed
/// offsets: the frames this section sends have no extension headers, and the program
/// adds none.
fn dst_of(frame: &[u8]) -> Option<SocketAddr> {
    if frame.get(12..14)? != ETH_P_IPV6.to_be_bytes() {
        return parse_summary(frame)
            .and_then(|s| s.dst_socket())
            .map(SocketAddr::V4);
    }
    // Ethernet (14 bytes), then the IPv6 header: next header at 6, destination at 24..40;
    // then the TCP header, destination port at 2.
    let ip = frame.get(14..54)?;
    if ip[6] != svc_common::PROTO_TCP {
        return None;
    }
    let addr: [u8; 16] = ip[24..40].try_into().ok()?;
    let port = u16::from_be_bytes(frame.get(56..58)?.try_into().ok()?);
    Some(SocketAddr::new(Ipv6Addr::from(addr).into(), port))
}

/// Deletes both conntrack entries of the flow `client -> service` translated to `backend`
/// (all three of one family), from SVC4_CT or SVC6_CT.
fn remove_flow(maps: &mut Maps, client: SocketAddr, service: SocketAddr, backend: SocketAddr) {
    fn key<A>(saddr_be: A, daddr_be: A, sport: u16, dport: u16, kind: u8) -> CtKey<A> {
        CtKey {
            saddr_be,
            daddr_be,
            sport_be: sport.to_be(),
            dport_be: dport.to_be(),
            proto: svc_common::PROTO_TCP,
            kind,
            _pad: [0; 2],
        }
    }
    match (client.ip(), service.ip(), backend.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s), IpAddr::V4(b)) => {
            let be = |a: Ipv4Addr| u32::from(a).to_be();
            let there = key(be(c), be(s), client.port(), service.port(), CT_KIND_SERVICE);
            let back = key(be(b), be(c), backend.port(), client.port(), CT_KIND_REPLY);
            let _ = maps.ct.remove(&there);
            let _ = maps.ct.remove(&back);
        }
        (IpAddr::V6(c), IpAddr::V6(s), IpAddr::V6(b)) => {
            let be = |a: Ipv6Addr| svc_common::ip6_from_octets(a.octets());
            let there = key(be(c), be(s), client.port(), service.port(), CT_KIND_SERVICE);
            let back = key(be(b), be(c), backend.port(), client.port(), CT_KIND_REPLY);
            let _ = maps.ct6.remove(&there);
            let _ = maps.ct6.remove(&back);
        }
        _ => panic!("flow {client} -> {service} -> {backend}: mixed families"),
    }
}

fn sa(s: &str) -> std::net::SocketAddrV4 {
    s.parse().expect("a literal socket address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_run_becomes_baseline_rows() {
        let file = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/published/2026-12-03T04-38-58-base.json"
        ));
        let (rows, note) = recorded_baseline(file, &[]).unwrap();
        assert!(
            rows.iter().all(|p| p.program.ends_with(BASELINE_SUFFIX)),
            "{rows:?}"
        );
        assert!(
            rows.iter()
                .all(|p| p.verified.starts_with("recorded in run "))
        );
        let xdp = format!("{}{BASELINE_SUFFIX}", svc_common::XDP_PROG);
        for case in ["non_service", "established", "new_flow"] {
            assert!(
                rows.iter().any(|p| p.program == xdp && p.case == case),
                "no {case} row"
            );
        }
        assert!(rows.iter().any(|p| p.case == "floor"));
        assert!(
            note.contains("not measured in this run") && note.contains(" ns against - here"),
            "{note}"
        );

        let bad = std::env::temp_dir().join(format!("svb-{}-not-results.json", std::process::id()));
        std::fs::write(&bad, "{}").unwrap();
        assert!(recorded_baseline(&bad, &[]).is_err());
        let _ = std::fs::remove_file(&bad);
    }

    #[test]
    fn addresses_and_samples() {
        assert_eq!(vip(0), Ipv4Addr::new(10, 96, 0, 0));
        assert_eq!(vip(100_000), Ipv4Addr::new(10, 97, 134, 160));
        assert_eq!(endpoint(999_999), Ipv4Addr::new(10, 143, 66, 63));
        assert_eq!(sampled(10, 100), (0..10).collect::<Vec<_>>());
        let s = sampled(100_000, 100);
        assert_eq!(s.len(), 100);
        assert_eq!((s[0], s[1], s[99]), (0, 1000, 99_000));
        let e = endpoints(Family::V4, 3, 10, true);
        assert_eq!(e.len(), 10);
        assert!(e.iter().any(|b| b.addr == vip(3) && b.port == SERVICE_PORT));
        assert_eq!(
            vip6(100_000),
            "fd00:96::1:86a0".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            endpoint6(999_999),
            "fd00:244::f:423f".parse::<Ipv6Addr>().unwrap()
        );
        let e6 = endpoints(Family::V6, 3, 10, true);
        assert!(e6.iter().all(|b| b.addr.is_ipv6()));
        assert!(
            e6.iter()
                .any(|b| b.addr == vip6(3) && b.port == SERVICE_PORT)
        );
        let d = desired(4, 2, &BTreeSet::from([1]));
        assert_eq!(d.frontends.len(), 8);
        assert!(d.frontends.iter().all(|(f, s)| {
            s.backends
                .iter()
                .all(|b| b.addr.is_ipv6() == f.vip.is_ipv6())
        }));
    }

    #[test]
    fn frames_of_both_families_read_back() {
        let v4: SocketAddr = "10.96.0.3:80".parse().unwrap();
        let c4: SocketAddr = "10.143.0.1:40000".parse().unwrap();
        assert_eq!(dst_of(&tcp_frame(c4, v4, SYN)), Some(v4));
        let v6: SocketAddr = "[fd00:96::3]:80".parse().unwrap();
        let c6: SocketAddr = "[fd00:c::1]:40000".parse().unwrap();
        assert_eq!(dst_of(&tcp_frame(c6, v6, ACK)), Some(v6));
    }
}
