//! The internal gateway's reverse pools: for each `reverse://` service, keep `prepared`
//! SOCKS5 BIND connections parked at the DMZ, refill one the moment one is used or lost, and
//! back off 100 ms, 200 ms, 400 ms … up to `retry_max` while the DMZ cannot be reached.
//!
//! The control thread only dials: connect, TLS handshake when the service has `tls` (verifying
//! the DMZ's certificate, presenting ours; the data plane's TLS driven under tokio, so other
//! dials go on meanwhile), SOCKS5
//! negotiation, BIND, first reply. Then the connection (with its TLS session) is handed to a
//! data-plane worker, which parks it (a few dozen bytes, no task),
//! waits for the DMZ's second BIND reply, connects to the back-end and relays. The worker
//! reports what became of each leg ([`ReverseEvent`]); the pool keeper here counts and refills.
//! This module listens on nothing. States: `LIFECYCLE.md`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport_dataplane::tls::{Handshake, Read};
use sallyport_dataplane::wire::socks5::{self, Command, Host, Method, Parsed};
use sallyport_dataplane::{Dataplane, OwnedConn, ReverseEvent, ReverseOutcome};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::config::{HostPort, InternalService};
use crate::socks_io::{self, ReadError};
use crate::stats::{DialResult, InternalStats};
use crate::tls_stream;

/// First retry delay after a failed dial.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Most reverse dials (connect + SOCKS5 negotiation) a gateway runs at once. Filling a large
/// pool, or refilling after the DMZ comes back, then arrives as a steady stream instead of a
/// burst of thousands of handshakes (which also keeps the memory of both gateways flat).
pub const MAX_CONCURRENT_DIALS: usize = 64;
/// A parked connection that ends sooner than this after parking counts as a failed dial, so a
/// DMZ that accepts and drops at once is retried with backoff rather than in a tight loop.
const MIN_HEALTHY_PARK: Duration = Duration::from_millis(100);
/// At most one back-end failure log line per service per this interval.
const BACKEND_LOG_EVERY: Duration = Duration::from_secs(1);

/// Exponential backoff: 100 ms, 200 ms, 400 ms … capped; reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: BACKOFF_START.min(max),
            max,
        }
    }

    /// The delay to wait now; doubles the following one.
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START.min(self.max);
    }
}

/// One reverse service as the pool runs it: the config's [`InternalService`] (the one
/// description of such a service; its fields read through `Deref`) with the service's name and
/// the handles it reports to.
pub struct ReverseService {
    pub name: String,
    pub config: InternalService,
    pub stats: Arc<InternalStats>,
    pub dataplane: Arc<Dataplane>,
}

impl std::ops::Deref for ReverseService {
    type Target = InternalService;
    fn deref(&self) -> &InternalService {
        &self.config
    }
}

/// Why a dial did not give a prepared connection.
#[derive(Debug)]
struct DialError {
    result: DialResult,
    detail: String,
}

fn rejected(detail: impl Into<String>) -> DialError {
    DialError {
        result: DialResult::Rejected,
        detail: detail.into(),
    }
}

fn tls_failed(detail: impl Into<String>) -> DialError {
    DialError {
        result: DialResult::TlsFailed,
        detail: detail.into(),
    }
}

/// A failed write: a TLS failure when rustls says so.
fn write_failed(e: &std::io::Error) -> DialError {
    match crate::tls::rustls_error(e) {
        Some(_) => tls_failed(format!(
            "TLS with the DMZ failed: {}",
            crate::tls::io_reason(e)
        )),
        None => rejected(format!("write failed: {e}")),
    }
}

/// The pool keeper's view of one service.
struct Pool {
    service: Rc<ReverseService>,
    /// Legs parked at the DMZ (handed to a worker, not yet paired or lost).
    parked: usize,
    /// Dials in flight.
    dialing: usize,
    backoff: Backoff,
    /// While set, no new dial starts before this instant.
    retry_at: Option<Instant>,
    /// The service is failing: one line was logged, the next success logs recovery.
    failing: bool,
    last_backend_log: Option<Instant>,
}

