//! The `sallyport` binary: `run`, `check`, `demo`. Exit codes: 0 success, 2 usage or
//! configuration error, 1 runtime failure.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sallyport::config::{Config, RelayMode};
use sallyport::demo::{self, DemoOptions};
use sallyport::gateway::{Gateway, StartupError};

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SALLYPORT_GIT_SHA"),
    "; features: io_uring, splice relay, socks5 bind)"
);

/// Reverse-connection gateway: the trusted side dials out, nothing dials in.
#[derive(Parser)]
#[command(name = "sallyport", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the services in FILE until SIGINT or SIGTERM.
    Run {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate FILE and print its services; exit 2 with the reason when it is wrong.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start an echo back-end, a DMZ and an internal gateway on loopback, run a short load
    /// through the tunnel and directly, and print what was measured.
    Demo {
        /// Data-plane workers per gateway.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Relay engine: splice or copy.
        #[arg(long, default_value = "splice", value_parser = ["splice", "copy"])]
        relay: String,
        /// MiB echoed through each path in the bulk phase.
        #[arg(long, default_value_t = 512)]
        bulk_mib: u64,
        /// Request/response round trips per path.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(cfg) => {
                for line in cfg.describe() {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            init_logging();
            run(&config)
        }
        Command::Demo {
            workers,
            relay,
            bulk_mib,
            requests,
        } => {
            if workers == 0 || bulk_mib == 0 || requests == 0 {
                eprintln!("error: --workers, --bulk-mib and --requests must be at least 1");
                return ExitCode::from(2);
            }
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            let options = DemoOptions {
                workers,
                relay: if relay == "copy" {
                    RelayMode::Copy
                } else {
                    RelayMode::Splice
                },
                bulk_bytes: bulk_mib << 20,
                rr_requests: requests,
                ..DemoOptions::default()
            };
            match demo::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: demo failed: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Register signals before anything starts so an early SIGTERM is not lost.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let gateway = match Gateway::start(&config) {
        Ok(g) => g,
        Err(e @ StartupError::Config { .. }) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e @ StartupError::Runtime(_)) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // Machine-readable ready lines on stdout (tests and scripts wait for "ready").
    let mut out = std::io::stdout().lock();
    if let Some(addr) = gateway.reverse_addr {
        let _ = writeln!(out, "listening reverse {addr}");
    }
    if let Some(addr) = gateway.admin_addr {
        let _ = writeln!(out, "listening admin {addr}");
    }
    for (name, addr) in &gateway.public {
        let _ = writeln!(out, "listening service {name} {addr}");
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    tracing::info!("sallyport running; SIGINT or SIGTERM stops it");
    loop {
        if let Some(signal) = signals.pending().next() {
            tracing::info!(signal, "stopping");
            break;
        }
        if !gateway.is_running() {
            tracing::error!("control thread stopped unexpectedly");
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    gateway.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
