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
//! What it does not do: open sockets, resolve host names or watch the file for changes. A port
//! that cannot be bound is reported by the gateway at start-up, not here.
//!
//! Key paths in messages: `gateway.workers`, `reverse.listen`, `service[echo].accept`. A service is
//! named by its `name` when that name is valid and not a duplicate, otherwise by its position,
//! counting `[[service]]` tables from 1 in file order (`service[2].accept`).
//!
//! Roles are given by the URI schemes of a service:
//! - DMZ service: `accept = "tcp://IP:PORT"` or `"tls://IP:PORT"` (with a `tls` table),
//!   `connect = "reverse://BINDNAME"`;
//! - internal service: `accept = "reverse://HOST:PORT/BINDNAME"` (optional `tls` table: the
//!   reverse leg to the DMZ), `connect = "tcp://HOST:PORT"` or `"tls://HOST:PORT"` (with a
//!   `connect_tls` table).
//!
//! Not yet supported, rejected by validation with a clear message: the `ws://` and `wss://`
//! schemes.

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

/// Default `handshake_timeout` of a `tls://` public listener: the longest a client's TLS
/// handshake may take before it is closed. A real client needs two round trips; five seconds
/// covers a slow mobile link while bounding what a silent or slow-loris client can hold.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest ALPN protocol name in bytes (RFC 7301: one length byte).
pub const MAX_ALPN_LEN: usize = 255;

/// Default `connect_timeout` of an internal service: the longest a connect to the back-end may
/// take. The back-end is in the same trusted network, so a connect that takes five seconds is to
/// a dead or filtered host; failing then frees the prepared slot for a fresh attempt.
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
    Internal(InternalService),
}

/// accept = "tcp://IP:PORT" or "tls://IP:PORT", connect = "reverse://BINDNAME"
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmzService {
    /// Public listener.
    pub listen: SocketAddr,
    /// `tls://`: public clients complete a TLS handshake with this before they are paired.
    pub tls: Option<TlsServer>,
    /// Longest a public client's TLS handshake may take (`tls://` only).
    pub handshake_timeout: Duration,
    /// Served by prepared connections bound under this name.
    pub bind_name: String,
    /// Longest a client waits for a prepared connection.
    pub timeout: Duration,
    /// Required of internal gateways binding this name (RFC 1929); `None`: no authentication.
    pub credentials: Option<Credentials>,
}

/// accept = "reverse://HOST:PORT/BINDNAME", connect = "tcp://HOST:PORT" or "tls://HOST:PORT"
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
    /// TLS to the back-end (`connect = "tls://…"`, `connect_tls`).
    pub target_tls: Option<TlsClient>,
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
    /// gateway) runs over TLS.
    pub fn describe(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| {
                let reverse_tls = match &s.role {
                    ServiceRole::Dmz(_) => self.reverse.as_ref().is_some_and(|r| r.tls.is_some()),
                    ServiceRole::Internal(i) => i.tls.is_some(),
                };
                let suffix = if reverse_tls { " (tls)" } else { "" };
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
    /// DMZ, `accept = "tls://…"`: longest a public client's TLS handshake may take.
    pub handshake_timeout: Option<RawDuration>,
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
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Reverse => "reverse",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
        }
    }
}

