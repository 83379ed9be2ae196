//! The orchestrated benchmark modes of `sallyport-bench`: each starts an echo back-end and, for
//! every path, the gateways or peer tunnels it needs (see [`crate::topology`]), measures, and
//! stops them again before the next path.
//!
//! Every path is measured right after a `direct` run against the same echo back-end, and its row
//! carries the ratio to that run: on a shared, noisy machine only ratios taken seconds apart are
//! comparable. With `--tls` (bulk, rr) each TLS path is also measured right after a `tls-direct`
//! run (the load against a rustls echo server in this process) and carries that ratio too. The modes return an [`Outcome`] (human text, a JSON document, histograms); writing
//! files and choosing exit codes is the binary's job.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::admin;
use crate::backend::EchoServer;
use crate::host;
use crate::load::{self, BulkResult, BulkSpec, CpsResult, CpsSpec, RrResult, RrSpec};
use crate::procs::{self, Progress, Scratch};
use crate::report::{self, ratio};
use crate::topology::{GatewayOptions, PathKind, Running, SallyportPair, SERVICE};

/// Pause after a load before reading gateways' CPU time, so a forking peer (socat) has reaped
/// its per-connection children, whose time only then appears in the parent's counters.
const CPU_SETTLE: Duration = Duration::from_millis(200);
/// Pause after a pool is full before reading memory, so allocations that follow the last
/// handshake are counted.
const MEMORY_SETTLE: Duration = Duration::from_millis(500);
/// Longest the fleet baseline pair (one prepared connection) may take to fill.
const BASELINE_FILL: Duration = Duration::from_secs(15);
/// Descriptors a gateway needs besides its parked connections (listeners, ring, admin, logs).
pub const FD_SPARE: usize = 100;
/// Upper bound of a service's `prepared` in sallyport's config.
pub const MAX_PREPARED: usize = 100_000;

/// What a mode produced.
#[derive(Debug)]
pub struct Outcome {
    /// Header lines, the table and notes, for stdout.
    pub text: String,
    /// Figures, configuration and environment.
    pub json: Value,
    /// Latency histograms (nanoseconds) per path, for `--hdr` and `--plot` (rr only).
    pub histograms: Vec<(PathKind, Histogram<u64>)>,
    /// Set when a load did not finish (e.g. hit its time limit): report, then exit 1.
    pub incomplete: Option<String>,
}

/// Options shared by the path-comparing modes.
#[derive(Debug, Clone)]
pub struct Common {
    /// Paths to measure, in order; peers already checked to be installed.
    pub paths: Vec<PathKind>,
    /// With `gateway.tls` set (`--tls`), the load speaks TLS on tls-direct and sallyport.
    pub gateway: GatewayOptions,
}

impl Common {
    fn tls(&self) -> bool {
        self.gateway.tls.is_some()
    }
}

