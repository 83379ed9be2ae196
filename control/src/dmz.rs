//! The DMZ's reverse endpoint: the SOCKS5 server internal gateways dial into.
//!
//! Each connection is negotiated here on the control thread: the TLS handshake first when
//! `[reverse] tls` is set (the data plane's TLS over tokio, [`crate::tls_stream`]; with
//! `client_ca` a client certificate signed by that CA is required), then the SOCKS5 BIND
//! session, run by the data plane's sans-IO server machine (`wire::bind::server`, driven by
//! [`crate::socks_io::drive`]): no-auth or RFC 1929 user/password, then BIND with DST.ADDR =
//! the service's bind name, all within `handshake_timeout`. On success the first BIND reply
//! carries the service's public address and the connection, now a *prepared connection*, is
//! handed to a data-plane worker to be parked, with its TLS session; the worker sends the
//! second reply when it pairs it with a public client. Anything else gets the matching SOCKS
//! reply (or TLS alert) and is closed, counted and logged with the reason (`HandshakeError`).
//!
//! This module does not parse SOCKS5 itself, does not relay bytes and does not keep parked
//! connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sallyport_dataplane::log_limit::LogLimiter;
use sallyport_dataplane::tls::{Handshake, Read, Reloadable};
use sallyport_dataplane::wire::bind::server::{BindServer, ServerError, Service};
use sallyport_dataplane::wire::bind::{Action, Session};
use sallyport_dataplane::wire::socks5;
use sallyport_dataplane::{Dataplane, Keepalive, OwnedConn, PublicIndex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::accept_pause::AcceptPause;
use crate::socks_io::{self, SessionError};
use crate::stats::{ControlStats, HandshakeFailure};
use crate::tls_stream;

/// A public service as the reverse endpoint knows it.
#[derive(Debug, Clone)]
pub struct BindTarget {
    pub service: String,
    pub bind_name: String,
    /// Index of the service in the data plane.
    pub index: PublicIndex,
    /// Sent as BND in the first BIND reply.
    pub public: SocketAddr,
    /// RFC 1929 credentials required for this service, if any.
    pub credentials: Option<socks5::Credentials>,
}

/// Everything the reverse endpoint needs.
pub struct ReverseEndpoint {
    pub targets: Vec<BindTarget>,
    /// Longest the TLS handshake plus the SOCKS5 negotiation may take.
    pub handshake_timeout: Duration,
    /// TLS on the reverse endpoint (`[reverse] tls`); replaced when certificates are reloaded.
    pub tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    pub dataplane: Arc<Dataplane>,
    pub stats: Arc<ControlStats>,
    /// TCP keepalive and user timeout on every connection, from accept on.
    pub keepalive: Keepalive,
    /// Refusal log lines, at most one per second.
    pub refusal_log: RefCell<LogLimiter>,
}

/// Most SOCKS5 negotiations in flight at once. Beyond it the reverse listener stops accepting
/// (connections wait in the kernel's backlog) rather than growing memory without bound.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 1024;

/// Accepts and negotiates until the task is dropped.
pub async fn serve(listener: TcpListener, endpoint: Rc<ReverseEndpoint>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let mut pause = AcceptPause::default();
    let sources = Rc::new(RefCell::new(HashMap::<IpAddr, usize>::new()));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                pause.reset();
                let Some(slot) = SourceSlot::take(&sources, peer.ip()) else {
                    endpoint.stats.failed(HandshakeFailure::SourceLimit);
                    endpoint.log_refusal(peer, HandshakeFailure::SourceLimit, &format!(
                        "{MAX_HANDSHAKES_PER_SOURCE} handshakes from this source already in flight; closed at accept"
                    ));
                    continue;
                };
                let endpoint = Rc::clone(&endpoint);
                tokio::task::spawn_local(async move {
                    handle(stream, peer, &endpoint).await;
                    drop(slot);
                    drop(permit);
                });
            }
            Err(e) => pause.after("reverse listener", &e).await,
        }
    }
}

