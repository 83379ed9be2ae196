//! `sallyport-bench`: run an echo backend, or drive bulk and request/response loads at a target,
//! printing a human table and optionally JSON (figures plus date, kernel and CPU) and an HdrHistogram
//! percentile distribution.
//!
//! It does not start gateways or compare paths; `sallyport demo` does that with the same library.
//! Exit status: 0 on success, 1 on a runtime failure (including an incomplete bulk run), 2 on usage errors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sallyport_bench::backend::EchoServer;
use sallyport_bench::load::{self, BulkSpec, RrSpec};
use sallyport_bench::report;

#[derive(Debug, Parser)]
#[command(name = "sallyport-bench", version, about = "sallyport load generators")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bulk throughput: send verified bytes to an echo path and time their return.
    Bulk(BulkArgs),
    /// Run a TCP echo server until killed; prints `listening ADDR` once bound.
    Echo {
        /// Address to bind; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Request/response latency against an echo path.
    Rr(RrArgs),
}

#[derive(Debug, clap::Args)]
struct BulkArgs {
    /// Echo path to drive (an echo server, or a tunnel in front of one).
    #[arg(long)]
    target: SocketAddr,
    /// Parallel connections.
    #[arg(long, default_value_t = load::DEFAULT_CONNECTIONS, value_parser = parse_positive)]
    connections: usize,
    /// Bytes per connection.
    #[arg(long, default_value_t = load::DEFAULT_BULK_BYTES)]
    bytes: u64,
    /// Bytes per write call.
    #[arg(long, default_value_t = load::DEFAULT_WRITE_SIZE, value_parser = parse_positive)]
    write_size: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    time_limit: Duration,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RrArgs {
    /// Echo path to drive (an echo server, or a tunnel in front of one).
    #[arg(long)]
    target: SocketAddr,
    /// Parallel connections.
    #[arg(long, default_value_t = load::DEFAULT_CONNECTIONS, value_parser = parse_positive)]
    connections: usize,
    /// Request and response size in bytes.
    #[arg(long, default_value_t = load::DEFAULT_RR_SIZE, value_parser = parse_positive)]
    size: usize,
    /// Requests per connection.
    #[arg(long, default_value_t = load::DEFAULT_RR_REQUESTS)]
    requests: u64,
    /// Open loop at this total rate (requests/s); closed loop when absent.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Give up after this many seconds.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    time_limit: Duration,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the HdrHistogram percentile distribution (microseconds) to this file.
    #[arg(long)]
    hdr: Option<PathBuf>,
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
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
        Command::Echo { listen } => echo(listen),
        Command::Rr(args) => rr(args),
    }
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

fn bulk(args: BulkArgs) -> Result<()> {
    let spec = BulkSpec {
        connections: args.connections,
        bytes_per_connection: args.bytes,
        write_size: args.write_size,
        time_limit: args.time_limit,
    };
    let result =
        load::bulk(args.target, &spec).with_context(|| format!("bulk against {}", args.target))?;
    let headers = [
        "target",
        "connections",
        "bytes",
        "seconds",
        "GB/s",
        "complete",
    ];
    let row = vec![
        args.target.to_string(),
        spec.connections.to_string(),
        result.bytes.to_string(),
        format!("{:.3}", result.seconds),
        format!("{:.3}", result.gbytes_per_sec),
        result.complete.to_string(),
    ];
    print!("{}", report::table(&headers, &[row]));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "kind": "bulk",
            "target": args.target.to_string(),
            "spec": {
                "connections": spec.connections,
                "bytes_per_connection": spec.bytes_per_connection,
                "write_size": spec.write_size,
                "time_limit_secs": spec.time_limit.as_secs_f64(),
            },
            "result": result,
            "environment": report::environment(),
        });
        write_json(path, &doc)?;
    }
    if !result.complete {
        bail!("bulk run hit the time limit before every byte came back");
    }
    Ok(())
}

fn rr(args: RrArgs) -> Result<()> {
    let spec = RrSpec {
        connections: args.connections,
        size: args.size,
        requests_per_connection: args.requests,
        rate_per_sec: args.rate,
        time_limit: args.time_limit,
    };
    let result =
        load::rr(args.target, &spec).with_context(|| format!("rr against {}", args.target))?;
    let s = result.summary();
    let headers = [
        "target",
        "connections",
        "size",
        "requests",
        "req/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "p99.99 us",
        "max us",
    ];
    let row = vec![
        args.target.to_string(),
        spec.connections.to_string(),
        spec.size.to_string(),
        s.requests.to_string(),
        format!("{:.0}", s.requests_per_sec),
        format!("{:.1}", s.p50_us),
        format!("{:.1}", s.p90_us),
        format!("{:.1}", s.p99_us),
        format!("{:.1}", s.p999_us),
        format!("{:.1}", s.p9999_us),
        format!("{:.1}", s.max_us),
    ];
    print!("{}", report::table(&headers, &[row]));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "kind": "rr",
            "target": args.target.to_string(),
            "spec": {
                "connections": spec.connections,
                "size": spec.size,
                "requests_per_connection": spec.requests_per_connection,
                "rate_per_sec": spec.rate_per_sec,
                "time_limit_secs": spec.time_limit.as_secs_f64(),
            },
            "seconds": result.seconds,
            "latency": s,
            "environment": report::environment(),
        });
        write_json(path, &doc)?;
    }
    if let Some(path) = &args.hdr {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        report::write_percentile_distribution(&result.histogram, &mut out)
            .and_then(|()| out.flush())
            .with_context(|| format!("writing {}", path.display()))?;
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
    fn bad_numbers_are_usage_errors() {
        for bad in [
            ["bulk", "--target", "127.0.0.1:1", "--connections", "0"],
            ["bulk", "--target", "127.0.0.1:1", "--time-limit", "-1"],
            ["rr", "--target", "127.0.0.1:1", "--rate", "0"],
            ["rr", "--target", "not-an-addr", "--size", "8"],
        ] {
            let err =
                Cli::try_parse_from(std::iter::once("sallyport-bench").chain(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
