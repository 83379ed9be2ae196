//! The paths a load can take to the echo back-end, and starting the processes each one needs:
//!
//! - `direct`: the client talks to the echo back-end; nothing is started.
//! - `tls-direct` (with `--tls` only): the client speaks TLS to a rustls echo server in the bench
//!   process ([`TlsEchoServer`]), the bare-rustls baseline.
//! - `sallyport`: a DMZ `sallyport run` and an internal `sallyport run` (two hops, plain TCP; with
//!   `--tls` a `tls://` public listener and a mutual-TLS reverse leg), started from generated
//!   configs; ready when the DMZ's `/stats` shows the pool full.
//! - `ws`: the same pair, but the DMZ's public listener is `ws://127.0.0.1:0/echo`; the load
//!   speaks WebSocket to it ([`WsTarget`]).
//! - `vpc`: the virtual private connection, two forwarding gateways: B (`accept =
//!   "ws://127.0.0.1:0/vpc"`, `connect = "tcp://ECHO"`) started first, then A (`accept =
//!   "tcp://127.0.0.1:0"`, `connect = "ws://B/vpc"`); the load is plain TCP to A.
//! - `haproxy`: one `mode tcp` frontend/backend (`haproxy -f CFG -db`), one hop.
//! - `socat`: `socat TCP-LISTEN:PORT,fork TCP:ECHO`, one hop (a forked process per connection).
//! - `rathole`: a server and a client (`rathole CFG`), two hops like sallyport.
//!
//! Every process is a [`Proc`]: it is stopped when the [`Running`] path is dropped. Peers are
//! found on `$PATH`; a missing one is reported by [`PathKind::available`], never installed here.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::admin;
use crate::load::{TlsTarget, WsTarget};
use crate::procs::{self, free_port, Proc, Scratch};
use crate::tls::{TlsEchoServer, TlsSetup};

/// Service name used in every generated config.
pub const SERVICE: &str = "echo";
/// Request path of the `ws` path's public WebSocket listener.
pub const WS_PATH: &str = "/echo";
/// Request path of gateway B's WebSocket listener on the `vpc` path.
pub const VPC_PATH: &str = "/vpc";
/// Longest a process may take to print its ready line or open its port.
const READY_LIMIT: Duration = Duration::from_secs(15);
/// Poll period while waiting for a port or a pool.
const POLL: Duration = Duration::from_millis(20);

/// A way from the load generator to the echo back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    Direct,
    #[serde(rename = "tls-direct")]
    TlsDirect,
    Sallyport,
    Mtls,
    Ws,
    Vpc,
    Haproxy,
    Socat,
    Rathole,
}

