//! The one chart helper of the report's plots: a [`Chart`] says what a plot shows (title,
//! axes, a series of points per layout or case, lines or bars), [`Chart::draw`] draws it with
//! the look every plot shares (fonts, mesh, legend, value labels) into a PNG.
use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Size of every plot, in pixels.
const W: u32 = 1100;
const H: u32 = 650;
/// The family every text of a plot is drawn in (registered from a font file by `plots`).
pub(super) const FONT: &str = "sans-serif";
/// The share of a category's width that its bars take (the rest separates the categories).
const GROUP_WIDTH: f64 = 0.8;
/// Labels of points closer than this horizontally (in pixels) are kept apart vertically.
const LABEL_NEAR: i32 = 70;
/// The least vertical distance between such labels, in pixels.
const LABEL_GAP: i32 = 17;

pub(super) fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

#[derive(Clone, Copy)]
pub(super) enum Scale {
    Linear,
    Log,
}

/// One axis: its scale and range, its description, how many labels plotters aims for and
/// how a label's value is written.
pub(super) struct Axis {
    pub(super) scale: Scale,
    pub(super) range: Range<f64>,
    pub(super) desc: &'static str,
    pub(super) labels: usize,
    pub(super) format: Box<dyn Fn(f64) -> String>,
}

/// The points of one layout (or case), in its colour, under its name in the legend.
pub(super) struct Series {
    pub(super) label: String,
    pub(super) color: RGBColor,
    pub(super) points: Vec<(f64, f64)>,
}

/// How a chart shows its series.
pub(super) enum Marks {
    /// A line through each series' points, a dot on each point and its value beside it, at
    /// `offset` pixels from the point with `anchor`; labels that would overlap are moved up
    /// (`up`) or down until they do not.
    Lines {
        offset: (i32, i32),
        anchor: Pos,
        up: bool,
    },
    /// Bars side by side in each category (a point's x is the category's index), series j the
    /// j-th bar of each group, with the bar's value above it. The x axis gets no grid lines.
    Bars,
}

/// A dashed horizontal line across the whole chart at `y` (e.g. the empty program's cost),
/// first in the legend.
pub(super) struct Reference {
    pub(super) y: f64,
    pub(super) label: String,
}

/// What one plot shows; [`Chart::draw`] draws it.
pub(super) struct Chart {
    pub(super) title: String,
    pub(super) title_size: u32,
    pub(super) x: Axis,
    pub(super) y: Axis,
    /// Room left of the plot for the y labels, in pixels.
    pub(super) y_label_area: u32,
    pub(super) series: Vec<Series>,
    pub(super) marks: Marks,
    /// How the value beside a point or above a bar is written.
    pub(super) value: fn(f64) -> String,
    pub(super) reference: Option<Reference>,
    pub(super) legend: SeriesLabelPosition,
}

/// The smallest and largest x and y of a set of series' points.
#[derive(Debug, PartialEq)]
pub(super) struct Extent {
    pub(super) x_min: f64,
    pub(super) x_max: f64,
    pub(super) y_min: f64,
    pub(super) y_max: f64,
}

/// The extent of all the points of `series`; None if there is no point.
pub(super) fn extent(series: &[Series]) -> Option<Extent> {
    let mut points = series.iter().flat_map(|s| s.points.iter()).peekable();
    points.peek()?;
    let (x_min, x_max, y_min, y_max) = points.fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    Some(Extent {
        x_min,
        x_max,
        y_min,
        y_max,
    })
}

