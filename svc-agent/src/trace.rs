//! `svcctl trace`: what the loaded programs do with one packet, and why.
//!
//! The real programs run on a crafted frame through BPF_PROG_TEST_RUN, but never on the
//! live maps: trace loads a second instance of the same object (the build svcctl comes
//! with, which must be the agent's: the pinned maps' layouts are checked), with the same
//! load-time globals as the running programs (read from SVC_CONFIG, which the agent writes
//! when it loads), on fresh maps that it fills with a copy of the live state: services,
//! backends, rev-NAT, source ranges, ClusterIPs, service CIDRs, conntrack, affinity and
//! names. The copy's maps are pinned only for the moment of loading (in a sibling
//! directory of the live pins, removed at once), so nothing trace does (a conntrack insert
//! for a new flow, an affinity update, the verdict counters) can reach the live datapath;
//! the live maps are only read. The verdict comes from the copy's counters: every program
//! run counts exactly one.
//!
//! Which program runs depends on where the packet comes from, as on a node: a source in
//! the pod CIDR enters through a pod interface (TC ingress); any other source through the
//! external interface (XDP, then TC ingress when XDP passes the packet on). The node's own
//! traffic goes through the cgroup socket hooks, which BPF_PROG_TEST_RUN cannot run: trace
//! says so instead of guessing.
//!
//! Differences from a real packet, by design: a new flow's random backend choice is the
//! test run's own draw (trace lists the whole set a new flow can get); the conntrack copy is
//! taken at one moment, so a flow that expires in between behaves as new.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    path::{Path, PathBuf},
};

use aya::programs::{TestRun, TestRunOptions};
use serde::Serialize;
use svc_common::{
    BackendState, CT_KIND_SERVICE, ClusterIpUse, Ct4Key, FrontendKind, SVC_F_EXTERNAL, SVC_F_LOCAL,
    Verdict,
};

use crate::{
    addr::Ipv4Cidr,
    dataplane::{
        self, Datapath, DatapathConfig, DataplaneError, DetectLocal, MapStore as _, Maps, layout,
    },
    inspect::{self, Service, ServiceName},
    model::Protocol,
    packet::{
        ACK, ETH_P_IPV6, Ipv6Builder, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, PacketBuilder, SCTP_INIT,
        SYN, parse_summary, tcp_flags_label,
    },
};

/// JSON schema version of [`Trace`].
pub const TRACE_SCHEMA_VERSION: u32 = 1;

/// The source port used when the request gives none (an ephemeral port, as a client
/// would have).
pub const DEFAULT_SOURCE_PORT: u16 = 40000;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("copying the live maps: {0}")]
    Copy(#[from] crate::dataplane::StoreError),
    #[error("reading the live maps: {0}")]
    Inspect(#[from] inspect::InspectError),
    #[error(
        "{0} is this node's own address: the node's processes reach Services through the \
         cgroup socket hooks (connect4/sendmsg4), which BPF_PROG_TEST_RUN cannot run; trace \
         from a pod or an outside address instead"
    )]
    NodeSource(Ipv4Addr),
    #[error("SCTP over IPv6 cannot be traced: the packet builder has no IPv6 SCTP")]
    Ipv6Sctp,
    #[error(
        "--from {src} and --to {dst} are of different families: a packet has one (a \
         dual-stack Service has a ClusterIP per family)"
    )]
    MixedFamilies { src: String, dst: String },
    #[error("BPF_PROG_TEST_RUN of {program}: {source}")]
    TestRun {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("cannot create the scratch pin directory {dir}: {source}")]
    Scratch {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Which interface the packet arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Entry {
    /// A pod's interface: TC ingress.
    Pod,
    /// The external interface: XDP, then TC ingress.
    External,
}

/// What to trace.
#[derive(Clone, Debug)]
pub struct TraceRequest {
    pub src: Ipv4Addr,
    /// None: [`DEFAULT_SOURCE_PORT`].
    pub src_port: Option<u16>,
    pub dst: SocketAddrV4,
    pub protocol: Protocol,
    /// None: from the source (pod CIDR: pod interface; else the external interface).
    pub entry: Option<Entry>,
}

/// One packet as a program got or left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketInfo {
    pub src: String,
    pub dst: String,
    pub protocol: String,
    /// tcpdump style (`S`, `.`, `R.`), TCP only.
    pub tcp_flags: Option<String>,
    /// ICMP type and code, ICMP only.
    pub icmp: Option<(u8, u8)>,
}

/// One program run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub program: &'static str,
    /// `xdp` or `tc`.
    pub hook: &'static str,
    /// The program's return code as the kernel names it (`XDP_PASS`, `TC_ACT_SHOT`...).
    pub result: String,
    /// The verdict it counted.
    pub verdict: Option<&'static str>,
    /// The packet it left (None when dropped).
    pub output: Option<PacketInfo>,
}

/// The frontend the destination matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrontendInfo {
    pub service: Option<ServiceName>,
    pub address: String,
    pub protocol: String,
    pub kind: &'static str,
    pub flags: Vec<String>,
}