impl Pool {
    fn publish(&self) {
        self.service
            .stats
            .parked
            .store(self.parked as i64, Ordering::Relaxed);
    }

    /// A dial failed or a leg died at once: wait before the next round of dials. Several
    /// dials failing together count as one step of the backoff.
    fn fail(&mut self, now: Instant, result: DialResult, detail: &str) {
        if self.retry_at.is_some() {
            return;
        }
        let delay = self.backoff.step();
        self.retry_at = Some(now + delay);
        if !self.failing {
            tracing::warn!(service = %self.service.name, dmz = %self.service.dmz, reason = result.label(),
                retry_in = ?delay, "reverse dial failed: {detail}");
        }
        self.failing = true;
    }

    fn succeeded(&mut self) {
        if self.failing {
            tracing::info!(service = %self.service.name, dmz = %self.service.dmz,
                "reverse dial succeeded again; refilling");
        }
        self.failing = false;
        self.backoff.reset();
    }
}

/// The channel workers report reverse-leg outcomes on; give the sender to the data plane.
pub fn event_channel() -> (
    UnboundedSender<ReverseEvent>,
    UnboundedReceiver<ReverseEvent>,
) {
    unbounded_channel()
}

/// Keeps every reverse service's pool full until the task is dropped. `services[i]` is the
/// service the data plane knows as reverse index `i`.
pub async fn run_pools(services: Vec<ReverseService>, mut events: UnboundedReceiver<ReverseEvent>) {
    let mut pools: Vec<Pool> = services
        .into_iter()
        .map(|s| Pool {
            backoff: Backoff::new(s.retry_max),
            service: Rc::new(s),
            parked: 0,
            dialing: 0,
            retry_at: None,
            failing: false,
            last_backend_log: None,
        })
        .collect();
    let (done_tx, mut done_rx) = unbounded_channel::<(usize, Result<(), DialError>)>();
    loop {
        let now = Instant::now();
        let mut dialing: usize = pools.iter().map(|p| p.dialing).sum();
        for (index, pool) in pools.iter_mut().enumerate() {
            if pool.retry_at.is_some_and(|t| t <= now) {
                pool.retry_at = None;
            }
            while pool.retry_at.is_none()
                && pool.parked + pool.dialing < pool.service.prepared
                && dialing < MAX_CONCURRENT_DIALS
            {
                pool.dialing += 1;
                dialing += 1;
                let service = Rc::clone(&pool.service);
                let done = done_tx.clone();
                tokio::task::spawn_local(async move {
                    let result = dial_and_park(&service, index).await;
                    let _ = done.send((index, result));
                });
            }
        }
        let next_retry = pools.iter().filter_map(|p| p.retry_at).min();
        let retry = async {
            match next_retry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((index, result)) = done_rx.recv() => {
                let pool = &mut pools[index];
                pool.dialing -= 1;
                match result {
                    Ok(()) => {
                        pool.service.stats.dialed(DialResult::Parked);
                        pool.parked += 1;
                        pool.succeeded();
                    }
                    Err(e) => {
                        pool.service.stats.dialed(e.result);
                        pool.fail(Instant::now(), e.result, &e.detail);
                    }
                }
                pool.publish();
            }
            Some(event) = events.recv() => {
                let Some(pool) = pools.get_mut(event.service) else { continue };
                on_event(pool, event.outcome);
                pool.publish();
            }
            () = retry => {}
        }
    }
}

