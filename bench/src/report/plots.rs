//! The three PNG plots of a run, drawn with plotters on its bitmap backend: per-packet cost
//! against Services, new connections per second per layout, and install time per layout.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figures::{
    E2eGroup, FULL_SCALE, XDP, distinct, e2e_groups, floor, install_time, layout_key, xdp_case,
};
use super::format::{fmt_count, fmt_ns, fmt_secs, fmt_sig, fmt_trim};
use super::{FONT_ENV, FONT_PATH};
use crate::results::{InstallTime, Results};

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
