//! The validated configuration ([`Config`]): every default applied, every address parsed,
//! certificates loaded. The rest of the program reads only these types.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use sallyport_dataplane::admission::{Admission, IpNet, SourcePolicy};
use sallyport_dataplane::wire::proxy::Version;
use sallyport_dataplane::wire::token;
use sallyport_dataplane::UpstreamWs;
use sallyport_dataplane::{Keepalive, RingSetup, StreamOptions};
use sallyport_dataplane::{PublicService, PublicTls, PublicWs, RelayConfig, RelayMode, Upstream};

use super::defaults::*;
use crate::tls::{TlsClient, TlsServer};

/// A validated configuration: every default applied, every address parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub gateway: GatewayConfig,
    /// Present on a DMZ gateway: where internal gateways dial in.
    pub reverse: Option<ReverseConfig>,
    /// In file order; empty only when the file has `[rendezvous]` or `[host]`.
    pub services: Vec<ServiceConfig>,
    /// `[rendezvous]` (DMZ): where browsers open `ACCEPT + TOKEN`; hosts BIND with the token on
    /// `[reverse]`, which it requires.
    pub rendezvous: Option<RendezvousConfig>,
    /// `[host]` with its `[[stream]]` tables: a gateway that dials out on command.
    pub host: Option<HostConfig>,
}

/// `[gateway]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Data-plane threads; default: one per core (`std::thread::available_parallelism`).
    pub workers: usize,
    /// Admin endpoint (`GET /metrics`, `GET /stats`); off when `None`.
    pub admin: Option<SocketAddr>,
    /// Cores the workers are pinned to, worker `i` on `cores[i % len]`. `None`: worker `i` on
    /// core `i` (one per core); an empty list: no pinning (the scheduler places them).
    pub cores: Option<Vec<usize>>,
    /// `relay`, `pipe_size`, `buffer_size`, `nodelay`, `socket_buffer` and `busy_poll`, as the
    /// data plane takes them.
    pub relay: RelayConfig,
    /// `ring_setup`: how each worker's io_uring is set up; a kernel without the chosen flags
    /// falls back to the next simpler one.
    pub ring_setup: RingSetup,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            workers: default_workers(),
            admin: None,
            cores: None,
            relay: RelayConfig {
                mode: DEFAULT_RELAY,
                pipe_size: DEFAULT_PIPE_SIZE,
                buffer_size: DEFAULT_BUFFER_SIZE,
                stream: StreamOptions {
                    nodelay: DEFAULT_NODELAY,
                    buffer: None,
                },
                busy_poll: Duration::ZERO,
            },
            ring_setup: DEFAULT_RING_SETUP,
        }
    }
}

/// The spelling of a relay mode in the config file (`[gateway] relay`).
pub fn relay_mode_name(mode: RelayMode) -> &'static str {
    match mode {
        RelayMode::Copy => "copy",
        RelayMode::Splice => "splice",
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
    /// TCP keepalive and user timeout on every prepared connection parked here.
    pub keepalive: Keepalive,
    /// `dangerous_unauthenticated_reverse`: a non-loopback endpoint without `client_ca` and a
    /// DMZ service without `user`/`password` are allowed (refused otherwise).
    pub unauthenticated: bool,
}

/// `[rendezvous]`: the DMZ side of token rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendezvousConfig {
    /// The accept URI as written, for banners.
    pub accept: String,
    /// The browsers' listener (its own socket; not shared with a service).
    pub listen: SocketAddr,
    /// The path prefix the token follows, e.g. `/stream/`; always ends with `/`.
    pub path: String,
    /// `wss://`: the listener's certificate.
    pub tls: Option<TlsServer>,
    /// The HMAC key tokens are verified with.
    pub key: Arc<token::Key>,
    /// A side whose partner has not arrived by then is closed.
    pub link_timeout: Duration,
    /// Longest a browser's TLS handshake plus upgrade request may take.
    pub handshake_timeout: Duration,
    /// Allowed `Origin` values; empty: any.
    pub origins: Vec<String>,
    /// Largest WebSocket message accepted from a browser.
    pub ws_max_message: usize,
    /// WebSocket keepalive towards the browser, once linked.
    pub ws_ping: Option<Duration>,
}

