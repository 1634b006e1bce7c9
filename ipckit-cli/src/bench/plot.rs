//! The report's plots, as SVG: round-trip latency and streaming throughput against the
//! message size, log scales, one series per mechanism.
//!
//! plotters draws the frame (axes, ticks, grid, captions); the series are then added as one
//! `<g class="series" data-mech=NAME data-metric=METRIC>` per mechanism and panel, holding
//! its lines, its points and its legend entry, at the positions plotters' coordinate mapping
//! gives. That keeps each mechanism one identifiable element for readers and tests.

use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::aggregate::Measured;
use super::html::escape;

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 560;
const LEGEND_WIDTH: u32 = 190;

/// Distinct colours, one per mechanism (they repeat past the 16th).
const PALETTE: [(u8, u8, u8); 16] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 0, 0),
    (0, 128, 128),
    (170, 110, 40),
    (60, 60, 60),
    (102, 194, 165),
];

/// One line of a series: points (log2 of the size, figure), and whether it is dashed.
struct Line {
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// The lines of one mechanism in one panel.
struct Series {
    mech: &'static str,
    colour: (u8, u8, u8),
    lines: Vec<Line>,
}

/// One chart of a plot.
struct Panel<'a> {
    caption: &'a str,
    metric: &'a str,
    y_desc: &'a str,
    y_label: &'a dyn Fn(&f64) -> String,
    series: Vec<Series>,
}

/// latency.svg: round-trip median (solid) and p99 (dashed) against the message size.
pub fn latency_svg(results: &[Measured]) -> Result<String, String> {
    let series = by_mechanism(results, |m| {
        let rtt = m.median.rtt?;
        Some([rtt.median_ns as f64, rtt.p99_ns as f64])
    });
    render(
        PANEL_HEIGHT,
        vec![Panel {
            caption: "Round trip against message size (solid: median, dashed: p99)",
            metric: "rtt",
            y_desc: "round trip",
            y_label: &|v| duration_label(*v),
            series,
        }],
    )
}

/// throughput.svg: decimal GB/s (top) and messages per second (bottom) against the size.
pub fn throughput_svg(results: &[Measured]) -> Result<String, String> {
    let gbps = by_mechanism(results, |m| m.median.throughput.map(|t| [t.gbps]));
    let rate = by_mechanism(results, |m| m.median.throughput.map(|t| [t.msgs_per_s]));
    render(
        2 * PANEL_HEIGHT,
        vec![
            Panel {
                caption: "One-way throughput: GB/s of payload against message size",
                metric: "gbps",
                y_desc: "GB/s",
                y_label: &|v| short_number(*v),
                series: gbps,
            },
            Panel {
                caption: "One-way throughput: messages per second against message size",
                metric: "msgs_per_s",
                y_desc: "messages/s",
                y_label: &|v| short_number(*v),
                series: rate,
            },
        ],
    )
}

