//! Configuration: the TOML file that gives a `sallyport` process its role.
//!
//! What it does: reads one TOML file into [`RawConfig`] (serde, unknown keys rejected, every field
//! optional), then validates it with `Config::try_from(raw)` into a fully populated [`Config`] with
//! every default applied, so the rest of the program never sees an `Option` that means "use the
//! default". Every error is a [`ConfigError`] naming the file, the key and the reason, e.g.
//! `dmz.toml: service[echo].accept: missing port in "dmz.example.net"; expected HOST:PORT`.
//!
//! Certificates and keys named by `tls` and `connect_tls` tables are read here, at parse time
//! (relative paths are relative to the config file's directory), and turned into rustls
//! configurations by [`crate::tls`]; a missing, unreadable or garbled file, or a key that does not
//! match its certificate, is a [`ConfigError`] naming the key:
//! `dmz.toml: reverse.tls.cert: cannot read "dmz.pem": No such file or directory`.
//!
//! Host names of forwarding upstreams (`connect` of a service that is neither DMZ nor internal)
//! are resolved here, once (the first address the resolver gives), so `sallyport check` catches
//! a name that does not resolve; a failure is a [`ConfigError`] naming `service[NAME].connect`.
//!
//! What it does not do: open sockets, resolve the DMZ or back-end names of internal services
//! (those are looked up at each dial, so a moved back-end is followed), or watch the file for
//! changes. A port that cannot be bound is reported by the gateway at start-up, not here.
//!
//! Key paths in messages: `gateway.workers`, `reverse.listen`, `service[echo].accept`. A service is
//! named by its `name` when that name is valid and not a duplicate, otherwise by its position,
//! counting `[[service]]` tables from 1 in file order (`service[2].accept`).
//!
//! Roles are given by the URI schemes of a service:
//! - DMZ service: `accept = "tcp://IP:PORT"`, `"tls://IP:PORT"` (with a `tls` table),
//!   `"ws://IP:PORT/PATH"` or `"wss://IP:PORT/PATH"` (with a `tls` table),
//!   `connect = "reverse://BINDNAME"`;
//! - internal service: `accept = "reverse://HOST:PORT/BINDNAME"` (optional `tls` table: the
//!   reverse leg to the DMZ), `connect = "tcp://HOST:PORT"` or `"tls://HOST:PORT"` (with a
//!   `connect_tls` table);
//! - forwarding service: `accept` as a DMZ service, `connect = "tcp://HOST:PORT"`,
//!   `"tls://HOST:PORT"`, `"ws://HOST:PORT/PATH"` or `"wss://HOST:PORT/PATH"` (`tls` and `wss`
//!   with a `connect_tls` table): each client gets a connection of its own to the upstream. With
//!   `tcp` on one gateway and `ws` on the other this is the virtual private connection.
//!
//! WebSocket listeners (`ws://`, `wss://`) on the same address share one listening socket and are
//! told apart by request path, so they need distinct paths and (for `wss://`) the same `tls`
//! table and `handshake_timeout`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

use crate::tls::ServerRole as TlsServerRole;
pub use crate::tls::{TlsClient, TlsServer};

/// Default `timeout` of a DMZ service: the longest a client waits for a prepared connection.
/// Refilling a pool takes one round trip to the internal gateway, so two seconds covers a refill
/// over a slow WAN link several times over, yet refuses a client of a dead service while the
/// client is still waiting rather than after it gave up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default `prepared` of an internal service: connections kept parked at the DMZ. Four absorbs a
/// burst of four simultaneous clients while the refill (one round trip each) runs, and costs only
/// four idle sockets per service on each side.
pub const DEFAULT_PREPARED: usize = 4;

/// Default `retry_max` of an internal service: the cap of the reconnect backoff (100 ms, 200 ms,
/// 400 ms, 800 ms, then 1 s). A restarted DMZ is back in service within a second, while a DMZ that
/// stays down costs at most one connection attempt per second.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Default `[reverse] handshake_timeout`: the longest a SOCKS5 negotiation (greeting, optional
/// RFC 1929 authentication, BIND) may take at the DMZ. A live internal gateway needs one or two
/// round trips; five seconds tolerates a congested WAN link while bounding how long a silent or
/// slow-loris peer can hold a socket.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `[gateway] pipe_size` in bytes, for the splice relay. 1 MiB is the Linux default of
/// `/proc/sys/fs/pipe-max-size`, the largest pipe an unprivileged process may request, and 16 times
/// the default 64 KiB pipe, so one splice moves up to 1 MiB on bulk transfers. Larger values need
/// that knob raised (see `tuning.md`).
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;

/// Default `[gateway] buffer_size` in bytes, for the buffered-copy relay (used where splice is
/// not). 64 KiB matches the default pipe capacity, so both relays move similar chunks per call,
/// and keeps a tunnel's two buffers at 128 KiB.
pub const DEFAULT_BUFFER_SIZE: usize = 64 << 10;

/// Default `handshake_timeout` of a `tls://`, `ws://` or `wss://` public listener: the longest a
/// client's TLS handshake plus WebSocket upgrade request may take before it is closed. A real
/// client needs two or three round trips; five seconds covers a slow mobile link while bounding
/// what a silent or slow-loris client can hold.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `ws_max_message`: the largest WebSocket message accepted from a peer; a larger one
/// closes the connection (1009). The payload is a byte stream, so messages only need to be as
/// large as a peer's writes: 16 MiB takes any browser or library default while bounding what a
/// peer can announce. The decoder streams payload, so the limit costs no memory.
pub const DEFAULT_WS_MAX_MESSAGE: usize = 16 << 20;

/// Lower bound of `ws_max_message`: 64 KiB, the largest message a sallyport sends (one frame per
/// write). A smaller limit would make another gateway's frames fail with 1009.
pub const MIN_WS_MAX_MESSAGE: usize = 64 << 10;

/// Upper bound of `ws_max_message`.
pub const MAX_WS_MAX_MESSAGE: usize = 1 << 30;

/// Longest WebSocket path in `accept` or `connect`, in bytes; it must fit the 8 KiB request head.
pub const MAX_WS_PATH_LEN: usize = 1024;

/// Lower bound of `ws_ping`: a keepalive more frequent than this is traffic, not a keepalive
/// (and most likely a slip such as `"30ms"` for `"30s"`).
pub const MIN_WS_PING: Duration = Duration::from_millis(100);

/// Longest ALPN protocol name in bytes (RFC 7301: one length byte).
pub const MAX_ALPN_LEN: usize = 255;

/// Default `connect_timeout` of an internal or forwarding service: the longest a connect to the
/// back-end (or upstream) may take. The back-end is in the same trusted network, so a connect
/// that takes five seconds is to a dead or filtered host; failing then frees the prepared slot
/// for a fresh attempt, or resets the forwarded client rather than leaving it hanging.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `[gateway] relay`: splice, which costs no userspace copy for plain TCP tunnels; the
/// data plane falls back to buffered copy per tunnel if a pipe cannot be created.
pub const DEFAULT_RELAY: RelayMode = RelayMode::Splice;

/// Upper bound of `[gateway] workers`.
pub const MAX_WORKERS: usize = 1024;
/// Upper bound of a service's `prepared`.
pub const MAX_PREPARED: usize = 100_000;
/// Lower bound of `[gateway] pipe_size`: one page, the kernel's smallest pipe.
pub const MIN_PIPE_SIZE: usize = 4 << 10;
/// Upper bound of `[gateway] pipe_size`.
pub const MAX_PIPE_SIZE: usize = 256 << 20;
/// Default `[gateway] nodelay`: the relay forwards what it read at once, so Nagle would only
/// delay request/response traffic (see tuning.md).
pub const DEFAULT_NODELAY: bool = true;
/// Default `[gateway] ring_setup`: the cheapest completions on kernels ≥ 6.1 (see tuning.md).
pub const DEFAULT_RING_SETUP: RingSetup = RingSetup::DeferTaskrun;
/// Upper bound of `[gateway] busy_poll`.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(10);
/// Lower bound of `[gateway] socket_buffer`.
pub const MIN_SOCKET_BUFFER: usize = 4 << 10;
/// Upper bound of `[gateway] socket_buffer`.
pub const MAX_SOCKET_BUFFER: usize = 64 << 20;
/// Lower bound of `[gateway] buffer_size`.
pub const MIN_BUFFER_SIZE: usize = 1 << 10;
/// Upper bound of `[gateway] buffer_size`.
pub const MAX_BUFFER_SIZE: usize = 64 << 20;
/// Longest service or bind name in bytes; a bind name travels as a SOCKS5 DOMAINNAME (one length byte).
pub const MAX_NAME_LEN: usize = 255;
/// Longest user name or password in bytes (RFC 1929: one length byte each).
pub const MAX_CREDENTIAL_LEN: usize = 255;
/// Longest accepted duration. Nothing in a gateway waits a day; the bound also keeps
/// `Instant + duration` far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

// ---------------------------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------------------------

/// A validated configuration: every default applied, every address parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    /// Present on a DMZ gateway: where internal gateways dial in.
    pub reverse: Option<ReverseConfig>,
    /// In file order; never empty.
    pub services: Vec<ServiceConfig>,
}

/// `[gateway]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Data-plane threads; default: one per core (`std::thread::available_parallelism`).
    pub workers: usize,
    /// Admin endpoint (`GET /metrics`, `GET /stats`); off when `None`.
    pub admin: Option<SocketAddr>,
    pub relay: RelayMode,
    /// Pipe size in bytes requested for each splice pipe.
    pub pipe_size: usize,
    /// Buffer size in bytes for each direction of the buffered-copy relay.
    pub buffer_size: usize,
    /// Cores the workers are pinned to, worker `i` on `cores[i % len]`. `None`: worker `i` on
    /// core `i` (one per core); an empty list: no pinning (the scheduler places them).
    pub cores: Option<Vec<usize>>,
    /// TCP_NODELAY on relayed sockets.
    pub nodelay: bool,
    /// SO_SNDBUF/SO_RCVBUF on relayed sockets; `None` keeps the kernel's autotuning.
    pub socket_buffer: Option<usize>,
    pub ring_setup: RingSetup,
    /// After activity, workers keep polling their ring without sleeping this long (zero: off).
    pub busy_poll: Duration,
}

/// How each worker's io_uring is set up (`[gateway] ring_setup`); a kernel without the chosen
/// flags falls back to the next simpler one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSetup {
    /// IORING_SETUP_SINGLE_ISSUER | COOP_TASKRUN.
    CoopTaskrun,
    /// IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN: completions run only when the worker waits.
    DeferTaskrun,
    /// No setup flags.
    Plain,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            workers: default_workers(),
            admin: None,
            relay: DEFAULT_RELAY,
            pipe_size: DEFAULT_PIPE_SIZE,
            buffer_size: DEFAULT_BUFFER_SIZE,
            cores: None,
            nodelay: DEFAULT_NODELAY,
            socket_buffer: None,
            ring_setup: DEFAULT_RING_SETUP,
            busy_poll: Duration::ZERO,
        }
    }
}

/// `[gateway] relay = "splice" | "copy"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Buffered copy through userspace.
    Copy,
    /// splice(2) through a pipe; plain TCP only.
    Splice,
}

impl RelayMode {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayMode::Copy => "copy",
            RelayMode::Splice => "splice",
        }
    }
}

impl fmt::Display for RelayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[reverse]`: the DMZ's SOCKS5 endpoint where internal gateways BIND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseConfig {
    pub listen: SocketAddr,
    /// Longest the TLS handshake (when `tls` is set) plus the SOCKS5 negotiation may take.
    pub handshake_timeout: Duration,
    /// TLS on the reverse endpoint; with `client_ca`, internal gateways must present a client
    /// certificate signed by it (mutual TLS).
    pub tls: Option<TlsServer>,
}

/// One `[[service]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    /// The accept URI as written, for banners.
    pub accept: String,
    /// The connect URI as written, for banners.
    pub connect: String,
    pub role: ServiceRole,
}

/// What a service does, decided by its URI schemes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRole {
    Dmz(DmzService),
    Forward(ForwardService),
    Internal(InternalService),
}

/// accept = "tcp://IP:PORT", "tls://IP:PORT", "ws://IP:PORT/PATH" or "wss://IP:PORT/PATH",
/// connect = "reverse://BINDNAME"
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmzService {
    /// Public listener.
    pub listen: SocketAddr,
    /// `tls://`, `wss://`: public clients complete a TLS handshake with this before they are
    /// paired.
    pub tls: Option<TlsServer>,
    /// `ws://`, `wss://`: public clients complete a WebSocket upgrade; the messages' payload is
    /// the tunnel's byte stream.
    pub ws: Option<WsAccept>,
    /// Longest a public client's TLS handshake plus WebSocket upgrade may take (`tls://`,
    /// `ws://`, `wss://`).
    pub handshake_timeout: Duration,
    /// Served by prepared connections bound under this name.
    pub bind_name: String,
    /// Longest a client waits for a prepared connection.
    pub timeout: Duration,
    /// Required of internal gateways binding this name (RFC 1929); `None`: no authentication.
    pub credentials: Option<Credentials>,
}

/// accept as a DMZ service, connect = "tcp://HOST:PORT", "tls://HOST:PORT", "ws://HOST:PORT/PATH"
/// or "wss://HOST:PORT/PATH": each client is relayed over a connection of its own to the
/// upstream, made after the client is accepted (a refusal resets the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardService {
    /// Public listener.
    pub listen: SocketAddr,
    /// `tls://`, `wss://` accept: the listener's certificate.
    pub tls: Option<TlsServer>,
    /// `ws://`, `wss://` accept: the upgrade clients complete.
    pub ws: Option<WsAccept>,
    /// Longest a client's TLS handshake plus WebSocket upgrade may take.
    pub handshake_timeout: Duration,
    pub upstream: UpstreamConfig,
}

/// A WebSocket listener's settings (`accept = "ws://…"` or `"wss://…"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsAccept {
    /// Request path this service answers (from the URI; `/` when it has none). Services on one
    /// address are told apart by it; query strings are ignored when routing.
    pub path: String,
    /// `origins`: allowed `Origin` header values; empty: any (or none).
    pub origins: Vec<String>,
    /// `protocols`: subprotocols accepted; the first the client offers is chosen.
    pub protocols: Vec<String>,
    /// `ws_max_message`: largest message accepted from the client.
    pub max_message: usize,
    /// `ws_ping`: ping after this long without a byte from the client; close when nothing at
    /// all arrives within as long again.
    pub ping: Option<Duration>,
}

/// Where a forwarding service connects, resolved at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// As written in `connect`.
    pub target: HostPort,
    /// `target` resolved (the first address).
    pub addr: SocketAddr,
    /// `tls://`, `wss://` (`connect_tls`).
    pub tls: Option<TlsClient>,
    /// Longest the TCP connect may take.
    pub connect_timeout: Duration,
    /// `ws://`, `wss://`: the upgrade request sent (client frames are masked).
    pub ws: Option<WsConnect>,
}

/// A WebSocket client leg's settings (`connect = "ws://…"` or `"wss://…"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConnect {
    /// `Host` header: `HOST:PORT` as written in the URI.
    pub host: String,
    /// Request path (from the URI; `/` when it has none), query string included.
    pub path: String,
    /// `ws_max_message`: largest message accepted from the upstream.
    pub max_message: usize,
    /// `ws_ping`: keepalive toward the upstream, as [`WsAccept::ping`].
    pub ping: Option<Duration>,
}

