//! `sallyport-bench`: benchmark sallyport against direct loopback and peer tunnels.
//!
//! `bulk`, `rr`, `cps` and `fleet` start what they measure themselves: an echo back-end, the DMZ
//! and internal `sallyport run` processes, and installed peers (haproxy, socat, rathole), all on
//! loopback with port 0 or free ports, bounded in bytes and time, and stopped on every exit path
//! (drop guards, a SIGINT/SIGTERM handler, and PR_SET_PDEATHSIG in each child). `bulk --target` and
//! `rr --target` drive an existing echo path instead and start nothing; `echo` runs a back-end.
//!
//! `--paths ws,vpc` adds sallyport's WebSocket transports: a `ws://` public listener that the load
//! speaks WebSocket to, and the virtual private connection (TCP over WebSocket between two
//! gateways).
//!
//! `bulk --tls` and `rr --tls` compare plain direct, a bare rustls connection (`tls-direct`),
//! sallyport with a mutual-TLS reverse leg behind a plain public listener (`mtls`) and
//! sallyport with a `tls://` public listener and a mutual-TLS reverse leg.
//!
//! Output: a table on stdout, progress on stderr, and optionally `--json`, `--hdr` and `--plot`.
//! Exit status: 0 on success, 1 on a runtime failure (including a load that did not finish),
//! 2 on usage errors.
#![deny(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use sallyport_bench::backend::EchoServer;
use sallyport_bench::load::{self, BulkSpec, CpsSpec, RrSpec};
use sallyport_bench::modes::{self, Common, FleetSpec, Outcome};
use sallyport_bench::procs::{self, Progress};
use sallyport_bench::tls::TlsSetup;
use sallyport_bench::topology::{self, GatewayOptions, PathKind};
use sallyport_bench::{host, plot, report};

/// Bytes per connection of an orchestrated bulk run: long enough that setup is noise.
const ORCHESTRATED_BULK_BYTES: u64 = 1 << 30;
/// Write size of an orchestrated bulk run (as in tuning.md).
const ORCHESTRATED_WRITE_SIZE: usize = 256 * 1024;
/// Default `prepared` for bulk and rr: more than the connections they open.
const DEFAULT_PREPARED: usize = 16;
/// Default `prepared` for cps: enough to absorb bursts of the parallel clients.
const DEFAULT_CPS_PREPARED: usize = 64;

#[derive(Debug, Parser)]
#[command(
    name = "sallyport-bench",
    version,
    about = "Benchmark sallyport side by side with direct loopback and peer tunnels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bulk throughput per path (GB/s, gateway CPU-seconds per GB); or against --target only.
    Bulk(BulkArgs),
    /// Request/response latency per path (p50 ... p99.99, max); or against --target only.
    Rr(RrArgs),
    /// New tunnels per second per path, with the DMZ's pool refill and wait counters.
    Cps(CpsArgs),
    /// A served client's rr latency with and without a SYN flood from a source the DMZ denies.
    Flood(FloodArgs),
    /// Park many prepared connections; report memory per connection and time to fill.
    Fleet(FleetArgs),
    /// Run a TCP echo server until killed; prints `listening ADDR` once bound.
    Echo {
        /// Address to bind; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// How sallyport gateways are started.
#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// The sallyport binary [default: `sallyport` next to this executable].
    #[arg(long, value_name = "PATH")]
    sallyport: Option<PathBuf>,
    /// Data-plane workers per gateway (1 suits a 2-core host shared with the load and echo).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    workers: usize,
    /// Relay engine of the gateways [default: the gateway's, splice].
    #[arg(long, value_parser = ["splice", "copy"])]
    relay: Option<String>,
    /// Pipe capacity per tunnel direction, e.g. 1MiB [default: the gateway's].
    #[arg(long)]
    pipe_size: Option<String>,
    /// An extra line for both gateways' [gateway] table, e.g. 'cores = []' or
    /// 'busy_poll = "50us"' (repeatable): how tuning.md measures each knob.
    #[arg(long = "gateway-option", value_name = "KEY = VALUE")]
    gateway_options: Vec<String>,
}

