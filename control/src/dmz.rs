//! The DMZ's reverse endpoint: the SOCKS5 server internal gateways dial into.
//!
//! Each connection is negotiated here on the control thread: the TLS handshake first when
//! `[reverse] tls` is set (the data plane's TLS over tokio, [`crate::tls_stream`]; with
//! `client_ca` a client certificate signed by that CA is required), then SOCKS5 (no-auth or RFC 1929 user/password, then BIND with DST.ADDR = the
//! service's bind name), all within `handshake_timeout`. On success the first BIND reply carries
//! the service's public address and the connection, now a *prepared connection*, is handed to
//! a data-plane worker to be parked, with its TLS session; the worker sends the second reply
//! when it pairs it with a public client. Anything else gets the matching SOCKS reply (or TLS
//! alert) and is closed, counted and logged with the reason.
//!
//! This module does not relay bytes and does not keep parked connections.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sallyport_dataplane::tls::{Handshake, Read, Reloadable};
use sallyport_dataplane::wire::socks5::{self, Command, Host, Method, Parsed};
use sallyport_dataplane::{Dataplane, OwnedConn};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::socks_io::{self, ReadError};
use crate::stats::{ControlStats, HandshakeFailure};
use crate::tls_stream;

/// A public service as the reverse endpoint knows it.
#[derive(Debug, Clone)]
pub struct BindTarget {
    pub service: String,
    pub bind_name: String,
    /// Index of the service in the data plane.
    pub index: usize,
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
}

/// Most SOCKS5 negotiations in flight at once. Beyond it the reverse listener stops accepting
/// (connections wait in the kernel's backlog) rather than growing memory without bound.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 1024;