/// What the datapath does with the packet. The JSON form of `svcctl trace -o json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub version: u32,
    pub entry: Entry,
    pub input: PacketInfo,
    pub steps: Vec<Step>,
    /// The verdict that decided (the last program's, or XDP's when it did not pass the
    /// packet on).
    pub verdict: &'static str,
    /// `translated`, `reverse-translated`, `passed`, `rejected` or `dropped`.
    pub action: &'static str,
    pub frontend: Option<FrontendInfo>,
    /// `new`, `established` or `reply`, for translated packets.
    pub flow: Option<&'static str>,
    /// The backend the packet goes to (translated packets).
    pub backend: Option<String>,
    /// The backends a new flow from this source can get (the scope the policy selects,
    /// ready backends only).
    pub candidates: Vec<String>,
    /// The source the backend sees when masqueraded (None: the client's own).
    pub masquerade: Option<String>,
    /// The packet that leaves the node's programs: translated, passed, or the RST / ICMP
    /// answer to the client.
    pub output: Option<PacketInfo>,
    /// Why, in words: the rule that decided.
    pub rule: String,
}

fn info(frame: &[u8]) -> Option<PacketInfo> {
    let Some(s) = parse_summary(frame) else {
        return info6(frame);
    };
    let sock = |a: Ipv4Addr, p: Option<u16>| match p {
        Some(p) => SocketAddrV4::new(a, p).to_string(),
        None => a.to_string(),
    };
    Some(PacketInfo {
        src: sock(s.src, s.sport),
        dst: sock(s.dst, s.dport),
        protocol: layout::protocol_label(s.proto),
        tcp_flags: s.tcp_flags.map(tcp_flags_label),
        icmp: s.icmp,
    })
}

/// An IPv6 frame's addresses, and its ports and TCP flags when the TCP or UDP header
/// follows the IPv6 header directly.
fn info6(frame: &[u8]) -> Option<PacketInfo> {
    if frame.get(12..14)? != ETH_P_IPV6.to_be_bytes() || frame.len() < 54 {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv6Addr> {
        Some(Ipv6Addr::from(
            <[u8; 16]>::try_from(frame.get(at..at + 16)?).ok()?,
        ))
    };
    let (src, dst, next) = (addr(22)?, addr(38)?, frame[20]);
    let ports = matches!(next, PROTO_TCP | PROTO_UDP)
        .then(|| frame.get(54..58))
        .flatten()
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        });
    let sock = |a: Ipv6Addr, p: Option<u16>| match p {
        Some(p) => SocketAddrV6::new(a, p, 0, 0).to_string(),
        None => a.to_string(),
    };
    Some(PacketInfo {
        src: sock(src, ports.map(|p| p.0)),
        dst: sock(dst, ports.map(|p| p.1)),
        protocol: match next {
            PROTO_ICMPV6 => "ICMPv6".into(),
            n => layout::protocol_label(n),
        },
        tcp_flags: (next == PROTO_TCP)
            .then(|| frame.get(54 + 13))
            .flatten()
            .map(|f| tcp_flags_label(*f)),
        icmp: (next == PROTO_ICMPV6)
            .then(|| frame.get(54..56))
            .flatten()
            .map(|t| (t[0], t[1])),
    })
}

fn xdp_result(ret: u32) -> String {
    match ret {
        0 => "XDP_ABORTED".into(),
        1 => "XDP_DROP".into(),
        2 => "XDP_PASS".into(),
        3 => "XDP_TX".into(),
        4 => "XDP_REDIRECT".into(),
        n => format!("XDP({n})"),
    }
}

fn tc_result(ret: u32) -> String {
    match ret {
        0 => "TC_ACT_OK".into(),
        2 => "TC_ACT_SHOT".into(),
        7 => "TC_ACT_REDIRECT".into(),
        n => format!("TC_ACT({n})"),
    }
}

/// The copy's program instance and maps; the scratch pins are gone once it exists.
struct Scratch {
    datapath: Datapath,
    maps: Maps,
}

/// A scratch pin directory beside the live one, removed on drop (also on a panic).
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = dataplane::cleanup(&self.0);
    }
}

const SCRATCH_PREFIX: &str = "svcctl-trace-";

/// Removes scratch directories of svcctl processes that no longer exist (killed while
/// loading).
fn remove_stale_scratch(parent: &Path) {
    for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = dataplane::cleanup(&e.path());
        }
    }
}

fn load_scratch(
    live_dir: &Path,
    live: &Maps,
    config: &DatapathConfig,
    entry: Entry,
) -> Result<Scratch, TraceError> {
    let parent = live_dir.parent().unwrap_or(Path::new("/sys/fs/bpf"));
    remove_stale_scratch(parent);
    let dir = ScratchDir(parent.join(format!("{SCRATCH_PREFIX}{}", std::process::id())));
    // A leftover of this very pid (pid reuse) holds nothing anyone uses.
    let _ = dataplane::cleanup(&dir.0);
    std::fs::create_dir_all(&dir.0).map_err(|source| TraceError::Scratch {
        dir: dir.0.clone(),
        source,
    })?;
    let (datapath, mut maps) = Datapath::load(&dir.0, config)?;
    drop(dir);
    maps.copy_state_from(live)?;
    // Detect-local by interface: BPF_PROG_TEST_RUN runs the programs on this namespace's
    // loopback device, so a packet from a pod interface is one from `lo` in the copy.
    if config.detect_local == DetectLocal::Interface && entry == Entry::Pod {
        let lo = nix::net::if_::if_nametoindex("lo").unwrap_or(1);
        maps.set_pod_ifaces(&std::collections::BTreeSet::from([lo]))?;
    }
    Ok(Scratch { datapath, maps })
}