/// Which paths to compare.
#[derive(Debug, clap::Args)]
struct PathArgs {
    /// Comma-separated paths: direct, tls-direct and mtls (with --tls), sallyport, ws (bulk, rr),
    /// vpc, haproxy, socat, rathole [default: direct, sallyport and every peer found on PATH; with
    /// --tls: direct, tls-direct, mtls, sallyport].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    paths: Option<Vec<PathKind>>,
    /// Prepared connections kept parked by the internal gateway [default: 16; cps: 64].
    #[arg(long, value_parser = parse_positive)]
    prepared: Option<usize>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Debug, clap::Args)]
struct BulkArgs {
    /// Drive this echo path only (an echo server, or a tunnel in front of one); start nothing.
    #[arg(long, conflicts_with = "paths")]
    target: Option<SocketAddr>,
    /// Parallel connections.
    #[arg(long, default_value_t = load::DEFAULT_CONNECTIONS, value_parser = parse_positive)]
    connections: usize,
    /// Bytes per connection [default: 1 GiB; 64 MiB with --target].
    #[arg(long)]
    bytes: Option<u64>,
    /// Bytes per write call [default: 256 KiB; 64 KiB with --target].
    #[arg(long, value_parser = parse_positive)]
    write_size: Option<usize>,
    /// TLS: sallyport with a mutual-TLS reverse leg, behind a plain (mtls) and a tls:// public
    /// listener (sallyport, the load speaking TLS to it), beside plain direct and a bare rustls
    /// connection (tls-direct).
    #[arg(long, conflicts_with = "target")]
    tls: bool,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    time_limit: Duration,
    /// Also write the figures, configuration and environment as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    paths: PathArgs,
}

#[derive(Debug, clap::Args)]
struct RrArgs {
    /// Drive this echo path only (an echo server, or a tunnel in front of one); start nothing.
    #[arg(long, conflicts_with = "paths")]
    target: Option<SocketAddr>,
    /// Parallel connections.
    #[arg(long, default_value_t = load::DEFAULT_CONNECTIONS, value_parser = parse_positive)]
    connections: usize,
    /// Request and response size in bytes.
    #[arg(long, default_value_t = load::DEFAULT_RR_SIZE, value_parser = parse_positive)]
    size: usize,
    /// Requests per connection.
    #[arg(long, default_value_t = load::DEFAULT_RR_REQUESTS)]
    requests: u64,
    /// Open loop at this total rate (requests/s), latency from the intended send time;
    /// closed loop when absent.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// TLS: sallyport with a mutual-TLS reverse leg, behind a plain (mtls) and a tls:// public
    /// listener (sallyport, the load speaking TLS to it), beside plain direct and a bare rustls
    /// connection (tls-direct).
    #[arg(long, conflicts_with = "target")]
    tls: bool,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    time_limit: Duration,
    /// Also write the figures, configuration and environment as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the HdrHistogram percentile distribution (microseconds) to this file; with
    /// several paths, one file each with `-PATH` added to the name.
    #[arg(long)]
    hdr: Option<PathBuf>,
    /// Also write a latency-by-percentile plot (SVG) with one line per path.
    #[arg(long, conflicts_with = "target")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    paths: PathArgs,
}

#[derive(Debug, clap::Args)]
struct CpsArgs {
    /// Connections (tunnels) to open at most.
    #[arg(long, default_value_t = load::DEFAULT_CPS_COUNT)]
    count: u64,
    /// Clients opening connections in parallel.
    #[arg(long, default_value_t = load::DEFAULT_CPS_CONCURRENCY, value_parser = parse_positive)]
    concurrency: usize,
    /// Bytes of the one round trip per connection.
    #[arg(long, default_value_t = load::DEFAULT_RR_SIZE, value_parser = parse_positive)]
    size: usize,
    /// Stop a run after this many seconds.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    time_limit: Duration,
    /// Also write the figures, configuration and environment as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run sallyport once per admission setting of the DMZ's service (always, ready, deny,
    /// rate, count, policy: see the report), each beside direct, instead of comparing paths.
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = modes::ADMISSION_VARIANTS)]
    admission: Vec<String>,
    #[command(flatten)]
    paths: PathArgs,
}

