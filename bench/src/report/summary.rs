//! The plain-text summary printed at the end of a run: one line per goal and the headline
//! figures.
use std::fmt::Write as _;

use super::figures::{XDP, agent_memory, floor, install_time, layouts, new_conn_groups, xdp_case};
use super::format::{date_of, fmt_count, fmt_mb, fmt_ns, fmt_secs, fmt_trim};
use super::goals::goals_of;
use crate::results::{Goal, Results};

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
    let groups = new_conn_groups(r);
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
        let at_max = r.programming.install.iter().filter(|i| i.services == max);
        let parts: Vec<String> = layouts(at_max.map(|i| i.layout.as_str()))
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

fn verdict(g: &Goal) -> &'static str {
    match g.met {
        Some(true) => "MET",
        Some(false) => "MISSED",
        None => "NOT MEASURED",
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::report::goals;
    use crate::report::sample::sample;

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
}