fn validate_service(
    check: &Check,
    prefix: &str,
    raw: RawService,
) -> Result<ServiceConfig, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");

    let name = match raw.name {
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
    let accept = raw.accept.ok_or_else(|| {
        check.fail(
            key("accept"),
            "missing; e.g. accept = \"tcp://0.0.0.0:9000\" (DMZ) or \
             accept = \"reverse://dmz.example.net:1080/echo\" (internal)",
        )
    })?;
    let connect = raw.connect.ok_or_else(|| {
        check.fail(
            key("connect"),
            "missing; e.g. connect = \"reverse://echo\" (DMZ) or \
             connect = \"tcp://10.0.0.5:7000\" (internal)",
        )
    })?;
    let (accept_scheme, accept_rest) =
        split_scheme(&accept).map_err(|r| check.fail(key("accept"), r))?;
    let (connect_scheme, connect_rest) =
        split_scheme(&connect).map_err(|r| check.fail(key("connect"), r))?;

    let credentials = validate_credentials(check, prefix, raw.user, raw.password)?;

    let role = match (accept_scheme, connect_scheme) {
        (Scheme::Tcp | Scheme::Tls, Scheme::Reverse) => {
            for (field, present) in [
                ("prepared", raw.prepared.is_some()),
                ("retry_max", raw.retry_max.is_some()),
                ("connect_timeout", raw.connect_timeout.is_some()),
                ("connect_tls", raw.connect_tls.is_some()),
            ] {
                if present {
                    return Err(check.fail(
                        key(field),
                        format!(
                            "{field} applies only to internal services (accept = \"reverse://HOST:PORT/NAME\"); \
                             this is a DMZ service (accept = \"tcp://...\", connect = \"reverse://...\"); remove the key"
                        ),
                    ));
                }
            }
            let listen = parse_listen_uri(accept_scheme, accept_rest)
                .map_err(|r| check.fail(key("accept"), r))?;
            let bind_name =
                parse_dmz_bind_name(connect_rest).map_err(|r| check.fail(key("connect"), r))?;
            let timeout = check.duration(&key("timeout"), raw.timeout.as_ref(), DEFAULT_TIMEOUT)?;
            let (tls, handshake_timeout) = if accept_scheme == Scheme::Tls {
                let handshake_timeout = check.duration(
                    &key("handshake_timeout"),
                    raw.handshake_timeout.as_ref(),
                    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                )?;
                let Some(raw_tls) = raw.tls else {
                    return Err(check.fail(
                        key("tls"),
                        format!(
                            "missing; accept = \"{accept}\" needs the listener's certificate, \
                             e.g. tls = {{ cert = \"dmz.pem\", key = \"dmz.key\" }}"
                        ),
                    ));
                };
                let tls =
                    validate_tls_server(check, &key("tls"), raw_tls, TlsServerRole::Public)?;
                (Some(tls), handshake_timeout)
            } else {
                if raw.tls.is_some() {
                    return Err(check.fail(
                        key("tls"),
                        "a tls table on a DMZ service is the certificate of a tls:// listener, but \
                         accept is tcp://; use accept = \"tls://IP:PORT\" or remove tls \
                         (TLS toward internal gateways is [reverse] tls)",
                    ));
                }
                if raw.handshake_timeout.is_some() {
                    return Err(check.fail(
                        key("handshake_timeout"),
                        "handshake_timeout applies only to tls:// listeners; this one is tcp://; remove the key",
                    ));
                }
                (None, DEFAULT_TLS_HANDSHAKE_TIMEOUT)
            };
            ServiceRole::Dmz(DmzService {
                listen,
                tls,
                handshake_timeout,
                bind_name,
                timeout,
                credentials,
            })
        }
        (Scheme::Reverse, Scheme::Tcp | Scheme::Tls) => {
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
                    "handshake_timeout applies only to DMZ services with accept = \"tls://...\"; \
                     an internal service's TLS handshakes run within connect_timeout",
                ));
            }
            let (dmz, bind_name) =
                parse_reverse_accept(accept_rest).map_err(|r| check.fail(key("accept"), r))?;
            let target = parse_target_uri(connect_scheme, connect_rest)
                .map_err(|r| check.fail(key("connect"), r))?;
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
            let target_tls = match (connect_scheme, raw.connect_tls) {
                (Scheme::Tls, Some(t)) => Some(validate_tls_client(
                    check,
                    &key("connect_tls"),
                    t,
                    &target.host,
                    "connect_tls (TLS to the back-end)",
                )?),
                (Scheme::Tls, None) => {
                    return Err(check.fail(
                        key("connect_tls"),
                        format!(
                            "missing; connect = \"{connect}\" needs the back-end's CA, e.g. \
                             connect_tls = {{ ca = \"backend-ca.pem\" }} (server_name defaults to \"{}\")",
                            target.host
                        ),
                    ))
                }
                (_, Some(_)) => {
                    return Err(check.fail(
                        key("connect_tls"),
                        "connect_tls applies only to connect = \"tls://HOST:PORT\"; this connect is tcp://; \
                         use tls:// or remove connect_tls (the reverse leg's TLS is tls)",
                    ))
                }
                (_, None) => None,
            };
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
            })
        }
        (Scheme::Tcp | Scheme::Tls, Scheme::Tcp | Scheme::Tls) => {
            return Err(check.fail(
                key("connect"),
                if (accept_scheme, connect_scheme) == (Scheme::Tcp, Scheme::Tcp) {
                    "plain TCP forwarding (tcp:// -> tcp://) is not supported; use reverse:// on one side"
                        .to_string()
                } else {
                    format!(
                        "forwarding ({}:// -> {}://) is not supported; use reverse:// on one side",
                        accept_scheme.as_str(),
                        connect_scheme.as_str()
                    )
                },
            ))
        }
        (Scheme::Reverse, Scheme::Reverse) => {
            return Err(check.fail(
                key("connect"),
                "reverse:// on both sides is not supported; a DMZ service is tcp:// (or tls://) -> reverse://NAME, \
                 an internal service is reverse://HOST:PORT/NAME -> tcp:// (or tls://) HOST:PORT",
            ))
        }
    };
    Ok(ServiceConfig {
        name,
        accept,
        connect,
        role,
    })
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

