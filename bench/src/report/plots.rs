//! The three PNG plots of a run, drawn with plotters on its bitmap backend: per-packet cost
//! against Services, new connections per second per layout, and install time per layout.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::chart::{
    Axis, Chart, FONT, Marks, Reference, Scale, Series, decades_in, empty_plot, extent, log_range,
};
use super::figures::{
    FULL_SCALE, XDP, distinct, e2e_groups, floor, install_time, layout_key, layouts,
    new_conn_groups, xdp_case,
};
use super::format::{fmt_count, fmt_ns, fmt_secs, fmt_sig, fmt_trim};
use super::{FONT_ENV, FONT_PATH};
use crate::results::{InstallTime, Results};

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

pub(super) fn write_plots(
    r: &Results,
    dir: &Path,
    stamp: &str,
) -> Result<Vec<PathBuf>, (Vec<PathBuf>, anyhow::Error)> {
    let mut written = Vec::new();
    if let Err(e) = ensure_font() {
        return Err((written, e));
    }
    type Plot = fn(&Results, &Path) -> anyhow::Result<()>;
    let plots: [(&str, Plot); 4] = [
        ("packet", plot_packet),
        ("e2e", plot_e2e),
        ("cpu", plot_cpu),
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

/// What a plot without figures says.
const NOT_MEASURED: &str = "not measured in this run";

const EBPF_COLOR: RGBColor = RGBColor(31, 119, 180);
const IPTABLES_COLOR: RGBColor = RGBColor(230, 120, 20);
const NFTABLES_COLOR: RGBColor = RGBColor(44, 160, 44);
const OTHER_COLORS: [RGBColor; 3] = [
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(214, 39, 40),
];

/// Halfway to white.
fn lighten(c: u8) -> u8 {
    c + (255 - c) / 2
}

fn layout_color(l: &str, i: usize) -> RGBColor {
    match layout_key(l).0 {
        0 if l == "ebpf" => EBPF_COLOR,
        // Ours, another measure of it (ebpf-sync: the agent's pass alone): a lighter blue,
        // told apart from the line it is part of.
        0 => RGBColor(
            lighten(EBPF_COLOR.0),
            lighten(EBPF_COLOR.1),
            lighten(EBPF_COLOR.2),
        ),
        1 => IPTABLES_COLOR,
        2 => NFTABLES_COLOR,
        _ => OTHER_COLORS[i % OTHER_COLORS.len()],
    }
}

/// A series per layout among `names` (ours first), in the layout's colour, with the points
/// `points` gives for it.
fn per_layout<'a>(
    names: impl IntoIterator<Item = &'a str>,
    points: impl Fn(&str) -> Vec<(f64, f64)>,
) -> Vec<Series> {
    layouts(names)
        .into_iter()
        .enumerate()
        .map(|(j, l)| Series {
            color: layout_color(&l, j),
            points: points(&l),
            label: l,
        })
        .collect()
}

fn fmt_axis_count(v: f64) -> String {
    if v >= 1.0 {
        fmt_count(v.round() as usize)
    } else {
        fmt_sig(v, 2)
    }
}

/// A rate or count as the e2e plot writes it: whole, with separators.
fn fmt_rounded(v: f64) -> String {
    fmt_count(v.round() as usize)
}

/// Net ns per packet of svc_xdp against Services, one line per case, over the floor.
fn plot_packet(r: &Results, path: &Path) -> anyhow::Result<()> {
    let title = format!("Per-packet cost of {XDP} (BPF_PROG_TEST_RUN)");
    let cases = [
        ("non_service", "non-Service packet", RGBColor(127, 127, 127)),
        ("ipv6", "IPv6 packet to no Service", RGBColor(188, 189, 34)),
        ("established", "established flow", EBPF_COLOR),
        (
            "established6",
            "established flow, IPv6",
            RGBColor(23, 190, 207),
        ),
        (
            "new_flow",
            "new flow (net of harness)",
            RGBColor(214, 39, 40),
        ),
        (
            "new_flow6",
            "new flow, IPv6 (net of harness)",
            RGBColor(148, 103, 189),
        ),
        (
            "new_flow_hot",
            "new flow, same 100 Services (cache-warm)",
            RGBColor(255, 152, 150),
        ),
    ];
    let series: Vec<Series> = cases
        .iter()
        .map(|&(case, label, color)| Series {
            label: label.into(),
            color,
            points: xdp_case(r, case)
                .into_iter()
                .filter(|(s, _)| *s > 0)
                .map(|(s, p)| (s as f64, p.net_median_ns))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let Some(e) = extent(&series) else {
        return empty_plot(path, &title, NOT_MEASURED);
    };
    let fl = floor(r).map(|p| p.median_ns);
    let x = log_range(e.x_min.min(10.0), e.x_max.max(FULL_SCALE as f64), 1.6, 1.6);
    // Headroom above the data for the legend.
    let y_max = [e.y_max].into_iter().chain(fl).fold(0.0, f64::max).max(1.0) * 1.5;
    Chart {
        title,
        title_size: 26,
        x: Axis {
            scale: Scale::Log,
            range: x,
            desc: "Services in the maps (log scale)",
            labels: 8,
            format: Box::new(fmt_axis_count),
        },
        y: Axis {
            scale: Scale::Linear,
            range: 0.0..y_max,
            desc: "ns per packet (median)",
            labels: 10,
            format: Box::new(|v| format!("{v:.0}")),
        },
        y_label_area: 80,
        series,
        marks: Marks::Lines {
            offset: (0, -9),
            anchor: Pos::new(HPos::Center, VPos::Bottom),
            up: true,
        },
        value: fmt_ns,
        reference: fl.map(|f| Reference {
            y: f,
            label: format!("empty program (floor), {} ns", fmt_ns(f)),
        }),
        legend: SeriesLabelPosition::UpperLeft,
    }
    .draw(path)
}

/// New connections per second, a group of bars per Service count, a bar per layout.
fn plot_e2e(r: &Results, path: &Path) -> anyhow::Result<()> {
    let bars: Vec<_> = new_conn_groups(r)
        .into_iter()
        .map(|g| (g.layout, g.services, g.rate))
        .collect();
    bars_per_scale(
        "New connections per second (one request per connection), medians over rounds",
        "new connections/s",
        &bars,
        path,
    )
}

/// CPU µs per connection at the paced rate, a group of bars per Service count, a bar per
/// layout.
fn plot_cpu(r: &Results, path: &Path) -> anyhow::Result<()> {
    let bars: Vec<_> = e2e_groups(r)
        .into_iter()
        .filter(|g| g.mode == "paced")
        .filter_map(|g| Some((g.layout, g.services, g.cpu_us?)))
        .collect();
    bars_per_scale(
        "CPU time per connection at a fixed rate (the lab's cgroup + softirq threads), medians",
        "CPU µs per connection",
        &bars,
        path,
    )
}

/// Bars of (layout, Service count, value): a group per Service count, a bar per layout.
fn bars_per_scale(
    title: &str,
    y_desc: &'static str,
    bars: &[(String, usize, f64)],
    path: &Path,
) -> anyhow::Result<()> {
    let counts: Vec<usize> = distinct(bars.iter().map(|b| b.1));
    // x is the index of the Service count: the counts are categories, not a scale.
    let series = per_layout(bars.iter().map(|b| b.0.as_str()), |layout| {
        bars.iter()
            .filter(|b| b.0 == layout)
            .filter_map(|b| {
                let i = counts.iter().position(|&c| c == b.1)?;
                Some((i as f64, b.2))
            })
            .collect()
    });
    let Some(e) = extent(&series) else {
        return empty_plot(path, title, NOT_MEASURED);
    };
    let n = counts.len();
    // Headroom above the bars for the legend.
    let y_max = 0.0f64.max(e.y_max).max(1.0) * 1.3;
    let x_fmt = move |v: f64| -> String {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < counts.len() {
            let c = counts[i as usize];
            format!("{} Service{}", fmt_count(c), if c == 1 { "" } else { "s" })
        } else {
            String::new()
        }
    };
    Chart {
        title: title.into(),
        title_size: 24,
        x: Axis {
            scale: Scale::Linear,
            range: -0.5..(n as f64 - 0.5),
            desc: "Services in the rule set / maps",
            labels: n + 1,
            format: Box::new(x_fmt),
        },
        y: Axis {
            scale: Scale::Linear,
            range: 0.0..y_max,
            desc: y_desc,
            labels: 10,
            format: Box::new(fmt_rounded),
        },
        y_label_area: 90,
        series,
        marks: Marks::Bars,
        value: fmt_rounded,
        reference: None,
        legend: SeriesLabelPosition::UpperRight,
    }
    .draw(path)
}

/// Install seconds against Services, one line per layout, both axes log.
fn plot_install(r: &Results, path: &Path) -> anyhow::Result<()> {
    let title = "Installing the rule set / maps from nothing";
    let install = &r.programming.install;
    let rows: Vec<&InstallTime> = install.iter().filter(|i| i.seconds > 0.0).collect();
    let series = per_layout(rows.iter().map(|i| i.layout.as_str()), |l| {
        let counts = distinct(rows.iter().filter(|i| i.layout == l).map(|i| i.services));
        counts
            .into_iter()
            .filter_map(|s| install_time(r, l, s).map(|(t, _)| (s.max(1) as f64, t)))
            .collect()
    });
    let Some(e) = extent(&series) else {
        return empty_plot(path, title, NOT_MEASURED);
    };
    let x = log_range(e.x_min, e.x_max, 1.6, 3.0);
    let y = log_range(e.y_min, e.y_max, 2.0, 4.0);
    Chart {
        title: title.into(),
        title_size: 26,
        x: Axis {
            scale: Scale::Log,
            labels: decades_in(&x) + 1,
            range: x,
            desc: "Services (log scale)",
            format: Box::new(fmt_axis_count),
        },
        y: Axis {
            scale: Scale::Log,
            labels: decades_in(&y) + 1,
            range: y,
            desc: "seconds (log scale)",
            format: Box::new(|v| fmt_trim(v, 2)),
        },
        y_label_area: 90,
        series,
        // Right of and below each point: the lines rise to the right, so that corner is free.
        marks: Marks::Lines {
            offset: (8, 4),
            anchor: Pos::new(HPos::Left, VPos::Top),
            up: false,
        },
        value: fmt_secs,
        reference: None,
        legend: SeriesLabelPosition::UpperLeft,
    }
    .draw(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_font_is_a_clear_error() {
        let e = register_font_file(Path::new("/nonexistent/DejaVuSans.ttf")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("fonts-dejavu-core") && msg.contains(FONT_ENV),
            "{msg}"
        );
    }
}