/// The frame through the programs of `entry`, as on a node: a pod's packet meets TC
/// ingress on its interface; an outside packet meets XDP, and then TC ingress on the same
/// interface if XDP passes it. XDP decides, unless it handed the packet on untouched for TC
/// to decide (a reject, IPv4 options) or because it was not a Service packet. The steps,
/// and the verdict that decided (None: none counted).
fn run_entry(
    scratch: &mut Scratch,
    entry: Entry,
    frame: &[u8],
) -> Result<(Vec<Step>, Option<Verdict>), TraceError> {
    let mut decided_by_xdp: Option<Verdict> = None;
    let mut steps = Vec::new();
    let tc_input = match entry {
        Entry::Pod => Some(frame.to_vec()),
        Entry::External => {
            let (ret, out, counted) = run(scratch, true, frame)?;
            // XDP counts only what it decides (dropped or translated); a packet it passes
            // on untouched is TC's to decide and count (svc-common, `Verdict`).
            let verdict = counted
                .first()
                .copied()
                .or((ret == 2).then_some(Verdict::XdpPassToTc));
            steps.push(Step {
                program: svc_common::XDP_PROG,
                hook: "xdp",
                result: xdp_result(ret),
                verdict: verdict.map(Verdict::label),
                output: if ret == 2 { info(&out) } else { None },
            });
            let defers = matches!(
                verdict,
                Some(
                    Verdict::XdpPassToTc
                        | Verdict::PassNotService
                        | Verdict::PassNotIp
                        | Verdict::PassOtherProto
                        | Verdict::PassFragment
                )
            );
            if ret != 2 || !defers {
                decided_by_xdp = verdict;
            }
            (ret == 2).then_some(out)
        }
    };
    let mut decided = decided_by_xdp;
    if let Some(input) = tc_input {
        let (ret, out, counted) = run(scratch, false, &input)?;
        let verdict = counted.first().copied();
        let passed = ret == 0 || ret == 7;
        steps.push(Step {
            program: svc_common::TC_PROG,
            hook: "tc",
            result: tc_result(ret),
            verdict: verdict.map(Verdict::label),
            output: if passed { info(&out) } else { None },
        });
        if decided.is_none() {
            decided = verdict;
        }
    }
    Ok((steps, decided))
}

/// One test run: return code, output frame, the verdicts it counted.
fn run(
    scratch: &mut Scratch,
    xdp: bool,
    frame: &[u8],
) -> Result<(u32, Vec<u8>, Vec<Verdict>), TraceError> {
    let before = scratch.maps.verdict_totals()?;
    let mut out = vec![0u8; 4096];
    // XDP: an xdp_md in and out, to learn how many bytes of metadata (the mark of a packet
    // XDP counted, svc-ebpf/src/counters.rs) precede the frame in the output.
    let ctx_in = XdpMd {
        data_end: frame.len() as u32,
        ..Default::default()
    };
    let mut ctx_out = XdpMd::default();
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::new()
    };
    let (program, result) = if xdp {
        let p = scratch.datapath.xdp_program()?;
        let opts = TestRunOptions {
            ctx_in: Some(bytemuck::bytes_of(&ctx_in)),
            ctx_out: Some(bytemuck::bytes_of_mut(&mut ctx_out)),
            ..opts
        };
        (svc_common::XDP_PROG, p.test_run(opts))
    } else {
        let p = scratch.datapath.tc_program()?;
        (svc_common::TC_PROG, p.test_run(opts))
    };
    let result = result.map_err(|source| TraceError::TestRun { program, source })?;
    let after = scratch.maps.verdict_totals()?;
    let counted = before
        .iter()
        .zip(&after)
        .filter(|((_, b), (_, a))| a > b)
        .map(|((v, _), _)| *v)
        .collect();
    out.truncate(result.data_size_out as usize);
    out.drain(..(ctx_out.data as usize).min(out.len()));
    Ok((result.return_value, out, counted))
}

/// The kernel's `struct xdp_md` (include/uapi/linux/bpf.h), the context of an XDP test
/// run: in the output, `data` is the length of the metadata in front of the frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

fn action_of(v: Verdict) -> &'static str {
    match v {
        Verdict::DnatNew | Verdict::DnatEstablished => "translated",
        Verdict::RevNat => "reverse-translated",
        Verdict::RejectTcpRst | Verdict::RejectIcmp => "rejected",
        v if v.is_drop() => "dropped",
        _ => "passed",
    }
}

