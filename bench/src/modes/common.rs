//! What the modes share: the settle times and limits, the side-by-side comparison of paths
//! (`compare`), the echo back-end they measure through, the report header and the JSON document
//! with its environment, and number formatting. Each mode is in its own file; nothing here
//! measures.

use crate::backend::EchoServer;
use crate::host;
use crate::procs::Progress;
use crate::report;
use crate::topology::{GatewayOptions, PathKind, Running};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use sallyport_kit::date::iso8601;
use serde_json::{json, Value};
use std::borrow::Borrow;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Pause after a load before reading gateways' CPU time, so a forking peer (socat) has reaped
/// its per-connection children, whose time only then appears in the parent's counters.
pub(super) const CPU_SETTLE: Duration = Duration::from_millis(200);
/// Pause after a pool is full before reading memory, so allocations that follow the last
/// handshake are counted.
pub(super) const MEMORY_SETTLE: Duration = Duration::from_millis(500);
/// Longest the fleet baseline pair (one prepared connection) may take to fill.
pub(super) const BASELINE_FILL: Duration = Duration::from_secs(15);
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
    pub(super) fn tls(&self) -> bool {
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
pub(super) struct Row<M> {
    pub(super) path: PathKind,
    pub(super) m: M,
    pub(super) direct: Option<M>,
    pub(super) rustls: Option<M>,
}

impl<M> Row<M> {
    /// The direct run this row is compared with: its own measurement on the direct row.
    pub(super) fn base(&self) -> &M {
        self.direct.as_ref().unwrap_or(&self.m)
    }
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

/// A path-comparing mode's run: the echo back-end for the paths to measure through, [`compare`],
/// then the text's header (`what` says what each run does). Returns the rows, the skipped paths
/// and the text so far.
pub(super) fn run_compare<M: Clone>(
    mode: &str,
    what: &str,
    common: &Common,
    progress: &mut Progress,
    measure: impl FnMut(&mut Running) -> Result<M>,
) -> Result<(Vec<Row<M>>, Vec<String>, String)> {
    let echo = start_echo()?;
    let (rows, skipped) = compare(mode, common, &echo, progress, measure)?;
    let text = header(mode, what, Some(&common.paths), &common.gateway);
    Ok((rows, skipped, text))
}

pub(super) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub(super) fn start_echo() -> Result<EchoServer> {
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

pub(super) fn pinning(gateway: &GatewayOptions) -> String {
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

/// The JSON document of a path-comparing mode: its own `config` keys plus the time limit, the
/// paths, the gateway and, with `--tls`, `"tls": true`; then the results, the skipped paths and
/// the environment.
pub(super) fn document(
    kind: &str,
    common: &Common,
    mut config: Value,
    time_limit: Duration,
    results: Vec<Value>,
    skipped: &[String],
) -> Value {
    config["time_limit_secs"] = json!(time_limit.as_secs_f64());
    config["paths"] = json!(path_names(&common.paths));
    config["gateway"] = gateway_json(&common.gateway);
    if common.tls() {
        config["tls"] = json!(true);
    }
    json!({
        "kind": kind,
        "config": config,
        "results": results,
        "skipped": skipped,
        "environment": environment_json(Some(&common.gateway)),
    })
}

/// Header lines shared by every mode's text output.
pub(super) fn header(
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

pub(super) fn gateway_json(gw: &GatewayOptions) -> Value {
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
pub(super) fn client_protocol(path: PathKind, tls: bool) -> &'static str {
    if tls && path.speaks_tls() {
        "tls"
    } else if path.speaks_ws() {
        "websocket"
    } else {
        "tcp"
    }
}

/// Whether the reverse leg was mutual TLS on `path` in a `--tls` run (mtls and sallyport).
pub(super) fn reverse_leg_tls(path: PathKind) -> bool {
    matches!(path, PathKind::Mtls | PathKind::Sallyport)
}

pub(super) fn path_names(paths: &[PathKind]) -> Vec<&'static str> {
    paths.iter().map(|p| p.name()).collect()
}

/// The note of a load that did not finish on `paths` (`why` says how), if there are any.
pub(super) fn unfinished<S: Borrow<str>>(why: &str, paths: &[S]) -> Option<String> {
    (!paths.is_empty()).then(|| format!("{why}: {}", paths.join(", ")))
}

pub(super) fn push_lines(text: &mut String, lines: &[String]) {
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
}

pub(super) fn f2(v: f64) -> String {
    format!("{v:.2}")
}

pub(super) fn f1(v: f64) -> String {
    format!("{v:.1}")
}
