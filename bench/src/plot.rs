//! A latency-by-percentile plot as a standalone SVG file, one polyline per path.
//!
//! The x axis is the percentile on HdrHistogram's scale: position = log10(1 / (1 - p)), so 50 %,
//! 90 %, 99 %, 99.9 %, 99.99 % and 99.999 % are evenly spaced and the tail gets as much room as
//! the body. The y axis is latency in microseconds on a logarithmic scale with 1-2-5 ticks, so a
//! 50 µs body and a 5 ms tail are both legible and equal heights are equal ratios. The maximum
//! (p = 100 %) is drawn at the right edge. No scripts, fonts or external references: any browser opens it.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
/// The right edge of the x axis: 1 / (1 - p) = 10^5, i.e. 99.999 %.
const X_DECADES: f64 = 5.0;
/// Percentile rows per halving of the distance to 100 % (as in the HdrHistogram text output).
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Line colours, reused in order when there are more series.
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One line of the plot: a name for the legend and a histogram of nanoseconds.
pub struct Series<'a> {
    pub name: &'a str,
    pub histogram: &'a Histogram<u64>,
}

/// The (x = log10(1/(1-p)), y = µs) points of a histogram, clamped to the plotted x range.
fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, f64)> = h
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q >= 1.0 {
                X_DECADES
            } else {
                (1.0 / (1.0 - q)).log10().min(X_DECADES)
            };
            (x, v.value_iterated_to() as f64 / 1_000.0)
        })
        .collect();
    // The maximum always ends the line at the right edge.
    out.push((X_DECADES, h.max() as f64 / 1_000.0));
    out
}

/// The 1-2-5 series (…, 0.5, 1, 2, 5, 10, 20, …) from the largest value <= `lo` to the smallest
/// value >= `hi`: the tick values of the logarithmic latency axis.
fn ticks_125(lo: f64, hi: f64) -> Vec<f64> {
    let lo = if lo.is_finite() && lo > 0.0 { lo } else { 1.0 };
    let hi = if hi.is_finite() && hi > lo {
        hi
    } else {
        lo * 10.0
    };
    let mut decade = 10f64.powf(lo.log10().floor());
    let mut out = Vec::new();
    'outer: loop {
        for m in [1.0, 2.0, 5.0] {
            let v = m * decade;
            // Keep the last tick <= lo as the axis start.
            if v <= lo * (1.0 + 1e-9) {
                out.clear();
            }
            out.push(v);
            if v >= hi * (1.0 - 1e-9) {
                break 'outer;
            }
        }
        decade *= 10.0;
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document plotting `series` under `title`.
pub fn latency_svg(title: &str, series: &[Series<'_>]) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let lines: Vec<Vec<(f64, f64)>> = series.iter().map(|s| points(s.histogram)).collect();
    let ys = || lines.iter().flatten().map(|&(_, y)| y).filter(|y| *y > 0.0);
    let y_lo = ys().fold(f64::INFINITY, f64::min);
    let y_hi = ys().fold(0.0f64, f64::max);
    let y_ticks = ticks_125(y_lo, y_hi);
    let (y_min, y_max) = (y_ticks[0], y_ticks[y_ticks.len() - 1]);
    let span = (y_max / y_min).log10();
    let px = |x: f64| LEFT + x / X_DECADES * plot_w;
    let py = |y: f64| TOP + plot_h - (y.max(y_min) / y_min).log10() / span * plot_h;

    let mut svg = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>
<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Horizontal grid and y labels.
    for &y in &y_ticks {
        let yy = py(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>
<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            format_us(y)
        );
    }
    // Vertical grid and percentile labels.
    let ticks = [
        (0.0, "0%"),
        (2f64.log10(), "50%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ];
    for (x, label) in ticks {
        let xx = px(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/>
<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    // Axes and their titles.
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/>
<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of 1/(1-p); the line ends at the maximum)</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (µs, log scale)</text>"##,
        TOP + plot_h,
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h,
        LEFT + plot_w / 2.0,
        HEIGHT - 22.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // One polyline per series, then the legend.
    for (i, (s, pts)) in series.iter().zip(&lines).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let coords: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            coords.join(" "),
            escape(s.name)
        );
        let ly = TOP + 12.0 + 18.0 * i as f64;
        let lx = LEFT + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="3"/>
<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_us(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        // Tick values below 1 µs are 0.5, 0.2, 0.1, 0.05 …: print without float noise.
        let digits = (-v.log10()).ceil() as usize;
        format!("{v:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(scale: u64) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).expect("sigfig");
        for i in 1..=10_000u64 {
            h.record(i * scale).expect("record");
        }
        h
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_a_legend() {
        let a = histogram(10);
        let b = histogram(25);
        let svg = latency_svg(
            "rr <64 B>",
            &[
                Series {
                    name: "direct",
                    histogram: &a,
                },
                Series {
                    name: "sallyport",
                    histogram: &b,
                },
            ],
        );
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">sallyport</text>"));
        assert!(svg.contains("rr &lt;64 B&gt;"));
        for label in ["50%", "90%", "99%", "99.9%", "99.99%"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
    }

    #[test]
    fn points_are_monotonic_and_inside_the_axes() {
        let h = histogram(100);
        let pts = points(&h);
        assert!(pts.len() > 10);
        for w in pts.windows(2) {
            assert!(w[0].0 <= w[1].0 && w[0].1 <= w[1].1, "{w:?}");
        }
        assert!(pts.iter().all(|&(x, _)| (0.0..=X_DECADES).contains(&x)));
        assert!(points(&Histogram::<u64>::new(3).expect("sigfig")).is_empty());
    }

    #[test]
    fn log_ticks_cover_the_data() {
        assert_eq!(
            ticks_125(60.0, 4100.0),
            vec![50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
        );
        assert_eq!(ticks_125(100.0, 100.0), vec![100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(ticks_125(f64::INFINITY, 0.0), vec![1.0, 2.0, 5.0, 10.0]);
        assert_eq!(format_us(0.5), "0.5");
        assert_eq!(format_us(0.05), "0.05");
        assert_eq!(format_us(2000.0), "2000");
    }
}