/// Accepts and negotiates until the task is dropped.
pub async fn serve(listener: TcpListener, endpoint: Rc<ReverseEndpoint>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let endpoint = Rc::clone(&endpoint);
                tokio::task::spawn_local(async move {
                    handle(stream, peer, &endpoint).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, "reverse listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A failed negotiation: the metric label and a sentence for the log.
struct Failure {
    why: HandshakeFailure,
    detail: String,
}

fn fail(why: HandshakeFailure, detail: impl Into<String>) -> Failure {
    Failure {
        why,
        detail: detail.into(),
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, endpoint: &ReverseEndpoint) {
    let deadline = Instant::now() + endpoint.handshake_timeout;
    let parked = match &endpoint.tls {
        None => handle_plain(stream, deadline, endpoint).await,
        Some(config) => handle_tls(config, stream, deadline, endpoint).await,
    };
    let (target, conn) = match parked {
        Ok(ok) => ok,
        Err(f) => {
            endpoint.stats.failed(f.why);
            tracing::info!(%peer, reason = f.why.label(), "reverse: {}", f.detail);
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

fn timed_out(endpoint: &ReverseEndpoint, what: &str) -> Failure {
    fail(
        HandshakeFailure::Timeout,
        format!("no complete {what} within {:?}", endpoint.handshake_timeout),
    )
}

/// A prepared connection is silent until it is paired: bytes after the BIND request are a
/// protocol error, not something to hand on.
fn no_leftover(leftover: &[u8]) -> Result<(), Failure> {
    if leftover.is_empty() {
        Ok(())
    } else {
        Err(fail(
            HandshakeFailure::Malformed,
            format!("{} bytes after BIND before pairing", leftover.len()),
        ))
    }
}

fn into_std(stream: TcpStream) -> Result<std::net::TcpStream, Failure> {
    stream.into_std().map_err(|e| {
        fail(
            HandshakeFailure::Closed,
            format!("cannot take the socket: {e}"),
        )
    })
}

async fn handle_plain(
    mut stream: TcpStream,
    deadline: Instant,
    endpoint: &ReverseEndpoint,
) -> Result<Prepared<'_>, Failure> {
    let (target, leftover) = tokio::time::timeout_at(deadline, negotiate(&mut stream, endpoint))
        .await
        .map_err(|_| timed_out(endpoint, "SOCKS5 BIND"))??;
    no_leftover(&leftover)?;
    Ok((target, OwnedConn::new(into_std(stream)?, leftover)))
}

async fn handle_tls<'e>(
    config: &Reloadable<rustls::ServerConfig>,
    stream: TcpStream,
    deadline: Instant,
    endpoint: &'e ReverseEndpoint,
) -> Result<Prepared<'e>, Failure> {
    let handshake = Handshake::server(config.current()).map_err(|e| {
        fail(
            HandshakeFailure::Tls,
            format!("cannot start a TLS session: {}", crate::tls::reason(&e)),
        )
    })?;
    let mut tls = tokio::time::timeout_at(deadline, tls_stream::handshake(stream, handshake))
        .await
        .map_err(|_| timed_out(endpoint, "TLS handshake"))?
        .map_err(|e| {
            fail(
                HandshakeFailure::Tls,
                format!("TLS handshake failed: {}", crate::tls::io_reason(&e)),
            )
        })?;
    // `send` flushes: the first reply is on the wire before the session changes hands.
    let (target, leftover) = tokio::time::timeout_at(deadline, negotiate(&mut tls, endpoint))
        .await
        .map_err(|_| timed_out(endpoint, "SOCKS5 BIND over TLS"))??;
    no_leftover(&leftover)?;
    let (tcp, mut session) = tls.into_parts();
    // Plaintext already decrypted but nobody read is part of the stream too; a prepared
    // connection has none (records not yet opened stay in the session for the worker).
    let mut extra = [0u8; 64];
    match session.read(&mut extra) {
        Ok(Read::End) => {
            return Err(fail(
                HandshakeFailure::Closed,
                "peer closed the TLS session right after BIND",
            ))
        }
        Ok(Read::Data(n)) => no_leftover(&extra[..n])?,
        Ok(Read::NeedInput) => {}
        Err(e) => {
            return Err(fail(
                HandshakeFailure::Closed,
                format!(
                    "TLS session ended right after BIND: {}",
                    crate::tls::reason(&e)
                ),
            ))
        }
    }
    let conn = OwnedConn::new(into_std(tcp)?, leftover).with_tls(session);
    Ok((target, conn))
}

async fn read_message<S: AsyncRead + Unpin, T>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Parsed<T>,
    what: &str,
) -> Result<T, Failure> {
    socks_io::read_message(stream, buf, parse, what)
        .await
        .map_err(|e| match e {
            ReadError::Closed(detail) => fail(HandshakeFailure::Closed, detail),
            ReadError::Malformed(_) if socks_io::looks_like_tls(buf) => fail(
                HandshakeFailure::Malformed,
                "the peer speaks TLS, but [reverse] has no tls (or the peer's tls is set by mistake)",
            ),
            ReadError::Malformed(detail) => fail(HandshakeFailure::Malformed, detail),
            ReadError::Tls(detail) => fail(HandshakeFailure::Tls, detail),
        })
}

fn write_failure(e: &std::io::Error) -> Failure {
    match crate::tls::rustls_error(e) {
        Some(_) => fail(HandshakeFailure::Tls, crate::tls::io_reason(e)),
        None => fail(HandshakeFailure::Closed, format!("write failed: {e}")),
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), Failure> {
    // flush: over TLS the records may still sit in rustls after write_all.
    stream
        .write_all(bytes)
        .await
        .map_err(|e| write_failure(&e))?;
    stream.flush().await.map_err(|e| write_failure(&e))
}

async fn reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    rep: u8,
    addr: SocketAddr,
) -> Result<(), Failure> {
    let mut out = Vec::with_capacity(22);
    socks5::encode_reply(rep, addr, &mut out);
    send(stream, &out).await
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

async fn negotiate<'e, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    endpoint: &'e ReverseEndpoint,
) -> Result<(&'e BindTarget, Vec<u8>), Failure> {
    let mut buf = Vec::with_capacity(64);
    let greeting = read_message(stream, &mut buf, socks5::parse_greeting, "greeting").await?;
    let any_credentials = endpoint.targets.iter().any(|t| t.credentials.is_some());
    let method = if greeting.offers(Method::UserPass) && any_credentials {
        Method::UserPass
    } else if greeting.offers(Method::NoAuth) {
        Method::NoAuth
    } else if greeting.offers(Method::UserPass) {
        Method::UserPass
    } else {
        let mut out = Vec::new();
        socks5::encode_method_choice(socks5::NO_ACCEPTABLE_METHOD, &mut out);
        send(stream, &out).await?;
        return Err(fail(
            HandshakeFailure::NoAcceptableMethod,
            format!(
                "no acceptable authentication method among {:?}",
                greeting.methods
            ),
        ));
    };
    let mut out = Vec::new();
    socks5::encode_method_choice(method.to_byte(), &mut out);
    send(stream, &out).await?;

    let mut authenticated = None;
    if method == Method::UserPass {
        let creds = read_message(stream, &mut buf, socks5::parse_userpass, "user/password").await?;
        let known = !any_credentials
            || endpoint
                .targets
                .iter()
                .any(|t| t.credentials.as_ref() == Some(&creds));
        out.clear();
        socks5::encode_userpass_status(known, &mut out);
        send(stream, &out).await?;
        if !known {
            return Err(fail(
                HandshakeFailure::AuthFailed,
                format!(
                    "unknown user/password for user {:?}",
                    String::from_utf8_lossy(&creds.user)
                ),
            ));
        }
        authenticated = Some(creds);
    }

    let request = read_message(stream, &mut buf, socks5::parse_request, "request").await?;
    if request.command != Command::Bind {
        reply(stream, socks5::rep::COMMAND_NOT_SUPPORTED, unspecified()).await?;
        return Err(fail(
            HandshakeFailure::UnsupportedCommand,
            format!("{:?} is not supported here; only BIND", request.command),
        ));
    }
    let target = match &request.host {
        Host::Domain(name) => endpoint.targets.iter().find(|t| &t.bind_name == name),
        Host::Ip(_) => None,
    };
    let Some(target) = target else {
        reply(stream, socks5::rep::NOT_ALLOWED, unspecified()).await?;
        return Err(fail(
            HandshakeFailure::UnknownService,
            format!(
                "BIND for unknown service {:?} refused",
                request.host.to_string()
            ),
        ));
    };
    if target.credentials.is_some() && target.credentials != authenticated {
        reply(stream, socks5::rep::NOT_ALLOWED, unspecified()).await?;
        return Err(fail(
            HandshakeFailure::AuthFailed,
            format!(
                "BIND for service {:?} without its credentials",
                target.service
            ),
        ));
    }
    reply(stream, socks5::rep::SUCCEEDED, target.public).await?;
    Ok((target, buf))
}