/// Everything [`explain`] needs.
struct Context<'a> {
    req: &'a TraceRequest,
    config: &'a DatapathConfig,
    frontend: Option<&'a Service>,
    /// The destination's SVC4_CLUSTERIPS entry (None: not an allocated ClusterIP; Some(None):
    /// a value no word has).
    cluster_ip: Option<Option<ClusterIpUse>>,
    /// The service CIDR the destination is in, if any.
    service_cidr: Option<Ipv4Cidr>,
    from_pod: bool,
    backend: Option<&'a str>,
    masquerade: Option<&'a str>,
    affinity_hit: bool,
}

fn explain(v: Verdict, c: &Context<'_>) -> String {
    let svc = c
        .frontend
        .map(|f| match &f.service {
            Some(n) => format!("{n} ({} {}:{}/{})", f.kind, f.vip, f.port, f.protocol),
            None => format!("{} {}:{}/{}", f.kind, f.vip, f.port, f.protocol),
        })
        .unwrap_or_else(|| c.req.dst.to_string());
    let local = c.frontend.is_some_and(|f| f.flags_raw & SVC_F_LOCAL != 0);
    let external = c
        .frontend
        .is_some_and(|f| f.flags_raw & SVC_F_EXTERNAL != 0);
    match v {
        Verdict::DnatNew => {
            let mut s = format!("new flow to {svc}: ");
            if c.affinity_hit {
                s += "sessionAffinity ClientIP: the backend this client had";
            } else if local && (!external || !c.from_pod) {
                s += if external {
                    "externalTrafficPolicy Local, from outside the cluster: a random one of this node's backends"
                } else {
                    "internalTrafficPolicy Local: a random one of this node's backends"
                };
            } else if local {
                s += "externalTrafficPolicy Local, but from a pod: a random one of all backends";
            } else {
                s += "a random ready backend";
            }
            if let Some(b) = c.backend {
                s += &format!(" ({b})");
            }
            match c.masquerade {
                Some(m) => {
                    let why = if c.backend.is_some_and(|b| b.starts_with(&format!("{}:", c.req.src))) {
                        "hairpin: the client is its own backend"
                    } else if external {
                        "externalTrafficPolicy Cluster"
                    } else if c.config.masquerade_all {
                        "--masquerade-all"
                    } else {
                        match c.config.detect_local {
                            DetectLocal::Interface => {
                                "ClusterIP traffic that did not enter through a pod interface"
                            }
                            _ => "ClusterIP traffic from outside the pod CIDR",
                        }
                    };
                    s += &format!("; source masqueraded to {m} ({why})");
                }
                None => s += "; the client's source address is kept",
            }
            s
        }
        Verdict::DnatEstablished => format!(
            "a packet of a known flow to {svc} (conntrack): the flow's backend{}",
            c.backend.map(|b| format!(" {b}")).unwrap_or_default()
        ),
        Verdict::RevNat => "a reply of a translated flow (conntrack): source back to the Service address, destination back to the client".into(),
        Verdict::RejectTcpRst | Verdict::RejectIcmp if c.frontend.is_none() => format!(
            "{} is an allocated ClusterIP, but no Service has port {}/{} on it: rejected with {}, as kube-proxy's nftables mode (\"Reject traffic to invalid ports of ClusterIPs\")",
            c.req.dst.ip(),
            c.req.dst.port(),
            c.req.protocol,
            if v == Verdict::RejectTcpRst { "a TCP RST" } else { "ICMP port unreachable" }
        ),
        Verdict::RejectTcpRst => format!("{svc} has no endpoints: rejected with a TCP RST, as kube-proxy's REJECT"),
        Verdict::RejectIcmp => format!("{svc} has no endpoints: rejected with ICMP port unreachable, as kube-proxy's REJECT"),
        Verdict::DropUnallocated => format!(
            "{} is inside service CIDR {} but no Service has it: dropped, as kube-proxy's nftables mode (\"Drop traffic to unallocated ClusterIPs\")",
            c.req.dst.ip(),
            c.service_cidr.map_or_else(|| "?".to_string(), |n| n.to_string())
        ),
        Verdict::PassNotService if c.cluster_ip == Some(Some(ClusterIpUse::OtherProxy)) => format!(
            "{} is a ClusterIP of a Service another proxy owns (service.kubernetes.io/service-proxy-name): passed untouched",
            c.req.dst.ip()
        ),
        Verdict::DropNoLocalBackend => format!(
            "{svc} has traffic policy Local and this node has none of its endpoints: dropped (other nodes may serve it)"
        ),
        Verdict::DropSourceRange => format!(
            "{svc} has loadBalancerSourceRanges and {} is outside them: dropped",
            c.req.src
        ),
        Verdict::PassNotService => format!(
            "{}/{} is not a Service address, and the packet belongs to no translated flow: passed untouched",
            c.req.dst, c.req.protocol
        ),
        Verdict::DropNoBackend => format!("{svc}: a backend slot is missing (the agent is writing it right now): dropped"),
        Verdict::DropNatFailed => format!("{svc}: no free masquerade port: dropped"),
        Verdict::DropCtFailed => "the conntrack entry could not be written: dropped".into(),
        Verdict::DropRewriteFailed => "a packet rewrite helper failed: dropped".into(),
        Verdict::DropMalformed => "headers cut short or invalid: dropped".into(),
        Verdict::PassFragment => "an IPv4 fragment after the first, of a datagram whose first fragment was not translated: passed untouched".into(),
        Verdict::PassOtherProto => "neither TCP nor UDP: passed untouched".into(),
        Verdict::PassNotIp => "neither IPv4 nor IPv6: passed untouched".into(),
        other => format!("verdict {}", other.label()),
    }
}