impl PathKind {
    /// Every path, in the order they are run by default (`tls-direct` only with `--tls`; `ws`
    /// and `vpc` only when asked for).
    pub const ALL: [PathKind; 9] = [
        PathKind::Direct,
        PathKind::TlsDirect,
        PathKind::Sallyport,
        PathKind::Mtls,
        PathKind::Ws,
        PathKind::Vpc,
        PathKind::Haproxy,
        PathKind::Socat,
        PathKind::Rathole,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::TlsDirect => "tls-direct",
            PathKind::Sallyport => "sallyport",
            PathKind::Mtls => "mtls",
            PathKind::Ws => "ws",
            PathKind::Vpc => "vpc",
            PathKind::Haproxy => "haproxy",
            PathKind::Socat => "socat",
            PathKind::Rathole => "rathole",
        }
    }

    /// The name in tables and plots: the command-line name, except "rustls direct".
    pub fn label(self) -> &'static str {
        match self {
            PathKind::TlsDirect => "rustls direct",
            other => other.name(),
        }
    }

    /// Whether the path can carry the TLS load (`--tls`): tls-direct and sallyport.
    pub fn speaks_tls(self) -> bool {
        matches!(self, PathKind::TlsDirect | PathKind::Sallyport)
    }

    /// Whether the load speaks WebSocket on this path (`ws` only; bulk and rr).
    pub fn speaks_ws(self) -> bool {
        self == PathKind::Ws
    }

    /// The external program a peer path runs; `None` for direct, tls-direct and the sallyport
    /// paths (sallyport, ws, vpc).
    pub fn program(self) -> Option<&'static str> {
        match self {
            PathKind::Haproxy => Some("haproxy"),
            PathKind::Socat => Some("socat"),
            PathKind::Rathole => Some("rathole"),
            PathKind::Direct
            | PathKind::TlsDirect
            | PathKind::Sallyport
            | PathKind::Mtls
            | PathKind::Ws
            | PathKind::Vpc => None,
        }
    }

    /// Whether the path runs `sallyport` processes (sallyport, mtls, ws, vpc).
    pub fn runs_sallyport(self) -> bool {
        matches!(
            self,
            PathKind::Sallyport | PathKind::Mtls | PathKind::Ws | PathKind::Vpc
        )
    }

    /// Whether the path belongs to `--tls` only: tls-direct and mtls (sallyport with a plain
    /// public listener and a mutual-TLS reverse leg; the load speaks plain TCP to it).
    pub fn needs_tls_setup(self) -> bool {
        matches!(self, PathKind::TlsDirect | PathKind::Mtls)
    }

    /// Gateway processes on the path: 0 (direct), 1 (haproxy, socat) or 2 (sallyport, ws, vpc,
    /// rathole).
    pub fn hops(self) -> usize {
        match self {
            PathKind::Direct | PathKind::TlsDirect => 0,
            PathKind::Haproxy | PathKind::Socat => 1,
            PathKind::Sallyport
            | PathKind::Mtls
            | PathKind::Ws
            | PathKind::Vpc
            | PathKind::Rathole => 2,
        }
    }

    /// `Ok(())` when the path can run here; `Err(reason)` for a peer that is not on `$PATH`.
    pub fn available(self) -> std::result::Result<(), String> {
        match self.program() {
            Some(program) if procs::which(program).is_none() => Err(format!(
                "{program} not found on PATH: path {} skipped (see bench/install-peers.sh)",
                self.name()
            )),
            _ => Ok(()),
        }
    }

    /// Whether the path is in the default list (when found): direct, sallyport and the peers.
    /// `tls-direct` and `mtls` belong to `--tls`; `ws` and `vpc` are other transports, run on
    /// request.
    pub fn is_default(self) -> bool {
        !self.needs_tls_setup() && !matches!(self, PathKind::Ws | PathKind::Vpc)
    }

    /// The default path list: direct, sallyport, and every peer found on `$PATH`.
    pub fn defaults() -> Vec<PathKind> {
        PathKind::ALL
            .into_iter()
            .filter(|p| p.is_default() && p.available().is_ok())
            .collect()
    }

    /// The default path list with `--tls`: direct (plain), tls-direct, mtls (TLS on the reverse
    /// leg only), sallyport (TLS on both legs).
    pub fn tls_defaults() -> Vec<PathKind> {
        vec![
            PathKind::Direct,
            PathKind::TlsDirect,
            PathKind::Mtls,
            PathKind::Sallyport,
        ]
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PathKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        PathKind::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = PathKind::ALL.iter().map(|p| p.name()).collect();
                format!("unknown path {s:?}; expected one of {}", names.join(","))
            })
    }
}

/// How sallyport gateways are started.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The `sallyport` binary.
    pub binary: PathBuf,
    /// `[gateway] workers` of each gateway.
    pub workers: usize,
    /// `[gateway] relay` ("splice" or "copy"); the gateway's default when `None`.
    pub relay: Option<String>,
    /// `[gateway] pipe_size` (e.g. "1MiB"); the gateway's default when `None`.
    pub pipe_size: Option<String>,
    /// `prepared` of the internal gateway's service.
    pub prepared: usize,
    /// Extra `KEY = VALUE` lines for both gateways' `[gateway]` tables (TOML as written),
    /// e.g. `cores = []`, to measure a knob.
    pub extra: Vec<String>,
    /// Extra `KEY = VALUE` lines for the DMZ's `[[service]]` (TOML as written), e.g.
    /// `admission = "always"` or a `deny` list, to measure admission control.
    pub service_extra: Vec<String>,
    /// `--tls`: the DMZ's public listener is `tls://` and the reverse leg mutual TLS, with these
    /// certificates; the load then speaks TLS (see [`Running::tls`]).
    pub tls: Option<Arc<TlsSetup>>,
}

