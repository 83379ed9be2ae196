//! `sallyport demo`: an echo back-end, a DMZ gateway and an internal gateway in this process on
//! loopback (port 0 everywhere), a short bounded load through the tunnel and directly, and a
//! printed comparison. It uses the `sallyport-kit` load generators (the ones `sallyport-bench`
//! runs), not a second one.
//!
//! It proves the path works end to end on this machine and gives a first figure; it is not a
//! benchmark (`sallyport-bench` is: separate processes, CPU per process, more modes).
//!
//! With `--tls` the reverse leg runs over mutual TLS, with development certificates made by the
//! `sallyport certs` code in a temporary directory (removed afterwards). The public listener
//! stays plain TCP: the kit's load generators speak plain TCP only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use sallyport_dataplane::admission::Admission;
use sallyport_dataplane::Keepalive;
use sallyport_kit::backend::EchoServer;
use sallyport_kit::load::{self, BulkResult, BulkSpec, LatencySummary, RrSpec};
use sallyport_kit::report;

use crate::config::{
    relay_mode_name, AdmissionConfig, Config, DmzService, GatewayConfig, HostPort, InternalService,
    RelayConfig, RelayMode, ReverseConfig, ServiceConfig, ServiceRole, DEFAULT_BACKEND_PROBE,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_RETRY_MAX,
    DEFAULT_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
};
use crate::gateway::Gateway;
use crate::tls::{self, ServerRole, TlsClient, TlsServer};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub workers: usize,
    pub relay: RelayMode,
    pub prepared: usize,
    pub bulk_bytes: u64,
    pub rr_requests: u64,
    /// Mutual TLS on the reverse leg.
    pub tls: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            workers: 1,
            relay: RelayMode::Splice,
            prepared: 8,
            bulk_bytes: 512 << 20,
            rr_requests: 20_000,
            tls: false,
        }
    }
}

/// Longest any one load phase may run.
const PHASE_LIMIT: Duration = Duration::from_secs(8);
/// Longest the demo waits for the pool to fill.
const POOL_WAIT: Duration = Duration::from_secs(10);
const SERVICE: &str = "echo";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The cores a demo gateway's workers are pinned to: the two gateways share this process
/// (and the host with the load generator), so each gets its own half of the cores rather than
/// both starting at core 0 (see tuning.md, "Two gateways on one host").
fn demo_cores(second: bool) -> Vec<usize> {
    let cores = sallyport_dataplane::available_cores();
    let half = (cores / 2).max(1);
    if second && cores > 1 {
        (half..cores).collect()
    } else {
        (0..half).collect()
    }
}

fn gateway_config(
    name: &str,
    options: &DemoOptions,
    reverse: Option<ReverseConfig>,
    service: ServiceConfig,
) -> Config {
    Config {
        path: PathBuf::from(format!("(demo {name})")),
        gateway: GatewayConfig {
            workers: options.workers,
            relay: RelayConfig {
                mode: options.relay,
                ..GatewayConfig::default().relay
            },
            cores: Some(demo_cores(reverse.is_none())),
            ..GatewayConfig::default()
        },
        reverse,
        services: vec![service],
        rendezvous: None,
        host: None,
    }
}

/// CPU seconds (user + system) spent so far by this process's threads whose name starts with
/// `prefix` (the gateways' workers and control threads).
fn thread_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux.
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Development certificates in a fresh temporary directory, loaded as the DMZ's reverse
/// endpoint (client certificate required) and the internal gateway's client for `dmz_ip`.
fn demo_tls(dmz_ip: std::net::IpAddr) -> anyhow::Result<(TempDir, TlsServer, TlsClient)> {
    let dir =
        TempDir(std::env::temp_dir().join(format!("sallyport-demo-certs-{}", std::process::id())));
    let certs = tls::dev_certs(tls::DEFAULT_DMZ_NAME, 1)?;
    tls::write_dev_certs(&dir.0, &certs, true)?;
    let file = |name: &str| dir.0.join(name);
    let load = |e: tls::LoadError| anyhow::anyhow!("{}: {e}", e.field.key());
    let server = TlsServer::load(
        &file(tls::DMZ_CERT),
        &file(tls::DMZ_KEY),
        Some(&file(tls::CA_CERT)),
        &[],
        ServerRole::Reverse,
    )
    .map_err(load)?;
    let client = TlsClient::load(
        &file(tls::CA_CERT),
        Some((
            Path::new(&file(tls::INTERNAL_CERT)),
            Path::new(&file(tls::INTERNAL_KEY)),
        )),
        ServerName::from(dmz_ip),
    )
    .map_err(load)?;
    Ok((dir, server, client))
}

struct Measured {
    bulk: BulkResult,
    cpu_s_per_gb: Option<f64>,
    rr: LatencySummary,
}

fn measure(
    addr: SocketAddr,
    options: &DemoOptions,
    through_gateway: bool,
) -> anyhow::Result<Measured> {
    let bulk_spec = BulkSpec {
        connections: 1,
        bytes_per_connection: options.bulk_bytes,
        write_size: 256 << 10,
        time_limit: PHASE_LIMIT,
    };
    let cpu_before = thread_cpu_seconds("sallyport-");
    let bulk = load::bulk(addr, &bulk_spec)?;
    let cpu = thread_cpu_seconds("sallyport-") - cpu_before;
    // Bytes cross the gateways both ways (echo): count both directions.
    let gb = 2.0 * bulk.bytes as f64 / 1e9;
    let cpu_s_per_gb = (through_gateway && gb > 0.0).then(|| cpu / gb);
    let rr_spec = RrSpec {
        connections: 1,
        size: 64,
        requests_per_connection: options.rr_requests,
        rate_per_sec: None,
        time_limit: PHASE_LIMIT,
    };
    let rr = load::rr(addr, &rr_spec)?.summary();
    Ok(Measured {
        bulk,
        cpu_s_per_gb,
        rr,
    })
}