/// accept = "reverse://HOST:PORT/BINDNAME", connect = "tcp://HOST:PORT", "tls://HOST:PORT",
/// "ws://HOST:PORT/PATH" or "wss://HOST:PORT/PATH"
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalService {
    /// The DMZ's reverse endpoint this gateway dials out to.
    pub dmz: HostPort,
    /// The name sent in the SOCKS5 BIND request.
    pub bind_name: String,
    /// The back-end.
    pub target: HostPort,
    /// Connections kept parked at the DMZ.
    pub prepared: usize,
    /// Cap of the reconnect backoff.
    pub retry_max: Duration,
    /// Longest a connect to the back-end may take.
    pub connect_timeout: Duration,
    /// Sent to the DMZ (RFC 1929); `None`: no authentication.
    pub credentials: Option<Credentials>,
    /// TLS on the reverse leg to the DMZ (`tls`): verifies the DMZ's certificate and presents
    /// ours. The handshake runs within `connect_timeout`.
    pub tls: Option<TlsClient>,
    /// TLS to the back-end (`connect = "tls://…"` or `"wss://…"`, `connect_tls`).
    pub target_tls: Option<TlsClient>,
    /// `connect = "ws://…"` or `"wss://…"`: the back-end speaks WebSocket; each tunnel's bytes
    /// travel as binary messages after an upgrade request.
    pub target_ws: Option<WsConnect>,
}

/// A host name or IP literal with a port; not resolved here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP literal, IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// RFC 1929 user name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// A secret string: `Debug` prints `MASKED`, there is no `Display`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// A configuration error: the file, the key (`service[echo].accept`) and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl Config {
    /// Reads, parses and validates `path`. An unreadable file is reported with key `(file)`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        // Untyped first: separates syntax errors from schema errors, and gives the service names
        // used to label keys when the typed pass fails.
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: e
                .span()
                .map_or_else(|| "(toml)".to_string(), |s| line_column(text, s.start)),
            reason: e.message().trim().to_string(),
        })?;
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: e.span().map_or_else(
                || "(toml)".to_string(),
                |s| key_path_at(text, s.start, &labels_from_table(&table)),
            ),
            reason: schema_hint(e.message().trim()),
        })?;
        raw.path = path.to_path_buf();
        Config::try_from(raw)
    }

    /// One line per service, "name: accept -> connect" (used by `sallyport check` and the
    /// start-up banner), followed by " (tls)" when the service's reverse leg (DMZ to internal
    /// gateway) runs over TLS, or, for a forwarding service whose upstream is a host name, by
    /// the address it resolved to: " (resolved to 10.0.0.5:80)".
    pub fn describe(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| {
                let suffix = match &s.role {
                    ServiceRole::Dmz(_)
                        if self.reverse.as_ref().is_some_and(|r| r.tls.is_some()) =>
                    {
                        " (tls)".to_string()
                    }
                    ServiceRole::Internal(i) if i.tls.is_some() => " (tls)".to_string(),
                    ServiceRole::Forward(f)
                        if f.upstream.target.host.parse::<IpAddr>().is_err() =>
                    {
                        format!(" (resolved to {})", f.upstream.addr)
                    }
                    _ => String::new(),
                };
                format!("{}: {} -> {}{suffix}", s.name, s.accept, s.connect)
            })
            .collect()
    }
}

/// One worker per core, capped at [`MAX_WORKERS`]; 1 if the core count is unknown.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_WORKERS)
}

// ---------------------------------------------------------------------------------------------
// Raw configuration (serde)
// ---------------------------------------------------------------------------------------------

/// The file as written: unknown keys rejected, nothing defaulted or checked yet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Set by [`Config::parse`]; not a key of the file.
    #[serde(skip)]
    pub path: PathBuf,
    pub gateway: Option<RawGateway>,
    pub reverse: Option<RawReverse>,
    pub service: Option<Vec<RawService>>,
}

/// `[gateway]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub workers: Option<i64>,
    pub admin: Option<String>,
    pub relay: Option<String>,
    pub pipe_size: Option<RawSize>,
    pub buffer_size: Option<RawSize>,
    pub cores: Option<Vec<i64>>,
    pub nodelay: Option<bool>,
    pub socket_buffer: Option<RawSize>,
    pub ring_setup: Option<String>,
    pub busy_poll: Option<RawDuration>,
}

/// `[reverse]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReverse {
    pub listen: Option<String>,
    pub handshake_timeout: Option<RawDuration>,
    pub tls: Option<RawTls>,
}

/// `[[service]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Option<String>,
    pub accept: Option<String>,
    pub connect: Option<String>,
    pub timeout: Option<RawDuration>,
    pub prepared: Option<i64>,
    pub retry_max: Option<RawDuration>,
    pub connect_timeout: Option<RawDuration>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// DMZ: the `tls://` listener's certificate; internal: the reverse leg to the DMZ.
    pub tls: Option<RawTls>,
    /// Internal, `connect = "tls://…"`: TLS to the back-end.
    pub connect_tls: Option<RawTls>,
    /// `accept = "tls://…"`, `"ws://…"`, `"wss://…"`: longest a public client's TLS handshake
    /// plus WebSocket upgrade may take.
    pub handshake_timeout: Option<RawDuration>,
    /// `ws://`, `wss://` (either side): keepalive interval.
    pub ws_ping: Option<RawDuration>,
    /// `ws://`, `wss://` (either side): largest message accepted.
    pub ws_max_message: Option<RawSize>,
    /// `accept = "ws://…"`, `"wss://…"`: allowed `Origin` values.
    pub origins: Option<Vec<String>>,
    /// `accept = "ws://…"`, `"wss://…"`: accepted subprotocols.
    pub protocols: Option<Vec<String>>,
}

/// A `tls` or `connect_tls` table as written. Which keys are valid depends on where it is
/// (checked in validation): servers take `cert`, `key`, `client_ca` (and `alpn` on a public
/// listener); clients take `ca`, `cert`, `key`, `server_name`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    /// A path, never the key itself.
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub ca: Option<String>,
    pub server_name: Option<String>,
}

impl RawTls {
    /// The keys present, in a fixed order.
    fn present(&self) -> Vec<&'static str> {
        [
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("client_ca", self.client_ca.is_some()),
            ("alpn", self.alpn.is_some()),
            ("ca", self.ca.is_some()),
            ("server_name", self.server_name.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, present)| present.then_some(k))
        .collect()
    }
}

/// A byte size as written: an integer, or a string such as `"1MiB"`, `"256KiB"`, `"4096"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size in bytes: an integer or a string such as \"1MiB\" or \"256KiB\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration as written (`"100ms"`, `"2s"`); parsed with `humantime` in validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"100ms\" or \"2s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Builds errors for one file.
struct Check {
    file: PathBuf,
}

impl Check {
    fn fail(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A path from the file: relative ones are relative to the config file's directory.
    fn path(&self, written: &str) -> PathBuf {
        match self.file.parent() {
            Some(dir) => dir.join(written),
            None => PathBuf::from(written),
        }
    }

    fn duration(
        &self,
        key: &str,
        raw: Option<&RawDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match raw {
            None => Ok(default),
            Some(RawDuration(text)) => parse_duration(text).map_err(|r| self.fail(key, r)),
        }
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let check = Check {
            file: raw.path.clone(),
        };
        let gateway = validate_gateway(&check, raw.gateway.unwrap_or_default())?;
        let reverse = raw
            .reverse
            .map(|r| validate_reverse(&check, r))
            .transpose()?;

        let raw_services = raw.service.unwrap_or_default();
        if raw_services.is_empty() {
            return Err(check.fail(
                "service",
                "no [[service]] tables; at least one service is required",
            ));
        }
        let prefixes: Vec<String> = service_labels(raw_services.iter().map(|s| s.name.as_deref()))
            .into_iter()
            .map(|label| format!("service[{label}]"))
            .collect();
        let mut services: Vec<ServiceConfig> = Vec::with_capacity(raw_services.len());
        for (raw_service, prefix) in raw_services.into_iter().zip(&prefixes) {
            let service = validate_service(&check, prefix, raw_service)?;
            if let Some(first) = services.iter().position(|s| s.name == service.name) {
                return Err(check.fail(
                    format!("{prefix}.name"),
                    format!(
                        "duplicate service name \"{}\"; already used by {}",
                        service.name, prefixes[first]
                    ),
                ));
            }
            services.push(service);
        }

        cross_check(&check, &gateway, reverse.as_ref(), &services, &prefixes)?;
        Ok(Config {
            path: raw.path,
            gateway,
            reverse,
            services,
        })
    }
}

fn validate_gateway(check: &Check, raw: RawGateway) -> Result<GatewayConfig, ConfigError> {
    let workers = match raw.workers {
        None => default_workers(),
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => n,
            _ => {
                return Err(check.fail(
                    "gateway.workers",
                    format!("must be between 1 and {MAX_WORKERS}, got {n}"),
                ))
            }
        },
    };
    let admin = raw
        .admin
        .as_deref()
        .map(parse_listen_addr)
        .transpose()
        .map_err(|r| check.fail("gateway.admin", r))?;
    let relay = match raw.relay.as_deref() {
        None => DEFAULT_RELAY,
        Some("splice") => RelayMode::Splice,
        Some("copy") => RelayMode::Copy,
        Some(other) => {
            return Err(check.fail(
                "gateway.relay",
                format!("unknown relay mode \"{other}\"; expected \"splice\" or \"copy\""),
            ))
        }
    };
    let pipe_size = size_in(
        check,
        "gateway.pipe_size",
        raw.pipe_size.as_ref(),
        DEFAULT_PIPE_SIZE,
        MIN_PIPE_SIZE,
        MAX_PIPE_SIZE,
    )?;
    let buffer_size = size_in(
        check,
        "gateway.buffer_size",
        raw.buffer_size.as_ref(),
        DEFAULT_BUFFER_SIZE,
        MIN_BUFFER_SIZE,
        MAX_BUFFER_SIZE,
    )?;
    let cores = match &raw.cores {
        None => None,
        Some(list) => {
            let mut cores = Vec::with_capacity(list.len());
            for &c in list {
                if !(0..MAX_WORKERS as i64).contains(&c) {
                    return Err(check.fail(
                        "gateway.cores",
                        format!(
                            "core ids must be between 0 and {}, got {c}",
                            MAX_WORKERS - 1
                        ),
                    ));
                }
                cores.push(c as usize);
            }
            Some(cores)
        }
    };
    let socket_buffer = match raw.socket_buffer.as_ref() {
        None => None,
        Some(_) => Some(size_in(
            check,
            "gateway.socket_buffer",
            raw.socket_buffer.as_ref(),
            0,
            MIN_SOCKET_BUFFER,
            MAX_SOCKET_BUFFER,
        )?),
    };
    let busy_poll = check.duration("gateway.busy_poll", raw.busy_poll.as_ref(), Duration::ZERO)?;
    if busy_poll > MAX_BUSY_POLL {
        return Err(check.fail(
            "gateway.busy_poll",
            format!("at most {MAX_BUSY_POLL:?}: a worker that polls longer only burns its core"),
        ));
    }
    let ring_setup = match raw.ring_setup.as_deref() {
        None => DEFAULT_RING_SETUP,
        Some("defer_taskrun") => RingSetup::DeferTaskrun,
        Some("coop_taskrun") => RingSetup::CoopTaskrun,
        Some("plain") => RingSetup::Plain,
        Some(other) => {
            return Err(check.fail(
                "gateway.ring_setup",
                format!(
                    "unknown ring setup \"{other}\"; expected \"defer_taskrun\", \"coop_taskrun\" or \"plain\""
                ),
            ))
        }
    };
    Ok(GatewayConfig {
        workers,
        admin,
        relay,
        pipe_size,
        buffer_size,
        cores,
        nodelay: raw.nodelay.unwrap_or(DEFAULT_NODELAY),
        socket_buffer,
        ring_setup,
        busy_poll,
    })
}

fn size_in(
    check: &Check,
    key: &str,
    raw: Option<&RawSize>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let bytes = parse_size(raw).map_err(|r| check.fail(key, r))?;
    match usize::try_from(bytes) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(check.fail(
            key,
            format!(
                "must be between {} and {} ({min}..={max} bytes), got {bytes} bytes",
                format_size(min),
                format_size(max)
            ),
        )),
    }
}

fn validate_reverse(check: &Check, raw: RawReverse) -> Result<ReverseConfig, ConfigError> {
    let listen = match raw.listen.as_deref() {
        None => {
            return Err(check.fail(
                "reverse.listen",
                "missing; [reverse] needs the address internal gateways dial in to, e.g. listen = \"0.0.0.0:1080\"",
            ))
        }
        Some(text) => parse_listen_addr(text).map_err(|r| check.fail("reverse.listen", r))?,
    };
    let handshake_timeout = check.duration(
        "reverse.handshake_timeout",
        raw.handshake_timeout.as_ref(),
        DEFAULT_HANDSHAKE_TIMEOUT,
    )?;
    let tls = raw
        .tls
        .map(|t| validate_tls_server(check, "reverse.tls", t, TlsServerRole::Reverse))
        .transpose()?;
    Ok(ReverseConfig {
        listen,
        handshake_timeout,
        tls,
    })
}

/// A required path key of a `tls` table: present and not empty.
fn tls_path(
    check: &Check,
    prefix: &str,
    field: &str,
    value: Option<String>,
    example: &str,
) -> Result<PathBuf, ConfigError> {
    match value.as_deref() {
        None => Err(check.fail(
            format!("{prefix}.{field}"),
            format!("missing; e.g. {prefix} = {{ {example} }}"),
        )),
        Some("") => Err(check.fail(format!("{prefix}.{field}"), "must not be empty")),
        Some(path) => Ok(check.path(path)),
    }
}