impl GatewayOptions {
    /// The `[gateway]` table; `dmz` names the relay as the documented DMZ config does.
    fn gateway_section(&self, dmz: bool) -> String {
        let mut s = format!(
            "[gateway]\nworkers = {}\nadmin = \"127.0.0.1:0\"\n",
            self.workers
        );
        if let Some(cores) = self.cores_line() {
            s.push_str(cores);
        }
        match &self.relay {
            Some(relay) => s.push_str(&format!("relay = {}\n", toml_string(relay))),
            // The documented DMZ config names the relay explicitly; the default is the same.
            None if dmz => s.push_str("relay = \"splice\"\n"),
            None => {}
        }
        if let Some(size) = &self.pipe_size {
            s.push_str(&format!("pipe_size = {}\n", toml_string(size)));
        }
        for line in &self.extra {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// Two gateways on one host would both pin worker 0 to core 0 by default. The bench leaves
    /// their placement to the scheduler (`cores = []`), as it does for the load, the echo and
    /// the peers, unless `extra` sets `cores` itself (tuning.md, "Two gateways on one host").
    fn cores_line(&self) -> Option<&'static str> {
        (!self.sets_cores()).then_some("cores = []\n")
    }

    /// `service_extra`, one line each.
    fn service_lines(&self) -> String {
        self.service_extra
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// `extra` has a `cores = …` line.
    pub fn sets_cores(&self) -> bool {
        self.extra
            .iter()
            .any(|l| l.split('=').next().is_some_and(|k| k.trim() == "cores"))
    }

    /// The DMZ config: reverse endpoint and public listener on loopback port 0; with TLS,
    /// `[reverse] tls = { cert, key, client_ca }` and a `tls://` listener with `tls = { cert, key }`.
    pub fn dmz_config(&self) -> String {
        self.dmz_config_with(true)
    }

    /// The DMZ config of the `mtls` path: as [`GatewayOptions::dmz_config`], but the public
    /// listener stays plain `tcp://`; only the reverse leg is mutual TLS.
    pub fn dmz_mtls_config(&self) -> String {
        self.dmz_config_with(false)
    }

    fn dmz_config_with(&self, public_tls: bool) -> String {
        let (reverse_tls, scheme, service_tls) = match &self.tls {
            None => (String::new(), "tcp", String::new()),
            Some(t) if !public_tls => (
                format!(
                    "tls = {{ cert = {}, key = {}, client_ca = {} }}\n",
                    path_string(&t.files.dmz_cert),
                    path_string(&t.files.dmz_key),
                    path_string(&t.files.ca)
                ),
                "tcp",
                String::new(),
            ),
            Some(t) => {
                let f = &t.files;
                let (cert, key) = (path_string(&f.dmz_cert), path_string(&f.dmz_key));
                (
                    format!(
                        "tls = {{ cert = {cert}, key = {key}, client_ca = {} }}\n",
                        path_string(&f.ca)
                    ),
                    "tls",
                    format!("tls = {{ cert = {cert}, key = {key} }}\n"),
                )
            }
        };
        format!(
            "{}\n[reverse]\nlisten = \"127.0.0.1:0\"\n{reverse_tls}\n[[service]]\nname = \"{SERVICE}\"\naccept = \"{scheme}://127.0.0.1:0\"\n{service_tls}connect = \"reverse://{SERVICE}\"\ntimeout = \"5s\"\n{}",
            self.gateway_section(true),
            self.service_lines()
        )
    }

    /// The DMZ config of the `ws` path: as [`GatewayOptions::dmz_config`] without TLS, but the
    /// public listener is the WebSocket listener `ws://127.0.0.1:0/echo`.
    pub fn dmz_ws_config(&self) -> String {
        format!(
            "{}\n[reverse]\nlisten = \"127.0.0.1:0\"\n\n[[service]]\nname = \"{SERVICE}\"\naccept = \"ws://127.0.0.1:0{WS_PATH}\"\nconnect = \"reverse://{SERVICE}\"\ntimeout = \"5s\"\n{}",
            self.gateway_section(true),
            self.service_lines()
        )
    }

    /// Gateway B of the `vpc` path: a forwarding service from a WebSocket listener on loopback
    /// port 0 (`/vpc`) to the echo back-end.
    pub fn vpc_b_config(&self, echo: SocketAddr) -> String {
        format!(
            "{}\n[[service]]\nname = \"{SERVICE}\"\naccept = \"ws://127.0.0.1:0{VPC_PATH}\"\nconnect = \"tcp://{echo}\"\n",
            self.gateway_section(false)
        )
    }

    /// Gateway A of the `vpc` path: a forwarding service from a TCP listener on loopback port 0
    /// to gateway B's WebSocket listener at `b`.
    pub fn vpc_a_config(&self, b: SocketAddr) -> String {
        format!(
            "{}\n[[service]]\nname = \"{SERVICE}\"\naccept = \"tcp://127.0.0.1:0\"\nconnect = \"ws://{b}{VPC_PATH}\"\n",
            self.gateway_section(false)
        )
    }

    /// The internal config: park `prepared` connections at `reverse`, connect tunnels to `echo`.
    pub fn internal_config(
        &self,
        reverse: SocketAddr,
        echo: SocketAddr,
        prepared: usize,
    ) -> String {
        let tls = match &self.tls {
            None => String::new(),
            Some(t) => {
                let f = &t.files;
                format!(
                    "tls = {{ ca = {}, cert = {}, key = {}, server_name = {} }}\n",
                    path_string(&f.ca),
                    path_string(&f.internal_cert),
                    path_string(&f.internal_key),
                    toml_string(crate::tls::SERVER_NAME)
                )
            }
        };
        format!(
            "{}\n[[service]]\nname = \"{SERVICE}\"\naccept = \"reverse://{reverse}/{SERVICE}\"\n{tls}connect = \"tcp://{echo}\"\nprepared = {prepared}\nretry_max = \"200ms\"\n",
            self.gateway_section(false)
        )
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn path_string(p: &Path) -> String {
    toml_string(&p.to_string_lossy())
}

/// One running `sallyport run` with the addresses it announced.
#[derive(Debug)]
pub struct Gateway {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub reverse: Option<SocketAddr>,
    pub service: Option<SocketAddr>,
}

impl Gateway {
    /// Writes `config` to `NAME.toml` in `scratch`, runs `sallyport run --config` on it with
    /// `RUST_LOG=warn` (unless set) and waits for `ready`, collecting the `listening` lines.
    pub fn start(binary: &Path, name: &str, config: &str, scratch: &Scratch) -> Result<Gateway> {
        let path = scratch
            .write(&format!("{name}.toml"), config)
            .with_context(|| format!("{name}: writing its config"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("run").arg("--config").arg(&path);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut proc = Proc::spawn(name, cmd, scratch).with_context(|| {
            format!(
                "is {} the sallyport binary? (--sallyport)",
                binary.display()
            )
        })?;
        let mut admin = None;
        let mut reverse = None;
        let mut service = None;
        proc.wait_for_line(READY_LIMIT, |line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["listening", "admin", addr] => admin = addr.parse().ok(),
                ["listening", "reverse", addr] => reverse = addr.parse().ok(),
                ["listening", "service", name, addr] if *name == SERVICE => {
                    service = addr.parse().ok();
                }
                ["ready"] => return Some(()),
                _ => {}
            }
            None
        })?;
        let Some(admin) = admin else {
            return Err(proc.failure("announced no admin address"));
        };
        Ok(Gateway {
            proc,
            admin,
            reverse,
            service,
        })
    }

    /// `GET /stats`.
    pub fn stats(&self) -> Result<Value> {
        admin::stats(self.admin).with_context(|| format!("{} stats", self.proc.name()))
    }
}

/// A DMZ gateway and the internal gateway that parks its prepared connections there.
#[derive(Debug)]
pub struct SallyportPair {
    pub dmz: Gateway,
    pub internal: Gateway,
    /// The DMZ's public listener for the echo service.
    pub public: SocketAddr,
    /// The internal gateway's `prepared`.
    pub prepared: usize,
}

impl SallyportPair {
    /// Starts the DMZ, then the internal gateway pointed at its reverse endpoint and at `echo`.
    /// Returns once both are ready; the pool may still be filling (see [`SallyportPair::wait_filled`]).
    pub fn start(
        options: &GatewayOptions,
        scratch: &Scratch,
        label: &str,
        echo: SocketAddr,
        prepared: usize,
    ) -> Result<SallyportPair> {
        SallyportPair::start_with(
            options,
            &options.dmz_config(),
            scratch,
            label,
            echo,
            prepared,
        )
    }

    /// [`SallyportPair::start`] with the DMZ running `dmz_config` (e.g.
    /// [`GatewayOptions::dmz_ws_config`]).
    pub fn start_with(
        options: &GatewayOptions,
        dmz_config: &str,
        scratch: &Scratch,
        label: &str,
        echo: SocketAddr,
        prepared: usize,
    ) -> Result<SallyportPair> {
        let dmz = Gateway::start(&options.binary, &format!("{label}dmz"), dmz_config, scratch)?;
        let (Some(reverse), Some(public)) = (dmz.reverse, dmz.service) else {
            return Err(dmz
                .proc
                .failure("did not announce its reverse endpoint and echo service"));
        };
        let internal = Gateway::start(
            &options.binary,
            &format!("{label}internal"),
            &options.internal_config(reverse, echo, prepared),
            scratch,
        )?;
        Ok(SallyportPair {
            dmz,
            internal,
            public,
            prepared,
        })
    }

    /// Prepared connections parked at the DMZ now.
    pub fn parked(&self) -> Result<u64> {
        Ok(admin::prepared(&self.dmz.stats()?, SERVICE))
    }

    /// Waits until the DMZ holds every prepared connection, or fails at `deadline` (or when a
    /// gateway exits) saying how far the pool got.
    pub fn wait_filled(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if self.parked()? >= self.prepared as u64 {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "{}: pool not full: {} of {} prepared connections parked",
                    self.dmz.proc.name(),
                    self.parked()?,
                    self.prepared
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Fails (with the stderr tail) if either gateway has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.dmz.proc.check_alive()?;
        self.internal.proc.check_alive()
    }

    /// Stops both gateways (SIGTERM, in parallel); an unclean exit is an error.
    pub fn stop(self) -> Result<()> {
        procs::stop_all(vec![self.dmz.proc, self.internal.proc])
    }
}

/// A started path: where to connect, and the processes relaying (public-facing first).
#[derive(Debug)]
pub struct Running {
    pub kind: PathKind,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Gateway processes, public-facing first (DMZ / rathole server), then the inner one.
    pub procs: Vec<Proc>,
    /// The DMZ's admin endpoint (sallyport only).
    pub dmz_admin: Option<SocketAddr>,
    /// Set when the load must speak TLS here (tls-direct; sallyport with `--tls`).
    pub tls: Option<TlsTarget>,
    /// Set when the load must speak WebSocket here (`ws`).
    pub ws: Option<WsTarget>,
    /// The in-process rustls echo server (tls-direct only).
    tls_echo: Option<TlsEchoServer>,
    /// Kept so config files and logs outlive the processes using them.
    _scratch: Scratch,
}

impl Running {
    /// Starts `kind` in front of the echo back-end at `echo` and waits until it carries traffic.
    pub fn start(kind: PathKind, echo: SocketAddr, options: &GatewayOptions) -> Result<Running> {
        let scratch = Scratch::new().context("creating a scratch directory")?;
        let tls = options
            .tls
            .as_ref()
            .filter(|_| kind.speaks_tls())
            .map(|t| t.client.clone());
        if kind == PathKind::TlsDirect {
            let Some(setup) = &options.tls else {
                bail!("path tls-direct needs --tls");
            };
            let server = TlsEchoServer::start(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                Arc::clone(&setup.server),
            )
            .context("starting the rustls echo server")?;
            return Ok(Running {
                kind,
                addr: server.addr(),
                procs: Vec::new(),
                dmz_admin: None,
                tls,
                ws: None,
                tls_echo: Some(server),
                _scratch: scratch,
            });
        }
        let started = match kind {
            PathKind::Direct => Ok((echo, Vec::new(), None)),
            PathKind::TlsDirect => unreachable!("started above"),
            PathKind::Sallyport => start_sallyport(echo, options, &scratch),
            PathKind::Mtls => start_sallyport_mtls(echo, options, &scratch),
            PathKind::Ws => start_sallyport_ws(echo, options, &scratch),
            PathKind::Vpc => start_vpc(echo, options, &scratch),
            PathKind::Haproxy => start_haproxy(echo, &scratch),
            PathKind::Socat => start_socat(echo, &scratch),
            PathKind::Rathole => start_rathole(echo, &scratch),
        };
        let (addr, procs, dmz_admin) = started.with_context(|| format!("starting path {kind}"))?;
        let ws = kind.speaks_ws().then(|| WsTarget {
            host: addr.to_string(),
            path: WS_PATH.to_string(),
        });
        Ok(Running {
            kind,
            addr,
            procs,
            dmz_admin,
            tls,
            ws,
            tls_echo: None,
            _scratch: scratch,
        })
    }

    /// What [`Running::cpu_seconds`] measures, in the same order: the gateway processes, or the
    /// in-process rustls echo server (tls-direct).
    pub fn cpu_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.procs.iter().map(|p| p.name().to_string()).collect();
        if self.tls_echo.is_some() {
            names.push("rustls-echo".to_string());
        }
        names
    }

    /// CPU seconds spent so far by each gateway process, in `procs` order, then by the rustls
    /// echo server's finished connections (tls-direct).
    pub fn cpu_seconds(&self) -> Result<Vec<f64>> {
        let mut cpu = self
            .procs
            .iter()
            .map(|p| {
                crate::host::cpu_seconds(p.pid())
                    .with_context(|| format!("reading CPU time of {}", p.name()))
            })
            .collect::<Result<Vec<f64>>>()?;
        if let Some(server) = &self.tls_echo {
            cpu.push(server.cpu_seconds());
        }
        Ok(cpu)
    }

    /// Fails (with the stderr tail) if a gateway process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }

    /// The DMZ's `/stats` (sallyport only).
    pub fn dmz_stats(&self) -> Result<Option<Value>> {
        self.dmz_admin.map(admin::stats).transpose()
    }

    /// Stops every process; an unclean exit is an error.
    pub fn stop(self) -> Result<()> {
        procs::stop_all(self.procs)
    }
}

type Started = (SocketAddr, Vec<Proc>, Option<SocketAddr>);

fn start_sallyport(
    echo: SocketAddr,
    options: &GatewayOptions,
    scratch: &Scratch,
) -> Result<Started> {
    start_pair(echo, options, &options.dmz_config(), scratch)
}

fn start_sallyport_mtls(
    echo: SocketAddr,
    options: &GatewayOptions,
    scratch: &Scratch,
) -> Result<Started> {
    if options.tls.is_none() {
        bail!("path mtls needs --tls");
    }
    start_pair(echo, options, &options.dmz_mtls_config(), scratch)
}

/// Starts a DMZ running `dmz_config` and the internal gateway, and waits for the full pool.
fn start_pair(
    echo: SocketAddr,
    options: &GatewayOptions,
    dmz_config: &str,
    scratch: &Scratch,
) -> Result<Started> {
    let mut pair =
        SallyportPair::start_with(options, dmz_config, scratch, "", echo, options.prepared)?;
    pair.wait_filled(Instant::now() + READY_LIMIT)?;
    Ok((
        pair.public,
        vec![pair.dmz.proc, pair.internal.proc],
        Some(pair.dmz.admin),
    ))
}

fn start_sallyport_ws(
    echo: SocketAddr,
    options: &GatewayOptions,
    scratch: &Scratch,
) -> Result<Started> {
    if options.tls.is_some() {
        bail!("path ws is measured without TLS only");
    }
    start_pair(echo, options, &options.dmz_ws_config(), scratch)
}

/// Gateway B first (its WebSocket port comes from its `listening service` line), then gateway A
/// pointed at it; returns A's TCP listener, processes A then B (public-facing first).
fn start_vpc(echo: SocketAddr, options: &GatewayOptions, scratch: &Scratch) -> Result<Started> {
    if options.tls.is_some() {
        bail!("path vpc is measured without TLS only");
    }
    let b = Gateway::start(
        &options.binary,
        "vpc-b",
        &options.vpc_b_config(echo),
        scratch,
    )?;
    let Some(b_addr) = b.service else {
        return Err(b.proc.failure("did not announce its WebSocket listener"));
    };
    let a = Gateway::start(
        &options.binary,
        "vpc-a",
        &options.vpc_a_config(b_addr),
        scratch,
    )?;
    let Some(a_addr) = a.service else {
        return Err(a.proc.failure("did not announce its TCP listener"));
    };
    Ok((a_addr, vec![a.proc, b.proc], None))
}

fn start_haproxy(echo: SocketAddr, scratch: &Scratch) -> Result<Started> {
    let port = free_port()?;
    let config = format!(
        "global\n    maxconn 9000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n\nfrontend bench\n    bind 127.0.0.1:{port}\n    default_backend echo\n\nbackend echo\n    server echo {echo}\n"
    );
    let path = scratch.write("haproxy.cfg", &config)?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-f").arg(&path).arg("-db");
    let mut proc = Proc::spawn("haproxy", cmd, scratch)?.with_sigterm_is_clean();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, &mut [&mut proc])?;
    Ok((addr, vec![proc], None))
}

fn start_socat(echo: SocketAddr, scratch: &Scratch) -> Result<Started> {
    let port = free_port()?;
    let mut cmd = Command::new("socat");
    cmd.arg(format!(
        "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay"
    ))
    .arg(format!("TCP:{echo},nodelay"));
    let mut proc = Proc::spawn("socat", cmd, scratch)?.with_sigterm_is_clean();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, &mut [&mut proc])?;
    Ok((addr, vec![proc], None))
}

fn start_rathole(echo: SocketAddr, scratch: &Scratch) -> Result<Started> {
    let control = free_port()?;
    let public = free_port()?;
    let server_cfg = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"sallyport-bench\"\n\n[server.transport]\ntype = \"tcp\"\n\n[server.transport.tcp]\nnodelay = true\n\n[server.services.{SERVICE}]\nbind_addr = \"127.0.0.1:{public}\"\nnodelay = true\n"
    );
    let client_cfg = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"sallyport-bench\"\n\n[client.transport]\ntype = \"tcp\"\n\n[client.transport.tcp]\nnodelay = true\n\n[client.services.{SERVICE}]\nlocal_addr = \"{echo}\"\nnodelay = true\n"
    );
    let server_path = scratch.write("rathole-server.toml", &server_cfg)?;
    let client_path = scratch.write("rathole-client.toml", &client_cfg)?;
    let rathole = |path: &Path| {
        let mut cmd = Command::new("rathole");
        cmd.arg(path);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd
    };
    let mut server =
        Proc::spawn("rathole-server", rathole(&server_path), scratch)?.with_sigterm_is_clean();
    let mut client =
        Proc::spawn("rathole-client", rathole(&client_path), scratch)?.with_sigterm_is_clean();
    // The server opens the public port once the client's control channel is up.
    let addr = SocketAddr::from(([127, 0, 0, 1], public));
    wait_for_port(addr, &mut [&mut server, &mut client])?;
    Ok((addr, vec![server, client], None))
}