/// Runs the demo and prints what it measured. Errors are runtime failures (exit 1).
pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let echo = EchoServer::start(loopback())?;
    let (_cert_dir, server_tls, client_tls) = if options.tls {
        let (dir, server, client) = demo_tls(loopback().ip())?;
        (Some(dir), Some(server), Some(client))
    } else {
        (None, None, None)
    };
    let dmz = Gateway::start(&gateway_config(
        "dmz",
        options,
        Some(ReverseConfig {
            listen: loopback(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls: server_tls,
            keepalive: Keepalive {
                idle: DEFAULT_KEEPALIVE,
            },
            unauthenticated: false,
        }),
        ServiceConfig {
            name: SERVICE.to_string(),
            accept: "tcp://127.0.0.1:0".to_string(),
            connect: format!("reverse://{SERVICE}"),
            role: ServiceRole::Dmz(DmzService {
                listen: loopback(),
                bind_name: SERVICE.to_string(),
                timeout: DEFAULT_TIMEOUT,
                idle_timeout: None,
                credentials: None,
                tls: None,
                ws: None,
                handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                admission: AdmissionConfig::open(Admission::Ready),
            }),
        },
    ))?;
    let reverse = dmz
        .reverse_addr
        .ok_or_else(|| anyhow::anyhow!("DMZ has no reverse endpoint"))?;
    let public = dmz.public[0].1;
    let internal = Gateway::start(&gateway_config(
        "internal",
        options,
        None,
        ServiceConfig {
            name: SERVICE.to_string(),
            accept: format!("reverse://{reverse}/{SERVICE}"),
            connect: format!("tcp://{}", echo.addr()),
            role: ServiceRole::Internal(InternalService {
                dmz: HostPort {
                    host: reverse.ip().to_string(),
                    port: reverse.port(),
                },
                bind_name: SERVICE.to_string(),
                target: HostPort {
                    host: echo.addr().ip().to_string(),
                    port: echo.addr().port(),
                },
                prepared: options.prepared,
                retry_max: DEFAULT_RETRY_MAX,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                credentials: None,
                tls: client_tls,
                target_tls: None,
                target_ws: None,
                proxy_protocol: None,
                backend_probe: DEFAULT_BACKEND_PROBE,
                keepalive: Keepalive {
                    idle: DEFAULT_KEEPALIVE,
                },
            }),
        },
    ))?;
    if options.tls {
        println!("sallyport demo: echo back-end {} <- internal gateway ==SOCKS5 BIND over mutual TLS==> DMZ reverse {reverse}, public {public} (plain TCP: the load generators speak plain TCP)", echo.addr());
    } else {
        println!("sallyport demo: echo back-end {} <- internal gateway ==SOCKS5 BIND==> DMZ reverse {reverse}, public {public}", echo.addr());
    }
    println!(
        "  {} worker(s) per gateway, relay {}, {} prepared connections",
        options.workers,
        relay_mode_name(options.relay),
        options.prepared
    );
    let pool_started = Instant::now();
    let want = options.prepared as i64;
    while dmz.stats().prepared(SERVICE).unwrap_or(0) < want {
        if pool_started.elapsed() > POOL_WAIT {
            anyhow::bail!(
                "pool did not fill: {} of {want} prepared connections after {POOL_WAIT:?}",
                dmz.stats().prepared(SERVICE).unwrap_or(0)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "  pool filled: {want} prepared connections parked in {:.1} ms",
        pool_started.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "  load: bulk 1 connection x {} MiB echoed (256 KiB writes); request/response 1 connection x {} x 64 B",
        options.bulk_bytes >> 20,
        options.rr_requests
    );
    let direct = measure(echo.addr(), options, false)?;
    let tunnel = measure(public, options, true)?;
    for (path, m) in [("direct", &direct), ("sallyport", &tunnel)] {
        if !m.bulk.complete {
            anyhow::bail!("{path}: bulk transfer did not finish within {PHASE_LIMIT:?}");
        }
    }
    let row = |name: &str, m: &Measured| {
        vec![
            name.to_string(),
            format!("{:.2}", m.bulk.gbytes_per_sec),
            format!(
                "{:.2}",
                report::ratio(m.bulk.gbytes_per_sec, direct.bulk.gbytes_per_sec)
            ),
            m.cpu_s_per_gb
                .map_or("-".to_string(), |c| format!("{c:.2}")),
            format!("{:.1}", m.rr.p50_us),
            format!("{:.1}", m.rr.p99_us),
            format!("{:.1}", m.rr.p999_us),
            format!("{:.2}", report::ratio(m.rr.p99_us, direct.rr.p99_us)),
        ]
    };
    let table = report::table(
        &[
            "path",
            "bulk GB/s",
            "x direct",
            "CPU-s/GB",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "p99 x direct",
        ],
        &[row("direct", &direct), row("sallyport", &tunnel)],
    );
    println!("\n{table}");
    println!(
        "CPU-s/GB: both gateways' worker and control threads, per GB crossing them (each echoed byte crosses twice)."
    );
    let dmz_stats = dmz.stats().json();
    println!(
        "tunnels: {} opened, bytes upstream {} / downstream {}; clients refused: {}",
        dmz_stats["tunnels"]["total"],
        dmz_stats["bytes"]["upstream"],
        dmz_stats["bytes"]["downstream"],
        dmz_stats["services"][SERVICE]["refused"]["no_prepared"],
    );
    internal.shutdown();
    dmz.shutdown();
    drop(echo);
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
