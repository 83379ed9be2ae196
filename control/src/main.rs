//! The `sallyport` binary: `run`, `check`, `demo`, `certs`. Exit codes: 0 success, 2 usage or
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
use sallyport::tls::{self, CertsError};

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SALLYPORT_GIT_SHA"),
    "; features: io_uring, splice relay, socks5 bind, tls (rustls))"
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
    /// Run the services in FILE until SIGINT or SIGTERM (SIGHUP reloads certificates).
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
        /// Run the reverse leg over mutual TLS (development certificates in a temporary
        /// directory). The public listener stays plain TCP: the load generators speak TCP.
        #[arg(long)]
        tls: bool,
    },
    /// Generate development certificates: a CA (ca.pem, ca.key), a DMZ server certificate
    /// (dmz.pem, dmz.key) and an internal gateway client certificate (internal.pem,
    /// internal.key), and print the config lines that use them.
    Certs {
        /// Directory to write the six files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Name internal gateways dial the DMZ by (DNS name or IP); the DMZ certificate is
        /// also valid for localhost, 127.0.0.1 and ::1.
        #[arg(long, value_name = "NAME", default_value = tls::DEFAULT_DMZ_NAME)]
        dmz_name: String,
        /// Days the certificates are valid.
        #[arg(long, value_name = "N", default_value_t = tls::DEFAULT_CERT_DAYS)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
                for warning in expiry_warnings(&cfg) {
                    eprintln!("warning: {warning}");
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
        Command::Certs {
            out,
            dmz_name,
            days,
            force,
        } => certs(&out, &dmz_name, days, force),
        Command::Demo {
            workers,
            relay,
            bulk_mib,
            requests,
            tls,
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
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
                tls,
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

/// `sallyport certs`: writes the files, prints what they are and the config lines using them.
fn certs(out: &std::path::Path, dmz_name: &str, days: u32, force: bool) -> ExitCode {
    let result =
        tls::dev_certs(dmz_name, days).and_then(|certs| tls::write_dev_certs(out, &certs, force));
    match result {
        Ok(()) => {}
        Err(e @ (CertsError::Usage(_) | CertsError::Exists(_))) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    let dir = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    println!(
        "wrote development certificates to {} (valid {days} days; keys mode 0600):",
        dir.display()
    );
    println!(
        "  {:<28} development CA; ca.key signs certificates: keep it off both gateways",
        format!("{}, {}", tls::CA_CERT, tls::CA_KEY)
    );
    println!(
        "  {:<28} DMZ server certificate for {}",
        format!("{}, {}", tls::DMZ_CERT, tls::DMZ_KEY),
        tls::dmz_names(dmz_name).join(", ")
    );
    println!(
        "  {:<28} internal gateway client certificate (clientAuth)",
        format!("{}, {}", tls::INTERNAL_CERT, tls::INTERNAL_KEY)
    );
    println!();
    print!("{}", tls::config_lines(&dir, dmz_name));
    println!();
    println!("For development and tests only: in production use certificates from your own CA.");
    ExitCode::SUCCESS
}

/// SIGHUP: certificates, keys and CAs read again from the files the config names.
fn reload_certificates(config: &Config) {
    match sallyport::reload::certificates(config) {
        Ok(r) => {
            tracing::info!(
                tls_settings = r.settings,
                "certificates and keys reloaded; new handshakes use them"
            );
            if r.other_changes {
                tracing::warn!(
                    "the config file has other changes too: only certificates, keys and CAs \
                     are reloaded; restart to apply the rest"
                );
            }
        }
        Err(e) => tracing::error!("certificate reload failed, the running ones stay: {e}"),
    }
}

/// Certificates that expire within [`sallyport::tls::validity::EXPIRY_WARNING`] (an expired one
/// fails the load itself).
fn expiry_warnings(config: &Config) -> Vec<String> {
    let within = sallyport::tls::validity::EXPIRY_WARNING;
    config.expiry_warnings(std::time::SystemTime::now(), within)
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in expiry_warnings(&config) {
        tracing::warn!("{warning}");
    }
    // Register signals before anything starts so an early SIGTERM is not lost.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let gateway = match Gateway::start(&config) {
        Ok(g) => g,
        Err(e @ StartupError::Config(_)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
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
    tracing::info!("sallyport running; SIGINT or SIGTERM stops it, SIGHUP reloads certificates");
    'running: loop {
        for signal in signals.pending() {
            if signal == signal_hook::consts::SIGHUP {
                reload_certificates(&config);
                continue;
            }
            tracing::info!(signal, "stopping");
            break 'running;
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
