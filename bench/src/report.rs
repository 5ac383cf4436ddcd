//! What `cargo xtask bench` makes of a [`Results`]: the benchmark's goals evaluated on the
//! run's own figures ([`goals`]), the files of a run ([`write`]: the JSON, a markdown report
//! and three PNG plots) and the summary printed at the end ([`summary`]).
//!
//! The plots are drawn with `plotters` on its bitmap backend; their text goes through
//! `ab_glyph` with the TTF file [`FONT_PATH`] (Debian's `fonts-dejavu-core`, installed by
//! `cargo xtask setup`), read at run time, so no system font library is involved. Without
//! that file the plots are not written, the JSON and the markdown still are, and [`write`]
//! fails with a [`PlotsNotWritten`] naming what was written.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{E2eRun, Goal, InstallTime, Memory, PacketCost, Results, median};

/// The font of the plots' text: DejaVu Sans from Debian's `fonts-dejavu-core`.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Overrides [`FONT_PATH`] (any TTF/OTF file), e.g. on a system without that package.
pub const FONT_ENV: &str = "SVC_BENCH_FONT";

/// The program whose per-packet cost the goals are about.
const XDP: &str = "svc_xdp";
/// Scale goals compare against this many Services at the largest count.
const FULL_SCALE: usize = 100_000;
/// Bytes in one MB, as the memory goal and the report use it (decimal megabytes).
const MB: f64 = 1_000_000.0;

// ---------------------------------------------------------------------------------------------
// Goals.

/// Evaluates the benchmark's goals on `r` (fills nothing else).
pub fn goals(r: &Results) -> Vec<Goal> {
    vec![
        cost_goal(r, "established-flow cost", "established", 3.0),
        cost_goal(r, "new-flow cost", "new_flow", 5.0),
        scale_goal(r, "scale: established", "established"),
        scale_goal(r, "scale: new flow", "new_flow"),
        rate_goal(r, 10_000, "iptables", 1.3),
        rate_goal(r, 10_000, "nftables", 1.0),
        one_service_goal(r),
        install_goal(r, "iptables-legacy-restore", 5.0),
        install_goal(r, "nft -f", 100.0),
        change_goal(r),
        memory_goal(r),
    ]
}

fn goal(name: &str, target: String) -> Goal {
    Goal {
        name: name.into(),
        target,
        ..Default::default()
    }
}

fn not_measured(mut g: Goal, note: String) -> Goal {
    g.measured = "-".into();
    g.met = None;
    g.note = note;
    g
}

/// The floor: the empty program's median per packet, from its run with the largest repeat
/// (a repeat = 1 run of it, if any, measures the harness, not the floor).
fn floor(r: &Results) -> Option<&PacketCost> {
    r.packet
        .iter()
        .filter(|p| p.case == "floor" && p.median_ns > 0.0)
        .max_by_key(|p| (p.program == "svc_bench_pass", p.repeat))
}

/// The svc_xdp rows of `case`, by Service count (the first row of each count).
fn xdp_case<'a>(r: &'a Results, case: &str) -> BTreeMap<usize, &'a PacketCost> {
    let mut m = BTreeMap::new();
    for p in r
        .packet
        .iter()
        .filter(|p| p.program == XDP && p.case == case)
    {
        m.entry(p.services).or_insert(p);
    }
    m
}

fn cost_goal(r: &Results, name: &str, case: &str, limit: f64) -> Goal {
    let g = goal(name, format!("<= {limit:.1}x the empty program"));
    let Some(fl) = floor(r) else {
        return not_measured(g, "no floor (empty program) figure in this run".into());
    };
    let rows = xdp_case(r, case);
    let Some((&services, p)) = rows.iter().next() else {
        return not_measured(g, format!("no {XDP} `{case}` figure in this run"));
    };
    let ratio = p.net_median_ns / fl.median_ns;
    let mut g = g;
    g.measured = format!(
        "{} ({} ns vs {} ns)",
        fmt_ratio(ratio),
        fmt_ns(p.net_median_ns),
        fmt_ns(fl.median_ns)
    );
    g.met = Some(ratio <= limit);
    g.note = format!("{XDP}, {} Services", fmt_count(services));
    if let Some(h) = p.harness_ns {
        let _ = write!(
            g.note,
            "; net of {} ns harness overhead (repeat 1)",
            fmt_ns(h)
        );
    }
    g
}

fn scale_goal(r: &Results, name: &str, case: &str) -> Goal {
    let g = goal(
        name,
        format!(
            "cost at {} Services <= 1.15x cost at 10",
            fmt_count(FULL_SCALE)
        ),
    );
    let rows = xdp_case(r, case);
    let (Some((&lo, lo_p)), Some((&hi, hi_p))) = (rows.iter().next(), rows.iter().next_back())
    else {
        return not_measured(g, format!("no {XDP} `{case}` figure in this run"));
    };
    if lo == hi {
        return not_measured(
            g,
            format!("only one Service count measured ({})", fmt_count(lo)),
        );
    }
    let ratio = hi_p.net_median_ns / lo_p.net_median_ns;
    let mut g = g;
    g.measured = format!(
        "{} ({} ns at {} vs {} ns at {} Services)",
        fmt_ratio(ratio),
        fmt_ns(hi_p.net_median_ns),
        fmt_count(hi),
        fmt_ns(lo_p.net_median_ns),
        fmt_count(lo)
    );
    if hi < FULL_SCALE {
        g.met = None;
        g.note = format!(
            "largest count measured is {} (< {}; --quick?): ratio shown, goal not judged",
            fmt_count(hi),
            fmt_count(FULL_SCALE)
        );
    } else {
        g.met = Some(ratio <= 1.15);
        g.note = format!("net ns per packet, {XDP}");
    }
    g
}

/// Medians over rounds of the `new_connections` rate per layout at `services`, with the
/// rounds and errors they came from.
struct Rate {
    rate: f64,
    rounds: usize,
    errors: u64,
}

fn new_conn_rate(r: &Results, layout: &str, services: usize) -> Option<Rate> {
    let runs: Vec<&E2eRun> = r
        .e2e
        .iter()
        .filter(|e| e.mode == "new_connections" && e.services == services && e.layout == layout)
        .collect();
    if runs.is_empty() {
        return None;
    }
    Some(Rate {
        rate: median(&runs.iter().map(|e| e.report.rate_per_s).collect::<Vec<_>>()),
        rounds: runs.len(),
        errors: runs.iter().map(|e| e.report.errors).sum(),
    })
}

fn rate_note(parts: &[(&str, &Rate)]) -> String {
    let rounds: Vec<String> = parts
        .iter()
        .map(|(l, x)| {
            let mut s = format!("{l} {} rounds", x.rounds);
            if x.errors > 0 {
                let _ = write!(s, ", {} errors", fmt_count(x.errors as usize));
            }
            s
        })
        .collect();
    format!("medians over rounds ({})", rounds.join("; "))
}

fn rate_goal(r: &Results, services: usize, other: &str, limit: f64) -> Goal {
    let name = format!(
        "new connections at {}k Services vs {other}",
        services / 1000
    );
    let g = goal(&name, format!(">= {limit:.1}x {other}"));
    let (Some(ours), Some(theirs)) = (
        new_conn_rate(r, "ebpf", services),
        new_conn_rate(r, other, services),
    ) else {
        return not_measured(
            g,
            format!(
                "no new_connections runs of both ebpf and {other} at {} Services",
                fmt_count(services)
            ),
        );
    };
    let ratio = ours.rate / theirs.rate;
    let mut g = g;
    g.measured = format!(
        "{} ({}/s vs {}/s)",
        fmt_ratio(ratio),
        fmt_count(ours.rate.round() as usize),
        fmt_count(theirs.rate.round() as usize)
    );
    g.met = Some(ratio >= limit);
    g.note = rate_note(&[("ebpf", &ours), (other, &theirs)]);
    g
}