/// `[host]`: a gateway that listens on nothing and, on a verified command (a NATS message on
/// `sallyport.dial.<name>`, or `sallyport dial`), dials the DMZ's `[reverse]` endpoint, BINDs
/// with the command's token and relays to the stream's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The host's name in tokens and in its subject.
    pub name: String,
    /// The DMZ's reverse endpoint (`dmz = "reverse://HOST:PORT"`).
    pub dmz: HostPort,
    /// TLS on the reverse leg, as for internal services.
    pub tls: Option<TlsClient>,
    /// The HMAC key commands are verified with.
    pub key: Arc<token::Key>,
    /// Longest the connect (plus TLS and SOCKS5) to the DMZ, and the connect to a stream's
    /// target, may take.
    pub connect_timeout: Duration,
    /// TCP keepalive and user timeout on the reverse legs.
    pub keepalive: Keepalive,
    /// NATS servers to subscribe through; `None`: no subscription (`sallyport dial` only).
    pub nats: Option<NatsConfig>,
    /// In file order; never empty.
    pub streams: Vec<StreamConfig>,
}

impl HostConfig {
    /// The NATS subject this host's dial commands arrive on.
    pub fn subject(&self) -> String {
        format!("sallyport.dial.{}", self.name)
    }
}

/// The NATS connection of a host (`nats`, `nats_user`, `nats_password`, `nats_token`,
/// `nats_tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `nats://HOST:PORT` or `tls://HOST:PORT`, as written; at least one.
    pub servers: Vec<String>,
    pub auth: NatsAuth,
    /// `nats_tls = { ca, cert, key }`: TLS required; files checked to exist at load time.
    pub tls: Option<NatsTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// Certificate files for NATS over TLS, handed to the NATS client as paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    /// Roots the server's certificate must chain to; `None`: the system's.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, both or neither.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// One `[[stream]]` of a host: what a token may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    /// The connect URI as written, for banners.
    pub connect: String,
    /// `connect = "tcp://HOST:PORT"`; resolved at each dial.
    pub target: HostPort,
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

impl ServiceRole {
    /// The data plane's view of a DMZ or forwarding service named `name`; `None` for an
    /// internal service, which listens on nothing.
    pub fn public_service(&self, name: &str) -> Option<PublicService> {
        let (listen, tls, ws, handshake_timeout, timeout, idle_timeout, upstream, admission) =
            match self {
                ServiceRole::Dmz(d) => (
                    d.listen,
                    &d.tls,
                    &d.ws,
                    d.handshake_timeout,
                    d.timeout,
                    d.idle_timeout,
                    None,
                    &d.admission,
                ),
                // A forwarding service waits for no prepared connection, so `timeout` is never
                // used: its upstream connect is bounded by connect_timeout.
                ServiceRole::Forward(f) => (
                    f.listen,
                    &f.tls,
                    &f.ws,
                    f.handshake_timeout,
                    f.upstream.connect_timeout,
                    f.idle_timeout,
                    Some(f.upstream.upstream()),
                    &f.admission,
                ),
                ServiceRole::Internal(_) => return None,
            };
        // Verified admission: the connections made while a SYN is held wait here for the
        // worker that accepts the client (a fresh map per call: one gateway, one map).
        let upstream = upstream.map(|mut u| {
            if admission.mode == Admission::Verified {
                u.held = Some(Arc::default());
            }
            u
        });
        Some(PublicService {
            name: name.to_string(),
            listen,
            timeout,
            idle_timeout,
            tls: tls.as_ref().map(|t| PublicTls {
                config: Arc::clone(&t.config),
                handshake_timeout,
            }),
            ws: ws.clone().map(Handoff::into_inner),
            upstream,
            admission: admission.mode,
            policy: admission.policy.clone(),
            accept_proxy: admission.accept_proxy.clone(),
        })
    }
}

/// A public listener's admission keys: `admission`, the per-source policy (`allow`, `deny`,
/// `deny_action`, `max_per_source`, `rate_per_source`) and `accept_proxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Default `"ready"` on a DMZ service, `"always"` on a forwarding service.
    pub mode: Admission,
    pub policy: SourcePolicy,
    /// Sources whose connections must begin with a PROXY header; empty: none.
    pub accept_proxy: Vec<IpNet>,
}

impl AdmissionConfig {
    /// A listener with no admission key set: `mode`, everyone admitted, no PROXY sources.
    pub fn open(mode: Admission) -> AdmissionConfig {
        AdmissionConfig {
            mode,
            policy: SourcePolicy::default(),
            accept_proxy: Vec::new(),
        }
    }
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
    /// A tunnel that moves no byte either way for this long is reset; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Required of internal gateways binding this name (RFC 1929); `None`: no authentication.
    pub credentials: Option<Credentials>,
    pub admission: AdmissionConfig,
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
    /// A tunnel that moves no byte either way for this long is reset; `None`: never.
    pub idle_timeout: Option<Duration>,
    pub upstream: UpstreamConfig,
    pub admission: AdmissionConfig,
}