/// Rejects keys of a `tls` table that do not belong where it is.
fn tls_allowed(
    check: &Check,
    prefix: &str,
    raw: &RawTls,
    allowed: &[&str],
    what: &str,
) -> Result<(), ConfigError> {
    if let Some(field) = raw.present().into_iter().find(|f| !allowed.contains(f)) {
        return Err(check.fail(
            format!("{prefix}.{field}"),
            format!(
                "not a setting of {what} (allowed: {}); remove the key",
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

/// `[reverse] tls` or a `tls://` listener's `tls`: reads the files and builds the rustls server.
fn validate_tls_server(
    check: &Check,
    prefix: &str,
    raw: RawTls,
    role: TlsServerRole,
) -> Result<TlsServer, ConfigError> {
    let (allowed, what): (&[&str], &str) = match role {
        TlsServerRole::Reverse => (
            &["cert", "key", "client_ca"],
            "the reverse endpoint's TLS (ALPN applies to tls:// public listeners only)",
        ),
        TlsServerRole::Public => (
            &["cert", "key", "client_ca", "alpn"],
            "a tls:// listener (ca and server_name are client settings of internal services)",
        ),
    };
    tls_allowed(check, prefix, &raw, allowed, what)?;
    let example = "cert = \"dmz.pem\", key = \"dmz.key\"";
    let cert = tls_path(check, prefix, "cert", raw.cert, example)?;
    let key = tls_path(check, prefix, "key", raw.key, example)?;
    let client_ca = match raw.client_ca {
        None => None,
        Some(ca) => Some(tls_path(check, prefix, "client_ca", Some(ca), example)?),
    };
    let alpn = raw.alpn.unwrap_or_default();
    for protocol in &alpn {
        if !(1..=MAX_ALPN_LEN).contains(&protocol.len()) {
            return Err(check.fail(
                format!("{prefix}.alpn"),
                format!(
                    "protocol names are 1 to {MAX_ALPN_LEN} bytes (RFC 7301), got {:?}",
                    protocol
                ),
            ));
        }
    }
    TlsServer::load(&cert, &key, client_ca.as_deref(), &alpn, role)
        .map_err(|e| check.fail(format!("{prefix}.{}", e.field.key()), e.reason))
}

/// An internal service's `tls` (reverse leg) or `connect_tls` (back-end): reads the files and
/// builds the rustls client. `server_name` defaults to `default_host`.
fn validate_tls_client(
    check: &Check,
    prefix: &str,
    raw: RawTls,
    default_host: &str,
    what: &str,
) -> Result<TlsClient, ConfigError> {
    tls_allowed(
        check,
        prefix,
        &raw,
        &["ca", "cert", "key", "server_name"],
        what,
    )?;
    let example = "ca = \"ca.pem\", cert = \"internal.pem\", key = \"internal.key\"";
    let ca = tls_path(check, prefix, "ca", raw.ca, example)?;
    let identity = match (raw.cert, raw.key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(check.fail(
                format!("{prefix}.key"),
                "missing; cert is set, so the key of that certificate is needed too (set both or neither)",
            ))
        }
        (None, Some(_)) => {
            return Err(check.fail(
                format!("{prefix}.cert"),
                "missing; key is set, so its certificate is needed too (set both or neither)",
            ))
        }
        (Some(cert), Some(key)) => Some((
            tls_path(check, prefix, "cert", Some(cert), example)?,
            tls_path(check, prefix, "key", Some(key), example)?,
        )),
    };
    let name = raw.server_name.unwrap_or_else(|| default_host.to_string());
    let server_name = ServerName::try_from(name.clone())
        .ok()
        .filter(|_| !name.is_empty() && name.is_ascii())
        .ok_or_else(|| {
            check.fail(
                format!("{prefix}.server_name"),
                format!("\"{name}\" is not a DNS name or IP address"),
            )
        })?;
    TlsClient::load(
        &ca,
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        server_name,
    )
    .map_err(|e| check.fail(format!("{prefix}.{}", e.field.key()), e.reason))
}

/// URI schemes this build serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Reverse,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Reverse => "reverse",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// TLS on the transport: `tls://`, `wss://`.
    fn is_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }

    /// WebSocket: `ws://`, `wss://`.
    fn is_ws(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// The first of `fields` that is present: an error built by `reason` from its name.
fn forbid(
    check: &Check,
    prefix: &str,
    fields: &[(&str, bool)],
    reason: impl Fn(&str) -> String,
) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(check.fail(format!("{prefix}.{field}"), reason(field))),
        None => Ok(()),
    }
}

/// The WebSocket settings that apply to either side (`ws_ping`, `ws_max_message`).
#[derive(Debug, Clone, Copy)]
struct WsCommon {
    max_message: usize,
    ping: Option<Duration>,
}

fn validate_service(
    check: &Check,
    prefix: &str,
    mut raw: RawService,
) -> Result<ServiceConfig, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");

    let name = match raw.name.take() {
        None => {
            return Err(check.fail(
                key("name"),
                "missing; every [[service]] needs a name, e.g. name = \"echo\"",
            ))
        }
        Some(name) => {
            validate_name(&name).map_err(|r| check.fail(key("name"), r))?;
            name
        }
    };
    let accept = raw.accept.take().ok_or_else(|| {
        check.fail(
            key("accept"),
            "missing; e.g. accept = \"tcp://0.0.0.0:9000\" (DMZ or forwarding), \
             accept = \"ws://0.0.0.0:8080/echo\" (WebSocket) or \
             accept = \"reverse://dmz.example.net:1080/echo\" (internal)",
        )
    })?;
    let connect = raw.connect.take().ok_or_else(|| {
        check.fail(
            key("connect"),
            "missing; e.g. connect = \"reverse://echo\" (DMZ) or \
             connect = \"tcp://10.0.0.5:7000\" (internal or forwarding)",
        )
    })?;
    let (accept_scheme, accept_rest) =
        split_scheme(&accept).map_err(|r| check.fail(key("accept"), r))?;
    let (connect_scheme, connect_rest) =
        split_scheme(&connect).map_err(|r| check.fail(key("connect"), r))?;

    // A combination that is not served at all, before any key is looked at.
    if (accept_scheme, connect_scheme) == (Scheme::Reverse, Scheme::Reverse) {
        return Err(check.fail(
            key("connect"),
            "reverse:// on both sides is not supported; a DMZ service is tcp:// (or tls://, ws://, wss://) -> reverse://NAME, \
             an internal service is reverse://HOST:PORT/NAME -> tcp:// (or tls://, ws://, wss://) HOST:PORT",
        ));
    }

    // WebSocket keys: only where a WebSocket leg is.
    if !accept_scheme.is_ws() && !connect_scheme.is_ws() {
        forbid(
            check,
            prefix,
            &[
                ("ws_ping", raw.ws_ping.is_some()),
                ("ws_max_message", raw.ws_max_message.is_some()),
            ],
            |field| {
                format!(
                    "{field} applies only to WebSocket legs (accept or connect = \"ws://...\" or \"wss://...\"); \
                     this service is {}:// -> {}://; remove the key",
                    accept_scheme.as_str(),
                    connect_scheme.as_str()
                )
            },
        )?;
    }
    if !accept_scheme.is_ws() {
        forbid(
            check,
            prefix,
            &[
                ("origins", raw.origins.is_some()),
                ("protocols", raw.protocols.is_some()),
            ],
            |field| {
                format!(
                    "{field} applies only to WebSocket listeners (accept = \"ws://IP:PORT/PATH\" or \
                     \"wss://...\"); this accept is {}://; remove the key",
                    accept_scheme.as_str()
                )
            },
        )?;
    }
    let ws_ping = match raw.ws_ping.as_ref() {
        None => None,
        Some(d) => {
            let ping = check.duration(&key("ws_ping"), Some(d), Duration::ZERO)?;
            if ping < MIN_WS_PING {
                return Err(check.fail(
                    key("ws_ping"),
                    format!(
                        "at least {MIN_WS_PING:?}: a keepalive this frequent is traffic; write e.g. \"30s\""
                    ),
                ));
            }
            Some(ping)
        }
    };
    let ws = WsCommon {
        max_message: size_in(
            check,
            &key("ws_max_message"),
            raw.ws_max_message.as_ref(),
            DEFAULT_WS_MAX_MESSAGE,
            MIN_WS_MAX_MESSAGE,
            MAX_WS_MAX_MESSAGE,
        )?,
        ping: ws_ping,
    };

    let credentials = validate_credentials(check, prefix, raw.user.take(), raw.password.take())?;

    let role = match (accept_scheme, connect_scheme) {
        (_, Scheme::Reverse) => {
            forbid(
                check,
                prefix,
                &[
                    ("prepared", raw.prepared.is_some()),
                    ("retry_max", raw.retry_max.is_some()),
                    ("connect_timeout", raw.connect_timeout.is_some()),
                    ("connect_tls", raw.connect_tls.is_some()),
                ],
                |field| {
                    format!(
                        "{field} applies only to internal services (accept = \"reverse://HOST:PORT/NAME\"); \
                         this is a DMZ service (accept = \"{}://...\", connect = \"reverse://...\"); remove the key",
                        accept_scheme.as_str()
                    )
                },
            )?;
            let listener = validate_listener(
                check,
                prefix,
                accept_scheme,
                accept_rest,
                &accept,
                &mut raw,
                ws,
                ListenerOf::Dmz,
            )?;
            let bind_name =
                parse_dmz_bind_name(connect_rest).map_err(|r| check.fail(key("connect"), r))?;
            let timeout = check.duration(&key("timeout"), raw.timeout.as_ref(), DEFAULT_TIMEOUT)?;
            ServiceRole::Dmz(DmzService {
                listen: listener.listen,
                tls: listener.tls,
                ws: listener.ws,
                handshake_timeout: listener.handshake_timeout,
                bind_name,
                timeout,
                credentials,
            })
        }
        (Scheme::Reverse, _) => {
            if raw.timeout.is_some() {
                return Err(check.fail(
                    key("timeout"),
                    "timeout applies only to DMZ services (connect = \"reverse://NAME\"); \
                     this is an internal service; for the back-end connect limit use connect_timeout",
                ));
            }
            if raw.handshake_timeout.is_some() {
                return Err(check.fail(
                    key("handshake_timeout"),
                    "handshake_timeout applies only to public listeners (accept = \"tls://...\", \"ws://...\", \"wss://...\"); \
                     an internal service's TLS handshakes run within connect_timeout",
                ));
            }
            let (dmz, bind_name) =
                parse_reverse_accept(accept_rest).map_err(|r| check.fail(key("accept"), r))?;
            let (target, path) = parse_target_uri(connect_scheme, connect_rest)
                .map_err(|r| check.fail(key("connect"), r))?;
            let target_ws = path.map(|path| ws_connect(connect_rest, path, &ws));
            let prepared = match raw.prepared {
                None => DEFAULT_PREPARED,
                Some(n) => match usize::try_from(n) {
                    Ok(n) if (1..=MAX_PREPARED).contains(&n) => n,
                    _ => {
                        return Err(check.fail(
                            key("prepared"),
                            format!("must be between 1 and {MAX_PREPARED}, got {n}"),
                        ))
                    }
                },
            };
            let retry_max =
                check.duration(&key("retry_max"), raw.retry_max.as_ref(), DEFAULT_RETRY_MAX)?;
            let connect_timeout = check.duration(
                &key("connect_timeout"),
                raw.connect_timeout.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
            )?;
            let tls = raw
                .tls
                .take()
                .map(|t| {
                    validate_tls_client(
                        check,
                        &key("tls"),
                        t,
                        &dmz.host,
                        "an internal service's tls (the reverse leg to the DMZ)",
                    )
                })
                .transpose()?;
            let target_tls = validate_connect_tls(
                check,
                prefix,
                connect_scheme,
                &connect,
                raw.connect_tls.take(),
                &target,
                " (the reverse leg's TLS is tls)",
            )?;
            ServiceRole::Internal(InternalService {
                dmz,
                bind_name,
                target,
                prepared,
                retry_max,
                connect_timeout,
                credentials,
                tls,
                target_tls,
                target_ws,
            })
        }
        _ => {
            forbid(
                check,
                prefix,
                &[
                    ("prepared", raw.prepared.is_some()),
                    ("retry_max", raw.retry_max.is_some()),
                ],
                |field| {
                    format!(
                        "{field} applies only to internal services (accept = \"reverse://HOST:PORT/NAME\"); \
                         this is a forwarding service ({}:// -> {}://), which connects upstream once per \
                         client and keeps no prepared connections; remove the key",
                        accept_scheme.as_str(),
                        connect_scheme.as_str()
                    )
                },
            )?;
            if raw.timeout.is_some() {
                return Err(check.fail(
                    key("timeout"),
                    "timeout applies only to DMZ services (connect = \"reverse://NAME\"): how long a client \
                     waits for a prepared connection; a forwarding service connects upstream per client, \
                     limited by connect_timeout",
                ));
            }
            if credentials.is_some() {
                return Err(check.fail(
                    key("user"),
                    "user and password apply only to reverse:// services (SOCKS5 authentication between \
                     gateways); a forwarding service has no reverse leg; remove them",
                ));
            }
            let listener = validate_listener(
                check,
                prefix,
                accept_scheme,
                accept_rest,
                &accept,
                &mut raw,
                ws,
                ListenerOf::Forward,
            )?;
            let upstream = validate_upstream(
                check,
                prefix,
                connect_scheme,
                connect_rest,
                &connect,
                &mut raw,
                ws,
            )?;
            ServiceRole::Forward(ForwardService {
                listen: listener.listen,
                tls: listener.tls,
                ws: listener.ws,
                handshake_timeout: listener.handshake_timeout,
                upstream,
            })
        }
    };
    Ok(ServiceConfig {
        name,
        accept,
        connect,
        role,
    })
}

/// A validated public listener (DMZ or forwarding service).
struct Listener {
    listen: SocketAddr,
    tls: Option<TlsServer>,
    ws: Option<WsAccept>,
    handshake_timeout: Duration,
}

/// Whose public listener is validated (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerOf {
    Dmz,
    Forward,
}

impl ListenerOf {
    fn name(self) -> &'static str {
        match self {
            ListenerOf::Dmz => "DMZ",
            ListenerOf::Forward => "forwarding",
        }
    }

    /// Where TLS on the service's other leg is configured.
    fn other_tls(self) -> &'static str {
        match self {
            ListenerOf::Dmz => "TLS toward internal gateways is [reverse] tls",
            ListenerOf::Forward => {
                "TLS toward the upstream is connect_tls with connect = \"tls://...\""
            }
        }
    }
}

/// `accept = "tcp|tls|ws|wss://…"` with its `tls`, `handshake_timeout`, `origins` and
/// `protocols` keys.
#[allow(clippy::too_many_arguments)]
fn validate_listener(
    check: &Check,
    prefix: &str,
    scheme: Scheme,
    rest: &str,
    accept: &str,
    raw: &mut RawService,
    ws: WsCommon,
    of: ListenerOf,
) -> Result<Listener, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let (listen, path) =
        parse_listen_uri(scheme, rest).map_err(|r| check.fail(key("accept"), r))?;
    let tls = match (scheme.is_tls(), raw.tls.take()) {
        (true, None) => {
            return Err(check.fail(
                key("tls"),
                format!(
                    "missing; accept = \"{accept}\" needs the listener's certificate, \
                     e.g. tls = {{ cert = \"dmz.pem\", key = \"dmz.key\" }}"
                ),
            ))
        }
        (true, Some(raw_tls)) => {
            let tls = validate_tls_server(check, &key("tls"), raw_tls, TlsServerRole::Public)?;
            if scheme == Scheme::Wss {
                if let Some(other) = tls.alpn.iter().find(|p| *p != "http/1.1") {
                    return Err(check.fail(
                        key("tls.alpn"),
                        format!(
                            "a wss:// listener speaks HTTP/1.1 (the WebSocket upgrade of RFC 6455); \
                             alpn may list only \"http/1.1\", got \"{other}\""
                        ),
                    ));
                }
            }
            Some(tls)
        }
        (false, Some(_)) => {
            return Err(check.fail(
                key("tls"),
                format!(
                    "a tls table on a {} service is the certificate of a tls:// listener (or wss://), but \
                     accept is {}://; use accept = \"tls://IP:PORT\" (or \"wss://IP:PORT/PATH\") or remove tls \
                     ({})",
                    of.name(),
                    scheme.as_str(),
                    of.other_tls()
                ),
            ))
        }
        (false, None) => None,
    };
    let handshake_timeout = if scheme == Scheme::Tcp {
        if raw.handshake_timeout.is_some() {
            return Err(check.fail(
                key("handshake_timeout"),
                "handshake_timeout applies only to tls:// listeners and WebSocket listeners \
                 (ws://, wss://); this one is tcp://; remove the key",
            ));
        }
        DEFAULT_TLS_HANDSHAKE_TIMEOUT
    } else {
        check.duration(
            &key("handshake_timeout"),
            raw.handshake_timeout.as_ref(),
            DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        )?
    };
    let ws = match path {
        None => None,
        Some(path) => Some(WsAccept {
            path,
            origins: validate_origins(check, &key("origins"), raw.origins.take())?,
            protocols: validate_protocols(check, &key("protocols"), raw.protocols.take())?,
            max_message: ws.max_message,
            ping: ws.ping,
        }),
    };
    Ok(Listener {
        listen,
        tls,
        ws,
        handshake_timeout,
    })
}

/// A forwarding service's `connect = "tcp|tls|ws|wss://HOST:PORT[/PATH]"` with
/// `connect_timeout` and `connect_tls`; the host is resolved here.
fn validate_upstream(
    check: &Check,
    prefix: &str,
    scheme: Scheme,
    rest: &str,
    connect: &str,
    raw: &mut RawService,
    ws: WsCommon,
) -> Result<UpstreamConfig, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let (target, path) =
        parse_target_uri(scheme, rest).map_err(|r| check.fail(key("connect"), r))?;
    let connect_timeout = check.duration(
        &key("connect_timeout"),
        raw.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    let tls = validate_connect_tls(
        check,
        prefix,
        scheme,
        connect,
        raw.connect_tls.take(),
        &target,
        "",
    )?;
    let ws = path.map(|path| ws_connect(rest, path, &ws));
    let addr = resolve_upstream(&target).map_err(|r| check.fail(key("connect"), r))?;
    Ok(UpstreamConfig {
        target,
        addr,
        tls,
        connect_timeout,
        ws,
    })
}

