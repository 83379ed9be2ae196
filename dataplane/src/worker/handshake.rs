//! A public client's handshake at the DMZ side: first, for a peer in the listener's
//! `accept_proxy`, the PROXY v1/v2 header an L4 balancer sends ahead of everything (its source
//! then stands for the client); then the TLS handshake of a `tls://` or `wss://` service, then,
//! on a WebSocket listener, the HTTP upgrade request that picks the service by path. The PROXY
//! header is peeked, not read, until it is whole, and then exactly its bytes are read: what came
//! with it (a ClientHello, an HTTP request, payload) stays in the socket for the next stage,
//! whatever the segmentation. [`Handshake`] owns the client's leg and the request bytes so far;
//! its handler [`Handshake::on_readable`] says what comes next ([`Step`]); the worker
//! (`driver.rs`) arms its poll, keeps its deadline, and on the end either pairs the client or
//! answers, counts and closes it.
//!
//! It does not pair anything itself (`driver.rs`) and relays nothing.

use std::io;
use std::net::SocketAddr;

use super::pool::LocalService;
use crate::handoff::PublicIndex;
use crate::leg::Leg;
use crate::sys;
use crate::wire::{http, proxy};

/// Bytes of an upgrade request read per `read`.
const HTTP_READ_CHUNK: usize = 2048;

/// A public client between accept and pairing: its leg, and how far its handshake got.
pub(super) struct Handshake {
    pub(super) leg: Leg,
    /// The client: the socket's peer address, or, once read, the PROXY header's source when
    /// the peer is in the listener's `accept_proxy` (a `LOCAL`/`UNKNOWN` header keeps the
    /// peer's). Logs, pairing (the second BIND reply), the PROXY header sent onwards and
    /// per-source policy use this.
    pub(super) addr: SocketAddr,
    /// The listener group the client came in on (its service is known after routing).
    pub(super) group: usize,
    pub(super) stage: Stage,
    /// The peer is a balancer in `accept_proxy` (the handshake began with [`Stage::Proxy`]):
    /// per-source policy judges `addr` when the handshake ends.
    pub(super) via_proxy: bool,
}

pub(super) enum Stage {
    /// HTTP upgrade request bytes so far (WebSocket listeners).
    Http(Vec<u8>),
    /// The peer is in `accept_proxy`: its PROXY header first. Nothing is held here: the bytes
    /// stay in the socket (peeked) until the header is whole.
    Proxy,
    Tls,
}

/// What a handshake event led to.
pub(super) enum Step {
    /// Complete: pair the client with (or forward it for) this service.
    Done(PublicIndex),
    Failed(HandshakeError),
    /// Wait for the socket.
    Wait,
}

/// An upgrade request refused with an HTTP error response.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The request itself: malformed (400), not an upgrade (426), head too large (431)…
    Request(http::HttpError),
    /// No service of the listener's group answers this path (404).
    NoService { path: String },
    /// The service does not allow this `Origin` (403).
    Origin { origin: String },
}

impl Refusal {
    pub(super) fn status(&self) -> u16 {
        match self {
            Refusal::Request(e) => e.status(),
            Refusal::NoService { .. } => 404,
            Refusal::Origin { .. } => 403,
        }
    }

    pub(super) fn reason(&self) -> &'static str {
        match self {
            Refusal::Request(e) => e.reason(),
            Refusal::NoService { .. } => "Not Found",
            Refusal::Origin { .. } => "Forbidden",
        }
    }

    pub(super) fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Refusal::Request(e) => e.extra_headers(),
            Refusal::NoService { .. } | Refusal::Origin { .. } => &[],
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}: ", self.status(), self.reason())?;
        match self {
            Refusal::Request(e) => write!(f, "{e}"),
            Refusal::NoService { path } => write!(f, "no service at path {path:?}"),
            Refusal::Origin { origin } => write!(f, "origin {origin:?} not allowed"),
        }
    }
}

/// Why a public client's handshake failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    /// The client closed before its upgrade request was complete.
    #[error("closed during the upgrade")]
    ClosedDuringUpgrade,
    /// The ring could not watch the client's socket.
    #[error("cannot poll")]
    Poll(#[source] io::Error),
    /// Reading the upgrade request failed (a reset; a TLS error after the handshake).
    #[error("{0}")]
    Read(io::Error),
    /// The upgrade request was refused with an HTTP response.
    #[error("{0}")]
    Refused(Refusal),
    /// A peer in `accept_proxy` sent something that is not a PROXY header (or a bad one).
    #[error("bad PROXY header: {0}")]
    Proxy(proxy::ProxyError),
    /// A peer in `accept_proxy` closed before its PROXY header was whole (or sent none).
    #[error("closed before a complete PROXY header")]
    ProxyClosed,
    /// The service's handshake timeout passed.
    #[error("handshake timed out")]
    TimedOut,
    /// The TLS handshake failed (a rustls error, or the client left mid-handshake).
    #[error("{0}")]
    Tls(io::Error),
    /// The bytes after the upgrade request are not valid WebSocket frames.
    #[error("{0}")]
    Upgrade(io::Error),
}