/// Traces `req` through the programs, on a copy of the maps pinned at `live_dir`.
pub fn trace(live_dir: &Path, live: &Maps, req: &TraceRequest) -> Result<Trace, TraceError> {
    let config = live.read_config()?;
    let snap = inspect::snapshot(live)?;
    let node_addrs: Vec<Ipv4Addr> = config
        .masquerade_addr
        .into_iter()
        .chain(
            snap.services
                .iter()
                .filter(|s| s.kind == FrontendKind::NodePort.label())
                // The trace is IPv4 (an IPv6 packet passes every program untouched).
                .filter_map(|s| match s.vip {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                }),
        )
        .collect();
    if node_addrs.contains(&req.src) {
        return Err(TraceError::NodeSource(req.src));
    }
    // Detect-local by interface cannot be told from an address: such a trace enters from
    // outside unless --via pod says otherwise.
    let from_pod = config.detect_local == DetectLocal::Cidr
        && config
            .pod_cidrs
            .iter()
            .any(|c| c.contains(std::net::IpAddr::V4(req.src)));
    let entry = req.entry.unwrap_or(if from_pod {
        Entry::Pod
    } else {
        Entry::External
    });
    // By interface, the entry decides whether the programs see a pod.
    let from_pod = match config.detect_local {
        DetectLocal::Interface => entry == Entry::Pod,
        _ => from_pod,
    };
    let proto = req.protocol.raw();
    let frontend = snap.services.iter().find(|s| {
        s.vip == *req.dst.ip() && s.port == req.dst.port() && s.protocol == req.protocol.to_string()
    });
    let dst_key = layout::cluster_ip_key(*req.dst.ip());
    let cluster_ip = live
        .read_cluster_ips()?
        .into_iter()
        .find(|(k, _)| *k == dst_key)
        .map(|(_, v)| layout::cluster_ip_use(v));
    let service_cidr = live
        .read_service_cidrs()?
        .iter()
        .filter_map(layout::service_cidr_of)
        .filter(|c| c.contains(*req.dst.ip()))
        .max_by_key(|c| c.prefix_len);
    let src = SocketAddrV4::new(req.src, req.src_port.unwrap_or(DEFAULT_SOURCE_PORT));

    let mut scratch = load_scratch(live_dir, live, &config, entry)?;
    // The next packet of this tuple: a SYN if no flow is known, else a plain ACK.
    let ct_key = Ct4Key {
        saddr_be: u32::from(*src.ip()).to_be(),
        daddr_be: u32::from(*req.dst.ip()).to_be(),
        sport_be: src.port().to_be(),
        dport_be: req.dst.port().to_be(),
        proto,
        kind: CT_KIND_SERVICE,
        _pad: [0; 2],
    };
    let known_flow = scratch.maps.ct.get(&ct_key, 0).is_ok();
    let frame = match req.protocol {
        Protocol::Tcp => PacketBuilder::tcp(src, req.dst)
            .flags(if known_flow { ACK } else { SYN })
            .seq(1)
            .build(),
        Protocol::Udp => PacketBuilder::udp(src, req.dst).payload(b"trace").build(),
        Protocol::Sctp => PacketBuilder::sctp(src, req.dst, 1, SCTP_INIT)
            .payload(b"trace")
            .build(),
    };
    let affinity_before = scratch.maps.affinity.iter().filter_map(Result::ok).count();

    let (steps, decided) = run_entry(&mut scratch, entry, &frame)?;
    let verdict = decided.unwrap_or(Verdict::PassNotService);
    let output = steps.last().and_then(|s| s.output.clone());

    // The flow entry the run made or used: the backend, and the masquerade source.
    let ct_after = scratch.maps.ct.get(&ct_key, 0).ok();
    let (backend, masquerade) = match (verdict, ct_after) {
        (Verdict::DnatNew | Verdict::DnatEstablished, Some(v)) => (
            Some(
                SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v.addr_be)),
                    u16::from_be(v.port_be),
                )
                .to_string(),
            ),
            (v.flags & svc_common::CT_F_SNAT != 0).then(|| {
                SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v.nat_addr_be)),
                    u16::from_be(v.nat_port_be),
                )
                .to_string()
            }),
        ),
        _ => (None, None),
    };
    let affinity_hit = verdict == Verdict::DnatNew
        && frontend.is_some_and(|f| f.affinity_timeout_secs.is_some())
        && scratch.maps.affinity.iter().filter_map(Result::ok).count() == affinity_before
        && snap.affinity.iter().any(|a| {
            a.client == req.src
                && !a.expired
                && frontend.is_some_and(|f| f.rev_nat_id == a.rev_nat_id)
        });
    let candidates = frontend.map_or_else(Vec::new, |f| candidates(f, from_pod));
    let flow = flow_of(verdict);
    let ctx = Context {
        req,
        config: &config,
        frontend,
        cluster_ip,
        service_cidr,
        from_pod,
        backend: backend.as_deref(),
        masquerade: masquerade.as_deref(),
        affinity_hit,
    };
    let rule = explain(verdict, &ctx);
    Ok(Trace {
        version: TRACE_SCHEMA_VERSION,
        entry,
        input: info(&frame).expect("a frame trace built itself"),
        steps,
        verdict: verdict.label(),
        action: action_of(verdict),
        frontend: frontend.map(FrontendInfo::of),
        flow,
        backend,
        candidates,
        masquerade,
        output,
        rule,
    })
}