/// Most negotiations in flight from one source address: one peer (a scanner, a slowloris, a
/// misbehaving gateway) cannot hold every one of the [`MAX_CONCURRENT_HANDSHAKES`] slots. An
/// internal gateway dials at most `internal::MAX_CONCURRENT_DIALS` (64) at once; twice that
/// leaves room for two gateways behind one NAT address.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 128;

/// A negotiation counted against its source while it runs.
struct SourceSlot {
    sources: Rc<RefCell<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    /// `None` when `ip` already has [`MAX_HANDSHAKES_PER_SOURCE`] in flight.
    fn take(sources: &Rc<RefCell<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<SourceSlot> {
        let mut map = sources.borrow_mut();
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: Rc::clone(sources),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.sources.borrow_mut();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ReverseEndpoint {
    /// One line per refused reverse connection, at most one per second (with the count held
    /// back): a flood of bad handshakes must not flood the log.
    fn log_refusal(&self, peer: SocketAddr, why: HandshakeFailure, detail: &str) {
        if let Some(also) = self
            .refusal_log
            .borrow_mut()
            .allow(std::time::Instant::now())
        {
            tracing::info!(%peer, reason = why.label(), also_refused = also, "reverse: {detail}");
        }
    }
}

/// Why a reverse connection was closed without being parked; its Display is the log line.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// rustls could not start a server session (a configuration it refuses).
    #[error("cannot start a TLS session: {}", crate::tls::reason(.0))]
    TlsStart(rustls::Error),
    /// The TLS handshake failed: an `io::Error` wrapping the `rustls::Error` (or the socket's).
    #[error("TLS handshake failed: {}", crate::tls::io_reason(.0))]
    TlsHandshake(std::io::Error),
    /// `handshake_timeout` passed while waiting for `what` (TLS handshake, SOCKS5 BIND).
    #[error("no complete {what} within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    /// The BIND named a service that needs credentials other than those given.
    #[error("BIND for service {service:?} without its credentials")]
    CredentialsRequired { service: String },
    /// The SOCKS5 session failed or was refused, or its socket did.
    #[error(transparent)]
    Socks(SessionError<ServerError>),
    /// close_notify right after the BIND request.
    #[error("peer closed the TLS session right after BIND")]
    TlsClosed,
    /// The TLS session failed right after the BIND request.
    #[error("TLS session ended right after BIND: {}", crate::tls::reason(.0))]
    TlsEnded(rustls::Error),
    /// The socket could not leave tokio for the hand-off.
    #[error("cannot take the socket: {0}")]
    Socket(std::io::Error),
}

impl HandshakeError {
    /// The metric label it counts under.
    fn failure(&self) -> HandshakeFailure {
        use HandshakeFailure as F;
        match self {
            HandshakeError::TlsStart(_) | HandshakeError::TlsHandshake(_) => F::Tls,
            HandshakeError::Timeout { .. } => F::Timeout,
            HandshakeError::CredentialsRequired { .. } => F::AuthFailed,
            HandshakeError::TlsClosed | HandshakeError::TlsEnded(_) | HandshakeError::Socket(_) => {
                F::Closed
            }
            HandshakeError::Socks(e) => match e {
                SessionError::Session(e) => match e {
                    ServerError::CredentialsRequired { .. } | ServerError::UnknownUser { .. } => {
                        F::AuthFailed
                    }
                    ServerError::NoAcceptableMethod { .. } => F::NoAcceptableMethod,
                    ServerError::Timeout { .. } => F::Timeout,
                    ServerError::UnknownService(_) => F::UnknownService,
                    ServerError::UnsupportedCommand(_) => F::UnsupportedCommand,
                    ServerError::EarlyData(_)
                    | ServerError::Malformed { .. }
                    | ServerError::NotParked(_)
                    | ServerError::TlsSpoken
                    | ServerError::TooLong(_) => F::Malformed,
                },
                SessionError::Tls(_) => F::Tls,
                SessionError::Closed(_) | SessionError::Read { .. } | SessionError::Write(_) => {
                    F::Closed
                }
            },
        }
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, endpoint: &ReverseEndpoint) {
    let deadline = Instant::now() + endpoint.handshake_timeout;
    // From accept on: a prepared connection whose internal gateway vanished is noticed while
    // parked, and closed instead of being handed to a client.
    if let Err(e) = sallyport_dataplane::set_keepalive(stream.as_fd(), endpoint.keepalive) {
        tracing::debug!(%peer, error = %e, "reverse: cannot set keepalive");
    }
    let parked = match &endpoint.tls {
        None => handle_plain(stream, deadline, endpoint).await,
        Some(config) => handle_tls(config, stream, deadline, endpoint).await,
    };
    let (target, conn) = match parked {
        Ok(ok) => ok,
        Err(e) => {
            let why = e.failure();
            endpoint.stats.failed(why);
            endpoint.log_refusal(peer, why, &e.to_string());
            return;
        }
    };
    match endpoint.dataplane.park(target.index, conn) {
        Ok(()) => {
            endpoint
                .stats
                .prepared_accepted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(_) => {
            endpoint.stats.failed(HandshakeFailure::QueueFull);
            tracing::warn!(%peer, service = %target.service, "reverse: every worker queue is full; prepared connection closed");
        }
    }
}

/// What `handle` parks: the service and the connection.
type Prepared<'e> = (&'e BindTarget, OwnedConn);

impl Service for BindTarget {
    fn bind_name(&self) -> &str {
        &self.bind_name
    }
    fn public(&self) -> SocketAddr {
        self.public
    }
    fn credentials(&self) -> Option<&socks5::Credentials> {
        self.credentials.as_ref()
    }
}

/// Runs the server machine over `stream` until it parks (the first reply sent); `what` names
/// the negotiation in the timeout's log line. Returns the service and the session, with the
/// bytes received after the BIND request (which [`silent`] refuses).
async fn negotiate<'e, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    deadline: Instant,
    endpoint: &'e ReverseEndpoint,
    what: &'static str,
) -> Result<(&'e BindTarget, BindServer<'e, BindTarget>, Vec<u8>), HandshakeError> {
    let targets = &endpoint.targets;
    let mut session = BindServer::new(targets, deadline.into_std());
    let mut buf = Vec::with_capacity(64);
    match socks_io::drive(stream, &mut session, &mut buf).await {
        Ok(park) => Ok((&targets[park.service], session, buf)),
        Err(SessionError::Session(ServerError::Timeout { .. })) => Err(HandshakeError::Timeout {
            what,
            timeout: endpoint.handshake_timeout,
        }),
        Err(SessionError::Session(ServerError::CredentialsRequired { bind_name })) => {
            let service = targets.iter().find(|t| t.bind_name == bind_name);
            Err(HandshakeError::CredentialsRequired {
                service: service.map_or(bind_name, |t| t.service.clone()),
            })
        }
        Err(e) => Err(HandshakeError::Socks(e)),
    }
}

/// A prepared connection is silent until it is paired: bytes after the BIND request are a
/// protocol error (the machine's `EarlyData`), not something to hand on.
fn silent(session: &mut BindServer<'_, BindTarget>, bytes: &[u8]) -> Result<(), HandshakeError> {
    match session.handle(bytes, std::time::Instant::now()).action {
        Action::Close(e) => Err(HandshakeError::Socks(SessionError::Session(e))),
        Action::NeedInput | Action::Ready(_) => Ok(()),
    }
}

fn into_std(stream: TcpStream) -> Result<std::net::TcpStream, HandshakeError> {
    stream.into_std().map_err(HandshakeError::Socket)
}

async fn handle_plain(
    mut stream: TcpStream,
    deadline: Instant,
    endpoint: &ReverseEndpoint,
) -> Result<Prepared<'_>, HandshakeError> {
    let (target, mut session, leftover) =
        negotiate(&mut stream, deadline, endpoint, "SOCKS5 BIND").await?;
    silent(&mut session, &leftover)?;
    Ok((target, OwnedConn::new(into_std(stream)?, leftover)))
}

async fn handle_tls<'e>(
    config: &Reloadable<rustls::ServerConfig>,
    stream: TcpStream,
    deadline: Instant,
    endpoint: &'e ReverseEndpoint,
) -> Result<Prepared<'e>, HandshakeError> {
    let handshake = Handshake::server(config.current()).map_err(HandshakeError::TlsStart)?;
    let mut tls = tokio::time::timeout_at(deadline, tls_stream::handshake(stream, handshake))
        .await
        .map_err(|_| HandshakeError::Timeout {
            what: "TLS handshake",
            timeout: endpoint.handshake_timeout,
        })?
        .map_err(HandshakeError::TlsHandshake)?;
    // The driver flushes: the first reply is on the wire before the session changes hands.
    let (target, mut session, leftover) =
        negotiate(&mut tls, deadline, endpoint, "SOCKS5 BIND over TLS").await?;
    silent(&mut session, &leftover)?;
    let (tcp, mut tls_session) = tls.into_parts();
    // Plaintext already decrypted but nobody read is part of the stream too; a prepared
    // connection has none (records not yet opened stay in the session for the worker).
    let mut extra = [0u8; 64];
    match tls_session.read(&mut extra) {
        Ok(Read::End) => return Err(HandshakeError::TlsClosed),
        Ok(Read::Data(n)) => silent(&mut session, &extra[..n])?,
        Ok(Read::NeedInput) => {}
        Err(e) => return Err(HandshakeError::TlsEnded(e)),
    }
    let conn = OwnedConn::new(into_std(tcp)?, leftover).with_tls(tls_session);
    Ok((target, conn))
}