impl Handshake {
    /// The client's socket is readable (or writable): moves the handshake on as far as the
    /// bytes at hand allow. `services` and `groups` route the upgrade request.
    /// `hangup`: the poll saw the peer's end of stream (or an error).
    pub(super) fn on_readable(
        &mut self,
        services: &[LocalService],
        groups: &[Vec<PublicIndex>],
        hangup: bool,
    ) -> Step {
        let first = groups[self.group][0];
        if let Stage::Proxy = self.stage {
            match self.proxy_step(hangup) {
                Ok(None) => return Step::Wait,
                Ok(Some(client)) => {
                    if let Some(client) = client {
                        self.addr = client;
                    }
                }
                Err(e) => return Step::Failed(e),
            }
            let service = &services[first.0];
            match (&service.tls, &service.ws) {
                (Some(tls), _) => match crate::tls::Handshake::server(tls.config.current()) {
                    Ok(handshake) => {
                        self.leg.start_tls(handshake);
                        self.stage = Stage::Tls;
                    }
                    Err(e) => return Step::Failed(HandshakeError::Tls(io::Error::other(e))),
                },
                (None, Some(_)) => self.stage = Stage::Http(Vec::new()),
                (None, None) => return Step::Done(first),
            }
            // What came with the header is still in the socket and announces itself no more:
            // the next stage looks now.
        }
        if let Stage::Tls = self.stage {
            match self.leg.handshake() {
                Ok(true) if services[first.0].ws.is_some() => self.stage = Stage::Http(Vec::new()),
                Ok(true) => return Step::Done(first),
                Ok(false) => return Step::Wait,
                Err(e) => return Step::Failed(HandshakeError::Tls(e)),
            }
        }
        self.http_step(services, &groups[self.group])
    }

    /// Reads the upgrade request as far as it has come and answers it: a routed service with
    /// its 101 queued, or the refusal to send before the close.
    fn http_step(&mut self, services: &[LocalService], members: &[PublicIndex]) -> Step {
        let Stage::Http(buf) = &mut self.stage else {
            return Step::Wait;
        };
        let limits = http::RequestLimits::default();
        let mut chunk = [0u8; HTTP_READ_CHUNK];
        loop {
            match http::parse_upgrade_request(buf, &limits) {
                Ok(None) => {}
                Ok(Some((request, used))) => {
                    let path = request.path.split('?').next().unwrap_or("");
                    let routed = members
                        .iter()
                        .copied()
                        .find(|&m| services[m.0].ws.as_ref().is_some_and(|w| w.path == path));
                    let Some(service) = routed else {
                        let path = path.to_owned();
                        return refused(Refusal::NoService { path });
                    };
                    let Some(ws) = services[service.0].ws.as_ref() else {
                        return Step::Wait;
                    };
                    if !ws.origins.is_empty()
                        && !request
                            .origin
                            .as_ref()
                            .is_some_and(|o| ws.origins.contains(o))
                    {
                        let origin = request.origin.clone().unwrap_or_default();
                        return refused(Refusal::Origin { origin });
                    }
                    let protocol = request
                        .protocols
                        .iter()
                        .find(|p| ws.protocols.contains(p))
                        .map(String::as_str);
                    let mut response = Vec::with_capacity(256);
                    http::encode_switching_protocols(&request.key, protocol, &mut response);
                    let leftover = buf.split_off(used);
                    let (max_message, ping) = (ws.max_message, ws.ping);
                    return match self
                        .leg
                        .upgrade_server(response, &leftover, max_message, ping)
                    {
                        Ok(()) => Step::Done(service),
                        Err(e) => Step::Failed(HandshakeError::Upgrade(e)),
                    };
                }
                Err(e) => return refused(Refusal::Request(e)),
            }
            match self.leg.read(&mut chunk) {
                Ok(0) => return Step::Failed(HandshakeError::ClosedDuringUpgrade),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) => return Step::Failed(HandshakeError::Read(e)),
            }
        }
    }
}

impl Handshake {
    /// Peeks at what the peer sent and parses it as a PROXY header: `Ok(None)` = not whole
    /// yet; `Ok(Some(source))` = the header's bytes (and only those) are consumed, `source`
    /// is the client it names (`None` for `LOCAL`/`UNKNOWN`: the peer itself).
    fn proxy_step(&mut self, hangup: bool) -> Result<Option<Option<SocketAddr>>, HandshakeError> {
        let mut buf = [0u8; proxy::MAX_V2_LEN];
        let n = match sys::peek(self.leg.fd(), &mut buf) {
            Ok(0) => return Err(HandshakeError::ProxyClosed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(HandshakeError::Read(e)),
        };
        let (header, used) = match proxy::parse_header(&buf[..n]) {
            Ok(Some(parsed)) => parsed,
            // A prefix, and the peer has finished: it will never be whole.
            Ok(None) if hangup => return Err(HandshakeError::ProxyClosed),
            Ok(None) => return Ok(None),
            Err(e) => return Err(HandshakeError::Proxy(e)),
        };
        // The header's bytes are in the socket (just peeked): one read takes exactly them.
        match sys::read(self.leg.fd(), &mut buf[..used]) {
            Ok(k) if k == used => {}
            Ok(_) => return Err(HandshakeError::ProxyClosed),
            Err(e) => return Err(HandshakeError::Read(e)),
        }
        Ok(Some(match header.addresses {
            proxy::Addresses::Tcp { source, .. } => Some(source),
            proxy::Addresses::Unknown => None,
        }))
    }
}

fn refused(refusal: Refusal) -> Step {
    Step::Failed(HandshakeError::Refused(refusal))
}