fn one_service_goal(r: &Results) -> Goal {
    let g = goal(
        "new connections at 1 Service",
        "no slower than either: >= 1.0x iptables and >= 1.0x nftables".into(),
    );
    let (Some(ours), Some(ipt), Some(nft)) = (
        new_conn_rate(r, "ebpf", 1),
        new_conn_rate(r, "iptables", 1),
        new_conn_rate(r, "nftables", 1),
    ) else {
        return not_measured(
            g,
            "no new_connections runs of all of ebpf, iptables and nftables at 1 Service".into(),
        );
    };
    let (a, b) = (ours.rate / ipt.rate, ours.rate / nft.rate);
    let mut g = g;
    g.measured = format!(
        "{} iptables, {} nftables ({}/s vs {}/s, {}/s)",
        fmt_ratio(a),
        fmt_ratio(b),
        fmt_count(ours.rate.round() as usize),
        fmt_count(ipt.rate.round() as usize),
        fmt_count(nft.rate.round() as usize)
    );
    g.met = Some(a >= 1.0 && b >= 1.0);
    g.note = rate_note(&[("ebpf", &ours), ("iptables", &ipt), ("nftables", &nft)]);
    g
}

/// The install time of `layout` at `services`: the median of its rows, preferring rows with
/// 10 endpoints per Service; with the endpoints per Service it is for.
fn install_time(r: &Results, layout: &str, services: usize) -> Option<(f64, usize)> {
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

fn install_goal(r: &Results, other: &str, limit: f64) -> Goal {
    let name = format!("install 10k Services x 10 endpoints vs {other}");
    let g = goal(&name, format!(">= {limit:.0}x faster than {other}"));
    let (Some((ours, eps)), Some((theirs, their_eps))) = (
        install_time(r, "ebpf", 10_000),
        install_time(r, other, 10_000),
    ) else {
        return not_measured(
            g,
            format!("no install times of both ebpf and `{other}` at 10,000 Services"),
        );
    };
    if ours <= 0.0 {
        return not_measured(g, "the ebpf install time is 0 s: not a measurement".into());
    }
    let ratio = theirs / ours;
    let mut g = g;
    g.measured = format!(
        "{} ({} vs {})",
        fmt_ratio(ratio),
        fmt_secs(ours),
        fmt_secs(theirs)
    );
    g.met = Some(ratio >= limit);
    g.note = if eps == 10 && their_eps == 10 {
        "ebpf: agent start to every frontend in the maps, including the initial lists over HTTP"
            .into()
    } else {
        format!("endpoints per Service: ebpf {eps}, {other} {their_eps} (goal is for 10)")
    };
    // The agent's own programming (model to maps), the part comparable to a restore of a
    // ready rule set.
    if let Some((sync, _)) = install_time(r, "ebpf-sync", 10_000)
        && sync > 0.0
    {
        g.note = format!(
            "{}; the agent's programming alone (model to maps, {}) is {} faster",
            g.note,
            fmt_secs(sync),
            fmt_ratio(theirs / sync)
        );
    }
    g
}

fn change_goal(r: &Results) -> Goal {
    let g = goal("endpoint change visible", "p99 < 50 ms".into());
    let Some(c) = &r.programming.endpoint_change else {
        return not_measured(g, "endpoint change latency not measured in this run".into());
    };
    if c.changes == 0 && c.samples_ms.is_empty() {
        return not_measured(g, "no endpoint change was measured".into());
    }
    let mut g = g;
    g.measured = format!(
        "{} ms (p50 {} ms, max {} ms)",
        fmt_trim(c.p99_ms, 3),
        fmt_trim(c.p50_ms, 3),
        fmt_trim(c.max_ms, 3)
    );
    g.met = Some(c.p99_ms < 50.0);
    g.note = format!(
        "{} changes at {} Services x {} endpoints",
        fmt_count(c.changes),
        fmt_count(c.services),
        c.endpoints_per_service
    );
    if !c.profile.is_empty() {
        g.note = format!("{}; {}", g.note, c.profile);
    }
    g
}

/// The agent's memory at `services`: the largest of the rows that name the agent (else of
/// all rows) at that count.
fn agent_memory(r: &Results, services: usize) -> Option<&Memory> {
    let at: Vec<&Memory> = r.memory.iter().filter(|m| m.services == services).collect();
    let agent: Vec<&Memory> = at
        .iter()
        .copied()
        .filter(|m| m.what.to_ascii_lowercase().contains("agent"))
        .collect();
    let pick = if agent.is_empty() { at } else { agent };
    pick.into_iter().max_by_key(|m| m.bytes)
}

fn memory_goal(r: &Results) -> Goal {
    let g = goal(
        "agent RSS at 10k Services",
        "< 150 MB (1 MB = 1,000,000 bytes)".into(),
    );
    let Some(m) = agent_memory(r, 10_000) else {
        return not_measured(g, "no memory figure at 10,000 Services in this run".into());
    };
    let mb = m.bytes as f64 / MB;
    let mut g = g;
    g.measured = format!("{mb:.1} MB ({} bytes)", fmt_count(m.bytes as usize));
    g.met = Some(mb < 150.0);
    g.note = format!(
        "{} ({} endpoints per Service)",
        m.what, m.endpoints_per_service
    );
    g
}

/// The goals recorded in `r`, or evaluated now if none were.
fn goals_of(r: &Results) -> Vec<Goal> {
    if r.goals.is_empty() {
        goals(r)
    } else {
        r.goals.clone()
    }
}

fn verdict(g: &Goal) -> &'static str {
    match g.met {
        Some(true) => "MET",
        Some(false) => "MISSED",
        None => "NOT MEASURED",
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting.

/// `12345` → `12,345`.
fn fmt_count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2.10x`; fewer decimals for large ratios (`21.7x`, `217x`).
fn fmt_ratio(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}x")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}x")
    } else {
        format!("{x:.2}x")
    }
}

/// Nanoseconds: one decimal below 1,000, whole numbers (with separators) above.
fn fmt_ns(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 1000.0 {
        fmt_count(x.round() as usize)
    } else {
        format!("{x:.1}")
    }
}

/// `x` with `digits` significant digits (no exponent), e.g. 0.00512 → `0.00512`, 1337 → `1337`.
fn fmt_sig(x: f64, digits: i32) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    let decimals = (digits - 1 - mag).max(0) as usize;
    format!("{x:.decimals$}")
}

/// `fmt_sig` without trailing zeros after the decimal point (4.30 → `4.3`, 10.0 → `10`).
fn fmt_trim(x: f64, digits: i32) -> String {
    let s = fmt_sig(x, digits);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_secs(x: f64) -> String {
    format!("{} s", fmt_trim(x, 3))
}

fn fmt_mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MB)
}

/// A markdown table cell: no line breaks, `|` escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn row(out: &mut String, cells: &[String]) {
    let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn header(out: &mut String, cols: &[&str]) {
    let _ = writeln!(out, "| {} |", cols.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(cols.len()));
}

/// Sort key of a layout: ours first, then iptables, then nftables, then the rest by name.
fn layout_key(l: &str) -> (u8, String) {
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

fn program_key(p: &str) -> u8 {
    match p {
        "svc_bench_pass" => 0,
        "svc_xdp" => 1,
        "svc_tc_ingress" => 2,
        _ => 3,
    }
}

fn case_key(c: &str) -> u8 {
    match c {
        "floor" => 0,
        "non_service" => 1,
        "established" => 2,
        "new_flow" => 3,
        _ => 4,
    }
}

/// The date part of an RFC 3339 time, or the whole text.
fn date_of(t: &str) -> &str {
    t.get(..10).unwrap_or(t)
}

// ---------------------------------------------------------------------------------------------
// Aggregated e2e figures.

/// Medians over the rounds of one layout × Service count × mode.
struct E2eGroup {
    layout: String,
    services: usize,
    mode: String,
    rounds: usize,
    rate: f64,
    connect_p50_us: f64,
    connect_p99_us: f64,
    request_p50_us: f64,
    request_p99_us: f64,
    errors: u64,
    duration_s: f64,
}

/// (layout sort key, Services, mode).
type E2eKey = ((u8, String), usize, String);

fn e2e_groups(r: &Results) -> Vec<E2eGroup> {
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
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The markdown report.

fn markdown(r: &Results, stamp: &str, plots: &PlotOutcome) -> String {
    let mut o = String::new();
    let date = if r.started.is_empty() {
        stamp
    } else {
        date_of(&r.started)
    };
    let _ = writeln!(o, "# svc-ebpf benchmark, {date}\n");
    let _ = writeln!(
        o,
        "Run `{stamp}`: started {}, finished {}{}. Every figure and every ratio below comes \
         from this one run.\n",
        or_dash(&r.started),
        or_dash(&r.finished),
        if r.quick {
            " (`--quick`: fewer Service counts, shorter runs)"
        } else {
            ""
        }
    );

    how_measured(&mut o, r);

    // Goals.
    let _ = writeln!(o, "## Goals\n");
    header(&mut o, &["goal", "target", "measured", "result", "note"]);
    for g in goals_of(r) {
        let result = match g.met {
            Some(true) => "MET",
            Some(false) => "**MISSED**",
            None => "not measured",
        };
        row(
            &mut o,
            &[
                g.name.clone(),
                g.target.clone(),
                g.measured.clone(),
                result.into(),
                g.note.clone(),
            ],
        );
    }
    o.push('\n');

    packet_section(&mut o, r, stamp, plots);
    e2e_section(&mut o, r, stamp, plots);
    programming_section(&mut o, r, stamp, plots);
    memory_section(&mut o, r);

    // Machine.
    let m = &r.machine;
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "- kernel: {}", or_dash(&m.kernel));
    let _ = writeln!(o, "- CPUs: {}", m.cpus);
    let _ = writeln!(o, "- CPU model: {}", or_dash(&m.cpu_model));
    let _ = writeln!(o, "- memory: {} MiB\n", fmt_count(m.memory_mib as usize));

    // Notes.
    let _ = writeln!(o, "## Notes\n");
    let mut notes: Vec<String> = r.notes.clone();
    if let Some(e) = &plots.error {
        notes.push(format!("plots not written: {e}"));
    }
    if notes.is_empty() {
        let _ = writeln!(o, "None: every section ran.");
    }
    for n in notes {
        let _ = writeln!(o, "- {}", n.replace('\n', " "));
    }
    o
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn distinct<T: Ord + Clone>(it: impl IntoIterator<Item = T>) -> Vec<T> {
    it.into_iter()
        .collect::<BTreeSet<T>>()
        .into_iter()
        .collect()
}

/// `10, 1,000 or 100,000`.
fn join_counts(v: &[usize]) -> String {
    let s: Vec<String> = v.iter().map(|&n| fmt_count(n)).collect();
    match s.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn how_measured(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## How it was measured\n");
    let p = &r.programming;
    if r.packet.is_empty()
        && r.e2e.is_empty()
        && p.install.is_empty()
        && p.endpoint_change.is_none()
        && r.memory.is_empty()
    {
        let _ = writeln!(o, "Nothing was measured in this run (see the notes).\n");
        return;
    }

    if !r.packet.is_empty() {
        let repeats = distinct(r.packet.iter().map(|p| p.repeat));
        let runs = distinct(r.packet.iter().map(|p| p.runs_ns.len()));
        let counts = distinct(
            r.packet
                .iter()
                .filter(|p| p.services > 0)
                .map(|p| p.services),
        );
        let harness = distinct(
            r.packet
                .iter()
                .filter(|p| p.case != "floor")
                .filter_map(|p| p.harness_ns.map(fmt_ns)),
        );
        let all_checked = r.packet.iter().all(|p| !p.verified.trim().is_empty());
        let _ = write!(
            o,
            "**Per packet.** Each program runs in the kernel under `BPF_PROG_TEST_RUN` with \
             its maps filled with {} Services. One call runs the program `repeat` times \
             (repeat {}) and the kernel reports the time per run; a row is the median (and \
             min, max) over {} such runs, with the measuring thread pinned to one CPU. The \
             floor is the empty XDP program (`svc_bench_pass`). New flows run with repeat 1, \
             since every packet must be a new flow; there the kernel's timer cost per call is \
             part of the figure, so that harness overhead, measured the same way on the empty \
             program",
            join_counts(&counts),
            join_counts(&repeats.iter().map(|&n| n as usize).collect::<Vec<_>>()),
            runs.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        );
        if !harness.is_empty() {
            let _ = write!(o, " ({} ns)", harness.join(", "));
        }
        let _ = writeln!(
            o,
            ", is subtracted to give `net`; elsewhere `net` is the median. {}\n",
            if all_checked {
                "Every case's outputs were checked (how: the `checked` column)."
            } else {
                "Outputs were checked where the `checked` column says how; rows without it \
                 were not checked."
            }
        );
    }

    if !r.e2e.is_empty() {
        let counts = distinct(r.e2e.iter().map(|e| e.services));
        let layouts = {
            let mut l = distinct(r.e2e.iter().map(|e| e.layout.clone()));
            l.sort_by_key(|x| layout_key(x));
            l
        };
        let rounds = r.e2e.iter().map(|e| e.round + 1).max().unwrap_or(0);
        let dur = median(
            &r.e2e
                .iter()
                .map(|e| e.report.duration.as_secs_f64())
                .collect::<Vec<_>>(),
        );
        let _ = write!(
            o,
            "**End to end.** In the lab of network namespaces: a client pod → the node, which \
             translates the Service either with netfilter rules laid out as kube-proxy lays \
             them out or with our programs → three nginx pods (one worker, `return 200`). \
             Each rule set holds {} Services, the measured one last. The load is 16 concurrent \
             connections for about {} s a run; `new_connections` makes one request per \
             connection (so every request's first packet crosses the Service translation)",
            join_counts(&counts),
            fmt_sig(dur, 2),
        );
        if r.e2e.iter().any(|e| e.mode == "keepalive") {
            let _ = write!(o, ", `keepalive` reuses connections");
        }
        let _ = write!(
            o,
            ". The layouts ({}) alternate over {} rounds; the tables show medians over the \
             rounds. ",
            layouts.join(", "),
            rounds
        );
        if layouts.iter().any(|l| l.starts_with("iptables")) {
            let _ = write!(
                o,
                "The iptables layout is loaded with `iptables-legacy-restore`: through \
                 Debian's default nft backend, `iptables-restore` takes 22 minutes at 10,000 \
                 Services on this kind of machine. "
            );
        }
        let _ = writeln!(
            o,
            "Client, node and backends share the machine's {} CPUs.\n",
            r.machine.cpus
        );
    }

    if !p.install.is_empty() || p.endpoint_change.is_some() {
        let _ = write!(o, "**Programming.** ");
        if !p.install.is_empty() {
            let mut whats: Vec<(String, String)> =
                distinct(p.install.iter().map(|i| (i.layout.clone(), i.what.clone())));
            whats.sort_by_key(|(l, _)| layout_key(l));
            let _ = write!(
                o,
                "Install time is from nothing to the whole rule set (or the maps) for the \
                 given Services; "
            );
            let parts: Vec<String> = whats
                .iter()
                .map(|(l, w)| format!("`{l}`: {}", if w.is_empty() { "-" } else { w }))
                .collect();
            let _ = write!(o, "{}. ", parts.join("; "));
        }
        if let Some(c) = &p.endpoint_change {
            let _ = write!(
                o,
                "Endpoint change latency is from an EndpointSlice change at the API server to \
                 the datapath using it, p50/p99/max over {} changes at {} Services × {} \
                 endpoints.",
                fmt_count(c.changes),
                fmt_count(c.services),
                c.endpoints_per_service
            );
        }
        o.push_str("\n\n");
    }

    if !r.memory.is_empty() {
        let whats = distinct(r.memory.iter().map(|m| m.what.clone()));
        let _ = writeln!(o, "**Memory.** {}; MB are 10^6 bytes.\n", whats.join("; "));
    }
}

fn plot_link(o: &mut String, stamp: &str, kind: &str, alt: &str, plots: &PlotOutcome) {
    let file = format!("{stamp}-{kind}.png");
    if plots
        .written
        .iter()
        .any(|p| p.file_name().is_some_and(|n| n == file.as_str()))
    {
        let _ = writeln!(o, "![{alt}]({file})\n");
    } else {
        let _ = writeln!(o, "(plot `{file}` not written; see the notes)\n");
    }
}

fn packet_section(o: &mut String, r: &Results, stamp: &str, plots: &PlotOutcome) {
    let _ = writeln!(o, "## Per-packet cost (BPF_PROG_TEST_RUN)\n");
    if r.packet.is_empty() {
        let _ = writeln!(o, "Not measured in this run (see the notes).\n");
        return;
    }
    let mut rows: Vec<&PacketCost> = r.packet.iter().collect();
    rows.sort_by_key(|p| {
        (
            program_key(&p.program),
            p.program.clone(),
            case_key(&p.case),
            p.services,
            p.repeat,
        )
    });
    header(
        o,
        &[
            "program",
            "case",
            "Services",
            "endpoints/Service",
            "repeat",
            "packets/run",
            "runs",
            "median ns",
            "min ns",
            "max ns",
            "harness ns",
            "net ns",
            "checked",
        ],
    );
    for p in rows {
        row(
            o,
            &[
                format!("`{}`", p.program),
                p.case.clone(),
                fmt_count(p.services),
                p.endpoints_per_service.to_string(),
                fmt_count(p.repeat as usize),
                fmt_count(p.packets_per_run as usize),
                p.runs_ns.len().to_string(),
                fmt_ns(p.median_ns),
                fmt_ns(p.min_ns),
                fmt_ns(p.max_ns),
                p.harness_ns.map_or("-".into(), fmt_ns),
                fmt_ns(p.net_median_ns),
                or_dash(&p.verified).to_string(),
            ],
        );
    }
    o.push('\n');
    plot_link(o, stamp, "packet", "ns per packet vs Services", plots);
}

fn e2e_section(o: &mut String, r: &Results, stamp: &str, plots: &PlotOutcome) {
    let _ = writeln!(o, "## End to end in the lab\n");
    if r.e2e.is_empty() {
        let _ = writeln!(o, "Not measured in this run (see the notes).\n");
        return;
    }
    header(
        o,
        &[
            "layout",
            "Services",
            "mode",
            "rounds",
            "requests/s",
            "connect p50 µs",
            "connect p99 µs",
            "request p50 µs",
            "request p99 µs",
            "errors (all rounds)",
        ],
    );
    for g in e2e_groups(r) {
        row(
            o,
            &[
                g.layout.clone(),
                fmt_count(g.services),
                g.mode.clone(),
                g.rounds.to_string(),
                fmt_count(g.rate.round() as usize),
                fmt_count(g.connect_p50_us.round() as usize),
                fmt_count(g.connect_p99_us.round() as usize),
                fmt_count(g.request_p50_us.round() as usize),
                fmt_count(g.request_p99_us.round() as usize),
                fmt_count(g.errors as usize),
            ],
        );
    }
    let _ = writeln!(
        o,
        "\nMedians over rounds; a run lasted about {} s.\n",
        fmt_sig(
            median(
                &e2e_groups(r)
                    .iter()
                    .map(|g| g.duration_s)
                    .collect::<Vec<_>>()
            ),
            2
        )
    );
    plot_link(o, stamp, "e2e", "new connections/s per layout", plots);
}

fn programming_section(o: &mut String, r: &Results, stamp: &str, plots: &PlotOutcome) {
    let p = &r.programming;
    let _ = writeln!(o, "## Programming time\n");
    if p.install.is_empty() {
        let _ = writeln!(
            o,
            "Install times not measured in this run (see the notes).\n"
        );
    } else {
        let mut rows: Vec<&InstallTime> = p.install.iter().collect();
        rows.sort_by_key(|i| (i.services, layout_key(&i.layout)));
        header(
            o,
            &["layout", "Services", "endpoints/Service", "seconds", "what"],
        );
        for i in rows {
            row(
                o,
                &[
                    format!("`{}`", i.layout),
                    fmt_count(i.services),
                    i.endpoints_per_service.to_string(),
                    fmt_trim(i.seconds, 3),
                    or_dash(&i.what).to_string(),
                ],
            );
        }
        o.push('\n');
        plot_link(o, stamp, "install", "install seconds per layout", plots);
    }
    match &p.endpoint_change {
        None => {
            let _ = writeln!(o, "Endpoint change latency not measured in this run.\n");
        }
        Some(c) => {
            let _ = writeln!(
                o,
                "Endpoint change, EndpointSlice at the API server → datapath:\n"
            );
            header(
                o,
                &[
                    "Services",
                    "endpoints/Service",
                    "changes",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                ],
            );
            row(
                o,
                &[
                    fmt_count(c.services),
                    c.endpoints_per_service.to_string(),
                    fmt_count(c.changes),
                    fmt_trim(c.p50_ms, 3),
                    fmt_trim(c.p99_ms, 3),
                    fmt_trim(c.max_ms, 3),
                ],
            );
            o.push('\n');
            if !c.profile.is_empty() {
                let _ = writeln!(o, "Where the time goes ({}).\n", c.profile);
            }
        }
    }
}

fn memory_section(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## Memory\n");
    if r.memory.is_empty() {
        let _ = writeln!(o, "Not measured in this run (see the notes).\n");
        return;
    }
    let mut rows: Vec<&Memory> = r.memory.iter().collect();
    rows.sort_by_key(|m| (m.what.clone(), m.services));
    header(
        o,
        &[
            "what",
            "Services",
            "endpoints/Service",
            "MB (10^6 bytes)",
            "bytes",
        ],
    );
    for m in rows {
        row(
            o,
            &[
                m.what.clone(),
                fmt_count(m.services),
                m.endpoints_per_service.to_string(),
                fmt_mb(m.bytes),
                fmt_count(m.bytes as usize),
            ],
        );
    }
    o.push('\n');
}

// ---------------------------------------------------------------------------------------------
// Writing the files.

/// The plots were not (all) written; the JSON and the markdown were.
#[derive(Debug)]
pub struct PlotsNotWritten {
    /// The files that were written (JSON, markdown, and any plot drawn before the failure).
    pub written: Vec<PathBuf>,
    pub error: String,
}

impl std::fmt::Display for PlotsNotWritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<String> = self
            .written
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        write!(
            f,
            "plots not written: {}; written: {}",
            self.error,
            files.join(", ")
        )
    }
}

impl std::error::Error for PlotsNotWritten {}

struct PlotOutcome {
    written: Vec<PathBuf>,
    error: Option<String>,
}

/// Writes <dir>/<stamp>.json (the Results, pretty), <dir>/<stamp>.md (the report) and PNG plots
/// <dir>/<stamp>-packet.png, -e2e.png, -install.png; returns the paths.
///
/// The plots are drawn first, so the markdown links only those that exist and notes why the
/// others do not. If a plot cannot be drawn (e.g. no font file), the JSON and the markdown are
/// still written and the error is a [`PlotsNotWritten`] listing the files that were.
pub fn write(r: &Results, dir: &Path, stamp: &str) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let plots = match write_plots(r, dir, stamp) {
        Ok(written) => PlotOutcome {
            written,
            error: None,
        },
        Err((written, e)) => PlotOutcome {
            written,
            error: Some(format!("{e:#}")),
        },
    };

    let json_path = dir.join(format!("{stamp}.json"));
    let mut json = serde_json::to_string_pretty(r).context("cannot serialise the results")?;
    json.push('\n');
    std::fs::write(&json_path, json)
        .with_context(|| format!("cannot write {}", json_path.display()))?;

    let md_path = dir.join(format!("{stamp}.md"));
    std::fs::write(&md_path, markdown(r, stamp, &plots))
        .with_context(|| format!("cannot write {}", md_path.display()))?;

    let mut written = vec![json_path, md_path];
    written.extend(plots.written);
    match plots.error {
        None => Ok(written),
        Some(error) => Err(PlotsNotWritten { written, error }.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Plots.

const W: u32 = 1100;
const H: u32 = 650;
const FONT: &str = "sans-serif";

/// Reads the font file at `path` and registers it as plotters' `sans-serif`.
fn register_font_file(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the plots' font {} (Debian package fonts-dejavu-core; \
             `cargo xtask setup` installs it, or set {FONT_ENV} to a TTF file)",
            path.display()
        )
    })?;
    // plotters keeps a &'static reference to the font; it is loaded once per process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a font plotters can read", path.display()))
}

/// Registers the font once per process; later calls return the first outcome.
fn ensure_font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let path = std::env::var_os(FONT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FONT_PATH));
    DONE.get_or_init(|| register_font_file(&path).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn write_plots(
    r: &Results,
    dir: &Path,
    stamp: &str,
) -> Result<Vec<PathBuf>, (Vec<PathBuf>, anyhow::Error)> {
    let mut written = Vec::new();
    if let Err(e) = ensure_font() {
        return Err((written, e));
    }
    type Plot = fn(&Results, &Path) -> anyhow::Result<()>;
    let plots: [(&str, Plot); 3] = [
        ("packet", plot_packet),
        ("e2e", plot_e2e),
        ("install", plot_install),
    ];
    for (kind, f) in plots {
        let path = dir.join(format!("{stamp}-{kind}.png"));
        match f(r, &path) {
            Ok(()) => written.push(path),
            Err(e) => return Err((written, e.context(format!("plot {}", path.display())))),
        }
    }
    Ok(written)
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

/// Lines of a plot: label, colour, points.
type Series<L> = Vec<(L, RGBColor, Vec<(f64, f64)>)>;

const EBPF_COLOR: RGBColor = RGBColor(31, 119, 180);
const IPTABLES_COLOR: RGBColor = RGBColor(230, 120, 20);
const NFTABLES_COLOR: RGBColor = RGBColor(44, 160, 44);
const OTHER_COLORS: [RGBColor; 3] = [
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(214, 39, 40),
];

fn layout_color(l: &str, i: usize) -> RGBColor {
    match layout_key(l).0 {
        0 => EBPF_COLOR,
        1 => IPTABLES_COLOR,
        2 => NFTABLES_COLOR,
        _ => OTHER_COLORS[i % OTHER_COLORS.len()],
    }
}

/// A log axis range from `lo / below` to `hi * above`, so that points at the ends and their
/// labels stay inside the plot, widened around its middle to at least two decades.
fn log_range(lo: f64, hi: f64, below: f64, above: f64) -> std::ops::Range<f64> {
    let mut lo = lo.max(1e-9) / below;
    let mut hi = hi.max(1e-9) * above;
    if hi / lo < 100.0 {
        let widen = (100.0 / (hi / lo)).sqrt();
        lo /= widen;
        hi *= widen;
    }
    lo..hi
}

/// How many powers of ten lie in `r`: as a label hint, it labels only those.
fn decades_in(r: &std::ops::Range<f64>) -> usize {
    (r.end.log10().floor() - r.start.log10().ceil()) as usize + 1
}

/// A text label of a point, in pixels of the whole picture.
struct PointLabel {
    at: (i32, i32),
    text: String,
    color: RGBColor,
}

/// Draws `labels` at `offset` from their points with `pos`, first moving those that would
/// overlap another (points within 70 px of each other horizontally) up (`up`) or down.
fn draw_point_labels(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    mut labels: Vec<PointLabel>,
    offset: (i32, i32),
    pos: Pos,
    up: bool,
) -> anyhow::Result<()> {
    const GAP: i32 = 17;
    // Bottom first when moving up, top first when moving down; each label at least GAP
    // from every label already placed near it.
    labels.sort_by_key(|l| if up { -l.at.1 } else { l.at.1 });
    let step = if up { -2 } else { 2 };
    let mut placed: Vec<(i32, i32)> = Vec::new();
    for l in &labels {
        let mut y = l.at.1 + offset.1;
        loop {
            let clash = placed
                .iter()
                .any(|&(px, py)| (px - l.at.0).abs() < 70 && (py - y).abs() < GAP);
            if !clash {
                break;
            }
            y += step;
        }
        placed.push((l.at.0, y));
        let style = (FONT, 15).into_font().color(&l.color).pos(pos);
        let x = l.at.0 + offset.0;
        // A light box behind the text keeps it readable where a line crosses it.
        let (w, h) = root.estimate_text_size(&l.text, &style).map_err(plot_err)?;
        let (w, h) = (w as i32, h as i32);
        let x0 = match pos.h_pos {
            HPos::Left => x,
            HPos::Center => x - w / 2,
            HPos::Right => x - w,
        };
        let y0 = match pos.v_pos {
            VPos::Top => y,
            VPos::Center => y - h / 2,
            VPos::Bottom => y - h,
        };
        root.draw(&Rectangle::new(
            [(x0 - 2, y0 - 1), (x0 + w + 2, y0 + h + 1)],
            WHITE.mix(0.8).filled(),
        ))
        .map_err(plot_err)?;
        root.draw(&Text::new(l.text.clone(), (x, y), style))
            .map_err(plot_err)?;
    }
    Ok(())
}

fn fmt_axis_count(v: f64) -> String {
    if v >= 1.0 {
        fmt_count(v.round() as usize)
    } else {
        fmt_sig(v, 2)
    }
}

/// A chart area with only a caption and a message, for a plot whose data is absent.
fn empty_plot(path: &Path, caption: &str, message: &str) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root
        .titled(caption, (FONT, 26).into_font())
        .map_err(plot_err)?;
    let style = (FONT, 20)
        .into_font()
        .color(&BLACK.mix(0.6))
        .pos(Pos::new(HPos::Center, VPos::Center));
    let (w, h) = root.dim_in_pixel();
    root.draw(&Text::new(
        message.to_string(),
        (w as i32 / 2, h as i32 / 2),
        style,
    ))
    .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

fn plot_packet(r: &Results, path: &Path) -> anyhow::Result<()> {
    let caption = format!("Per-packet cost of {XDP} (BPF_PROG_TEST_RUN)");
    let cases = [
        ("non_service", "non-Service packet", RGBColor(127, 127, 127)),
        ("established", "established flow", EBPF_COLOR),
        (
            "new_flow",
            "new flow (net of harness)",
            RGBColor(214, 39, 40),
        ),
        (
            "new_flow_hot",
            "new flow, same 100 Services (cache-warm)",
            RGBColor(255, 152, 150),
        ),
    ];
    let series: Series<&str> = cases
        .iter()
        .map(|(case, label, color)| {
            let pts = xdp_case(r, case)
                .into_iter()
                .filter(|(s, _)| *s > 0)
                .map(|(s, p)| (s as f64, p.net_median_ns))
                .collect();
            (*label, *color, pts)
        })
        .filter(|(_, _, pts): &(_, _, Vec<(f64, f64)>)| !pts.is_empty())
        .collect();
    let fl = floor(r).map(|p| p.median_ns);
    if series.is_empty() {
        return empty_plot(path, &caption, "not measured in this run");
    }
    let all = series.iter().flat_map(|(_, _, p)| p.iter());
    let (smin, smax) = all
        .clone()
        .fold((f64::MAX, f64::MIN), |(a, b), &(x, _)| (a.min(x), b.max(x)));
    let xr = log_range(smin.min(10.0), smax.max(FULL_SCALE as f64), 1.6, 1.6);
    // Headroom above the data for the legend.
    let ymax = all.map(|&(_, y)| y).chain(fl).fold(0.0, f64::max).max(1.0) * 1.5;

    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&caption, (FONT, 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(xr.clone().log_scale(), 0f64..ymax)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("Services in the maps (log scale)")
        .y_desc("ns per packet (median)")
        .x_labels(8)
        .y_labels(10)
        .x_label_formatter(&|v| fmt_axis_count(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()
        .map_err(plot_err)?;

    if let Some(f) = fl {
        let style = BLACK.mix(0.7).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(xr.start, f), (xr.end, f)],
                10,
                6,
                style,
            ))
            .map_err(plot_err)?
            .label(format!("empty program (floor), {} ns", fmt_ns(f)))
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(-4, 0), (6, 0)], style)
                    + PathElement::new(vec![(12, 0), (22, 0)], style)
            });
    }
    let mut labels = Vec::new();
    for (label, color, pts) in &series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
            .map_err(plot_err)?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x - 4, y), (x + 22, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
            .map_err(plot_err)?;
        labels.extend(pts.iter().map(|p| PointLabel {
            at: chart.backend_coord(p),
            text: fmt_ns(p.1),
            color,
        }));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 17))
        .margin(12)
        .draw()
        .map_err(plot_err)?;
    draw_point_labels(
        &root,
        labels,
        (0, -9),
        Pos::new(HPos::Center, VPos::Bottom),
        true,
    )?;
    root.present().map_err(plot_err)
}

fn plot_e2e(r: &Results, path: &Path) -> anyhow::Result<()> {
    let caption = "New connections per second (one request per connection), medians over rounds";
    let groups: Vec<E2eGroup> = e2e_groups(r)
        .into_iter()
        .filter(|g| g.mode == "new_connections")
        .collect();
    if groups.is_empty() {
        return empty_plot(path, caption, "not measured in this run");
    }
    let counts: Vec<usize> = distinct(groups.iter().map(|g| g.services));
    let mut layouts: Vec<String> = distinct(groups.iter().map(|g| g.layout.clone()));
    layouts.sort_by_key(|l| layout_key(l));
    let n = counts.len();
    // Headroom above the bars for the legend.
    let ymax = groups.iter().map(|g| g.rate).fold(0.0, f64::max).max(1.0) * 1.3;

    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 24))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
        .map_err(plot_err)?;
    let counts_for_labels = counts.clone();
    let x_fmt = move |v: &f64| -> String {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < counts_for_labels.len() {
            let c = counts_for_labels[i as usize];
            format!("{} Service{}", fmt_count(c), if c == 1 { "" } else { "s" })
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .y_labels(10)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| fmt_count(v.round() as usize))
        .x_desc("Services in the rule set / maps")
        .y_desc("new connections/s")
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .bold_line_style(BLACK.mix(0.15))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(plot_err)?;

    let l = layouts.len().max(1) as f64;
    let group_w = 0.8;
    let bar_w = group_w / l;
    for (j, layout) in layouts.iter().enumerate() {
        let color = layout_color(layout, j);
        let bars: Vec<(f64, f64, f64)> = groups
            .iter()
            .filter(|g| &g.layout == layout)
            .filter_map(|g| {
                let i = counts.iter().position(|&c| c == g.services)?;
                let x0 = i as f64 - group_w / 2.0 + j as f64 * bar_w;
                Some((x0, x0 + bar_w, g.rate))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, x1, v)| {
                Rectangle::new([(x0 + 0.01, 0.0), (x1 - 0.01, v)], color.filled())
            }))
            .map_err(plot_err)?
            .label(layout.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
        let style = (FONT, 14)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(bars.iter().map(|&(x0, x1, v)| {
                Text::new(
                    fmt_count(v.round() as usize),
                    ((x0 + x1) / 2.0, v + ymax * 0.01),
                    style.clone(),
                )
            }))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 17))
        .margin(12)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

fn plot_install(r: &Results, path: &Path) -> anyhow::Result<()> {
    let caption = "Installing the rule set / maps from nothing";
    let install = &r.programming.install;
    let rows: Vec<&InstallTime> = install.iter().filter(|i| i.seconds > 0.0).collect();
    if rows.is_empty() {
        return empty_plot(path, caption, "not measured in this run");
    }
    let mut layouts: Vec<String> = distinct(rows.iter().map(|i| i.layout.clone()));
    layouts.sort_by_key(|l| layout_key(l));
    let series: Series<String> = layouts
        .iter()
        .enumerate()
        .map(|(j, l)| {
            let counts = distinct(rows.iter().filter(|i| &i.layout == l).map(|i| i.services));
            let pts = counts
                .into_iter()
                .filter_map(|s| install_time(r, l, s).map(|(t, _)| (s.max(1) as f64, t)))
                .collect();
            (l.clone(), layout_color(l, j), pts)
        })
        .collect();
    let pts = series.iter().flat_map(|(_, _, p)| p.iter());
    let (xmin, xmax, ymin, ymax) = pts.fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let xr = log_range(xmin, xmax, 1.6, 3.0);
    let yr = log_range(ymin, ymax, 2.0, 4.0);
    let (x_labels, y_labels) = (decades_in(&xr) + 1, decades_in(&yr) + 1);

    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(xr.log_scale(), yr.log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_labels(x_labels)
        .y_labels(y_labels)
        .x_label_formatter(&|v| fmt_axis_count(*v))
        .y_label_formatter(&|v| fmt_trim(*v, 2))
        .x_desc("Services (log scale)")
        .y_desc("seconds (log scale)")
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .bold_line_style(BLACK.mix(0.15))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(plot_err)?;
    let mut labels = Vec::new();
    for (label, color, pts) in &series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x - 4, y), (x + 22, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
            .map_err(plot_err)?;
        labels.extend(pts.iter().map(|p| PointLabel {
            at: chart.backend_coord(p),
            text: fmt_secs(p.1),
            color,
        }));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 17))
        .margin(12)
        .draw()
        .map_err(plot_err)?;
    // Right of and below each point: the lines rise to the right, so that corner is free.
    draw_point_labels(
        &root,
        labels,
        (8, 4),
        Pos::new(HPos::Left, VPos::Top),
        false,
    )?;
    root.present().map_err(plot_err)
}

// ---------------------------------------------------------------------------------------------
// The terminal summary.

/// A short plain-text summary for the terminal: one line per goal (MET / MISSED / NOT
/// MEASURED, target, measured) and the headline figures.
pub fn summary(r: &Results) -> String {
    let mut o = String::new();
    let date = if r.started.is_empty() {
        "-"
    } else {
        date_of(&r.started)
    };
    let _ = writeln!(
        o,
        "svc-ebpf benchmark {date}{}",
        if r.quick { " (--quick)" } else { "" }
    );
    let goals = goals_of(r);
    let met = goals.iter().filter(|g| g.met == Some(true)).count();
    let missed = goals.iter().filter(|g| g.met == Some(false)).count();
    let _ = writeln!(
        o,
        "goals: {met} met, {missed} missed, {} not measured",
        goals.len() - met - missed
    );
    for g in &goals {
        let _ = write!(
            o,
            "  {:<12} {}: measured {}; target {}",
            verdict(g),
            g.name,
            g.measured,
            g.target
        );
        if g.met.is_none() && !g.note.is_empty() {
            let _ = write!(o, " ({})", g.note);
        }
        o.push('\n');
    }

    let _ = writeln!(o, "headline:");
    // Per packet at the smallest count.
    if let Some(f) = floor(r) {
        let mut parts = vec![format!("floor {} ns", fmt_ns(f.median_ns))];
        let mut at = None;
        for (case, label) in [
            ("non_service", "non-Service"),
            ("established", "established"),
            ("new_flow", "new flow (net)"),
        ] {
            if let Some((&s, p)) = xdp_case(r, case).iter().next() {
                parts.push(format!("{label} {} ns", fmt_ns(p.net_median_ns)));
                at.get_or_insert(s);
            }
        }
        let at = at.map_or(String::new(), |s| format!(", {} Services", fmt_count(s)));
        let _ = writeln!(o, "  per packet ({XDP}{at}): {}", parts.join(", "));
    }
    // New connections at the largest count measured.
    let groups: Vec<E2eGroup> = e2e_groups(r)
        .into_iter()
        .filter(|g| g.mode == "new_connections")
        .collect();
    if let Some(max) = groups.iter().map(|g| g.services).max() {
        let parts: Vec<String> = groups
            .iter()
            .filter(|g| g.services == max)
            .map(|g| format!("{} {}", g.layout, fmt_count(g.rate.round() as usize)))
            .collect();
        let _ = writeln!(
            o,
            "  new connections/s at {} Services: {}",
            fmt_count(max),
            parts.join(", ")
        );
    }
    // Install at the largest count measured.
    if let Some(max) = r.programming.install.iter().map(|i| i.services).max() {
        let mut layouts = distinct(
            r.programming
                .install
                .iter()
                .filter(|i| i.services == max)
                .map(|i| i.layout.clone()),
        );
        layouts.sort_by_key(|l| layout_key(l));
        let parts: Vec<String> = layouts
            .iter()
            .filter_map(|l| install_time(r, l, max).map(|(t, _)| format!("{l} {}", fmt_secs(t))))
            .collect();
        let _ = writeln!(
            o,
            "  install {} Services: {}",
            fmt_count(max),
            parts.join(", ")
        );
    }
    if let Some(c) = &r.programming.endpoint_change {
        let _ = writeln!(
            o,
            "  endpoint change: p50 {} ms, p99 {} ms ({} changes)",
            fmt_trim(c.p50_ms, 3),
            fmt_trim(c.p99_ms, 3),
            fmt_count(c.changes)
        );
    }
    if let Some(max) = r.memory.iter().map(|m| m.services).max()
        && let Some(m) = agent_memory(r, max)
    {
        let _ = writeln!(
            o,
            "  memory at {} Services: {} MB ({})",
            fmt_count(max),
            fmt_mb(m.bytes),
            m.what
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "notes: {} (see the report)", r.notes.len());
        for n in &r.notes {
            let _ = writeln!(o, "  - {}", n.replace('\n', " "));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::load::Report;
    use crate::results::{ChangeLatency, Machine, Programming, RESULTS_VERSION};

    fn pc(
        program: &str,
        case: &str,
        services: usize,
        repeat: u32,
        med: f64,
        net: f64,
    ) -> PacketCost {
        PacketCost {
            program: program.into(),
            case: case.into(),
            services,
            endpoints_per_service: if services == 0 { 0 } else { 10 },
            repeat,
            packets_per_run: u64::from(repeat) * if repeat == 1 { 100_000 } else { 1 },
            runs_ns: vec![med - 0.5, med, med + 0.7],
            median_ns: med,
            min_ns: med - 0.5,
            max_ns: med + 0.7,
            harness_ns: (repeat == 1).then_some(med - net),
            net_median_ns: net,
            verified: "XDP_TX counter = packets; output frame rewritten to the backend".into(),
        }
    }

    fn rep(rate: f64, errors: u64) -> Report {
        Report {
            requests: (rate * 5.0) as u64,
            errors,
            connections: (rate * 5.0) as u64,
            duration: Duration::from_secs(5),
            rate_per_s: rate,
            connect_p50_us: 60,
            connect_p99_us: 400,
            connect_p999_us: 900,
            request_p50_us: 900,
            request_p99_us: 3100,
            request_p999_us: 8000,
            errors_by_kind: BTreeMap::new(),
        }
    }

    fn e2e(layout: &str, services: usize, round: usize, rate: f64) -> E2eRun {
        E2eRun {
            layout: layout.into(),
            services,
            mode: "new_connections".into(),
            round,
            report: rep(rate, 0),
        }
    }

    fn inst(layout: &str, services: usize, seconds: f64) -> InstallTime {
        InstallTime {
            layout: layout.into(),
            services,
            endpoints_per_service: 10,
            seconds,
            what: match layout {
                "ebpf" => "agent start to maps filled (EndpointSlices listed)".into(),
                "nft -f" => "`nft -f` of the whole table".into(),
                _ => "`iptables-legacy-restore` of the nat table".into(),
            },
        }
    }

    /// A full run with realistic figures.
    fn sample() -> Results {
        let mut packet = vec![
            pc("svc_bench_pass", "floor", 0, 1_000_000, 29.0, 29.0),
            pc("svc_bench_pass", "floor", 0, 1, 95.0, 95.0),
        ];
        for (s, nonsvc, est, newf) in [
            (10usize, 33.0, 61.0, 118.0),
            (1_000, 33.4, 63.5, 122.0),
            (10_000, 34.1, 66.0, 127.0),
            (100_000, 35.0, 68.9, 140.5),
        ] {
            packet.push(pc("svc_xdp", "non_service", s, 1_000_000, nonsvc, nonsvc));
            packet.push(pc("svc_xdp", "established", s, 1_000_000, est, est));
            packet.push(pc("svc_xdp", "new_flow", s, 1, newf + 66.0, newf));
            packet.push(pc(
                "svc_tc_ingress",
                "established",
                s,
                1_000_000,
                est + 20.0,
                est + 20.0,
            ));
        }
        let mut e = Vec::new();
        for round in 0..3 {
            let j = round as f64 * 150.0;
            for (s, ebpf, ipt, nft) in [
                (1usize, 13_900.0, 13_650.0, 13_100.0),
                (1_000, 13_800.0, 11_900.0, 13_000.0),
                (10_000, 13_750.0, 9_850.0, 13_600.0),
            ] {
                e.push(e2e("ebpf", s, round, ebpf + j));
                e.push(e2e("iptables", s, round, ipt - j));
                e.push(e2e("nftables", s, round, nft + j / 2.0));
            }
        }
        e.push(E2eRun {
            mode: "keepalive".into(),
            ..e2e("ebpf", 10_000, 0, 31_000.0)
        });
        Results {
            version: RESULTS_VERSION,
            started: "2026-11-02T10:00:00Z".into(),
            finished: "2026-11-02T10:41:13Z".into(),
            quick: false,
            machine: Machine {
                kernel: "6.12.48+deb13-amd64".into(),
                cpus: 2,
                cpu_model: "AMD EPYC 7B13".into(),
                memory_mib: 24_000,
            },
            packet,
            e2e: e,
            programming: Programming {
                install: vec![
                    inst("ebpf", 1, 0.004),
                    inst("iptables-legacy-restore", 1, 0.005),
                    inst("nft -f", 1, 0.011),
                    inst("ebpf", 1_000, 0.061),
                    inst("iptables-legacy-restore", 1_000, 0.41),
                    inst("nft -f", 1_000, 0.73),
                    inst("ebpf", 10_000, 0.52),
                    inst("iptables-legacy-restore", 10_000, 4.3),
                    inst("nft -f", 10_000, 113.0),
                ],
                endpoint_change: Some(ChangeLatency {
                    services: 10_000,
                    endpoints_per_service: 10,
                    changes: 100,
                    samples_ms: vec![4.0; 100],
                    p50_ms: 4.2,
                    p99_ms: 61.0,
                    max_ms: 75.3,
                    profile: String::new(),
                }),
            },
            memory: vec![
                Memory {
                    what: "agent peak RSS (VmHWM)".into(),
                    services: 1_000,
                    endpoints_per_service: 10,
                    bytes: 41_000_000,
                },
                Memory {
                    what: "agent peak RSS (VmHWM)".into(),
                    services: 10_000,
                    endpoints_per_service: 10,
                    bytes: 88_400_000,
                },
            ],
            goals: vec![],
            notes: vec!["section tc: skipped (no tc program attached in this lab)".into()],
        }
    }

    fn find<'a>(g: &'a [Goal], name: &str) -> &'a Goal {
        g.iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no goal {name}: {g:#?}"))
    }

    #[test]
    fn goals_met_missed_and_their_figures() {
        let g = goals(&sample());
        assert_eq!(g.len(), 11);

        let est = find(&g, "established-flow cost");
        assert_eq!(est.met, Some(true));
        // 61 / 29 (the repeat-1 floor run is not the floor).
        assert_eq!(est.measured, "2.10x (61.0 ns vs 29.0 ns)");

        let new = find(&g, "new-flow cost");
        assert_eq!(new.met, Some(true), "{new:?}");
        assert!(
            new.measured.starts_with("4.07x (118.0 ns vs 29.0 ns)"),
            "{new:?}"
        );

        let se = find(&g, "scale: established");
        // 68.9 / 61.0 = 1.13 <= 1.15
        assert_eq!(se.met, Some(true), "{se:?}");
        assert!(
            se.measured
                .starts_with("1.13x (68.9 ns at 100,000 vs 61.0 ns at 10 Services)")
        );
        let sn = find(&g, "scale: new flow");
        // 140.5 / 118 = 1.19 → missed
        assert_eq!(sn.met, Some(false));
        assert!(
            sn.measured.contains("at 100,000") && sn.measured.contains("at 10 "),
            "{sn:?}"
        );

        let ipt = find(&g, "new connections at 10k Services vs iptables");
        // medians: ebpf 13,900, iptables 9,700 → 1.43x
        assert_eq!(ipt.met, Some(true));
        assert_eq!(ipt.measured, "1.43x (13,900/s vs 9,700/s)");
        let nft = find(&g, "new connections at 10k Services vs nftables");
        assert_eq!(nft.met, Some(true));

        let one = find(&g, "new connections at 1 Service");
        // 14,050 vs 13,500 (iptables) and 13,175 (nftables)
        assert_eq!(one.met, Some(true), "{one:?}");
        assert!(one.measured.contains("iptables") && one.measured.contains("nftables"));

        let li = find(
            &g,
            "install 10k Services x 10 endpoints vs iptables-legacy-restore",
        );
        assert_eq!(li.met, Some(true));
        assert_eq!(li.measured, "8.27x (0.52 s vs 4.3 s)");
        let ln = find(&g, "install 10k Services x 10 endpoints vs nft -f");
        assert_eq!(ln.met, Some(true));

        let ch = find(&g, "endpoint change visible");
        assert_eq!(ch.met, Some(false));
        assert_eq!(ch.measured, "61 ms (p50 4.2 ms, max 75.3 ms)");

        let mem = find(&g, "agent RSS at 10k Services");
        assert_eq!(mem.met, Some(true));
        assert!(mem.measured.starts_with("88.4 MB"), "{mem:?}");
    }

    #[test]
    fn goals_not_measured_when_figures_are_absent() {
        // A --quick run: up to 1,000 Services, no e2e, no memory, no programming.
        let mut r = sample();
        r.quick = true;
        r.packet.retain(|p| p.services <= 1_000);
        r.e2e.clear();
        r.memory.retain(|m| m.services < 10_000);
        r.programming = Programming::default();
        let g = goals(&r);
        assert_eq!(find(&g, "established-flow cost").met, Some(true));
        let se = find(&g, "scale: established");
        assert_eq!(se.met, None);
        assert!(
            se.measured.contains("1,000"),
            "ratio still reported: {se:?}"
        );
        assert!(se.note.contains("< 100,000"), "{se:?}");
        for name in [
            "new connections at 10k Services vs iptables",
            "new connections at 10k Services vs nftables",
            "new connections at 1 Service",
            "install 10k Services x 10 endpoints vs iptables-legacy-restore",
            "install 10k Services x 10 endpoints vs nft -f",
            "endpoint change visible",
            "agent RSS at 10k Services",
        ] {
            let x = find(&g, name);
            assert_eq!(x.met, None, "{x:?}");
            assert!(!x.note.is_empty(), "{x:?}");
        }
        // No floor: the cost goals cannot be judged.
        r.packet.retain(|p| p.case != "floor");
        let g = goals(&r);
        assert_eq!(find(&g, "established-flow cost").met, None);
        assert_eq!(find(&g, "new-flow cost").met, None);
    }

    #[test]
    fn goals_missed() {
        let mut r = sample();
        for p in &mut r.packet {
            if p.program == "svc_xdp" && p.case == "established" && p.services == 10 {
                p.net_median_ns = 90.0; // 3.10x
            }
        }
        for e in &mut r.e2e {
            if e.layout == "ebpf" && e.services == 1 {
                e.report.rate_per_s = 13_300.0; // faster than nftables, slower than iptables
            }
        }
        r.memory[1].bytes = 150_000_000; // not < 150 MB
        let g = goals(&r);
        assert_eq!(find(&g, "established-flow cost").met, Some(false));
        assert_eq!(find(&g, "new connections at 1 Service").met, Some(false));
        assert_eq!(find(&g, "agent RSS at 10k Services").met, Some(false));
    }

    /// A fresh directory for a test's files; `SVC_BENCH_REPORT_DIR=<dir>` keeps them there
    /// (to look at the report and the plots of the sample run).
    fn temp_dir(name: &str) -> PathBuf {
        if let Some(d) = std::env::var_os("SVC_BENCH_REPORT_DIR") {
            return PathBuf::from(d).join(name);
        }
        let d =
            std::env::temp_dir().join(format!("svc-bench-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_produces_the_files() {
        let mut r = sample();
        r.goals = goals(&r);
        let dir = temp_dir("write");
        let stamp = "20261102T100000Z";
        let written = match write(&r, &dir, stamp) {
            Ok(w) => w,
            // Without the font (fonts-dejavu-core) only the plots are missing.
            Err(e) => match e.downcast::<PlotsNotWritten>() {
                Ok(p) if !Path::new(FONT_PATH).exists() => p.written,
                Ok(p) => panic!("{p}"),
                Err(e) => panic!("{e:#}"),
            },
        };
        let json = dir.join(format!("{stamp}.json"));
        let md = dir.join(format!("{stamp}.md"));
        assert!(
            written.contains(&json) && written.contains(&md),
            "{written:?}"
        );
        let back: Results = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(back.packet.len(), r.packet.len());
        assert_eq!(back.goals.len(), 11);

        let text = std::fs::read_to_string(&md).unwrap();
        assert!(
            text.starts_with("# svc-ebpf benchmark, 2026-11-02"),
            "{text}"
        );
        assert!(text.contains("| goal | target | measured | result | note |"));
        for g in &r.goals {
            assert!(text.contains(&cell(&g.name)), "goal {} missing", g.name);
        }
        assert!(text.contains("iptables-legacy-restore"));
        assert!(text.contains("BPF_PROG_TEST_RUN"));
        assert!(text.contains("- section tc: skipped"));
        if Path::new(FONT_PATH).exists() {
            for kind in ["packet", "e2e", "install"] {
                let png = dir.join(format!("{stamp}-{kind}.png"));
                assert!(written.contains(&png), "{written:?}");
                let bytes = std::fs::read(&png).unwrap();
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
                assert!(text.contains("![") && text.contains(&format!("]({stamp}-{kind}.png)")));
            }
        }
        if std::env::var_os("SVC_BENCH_REPORT_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn write_a_quick_run() {
        // --quick: up to 1,000 Services, install times at one count only.
        let mut r = sample();
        r.quick = true;
        r.packet.retain(|p| p.services <= 1_000);
        r.e2e.retain(|e| e.services <= 1_000);
        r.programming.install.retain(|i| i.services == 1_000);
        r.memory.retain(|m| m.services <= 1_000);
        let dir = temp_dir("quick");
        let res = write(&r, &dir, "quick");
        if Path::new(FONT_PATH).exists() {
            assert_eq!(res.unwrap().len(), 5);
        }
        let text = std::fs::read_to_string(dir.join("quick.md")).unwrap();
        assert!(text.contains("(`--quick`"), "{text}");
        assert!(text.contains("| not measured |"), "{text}");
        assert!(text.contains("| MET |"), "{text}");
        if std::env::var_os("SVC_BENCH_REPORT_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn write_handles_an_empty_run() {
        let r = Results {
            notes: vec!["everything skipped".into()],
            ..Default::default()
        };
        let dir = temp_dir("empty");
        let res = write(&r, &dir, "x");
        if Path::new(FONT_PATH).exists() {
            let w = res.unwrap();
            assert_eq!(w.len(), 5);
        }
        let text = std::fs::read_to_string(dir.join("x.md")).unwrap();
        assert!(text.contains("not measured"));
        if std::env::var_os("SVC_BENCH_REPORT_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn missing_font_is_a_clear_error() {
        let e = register_font_file(Path::new("/nonexistent/DejaVuSans.ttf")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("fonts-dejavu-core") && msg.contains(FONT_ENV),
            "{msg}"
        );
    }

    #[test]
    fn summary_mentions_every_goal() {
        let r = sample();
        let s = summary(&r);
        if let Some(d) = std::env::var_os("SVC_BENCH_REPORT_DIR") {
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::write(PathBuf::from(d).join("summary.txt"), &s);
        }
        for g in goals(&r) {
            assert!(s.contains(&g.name), "{} missing:\n{s}", g.name);
        }
        assert!(s.contains("MET") && s.contains("MISSED"));
        assert!(s.contains("floor 29.0 ns"), "{s}");
        assert!(s.contains("new connections/s at 10,000 Services"), "{s}");
        let q = summary(&Results::default());
        assert!(q.contains("NOT MEASURED"), "{q}");
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_sig(4.3, 3), "4.30");
        assert_eq!(fmt_sig(0.00512, 3), "0.00512");
        assert_eq!(fmt_sig(1337.2, 3), "1337");
        assert_eq!(join_counts(&[10]), "10");
        assert_eq!(join_counts(&[10, 1000, 100_000]), "10, 1,000 or 100,000");
        assert_eq!(fmt_ratio(2.1), "2.10x");
        assert_eq!(fmt_ratio(21.73), "21.7x");
        assert_eq!(fmt_ratio(217.3), "217x");
        assert_eq!(fmt_trim(4.30, 3), "4.3");
        assert_eq!(fmt_trim(10.0, 3), "10");
        assert_eq!(fmt_trim(1337.0, 3), "1337");
        assert_eq!(cell("a|b"), "a\\|b");
    }
}