fn on_event(pool: &mut Pool, outcome: ReverseOutcome) {
    let stats = &pool.service.stats;
    match outcome {
        ReverseOutcome::Paired => {
            pool.parked = pool.parked.saturating_sub(1);
            stats.tunnels.fetch_add(1, Ordering::Relaxed);
        }
        ReverseOutcome::Lost { parked } => {
            pool.parked = pool.parked.saturating_sub(1);
            stats.lost.fetch_add(1, Ordering::Relaxed);
            if parked < MIN_HEALTHY_PARK {
                pool.fail(
                    Instant::now(),
                    DialResult::Rejected,
                    "the DMZ closed a prepared connection right after parking it",
                );
            }
        }
        ReverseOutcome::BackendFailed { errno } => {
            stats.backend_failures.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if pool
                .last_backend_log
                .is_none_or(|t| now.duration_since(t) >= BACKEND_LOG_EVERY)
            {
                pool.last_backend_log = Some(now);
                let why = match errno {
                    Some(e) => std::io::Error::from_raw_os_error(e).to_string(),
                    None => format!("no answer within {:?}", pool.service.connect_timeout),
                };
                tracing::info!(service = %pool.service.name, target = %pool.service.target,
                    "back-end unreachable ({why}); tunnel reset");
            }
        }
    }
}

async fn read_message<S: AsyncRead + Unpin, T>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Parsed<T>,
    what: &str,
) -> Result<T, DialError> {
    socks_io::read_message(stream, buf, parse, what)
        .await
        .map_err(|e| match e {
            // E.g. the DMZ rejected our certificate: TLS 1.3 tells the client after its side
            // of the handshake is done, with an alert on the first read.
            ReadError::Tls(reason) => tls_failed(format!("TLS with the DMZ failed: {reason}")),
            ReadError::Malformed(_) if socks_io::looks_like_tls(buf) => rejected(
                "the DMZ answered with TLS: its reverse endpoint has [reverse] tls, so this \
                 service needs tls = { ca = ... } too",
            ),
            ReadError::Closed(_) | ReadError::Malformed(_) => {
                rejected(format!("{e} (from the DMZ)"))
            }
        })
}

/// Resolves the back-end, dials the DMZ, and hands the prepared connection to a worker.
async fn dial_and_park(service: &ReverseService, index: usize) -> Result<(), DialError> {
    let target = resolve(&service.target).await.map_err(|detail| DialError {
        result: DialResult::TargetUnresolved,
        detail,
    })?;
    let conn = dial(service).await?;
    service
        .dataplane
        .park_reverse(index, conn, service.backend(target))
        .map_err(|_| rejected("every worker queue is full"))
}

/// The back-end's address, looked up for every dial so a DNS change takes effect with the
/// next prepared connection.
async fn resolve(target: &HostPort) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot resolve back-end {target}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("back-end {target} resolves to no address"))
}

/// Connects to the DMZ (and completes TLS when configured), negotiates, sends BIND and waits
/// for the first reply. The connection carries whatever was read after that reply.
async fn dial(service: &ReverseService) -> Result<OwnedConn, DialError> {
    let addr = (service.dmz.host.as_str(), service.dmz.port);
    let connect = tokio::time::timeout(service.connect_timeout, TcpStream::connect(addr)).await;
    let mut stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(DialError {
                result: DialResult::ConnectFailed,
                detail: e.to_string(),
            })
        }
        Err(_) => {
            return Err(DialError {
                result: DialResult::ConnectFailed,
                detail: format!("no answer within {:?}", service.connect_timeout),
            })
        }
    };
    let _ = stream.set_nodelay(true);
    let into_std = |s: TcpStream| s.into_std().map_err(|e| rejected(e.to_string()));
    let Some(tls) = &service.tls else {
        let buf = negotiate_within(service, &mut stream).await?;
        return Ok(OwnedConn::new(into_std(stream)?, buf));
    };
    let handshake =
        Handshake::client(tls.config.current(), tls.server_name.clone()).map_err(|e| {
            tls_failed(format!(
                "cannot start a TLS session: {}",
                crate::tls::reason(&e)
            ))
        })?;
    let handshake = tokio::time::timeout(
        service.connect_timeout,
        tls_stream::handshake(stream, handshake),
    );
    let mut stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(tls_failed(format!(
                "TLS handshake with the DMZ failed: {}",
                crate::tls::io_reason(&e)
            )))
        }
        Err(_) => {
            return Err(tls_failed(format!(
                "TLS handshake with the DMZ took longer than {:?}",
                service.connect_timeout
            )))
        }
    };
    let mut buf = negotiate_within(service, &mut stream).await?;
    let (tcp, mut session) = stream.into_parts();
    // Plaintext already decrypted (the second reply, if the DMZ paired this leg at once)
    // belongs after the first reply: move it into the hand-off's leftover bytes, where the
    // worker looks first. Records not yet opened stay in the session.
    let mut chunk = [0u8; 64];
    // End (close_notify): the worker sees it on its first read; NeedInput: nothing more yet;
    // an error: the worker meets it too.
    while let Ok(Read::Data(n)) = session.read(&mut chunk) {
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(OwnedConn::new(into_std(tcp)?, buf).with_tls(session))
}