/// A log axis range from `lo / below` to `hi * above`, so that points at the ends and their
/// labels stay inside the plot, widened around its middle to at least two decades.
pub(super) fn log_range(lo: f64, hi: f64, below: f64, above: f64) -> Range<f64> {
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
pub(super) fn decades_in(r: &Range<f64>) -> usize {
    (r.end.log10().floor() - r.start.log10().ceil()) as usize + 1
}

/// Where the bar of series `j` (of `bars`) stands in the category at `x`: from, to.
fn bar_span(x: f64, j: usize, bars: usize) -> (f64, f64) {
    let bar_w = GROUP_WIDTH / bars.max(1) as f64;
    let x0 = x - GROUP_WIDTH / 2.0 + j as f64 * bar_w;
    (x0, x0 + bar_w)
}

/// The text beside a point, in pixels of the whole picture.
struct PointLabel {
    at: (i32, i32),
    text: String,
    color: RGBColor,
}

/// The y of each label placed at `dy` from its point `at`, in the order given: a label is
/// moved by 2 px (up if `up`, else down) until it is at least [`LABEL_GAP`] from every label
/// placed before it whose point is within [`LABEL_NEAR`] horizontally.
fn spread_labels(at: &[(i32, i32)], dy: i32, up: bool) -> Vec<i32> {
    let step = if up { -2 } else { 2 };
    let mut placed: Vec<(i32, i32)> = Vec::new();
    for &(x, y0) in at {
        let mut y = y0 + dy;
        // Ends: each step moves away from every label placed so far, which are finitely many.
        while placed
            .iter()
            .any(|&(px, py)| (px - x).abs() < LABEL_NEAR && (py - y).abs() < LABEL_GAP)
        {
            y += step;
        }
        placed.push((x, y));
    }
    placed.into_iter().map(|(_, y)| y).collect()
}

/// Draws `labels` at `offset` from their points with `anchor`, moved apart by
/// [`spread_labels`], each on a light box.
fn draw_point_labels(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    mut labels: Vec<PointLabel>,
    offset: (i32, i32),
    anchor: Pos,
    up: bool,
) -> anyhow::Result<()> {
    // Bottom first when moving up, top first when moving down, so that a label only ever
    // moves away from the labels placed before it.
    labels.sort_by_key(|l| if up { -l.at.1 } else { l.at.1 });
    let ats: Vec<(i32, i32)> = labels.iter().map(|l| l.at).collect();
    for (l, y) in labels.iter().zip(spread_labels(&ats, offset.1, up)) {
        let style = (FONT, 15).into_font().color(&l.color).pos(anchor);
        let x = l.at.0 + offset.0;
        // A light box behind the text keeps it readable where a line crosses it.
        let (w, h) = root.estimate_text_size(&l.text, &style).map_err(plot_err)?;
        let (w, h) = (w as i32, h as i32);
        let x0 = match anchor.h_pos {
            HPos::Left => x,
            HPos::Center => x - w / 2,
            HPos::Right => x - w,
        };
        let y0 = match anchor.v_pos {
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

/// A plot with only a title and a message, for a plot whose data is absent.
pub(super) fn empty_plot(path: &Path, title: &str, message: &str) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root
        .titled(title, (FONT, 26).into_font())
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

impl Chart {
    /// Draws the chart into the PNG file `path`.
    pub(super) fn draw(&self, path: &Path) -> anyhow::Result<()> {
        let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&self.title, (FONT, self.title_size))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(self.y_label_area);
        // plotters types a chart by its coordinates: one arm per combination of scales.
        let (x, y) = (self.x.range.clone(), self.y.range.clone());
        match (self.x.scale, self.y.scale) {
            (Scale::Linear, Scale::Linear) => {
                self.draw_on(&root, builder.build_cartesian_2d(x, y).map_err(plot_err)?)
            }
            (Scale::Log, Scale::Linear) => self.draw_on(
                &root,
                builder
                    .build_cartesian_2d(x.log_scale(), y)
                    .map_err(plot_err)?,
            ),
            (Scale::Linear, Scale::Log) => self.draw_on(
                &root,
                builder
                    .build_cartesian_2d(x, y.log_scale())
                    .map_err(plot_err)?,
            ),
            (Scale::Log, Scale::Log) => self.draw_on(
                &root,
                builder
                    .build_cartesian_2d(x.log_scale(), y.log_scale())
                    .map_err(plot_err)?,
            ),
        }?;
        root.present().map_err(plot_err)
    }

    /// Draws the mesh, the reference line, the series, the legend and the point labels, in
    /// that order (later ones on top).
    fn draw_on<'a, X, Y>(
        &self,
        root: &DrawingArea<BitMapBackend<'a>, Shift>,
        mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    ) -> anyhow::Result<()>
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let x_fmt = |v: &f64| (self.x.format)(*v);
        let y_fmt = |v: &f64| (self.y.format)(*v);
        let mut mesh = chart.configure_mesh();
        if matches!(self.marks, Marks::Bars) {
            mesh.disable_x_mesh();
        }
        mesh.x_desc(self.x.desc)
            .y_desc(self.y.desc)
            .x_labels(self.x.labels)
            .y_labels(self.y.labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style((FONT, 17))
            .axis_desc_style((FONT, 19))
            .light_line_style(BLACK.mix(0.05))
            .bold_line_style(BLACK.mix(0.15))
            .draw()
            .map_err(plot_err)?;

        if let Some(r) = &self.reference {
            let style = BLACK.mix(0.7).stroke_width(2);
            let (x0, x1) = (self.x.range.start, self.x.range.end);
            chart
                .draw_series(DashedLineSeries::new([(x0, r.y), (x1, r.y)], 10, 6, style))
                .map_err(plot_err)?
                .label(r.label.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(-4, 0), (6, 0)], style)
                        + PathElement::new(vec![(12, 0), (22, 0)], style)
                });
        }

        let mut labels = Vec::new();
        for (j, s) in self.series.iter().enumerate() {
            let color = s.color;
            match &self.marks {
                Marks::Lines { .. } => {
                    chart
                        .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(3)))
                        .map_err(plot_err)?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x - 4, y), (x + 22, y)], color.stroke_width(3))
                        });
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, color.filled())))
                        .map_err(plot_err)?;
                    labels.extend(s.points.iter().map(|p| PointLabel {
                        at: chart.backend_coord(p),
                        text: (self.value)(p.1),
                        color,
                    }));
                }
                Marks::Bars => {
                    let bars: Vec<(f64, f64, f64)> = s
                        .points
                        .iter()
                        .map(|&(x, v)| {
                            let (x0, x1) = bar_span(x, j, self.series.len());
                            (x0, x1, v)
                        })
                        .collect();
                    chart
                        .draw_series(bars.iter().map(|&(x0, x1, v)| {
                            Rectangle::new([(x0 + 0.01, 0.0), (x1 - 0.01, v)], color.filled())
                        }))
                        .map_err(plot_err)?
                        .label(s.label.as_str())
                        .legend(move |(x, y)| {
                            Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled())
                        });
                    let style = (FONT, 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom));
                    // Just above the bar: 1% of the axis.
                    let lift = self.y.range.end * 0.01;
                    chart
                        .draw_series(bars.iter().map(|&(x0, x1, v)| {
                            Text::new((self.value)(v), ((x0 + x1) / 2.0, v + lift), style.clone())
                        }))
                        .map_err(plot_err)?;
                }
            }
        }

        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 17))
            .margin(12)
            .draw()
            .map_err(plot_err)?;
        if let Marks::Lines { offset, anchor, up } = self.marks {
            draw_point_labels(root, labels, offset, anchor, up)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(f64, f64)]) -> Series {
        Series {
            label: "s".into(),
            color: BLACK,
            points: points.to_vec(),
        }
    }

    #[test]
    fn extent_spans_every_series() {
        assert_eq!(extent(&[]), None);
        assert_eq!(extent(&[series(&[]), series(&[])]), None);
        let e = extent(&[
            series(&[(10.0, 5.0), (1000.0, 2.0)]),
            series(&[]),
            series(&[(1.0, 7.5)]),
        ]);
        assert_eq!(
            e,
            Some(Extent {
                x_min: 1.0,
                x_max: 1000.0,
                y_min: 2.0,
                y_max: 7.5
            })
        );
    }

    #[test]
    fn log_range_pads_and_spans_two_decades() {
        // Wide enough: only the padding.
        let r = log_range(1.0, 10_000.0, 2.0, 4.0);
        assert_eq!(r, 0.5..40_000.0);
        // Narrow: widened evenly (in log terms) to two decades.
        let r = log_range(10.0, 20.0, 1.0, 1.0);
        assert!((r.end / r.start - 100.0).abs() < 1e-9, "{r:?}");
        assert!((r.start * r.end - 200.0).abs() < 1e-9, "{r:?}");
        // 0 (a time too small to measure) still gives a range a log axis can draw.
        assert!(log_range(0.0, 1.0, 1.0, 1.0).start > 0.0);
        assert_eq!(decades_in(&(0.5..40_000.0)), 5); // 1, 10, 100, 1k, 10k
    }

    #[test]
    fn bars_of_a_category_stand_side_by_side() {
        let spans: Vec<(f64, f64)> = (0..3).map(|j| bar_span(2.0, j, 3)).collect();
        // The group is GROUP_WIDTH wide, centred on the category, bars touching in order.
        assert!(
            (spans[0].0 - (2.0 - GROUP_WIDTH / 2.0)).abs() < 1e-12,
            "{spans:?}"
        );
        assert!(
            (spans[2].1 - (2.0 + GROUP_WIDTH / 2.0)).abs() < 1e-12,
            "{spans:?}"
        );
        for w in spans.windows(2) {
            assert!((w[0].1 - w[1].0).abs() < 1e-12, "{spans:?}");
        }
        // One series: one bar as wide as the group.
        assert_eq!(bar_span(0.0, 0, 1), (-0.4, 0.4));
    }

    #[test]
    fn labels_of_near_points_are_kept_apart() {
        // Three labels on the same point, one near it, one far to the right.
        let at = [(100, 300), (100, 300), (100, 300), (150, 305), (400, 300)];
        let ys = spread_labels(&at, -9, true);
        assert_eq!(ys[0], 291, "the first label is where it was asked for");
        assert_eq!(ys[4], 291, "a label far from the others does not move");
        for i in 0..4 {
            for k in 0..i {
                assert!((ys[i] - ys[k]).abs() >= LABEL_GAP, "{i} vs {k}: {ys:?}");
                assert!(ys[i] < ys[k], "moving up: {ys:?}");
            }
        }
        // Moving down: the same, the other way.
        let ys = spread_labels(&at[..2], 4, false);
        assert_eq!(ys, vec![304, 322]);
    }
}
