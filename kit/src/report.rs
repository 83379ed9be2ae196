//! Plain-text and machine-readable reporting: fixed-width tables, HdrHistogram percentile
//! distributions, ratio arithmetic, and the host facts recorded beside every result.
//!
//! It formats figures it is given; it does not run loads, decide pass/fail or write files by itself.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Gap between table columns.
const COLUMN_GAP: &str = "  ";
/// Percentile-distribution rows per halving of the distance to 100% (HdrHistogram's default).
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Histograms record nanoseconds; distributions print microseconds.
const NANOS_PER_MICRO: f64 = 1_000.0;

/// A fixed-width table: the header row, then one row per entry. The first column is left-aligned
/// (it names the path); the others are right-aligned (they hold figures). Every line ends in `\n`
/// and carries no trailing spaces. Rows may have fewer or more cells than there are headers.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([headers.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; columns];
    let all_rows = std::iter::once(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned())
        .collect::<Vec<_>>();
    for row in &all_rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &all_rows {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                line.push_str(COLUMN_GAP);
            }
            let pad = width - cell.chars().count();
            if i == 0 {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes `h` (nanoseconds) in HdrHistogram's percentile-distribution text format with values in
/// microseconds, as Java's `outputPercentileDistribution(out, 5, 1000.0)` does; the output can be
/// plotted with HdrHistogram's plotter.
pub fn write_percentile_distribution(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    let digits = usize::from(h.sigfig());
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            let value = v.value_iterated_to() as f64 / NANOS_PER_MICRO;
            let quantile = v.quantile_iterated_to();
            total += v.count_since_last_iteration();
            if quantile < 1.0 {
                writeln!(
                    out,
                    "{value:12.digits$} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                )?;
            } else {
                writeln!(out, "{value:12.digits$} {quantile:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            h.mean() / NANOS_PER_MICRO,
            h.stdev() / NANOS_PER_MICRO,
            h.max() as f64 / NANOS_PER_MICRO,
        )
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    )
}

/// HdrHistogram's sub-bucket count for `sigfig` digits: the power of two covering `2 * 10^sigfig`.
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// `a / b`, or 0.0 when `b` is zero or the quotient is not a finite number.
pub fn ratio(a: f64, b: f64) -> f64 {
    let q = a / b;
    if b == 0.0 || !q.is_finite() {
        0.0
    } else {
        q
    }
}

/// Host facts recorded beside every result so runs can be compared fairly.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Environment {
    /// Seconds since the Unix epoch when the facts were read.
    pub date_unix: u64,
    /// Kernel release (`uname -r`), or "unknown".
    pub kernel: String,
    /// First CPU model name from `/proc/cpuinfo`, or "unknown".
    pub cpu: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// Version of this crate.
    pub bench_version: String,
}

/// Reads the host facts; missing files become "unknown" rather than errors.
pub fn environment() -> Environment {
    let date_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| cpu_model(&info))
        .unwrap_or_else(|| "unknown".to_string());
    Environment {
        date_unix,
        kernel,
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bench_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The CPU model from `/proc/cpuinfo` text: `model name` (x86), else `Model`/`Hardware`/`cpu` (arm, ppc).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware", "cpu"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["direct".to_string(), "12.5".to_string(), "1".to_string()],
            vec![
                "through sallyport".to_string(),
                "3.25".to_string(),
                "1000".to_string(),
            ],
        ];
        let t = table(&["path", "GB/s", "n"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "path               GB/s     n");
        assert_eq!(lines[1], "direct             12.5     1");
        assert_eq!(lines[2], "through sallyport  3.25  1000");
        // Right-aligned figures end in the same column.
        let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]));
        assert!(t.ends_with('\n'));
    }

    #[test]
    fn table_tolerates_ragged_rows() {
        let rows = vec![
            vec!["a".to_string()],
            vec!["b".into(), "2".into(), "extra".into()],
        ];
        let t = table(&["x", "y"], &rows);
        assert_eq!(t, "x  y\na\nb  2  extra\n");
        assert_eq!(table(&[], &[]), "\n");
    }

    #[test]
    fn percentile_distribution_has_header_and_footer() {
        let mut h = Histogram::<u64>::new(3).expect("sigfig 3");
        for i in 1..=1000u64 {
            h.record(i * 1_000).expect("record");
        }
        let mut out = Vec::new();
        write_percentile_distribution(&h, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("       Value     Percentile TotalCount 1/(1-Percentile)")
        );
        assert_eq!(lines.next(), Some(""));
        let first = lines.next().expect("first row");
        assert!(
            first.starts_with("       1.000 0.000000000000          1"),
            "{first:?}"
        );
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#'))
            .expect("last row");
        assert!(
            last_row.contains(" 1.000000000000       1000"),
            "{last_row:?}"
        );
        assert!(
            text.contains("#[Max     =     1000.447, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn percentile_distribution_of_empty_histogram() {
        let h = Histogram::<u64>::new(3).expect("sigfig 3");
        let mut out = Vec::new();
        write_percentile_distribution(&h, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n#[Mean")
        );
    }

    #[test]
    fn ratio_is_nan_safe() {
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert_eq!(ratio(3.0, 0.0), 0.0);
        assert_eq!(ratio(0.0, 0.0), 0.0);
        assert_eq!(ratio(f64::NAN, 1.0), 0.0);
    }

    #[test]
    fn cpu_model_reads_x86_and_arm_text() {
        let x86 = "processor\t: 0\nmodel name\t: Example CPU @ 3.0GHz\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Example CPU @ 3.0GHz"));
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\n\nHardware\t: Example SoC\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("Example SoC"));
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn environment_is_filled() {
        let env = environment();
        assert!(!env.kernel.is_empty());
        assert!(env.cpus >= 1);
    }
}