/// `negotiate` within the service's `connect_timeout`.
async fn negotiate_within<S: AsyncRead + AsyncWrite + Unpin>(
    service: &ReverseService,
    stream: &mut S,
) -> Result<Vec<u8>, DialError> {
    match tokio::time::timeout(service.connect_timeout, negotiate(service, stream)).await {
        Ok(result) => result,
        Err(_) => Err(rejected(format!(
            "SOCKS5 negotiation took longer than {:?}",
            service.connect_timeout
        ))),
    }
}

async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    service: &ReverseService,
    stream: &mut S,
) -> Result<Vec<u8>, DialError> {
    let creds = service.credentials.as_ref().map(|c| socks5::Credentials {
        user: c.user.as_bytes().to_vec(),
        password: c.password.expose().as_bytes().to_vec(),
    });
    let mut out = Vec::with_capacity(600);
    let method = if creds.is_some() {
        Method::UserPass
    } else {
        Method::NoAuth
    };
    socks5::encode_greeting(&[method], &mut out);
    // Pipelined: the whole request goes out before the method choice comes back, which
    // saves round trips; the server reads it in order.
    if let Some(creds) = &creds {
        socks5::encode_userpass(creds, &mut out).map_err(|e| rejected(e.to_string()))?;
    }
    let host = Host::Domain(service.bind_name.clone());
    socks5::encode_request(Command::Bind, &host, 0, &mut out)
        .map_err(|e| rejected(e.to_string()))?;
    stream.write_all(&out).await.map_err(|e| write_failed(&e))?;
    // Over TLS the records may still sit in rustls after write_all.
    stream.flush().await.map_err(|e| write_failed(&e))?;

    let mut buf = Vec::with_capacity(64);
    let chosen = read_message(
        stream,
        &mut buf,
        socks5::parse_method_choice,
        "method choice",
    )
    .await?;
    if chosen != method.to_byte() {
        return Err(rejected(format!(
            "DMZ refused authentication method {:#04x} (answered {chosen:#04x})",
            method.to_byte()
        )));
    }
    if creds.is_some() {
        let ok = read_message(
            stream,
            &mut buf,
            socks5::parse_userpass_status,
            "auth status",
        )
        .await?;
        if !ok {
            return Err(rejected("DMZ rejected the user/password"));
        }
    }
    let first = read_message(stream, &mut buf, socks5::parse_reply, "first BIND reply").await?;
    if first.rep != socks5::rep::SUCCEEDED {
        return Err(rejected(format!(
            "DMZ refused BIND for {:?} (REP {:#04x}{})",
            service.bind_name,
            first.rep,
            if first.rep == socks5::rep::NOT_ALLOWED {
                ": unknown service or not allowed"
            } else {
                ""
            }
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let steps: Vec<u128> = (0..5).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.step().as_millis(), 100);
        let mut tiny = Backoff::new(Duration::from_millis(50));
        assert_eq!(tiny.step().as_millis(), 50);
    }
}