/// Waits until `addr` accepts a connection, failing if one of `procs` exits or time runs out.
fn wait_for_port(addr: SocketAddr, procs: &mut [&mut Proc]) -> Result<()> {
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        if Instant::now() >= deadline {
            let who = procs
                .first()
                .map(|p| p.failure(&format!("{addr} not accepting after {READY_LIMIT:?}")));
            return Err(who.unwrap_or_else(|| anyhow::anyhow!("{addr} not accepting")));
        }
        thread::sleep(POLL);
    }
}

/// The `sallyport` binary next to the running executable (the same cargo target directory), or
/// next to its parent directory when the executable is a test in `deps/`.
pub fn sibling_sallyport() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let candidates = [
        Some(dir.join("sallyport")),
        (dir.file_name()? == "deps")
            .then(|| dir.parent().map(|p| p.join("sallyport")))
            .flatten(),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_round_trip() {
        for p in PathKind::ALL {
            assert_eq!(p.name().parse::<PathKind>(), Ok(p));
        }
        assert!("ssh".parse::<PathKind>().is_err());
        assert!(PathKind::defaults().starts_with(&[PathKind::Direct, PathKind::Sallyport]));
        assert!(!PathKind::defaults().contains(&PathKind::Ws));
        assert!(!PathKind::defaults().contains(&PathKind::Vpc));
        assert_eq!(PathKind::Vpc.hops(), 2);
        assert!(PathKind::Ws.speaks_ws() && !PathKind::Vpc.speaks_ws());
    }

    #[test]
    fn configs_carry_the_options() {
        let options = GatewayOptions {
            binary: PathBuf::from("sallyport"),
            workers: 2,
            relay: Some("copy".to_string()),
            pipe_size: Some("256KiB".to_string()),
            extra: vec!["cores = []".to_string()],
            service_extra: vec!["admission = \"always\"".to_string()],
            prepared: 7,
            tls: None,
        };
        let dmz = options.dmz_config();
        assert!(dmz.contains("workers = 2\n"));
        assert!(dmz.contains("relay = \"copy\"\n"));
        assert!(dmz.contains("pipe_size = \"256KiB\"\n"));
        assert!(dmz.contains("cores = []\n"));
        assert!(dmz.contains("connect = \"reverse://echo\""));
        assert!(dmz.ends_with("admission = \"always\"\n"), "{dmz}");
        let ws = options.dmz_ws_config();
        assert!(ws.contains("accept = \"ws://127.0.0.1:0/echo\""));
        assert!(ws.contains("connect = \"reverse://echo\""));
        assert!(ws.contains("workers = 2\n"));
        let b = options.vpc_b_config(SocketAddr::from(([127, 0, 0, 1], 7000)));
        assert!(b.contains("accept = \"ws://127.0.0.1:0/vpc\""));
        assert!(b.contains("connect = \"tcp://127.0.0.1:7000\""));
        let a = options.vpc_a_config(SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(a.contains("accept = \"tcp://127.0.0.1:0\""));
        assert!(a.contains("connect = \"ws://127.0.0.1:8080/vpc\""));
        assert!(!a.contains("reverse"));
        let internal = options.internal_config(
            SocketAddr::from(([127, 0, 0, 1], 1080)),
            SocketAddr::from(([127, 0, 0, 1], 7000)),
            9,
        );
        assert!(internal.contains("accept = \"reverse://127.0.0.1:1080/echo\""));
        assert!(internal.contains("connect = \"tcp://127.0.0.1:7000\""));
        assert!(internal.contains("prepared = 9\n"));
        let defaults = GatewayOptions {
            relay: None,
            pipe_size: None,
            extra: Vec::new(),
            ..options
        };
        assert!(defaults.dmz_config().contains("relay = \"splice\""));
        // Unpinned by default; a cores option given is used instead, not added to.
        assert!(defaults.dmz_config().contains("cores = []\n"));
        assert_eq!(dmz.matches("cores").count(), 1);
        assert!(!defaults
            .internal_config(
                SocketAddr::from(([127, 0, 0, 1], 1)),
                SocketAddr::from(([127, 0, 0, 1], 2)),
                1
            )
            .contains("relay"));
    }
}
