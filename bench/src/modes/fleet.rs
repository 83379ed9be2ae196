//! `fleet` mode: many prepared connections across several gateway pairs; memory and kernel
//! resources per connection.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::common::{
    environment_json, gateway_json, header, start_echo, Outcome, BASELINE_FILL, FD_SPARE,
    MAX_PREPARED, MEMORY_SETTLE,
};
use crate::host;
use crate::procs::{self, Progress, Scratch};
use crate::report::{self, ratio};
use crate::topology::{GatewayOptions, SallyportPair};

/// What `fleet` parks.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Prepared connections to park, one run per entry.
    pub counts: Vec<usize>,
    /// Most prepared connections one gateway process holds; pairs = ceil(count / this).
    pub per_process: usize,
    /// Longest the pools may take to fill.
    pub fill_limit: Duration,
}

/// Default `--per-process`: below the 20 000 open-files hard limit with room to spare.
pub const DEFAULT_PER_PROCESS: usize = 18_000;

/// System-wide kernel memory figures read together.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Kernel {
    tcp: host::TcpSockstat,
    slab_bytes: u64,
}

impl Kernel {
    fn read() -> Result<Kernel> {
        Ok(Kernel {
            tcp: host::tcp_sockstat().context("reading /proc/net/sockstat")?,
            slab_bytes: host::slab_bytes().context("reading /proc/meminfo")?,
        })
    }

