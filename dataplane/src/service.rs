//! What a public service and a back-end are, as the data plane sees them: the listener's TLS
//! and WebSocket settings, and where (and how) a back-end leg connects.
//!
//! Plain values the control thread builds once and hands to [`crate::Dataplane::start`] (public
//! services) or [`crate::Dataplane::park_reverse`] (a reverse leg's back-end). This module does
//! no I/O and parses no configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::admission::{Admission, HeldUpstreams, IpNet, SourcePolicy};
use crate::tls;
use crate::wire::proxy;

/// TLS on a public listener (`tls://`): clients complete a handshake before they are paired.
#[derive(Clone)]
pub struct PublicTls {
    /// Replaced when certificates are reloaded; each handshake takes the current one.
    pub config: Arc<tls::Reloadable<rustls::ServerConfig>>,
    /// A client that has not completed its handshake by then is closed.
    pub handshake_timeout: Duration,
}

/// TLS toward the back-end (`connect = "tls://…"` on the internal side).
#[derive(Clone)]
pub struct TargetTls {
    /// Replaced when certificates are reloaded; each handshake takes the current one.
    pub config: Arc<tls::Reloadable<rustls::ClientConfig>>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Where a back-end leg connects: the internal side's back-end after pairing, or a forwarding
/// service's upstream.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub tls: Option<TargetTls>,
    pub connect_timeout: Duration,
    /// Speak WebSocket to the upstream (`ws://`, `wss://` with `tls`).
    pub ws: Option<UpstreamWs>,
    /// `proxy_protocol`: begin every connection with a PROXY header of this version carrying
    /// the public client's address (source) and the public address it reached (destination).
    pub proxy_protocol: Option<proxy::Version>,
    /// `admission = "verified"`: connections to this upstream made while the client's SYN was
    /// held; a client found here uses its connection instead of a new one. `None` elsewhere.
    pub held: Option<Arc<HeldUpstreams>>,
}

/// A WebSocket connector: the request's `Host` and path, limits, keepalive.
#[derive(Clone)]
pub struct UpstreamWs {
    pub host: String,
    pub path: String,
    pub max_message: usize,
    /// Ping after this long without a byte from the peer; close if the ping is not answered
    /// (by anything) within as long again.
    pub ping: Option<Duration>,
}

/// A WebSocket listener (`ws://`, `wss://` with `tls`): services on one address are routed by
/// request path.
#[derive(Clone)]
pub struct PublicWs {
    /// Request path this service answers, e.g. `/echo` (query strings are ignored).
    pub path: String,
    /// Allowed `Origin` values; empty: any (or none).
    pub origins: Vec<String>,
    /// Subprotocols this service accepts; the first the client offers is chosen.
    pub protocols: Vec<String>,
    pub max_message: usize,
    /// See [`UpstreamWs::ping`].
    pub ping: Option<Duration>,
    /// Longest a client may take to send its upgrade request.
    pub handshake_timeout: Duration,
}

/// A public service: served by prepared connections (DMZ side), or, with `upstream`, by a
/// connection of its own to that upstream per client (forwarding; a refused upstream resets
/// the client, so it sees what the real server said).
#[derive(Clone)]
pub struct PublicService {
    pub name: String,
    pub listen: SocketAddr,
    /// Longest a client waits for a prepared connection before it is reset.
    pub timeout: Duration,
    /// A tunnel of this service that moves no byte either way for this long is reset (both
    /// legs; close reason `idle`). `None`: never.
    pub idle_timeout: Option<Duration>,
    pub tls: Option<PublicTls>,
    pub ws: Option<PublicWs>,
    pub upstream: Option<Upstream>,
    /// When the service takes new clients.
    pub admission: Admission,
    /// Which sources it takes them from, and how many.
    pub policy: SourcePolicy,
    /// Sources (an L4 balancer) whose connections must begin with a PROXY v1 or v2 header; the
    /// address in it then stands for the client everywhere (policy, logs, the header sent on).
    pub accept_proxy: Vec<IpNet>,
}