/// The backends a new flow to `f` chooses among (traffic policy Local narrows them, for a
/// ClusterIP always and for an external address from outside), as `address:port`.
fn candidates(f: &Service, from_pod: bool) -> Vec<String> {
    let local = f.flags_raw & SVC_F_LOCAL != 0;
    let external = f.flags_raw & SVC_F_EXTERNAL != 0;
    let set = if local && (!external || !from_pod) {
        &f.local_backends
    } else {
        &f.backends
    };
    set.iter()
        .filter(|b| b.state == BackendState::Active.label())
        .map(|b| crate::addr::HostPort(b.addr, b.port).to_string())
        .collect()
}

/// The flow a translated packet belongs to: "new", "established" or "reply".
fn flow_of(verdict: Verdict) -> Option<&'static str> {
    match verdict {
        Verdict::DnatNew => Some("new"),
        Verdict::DnatEstablished => Some("established"),
        Verdict::RevNat => Some("reply"),
        _ => None,
    }
}

impl FrontendInfo {
    fn of(f: &Service) -> FrontendInfo {
        FrontendInfo {
            service: f.service.clone(),
            address: crate::addr::HostPort(f.vip, f.port).to_string(),
            protocol: f.protocol.clone(),
            kind: f.kind,
            flags: f.flags.clone(),
        }
    }
}

/// What to trace, over IPv6.
#[derive(Clone, Debug)]
pub struct Trace6Request {
    pub src: Ipv6Addr,
    /// None: [`DEFAULT_SOURCE_PORT`].
    pub src_port: Option<u16>,
    pub dst: SocketAddrV6,
    pub protocol: Protocol,
    /// None: the external interface (the agent knows no IPv6 pod CIDR yet).
    pub entry: Option<Entry>,
}

