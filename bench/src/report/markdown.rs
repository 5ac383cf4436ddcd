//! The markdown report of a run: how it was measured, the goals, one section per part of the
//! benchmark with its table and plot, the machine and the notes.
use std::fmt::Write as _;

use super::PlotOutcome;
use super::figures::{distinct, e2e_groups, layout_key, layouts};
use super::format::{date_of, fmt_count, fmt_mb, fmt_ns, fmt_sig, fmt_trim, join_counts};
use super::goals::goals_of;
use crate::results::{InstallTime, Memory, PacketCost, Results, median};

/// A markdown table cell: no line breaks, `|` escaped.
pub(super) fn cell(s: &str) -> String {
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
        "ipv6" => 2,
        "established" => 3,
        "established6" => 4,
        "established_monitor" => 5,
        "established_monitor_sampled" => 6,
        "new_flow" => 7,
        "new_flow6" => 8,
        "new_flow_hot" => 9,
        _ => 10,
    }
}

pub(super) fn markdown(r: &Results, stamp: &str, plots: &PlotOutcome) -> String {
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
    socket_lb_section(&mut o, r);

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
        let layouts = layouts(r.e2e.iter().map(|e| e.layout.as_str()));
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
        if r.e2e.iter().any(|e| e.mode == "paced") {
            let _ = write!(
                o,
                ", `paced` offers new connections at one fixed rate for every layout, well \
                 below any layout's ceiling, and divides the CPU time the lab spent \
                 during the run by the connections answered: what a connection costs, \
                 translation included. The CPU time is the lab's: its node's cgroup (every \
                 process of the lab is in a pod cgroup under it; softirq work a process's \
                 packets cause is charged to it) plus the softirq threads, both the \
                 scheduler's own runtime, to the µs"
            );
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
            "CPU µs/connection (rounds)",
            "of it in our BPF programs",
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
                match (g.mode.as_str(), g.cpu_us, g.cpu_us_range) {
                    // The rounds' spread beside the median, where there are several.
                    ("paced", Some(us), Some((lo, hi))) if g.rounds > 1 => {
                        format!("{} ({}–{})", fmt_sig(us, 3), fmt_sig(lo, 3), fmt_sig(hi, 3))
                    }
                    ("paced", Some(us), _) => fmt_sig(us, 3),
                    _ => "-".into(),
                },
                g.bpf_us.map_or("-".into(), |us| format!("{us:.1}")),
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
    if r.e2e.iter().any(|e| e.mode == "paced") {
        plot_link(
            o,
            stamp,
            "cpu",
            "CPU µs per paced connection per layout",
            plots,
        );
    }
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

fn socket_lb_section(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## Socket-level load balancing for pods\n");
    if r.socket_lb.is_empty() {
        let _ = writeln!(o, "Not measured in this run (see the notes).\n");
        return;
    }
    let _ = writeln!(
        o,
        "New TCP connections from the client pod to a ClusterIP; the kernel's run time of our \
         BPF programs (TC, XDP, socket) per connection, medians over the rounds. `node`: the \
         pod's packets are translated by TC; `all`: at connect().\n"
    );
    header(
        o,
        &[
            "--socket-lb",
            "rounds",
            "connections/round",
            "BPF ns/connection",
            "program runs/connection",
            "client ms/connection",
        ],
    );
    for mode in ["node", "all"] {
        let runs: Vec<&crate::results::SockLbRun> =
            r.socket_lb.iter().filter(|s| s.mode == mode).collect();
        if runs.is_empty() {
            continue;
        }
        let med = |f: fn(&crate::results::SockLbRun) -> f64| {
            median(&runs.iter().map(|s| f(s)).collect::<Vec<f64>>())
        };
        row(
            o,
            &[
                mode.to_string(),
                runs.len().to_string(),
                fmt_count(runs[0].connections),
                format!("{:.0}", med(|s| s.bpf_ns_per_connection)),
                format!("{:.1}", med(|s| s.bpf_runs_per_connection)),
                format!("{:.2}", med(|s| s.wall_ms_per_connection)),
            ],
        );
    }
    o.push('\n');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cell() {
        assert_eq!(cell("a|b"), "a\\|b");
        assert_eq!(cell("a\nb"), "a b");
    }
}