#[cfg(test)]
mod tests {
    use sallyport_dataplane::wire::bind::Message;
    use sallyport_dataplane::wire::socks5::{Command, Method};

    use super::*;

    #[test]
    fn handshake_errors_keep_their_labels_and_log_lines() {
        let socks = |e| HandshakeError::Socks(SessionError::Session(e));
        let cases = [
            (
                HandshakeError::Timeout {
                    what: "SOCKS5 BIND over TLS",
                    timeout: Duration::from_secs(2),
                },
                "timeout",
                "no complete SOCKS5 BIND over TLS within 2s",
            ),
            (
                HandshakeError::CredentialsRequired {
                    service: "vault".into(),
                },
                "auth_failed",
                "BIND for service \"vault\" without its credentials",
            ),
            (
                socks(ServerError::UnknownUser {
                    user: "bob".into(),
                }),
                "auth_failed",
                "unknown user/password for user \"bob\"",
            ),
            (
                socks(ServerError::NoAcceptableMethod {
                    offered: vec![Method::Other(0x80)],
                }),
                "no_acceptable_method",
                "no acceptable authentication method among [Other(128)]",
            ),
            (
                socks(ServerError::UnknownService("nope".into())),
                "unknown_service",
                "BIND for unknown service \"nope\" refused",
            ),
            (
                socks(ServerError::UnsupportedCommand(Command::Connect)),
                "unsupported_command",
                "Connect is not supported here; only BIND",
            ),
            (
                socks(ServerError::EarlyData(3)),
                "malformed",
                "3 bytes after BIND before pairing",
            ),
            (
                socks(ServerError::TlsSpoken),
                "malformed",
                "the peer speaks TLS, but [reverse] has no tls (or the peer's tls is set by mistake)",
            ),
            (
                socks(ServerError::TooLong(Message::Greeting)),
                "malformed",
                "SOCKS5 greeting too long",
            ),
            (
                HandshakeError::Socks(SessionError::Closed(Message::Request)),
                "closed",
                "peer closed before the SOCKS5 request was complete",
            ),
            (
                HandshakeError::TlsClosed,
                "closed",
                "peer closed the TLS session right after BIND",
            ),
        ];
        for (e, label, line) in cases {
            assert_eq!(e.failure().label(), label, "{e:?}");
            assert_eq!(e.to_string(), line);
        }
    }
}