#[derive(Debug, clap::Args)]
struct FloodArgs {
    /// SYNs per second from the denied source (127.0.0.9).
    #[arg(long, default_value_t = 20_000, value_parser = parse_positive)]
    rate: usize,
    /// How the DMZ answers the flooding source.
    #[arg(long, default_value = "reject", value_parser = ["reject", "drop"])]
    deny_action: String,
    /// Parallel connections of the served client.
    #[arg(long, default_value_t = load::DEFAULT_CONNECTIONS, value_parser = parse_positive)]
    connections: usize,
    /// Request and response size in bytes.
    #[arg(long, default_value_t = load::DEFAULT_RR_SIZE, value_parser = parse_positive)]
    size: usize,
    /// Requests per connection, in each of the two runs.
    #[arg(long, default_value_t = load::DEFAULT_RR_REQUESTS)]
    requests: u64,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    time_limit: Duration,
    /// Also write the figures, configuration and environment as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Debug, clap::Args)]
struct FleetArgs {
    /// Prepared connections to park; a comma-separated list runs each in turn.
    #[arg(long, value_delimiter = ',', default_value = "10000", value_parser = parse_positive)]
    count: Vec<usize>,
    /// Most prepared connections per gateway process; pairs = ceil(count / this).
    #[arg(long, default_value_t = modes::DEFAULT_PER_PROCESS, value_parser = parse_positive)]
    per_process: usize,
    /// Give up when the pools are not full after this many seconds.
    #[arg(long, default_value = "120", value_parser = parse_seconds)]
    fill_limit: Duration,
    /// Park over a mutual-TLS reverse leg (certificates from `sallyport certs`): what an
    /// established TLS session costs per parked connection.
    #[arg(long)]
    tls: bool,
    /// Also write the figures, configuration and environment as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    gateway: GatewayArgs,
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    if let Err(e) = procs::install_signal_cleanup() {
        eprintln!(
            "warning: cannot handle SIGINT/SIGTERM ({e}); children still die with this process"
        );
    }
    // Children inherit the raised limit: parked connections need one descriptor each.
    if let Err(e) = host::raise_nofile_limit() {
        eprintln!("warning: cannot raise the open-files limit: {e}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bulk(args) => bulk(args),
        Command::Rr(args) => rr(args),
        Command::Cps(args) => cps(args),
        Command::Flood(args) => flood(args),
        Command::Fleet(args) => fleet(args),
        Command::Echo { listen } => echo(listen),
    }
}

/// Gateway options; the sallyport binary is looked up only when `needed`.
fn gateway_options(args: &GatewayArgs, prepared: usize, needed: bool) -> Result<GatewayOptions> {
    let binary = match (&args.sallyport, needed) {
        (Some(path), _) => path.clone(),
        (None, true) => topology::sibling_sallyport().ok_or_else(|| {
            anyhow!(
                "no sallyport binary next to this executable: build it (cargo build --release -p \
                 sallyport) or pass --sallyport PATH"
            )
        })?,
        (None, false) => PathBuf::from("sallyport"),
    };
    if needed && !binary.is_file() {
        bail!("--sallyport {}: no such file", binary.display());
    }
    Ok(GatewayOptions {
        binary,
        workers: args.workers,
        relay: args.relay.clone(),
        pipe_size: args.pipe_size.clone(),
        prepared,
        extra: args.gateway_options.clone(),
        service_extra: Vec::new(),
        tls: None,
    })
}

/// The paths and gateway options of a comparing mode; with `tls`, also the certificates
/// (`sallyport certs` into a scratch directory).
fn common(
    args: &PathArgs,
    default_prepared: usize,
    tls: bool,
    progress: &mut Progress,
) -> Result<Common> {
    let paths = if tls {
        modes::resolve_tls_paths(args.paths.as_deref())?
    } else {
        let (paths, notes) = modes::resolve_paths(args.paths.as_deref());
        for note in notes {
            progress.note(&note);
        }
        if let Some(p) = paths.iter().find(|p| p.needs_tls_setup()) {
            bail!("path {p} needs --tls (bulk and rr only)");
        }
        paths
    };
    if paths.is_empty() {
        bail!("none of the requested paths can run here");
    }
    // With --tls the binary also makes the certificates.
    let needed = tls || paths.iter().any(|p| p.runs_sallyport());
    let mut gateway = gateway_options(
        &args.gateway,
        args.prepared.unwrap_or(default_prepared),
        needed,
    )?;
    if tls {
        with_certificates(&mut gateway, progress)?;
    }
    Ok(Common { paths, gateway })
}

/// Makes development certificates with the gateway binary (`sallyport certs`) for `--tls`.
fn with_certificates(gateway: &mut GatewayOptions, progress: &mut Progress) -> Result<()> {
    progress.show("making TLS certificates (sallyport certs)");
    let setup = TlsSetup::generate(&gateway.binary).context("making TLS certificates")?;
    gateway.tls = Some(std::sync::Arc::new(setup));
    Ok(())
}

fn bulk(args: BulkArgs) -> Result<()> {
    let orchestrated = args.target.is_none();
    let spec = BulkSpec {
        connections: args.connections,
        bytes_per_connection: args.bytes.unwrap_or(if orchestrated {
            ORCHESTRATED_BULK_BYTES
        } else {
            load::DEFAULT_BULK_BYTES
        }),
        write_size: args.write_size.unwrap_or(if orchestrated {
            ORCHESTRATED_WRITE_SIZE
        } else {
            load::DEFAULT_WRITE_SIZE
        }),
        time_limit: args.time_limit,
    };
    if let Some(target) = args.target {
        return bulk_target(target, &spec, args.json.as_deref());
    }
    let mut progress = Progress::new();
    let common = common(&args.paths, DEFAULT_PREPARED, args.tls, &mut progress)?;
    let outcome = modes::bulk(&common, &spec, &mut progress)?;
    finish(outcome, args.json.as_deref(), None, None, "")
}

fn rr(args: RrArgs) -> Result<()> {
    let spec = RrSpec {
        connections: args.connections,
        size: args.size,
        requests_per_connection: args.requests,
        rate_per_sec: args.rate,
        time_limit: args.time_limit,
    };
    if let Some(target) = args.target {
        return rr_target(target, &spec, args.json.as_deref(), args.hdr.as_deref());
    }
    let mut progress = Progress::new();
    let common = common(&args.paths, DEFAULT_PREPARED, args.tls, &mut progress)?;
    let outcome = modes::rr(&common, &spec, &mut progress)?;
    let title = format!(
        "Request/response latency{}: {} B, {} connection(s), {}",
        if args.tls { " (TLS)" } else { "" },
        spec.size,
        spec.connections,
        match spec.rate_per_sec {
            None => "closed loop".to_string(),
            Some(r) => format!("open loop at {r} req/s"),
        }
    );
    finish(
        outcome,
        args.json.as_deref(),
        args.hdr.as_deref(),
        args.plot.as_deref(),
        &title,
    )
}

fn cps(args: CpsArgs) -> Result<()> {
    let spec = CpsSpec {
        count: args.count,
        concurrency: args.concurrency,
        size: args.size,
        time_limit: args.time_limit,
    };
    let mut progress = Progress::new();
    let common = common(&args.paths, DEFAULT_CPS_PREPARED, false, &mut progress)?;
    let outcome = if args.admission.is_empty() {
        modes::cps(&common, &spec, &mut progress)?
    } else {
        modes::cps_admission(&common, &spec, &args.admission, &mut progress)?
    };
    finish(outcome, args.json.as_deref(), None, None, "")
}

fn flood(args: FloodArgs) -> Result<()> {
    let spec = modes::FloodSpec {
        rate: args.rate as u64,
        deny_action: args.deny_action,
        rr: RrSpec {
            connections: args.connections,
            size: args.size,
            requests_per_connection: args.requests,
            rate_per_sec: None,
            time_limit: args.time_limit,
        },
    };
    let mut progress = Progress::new();
    let common = Common {
        paths: vec![PathKind::Sallyport],
        gateway: gateway_options(&args.gateway, DEFAULT_PREPARED, true)?,
    };
    let outcome = modes::flood(&common, &spec, &mut progress)?;
    finish(outcome, args.json.as_deref(), None, None, "")
}

fn fleet(args: FleetArgs) -> Result<()> {
    let spec = FleetSpec {
        counts: args.count,
        per_process: args.per_process,
        fill_limit: args.fill_limit,
    };
    let mut gateway = gateway_options(&args.gateway, 0, true)?;
    let mut progress = Progress::new();
    if args.tls {
        with_certificates(&mut gateway, &mut progress)?;
    }
    let outcome = modes::fleet(&spec, &gateway, &mut progress)?;
    finish(outcome, args.json.as_deref(), None, None, "")
}

/// Prints the outcome and writes the requested files; an incomplete run then becomes an error.
fn finish(
    outcome: Outcome,
    json: Option<&Path>,
    hdr: Option<&Path>,
    plot_path: Option<&Path>,
    plot_title: &str,
) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(outcome.text.as_bytes())?;
    stdout.flush()?;
    if let Some(path) = json {
        write_json(path, &outcome.json)?;
    }
    if let Some(path) = hdr {
        let several = outcome.histograms.len() > 1;
        for (kind, histogram) in &outcome.histograms {
            let file = if several {
                suffixed(path, kind.name())
            } else {
                path.to_path_buf()
            };
            write_hdr(&file, histogram)?;
        }
    }
    if let Some(path) = plot_path {
        let series: Vec<plot::Series<'_>> = outcome
            .histograms
            .iter()
            .map(|(kind, histogram)| plot::Series {
                name: kind.label(),
                histogram,
            })
            .collect();
        let svg = plot::latency_svg(plot_title, &series);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    match outcome.incomplete {
        Some(why) => Err(anyhow!(why)),
        None => Ok(()),
    }
}

/// `dir/stem-SUFFIX.ext` for `dir/stem.ext`.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

fn write_hdr(path: &Path, histogram: &hdrhistogram::Histogram<u64>) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    report::write_percentile_distribution(histogram, &mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))
}