/// Series per mechanism (in the order of `results`), one line per figure `pick` returns.
fn by_mechanism<const N: usize>(
    results: &[Measured],
    pick: impl Fn(&Measured) -> Option<[f64; N]>,
) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for m in results {
        let index = match series.iter().position(|s| s.mech == m.mech().name()) {
            Some(i) => i,
            None => {
                series.push(Series {
                    mech: m.mech().name(),
                    colour: PALETTE[series.len() % PALETTE.len()],
                    lines: (0..N)
                        .map(|i| Line {
                            dashed: i > 0,
                            points: Vec::new(),
                        })
                        .collect(),
                });
                series.len() - 1
            }
        };
        if let Some(values) = pick(m) {
            for (line, y) in series[index].lines.iter_mut().zip(values) {
                if y > 0.0 {
                    line.points.push(((m.size() as f64).log2(), y));
                }
            }
        }
    }
    for s in &mut series {
        for line in &mut s.lines {
            line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    series
}

/// Draws the panels one above the other and returns the SVG document.
fn render(height: u32, panels: Vec<Panel<'_>>) -> Result<String, String> {
    let mut svg = String::new();
    let mut groups = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((panels.len(), 1));
        for (area, panel) in areas.iter().zip(&panels) {
            groups += &draw_panel(area, panel)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    let end = svg
        .rfind("</svg>")
        .ok_or("plotters wrote no closing </svg>")?;
    svg.insert_str(end, &groups);
    Ok(svg)
}

/// Draws one panel's frame and returns its series as SVG groups.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel<'_>,
) -> Result<String, String> {
    let points = || {
        panel
            .series
            .iter()
            .flat_map(|s| &s.lines)
            .flat_map(|l| &l.points)
    };
    // Sizes go on a log2 axis (a linear axis of exponents), so ticks fall on powers of two.
    let (x_lo, x_hi) = bounds(points().map(|p| p.0), (4.0, 20.0));
    let (y_lo, y_hi) = bounds(points().map(|p| p.1), (1.0, 10.0));
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 18))
        .margin(12)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_lo - 0.5..x_hi + 0.5, (y_lo / 1.5..y_hi * 1.5).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("message size")
        .y_desc(panel.y_desc)
        .x_label_formatter(&|v| size_label(*v))
        .x_labels(((x_hi - x_lo) as usize + 2).min(24))
        .x_max_light_lines(0)
        .y_label_formatter(panel.y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())?;
    let (area_x, area_y) = area.get_base_pixel();
    let (area_w, _) = area.dim_in_pixel();
    let legend_x = area_x + area_w as i32 - LEGEND_WIDTH as i32 + 20;
    let mut out = String::new();
    for (i, s) in panel.series.iter().enumerate() {
        let (r, g, b) = s.colour;
        let colour = format!("#{r:02X}{g:02X}{b:02X}");
        let _ = writeln!(
            out,
            r#"<g class="series" data-mech="{}" data-metric="{}" stroke="{colour}" fill="{colour}">"#,
            escape(s.mech),
            escape(panel.metric)
        );
        for line in &s.lines {
            let coords: Vec<(i32, i32)> = line
                .points
                .iter()
                .map(|&p| chart.backend_coord(&p))
                .collect();
            let dash = if line.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let pts: String = coords.iter().map(|(x, y)| format!("{x},{y} ")).collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke-width="2"{dash} points="{}"/>"#,
                pts.trim_end()
            );
            for (x, y) in coords {
                let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" stroke="none"/>"#);
            }
        }
        let y = area_y + 50 + 20 * i as i32;
        let no_data = s.lines.iter().all(|l| l.points.is_empty());
        let _ = writeln!(
            out,
            r#"<g class="legend"><line x1="{legend_x}" y1="{y}" x2="{}" y2="{y}" stroke-width="3"/><text x="{}" y="{}" stroke="none" fill="black" font-family="sans-serif" font-size="13">{}{}</text></g>"#,
            legend_x + 24,
            legend_x + 30,
            y + 4,
            escape(s.mech),
            if no_data { " (no data)" } else { "" }
        );
        out.push_str("</g>\n");
    }
    Ok(out)
}

/// The smallest and largest positive value, or `empty` when there is none.
fn bounds(values: impl Iterator<Item = f64>, empty: (f64, f64)) -> (f64, f64) {
    values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })
        .unwrap_or(empty)
}

/// A size tick at exponent `log2` of two: 64 B, 4 KiB, 1 MiB; none between powers of two.
fn size_label(log2: f64) -> String {
    if (log2 - log2.round()).abs() > 1e-6 || !(0.0..63.0).contains(&log2) {
        return String::new();
    }
    super::units::size(1usize << log2.round() as u32)
}

/// A duration tick in nanoseconds: 500 ns, 12 µs, 3.4 ms.
fn duration_label(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", trim(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", trim(ns / 1e3))
    } else {
        format!("{} ns", trim(ns))
    }
}

/// A rate tick: 0.05, 12, 3.4k, 16M.
fn short_number(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// At most three significant digits, without trailing zeros.
fn trim(v: f64) -> String {
    let text = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::aggregate::sample;
    use crate::bench::mechanism::Mechanism;

    fn results() -> Vec<Measured> {
        vec![
            sample(Mechanism::Pipe, 64, 10_000, 1e6),
            sample(Mechanism::Pipe, 4096, 12_000, 5e5),
            sample(Mechanism::ShmSpin, 64, 1_000, 1e7),
            sample(Mechanism::ShmSpin, 4096, 3_000, 3e6),
        ]
    }

    #[test]
    fn one_series_group_per_mechanism_and_panel() {
        let svg = latency_svg(&results()).unwrap();
        assert_eq!(svg.matches(r#"class="series""#).count(), 2);
        assert_eq!(svg.matches(r#"data-mech="pipe""#).count(), 1);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert!(svg.trim_end().ends_with("</svg>"));
        let svg = throughput_svg(&results()).unwrap();
        assert_eq!(svg.matches(r#"class="series""#).count(), 4);
        assert_eq!(svg.matches(r#"data-metric="gbps""#).count(), 2);
    }

    #[test]
    fn empty_results_still_draw() {
        let svg = latency_svg(&[]).unwrap();
        assert!(!svg.contains(r#"class="series""#));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(duration_label(1500.0), "1.5 µs");
        assert_eq!(duration_label(250.0), "250 ns");
        assert_eq!(duration_label(3.4e6), "3.4 ms");
        assert_eq!(short_number(16.5e6), "16.5M");
        assert_eq!(short_number(0.05), "0.05");
        assert_eq!(size_label(16.0), "64 KiB");
        assert_eq!(size_label(6.0), "64 B");
        assert_eq!(size_label(6.5), "");
    }
}