/// Traces an IPv6 packet through the programs, on a copy of the maps as [`trace`] does: the
/// programs' own verdict for it and the frame they leave, the Service address it matched,
/// its candidates, the backend and masquerade source the output shows. The rule is worded
/// from the verdict; unlike the IPv4 trace it does not say why a backend was chosen
/// (affinity, traffic policy) or why a flow was masqueraded (docs/ipv6.md).
pub fn trace6(live_dir: &Path, live: &Maps, req: &Trace6Request) -> Result<Trace, TraceError> {
    let config = live.read_config()?;
    let entry = req.entry.unwrap_or(Entry::External);
    let src = SocketAddrV6::new(req.src, req.src_port.unwrap_or(DEFAULT_SOURCE_PORT), 0, 0);
    let frame = match req.protocol {
        Protocol::Tcp => Ipv6Builder::tcp(src, req.dst).flags(SYN).build(),
        Protocol::Udp => Ipv6Builder::udp(src, req.dst).payload(b"trace").build(),
        Protocol::Sctp => return Err(TraceError::Ipv6Sctp),
    };
    // For the rule's words: whether a frontend has the port, what SVC6_CLUSTERIPS says of
    // the address, the longest SVC6_SVC_CIDR prefix holding it.
    let dst_ip = IpAddr::V6(*req.dst.ip());
    let served = live.read_services6()?.iter().any(|(k, _)| {
        layout::frontend_of(k)
            .is_some_and(|f| f.vip == dst_ip && f.port == req.dst.port() && f.proto == req.protocol)
    });
    let dst_key = layout::cluster_ip6_key(*req.dst.ip());
    let cluster_ip = live
        .read_cluster_ips6()?
        .into_iter()
        .find(|(k, _)| *k == dst_key)
        .map(|(_, v)| layout::cluster_ip_use(v));
    let service_cidr = live
        .read_service_cidrs6()?
        .iter()
        .filter_map(layout::service_cidr6_of)
        .filter(|c| c.contains(*req.dst.ip()))
        .max_by_key(|c| c.prefix_len);
    let snap = inspect::snapshot(live)?;
    let frontend = snap.services.iter().find(|s| {
        s.vip == dst_ip && s.port == req.dst.port() && s.protocol == req.protocol.to_string()
    });
    let mut scratch = load_scratch(live_dir, live, &config, entry)?;
    let (steps, decided) = run_entry(&mut scratch, entry, &frame)?;
    let verdict = decided.unwrap_or(Verdict::PassNotService);
    let input = info(&frame).expect("a frame trace built itself");
    let output = steps.last().and_then(|s| s.output.clone());
    // A translated packet's new destination is its backend; a new source, the masquerade.
    let translated = matches!(verdict, Verdict::DnatNew | Verdict::DnatEstablished);
    let backend = output
        .as_ref()
        .filter(|_| translated)
        .map(|o| o.dst.clone());
    let masquerade = output
        .as_ref()
        .filter(|o| translated && o.src != input.src)
        .map(|o| o.src.clone());
    let from_pod = entry == Entry::Pod;
    let candidates = frontend.map_or_else(Vec::new, |f| candidates(f, from_pod));
    let dst = req.dst;
    let svc = match frontend {
        Some(f) => match &f.service {
            Some(n) => format!("{n} ({} {})", f.kind, req.dst),
            None => format!("{} {}", f.kind, req.dst),
        },
        None => req.dst.to_string(),
    };
    let rule = match verdict {
        Verdict::RejectTcpRst | Verdict::RejectIcmp if !served => format!(
            "{} is an allocated ClusterIP, but no Service has port {}/{} on it: rejected with {}, as kube-proxy's nftables mode (\"Reject traffic to invalid ports of ClusterIPs\")",
            dst.ip(),
            dst.port(),
            req.protocol,
            if verdict == Verdict::RejectTcpRst {
                "a TCP RST"
            } else {
                "ICMPv6 port unreachable"
            }
        ),
        Verdict::DropUnallocated => format!(
            "{} is inside service CIDR {} but no Service has it: dropped, as kube-proxy's nftables mode (\"Drop traffic to unallocated ClusterIPs\")",
            dst.ip(),
            service_cidr.map_or_else(|| "?".to_string(), |n| n.to_string())
        ),
        Verdict::PassNotService if cluster_ip == Some(Some(ClusterIpUse::OtherProxy)) => format!(
            "{} is a ClusterIP of a Service another proxy owns (service.kubernetes.io/service-proxy-name): passed untouched",
            dst.ip()
        ),
        Verdict::PassNotService => format!(
            "{dst} is no IPv6 Service address here, and this is no reply of a translated flow: passed untouched"
        ),
        Verdict::DnatNew => format!(
            "new flow to {svc}: backend {}{}",
            backend.as_deref().unwrap_or("?"),
            masquerade
                .as_deref()
                .map(|m| format!("; the source masqueraded to {m}"))
                .unwrap_or_default()
        ),
        Verdict::DnatEstablished => format!(
            "a packet of a known flow to {svc} (conntrack): the flow's backend {}",
            backend.as_deref().unwrap_or("?")
        ),
        Verdict::RevNat => {
            "a reply of a translated flow (conntrack): source back to the Service address".into()
        }
        Verdict::RejectTcpRst => {
            format!("{svc} has no endpoints: rejected with a TCP RST, as kube-proxy's REJECT")
        }
        Verdict::RejectIcmp => format!(
            "{svc} has no endpoints: rejected with ICMPv6 port unreachable, as kube-proxy's REJECT"
        ),
        Verdict::DropNoLocalBackend => {
            format!("{svc}: traffic policy Local and no endpoint on this node: dropped")
        }
        Verdict::DropSourceRange => {
            format!("{svc}: the source is outside loadBalancerSourceRanges: dropped")
        }
        v => format!("verdict {}", v.label()),
    };
    Ok(Trace {
        version: TRACE_SCHEMA_VERSION,
        entry,
        input,
        output,
        steps,
        verdict: verdict.label(),
        action: action_of(verdict),
        frontend: frontend.map(FrontendInfo::of),
        flow: flow_of(verdict),
        backend,
        candidates,
        masquerade,
        rule,
    })
}

/// The trace as text.
pub fn render(t: &Trace) -> String {
    let mut s = String::new();
    let flags = t
        .input
        .tcp_flags
        .as_deref()
        .map(|f| format!(" [{f}]"))
        .unwrap_or_default();
    s += &format!(
        "PACKET    {} -> {} {}{flags}, entering through the {} interface\n",
        t.input.src,
        t.input.dst,
        t.input.protocol,
        match t.entry {
            Entry::Pod => "pod",
            Entry::External => "external",
        }
    );
    if let Some(f) = &t.frontend {
        let name = f
            .service
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        s += &format!("SERVICE   {name}  {} {}/{}", f.kind, f.address, f.protocol);
        if !f.flags.is_empty() {
            s += &format!("  [{}]", f.flags.join(","));
        }
        s.push('\n');
    }
    for step in &t.steps {
        s += &format!(
            "PROGRAM   {} ({}): {} {}\n",
            step.program,
            step.hook,
            step.result,
            step.verdict.unwrap_or("-")
        );
    }
    s += &format!("VERDICT   {} ({})\n", t.verdict, t.action);
    if let Some(b) = &t.backend {
        s += &format!(
            "BACKEND   {b}{}\n",
            t.flow.map(|f| format!(" ({f} flow)")).unwrap_or_default()
        );
    }
    if !t.candidates.is_empty() && t.flow == Some("new") {
        s += &format!("NEW FLOWS may get any of {}\n", t.candidates.join(", "));
    }
    if let Some(m) = &t.masquerade {
        s += &format!("SOURCE    masqueraded to {m}\n");
    }
    if let Some(o) = &t.output {
        let flags = o
            .tcp_flags
            .as_deref()
            .map(|f| format!(" [{f}]"))
            .unwrap_or_default();
        let icmp = o
            .icmp
            .map(|(t, c)| format!(" ICMP type {t} code {c}"))
            .unwrap_or_default();
        s += &format!(
            "OUT       {} -> {} {}{flags}{icmp}\n",
            o.src, o.dst, o.protocol
        );
    }
    s += &format!("WHY       {}\n", t.rule);
    s
}