/// A WebSocket listener's settings (`accept = "ws://…"` or `"wss://…"`), as the data plane
/// takes them: `path` from the URI (`/` when it has none; services on one address are told
/// apart by it, query strings ignored), `origins`, `protocols`, `ws_max_message`, `ws_ping`, and
/// the service's `handshake_timeout`.
pub type WsAccept = Handoff<PublicWs>;

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
    /// `proxy_protocol`: the PROXY header each upstream connection begins with.
    pub proxy_protocol: Option<Version>,
}

impl UpstreamConfig {
    /// The leg the data plane connects for each client.
    pub fn upstream(&self) -> Upstream {
        backend_leg(
            self.addr,
            &self.tls,
            self.connect_timeout,
            &self.ws,
            self.proxy_protocol,
        )
    }
}

/// A back-end leg to `addr`: what a forwarding service's upstream and an internal service's
/// back-end both hand the data plane.
fn backend_leg(
    addr: SocketAddr,
    tls: &Option<TlsClient>,
    connect_timeout: Duration,
    ws: &Option<WsConnect>,
    proxy_protocol: Option<Version>,
) -> Upstream {
    Upstream {
        addr,
        tls: tls.as_ref().map(TlsClient::target),
        connect_timeout,
        ws: ws.clone().map(Handoff::into_inner),
        proxy_protocol,
        held: None,
    }
}

/// A WebSocket client leg's settings (`connect = "ws://…"` or `"wss://…"`), as the data plane
/// takes them: `host` (the `Host` header, `HOST:PORT` as written in the URI), `path` (from the
/// URI, `/` when it has none, query string included), `ws_max_message`, `ws_ping`.
pub type WsConnect = Handoff<UpstreamWs>;

/// A value of one of the data plane's hand-off types, held by the config as the data plane
/// takes it (the gateway clones it across as is). Those types have neither `Debug` nor
/// `PartialEq` (the data plane needs neither); `Handoff` compares and prints them by their
/// settings, so [`Config`] stays comparable (a reload tells other changes apart with it) and
/// printable.
#[derive(Clone)]
pub struct Handoff<T>(pub T);

impl<T> Handoff<T> {
    /// The data plane's value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Handoff<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The settings of a hand-off value, as [`Handoff`] compares and prints them.
pub trait Settings {
    type View<'a>: fmt::Debug + PartialEq
    where
        Self: 'a;
    fn view(&self) -> Self::View<'_>;
}

impl<T: Settings> PartialEq for Handoff<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.view() == other.0.view()
    }
}

impl<T: Settings> Eq for Handoff<T> {}

impl<T: Settings> fmt::Debug for Handoff<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.view().fmt(f)
    }
}

impl Settings for PublicWs {
    /// path, origins, protocols, max_message, ping, handshake_timeout.
    type View<'a> = (
        &'a str,
        &'a [String],
        &'a [String],
        usize,
        Option<Duration>,
        Duration,
    );
    fn view(&self) -> Self::View<'_> {
        (
            &self.path,
            &self.origins,
            &self.protocols,
            self.max_message,
            self.ping,
            self.handshake_timeout,
        )
    }
}

impl Settings for UpstreamWs {
    /// host, path, max_message, ping.
    type View<'a> = (&'a str, &'a str, usize, Option<Duration>);
    fn view(&self) -> Self::View<'_> {
        (&self.host, &self.path, self.max_message, self.ping)
    }
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
    /// `proxy_protocol`: the PROXY header each back-end connection begins with.
    pub proxy_protocol: Option<Version>,
    /// `backend_probe`: park prepared connections only while the back-end accepts connections.
    pub backend_probe: bool,
    /// TCP keepalive and user timeout on the reverse legs, parked or relaying.
    pub keepalive: Keepalive,
}

impl InternalService {
    /// The back-end leg the data plane connects after pairing, to `addr` (the back-end's
    /// name, resolved at each dial).
    pub fn backend(&self, addr: SocketAddr) -> Upstream {
        backend_leg(
            addr,
            &self.target_tls,
            self.connect_timeout,
            &self.target_ws,
            self.proxy_protocol,
        )
    }
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