/// The WebSocket client leg of `connect = "ws://REST"` (or `wss://`), `path` taken from it.
fn ws_connect(rest: &str, path: String, ws: &WsCommon) -> WsConnect {
    WsConnect {
        // As written: `[::1]:80` keeps its brackets, a name keeps its case.
        host: rest.split('/').next().unwrap_or(rest).to_string(),
        path,
        max_message: ws.max_message,
        ping: ws.ping,
    }
}

/// The first address `target` resolves to (IP literals need no resolver).
fn resolve_upstream(target: &HostPort) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let mut addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve upstream \"{}\": {e}", target.host))?;
    addrs
        .next()
        .ok_or_else(|| format!("upstream \"{}\" resolves to no address", target.host))
}

/// `connect_tls`: required with `connect = "tls://…"` or `"wss://…"`, refused otherwise.
fn validate_connect_tls(
    check: &Check,
    prefix: &str,
    scheme: Scheme,
    connect: &str,
    raw: Option<RawTls>,
    target: &HostPort,
    hint: &str,
) -> Result<Option<TlsClient>, ConfigError> {
    let key = format!("{prefix}.connect_tls");
    match (scheme.is_tls(), raw) {
        (true, Some(t)) => Ok(Some(validate_tls_client(
            check,
            &key,
            t,
            &target.host,
            "connect_tls (TLS to the back-end or upstream)",
        )?)),
        (true, None) => Err(check.fail(
            key,
            format!(
                "missing; connect = \"{connect}\" needs the back-end's CA, e.g. \
                 connect_tls = {{ ca = \"backend-ca.pem\" }} (server_name defaults to \"{}\")",
                target.host
            ),
        )),
        (false, Some(_)) => Err(check.fail(
            key,
            format!(
                "connect_tls applies only to connect = \"tls://HOST:PORT\" or \"wss://HOST:PORT/PATH\"; \
                 this connect is {}://; use tls:// (or wss://) or remove connect_tls{hint}",
                scheme.as_str()
            ),
        )),
        (false, None) => Ok(None),
    }
}

/// `origins`: serialized origins (`https://app.example.com`, `http://localhost:8080`) or `null`,
/// compared byte for byte with the `Origin` header browsers send.
fn validate_origins(
    check: &Check,
    key: &str,
    raw: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let origins = raw.unwrap_or_default();
    for (i, origin) in origins.iter().enumerate() {
        let reason = if origin == "null" {
            None
        } else if let Some((scheme, rest)) = origin.split_once("://") {
            if scheme.is_empty() || rest.is_empty() {
                Some("expected SCHEME://HOST[:PORT], e.g. \"https://app.example.com\"".to_string())
            } else if rest.contains('/') {
                Some(
                    "an origin has no path, not even a trailing '/'; browsers send e.g. \"https://app.example.com\""
                        .to_string(),
                )
            } else if origin.bytes().any(|b| !b.is_ascii_graphic()) {
                Some("an origin is ASCII without spaces (IDN hosts in punycode)".to_string())
            } else if origin.bytes().any(|b| b.is_ascii_uppercase()) {
                Some(format!(
                    "browsers send origins in lower case; write \"{}\"",
                    origin.to_ascii_lowercase()
                ))
            } else {
                None
            }
        } else {
            Some(
                "expected SCHEME://HOST[:PORT] (e.g. \"https://app.example.com\") or \"null\""
                    .to_string(),
            )
        };
        if let Some(reason) = reason {
            return Err(check.fail(key, format!("\"{origin}\": {reason}")));
        }
        if origins[..i].contains(origin) {
            return Err(check.fail(key, format!("\"{origin}\" is listed twice")));
        }
    }
    Ok(origins)
}

/// `protocols`: subprotocol names, HTTP tokens (RFC 6455 §4.1, RFC 7230 §3.2.6).
fn validate_protocols(
    check: &Check,
    key: &str,
    raw: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let protocols = raw.unwrap_or_default();
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    for (i, protocol) in protocols.iter().enumerate() {
        if protocol.is_empty() || !protocol.bytes().all(tchar) {
            return Err(check.fail(
                key,
                format!(
                    "\"{protocol}\" is not a subprotocol name; names are HTTP tokens: letters, digits \
                     and !#$%&'*+-.^_`|~, no spaces or commas"
                ),
            ));
        }
        if protocols[..i].contains(protocol) {
            return Err(check.fail(key, format!("\"{protocol}\" is listed twice")));
        }
    }
    Ok(protocols)
}

fn validate_credentials(
    check: &Check,
    prefix: &str,
    user: Option<String>,
    password: Option<Secret>,
) -> Result<Option<Credentials>, ConfigError> {
    let (user, password) = match (user, password) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(check.fail(
                format!("{prefix}.password"),
                "user is set but password is missing; set both or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(check.fail(
                format!("{prefix}.user"),
                "password is set but user is missing; set both or neither",
            ))
        }
        (Some(user), Some(password)) => (user, password),
    };
    for (field, len) in [("user", user.len()), ("password", password.expose().len())] {
        if !(1..=MAX_CREDENTIAL_LEN).contains(&len) {
            return Err(check.fail(
                format!("{prefix}.{field}"),
                format!("must be 1 to {MAX_CREDENTIAL_LEN} bytes (RFC 1929), got {len}"),
            ));
        }
    }
    Ok(Some(Credentials { user, password }))
}

/// A public listener as the overlap check sees it.
struct PublicListener<'a> {
    scheme: &'a str,
    tls: Option<&'a TlsServer>,
    ws: Option<&'a WsAccept>,
    handshake_timeout: Duration,
}

/// An address the file asks to listen on.
struct Listening<'a> {
    /// `gateway.admin`, `reverse.listen` or `service[NAME]`.
    owner: String,
    /// The key naming the address.
    key: String,
    addr: SocketAddr,
    public: Option<PublicListener<'a>>,
}

/// Checks that need the whole file: roles vs `[reverse]`, bind names, listener collisions and
/// shared WebSocket ports.
fn cross_check(
    check: &Check,
    gateway: &GatewayConfig,
    reverse: Option<&ReverseConfig>,
    services: &[ServiceConfig],
    labels: &[String],
) -> Result<(), ConfigError> {
    let mut listeners: Vec<Listening<'_>> = Vec::new();
    if let Some(admin) = gateway.admin {
        listeners.push(Listening {
            owner: "gateway.admin".to_string(),
            key: "gateway.admin".to_string(),
            addr: admin,
            public: None,
        });
    }
    if let Some(reverse) = reverse {
        listeners.push(Listening {
            owner: "reverse.listen".to_string(),
            key: "reverse.listen".to_string(),
            addr: reverse.listen,
            public: None,
        });
    }
    let mut bind_names: HashMap<&str, &str> = HashMap::new();
    let mut has_dmz = false;
    for (service, label) in services.iter().zip(labels) {
        let scheme = service.accept.split("://").next().unwrap_or("");
        let (listen, public) = match &service.role {
            ServiceRole::Internal(_) => continue,
            ServiceRole::Forward(f) => (
                f.listen,
                PublicListener {
                    scheme,
                    tls: f.tls.as_ref(),
                    ws: f.ws.as_ref(),
                    handshake_timeout: f.handshake_timeout,
                },
            ),
            ServiceRole::Dmz(dmz) => {
                has_dmz = true;
                if reverse.is_none() {
                    return Err(check.fail(
                        format!("{label}.connect"),
                        format!(
                            "connect = \"{}\" needs a [reverse] section (where internal gateways dial in), \
                             e.g. [reverse] listen = \"0.0.0.0:1080\"",
                            service.connect
                        ),
                    ));
                }
                if let Some(first) = bind_names.insert(&dmz.bind_name, label) {
                    return Err(check.fail(
                        format!("{label}.connect"),
                        format!(
                            "bind name \"{}\" is already served by {first}; each DMZ service needs its own",
                            dmz.bind_name
                        ),
                    ));
                }
                (
                    dmz.listen,
                    PublicListener {
                        scheme,
                        tls: dmz.tls.as_ref(),
                        ws: dmz.ws.as_ref(),
                        handshake_timeout: dmz.handshake_timeout,
                    },
                )
            }
        };
        listeners.push(Listening {
            owner: label.clone(),
            key: format!("{label}.accept"),
            addr: listen,
            public: Some(public),
        });
    }
    if reverse.is_some() && !has_dmz {
        return Err(check.fail(
            "reverse",
            "[reverse] is set but no service uses it (connect = \"reverse://NAME\"); \
             remove [reverse] or add a DMZ service",
        ));
    }
    for (i, this) in listeners.iter().enumerate() {
        for other in listeners[..i]
            .iter()
            .filter(|o| overlaps(o.addr, this.addr))
        {
            share_port(check, this, other)?;
        }
    }
    Ok(())
}

/// Two listeners on overlapping addresses: an error, unless both are WebSocket listeners on the
/// identical address that the data plane can serve from one socket (told apart by path).
fn share_port(
    check: &Check,
    this: &Listening<'_>,
    other: &Listening<'_>,
) -> Result<(), ConfigError> {
    let (addr, other_addr, owner) = (this.addr, other.addr, &other.owner);
    let overlap = format!("address {addr} overlaps {other_addr}, already used by {owner}");
    let (Some(a), Some(b)) = (&this.public, &other.public) else {
        return Err(check.fail(this.key.clone(), overlap));
    };
    let (Some(a_ws), Some(b_ws)) = (a.ws, b.ws) else {
        let hint = if a.ws.is_some() || b.ws.is_some() {
            " (a ws:// or wss:// listener shares its port only with other WebSocket services, told apart by path)"
        } else {
            ""
        };
        return Err(check.fail(this.key.clone(), format!("{overlap}{hint}")));
    };
    if addr != other_addr {
        return Err(check.fail(
            this.key.clone(),
            format!(
                "{overlap}; WebSocket services share a port only when they name the identical address \
                 (write {other_addr} in both)"
            ),
        ));
    }
    if a.tls.is_some() != b.tls.is_some() {
        return Err(check.fail(
            this.key.clone(),
            format!(
                "{}:// cannot share {addr} with {owner}, which is {}://: one listener either speaks TLS or not",
                a.scheme, b.scheme
            ),
        ));
    }
    if a_ws.path == b_ws.path {
        return Err(check.fail(
            this.key.clone(),
            format!(
                "path \"{}\" on {addr} is already served by {owner}; WebSocket services sharing an \
                 address need distinct paths",
                a_ws.path
            ),
        ));
    }
    if let (Some(a_tls), Some(b_tls)) = (a.tls, b.tls) {
        let show = |p: &Option<PathBuf>| {
            p.as_ref().map_or("none".to_string(), |p| {
                format!("{:?}", p.display().to_string())
            })
        };
        let differs = [
            (
                "cert",
                a_tls.cert != b_tls.cert,
                format!("{:?}", b_tls.cert.display().to_string()),
            ),
            (
                "key",
                a_tls.key != b_tls.key,
                format!("{:?}", b_tls.key.display().to_string()),
            ),
            (
                "client_ca",
                a_tls.client_ca != b_tls.client_ca,
                show(&b_tls.client_ca),
            ),
            (
                "alpn",
                a_tls.alpn != b_tls.alpn,
                format!("{:?}", b_tls.alpn),
            ),
        ];
        if let Some((field, _, theirs)) = differs.into_iter().find(|(_, differs, _)| *differs) {
            return Err(check.fail(
                format!("{}.tls.{field}", this.owner),
                format!(
                    "services sharing wss://{addr} share one listener and its TLS settings; {field} \
                     differs from {owner}'s ({theirs}); use the same tls table"
                ),
            ));
        }
    }
    if a.handshake_timeout != b.handshake_timeout {
        return Err(check.fail(
            format!("{}.handshake_timeout", this.owner),
            format!(
                "services sharing {addr} share one listener and its handshake limit; {owner} has {:?}, \
                 this one {:?}; set the same value (or leave both at the default)",
                b.handshake_timeout, a.handshake_timeout
            ),
        ));
    }
    Ok(())
}

/// Whether two listen addresses would take the same connections. Port 0 (ephemeral) never does.
/// The data plane binds with SO_REUSEPORT, so such a pair would bind without error and silently
/// share or steal each other's clients.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (a, b) = (a.ip(), b.ip());
    let dual_stack_any = |ip: IpAddr| ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    a == b
        || dual_stack_any(a)
        || dual_stack_any(b)
        || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
}

/// The label of each service in keys: its name when valid and first of its kind, else its
/// 1-based position.
fn service_labels<'a>(names: impl Iterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    names
        .enumerate()
        .map(|(i, name)| match name {
            Some(name) if validate_name(name).is_ok() && !seen.contains(&name) => {
                seen.push(name);
                name.to_string()
            }
            _ => (i + 1).to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// Service and bind names: 1..=255 bytes of `[A-Za-z0-9._-]`.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid character {c:?} in \"{name}\"; names use only A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Splits `SCHEME://REST`, accepting only the schemes this build serves.
fn split_scheme(uri: &str) -> Result<(Scheme, &str), String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!(
            "\"{uri}\" is not a URI; expected SCHEME://ADDRESS, e.g. tcp://0.0.0.0:9000"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Ok((Scheme::Tcp, rest)),
        "tls" => Ok((Scheme::Tls, rest)),
        "ws" => Ok((Scheme::Ws, rest)),
        "wss" => Ok((Scheme::Wss, rest)),
        "reverse" => Ok((Scheme::Reverse, rest)),
        _ => Err(format!(
            "unknown scheme \"{scheme}://\" in \"{uri}\"; expected tcp://, tls://, ws://, wss:// or reverse://"
        )),
    }
}

/// Splits `ADDRESS[/PATH]`: the path (from the first `/`) only for `ws://` and `wss://`, where
/// it defaults to `/`; `form` is the expected shape for messages (`IP:PORT`, `HOST:PORT`).
fn split_path<'a>(
    scheme: Scheme,
    rest: &'a str,
    form: &str,
    routing: bool,
) -> Result<(&'a str, Option<String>), String> {
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if !scheme.is_ws() {
        if let Some(path) = path {
            return Err(format!(
                "unexpected path \"{path}\"; expected {}://{form} (paths belong to ws:// and wss://)",
                scheme.as_str()
            ));
        }
        return Ok((addr, None));
    }
    let path = path.unwrap_or("/");
    validate_ws_path(path, routing)?;
    Ok((addr, Some(path.to_string())))
}

/// A WebSocket request path as sent on the wire: visible ASCII, no fragment; a listener's
/// (`routing`) also has no query string, since routing ignores it.
fn validate_ws_path(path: &str, routing: bool) -> Result<(), String> {
    if path.len() > MAX_WS_PATH_LEN {
        return Err(format!(
            "path is {} bytes long; the limit is {MAX_WS_PATH_LEN}",
            path.len()
        ));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "invalid character {c:?} in path \"{path}\"; write it percent-encoded as clients send it"
        ));
    }
    if path.contains('#') {
        return Err(format!(
            "path \"{path}\" has a fragment ('#'); clients never send one"
        ));
    }
    if routing && path.contains('?') {
        return Err(format!(
            "path \"{path}\" has a query string; a listener is routed by path alone \
             (queries are ignored), so write the path without '?...'"
        ));
    }
    Ok(())
}

/// `tcp://IP:PORT`, `tls://IP:PORT`, `ws://IP:PORT[/PATH]` or `wss://IP:PORT[/PATH]` of a
/// public listener; the path (ws, wss) defaults to `/`.
fn parse_listen_uri(scheme: Scheme, rest: &str) -> Result<(SocketAddr, Option<String>), String> {
    let (addr, path) = split_path(scheme, rest, "IP:PORT", true)?;
    Ok((parse_listen_addr(addr)?, path))
}