/// `ADDR`, `ADDR:PORT`, `IPV6` or `[IPV6]:PORT` (svcctl trace --from).
pub fn parse_source(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|a| (a, None))
        .map_err(|_| format!("{s:?} is not an address, ADDRESS:PORT or [IPV6]:PORT"))
}

/// `ADDR:PORT` or `[IPV6]:PORT` (svcctl trace --to).
pub fn parse_destination(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("{s:?} is not ADDRESS:PORT (e.g. 10.96.0.10:80, or [fd00:10:96::10]:80)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_source("10.244.1.20").unwrap(),
            (Ipv4Addr::new(10, 244, 1, 20).into(), None)
        );
        assert_eq!(
            parse_source(" 10.244.1.20:4000 ").unwrap(),
            (Ipv4Addr::new(10, 244, 1, 20).into(), Some(4000))
        );
        let v6: IpAddr = "fd00:10:244:1::20".parse().unwrap();
        assert_eq!(parse_source("fd00:10:244:1::20").unwrap(), (v6, None));
        assert_eq!(parse_source("[fd00:10:244:1::20]").unwrap(), (v6, None));
        assert_eq!(
            parse_source("[fd00:10:244:1::20]:4000").unwrap(),
            (v6, Some(4000))
        );
        assert!(parse_source("pod-a").is_err());
        assert_eq!(
            parse_destination("10.96.0.10:80").unwrap(),
            "10.96.0.10:80".parse().unwrap()
        );
        assert_eq!(
            parse_destination("[fd00:10:96::10]:80").unwrap(),
            "[fd00:10:96::10]:80".parse().unwrap()
        );
        assert!(parse_destination("10.96.0.10").is_err());
        assert!(parse_destination("fd00:10:96::10").is_err());
    }

    #[test]
    fn ipv6_frames_are_described() {
        let src: SocketAddrV6 = "[fd00:10:244:1::20]:40000".parse().unwrap();
        let dst: SocketAddrV6 = "[fd00:10:96::10]:80".parse().unwrap();
        let syn = info(&Ipv6Builder::tcp(src, dst).flags(SYN).build()).unwrap();
        assert_eq!(syn.src, "[fd00:10:244:1::20]:40000");
        assert_eq!(syn.dst, "[fd00:10:96::10]:80");
        assert_eq!(syn.protocol, "TCP");
        assert_eq!(syn.tcp_flags.as_deref(), Some("S"));
        let ns = info(
            &Ipv6Builder::neighbor_solicitation(*src.ip(), *dst.ip(), [2, 0, 0, 0, 0, 1]).build(),
        )
        .unwrap();
        assert_eq!(ns.protocol, "ICMPv6");
        assert_eq!(ns.icmp, Some((135, 0)));
        assert_eq!(info(&[0u8; 20]), None);
    }

    fn sample() -> Trace {
        Trace {
            version: TRACE_SCHEMA_VERSION,
            entry: Entry::Pod,
            input: PacketInfo {
                src: "10.244.1.20:40000".into(),
                dst: "10.96.0.10:80".into(),
                protocol: "TCP".into(),
                tcp_flags: Some("S".into()),
                icmp: None,
            },
            steps: vec![Step {
                program: svc_common::TC_PROG,
                hook: "tc",
                result: "TC_ACT_OK".into(),
                verdict: Some("dnat_new"),
                output: None,
            }],
            verdict: "dnat_new",
            action: "translated",
            frontend: None,
            flow: Some("new"),
            backend: Some("10.244.1.11:8080".into()),
            candidates: vec!["10.244.1.11:8080".into(), "10.244.1.12:8080".into()],
            masquerade: None,
            output: None,
            rule: "new flow".into(),
        }
    }

    #[test]
    fn render_says_verdict_backend_and_why() {
        let text = render(&sample());
        for want in [
            "PACKET    10.244.1.20:40000 -> 10.96.0.10:80 TCP [S], entering through the pod interface",
            "PROGRAM   svc_tc_ingress (tc): TC_ACT_OK dnat_new",
            "VERDICT   dnat_new (translated)",
            "BACKEND   10.244.1.11:8080 (new flow)",
            "NEW FLOWS may get any of 10.244.1.11:8080, 10.244.1.12:8080",
            "WHY       new flow",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }

    #[test]
    fn json_field_names_are_stable() {
        let v = serde_json::to_value(sample()).unwrap();
        for key in [
            "version",
            "entry",
            "input",
            "steps",
            "verdict",
            "action",
            "frontend",
            "flow",
            "backend",
            "candidates",
            "masquerade",
            "output",
            "rule",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        assert_eq!(v["entry"], "pod");
    }
}