fn echo(listen: SocketAddr) -> Result<()> {
    let server = EchoServer::start(listen).with_context(|| format!("binding {listen}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {}", server.addr())?;
    stdout.flush()?;
    loop {
        std::thread::park();
    }
}

/// `bulk --target`: drive an existing echo path, start nothing.
fn bulk_target(target: SocketAddr, spec: &BulkSpec, json: Option<&Path>) -> Result<()> {
    let result = load::bulk(target, spec).with_context(|| format!("bulk against {target}"))?;
    let headers = [
        "target",
        "connections",
        "bytes",
        "seconds",
        "GB/s",
        "complete",
    ];
    let row = vec![
        target.to_string(),
        spec.connections.to_string(),
        result.bytes.to_string(),
        format!("{:.3}", result.seconds),
        format!("{:.3}", result.gbytes_per_sec),
        result.complete.to_string(),
    ];
    print!("{}", report::table(&headers, &[row]));
    if let Some(path) = json {
        let doc = serde_json::json!({
            "kind": "bulk",
            "target": target.to_string(),
            "spec": {
                "connections": spec.connections,
                "bytes_per_connection": spec.bytes_per_connection,
                "write_size": spec.write_size,
                "time_limit_secs": spec.time_limit.as_secs_f64(),
            },
            "result": result,
            "environment": modes::environment_json(None),
        });
        write_json(path, &doc)?;
    }
    if !result.complete {
        bail!("bulk run hit the time limit before every byte came back");
    }
    Ok(())
}

/// `rr --target`: drive an existing echo path, start nothing.
fn rr_target(
    target: SocketAddr,
    spec: &RrSpec,
    json: Option<&Path>,
    hdr: Option<&Path>,
) -> Result<()> {
    let result = load::rr(target, spec).with_context(|| format!("rr against {target}"))?;
    let s = result.summary();
    let mut headers = vec!["target", "connections", "size"];
    headers.extend(load::LatencySummary::COLUMNS);
    let mut row = vec![
        target.to_string(),
        spec.connections.to_string(),
        spec.size.to_string(),
    ];
    row.extend(s.cells());
    print!("{}", report::table(&headers, &[row]));
    if let Some(path) = json {
        let doc = serde_json::json!({
            "kind": "rr",
            "target": target.to_string(),
            "spec": {
                "connections": spec.connections,
                "size": spec.size,
                "requests_per_connection": spec.requests_per_connection,
                "rate_per_sec": spec.rate_per_sec,
                "time_limit_secs": spec.time_limit.as_secs_f64(),
            },
            "seconds": result.seconds,
            "latency": s,
            "environment": modes::environment_json(None),
        });
        write_json(path, &doc)?;
    }
    if let Some(path) = hdr {
        write_hdr(path, &result.histogram)?;
    }
    Ok(())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err("expected a positive number of seconds".to_string()),
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err("must be at least 1".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("expected a positive number of requests per second".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn write_json(path: &Path, doc: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(doc)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_time_limit_matches_the_library() {
        let cli = Cli::try_parse_from(["sallyport-bench", "rr", "--target", "127.0.0.1:1"])
            .expect("parse");
        let Command::Rr(args) = cli.command else {
            panic!("parsed the wrong subcommand");
        };
        assert_eq!(args.time_limit, load::DEFAULT_TIME_LIMIT);
        assert_eq!(args.size, load::DEFAULT_RR_SIZE);
    }

    #[test]
    fn paths_parse_as_a_list_and_target_excludes_them() {
        let cli = Cli::try_parse_from(["sallyport-bench", "bulk", "--paths", "direct,sallyport"])
            .expect("parse");
        let Command::Bulk(args) = cli.command else {
            panic!("parsed the wrong subcommand");
        };
        assert_eq!(
            args.paths.paths,
            Some(vec![PathKind::Direct, PathKind::Sallyport])
        );
        assert!(Cli::try_parse_from([
            "sallyport-bench",
            "bulk",
            "--target",
            "127.0.0.1:1",
            "--paths",
            "direct"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["sallyport-bench", "rr", "--paths", "ssh"]).is_err());
        let cli = Cli::try_parse_from(["sallyport-bench", "rr", "--paths", "direct,ws,vpc"])
            .expect("parse");
        let Command::Rr(args) = cli.command else {
            panic!("parsed the wrong subcommand");
        };
        assert_eq!(
            args.paths.paths,
            Some(vec![PathKind::Direct, PathKind::Ws, PathKind::Vpc])
        );
        let cli = Cli::try_parse_from(["sallyport-bench", "fleet", "--count", "10000,100000"])
            .expect("parse");
        let Command::Fleet(args) = cli.command else {
            panic!("parsed the wrong subcommand");
        };
        assert_eq!(args.count, vec![10_000, 100_000]);
    }

    #[test]
    fn hdr_files_get_the_path_suffix() {
        assert_eq!(
            suffixed(Path::new("out/rr.hdr"), "sallyport"),
            PathBuf::from("out/rr-sallyport.hdr")
        );
        assert_eq!(
            suffixed(Path::new("rr"), "direct"),
            PathBuf::from("rr-direct")
        );
    }

    #[test]
    fn bad_numbers_are_usage_errors() {
        for bad in [
            ["bulk", "--target", "127.0.0.1:1", "--connections", "0"],
            ["bulk", "--target", "127.0.0.1:1", "--time-limit", "-1"],
            ["rr", "--target", "127.0.0.1:1", "--rate", "0"],
            ["rr", "--target", "not-an-addr", "--size", "8"],
            ["cps", "--concurrency", "0", "--paths", "direct"],
            ["fleet", "--count", "0", "--per-process", "10"],
        ] {
            let err =
                Cli::try_parse_from(std::iter::once("sallyport-bench").chain(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