/// The paths of a `--tls` run: `requested` (deduplicated) or direct, tls-direct, sallyport.
/// Peers, ws and vpc are refused: they are measured without TLS only.
pub fn resolve_tls_paths(requested: Option<&[PathKind]>) -> Result<Vec<PathKind>> {
    let wanted = requested.map_or_else(PathKind::tls_defaults, <[PathKind]>::to_vec);
    let mut paths = Vec::new();
    for p in wanted {
        if p != PathKind::Direct && !p.speaks_tls() && !p.needs_tls_setup() {
            bail!(
                "--tls compares direct, tls-direct, mtls and sallyport; {p} is measured without TLS only"
            );
        }
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    Ok(paths)
}

/// Splits `requested` (or the defaults: direct, sallyport and every installed peer) into the
/// paths that can run and one note per skipped peer. Duplicates are dropped.
pub fn resolve_paths(requested: Option<&[PathKind]>) -> (Vec<PathKind>, Vec<String>) {
    let wanted = requested.map_or_else(PathKind::defaults, <[PathKind]>::to_vec);
    let mut paths = Vec::new();
    let mut notes = Vec::new();
    for p in wanted {
        if paths.contains(&p) {
            continue;
        }
        match p.available() {
            Ok(()) => paths.push(p),
            Err(why) => notes.push(why),
        }
    }
    if requested.is_none() {
        for p in PathKind::ALL {
            if let Err(why) = p.available() {
                notes.push(why);
            }
        }
    }
    (paths, notes)
}

/// One measured path and the direct run taken just before it (`None` for the direct row), and
/// with `--tls` the tls-direct run taken just before it (`None` for direct and tls-direct rows).
#[derive(Debug)]
struct Row<M> {
    path: PathKind,
    m: M,
    direct: Option<M>,
    rustls: Option<M>,
}

/// For each path other than direct: start it, measure direct, (with `--tls`, except for
/// tls-direct itself: measure tls-direct,) measure the path, stop it. A requested direct path
/// becomes the first row (the first baseline run, or a run of its own when it is the only path).
fn compare<M: Clone>(
    mode: &str,
    common: &Common,
    echo: &EchoServer,
    progress: &mut Progress,
    mut measure: impl FnMut(&mut Running) -> Result<M>,
) -> Result<(Vec<Row<M>>, Vec<String>)> {
    let mut skipped = Vec::new();
    let mut direct = Running::start(PathKind::Direct, echo.addr(), &common.gateway)?;
    let wants_direct = common.paths.contains(&PathKind::Direct);
    let others: Vec<PathKind> = common
        .paths
        .iter()
        .copied()
        .filter(|p| *p != PathKind::Direct)
        .collect();
    let mut rows = Vec::new();
    if others.is_empty() && wants_direct {
        progress.show(&format!("{mode}: direct"));
        let m = measure(&mut direct).context("path direct")?;
        rows.push(Row {
            path: PathKind::Direct,
            m,
            direct: None,
            rustls: None,
        });
    }
    for (i, &path) in others.iter().enumerate() {
        progress.show(&format!("{mode}: starting {path}"));
        let mut running = match Running::start(path, echo.addr(), &common.gateway) {
            Ok(r) => r,
            // A peer that does not start is skipped with its reason; sallyport must start.
            Err(e) if path.program().is_some() => {
                let note = format!("{path}: could not start, skipped: {e:#}");
                progress.note(&note);
                skipped.push(note);
                continue;
            }
            Err(e) => return Err(e),
        };
        progress.show(&format!("{mode}: direct (baseline for {path})"));
        let base = measure(&mut direct).context("path direct")?;
        if i == 0 && wants_direct {
            rows.push(Row {
                path: PathKind::Direct,
                m: base.clone(),
                direct: None,
                rustls: None,
            });
        }
        let rustls = if common.tls() && path != PathKind::TlsDirect {
            progress.show(&format!("{mode}: rustls direct (baseline for {path})"));
            let mut r = Running::start(PathKind::TlsDirect, echo.addr(), &common.gateway)?;
            let m = measure(&mut r).context("path tls-direct")?;
            r.stop()?;
            Some(m)
        } else {
            None
        };
        progress.show(&format!("{mode}: {path}"));
        let m = measure(&mut running).with_context(|| format!("path {path}"))?;
        running.check_alive()?;
        progress.show(&format!("{mode}: stopping {path}"));
        running.stop()?;
        rows.push(Row {
            path,
            m,
            direct: Some(base),
            rustls,
        });
    }
    progress.clear();
    Ok((rows, skipped))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn start_echo() -> Result<EchoServer> {
    EchoServer::start(loopback()).context("starting the echo back-end")
}

/// Host facts plus date, commit, and the gateways' worker count and pinning (when the bench
/// started gateways), for JSON output.
pub fn environment_json(gateway: Option<&GatewayOptions>) -> Value {
    let env = report::environment();
    let mut v = serde_json::to_value(&env).unwrap_or_else(|_| json!({}));
    v["date"] = json!(iso8601(env.date_unix));
    v["git_commit"] = json!(git_commit());
    if let Some(gateway) = gateway {
        v["workers_per_gateway"] = json!(gateway.workers);
        v["pinning"] = json!(pinning(gateway));
    }
    if let Ok((soft, hard)) = host::nofile_limit() {
        v["open_files_limit"] = json!({ "soft": soft, "hard": hard });
    }
    v
}

fn pinning(gateway: &GatewayOptions) -> String {
    let workers = gateway.workers;
    if gateway.sets_cores() {
        format!(
            "each sallyport gateway runs {workers} data-plane worker(s), placed by the cores option given; \
             the load generator, the echo back-end and peer tunnels are not pinned"
        )
    } else {
        format!(
            "each sallyport gateway runs {workers} data-plane worker(s), unpinned (cores = []) like the \
             load generator, the echo back-end and peer tunnels"
        )
    }
}

/// The commit of the checkout holding the working directory, else the one holding this binary.
pub fn git_commit() -> Option<String> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    cwd.as_deref().and_then(host::git_commit).or_else(|| {
        exe.as_deref()
            .and_then(Path::parent)
            .and_then(host::git_commit)
    })
}

/// Year, month, day of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn iso8601(unix: u64) -> String {
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days((unix / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Header lines shared by every mode's text output.
fn header(
    mode: &str,
    what: &str,
    common_paths: Option<&[PathKind]>,
    gw: &GatewayOptions,
) -> String {
    let env = report::environment();
    let mut s = format!("sallyport-bench {mode}: {what}\n");
    if let Some(paths) = common_paths {
        let names: Vec<&str> = paths.iter().map(|p| p.name()).collect();
        if gw.tls.is_some() {
            s.push_str(&format!(
                "paths: {} (each measured right after a direct run and, for mtls and sallyport, a \
                 rustls direct run; \"x direct\" and \"x rustls\" compare with them)\n",
                names.join(", ")
            ));
            s.push_str(
                "TLS: the load speaks TLS (rustls, aws-lc-rs, default versions and suites) to rustls direct \
                 (a rustls echo server in this process) and to sallyport (tls:// public listener, mutual-TLS \
                 reverse leg, certificates from `sallyport certs`); plain TCP to direct and to mtls \
                 (plain public listener, the same mutual-TLS reverse leg: TLS where the firewall is crossed)\n",
            );
        } else {
            s.push_str(&format!(
                "paths: {} (each measured right after a direct run; \"x direct\" compares the two)\n",
                names.join(", ")
            ));
        }
        if paths.contains(&PathKind::Ws) {
            s.push_str(
                "ws: the DMZ's public listener is ws://127.0.0.1:0/echo (reverse leg plain TCP); the load \
                 speaks WebSocket to it (upgrade before the clock starts, one masked binary frame per write)\n",
            );
        }
        if paths.contains(&PathKind::Vpc) {
            s.push_str(
                "vpc: plain TCP to gateway A (accept tcp://, connect ws://B/vpc), a WebSocket connection of \
                 its own per client to gateway B (accept ws:///vpc, connect tcp:// the echo); no prepared pool\n",
            );
        }
    }
    let prepared = if common_paths.is_some() {
        format!("prepared {}", gw.prepared)
    } else {
        "prepared = each pair's share".to_string()
    };
    s.push_str(&format!(
        "sallyport: {} worker(s) per gateway{}, relay {}, pipe_size {}, {prepared}\n",
        gw.workers,
        if gw.workers == 1 {
            format!(
                " (default 1: this host has {} core(s), shared by the load generator, the echo back-end and both gateways)",
                env.cpus
            )
        } else {
            String::new()
        },
        gw.relay.as_deref().unwrap_or("splice (default)"),
        gw.pipe_size.as_deref().unwrap_or("default"),
    ));
    s.push_str(&format!(
        "host: {}, {} core(s), kernel {}, commit {}, {}\n\n",
        env.cpu,
        env.cpus,
        env.kernel,
        git_commit().unwrap_or_else(|| "unknown".to_string()),
        iso8601(env.date_unix)
    ));
    s
}

fn gateway_json(gw: &GatewayOptions) -> Value {
    let mut v = json!({
        "sallyport": gw.binary.display().to_string(),
        "workers": gw.workers,
        "relay": gw.relay.as_deref().unwrap_or("splice"),
        "pipe_size": gw.pipe_size,
        "prepared": gw.prepared,
    });
    if gw.tls.is_some() {
        v["tls"] = json!({
            "public_listener": "tls://",
            "reverse_leg": "mutual TLS",
            "certificates": "sallyport certs",
        });
    }
    v
}

/// What the load spoke on `path`: "tls", "websocket" or "tcp".
fn client_protocol(path: PathKind, tls: bool) -> &'static str {
    if tls && path.speaks_tls() {
        "tls"
    } else if path.speaks_ws() {
        "websocket"
    } else {
        "tcp"
    }
}

/// Whether the reverse leg was mutual TLS on `path` in a `--tls` run (mtls and sallyport).
fn reverse_leg_tls(path: PathKind) -> bool {
    matches!(path, PathKind::Mtls | PathKind::Sallyport)
}

fn path_names(paths: &[PathKind]) -> Vec<&'static str> {
    paths.iter().map(|p| p.name()).collect()
}

fn push_lines(text: &mut String, lines: &[String]) {
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

// ---------------------------------------------------------------------------------------------
// bulk

#[derive(Debug, Clone)]
struct BulkMeasure {
    result: BulkResult,
    /// CPU seconds of each gateway process during the load, public-facing first.
    cpu: Vec<(String, f64)>,
}

impl BulkMeasure {
    /// GB that crossed each gateway: every echoed byte crosses it twice (up and down).
    fn gb_crossed(&self) -> f64 {
        2.0 * self.result.bytes as f64 / 1e9
    }

    fn cpu_per_gb(&self, i: usize) -> Option<f64> {
        self.cpu.get(i).map(|(_, c)| ratio(*c, self.gb_crossed()))
    }

    fn total_cpu_per_gb(&self) -> Option<f64> {
        (!self.cpu.is_empty())
            .then(|| ratio(self.cpu.iter().map(|(_, c)| c).sum(), self.gb_crossed()))
    }
}

fn measure_bulk(running: &mut Running, spec: &BulkSpec) -> Result<BulkMeasure> {
    let before = running.cpu_seconds()?;
    let result = match (&running.tls, &running.ws) {
        (Some(tls), _) => load::bulk_tls(running.addr, spec, tls)?,
        (None, Some(ws)) => load::bulk_ws(running.addr, spec, ws)?,
        (None, None) => load::bulk(running.addr, spec)?,
    };
    if !running.procs.is_empty() {
        thread::sleep(CPU_SETTLE);
    }
    let after = running.cpu_seconds()?;
    running.check_alive()?;
    let cpu = running
        .cpu_names()
        .into_iter()
        .zip(before.iter().zip(&after))
        .map(|(name, (b, a))| (name, (a - b).max(0.0)))
        .collect();
    Ok(BulkMeasure { result, cpu })
}

/// `bulk`: `spec.connections` connections each echo `spec.bytes_per_connection` bytes, per path.
pub fn bulk(common: &Common, spec: &BulkSpec, progress: &mut Progress) -> Result<Outcome> {
    let echo = start_echo()?;
    let (rows, skipped) = compare("bulk", common, &echo, progress, |r| measure_bulk(r, spec))?;
    let what = format!(
        "{} connection(s) x {} MiB echoed, {} KiB writes",
        spec.connections,
        spec.bytes_per_connection as f64 / (1 << 20) as f64,
        spec.write_size / 1024
    );
    let mut text = header("bulk", &what, Some(&common.paths), &common.gateway);
    let tls = common.tls();
    let mut headers = vec!["path", "GB/s", "direct GB/s", "x direct"];
    if tls {
        headers.extend(["rustls GB/s", "x rustls"]);
    }
    headers.extend([
        "front CPU-s/GB",
        "back CPU-s/GB",
        "total CPU-s/GB",
        "complete",
    ]);
    let opt = |v: Option<f64>| v.map_or("-".to_string(), f2);
    let mut table_rows = Vec::new();
    let mut results = Vec::new();
    let mut incomplete = Vec::new();
    for row in &rows {
        let m = &row.m;
        let base = row.direct.as_ref().unwrap_or(m);
        let x = ratio(m.result.gbytes_per_sec, base.result.gbytes_per_sec);
        let x_rustls = row
            .rustls
            .as_ref()
            .map(|r| ratio(m.result.gbytes_per_sec, r.result.gbytes_per_sec));
        let mut cells = vec![
            row.path.label().to_string(),
            f2(m.result.gbytes_per_sec),
            f2(base.result.gbytes_per_sec),
            f2(x),
        ];
        if tls {
            cells.push(opt(row.rustls.as_ref().map(|r| r.result.gbytes_per_sec)));
            cells.push(opt(x_rustls));
        }
        cells.extend([
            opt(m.cpu_per_gb(0)),
            opt(m.cpu_per_gb(1)),
            opt(m.total_cpu_per_gb()),
            if m.result.complete { "yes" } else { "NO" }.to_string(),
        ]);
        table_rows.push(cells);
        let mut runs = vec![(m, row.path.name()), (base, "direct")];
        if let Some(r) = &row.rustls {
            runs.push((r, "tls-direct"));
        }
        for (r, name) in runs {
            if !r.result.complete && !incomplete.iter().any(|n| n == name) {
                incomplete.push(name.to_string());
            }
        }
        let cpu: BTreeMap<&str, Value> = m
            .cpu
            .iter()
            .map(|(n, c)| {
                (
                    n.as_str(),
                    json!({ "cpu_seconds": c, "cpu_s_per_gb": ratio(*c, m.gb_crossed()) }),
                )
            })
            .collect();
        let mut result = json!({
            "path": row.path,
            "bytes": m.result.bytes,
            "seconds": m.result.seconds,
            "gbytes_per_sec": m.result.gbytes_per_sec,
            "complete": m.result.complete,
            "gateways": cpu,
            "cpu_s_per_gb_total": m.total_cpu_per_gb(),
            "client": client_protocol(row.path, tls),
            "direct": base.result,
            "x_direct": x,
        });
        if tls {
            result["tls"] = json!(row.path.speaks_tls());
            result["reverse_leg_tls"] = json!(reverse_leg_tls(row.path));
            result["rustls"] = json!(row.rustls.as_ref().map(|r| &r.result));
            result["x_rustls"] = json!(x_rustls);
        }
        results.push(result);
    }
    text.push_str(&report::table(&headers, &table_rows));
    push_lines(&mut text, &skipped);
    text.push_str(
        "\nGB/s: bytes echoed back per second. CPU-s/GB: user+system CPU seconds of a gateway process \
         (/proc/PID/stat, all its threads and reaped children) per GB crossing it; every echoed byte \
         crosses twice (up and down).\nfront = the public-facing process (sallyport and ws: the DMZ; vpc: \
         gateway A; rathole server, haproxy, socat); back = the inner one (sallyport and ws: the internal \
         gateway; vpc: gateway B; rathole client).\n",
    );
    if tls {
        text.push_str(
            "rustls GB/s, x rustls: the rustls direct run just before the path (the same TLS client \
             against the bench's own rustls echo server on loopback: the bare-rustls baseline). For \
             rustls direct, front = that echo server's connection threads (RUSAGE_THREAD: TLS \
             termination plus echo, per GB crossing it); for sallyport, the DMZ terminates the \
             client's TLS and re-encrypts on the mutual-TLS reverse leg, the internal gateway \
             decrypts and encrypts the reverse leg.\n",
        );
    }
    let mut config = json!({
        "paths": path_names(&common.paths),
        "connections": spec.connections,
        "bytes_per_connection": spec.bytes_per_connection,
        "write_size": spec.write_size,
        "time_limit_secs": spec.time_limit.as_secs_f64(),
        "gateway": gateway_json(&common.gateway),
    });
    if tls {
        config["tls"] = json!(true);
    }
    let json = json!({
        "kind": "bulk",
        "config": config,
        "results": results,
        "skipped": skipped,
        "environment": environment_json(Some(&common.gateway)),
    });
    incomplete.dedup();
    Ok(Outcome {
        text,
        json,
        histograms: Vec::new(),
        incomplete: (!incomplete.is_empty()).then(|| {
            format!(
                "bulk did not finish within the time limit on: {}",
                incomplete.join(", ")
            )
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// rr

fn measure_rr(running: &mut Running, spec: &RrSpec) -> Result<RrResult> {
    let result = match (&running.tls, &running.ws) {
        (Some(tls), _) => load::rr_tls(running.addr, spec, tls)?,
        (None, Some(ws)) => load::rr_ws(running.addr, spec, ws)?,
        (None, None) => load::rr(running.addr, spec)?,
    };
    running.check_alive()?;
    Ok(result)
}

/// `rr`: request/response latency per path (closed loop, or open loop at `spec.rate_per_sec`).
pub fn rr(common: &Common, spec: &RrSpec, progress: &mut Progress) -> Result<Outcome> {
    let echo = start_echo()?;
    let (rows, skipped) = compare("rr", common, &echo, progress, |r| measure_rr(r, spec))?;
    let what = format!(
        "{} connection(s) x {} requests of {} B, {}",
        spec.connections,
        spec.requests_per_connection,
        spec.size,
        match spec.rate_per_sec {
            None => "closed loop".to_string(),
            Some(rate) =>
                format!("open loop at {rate} requests/s (latency from the intended send time)"),
        }
    );
    let mut text = header("rr", &what, Some(&common.paths), &common.gateway);
    let tls = common.tls();
    let mut headers = vec![
        "path",
        "requests",
        "req/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "p99.99 us",
        "max us",
        "p50 x direct",
        "p99 x direct",
        "p99.9 x direct",
    ];
    if tls {
        headers.extend(["p50 x rustls", "p99 x rustls", "p99.9 x rustls"]);
    }
    let mut table_rows = Vec::new();
    let mut results = Vec::new();
    let mut histograms = Vec::new();
    let mut short = Vec::new();
    let wanted = spec
        .requests_per_connection
        .saturating_mul(spec.connections as u64);
    for row in &rows {
        let s = row.m.summary();
        let d = row.direct.as_ref().unwrap_or(&row.m).summary();
        if row.m.requests < wanted {
            short.push(row.path.name());
        }
        let t = row.rustls.as_ref().map(RrResult::summary);
        let mut cells = vec![
            row.path.label().to_string(),
            row.m.requests.to_string(),
            format!("{:.0}", s.requests_per_sec),
            f1(s.p50_us),
            f1(s.p90_us),
            f1(s.p99_us),
            f1(s.p999_us),
            f1(s.p9999_us),
            f1(s.max_us),
            f2(ratio(s.p50_us, d.p50_us)),
            f2(ratio(s.p99_us, d.p99_us)),
            f2(ratio(s.p999_us, d.p999_us)),
        ];
        let x_rustls = t.as_ref().map(|t| {
            [
                ratio(s.p50_us, t.p50_us),
                ratio(s.p99_us, t.p99_us),
                ratio(s.p999_us, t.p999_us),
            ]
        });
        if tls {
            match x_rustls {
                Some(x) => cells.extend(x.map(f2)),
                None => cells.extend(["-", "-", "-"].map(String::from)),
            }
        }
        table_rows.push(cells);
        let mut result = json!({
            "path": row.path,
            "seconds": row.m.seconds,
            "latency": s,
            "client": client_protocol(row.path, tls),
            "direct": d,
            "x_direct": {
                "p50": ratio(s.p50_us, d.p50_us),
                "p99": ratio(s.p99_us, d.p99_us),
                "p999": ratio(s.p999_us, d.p999_us),
            },
        });
        if tls {
            result["tls"] = json!(row.path.speaks_tls());
            result["reverse_leg_tls"] = json!(reverse_leg_tls(row.path));
            result["rustls"] = json!(t);
            result["x_rustls"] = json!(x_rustls.map(|[p50, p99, p999]| json!({
                "p50": p50,
                "p99": p99,
                "p999": p999,
            })));
        }
        results.push(result);
        histograms.push((row.path, row.m.histogram.clone()));
    }
    text.push_str(&report::table(&headers, &table_rows));
    push_lines(&mut text, &skipped);
    text.push_str(
        "\nLatency from sending a request to having its whole reply, in microseconds (HdrHistogram, \
         3 significant digits).\n",
    );
    if tls {
        text.push_str(
            "x rustls: against the rustls direct run just before the path (the same TLS client against \
             the bench's own rustls echo server on loopback). TLS handshakes happen before the clock \
             starts; each request and reply is one TLS record.\n",
        );
    }
    let mut config = json!({
        "paths": path_names(&common.paths),
        "connections": spec.connections,
        "size": spec.size,
        "requests_per_connection": spec.requests_per_connection,
        "rate_per_sec": spec.rate_per_sec,
        "time_limit_secs": spec.time_limit.as_secs_f64(),
        "gateway": gateway_json(&common.gateway),
    });
    if tls {
        config["tls"] = json!(true);
    }
    let json = json!({
        "kind": "rr",
        "config": config,
        "results": results,
        "skipped": skipped,
        "environment": environment_json(Some(&common.gateway)),
    });
    Ok(Outcome {
        text,
        json,
        histograms,
        incomplete: (!short.is_empty() && spec.rate_per_sec.is_none()).then(|| {
            format!(
                "rr stopped at the time limit before every request was sent on: {}",
                short.join(", ")
            )
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// cps

/// Deltas of the DMZ's `/stats` over a cps run.
#[derive(Debug, Clone, serde::Serialize)]
struct PoolDeltas {
    prepared_accepted: u64,
    waited: u64,
    refused_no_prepared: u64,
    accepted: u64,
}

#[derive(Debug, Clone)]
struct CpsMeasure {
    result: CpsResult,
    pool: Option<PoolDeltas>,
}

fn pool_counters(stats: &Value) -> PoolDeltas {
    let service = |key: &str| admin::counter(stats, &format!("/services/{SERVICE}/{key}"));
    PoolDeltas {
        prepared_accepted: admin::counter(stats, "/prepared_accepted"),
        waited: service("waited"),
        refused_no_prepared: service("refused/no_prepared"),
        accepted: service("accepted"),
    }
}

fn measure_cps(running: &mut Running, spec: &CpsSpec) -> Result<CpsMeasure> {
    let before = running.dmz_stats()?;
    let result = load::cps(running.addr, spec)?;
    let after = running.dmz_stats()?;
    running.check_alive()?;
    let pool = before.zip(after).map(|(b, a)| {
        let (b, a) = (pool_counters(&b), pool_counters(&a));
        PoolDeltas {
            prepared_accepted: a.prepared_accepted.saturating_sub(b.prepared_accepted),
            waited: a.waited.saturating_sub(b.waited),
            refused_no_prepared: a.refused_no_prepared.saturating_sub(b.refused_no_prepared),
            accepted: a.accepted.saturating_sub(b.accepted),
        }
    });
    Ok(CpsMeasure { result, pool })
}

/// `cps`: new tunnels per second (connect, one round trip, close), per path.
pub fn cps(common: &Common, spec: &CpsSpec, progress: &mut Progress) -> Result<Outcome> {
    if common.paths.contains(&PathKind::Ws) {
        bail!("path ws needs the WebSocket load, which bulk and rr have; cps opens plain TCP connections (vpc works)");
    }
    let echo = start_echo()?;
    let (rows, skipped) = compare("cps", common, &echo, progress, |r| measure_cps(r, spec))?;
    let what = format!(
        "up to {} connections ({} in parallel, each: connect, one {} B round trip, close), time limit {:.0} s",
        spec.count,
        spec.concurrency,
        spec.size,
        spec.time_limit.as_secs_f64()
    );
    let mut text = header("cps", &what, Some(&common.paths), &common.gateway);
    let headers = [
        "path",
        "tunnels",
        "failed",
        "tunnels/s",
        "direct/s",
        "x direct",
        "p50 us",
        "p99 us",
        "refill/s",
        "waited %",
        "refused",
    ];
    let mut table_rows = Vec::new();
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for row in &rows {
        let m = &row.m;
        let base = row.direct.as_ref().unwrap_or(m);
        let r = &m.result;
        let pct = |p: f64| {
            if r.histogram.is_empty() {
                0.0
            } else {
                r.histogram.value_at_percentile(p) as f64 / 1_000.0
            }
        };
        let x = ratio(r.per_sec(), base.result.per_sec());
        let refill = m
            .pool
            .as_ref()
            .map(|p| ratio(p.prepared_accepted as f64, r.seconds));
        let waited = m
            .pool
            .as_ref()
            .map(|p| ratio(p.waited as f64, r.completed as f64));
        table_rows.push(vec![
            row.path.to_string(),
            r.completed.to_string(),
            r.failed.to_string(),
            format!("{:.0}", r.per_sec()),
            format!("{:.0}", base.result.per_sec()),
            f2(x),
            f1(pct(50.0)),
            f1(pct(99.0)),
            refill.map_or("-".to_string(), |v| format!("{v:.0}")),
            waited.map_or("-".to_string(), |v| format!("{:.1}", v * 100.0)),
            m.pool
                .as_ref()
                .map_or("-".to_string(), |p| p.refused_no_prepared.to_string()),
        ]);
        if let Some(e) = &r.first_error {
            notes.push(format!("{}: first failure: {e}", row.path));
        }
        results.push(json!({
            "path": row.path,
            "completed": r.completed,
            "failed": r.failed,
            "first_error": r.first_error,
            "seconds": r.seconds,
            "tunnels_per_sec": r.per_sec(),
            "p50_us": pct(50.0),
            "p99_us": pct(99.0),
            "direct": {
                "completed": base.result.completed,
                "failed": base.result.failed,
                "seconds": base.result.seconds,
                "per_sec": base.result.per_sec(),
            },
            "x_direct": x,
            "dmz_stats_delta": m.pool,
            "refill_per_sec": refill,
            "waited_per_tunnel": waited,
        }));
    }
    text.push_str(&report::table(&headers, &table_rows));
    push_lines(&mut text, &skipped);
    text.push_str(
        "\np50/p99: time from connect to the whole reply. From the DMZ's /stats over the run (sallyport \
         only): refill/s = prepared connections accepted per second; waited % = clients that found no \
         prepared connection at once, per tunnel; refused = clients reset because none came in time.\n",
    );
    for n in notes {
        text.push_str(&n);
        text.push('\n');
    }
    let json = json!({
        "kind": "cps",
        "config": {
            "paths": path_names(&common.paths),
            "count": spec.count,
            "concurrency": spec.concurrency,
            "size": spec.size,
            "time_limit_secs": spec.time_limit.as_secs_f64(),
            "gateway": gateway_json(&common.gateway),
        },
        "results": results,
        "skipped": skipped,
        "environment": environment_json(Some(&common.gateway)),
    });
    let incomplete = rows
        .iter()
        .filter(|r| r.m.result.completed == 0)
        .map(|r| r.path.name())
        .collect::<Vec<_>>();
    Ok(Outcome {
        text,
        json,
        histograms: Vec::new(),
        incomplete: (!incomplete.is_empty())
            .then(|| format!("cps: no connection completed on: {}", incomplete.join(", "))),
    })
}

// ---------------------------------------------------------------------------------------------
// fleet

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_evenly() {
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(200, 2), vec![100, 100]);
        assert_eq!(shares(5, 1), vec![5]);
        assert_eq!(shares(100_000, 6).iter().sum::<usize>(), 100_000);
    }

    #[test]
    fn pairs_follow_the_per_process_cap() {
        assert_eq!(pairs_for(10_000, 18_000), 1);
        assert_eq!(pairs_for(50_000, 18_000), 3);
        assert_eq!(pairs_for(100_000, 18_000), 6);
        assert_eq!(pairs_for(200, 100), 2);
        assert_eq!(pairs_for(201, 100), 3);
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn resolve_paths_dedups_and_skips_missing_peers() {
        let (paths, _) = resolve_paths(Some(&[
            PathKind::Direct,
            PathKind::Sallyport,
            PathKind::Direct,
        ]));
        assert_eq!(paths, vec![PathKind::Direct, PathKind::Sallyport]);
        let (defaults, _) = resolve_paths(None);
        assert!(defaults.starts_with(&[PathKind::Direct, PathKind::Sallyport]));
        for p in PathKind::ALL {
            let (got, notes) = resolve_paths(Some(&[p]));
            assert_eq!(got.len() + notes.len(), 1);
        }
    }
}