/// Checks that need the whole file: roles vs `[reverse]`, bind names, listener collisions.
fn cross_check(
    check: &Check,
    gateway: &GatewayConfig,
    reverse: Option<&ReverseConfig>,
    services: &[ServiceConfig],
    labels: &[String],
) -> Result<(), ConfigError> {
    let mut listeners: Vec<(String, SocketAddr)> = Vec::new();
    if let Some(admin) = gateway.admin {
        listeners.push(("gateway.admin".to_string(), admin));
    }
    if let Some(reverse) = reverse {
        listeners.push(("reverse.listen".to_string(), reverse.listen));
    }
    let mut bind_names: HashMap<&str, &str> = HashMap::new();
    let mut has_dmz = false;
    for (service, label) in services.iter().zip(labels) {
        let ServiceRole::Dmz(dmz) = &service.role else {
            continue;
        };
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
        listeners.push((format!("{label}.accept"), dmz.listen));
    }
    if reverse.is_some() && !has_dmz {
        return Err(check.fail(
            "reverse",
            "[reverse] is set but no service uses it (connect = \"reverse://NAME\"); \
             remove [reverse] or add a DMZ service",
        ));
    }
    for (i, (key, addr)) in listeners.iter().enumerate() {
        if let Some((other, other_addr)) = listeners[..i].iter().find(|(_, a)| overlaps(*a, *addr))
        {
            return Err(check.fail(
                key.clone(),
                format!("address {addr} overlaps {other_addr}, already used by {other}"),
            ));
        }
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
        "reverse" => Ok((Scheme::Reverse, rest)),
        "ws" | "wss" => Err(format!(
            "scheme {}:// is not yet supported by this build (planned); use tcp://, tls:// or reverse://",
            scheme.to_ascii_lowercase()
        )),
        _ => Err(format!(
            "unknown scheme \"{scheme}://\" in \"{uri}\"; expected tcp://, tls:// or reverse://"
        )),
    }
}

/// `tcp://IP:PORT` or `tls://IP:PORT` of a DMZ service's public listener.
fn parse_listen_uri(scheme: Scheme, rest: &str) -> Result<SocketAddr, String> {
    if let Some(i) = rest.find('/') {
        return Err(format!(
            "unexpected path \"{}\"; expected {}://IP:PORT",
            &rest[i..],
            scheme.as_str()
        ));
    }
    parse_listen_addr(rest)
}

/// `tcp://HOST:PORT` or `tls://HOST:PORT` of an internal service's back-end.
fn parse_target_uri(scheme: Scheme, rest: &str) -> Result<HostPort, String> {
    if let Some(i) = rest.find('/') {
        return Err(format!(
            "unexpected path \"{}\"; expected {}://HOST:PORT",
            &rest[i..],
            scheme.as_str()
        ));
    }
    parse_host_port(rest)
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
                }),
            }],
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn examples_load_from_disk() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        for name in ["dmz.toml", "internal.toml"] {
            let path = Path::new(dir).join(name);
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
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
        assert_eq!(reverse_tls.config.send_tls13_tickets, 0);
        let d = dmz(&config, 0);
        let public = d.tls.as_ref().unwrap();
        assert_eq!(public.alpn, ["h2", "http/1.1"]);
        assert_eq!(
            public.config.alpn_protocols,
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
        // Still not supported.
        let err = bad(&DMZ_TLS.replace("accept = \"tls://", "accept = \"wss://"));
        assert!(err.reason.contains("not yet supported"), "{}", err.reason);
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
            assert!(
                config.describe().iter().all(|l| l.ends_with(" (tls)")),
                "{:?}",
                config.describe()
            );
            loaded += 1;
        }
        assert!(loaded >= 2, "only {loaded} TLS examples");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