/// `tcp://HOST:PORT`, `tls://HOST:PORT`, `ws://HOST:PORT[/PATH]` or `wss://HOST:PORT[/PATH]` of
/// a back-end or upstream; the path (ws, wss) defaults to `/`.
fn parse_target_uri(scheme: Scheme, rest: &str) -> Result<(HostPort, Option<String>), String> {
    let (addr, path) = split_path(scheme, rest, "HOST:PORT", false)?;
    Ok((parse_host_port(addr)?, path))
}

/// `reverse://BINDNAME` of a DMZ service.
fn parse_dmz_bind_name(rest: &str) -> Result<String, String> {
    if rest.is_empty() {
        return Err("missing bind name; expected reverse://NAME, e.g. reverse://echo".to_string());
    }
    if rest.contains([':', '/']) {
        return Err(format!(
            "\"{rest}\" is not a bind name; a DMZ service connects to reverse://NAME, \
             the name internal gateways BIND with (e.g. reverse://echo), not an address"
        ));
    }
    validate_name(rest).map_err(|r| format!("bind name {r}"))?;
    Ok(rest.to_string())
}

/// `reverse://HOST:PORT/BINDNAME` of an internal service.
fn parse_reverse_accept(rest: &str) -> Result<(HostPort, String), String> {
    let Some((addr, name)) = rest.split_once('/') else {
        return Err(format!(
            "missing bind name in \"reverse://{rest}\"; expected reverse://HOST:PORT/NAME"
        ));
    };
    let dmz = parse_host_port(addr)?;
    if name.is_empty() {
        return Err(format!(
            "missing bind name after \"reverse://{addr}/\"; expected reverse://HOST:PORT/NAME"
        ));
    }
    validate_name(name).map_err(|r| format!("bind name {r}"))?;
    Ok((dmz, name.to_string()))
}

/// `IP:PORT` (IPv6 in brackets), port 0 allowed: a listen address.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = split_host_port(text)?;
    port.parse::<u16>()
        .map_err(|_| format!("invalid port \"{port}\" in \"{text}\"; expected 0..=65535"))?;
    Err(format!(
        "\"{host}\" is not an IP address; listen addresses are IP literals with a port, \
         e.g. 0.0.0.0:9000 or [::]:9000"
    ))
}

/// `HOST:PORT` (IPv6 in brackets), port 1..=65535: a destination.
fn parse_host_port(text: &str) -> Result<HostPort, String> {
    let (host, port) = split_host_port(text)?;
    let port = match port.parse::<u16>() {
        Ok(0) => return Err(format!("port 0 in \"{text}\" is not a valid destination")),
        Ok(port) => port,
        Err(_) => {
            return Err(format!(
                "invalid port \"{port}\" in \"{text}\"; expected 1..=65535"
            ))
        }
    };
    let bracketed = text.starts_with('[');
    if bracketed {
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("\"{host}\" is not an IPv6 address"))?;
    } else if !is_host_name(host) {
        return Err(format!("\"{host}\" is not a valid host name or IP address"));
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// Splits `host:port` / `[v6]:port` without checking either part beyond presence.
fn split_host_port(text: &str) -> Result<(&str, &str), String> {
    if text.is_empty() {
        return Err("missing address; expected HOST:PORT".to_string());
    }
    if let Some(inner) = text.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("missing ']' in \"{text}\""));
        };
        return match after.strip_prefix(':') {
            Some(port) if !port.is_empty() => Ok((host, port)),
            _ if after.is_empty() || after == ":" => {
                Err(format!("missing port in \"{text}\"; expected [IPV6]:PORT"))
            }
            _ => Err(format!("unexpected \"{after}\" after ']' in \"{text}\"")),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("missing port in \"{text}\"; expected HOST:PORT"));
    };
    if host.contains(':') {
        return Err(format!(
            "IPv6 addresses must be in brackets, e.g. [::1]:7000; got \"{text}\""
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "missing host in \"{text}\"; write 0.0.0.0:PORT or [::]:PORT for all interfaces"
        ));
    }
    if port.is_empty() {
        return Err(format!("missing port in \"{text}\"; expected HOST:PORT"));
    }
    Ok((host, port))
}

/// RFC 1123 host name (IPv4 literals included): labels of 1..=63 `[A-Za-z0-9-]`, ≤ 253 bytes.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A humantime duration (`"100ms"`, `"2s"`, `"1m 30s"`), greater than zero, at most [`MAX_DURATION`].
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration \"{text}\": {e}; write e.g. \"100ms\" or \"2s\""))?;
    if d.is_zero() {
        return Err(format!("duration \"{text}\" must be greater than zero"));
    }
    if d > MAX_DURATION {
        return Err(format!("duration \"{text}\" is too long; the limit is 24h"));
    }
    Ok(d)
}