    /// `self - earlier` per field, signed.
    fn delta(&self, earlier: &Kernel) -> KernelDelta {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        KernelDelta {
            tcp_alloc: d(self.tcp.alloc, earlier.tcp.alloc),
            tcp_mem_bytes: d(self.tcp.mem_bytes, earlier.tcp.mem_bytes),
            slab_bytes: d(self.slab_bytes, earlier.slab_bytes),
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct KernelDelta {
    tcp_alloc: i64,
    tcp_mem_bytes: i64,
    slab_bytes: i64,
}

/// The shares of `count` over `pairs` (differing by at most one).
pub fn shares(count: usize, pairs: usize) -> Vec<usize> {
    (0..pairs)
        .map(|i| count / pairs + usize::from(i < count % pairs))
        .collect()
}

/// Gateway pairs needed so no process holds more than `per_process` parked connections.
pub fn pairs_for(count: usize, per_process: usize) -> usize {
    count.div_ceil(per_process.max(1)).max(1)
}

fn rss(proc: &procs::Proc) -> Result<u64> {
    host::rss_bytes(proc.pid()).with_context(|| format!("reading VmRSS of {}", proc.name()))
}

/// `fleet`: park each count of prepared connections across gateway pairs and report memory and
/// time to fill.
pub fn fleet(
    spec: &FleetSpec,
    gateway: &GatewayOptions,
    progress: &mut Progress,
) -> Result<Outcome> {
    if spec.counts.is_empty() || spec.counts.contains(&0) {
        bail!("fleet needs counts of at least 1");
    }
    let (soft, hard) = host::nofile_limit().context("reading RLIMIT_NOFILE")?;
    let budget = usize::try_from(soft).unwrap_or(usize::MAX);
    if spec.per_process + FD_SPARE > budget || spec.per_process > MAX_PREPARED {
        bail!(
            "--per-process {} needs {} open files per gateway, but the limit is {soft} (hard {hard}); \
             the most is {}",
            spec.per_process,
            spec.per_process + FD_SPARE,
            budget.saturating_sub(FD_SPARE).min(MAX_PREPARED)
        );
    }
    let echo = start_echo()?;
    let what = format!(
        "park {} prepared connection(s){}, at most {} per gateway process, fill limit {:.0} s",
        spec.counts
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        if gateway.tls.is_some() {
            " over mutual TLS"
        } else {
            ""
        },
        spec.per_process,
        spec.fill_limit.as_secs_f64()
    );
    let mut text = header("fleet", &what, None, gateway);
    let headers = [
        "parked",
        "pairs",
        "fill s",
        "parked/s",
        "DMZ RSS MiB",
        "internal RSS MiB",
        "DMZ B/conn",
        "internal B/conn",
        "TCP mem B/conn",
        "slab B/conn",
        "sockets/conn",
    ];
    let mut table_rows = Vec::new();
    let mut results = Vec::new();
    let mut baselines = Vec::new();
    for &count in &spec.counts {
        let r = fleet_one(count, spec, gateway, echo.addr(), progress)?;
        let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
        table_rows.push(vec![
            count.to_string(),
            r.pairs.to_string(),
            format!("{:.2}", r.fill_seconds),
            format!("{:.0}", ratio(count as f64, r.fill_seconds)),
            mib(r.dmz_rss),
            mib(r.internal_rss),
            format!("{:.0}", r.dmz_per_conn),
            format!("{:.0}", r.internal_per_conn),
            format!("{:.0}", r.tcp_mem_per_conn),
            format!("{:.0}", r.slab_per_conn),
            format!("{:.2}", r.sockets_per_conn),
        ]);
        baselines.push(format!(
            "{count}: baseline pair (prepared = 1) RSS DMZ {:.1} MiB, internal {:.1} MiB",
            r.base_dmz_rss as f64 / (1u64 << 20) as f64,
            r.base_internal_rss as f64 / (1u64 << 20) as f64
        ));
        results.push(r.json);
    }
    progress.clear();
    text.push_str(&report::table(&headers, &table_rows));
    text.push_str(
        "\nfill s: from starting the first gateway until every DMZ's /stats showed its share parked.\n\
         RSS MiB: VmRSS summed over the DMZ (internal) processes when full. B/conn: (that sum - pairs x the \
         RSS of a pair started with prepared = 1) / parked.\n\
         TCP mem, slab, sockets: system-wide deltas of /proc/net/sockstat (TCP mem pages x page size, \
         alloc) and /proc/meminfo Slab from before the first gateway started to full, minus pairs x \
         the baseline pair's own delta, per parked connection (both ends: DMZ and internal socket). \
         They are system-wide: sockets/conn should be close to 2.00 (one socket at each end); when it \
         is not, other activity on the host disturbed them.\n",
    );
    for b in baselines {
        text.push_str(&b);
        text.push('\n');
    }
    let json = json!({
        "kind": "fleet",
        "config": {
            "counts": spec.counts,
            "per_process": spec.per_process,
            "fill_limit_secs": spec.fill_limit.as_secs_f64(),
            "tls": gateway.tls.is_some(),
            "gateway": gateway_json(gateway),
        },
        "results": results,
        "environment": environment_json(Some(gateway)),
    });
    Ok(Outcome {
        text,
        json,
        histograms: Vec::new(),
        incomplete: None,
    })
}

struct FleetRun {
    pairs: usize,
    fill_seconds: f64,
    dmz_rss: u64,
    internal_rss: u64,
    base_dmz_rss: u64,
    base_internal_rss: u64,
    dmz_per_conn: f64,
    internal_per_conn: f64,
    tcp_mem_per_conn: f64,
    slab_per_conn: f64,
    sockets_per_conn: f64,
    json: Value,
}

fn fleet_one(
    count: usize,
    spec: &FleetSpec,
    gateway: &GatewayOptions,
    echo: SocketAddr,
    progress: &mut Progress,
) -> Result<FleetRun> {
    let pairs_n = pairs_for(count, spec.per_process);
    let shares = shares(count, pairs_n);
    let scratch = Scratch::new().context("creating a scratch directory")?;

    // Baseline: the same processes with one prepared connection.
    progress.show(&format!("fleet {count}: baseline pair (prepared = 1)"));
    let kernel_base0 = Kernel::read()?;
    let mut base = SallyportPair::start(gateway, &scratch, "base-", echo, 1)?;
    base.wait_filled(Instant::now() + BASELINE_FILL)?;
    thread::sleep(MEMORY_SETTLE);
    let base_dmz_rss = rss(&base.dmz.proc)?;
    let base_internal_rss = rss(&base.internal.proc)?;
    let kernel_base1 = Kernel::read()?;
    base.stop()?;
    let base_delta = kernel_base1.delta(&kernel_base0);
    thread::sleep(MEMORY_SETTLE);

    // The fleet.
    let kernel_before = Kernel::read()?;
    let started = Instant::now();
    let deadline = started + spec.fill_limit;
    let mut pairs = Vec::with_capacity(pairs_n);
    for (i, &share) in shares.iter().enumerate() {
        progress.show(&format!(
            "fleet {count}: starting pair {}/{pairs_n} ({share} prepared)",
            i + 1
        ));
        pairs.push(SallyportPair::start(
            gateway,
            &scratch,
            &format!("pair{i}-"),
            echo,
            share,
        )?);
    }
    let fill_seconds = loop {
        let mut parked = 0u64;
        let mut full = true;
        for pair in pairs.iter_mut() {
            let p = pair.parked()?;
            parked += p.min(pair.prepared as u64);
            full &= p >= pair.prepared as u64;
            pair.check_alive()?;
        }
        if full {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() >= deadline {
            bail!(
                "fleet {count}: only {parked} of {count} prepared connections parked after {:.0} s",
                spec.fill_limit.as_secs_f64()
            );
        }
        progress.show(&format!(
            "fleet {count}: {parked}/{count} parked across {pairs_n} pair(s), {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        thread::sleep(Duration::from_millis(50));
    };
    progress.show(&format!(
        "fleet {count}: full in {fill_seconds:.2} s; measuring"
    ));
    thread::sleep(MEMORY_SETTLE);
    let kernel_after = Kernel::read()?;
    let mut dmz_rss = 0u64;
    let mut internal_rss = 0u64;
    let mut per_pair = Vec::new();
    for (pair, share) in pairs.iter().zip(&shares) {
        let d = rss(&pair.dmz.proc)?;
        let n = rss(&pair.internal.proc)?;
        dmz_rss += d;
        internal_rss += n;
        per_pair.push(json!({ "prepared": share, "dmz_rss_bytes": d, "internal_rss_bytes": n }));
    }
    progress.show(&format!("fleet {count}: stopping {pairs_n} pair(s)"));
    let procs: Vec<procs::Proc> = pairs
        .into_iter()
        .flat_map(|p| [p.dmz.proc, p.internal.proc])
        .collect();
    procs::stop_all(procs)?;

    let k = count as f64;
    let pairs_f = pairs_n as f64;
    let per_conn = |total: u64, base: u64| (total as f64 - pairs_f * base as f64) / k;
    let delta = kernel_after.delta(&kernel_before);
    let net = |d: i64, b: i64| (d as f64 - pairs_f * b as f64) / k;
    let run = FleetRun {
        pairs: pairs_n,
        fill_seconds,
        dmz_rss,
        internal_rss,
        base_dmz_rss,
        base_internal_rss,
        dmz_per_conn: per_conn(dmz_rss, base_dmz_rss),
        internal_per_conn: per_conn(internal_rss, base_internal_rss),
        tcp_mem_per_conn: net(delta.tcp_mem_bytes, base_delta.tcp_mem_bytes),
        slab_per_conn: net(delta.slab_bytes, base_delta.slab_bytes),
        sockets_per_conn: net(delta.tcp_alloc, base_delta.tcp_alloc),
        json: Value::Null,
    };
    let json = json!({
        "count": count,
        "pairs": pairs_n,
        "fill_seconds": fill_seconds,
        "parked_per_sec": ratio(k, fill_seconds),
        "rss": {
            "dmz_total_bytes": dmz_rss,
            "internal_total_bytes": internal_rss,
            "baseline_dmz_bytes": base_dmz_rss,
            "baseline_internal_bytes": base_internal_rss,
            "dmz_bytes_per_conn": run.dmz_per_conn,
            "internal_bytes_per_conn": run.internal_per_conn,
        },
        "kernel": {
            "before": kernel_before,
            "after": kernel_after,
            "delta": delta,
            "baseline_pair_delta": base_delta,
            "tcp_mem_bytes_per_conn": run.tcp_mem_per_conn,
            "slab_bytes_per_conn": run.slab_per_conn,
            "tcp_sockets_per_conn": run.sockets_per_conn,
        },
        "per_pair": per_pair,
    });
    Ok(FleetRun { json, ..run })
}
