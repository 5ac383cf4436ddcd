//! The figures of a run as the report's parts read them: the floor, the svc_xdp rows of a
//! case, install times, the agent's memory, and the end-to-end runs as medians over rounds.
use std::collections::{BTreeMap, BTreeSet};

use crate::results::{E2eRun, InstallTime, Memory, PacketCost, Results, median};

/// The program whose per-packet cost the goals are about.
pub(super) const XDP: &str = "svc_xdp";
/// Scale goals compare against this many Services at the largest count.
pub(super) const FULL_SCALE: usize = 100_000;

/// The floor: the empty program's median per packet, from its run with the largest repeat
/// (a repeat = 1 run of it, if any, measures the harness, not the floor).
pub(super) fn floor(r: &Results) -> Option<&PacketCost> {
    r.packet
        .iter()
        .filter(|p| p.case == "floor" && p.median_ns > 0.0)
        .max_by_key(|p| (p.program == "svc_bench_pass", p.repeat))
}

/// The svc_xdp rows of `case`, by Service count (the first row of each count).
pub(super) fn xdp_case<'a>(r: &'a Results, case: &str) -> BTreeMap<usize, &'a PacketCost> {
    xdp_case_of(r, XDP, case)
}

/// The rows of `program` (e.g. `svc_xdp@baseline`) and `case`, by Service count.
pub(super) fn xdp_case_of<'a>(
    r: &'a Results,
    program: &str,
    case: &str,
) -> BTreeMap<usize, &'a PacketCost> {
    let mut m = BTreeMap::new();
    for p in r
        .packet
        .iter()
        .filter(|p| p.program == program && p.case == case)
    {
        m.entry(p.services).or_insert(p);
    }
    m
}

/// The install time of `layout` at `services`: the median of its rows, preferring rows with
/// 10 endpoints per Service; with the endpoints per Service it is for.
pub(super) fn install_time(r: &Results, layout: &str, services: usize) -> Option<(f64, usize)> {
    let rows: Vec<&InstallTime> = r
        .programming
        .install
        .iter()
        .filter(|i| i.layout == layout && i.services == services)
        .collect();
    let ten: Vec<&InstallTime> = rows
        .iter()
        .copied()
        .filter(|i| i.endpoints_per_service == 10)
        .collect();
    let pick = if ten.is_empty() { rows } else { ten };
    let first = pick.first()?;
    let secs = median(&pick.iter().map(|i| i.seconds).collect::<Vec<_>>());
    Some((secs, first.endpoints_per_service))
}

/// The agent's memory at `services`: the largest of the rows that name the agent (else of
/// all rows) at that count.
pub(super) fn agent_memory(r: &Results, services: usize) -> Option<&Memory> {
    let at: Vec<&Memory> = r.memory.iter().filter(|m| m.services == services).collect();
    let agent: Vec<&Memory> = at
        .iter()
        .copied()
        .filter(|m| m.what.to_ascii_lowercase().contains("agent"))
        .collect();
    let pick = if agent.is_empty() { at } else { agent };
    pick.into_iter().max_by_key(|m| m.bytes)
}

/// Sort key of a layout: ours first, then iptables, then nftables, then the rest by name.
pub(super) fn layout_key(l: &str) -> (u8, String) {
    let rank = if l.starts_with("ebpf") {
        0
    } else if l.starts_with("iptables") {
        1
    } else if l.starts_with("nft") {
        2
    } else {
        3
    };
    (rank, l.to_string())
}

/// The distinct layouts among `names`, in [`layout_key`] order (ours first).
pub(super) fn layouts<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut l = distinct(names.into_iter().map(String::from));
    l.sort_by_key(|x| layout_key(x));
    l
}

pub(super) fn distinct<T: Ord + Clone>(it: impl IntoIterator<Item = T>) -> Vec<T> {
    it.into_iter()
        .collect::<BTreeSet<T>>()
        .into_iter()
        .collect()
}

/// Medians over the rounds of one layout × Service count × mode.
pub(super) struct E2eGroup {
    pub(super) layout: String,
    pub(super) services: usize,
    pub(super) mode: String,
    pub(super) rounds: usize,
    pub(super) rate: f64,
    pub(super) connect_p50_us: f64,
    pub(super) connect_p99_us: f64,
    pub(super) request_p50_us: f64,
    pub(super) request_p99_us: f64,
    pub(super) errors: u64,
    pub(super) duration_s: f64,
    /// CPU µs per connection (paced runs; None where the CPU was not measured): the
    /// median over rounds, and the lowest and highest round.
    pub(super) cpu_us: Option<f64>,
    pub(super) cpu_us_range: Option<(f64, f64)>,
    /// Of it, µs in our BPF programs (paced runs of the ebpf layouts).
    pub(super) bpf_us: Option<f64>,
}

/// (layout sort key, Services, mode).
type E2eKey = ((u8, String), usize, String);

pub(super) fn e2e_groups(r: &Results) -> Vec<E2eGroup> {
    let mut by: BTreeMap<E2eKey, Vec<&E2eRun>> = BTreeMap::new();
    for e in &r.e2e {
        by.entry((layout_key(&e.layout), e.services, e.mode.clone()))
            .or_default()
            .push(e);
    }
    by.into_iter()
        .map(|((layout, services, mode), runs)| {
            let med =
                |f: &dyn Fn(&E2eRun) -> f64| median(&runs.iter().map(|e| f(e)).collect::<Vec<_>>());
            // CPU µs per connection of each round that measured it.
            let cpu: Vec<f64> = runs
                .iter()
                .filter_map(|e| e.report.cpu_us_per_request())
                .collect();
            E2eGroup {
                layout: layout.1,
                services,
                mode,
                rounds: runs.len(),
                rate: med(&|e| e.report.rate_per_s),
                connect_p50_us: med(&|e| e.report.connect_p50_us as f64),
                connect_p99_us: med(&|e| e.report.connect_p99_us as f64),
                request_p50_us: med(&|e| e.report.request_p50_us as f64),
                request_p99_us: med(&|e| e.report.request_p99_us as f64),
                errors: runs.iter().map(|e| e.report.errors).sum(),
                duration_s: med(&|e| e.report.duration.as_secs_f64()),
                cpu_us: (!cpu.is_empty()).then(|| median(&cpu)),
                cpu_us_range: cpu.iter().fold(None, |r: Option<(f64, f64)>, &x| {
                    Some(r.map_or((x, x), |(lo, hi)| (lo.min(x), hi.max(x))))
                }),
                bpf_us: {
                    let per: Vec<f64> = runs
                        .iter()
                        .filter_map(|e| e.bpf_us_per_connection)
                        .collect();
                    (!per.is_empty()).then(|| median(&per))
                },
            }
        })
        .collect()
}

/// The groups of the `new_connections` runs (one request per connection).
pub(super) fn new_conn_groups(r: &Results) -> Vec<E2eGroup> {
    e2e_groups(r)
        .into_iter()
        .filter(|g| g.mode == "new_connections")
        .collect()
}