/// Bytes from an integer or a string: `"4096"`, `"4096B"`, `"256KiB"`, `"1MiB"`, `"1 GiB"`.
/// Decimal units (`KB`, `MB`) are refused as ambiguous.
fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(text) => text.trim(),
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = (&text[..digits_end], text[digits_end..].trim());
    if digits.is_empty() {
        return Err(format!(
            "invalid size \"{text}\"; expected e.g. 65536, \"256KiB\" or \"1MiB\""
        ));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "k" | "kb" | "m" | "mb" | "g" | "gb" => {
            return Err(format!(
                "ambiguous unit \"{unit}\" in \"{text}\"; use binary units KiB, MiB or GiB"
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit \"{unit}\" in \"{text}\"; use B, KiB, MiB or GiB"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("size \"{text}\" is too large"))
}

/// `1048576` → `1 MiB`, `1536` → `1536 B`.
fn format_size(bytes: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes & ((1 << shift) - 1) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

// ---------------------------------------------------------------------------------------------
// Locating toml errors
// ---------------------------------------------------------------------------------------------

/// toml's message, with a hint for the commonest slip: `[service]` written for `[[service]]`.
fn schema_hint(message: &str) -> String {
    if message.contains("expected a sequence") {
        format!("{message}; write [[service]] (an array of tables), not [service]")
    } else {
        message.to_string()
    }
}

/// `line L, column C` (1-based) of byte offset `pos`.
fn line_column(text: &str, pos: usize) -> String {
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// Service labels (see [`service_labels`]) from an untyped parse of the file.
fn labels_from_table(table: &toml::Table) -> Vec<String> {
    match table.get("service") {
        Some(toml::Value::Array(services)) => service_labels(
            services
                .iter()
                .map(|s| s.get("name").and_then(toml::Value::as_str)),
        ),
        _ => Vec::new(),
    }
}

/// The dotted key path (`service[echo].timeout`) of the key or value at byte offset `pos`,
/// found from the table headers above it and the `key =` on its line. Best effort: good for
/// the flat layout of sallyport files, coarser for inline tables and multi-line values.
fn key_path_at(text: &str, pos: usize, labels: &[String]) -> String {
    let before = text.get(..pos).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];

    let mut table: Vec<String> = Vec::new();
    let mut services = 0usize;
    let mut resolve = |header: Header| {
        if header.array && header.path == ["service"] {
            services += 1;
        }
        let mut path = header.path;
        if path.first().is_some_and(|p| p == "service") && services > 0 {
            let label = labels
                .get(services - 1)
                .cloned()
                .unwrap_or_else(|| services.to_string());
            path[0] = format!("service[{label}]");
        }
        path
    };
    for l in text[..line_start].lines() {
        if let Some(header) = parse_header(l) {
            table = resolve(header);
        }
    }
    if let Some(header) = parse_header(line) {
        return resolve(header).join(".");
    }
    if let Some(eq) = line.find('=') {
        table.extend(split_key(&line[..eq]));
    }
    if table.is_empty() {
        "(top level)".to_string()
    } else {
        table.join(".")
    }
}

/// A `[table]` or `[[array]]` header line.
struct Header {
    array: bool,
    path: Vec<String>,
}

fn parse_header(line: &str) -> Option<Header> {
    let line = line.trim();
    let (array, inner) = if let Some(rest) = line.strip_prefix("[[") {
        (true, rest.split_once("]]")?.0)
    } else {
        (false, line.strip_prefix('[')?.split_once(']')?.0)
    };
    let plausible = !inner.trim().is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"' | '\''));
    plausible.then(|| Header {
        array,
        path: split_key(inner),
    })
}

/// `a . "b" .c` → `["a", "b", "c"]` (no dots inside quoted keys in sallyport files).
fn split_key(key: &str) -> Vec<String> {
    key.split('.')
        .map(|part| part.trim().trim_matches(['"', '\'']).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    fn parse_ok(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(e) => panic!("expected a valid config, got: {e}"),
        }
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(config) => panic!("expected an error, got: {config:?}"),
            Err(e) => e,
        }
    }

    const DMZ_MIN: &str = r#"
        [reverse]
        listen = "0.0.0.0:1080"
        [[service]]
        name = "echo"
        accept = "tcp://0.0.0.0:9000"
        connect = "reverse://echo"
    "#;

    const INTERNAL_MIN: &str = r#"
        [[service]]
        name = "echo"
        accept = "reverse://dmz.example.net:1080/echo"
        connect = "tcp://10.0.0.5:7000"
    "#;

    fn dmz(config: &Config, i: usize) -> &DmzService {
        match &config.services[i].role {
            ServiceRole::Dmz(d) => d,
            other => panic!("expected a DMZ service, got {other:?}"),
        }
    }

    fn internal(config: &Config, i: usize) -> &InternalService {
        match &config.services[i].role {
            ServiceRole::Internal(s) => s,
            other => panic!("expected an internal service, got {other:?}"),
        }
    }

    #[test]
    fn dmz_example_parses_to_expected_values() {
        let path = Path::new("examples/dmz.toml");
        let config = Config::parse(path, include_str!("../../examples/dmz.toml")).unwrap();
        let expected = Config {
            path: path.to_path_buf(),
            gateway: GatewayConfig {
                workers: 2,
                admin: Some("127.0.0.1:9901".parse().unwrap()),
                relay: RelayMode::Splice,
                pipe_size: DEFAULT_PIPE_SIZE,
                buffer_size: DEFAULT_BUFFER_SIZE,
                cores: None,
                nodelay: true,
                socket_buffer: None,
                ring_setup: RingSetup::DeferTaskrun,
                busy_poll: Duration::ZERO,
            },
            reverse: Some(ReverseConfig {
                listen: "0.0.0.0:1080".parse().unwrap(),
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
                tls: None,
            }),
            services: vec![ServiceConfig {
                name: "echo".to_string(),
                accept: "tcp://0.0.0.0:9000".to_string(),
                connect: "reverse://echo".to_string(),
                role: ServiceRole::Dmz(DmzService {
                    listen: "0.0.0.0:9000".parse().unwrap(),
                    tls: None,
                    ws: None,
                    handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                    bind_name: "echo".to_string(),
                    timeout: Duration::from_secs(2),
                    credentials: None,
                }),
            }],
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn internal_example_parses_to_expected_values() {
        let path = Path::new("examples/internal.toml");
        let config = Config::parse(path, include_str!("../../examples/internal.toml")).unwrap();
        let expected = Config {
            path: path.to_path_buf(),
            gateway: GatewayConfig::default(),
            reverse: None,
            services: vec![ServiceConfig {
                name: "echo".to_string(),
                accept: "reverse://dmz.example.net:1080/echo".to_string(),
                connect: "tcp://10.0.0.5:7000".to_string(),
                role: ServiceRole::Internal(InternalService {
                    dmz: HostPort {
                        host: "dmz.example.net".to_string(),
                        port: 1080,
                    },
                    bind_name: "echo".to_string(),
                    target: HostPort {
                        host: "10.0.0.5".to_string(),
                        port: 7000,
                    },
                    prepared: 4,
                    retry_max: Duration::from_secs(1),
                    connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                    credentials: None,
                    tls: None,
                    target_tls: None,
                    target_ws: None,
                }),
            }],
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn examples_load_from_disk() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let mut loaded = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Err(e) = Config::load(&path) {
                    panic!("{e}");
                }
                loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        loaded.sort();
        for name in ["dmz.toml", "internal.toml", "vpc-a.toml", "vpc-b.toml"] {
            assert!(loaded.iter().any(|l| l == name), "{name} not in {loaded:?}");
        }
    }

    #[test]
    fn defaults_are_applied() {
        let config = parse_ok(DMZ_MIN);
        assert_eq!(config.gateway, GatewayConfig::default());
        assert!((1..=MAX_WORKERS).contains(&config.gateway.workers));
        assert_eq!(config.gateway.admin, None);
        assert_eq!(config.gateway.relay, RelayMode::Splice);
        assert_eq!(config.gateway.pipe_size, 1 << 20);
        assert_eq!(config.gateway.buffer_size, 64 << 10);
        assert_eq!(
            config.reverse.as_ref().unwrap().handshake_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(dmz(&config, 0).timeout, Duration::from_secs(2));
        assert_eq!(dmz(&config, 0).credentials, None);

        let config = parse_ok(INTERNAL_MIN);
        let s = internal(&config, 0);
        assert_eq!(s.prepared, DEFAULT_PREPARED);
        assert_eq!(s.retry_max, DEFAULT_RETRY_MAX);
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.reverse, None);
    }

    #[test]
    fn explicit_values_are_used() {
        let config = parse_ok(
            r#"
            [gateway]
            workers = 1024
            admin = "[::1]:0"
            relay = "copy"
            pipe_size = "256KiB"
            buffer_size = 1024

            [reverse]
            listen = "[::]:1080"
            handshake_timeout = "750ms"

            [[service]]
            name = "web.v2_a-b"
            accept = "TCP://127.0.0.1:0"
            connect = "reverse://web"
            timeout = "1m 30s"
            user = "gw"
            password = "hunter2"

            [[service]]
            name = "back"
            accept = "reverse://[2001:db8::1]:1080/back"
            connect = "tcp://backend.internal:8080"
            prepared = 100000
            retry_max = "250ms"
            connect_timeout = "10s"
            user = "gw"
            password = "hunter2"
            "#,
        );
        let g = &config.gateway;
        assert_eq!(g.workers, 1024);
        assert_eq!(g.admin, Some("[::1]:0".parse().unwrap()));
        assert_eq!(g.relay, RelayMode::Copy);
        assert_eq!(g.pipe_size, 256 << 10);
        assert_eq!(g.buffer_size, 1024);
        let r = config.reverse.as_ref().unwrap();
        assert_eq!(r.listen, "[::]:1080".parse().unwrap());
        assert_eq!(r.handshake_timeout, Duration::from_millis(750));

        let d = dmz(&config, 0);
        assert_eq!(d.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(d.bind_name, "web");
        assert_eq!(d.timeout, Duration::from_secs(90));
        let creds = d.credentials.as_ref().unwrap();
        assert_eq!(creds.user, "gw");
        assert_eq!(creds.password.expose(), "hunter2");

        let i = internal(&config, 1);
        assert_eq!(i.dmz.host, "2001:db8::1");
        assert_eq!(i.dmz.to_string(), "[2001:db8::1]:1080");
        assert_eq!(i.bind_name, "back");
        assert_eq!(i.target.to_string(), "backend.internal:8080");
        assert_eq!(i.prepared, 100_000);
        assert_eq!(i.retry_max, Duration::from_millis(250));
        assert_eq!(i.connect_timeout, Duration::from_secs(10));
        assert!(i.credentials.is_some());
    }

    #[test]
    fn secrets_are_masked_in_debug() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "MASKED");
        assert_eq!(secret.expose(), "hunter2");

        let config = parse_ok(&INTERNAL_MIN.replace(
            "connect = ",
            "user = \"gw\"\npassword = \"s3cr3t-pa55\"\nconnect = ",
        ));
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-pa55"), "{debug}");
        assert!(debug.contains("MASKED"), "{debug}");
        let debug = format!(
            "{:#?}",
            toml::from_str::<RawConfig>("[[service]]\npassword = \"s3cr3t-pa55\"").unwrap()
        );
        assert!(!debug.contains("s3cr3t-pa55"), "{debug}");
    }

    #[test]
    fn describe_lists_one_line_per_service() {
        let config = parse_ok(include_str!("../../examples/dmz.toml"));
        assert_eq!(
            config.describe(),
            ["echo: tcp://0.0.0.0:9000 -> reverse://echo"]
        );
        let config = parse_ok(include_str!("../../examples/internal.toml"));
        assert_eq!(
            config.describe(),
            ["echo: reverse://dmz.example.net:1080/echo -> tcp://10.0.0.5:7000"]
        );
        let two = format!(
            "{DMZ_MIN}\n[[service]]\nname = \"ssh\"\naccept = \"tcp://127.0.0.1:2222\"\nconnect = \"reverse://ssh\""
        );
        assert_eq!(
            parse_ok(&two).describe(),
            [
                "echo: tcp://0.0.0.0:9000 -> reverse://echo",
                "ssh: tcp://127.0.0.1:2222 -> reverse://ssh"
            ]
        );
    }

    #[test]
    fn every_invalid_config_fails_with_its_expected_message() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/config/invalid");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 15, "only {} invalid configs", paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()))
                .trim();
            let err = match Config::load(&path) {
                Ok(_) => panic!(
                    "{}: parsed, but should fail with {expect:?}",
                    path.display()
                ),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(expect),
                "{}: {err:?} lacks {expect:?}",
                path.display()
            );
            let file_name = path.file_name().unwrap().to_str().unwrap();
            assert!(err.contains(file_name), "{err:?} lacks the file name");
        }
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = Config::load(Path::new("/nonexistent/sallyport.toml")).unwrap_err();
        assert_eq!(err.key, "(file)");
        assert!(err
            .to_string()
            .starts_with("/nonexistent/sallyport.toml: (file): "));
    }

    #[test]
    fn error_display_is_file_key_reason() {
        let err = parse_err(&DMZ_MIN.replace("0.0.0.0:1080", "0.0.0.0"));
        assert_eq!(err.key, "reverse.listen");
        assert_eq!(
            err.to_string(),
            format!("test.toml: reverse.listen: {}", err.reason)
        );
    }

    #[test]
    fn unknown_keys_are_located() {
        let err = parse_err(&format!("[gateway]\nworker = 2\n{DMZ_MIN}"));
        assert_eq!(err.key, "gateway.worker");
        assert!(
            err.reason.contains("unknown field `worker`"),
            "{}",
            err.reason
        );

        let err = parse_err(&format!("{DMZ_MIN}\ntiemout = \"2s\""));
        assert_eq!(err.key, "service[echo].tiemout");

        let err = parse_err(&format!("{DMZ_MIN}\n[[service]]\nbogus = 1"));
        assert_eq!(err.key, "service[2].bogus");

        let err = parse_err(&format!("{DMZ_MIN}\n[revers]\nlisten = \"0.0.0.0:1\""));
        assert_eq!(err.key, "revers");

        let err = parse_err(&format!("workers = 2\n{DMZ_MIN}"));
        assert_eq!(err.key, "workers");

        let err = parse_err(&format!("[gateway]\nworkers = \"two\"\n{DMZ_MIN}"));
        assert_eq!(err.key, "gateway.workers");

        let err = parse_err(&format!("{DMZ_MIN}\ntimeout = 2"));
        assert_eq!(err.key, "service[echo].timeout");
        assert!(err.reason.contains("duration string"), "{}", err.reason);
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let err = parse_err("[gateway]\nworkers = = 2\n");
        assert!(err.key.starts_with("line 2, column "), "{}", err.key);
    }

    #[test]
    fn services_are_labelled_by_position_without_a_valid_name() {
        let err = parse_err(&format!(
            "{INTERNAL_MIN}\n[[service]]\naccept = \"tcp://x\""
        ));
        assert_eq!(err.key, "service[2].name");
        let err = parse_err(&format!("{INTERNAL_MIN}\n{INTERNAL_MIN}"));
        assert_eq!(err.key, "service[2].name");
        assert!(err.reason.contains("duplicate"), "{}", err.reason);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
        assert!(parse_duration("25h").unwrap_err().contains("too long"));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("invalid duration"));
    }

    #[test]
    fn sizes_parse() {
        let text = |s: &str| parse_size(&RawSize::Text(s.to_string()));
        assert_eq!(parse_size(&RawSize::Bytes(4096)), Ok(4096));
        assert_eq!(text("4096"), Ok(4096));
        assert_eq!(text("4096B"), Ok(4096));
        assert_eq!(text("256KiB"), Ok(256 << 10));
        assert_eq!(text("1MiB"), Ok(1 << 20));
        assert_eq!(text("1 mib"), Ok(1 << 20));
        assert_eq!(text("2GiB"), Ok(2 << 30));
        assert!(text("1MB").unwrap_err().contains("binary units"));
        assert!(text("1.5MiB").is_err());
        assert!(text("MiB").is_err());
        assert!(text("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(text("16EiB").is_err());
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(1536), "1536 B");

        let gw = |line: &str| parse(&format!("[gateway]\n{line}\n{DMZ_MIN}"));
        assert_eq!(gw("pipe_size = 4096").unwrap().gateway.pipe_size, 4096);
        assert_eq!(
            gw("pipe_size = \"256MiB\"").unwrap().gateway.pipe_size,
            256 << 20
        );
        assert!(gw("pipe_size = 4095").is_err());
        assert!(gw("pipe_size = \"257MiB\"").is_err());
        assert_eq!(
            gw("buffer_size = \"64MiB\"").unwrap().gateway.buffer_size,
            64 << 20
        );
        assert!(gw("buffer_size = 1023").is_err());
        let err = gw("buffer_size = -1").unwrap_err();
        assert_eq!(err.key, "gateway.buffer_size");
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_host_port("[fe80::1]:7000").unwrap().to_string(),
            "[fe80::1]:7000"
        );
        assert_eq!(parse_host_port("db-1.lan:5432").unwrap().port, 5432);
        assert!(parse_host_port("fe80::1:7000")
            .unwrap_err()
            .contains("brackets"));
        assert!(parse_host_port("host")
            .unwrap_err()
            .contains("missing port"));
        assert!(parse_host_port("host:0").unwrap_err().contains("port 0"));
        assert!(parse_host_port("host:65536")
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_host_port("bad host:1").is_err());
        assert!(parse_host_port("[nope]:1").is_err());
        assert!(parse_host_port("[::1]")
            .unwrap_err()
            .contains("missing port"));
        assert!(parse_listen_addr("localhost:80")
            .unwrap_err()
            .contains("IP"));
        assert!(parse_listen_addr(":80")
            .unwrap_err()
            .contains("missing host"));
        assert_eq!(
            parse_listen_addr("0.0.0.0:0"),
            Ok("0.0.0.0:0".parse().unwrap())
        );
        assert!(parse_listen_uri(Scheme::Tcp, "0.0.0.0:80/")
            .unwrap_err()
            .contains("path"));
    }

    #[test]
    fn listener_overlap() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(overlaps(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(overlaps(a("[::]:80"), a("127.0.0.1:80")));
        assert!(!overlaps(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!overlaps(a("0.0.0.0:80"), a("[::1]:80")));
        assert!(!overlaps(a("0.0.0.0:80"), a("0.0.0.0:81")));
        assert!(!overlaps(a("0.0.0.0:0"), a("0.0.0.0:0")));

        // Two services on port 0 are fine; so is the admin port on another address.
        let text = format!(
            "[gateway]\nadmin = \"127.0.0.1:9000\"\n{}\n[[service]]\nname = \"b\"\naccept = \"tcp://127.0.0.1:0\"\nconnect = \"reverse://b\"",
            DMZ_MIN.replace("0.0.0.0:9000", "127.0.0.1:0")
        );
        parse_ok(&text);
        let err = parse_err(&format!("[gateway]\nadmin = \"127.0.0.1:1080\"\n{DMZ_MIN}"));
        assert_eq!(err.key, "reverse.listen");
    }

    #[test]
    fn mixed_roles_in_one_file() {
        let config = parse_ok(&format!(
            "{DMZ_MIN}\n{}",
            INTERNAL_MIN.replace("\"echo\"", "\"up\"")
        ));
        assert!(matches!(config.services[0].role, ServiceRole::Dmz(_)));
        assert!(matches!(config.services[1].role, ServiceRole::Internal(_)));
    }

    // -----------------------------------------------------------------------------------------
    // TLS: certificates generated into a temporary directory by the `sallyport certs` code.
    // -----------------------------------------------------------------------------------------

    /// A fresh directory holding `sallyport certs` output (CA, dmz, internal).
    fn cert_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sallyport-config-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let certs = crate::tls::dev_certs("dmz.example.net", 30).unwrap();
        crate::tls::write_dev_certs(&dir, &certs, false).unwrap();
        dir
    }

    /// Parses `text` as if it were `dir/test.toml` (relative paths resolve against `dir`).
    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse(&dir.join("test.toml"), text)
    }

    const DMZ_TLS: &str = r#"
        [reverse]
        listen = "127.0.0.1:0"
        tls = { cert = "dmz.pem", key = "dmz.key", client_ca = "ca.pem" }
        [[service]]
        name = "echo"
        accept = "tls://127.0.0.1:0"
        connect = "reverse://echo"
        tls = { cert = "dmz.pem", key = "dmz.key", alpn = ["h2", "http/1.1"] }
        handshake_timeout = "3s"
    "#;

    const INTERNAL_TLS: &str = r#"
        [[service]]
        name = "echo"
        accept = "reverse://dmz.example.net:1080/echo"
        connect = "tls://backend.internal:8443"
        tls = { ca = "ca.pem", cert = "internal.pem", key = "internal.key" }
        connect_tls = { ca = "ca.pem", server_name = "10.0.0.5" }
    "#;

    #[test]
    fn tls_configs_parse() {
        let dir = cert_dir("ok");
        let config = parse_in(&dir, DMZ_TLS).unwrap_or_else(|e| panic!("{e}"));
        let reverse_tls = config.reverse.as_ref().unwrap().tls.as_ref().unwrap();
        assert_eq!(reverse_tls.cert, dir.join("dmz.pem"));
        assert_eq!(reverse_tls.client_ca, Some(dir.join("ca.pem")));
        assert!(reverse_tls.mutual());
        assert_eq!(reverse_tls.config.current().send_tls13_tickets, 0);
        let d = dmz(&config, 0);
        let public = d.tls.as_ref().unwrap();
        assert_eq!(public.alpn, ["h2", "http/1.1"]);
        assert_eq!(
            public.config.current().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!public.mutual());
        assert_eq!(d.handshake_timeout, Duration::from_secs(3));
        assert_eq!(
            config.describe(),
            ["echo: tls://127.0.0.1:0 -> reverse://echo (tls)"]
        );

        let config = parse_in(&dir, INTERNAL_TLS).unwrap_or_else(|e| panic!("{e}"));
        let i = internal(&config, 0);
        let tls = i.tls.as_ref().unwrap();
        // server_name defaults to the DMZ host of the URI.
        assert_eq!(tls.server_name.to_str(), "dmz.example.net");
        assert_eq!(tls.cert, Some(dir.join("internal.pem")));
        let target_tls = i.target_tls.as_ref().unwrap();
        assert_eq!(target_tls.server_name.to_str(), "10.0.0.5");
        assert_eq!(target_tls.cert, None);
        assert_eq!(i.target.to_string(), "backend.internal:8443");
        assert_eq!(
            config.describe(),
            ["echo: reverse://dmz.example.net:1080/echo -> tls://backend.internal:8443 (tls)"]
        );

        // Absolute paths are used as written; connect_tls server_name defaults to the host.
        let mut abs = INTERNAL_TLS.replace(", server_name = \"10.0.0.5\"", "");
        for name in ["ca.pem", "internal.pem", "internal.key"] {
            abs = abs.replace(&format!("\"{name}\""), &format!("{:?}", dir.join(name)));
        }
        let config = Config::parse(Path::new("elsewhere/test.toml"), &abs).unwrap();
        let i = internal(&config, 0);
        assert_eq!(i.tls.as_ref().unwrap().ca, dir.join("ca.pem"));
        assert_eq!(
            i.target_tls.as_ref().unwrap().server_name.to_str(),
            "backend.internal"
        );
        // Without a client certificate (a DMZ without client_ca).
        let config = parse_in(
            &dir,
            &INTERNAL_MIN.replace(
                "connect = ",
                "tls = { ca = \"ca.pem\", server_name = \"127.0.0.1\" }\nconnect = ",
            ),
        )
        .unwrap();
        let tls = internal(&config, 0).tls.as_ref().unwrap();
        assert_eq!((tls.cert.as_ref(), tls.key.as_ref()), (None, None));
        assert_eq!(tls.server_name.to_str(), "127.0.0.1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_file_errors_name_the_key() {
        let dir = cert_dir("files");
        let err = parse_in(&dir, &DMZ_TLS.replacen("\"dmz.pem\"", "\"nope.pem\"", 1)).unwrap_err();
        assert_eq!(err.key, "reverse.tls.cert");
        assert_eq!(
            err.reason,
            format!(
                "cannot read \"{}\": No such file or directory",
                dir.join("nope.pem").display()
            )
        );
        // Relative to the config file's directory: "dmz.toml: ... \"dmz.pem\"".
        let err = Config::parse(
            Path::new("dmz.toml"),
            &DMZ_TLS.replacen("\"dmz.pem\"", "\"does-not-exist.pem\"", 1),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dmz.toml: reverse.tls.cert: cannot read \"does-not-exist.pem\": No such file or directory"
        );

        std::fs::write(
            dir.join("garbage.pem"),
            "-----BEGIN CERTIFICATE-----\n!!!\n",
        )
        .unwrap();
        std::fs::write(dir.join("junk.txt"), "not pem at all\n").unwrap();
        let err =
            parse_in(&dir, &DMZ_TLS.replacen("\"dmz.pem\"", "\"garbage.pem\"", 1)).unwrap_err();
        assert_eq!(err.key, "reverse.tls.cert");
        assert!(err.reason.contains("garbage.pem"), "{}", err.reason);
        let err = parse_in(&dir, &DMZ_TLS.replacen("\"dmz.key\"", "\"junk.txt\"", 1)).unwrap_err();
        assert_eq!(err.key, "reverse.tls.key");
        assert!(err.reason.contains("no private key"), "{}", err.reason);
        let err = parse_in(&dir, &DMZ_TLS.replace("\"ca.pem\"", "\"junk.txt\"")).unwrap_err();
        assert_eq!(err.key, "reverse.tls.client_ca");

        // A key that belongs to another certificate.
        let err = parse_in(
            &dir,
            &DMZ_TLS.replacen("\"dmz.key\"", "\"internal.key\"", 1),
        )
        .unwrap_err();
        assert_eq!(err.key, "reverse.tls.key");
        assert!(err.reason.contains("does not match"), "{}", err.reason);
        let service_tls = DMZ_TLS.replace(
            "tls = { cert = \"dmz.pem\", key = \"dmz.key\", alpn",
            "tls = { cert = \"dmz.pem\", key = \"ca.key\", alpn",
        );
        let err = parse_in(&dir, &service_tls).unwrap_err();
        assert_eq!(err.key, "service[echo].tls.key");
        let err = parse_in(
            &dir,
            &INTERNAL_TLS.replace("\"internal.key\"", "\"dmz.key\""),
        )
        .unwrap_err();
        assert_eq!(err.key, "service[echo].tls.key");
        assert!(err.reason.contains("does not match"), "{}", err.reason);
        let err = parse_in(
            &dir,
            &INTERNAL_TLS.replace(
                "connect_tls = { ca = \"ca.pem\"",
                "connect_tls = { ca = \"no.pem\"",
            ),
        )
        .unwrap_err();
        assert_eq!(err.key, "service[echo].connect_tls.ca");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_tables_must_fit_the_scheme_and_role() {
        let dir = cert_dir("shape");
        let service_tls_line =
            "\n        tls = { cert = \"dmz.pem\", key = \"dmz.key\", alpn = [\"h2\", \"http/1.1\"] }";
        let connect_tls_line =
            "\n        connect_tls = { ca = \"ca.pem\", server_name = \"10.0.0.5\" }";
        let cases = [
            // accept = tls:// without a tls table.
            (DMZ_TLS.replace(service_tls_line, ""), "service[echo].tls"),
            // A tls table on a tcp:// listener.
            (
                DMZ_TLS.replace("accept = \"tls://", "accept = \"tcp://"),
                "service[echo].tls",
            ),
            // connect_tls without connect = tls://.
            (
                INTERNAL_TLS.replace("connect = \"tls://", "connect = \"tcp://"),
                "service[echo].connect_tls",
            ),
            // connect = tls:// without connect_tls.
            (
                INTERNAL_TLS.replace(connect_tls_line, ""),
                "service[echo].connect_tls",
            ),
        ];
        for (text, key) in &cases {
            let err = parse_in(&dir, text).unwrap_err();
            assert_eq!(&err.key, key, "{err}");
        }
        let plain_dmz = DMZ_TLS
            .replace("accept = \"tls://", "accept = \"tcp://")
            .replace(service_tls_line, "");
        assert_eq!(
            parse_in(&dir, &plain_dmz).unwrap_err().key,
            "service[echo].handshake_timeout"
        );
        let err = parse_in(
            &dir,
            &INTERNAL_TLS.replace("connect_tls", "handshake_timeout = \"1s\"\nconnect_tls"),
        )
        .unwrap_err();
        assert_eq!(err.key, "service[echo].handshake_timeout");

        let bad = |text: &str| parse_in(&dir, text).unwrap_err();
        // Keys that belong elsewhere.
        let err = bad(&DMZ_TLS.replace("client_ca = \"ca.pem\"", "alpn = [\"h2\"]"));
        assert_eq!(err.key, "reverse.tls.alpn");
        let err = bad(&DMZ_TLS.replace("client_ca = \"ca.pem\"", "ca = \"ca.pem\""));
        assert_eq!(err.key, "reverse.tls.ca");
        let err = bad(&INTERNAL_TLS.replace(
            "key = \"internal.key\"",
            "key = \"internal.key\", client_ca = \"ca.pem\"",
        ));
        assert_eq!(err.key, "service[echo].tls.client_ca");
        // Required keys and pairs.
        let err = bad(&DMZ_TLS.replace("key = \"dmz.key\", client_ca", "client_ca"));
        assert_eq!(err.key, "reverse.tls.key");
        assert!(err.reason.starts_with("missing"), "{}", err.reason);
        let err = bad(&INTERNAL_TLS.replace(", key = \"internal.key\"", ""));
        assert_eq!(err.key, "service[echo].tls.key");
        let err = bad(&INTERNAL_TLS.replace("ca = \"ca.pem\", cert", "cert"));
        assert_eq!(err.key, "service[echo].tls.ca");
        let err = bad(
            &INTERNAL_TLS.replace("server_name = \"10.0.0.5\"", "server_name = \"not a name\"")
        );
        assert_eq!(err.key, "service[echo].connect_tls.server_name");
        let err = bad(&DMZ_TLS.replace("\"h2\", ", "\"\", "));
        assert_eq!(err.key, "service[echo].tls.alpn");
        let err = bad(&DMZ_TLS.replace(
            "cert = \"dmz.pem\", key = \"dmz.key\", client_ca",
            "cert = \"\", key = \"dmz.key\", client_ca",
        ));
        assert_eq!(err.key, "reverse.tls.cert");
        // Unknown keys are schema errors.
        let err = bad(&DMZ_TLS.replace("client_ca =", "client_cert ="));
        assert_eq!(err.key, "reverse.tls");
        assert!(
            err.reason.contains("unknown field `client_cert`"),
            "{}",
            err.reason
        );
        // A wss:// listener speaks HTTP/1.1: ALPN may offer nothing else.
        let err = bad(&DMZ_TLS.replace("accept = \"tls://", "accept = \"wss://"));
        assert_eq!(err.key, "service[echo].tls.alpn");
        assert!(err.reason.contains("\"h2\""), "{}", err.reason);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_debug_shows_paths_never_keys() {
        let dir = cert_dir("debug");
        let text = format!(
            "{DMZ_TLS}\nuser = \"gw\"\npassword = \"s3cr3t-pa55\"\n{}",
            INTERNAL_TLS.replace("\"echo\"", "\"up\"")
        );
        let config = parse_in(&dir, &text).unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{config:?} {config:#?}");
        for key in ["dmz.key", "internal.key"] {
            let pem = std::fs::read_to_string(dir.join(key)).unwrap();
            for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!debug.contains(line), "{key} material in Debug output");
            }
        }
        assert!(!debug.contains("PRIVATE KEY"));
        assert!(!debug.contains("s3cr3t-pa55"));
        assert!(debug.contains("MASKED"));
        assert!(debug.contains("dmz.key"), "the key's path is shown");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_examples_load_with_generated_certs() {
        // examples/tls/*.toml name certs/… next to them; `sallyport certs --out
        // examples/tls/certs` makes them. Here the certs go to a temp dir and the examples are
        // copied beside them.
        let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tls"));
        let dir =
            std::env::temp_dir().join(format!("sallyport-tls-examples-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let certs = crate::tls::dev_certs("localhost", 30).unwrap();
        crate::tls::write_dev_certs(&dir.join("certs"), &certs, false).unwrap();
        let mut loaded = 0;
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let copy = dir.join(path.file_name().unwrap());
            std::fs::copy(&path, &copy).unwrap();
            let config = Config::load(&copy).unwrap_or_else(|e| panic!("{e}"));
            // Every service has TLS somewhere: on the reverse leg (" (tls)") or, for a
            // forwarding service, on its listener or its upstream.
            for (service, line) in config.services.iter().zip(config.describe()) {
                let tls = match &service.role {
                    ServiceRole::Forward(f) => f.tls.is_some() || f.upstream.tls.is_some(),
                    _ => line.ends_with(" (tls)"),
                };
                assert!(tls, "{}: {line}", path.display());
            }
            loaded += 1;
        }
        assert!(loaded >= 4, "only {loaded} TLS examples");

        // The encrypted virtual private connection: A speaks wss:// to B's wss:// listener.
        let a = Config::load(&dir.join("vpc-a.toml")).unwrap();
        let ServiceRole::Forward(a) = &a.services[0].role else {
            panic!("vpc-a is a forwarding service");
        };
        let up = &a.upstream;
        assert_eq!(up.addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(up.tls.as_ref().unwrap().server_name.to_str(), "127.0.0.1");
        assert_eq!(up.ws.as_ref().unwrap().path, "/vpc");
        let b = Config::load(&dir.join("vpc-b.toml")).unwrap();
        let ServiceRole::Forward(b) = &b.services[0].role else {
            panic!("vpc-b is a forwarding service");
        };
        assert!(b.tls.is_some());
        assert_eq!(b.ws.as_ref().unwrap().path, "/vpc");
        assert_eq!(b.listen.port(), up.addr.port());
        let _ = std::fs::remove_dir_all(&dir);
    }

    // -----------------------------------------------------------------------------------------
    // WebSocket listeners and forwarding services
    // -----------------------------------------------------------------------------------------

    fn forward(config: &Config, i: usize) -> &ForwardService {
        match &config.services[i].role {
            ServiceRole::Forward(f) => f,
            other => panic!("expected a forwarding service, got {other:?}"),
        }
    }

    /// A file with one `[[service]]` per `(name, accept, connect, extra lines)`.
    fn services(list: &[(&str, &str, &str, &str)]) -> String {
        let mut text = String::new();
        if list
            .iter()
            .any(|(_, _, connect, _)| connect.starts_with("reverse://"))
        {
            text.push_str("[reverse]\nlisten = \"127.0.0.1:1080\"\n");
        }
        for (name, accept, connect, extra) in list {
            text.push_str(&format!(
                "[[service]]\nname = \"{name}\"\naccept = \"{accept}\"\nconnect = \"{connect}\"\n{extra}\n"
            ));
        }
        text
    }

    fn one(accept: &str, connect: &str, extra: &str) -> Result<Config, ConfigError> {
        parse(&services(&[("s", accept, connect, extra)]))
    }

    #[test]
    fn ws_dmz_service_parses_with_defaults_and_options() {
        let config = one("ws://127.0.0.1:8080/echo", "reverse://echo", "").unwrap();
        let d = dmz(&config, 0);
        assert_eq!(d.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(d.tls, None);
        assert_eq!(d.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
        assert_eq!(
            d.ws,
            Some(WsAccept {
                path: "/echo".to_string(),
                origins: Vec::new(),
                protocols: Vec::new(),
                max_message: DEFAULT_WS_MAX_MESSAGE,
                ping: None,
            })
        );
        assert_eq!(DEFAULT_WS_MAX_MESSAGE, 16 << 20);
        assert_eq!(
            config.describe(),
            ["s: ws://127.0.0.1:8080/echo -> reverse://echo"]
        );

        let config = one(
            "WS://[::1]:8080/a/b.c",
            "reverse://echo",
            r#"
            origins = ["https://app.example.com", "http://localhost:3000", "null"]
            protocols = ["binary", "v2.tunnel"]
            ws_ping = "30s"
            ws_max_message = "1MiB"
            handshake_timeout = "750ms"
            timeout = "3s"
            "#,
        )
        .unwrap();
        let d = dmz(&config, 0);
        let ws = d.ws.as_ref().unwrap();
        assert_eq!(ws.path, "/a/b.c");
        assert_eq!(
            ws.origins,
            ["https://app.example.com", "http://localhost:3000", "null"]
        );
        assert_eq!(ws.protocols, ["binary", "v2.tunnel"]);
        assert_eq!(ws.ping, Some(Duration::from_secs(30)));
        assert_eq!(ws.max_message, 1 << 20);
        assert_eq!(d.handshake_timeout, Duration::from_millis(750));
        assert_eq!(d.timeout, Duration::from_secs(3));

        // No path, or a bare '/', is the root path.
        for accept in ["ws://127.0.0.1:8080", "ws://127.0.0.1:8080/"] {
            let config = one(accept, "reverse://echo", "").unwrap();
            assert_eq!(dmz(&config, 0).ws.as_ref().unwrap().path, "/");
        }
    }

    #[test]
    fn forwarding_tcp_to_tcp_is_a_plain_proxy() {
        let config = one("tcp://127.0.0.1:0", "tcp://127.0.0.1:7000", "").unwrap();
        assert_eq!(config.reverse, None);
        let f = forward(&config, 0);
        assert_eq!(f.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!((f.tls.as_ref(), f.ws.as_ref()), (None, None));
        assert_eq!(
            f.upstream,
            UpstreamConfig {
                target: HostPort {
                    host: "127.0.0.1".to_string(),
                    port: 7000
                },
                addr: "127.0.0.1:7000".parse().unwrap(),
                tls: None,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                ws: None,
            }
        );
        assert_eq!(
            config.describe(),
            ["s: tcp://127.0.0.1:0 -> tcp://127.0.0.1:7000"]
        );
        let config = one(
            "tcp://127.0.0.1:0",
            "tcp://[::1]:7000",
            "connect_timeout = \"250ms\"",
        )
        .unwrap();
        let up = &forward(&config, 0).upstream;
        assert_eq!(up.addr, "[::1]:7000".parse().unwrap());
        assert_eq!(up.connect_timeout, Duration::from_millis(250));
    }

    #[test]
    fn forwarding_over_websocket_both_ways() {
        // Gateway A of a VPC: TCP in, WebSocket out.
        let config = one(
            "tcp://127.0.0.1:50505",
            "ws://127.0.0.1:8080/vpc",
            "ws_ping = \"30s\"\nws_max_message = \"64KiB\"",
        )
        .unwrap();
        let f = forward(&config, 0);
        assert_eq!(f.ws, None);
        let up = &f.upstream;
        assert_eq!(up.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            up.ws,
            Some(WsConnect {
                host: "127.0.0.1:8080".to_string(),
                path: "/vpc".to_string(),
                max_message: 64 << 10,
                ping: Some(Duration::from_secs(30)),
            })
        );
        // The Host header is HOST:PORT as written; the path may carry a query; default path /.
        let config = one("tcp://127.0.0.1:0", "ws://[::1]:80/t?k=v&x=1", "").unwrap();
        let ws = forward(&config, 0).upstream.ws.clone().unwrap();
        assert_eq!(
            (ws.host.as_str(), ws.path.as_str()),
            ("[::1]:80", "/t?k=v&x=1")
        );
        assert_eq!(ws.max_message, DEFAULT_WS_MAX_MESSAGE);
        let config = one("tcp://127.0.0.1:0", "ws://localhost:80", "").unwrap();
        let f = forward(&config, 0);
        assert_eq!(f.upstream.ws.as_ref().unwrap().host, "localhost:80");
        assert_eq!(f.upstream.ws.as_ref().unwrap().path, "/");
        assert!(f.upstream.addr.ip().is_loopback());
        assert_eq!(
            config.describe(),
            [format!(
                "s: tcp://127.0.0.1:0 -> ws://localhost:80 (resolved to {})",
                f.upstream.addr
            )]
        );

        // Gateway B: WebSocket in, TCP out; ws_ping applies to the listener then.
        let config = one(
            "ws://127.0.0.1:8080/vpc",
            "tcp://127.0.0.1:7000",
            "ws_ping = \"10s\"\nprotocols = [\"tunnel\"]",
        )
        .unwrap();
        let f = forward(&config, 0);
        let ws = f.ws.as_ref().unwrap();
        assert_eq!(
            (ws.path.as_str(), ws.ping),
            ("/vpc", Some(Duration::from_secs(10)))
        );
        assert_eq!(ws.protocols, ["tunnel"]);
        assert_eq!(f.upstream.ws, None);
        assert_eq!(f.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);

        // WebSocket on both sides: the options apply to both legs.
        let config = one(
            "ws://127.0.0.1:8080/in",
            "ws://127.0.0.1:9090/out",
            "ws_ping = \"5s\"",
        )
        .unwrap();
        let f = forward(&config, 0);
        assert_eq!(f.ws.as_ref().unwrap().ping, Some(Duration::from_secs(5)));
        assert_eq!(
            f.upstream.ws.as_ref().unwrap().ping,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn vpc_examples_parse_to_expected_values() {
        let a = Config::parse(
            Path::new("examples/vpc-a.toml"),
            include_str!("../../examples/vpc-a.toml"),
        )
        .unwrap();
        let f = forward(&a, 0);
        assert_eq!(f.listen, "127.0.0.1:50505".parse().unwrap());
        assert_eq!(f.upstream.addr, "127.0.0.1:8080".parse().unwrap());
        let ws = f.upstream.ws.as_ref().unwrap();
        assert_eq!(
            (ws.host.as_str(), ws.path.as_str()),
            ("127.0.0.1:8080", "/vpc")
        );
        assert_eq!(ws.ping, Some(Duration::from_secs(30)));
        assert_eq!(
            a.describe(),
            ["vpc: tcp://127.0.0.1:50505 -> ws://127.0.0.1:8080/vpc"]
        );
        let b = Config::parse(
            Path::new("examples/vpc-b.toml"),
            include_str!("../../examples/vpc-b.toml"),
        )
        .unwrap();
        let f = forward(&b, 0);
        assert_eq!(f.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(f.ws.as_ref().unwrap().path, "/vpc");
        assert_eq!(f.upstream.addr, "127.0.0.1:7000".parse().unwrap());
        // B's second service shares the port, told apart by path.
        assert_eq!(forward(&b, 1).listen, f.listen);
        assert_eq!(forward(&b, 1).ws.as_ref().unwrap().path, "/ssh");
        assert_eq!(
            b.describe(),
            [
                "vpc: ws://127.0.0.1:8080/vpc -> tcp://127.0.0.1:7000",
                "ssh: ws://127.0.0.1:8080/ssh -> tcp://127.0.0.1:22"
            ]
        );
    }

    #[test]
    fn forwarding_upstream_must_resolve() {
        let err = one("tcp://127.0.0.1:0", "tcp://nonexistent.invalid:80", "").unwrap_err();
        assert_eq!(err.key, "service[s].connect");
        assert!(
            err.reason
                .contains("cannot resolve upstream \"nonexistent.invalid\""),
            "{}",
            err.reason
        );
        let err = one("tcp://127.0.0.1:0", "ws://nonexistent.invalid:80/x", "").unwrap_err();
        assert_eq!(err.key, "service[s].connect");
        // Internal services resolve at each dial, not at load time.
        parse_ok(&INTERNAL_MIN.replace("10.0.0.5", "nonexistent.invalid"));
    }

    #[test]
    fn forwarding_rejects_keys_of_other_roles() {
        let cases = [
            ("prepared = 4", "service[s].prepared", "internal services"),
            (
                "retry_max = \"1s\"",
                "service[s].retry_max",
                "internal services",
            ),
            ("timeout = \"2s\"", "service[s].timeout", "connect_timeout"),
            (
                "user = \"gw\"\npassword = \"pw\"",
                "service[s].user",
                "no reverse leg",
            ),
            (
                "handshake_timeout = \"1s\"",
                "service[s].handshake_timeout",
                "tcp://",
            ),
            (
                "origins = [\"https://a.example\"]",
                "service[s].origins",
                "WebSocket listeners",
            ),
            (
                "protocols = [\"x\"]",
                "service[s].protocols",
                "WebSocket listeners",
            ),
            (
                "connect_tls = { ca = \"ca.pem\" }",
                "service[s].connect_tls",
                "applies only to",
            ),
            (
                "tls = { cert = \"a.pem\", key = \"a.key\" }",
                "service[s].tls",
                "forwarding service",
            ),
        ];
        for (extra, key, reason) in cases {
            let err = one("tcp://127.0.0.1:0", "ws://127.0.0.1:8080/x", extra).unwrap_err();
            assert_eq!(err.key, key, "{extra}: {err}");
            assert!(err.reason.contains(reason), "{extra}: {err}");
        }
        // connect = tls:// or wss:// needs connect_tls.
        for connect in ["tls://127.0.0.1:443", "wss://127.0.0.1:443/x"] {
            let err = one("tcp://127.0.0.1:0", connect, "").unwrap_err();
            assert_eq!(err.key, "service[s].connect_tls", "{err}");
            assert!(err.reason.starts_with("missing"), "{err}");
        }
        // accept = tls:// or wss:// needs the listener's certificate.
        for accept in ["tls://127.0.0.1:0", "wss://127.0.0.1:0/x"] {
            let err = one(accept, "tcp://127.0.0.1:7000", "").unwrap_err();
            assert_eq!(err.key, "service[s].tls", "{err}");
        }
        // Paths belong to WebSocket URIs only.
        let err = one("tcp://127.0.0.1:0", "tcp://127.0.0.1:7000/x", "").unwrap_err();
        assert_eq!(err.key, "service[s].connect");
        assert!(err.reason.contains("unexpected path"), "{err}");
    }

    #[test]
    fn websocket_keys_need_a_websocket_leg() {
        for (accept, connect) in [
            ("tcp://127.0.0.1:0", "reverse://s"),
            ("tcp://127.0.0.1:0", "tcp://127.0.0.1:7000"),
            ("reverse://127.0.0.1:1080/s", "tcp://127.0.0.1:7000"),
        ] {
            for (extra, key) in [
                ("ws_ping = \"30s\"", "service[s].ws_ping"),
                ("ws_max_message = \"1MiB\"", "service[s].ws_max_message"),
            ] {
                let err = one(accept, connect, extra).unwrap_err();
                assert_eq!(err.key, key, "{accept} {extra}: {err}");
                assert!(err.reason.contains("WebSocket legs"), "{err}");
            }
        }
        for extra in ["origins = []", "protocols = []"] {
            let err = one("tcp://127.0.0.1:0", "reverse://s", extra).unwrap_err();
            assert!(err.key.starts_with("service[s]."), "{err}");
            assert!(err.reason.contains("WebSocket listeners"), "{err}");
        }
        // On a DMZ service, the internal-only keys stay errors.
        let err = one(
            "ws://127.0.0.1:0/x",
            "reverse://s",
            "connect_timeout = \"1s\"",
        )
        .unwrap_err();
        assert_eq!(err.key, "service[s].connect_timeout");
    }

    #[test]
    fn internal_services_connect_over_websocket() {
        let config = one(
            "reverse://127.0.0.1:1080/s",
            "ws://10.0.0.5:80/tunnel?x=1",
            "ws_ping = \"20s\"\nws_max_message = \"1MiB\"",
        )
        .unwrap();
        let i = internal(&config, 0);
        let ws = i.target_ws.as_ref().expect("target_ws");
        assert_eq!(ws.host, "10.0.0.5:80");
        assert_eq!(ws.path, "/tunnel?x=1");
        assert_eq!(ws.ping, Some(Duration::from_secs(20)));
        assert_eq!(ws.max_message, 1 << 20);
        assert!(i.target_tls.is_none());
        // wss:// needs connect_tls, like a forwarding service's.
        let err = one("reverse://127.0.0.1:1080/s", "wss://10.0.0.5:443/", "").unwrap_err();
        assert_eq!(err.key, "service[s].connect_tls");
        // Listener-only keys stay refused.
        let err = one(
            "reverse://127.0.0.1:1080/s",
            "ws://10.0.0.5:80/",
            "origins = [\"https://a.example\"]",
        )
        .unwrap_err();
        assert_eq!(err.key, "service[s].origins");
    }

    #[test]
    fn websocket_values_are_checked() {
        let bad =
            |accept: &str, connect: &str, extra: &str| one(accept, connect, extra).unwrap_err();
        let ws = "ws://127.0.0.1:0/x";
        let up = "tcp://127.0.0.1:7000";
        // ws_max_message: 64 KiB ..= 1 GiB.
        let err = bad(ws, up, "ws_max_message = 65535");
        assert_eq!(err.key, "service[s].ws_max_message");
        assert!(err.reason.contains("64 KiB"), "{err}");
        assert!(one(ws, up, "ws_max_message = 65536").is_ok());
        assert!(one(ws, up, "ws_max_message = \"1GiB\"").is_ok());
        assert_eq!(
            bad(ws, up, "ws_max_message = \"2GiB\"").key,
            "service[s].ws_max_message"
        );
        // ws_ping: a duration of at least 100ms.
        let err = bad(ws, up, "ws_ping = \"30ms\"");
        assert_eq!(err.key, "service[s].ws_ping");
        assert!(one(ws, up, "ws_ping = \"100ms\"").is_ok());
        assert_eq!(bad(ws, up, "ws_ping = \"0s\"").key, "service[s].ws_ping");
        assert_eq!(bad(ws, up, "ws_ping = 30").key, "service[s].ws_ping");
        // origins: serialized origins, as browsers send them.
        for (origin, reason) in [
            ("https://a.example/", "no path"),
            ("https://A.example", "lower case"),
            ("a.example", "SCHEME://HOST"),
            ("https://", "SCHEME://HOST"),
            ("https://a b", "without spaces"),
        ] {
            let err = bad(ws, up, &format!("origins = [\"{origin}\"]"));
            assert_eq!(err.key, "service[s].origins", "{origin}");
            assert!(err.reason.contains(reason), "{origin}: {err}");
        }
        let err = bad(
            ws,
            up,
            "origins = [\"https://a.example\", \"https://a.example\"]",
        );
        assert!(err.reason.contains("twice"), "{err}");
        // protocols: HTTP tokens.
        for protocol in ["", "a b", "a,b", "\\u00e9"] {
            let err = bad(ws, up, &format!("protocols = [\"{protocol}\"]"));
            assert_eq!(err.key, "service[s].protocols", "{protocol:?}");
        }
        assert!(bad(ws, up, "protocols = [\"x\", \"x\"]")
            .reason
            .contains("twice"));
        // Paths: as sent on the wire, no fragment; no query on a listener (routing ignores it).
        for (accept, reason) in [
            ("ws://127.0.0.1:0/a?b=1", "query string"),
            ("ws://127.0.0.1:0/a#b", "fragment"),
            ("ws://127.0.0.1:0/a b", "invalid character"),
            ("ws://127.0.0.1:0/\\u00e9", "percent-encoded"),
        ] {
            let err = bad(accept, up, "");
            assert_eq!(err.key, "service[s].accept", "{accept}");
            assert!(err.reason.contains(reason), "{accept}: {err}");
        }
        let long = format!("ws://127.0.0.1:0/{}", "a".repeat(MAX_WS_PATH_LEN));
        assert!(bad(&long, up, "").reason.contains("limit"));
        let err = bad("tcp://127.0.0.1:0", "ws://127.0.0.1:80/a#b", "");
        assert_eq!(err.key, "service[s].connect");
        // Listen addresses stay IP literals; connect needs a port.
        assert_eq!(bad("ws://localhost:80/x", up, "").key, "service[s].accept");
        let err = bad("tcp://127.0.0.1:0", "ws://127.0.0.1/x", "");
        assert_eq!(err.key, "service[s].connect");
        assert!(err.reason.contains("missing port"), "{err}");
        // Unknown schemes name the ones there are.
        let err = bad("http://127.0.0.1:0", up, "");
        assert!(err.reason.contains("ws://, wss://"), "{err}");
    }

    #[test]
    fn websocket_services_share_a_port_by_path() {
        // Two DMZ services and a forwarding one on one address, distinct paths: fine.
        let config = parse(&services(&[
            ("a", "ws://127.0.0.1:8080/a", "reverse://a", ""),
            (
                "b",
                "ws://127.0.0.1:8080/b",
                "reverse://b",
                "ws_ping = \"5s\"",
            ),
            ("c", "ws://127.0.0.1:8080/", "tcp://127.0.0.1:7000", ""),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.services.len(), 3);
        // Port 0 never shares (each gets its own ephemeral port), so equal paths are fine there.
        parse(&services(&[
            ("a", "ws://127.0.0.1:0/x", "reverse://a", ""),
            ("b", "ws://127.0.0.1:0/x", "reverse://b", ""),
        ]))
        .unwrap();

        let cases = [
            // The same path twice.
            (
                vec![
                    ("a", "ws://127.0.0.1:8080/x", "reverse://a", ""),
                    ("b", "ws://127.0.0.1:8080/x", "tcp://127.0.0.1:7000", ""),
                ],
                "service[b].accept",
                "path \"/x\" on 127.0.0.1:8080 is already served by service[a]",
            ),
            // A WebSocket listener and a plain one.
            (
                vec![
                    ("a", "tcp://127.0.0.1:8080", "reverse://a", ""),
                    ("b", "ws://127.0.0.1:8080/x", "reverse://b", ""),
                ],
                "service[b].accept",
                "shares its port only with other WebSocket services",
            ),
            // Two plain listeners (forwarding and DMZ).
            (
                vec![
                    ("a", "tcp://127.0.0.1:8080", "tcp://127.0.0.1:7000", ""),
                    ("b", "tcp://0.0.0.0:8080", "reverse://b", ""),
                ],
                "service[b].accept",
                "address 0.0.0.0:8080 overlaps 127.0.0.1:8080, already used by service[a]",
            ),
            // Overlapping but not identical addresses.
            (
                vec![
                    ("a", "ws://0.0.0.0:8080/a", "reverse://a", ""),
                    ("b", "ws://127.0.0.1:8080/b", "reverse://b", ""),
                ],
                "service[b].accept",
                "identical address",
            ),
            // One handshake limit per listener.
            (
                vec![
                    ("a", "ws://127.0.0.1:8080/a", "reverse://a", ""),
                    (
                        "b",
                        "ws://127.0.0.1:8080/b",
                        "reverse://b",
                        "handshake_timeout = \"1s\"",
                    ),
                ],
                "service[b].handshake_timeout",
                "share one listener",
            ),
        ];
        for (list, key, reason) in cases {
            let err = parse(&services(&list)).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
        // The admin endpoint never shares.
        let err = parse(&format!(
            "[gateway]\nadmin = \"127.0.0.1:8080\"\n{}",
            services(&[("a", "ws://127.0.0.1:8080/a", "tcp://127.0.0.1:7000", "")])
        ))
        .unwrap_err();
        assert_eq!(err.key, "service[a].accept");
    }

    #[test]
    fn wss_listeners_and_upstreams() {
        let dir = cert_dir("wss");
        let tls = "tls = { cert = \"dmz.pem\", key = \"dmz.key\" }";
        let parse_here = |list: &[(&str, &str, &str, &str)]| parse_in(&dir, &services(list));

        // A wss:// DMZ service and a wss:// forwarding service share one port and certificate.
        let config = parse_here(&[
            ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
            (
                "b",
                "wss://127.0.0.1:8443/b",
                "tcp://127.0.0.1:7000",
                &format!("{tls}\nhandshake_timeout = \"5s\""),
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let a = dmz(&config, 0);
        assert_eq!(a.tls.as_ref().unwrap().cert, dir.join("dmz.pem"));
        assert_eq!(a.ws.as_ref().unwrap().path, "/a");
        assert!(forward(&config, 1).tls.is_some());
        // ALPN on wss:// may only offer HTTP/1.1.
        parse_here(&[(
            "a",
            "wss://127.0.0.1:8443/a",
            "reverse://a",
            "tls = { cert = \"dmz.pem\", key = \"dmz.key\", alpn = [\"http/1.1\"] }",
        )])
        .unwrap();

        // Sharing a wss:// port needs the same tls table.
        let err = parse_here(&[
            ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
            (
                "b",
                "wss://127.0.0.1:8443/b",
                "reverse://b",
                "tls = { cert = \"internal.pem\", key = \"internal.key\" }",
            ),
        ])
        .unwrap_err();
        assert_eq!(err.key, "service[b].tls.cert", "{err}");
        assert!(err.reason.contains("share one listener"), "{err}");
        let err = parse_here(&[
            ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
            (
                "b",
                "wss://127.0.0.1:8443/b",
                "reverse://b",
                "tls = { cert = \"dmz.pem\", key = \"dmz.key\", client_ca = \"ca.pem\" }",
            ),
        ])
        .unwrap_err();
        assert_eq!(err.key, "service[b].tls.client_ca", "{err}");
        // ws:// and wss:// cannot share a port.
        let err = parse_here(&[
            ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
            ("b", "ws://127.0.0.1:8443/b", "reverse://b", ""),
        ])
        .unwrap_err();
        assert_eq!(err.key, "service[b].accept", "{err}");
        assert!(err.reason.contains("speaks TLS or not"), "{err}");

        // A wss:// upstream: connect_tls verifies it (server_name defaults to the host).
        let config = parse_here(&[(
            "vpc",
            "tcp://127.0.0.1:0",
            "wss://127.0.0.1:8443/vpc",
            "connect_tls = { ca = \"ca.pem\" }\nws_ping = \"1s\"",
        )])
        .unwrap();
        let up = &forward(&config, 0).upstream;
        assert_eq!(up.tls.as_ref().unwrap().server_name.to_str(), "127.0.0.1");
        assert_eq!(up.ws.as_ref().unwrap().host, "127.0.0.1:8443");
        assert_eq!(up.ws.as_ref().unwrap().ping, Some(Duration::from_secs(1)));
        // And a tls:// upstream.
        let config = parse_here(&[(
            "t",
            "tls://127.0.0.1:0",
            "tls://127.0.0.1:8443",
            &format!("{tls}\nconnect_tls = {{ ca = \"ca.pem\", server_name = \"localhost\" }}"),
        )])
        .unwrap();
        let f = forward(&config, 0);
        assert!(f.tls.is_some() && f.ws.is_none() && f.upstream.ws.is_none());
        assert_eq!(
            f.upstream.tls.as_ref().unwrap().server_name.to_str(),
            "localhost"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
