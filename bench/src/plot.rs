//! A latency-by-percentile plot as a standalone SVG file, one polyline per path.
//!
//! The x axis is the percentile on HdrHistogram's scale: position = log10(1 / (1 - p)), so 50 %,
//! 90 %, 99 %, 99.9 %, 99.99 % and 99.999 % are evenly spaced and the tail gets as much room as
//! the body. The y axis is latency in microseconds, linear from zero. The maximum (p = 100 %) is
//! drawn at the right edge. No scripts, fonts or external references: any browser opens it.

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

/// A "nice" step (1, 2 or 5 × 10^k) giving about `target` intervals up to `max`.
fn nice_step(max: f64, target: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
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
    let y_max_data = lines
        .iter()
        .flatten()
        .map(|&(_, y)| y)
        .fold(0.0f64, f64::max);
    let step = nice_step(y_max_data, 6.0);
    let y_max = (y_max_data / step).ceil().max(1.0) * step;
    let px = |x: f64| LEFT + x / X_DECADES * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_max * plot_h;

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
    let mut y = 0.0;
    while y <= y_max + step / 2.0 {
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
        y += step;
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
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (µs)</text>"##,
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
    if v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v}")
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
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 6.0), 2.0);
        assert_eq!(nice_step(0.0, 6.0), 1.0);
        assert_eq!(nice_step(4800.0, 6.0), 1000.0);
    }
}
