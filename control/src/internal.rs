//! The internal gateway's reverse pools: for each `reverse://` service, keep `prepared`
//! SOCKS5 BIND connections parked at the DMZ, refill one the moment one is used or lost, and
//! back off 100 ms, 200 ms, 400 ms … up to `retry_max` while the DMZ cannot be reached.
//!
//! The control thread only dials: connect, TLS handshake when the service has `tls` (verifying
//! the DMZ's certificate, presenting ours; the data plane's TLS driven under tokio, so other
//! dials go on meanwhile), then the SOCKS5 BIND session up to the first reply, run by the data
//! plane's sans-IO client machine (`wire::bind::client`, driven by [`crate::socks_io::drive`]).
//! Then the connection (with its TLS session) is handed to a data-plane worker, which parks it
//! (a few dozen bytes, no task), waits for the DMZ's second BIND reply, connects to the
//! back-end and relays. The worker reports what became of each leg ([`ReverseEvent`]); the
//! pool keeper here counts and refills. A failed dial is a typed `DialError` (counted by its
//! [`DialResult`], logged by its Display).
//!
//! With `backend_probe` (the default) the pool parks only while the back-end accepts
//! connections ([`crate::backend_probe`]): nothing before a first probe answers at start; when a
//! paired leg's back-end connect fails, the service's parked legs are released
//! (`Dataplane::release_reverse`, the DMZ sees them lost), dials stop, and the back-end is
//! probed with backoff until it answers, when the pool refills.
//!
//! This module listens on nothing and parses no SOCKS5 itself. States: `LIFECYCLE.md`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport_dataplane::tls::{Handshake, Read};
use sallyport_dataplane::wire::bind::client::{BindClient, ClientError};
use sallyport_dataplane::wire::socks5;
use sallyport_dataplane::{Dataplane, OwnedConn, ReverseEvent, ReverseIndex, ReverseOutcome};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::backend_probe::{self, BackendState, Change, ProbeError, Prober};
use crate::config::{HostPort, InternalService};
use crate::socks_io::{self, SessionError};
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

/// Why a dial did not give a prepared connection (or a leg was lost at once); its Display is
/// the log line's detail.
#[derive(Debug, thiserror::Error)]
enum DialError {
    /// The back-end's name did not resolve; no dial was made.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The connect to the DMZ failed.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The connect to the DMZ took longer than `connect_timeout`.
    #[error("no answer within {0:?}")]
    ConnectTimeout(Duration),
    /// rustls could not start a client session.
    #[error("cannot start a TLS session: {}", crate::tls::reason(.0))]
    TlsStart(rustls::Error),
    /// The TLS handshake failed: an `io::Error` wrapping the `rustls::Error` (or the socket's).
    #[error("TLS handshake with the DMZ failed: {}", crate::tls::io_reason(.0))]
    TlsHandshake(std::io::Error),
    /// The TLS handshake took longer than `connect_timeout`.
    #[error("TLS handshake with the DMZ took longer than {0:?}")]
    TlsTimeout(Duration),
    /// The TLS session failed during the SOCKS5 exchange, e.g. the DMZ rejected our
    /// certificate: TLS 1.3 tells the client after its side of the handshake is done, with an
    /// alert on the first read.
    #[error("TLS with the DMZ failed: {}", crate::tls::io_reason(.0))]
    Tls(std::io::Error),
    /// The SOCKS5 negotiation took longer than `connect_timeout`.
    #[error("SOCKS5 negotiation took longer than {0:?}")]
    NegotiationTimeout(Duration),
    /// The BIND request could not be encoded (a field over 255 bytes).
    #[error("{0}")]
    Encode(socks5::WireError),
    /// The DMZ answered but refused, or spoke TLS to a plain dial.
    #[error("{0}")]
    Refused(ClientError),
    /// The DMZ's bytes broke the protocol (malformed, too long), or it closed or failed mid-way.
    #[error("{0} (from the DMZ)")]
    Broken(SessionError<ClientError>),
    /// A write to the DMZ failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// The socket could not leave tokio for the hand-off.
    #[error("{0}")]
    Socket(std::io::Error),
    /// `Dataplane::park_reverse` refused: every worker queue is full.
    #[error("every worker queue is full")]
    QueueFull,
    /// A worker reported the leg lost within [`MIN_HEALTHY_PARK`] of parking.
    #[error("the DMZ closed a prepared connection right after parking it")]
    LostAtOnce,
}

impl DialError {
    /// The dial result it counts under.
    fn result(&self) -> DialResult {
        match self {
            DialError::Resolve(_) => DialResult::TargetUnresolved,
            DialError::Connect(_) | DialError::ConnectTimeout(_) => DialResult::ConnectFailed,
            DialError::TlsStart(_)
            | DialError::TlsHandshake(_)
            | DialError::TlsTimeout(_)
            | DialError::Tls(_) => DialResult::TlsFailed,
            DialError::NegotiationTimeout(_)
            | DialError::Encode(_)
            | DialError::Refused(_)
            | DialError::Broken(_)
            | DialError::Write(_)
            | DialError::Socket(_)
            | DialError::QueueFull
            | DialError::LostAtOnce => DialResult::Rejected,
        }
    }

    /// The client machine's failure, as the log names it (`timeout` is the negotiation's).
    fn socks(e: SessionError<ClientError>, timeout: Duration) -> DialError {
        match e {
            SessionError::Session(ClientError::Timeout { .. }) => {
                DialError::NegotiationTimeout(timeout)
            }
            SessionError::Session(ClientError::Encode(e)) => DialError::Encode(e),
            SessionError::Session(
                e @ (ClientError::Malformed { .. } | ClientError::TooLong(_)),
            ) => DialError::Broken(SessionError::Session(e)),
            SessionError::Session(e) => DialError::Refused(e),
            SessionError::Tls(e) => DialError::Tls(e),
            SessionError::Write(e) => DialError::Write(e),
            e @ (SessionError::Closed(_) | SessionError::Read { .. }) => DialError::Broken(e),
        }
    }
}

/// Why the back-end's name gave no address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("cannot resolve back-end {target}: {source}")]
    Lookup {
        target: HostPort,
        source: std::io::Error,
    },
    #[error("back-end {0} resolves to no address")]
    NoAddress(HostPort),
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
    /// The back-end's state (`backend_probe`).
    probe: Prober,
    /// What a dial checks right before parking: false while the back-end is down, so a dial
    /// that was in flight when it went down closes its connection instead.
    parking: Rc<Cell<bool>>,
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
    fn fail(&mut self, now: Instant, error: &DialError) {
        if self.retry_at.is_some() {
            return;
        }
        let delay = self.backoff.step();
        self.retry_at = Some(now + delay);
        if !self.failing {
            tracing::warn!(service = %self.service.name, dmz = %self.service.dmz, reason = error.result().label(),
                retry_in = ?delay, "reverse dial failed: {error}");
        }
        self.failing = true;
    }

    /// A paired leg's back-end connect failed (`why`): with probing on and the back-end up
    /// until now, release the parked legs, stop dialing, start probing. `false`: nothing
    /// changed (probing off, or already down).
    fn backend_failed(&mut self, index: ReverseIndex, why: &ProbeError) -> bool {
        if !self.probe.backend_failed(Instant::now()) {
            return false;
        }
        self.parking.set(false);
        self.release(index);
        tracing::warn!(service = %self.service.name, target = %self.service.target,
            "back-end {} {why}: {} parked connections released, probing",
            self.service.target, self.parked);
        self.service
            .stats
            .backend
            .set(BackendState::Down, Some(why.to_string()));
        true
    }

    /// Asks every worker to close this service's parked legs (each comes back `Released`).
    fn release(&self, index: ReverseIndex) {
        let full = self.service.dataplane.release_reverse(index);
        if full > 0 {
            // Asked again at the next probe while legs are still counted parked.
            tracing::debug!(service = %self.service.name, workers = full,
                "worker queues full: parked connections released on the next probe");
        }
    }

    /// The probe in flight answered (`Ok`) or not.
    fn probed(&mut self, index: ReverseIndex, result: Result<SocketAddr, ProbeError>) {
        let now = Instant::now();
        let name = &self.service.name;
        let target = &self.service.target;
        match (self.probe.answered(result.is_ok(), now), result) {
            (Change::UpAtStart, Ok(addr)) => {
                tracing::debug!(service = %name, %target, %addr, "back-end answers: parking");
                self.up();
            }
            (Change::Recovered, Ok(addr)) => {
                tracing::info!(service = %name, %target, %addr,
                    "back-end {target} answers again: parking {}", self.service.prepared);
                self.up();
            }
            (Change::DownAtStart, Err(why)) => {
                tracing::warn!(service = %name, %target,
                    "back-end {target} {why}: parking nothing until it answers, probing");
                self.service
                    .stats
                    .backend
                    .set(BackendState::Down, Some(why.to_string()));
            }
            _ => {
                if self.probe.state() == BackendState::Down && self.parked > 0 {
                    self.release(index); // A release a full queue refused, or a late park.
                }
            }
        }
    }

    fn up(&mut self) {
        self.parking.set(true);
        self.service.stats.backend.set(BackendState::Up, None);
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
        .map(|s| {
            let probe = Prober::new(s.backend_probe, s.retry_max, Instant::now());
            s.stats.backend.set(probe.state(), None);
            Pool {
                backoff: Backoff::new(s.retry_max),
                parking: Rc::new(Cell::new(probe.may_park())),
                probe,
                service: Rc::new(s),
                parked: 0,
                dialing: 0,
                retry_at: None,
                failing: false,
                last_backend_log: None,
            }
        })
        .collect();
    let (done_tx, mut done_rx) = unbounded_channel::<(ReverseIndex, Result<Dialed, DialError>)>();
    type Probed = (ReverseIndex, Result<SocketAddr, ProbeError>);
    let (probe_tx, mut probe_rx) = unbounded_channel::<Probed>();
    loop {
        let now = Instant::now();
        let mut dialing: usize = pools.iter().map(|p| p.dialing).sum();
        for (i, pool) in pools.iter_mut().enumerate() {
            let index = ReverseIndex(i);
            if pool.retry_at.is_some_and(|t| t <= now) {
                pool.retry_at = None;
            }
            if pool.probe.start_due(now) {
                let service = Rc::clone(&pool.service);
                let done = probe_tx.clone();
                tokio::task::spawn_local(async move {
                    let result = backend_probe::probe(&service).await;
                    let _ = done.send((index, result));
                });
            }
            while pool.retry_at.is_none()
                && pool.probe.may_park()
                && pool.parked + pool.dialing < pool.service.prepared
                && dialing < MAX_CONCURRENT_DIALS
            {
                pool.dialing += 1;
                dialing += 1;
                let service = Rc::clone(&pool.service);
                let parking = Rc::clone(&pool.parking);
                let done = done_tx.clone();
                tokio::task::spawn_local(async move {
                    let result = dial_and_park(&service, index, &parking).await;
                    let _ = done.send((index, result));
                });
            }
        }
        let next_retry = pools
            .iter()
            .flat_map(|p| [p.retry_at, p.probe.next_probe()])
            .flatten()
            .min();
        let retry = async {
            match next_retry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A dial's result first: its task sends it right after handing the leg to a
            // worker (no await between), so it is queued before any event of that leg. Taken
            // in random order, a `Paired` could be counted before the leg's `parked += 1` and
            // the pool would believe it holds one leg more than it does (and not refill).
            biased;
            Some((index, result)) = done_rx.recv() => {
                let pool = &mut pools[index.0];
                pool.dialing -= 1;
                match result {
                    Ok(Dialed::Parked) => {
                        pool.service.stats.dialed(DialResult::Parked);
                        pool.parked += 1;
                        pool.succeeded();
                    }
                    // The back-end went down during the dial: the connection was closed.
                    Ok(Dialed::Discarded) => pool.succeeded(),
                    Err(e) => {
                        pool.service.stats.dialed(e.result());
                        pool.fail(Instant::now(), &e);
                    }
                }
                pool.publish();
            }
            Some(event) = events.recv() => {
                let Some(pool) = pools.get_mut(event.service.0) else { continue };
                on_event(pool, event.service, event.outcome);
                pool.publish();
            }
            Some((index, result)) = probe_rx.recv() => {
                let Some(pool) = pools.get_mut(index.0) else { continue };
                pool.probed(index, result);
            }
            () = retry => {}
        }
    }
}

fn on_event(pool: &mut Pool, index: ReverseIndex, outcome: ReverseOutcome) {
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
                pool.fail(Instant::now(), &DialError::LostAtOnce);
            }
        }
        ReverseOutcome::Released => {
            pool.parked = pool.parked.saturating_sub(1);
        }
        ReverseOutcome::BackendFailed { errno } => {
            stats.backend_failures.fetch_add(1, Ordering::Relaxed);
            let why = ProbeError::from_errno(errno, pool.service.connect_timeout);
            if pool.backend_failed(index, &why) {
                return; // Logged as the state change.
            }
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

/// What a successful dial did with its connection.
enum Dialed {
    /// Handed to a worker.
    Parked,
    /// Closed: the back-end went down while it was dialing (`backend_probe`).
    Discarded,
}

/// Resolves the back-end, dials the DMZ, and hands the prepared connection to a worker, unless
/// `parking` went false meanwhile. The check and the hand-off run with no await between, on
/// the pool keeper's thread, so a release the keeper sends after it went false cannot miss a
/// leg: the leg's own message was queued first. `parking` is also checked before the BIND is
/// sent, so a dial that was connecting when the back-end went down is not parked at the DMZ
/// (where it would count as prepared, and open a `ready` service's door, for a moment).
async fn dial_and_park(
    service: &ReverseService,
    index: ReverseIndex,
    parking: &Cell<bool>,
) -> Result<Dialed, DialError> {
    let target = resolve(&service.target).await?;
    let Some((conn, public)) = dial(service, parking).await? else {
        return Ok(Dialed::Discarded);
    };
    if !parking.get() {
        return Ok(Dialed::Discarded);
    }
    service
        .dataplane
        .park_reverse(index, conn, service.backend(target), public)
        .map(|()| Dialed::Parked)
        .map_err(|_| DialError::QueueFull)
}

/// The back-end's address, looked up for every dial (and probe) so a DNS change takes effect
/// with the next prepared connection.
pub(crate) async fn resolve(target: &HostPort) -> Result<SocketAddr, ResolveError> {
    let mut addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|source| ResolveError::Lookup {
            target: target.clone(),
            source,
        })?;
    addrs
        .next()
        .ok_or_else(|| ResolveError::NoAddress(target.clone()))
}

/// Connects to the DMZ (and completes TLS when configured), then, while `proceed` holds,
/// negotiates, sends BIND and waits for the first reply (`None`: `proceed` went false before
/// the BIND; the connection is closed). The connection carries whatever was read after that
/// reply; the address is the first reply's BND (the DMZ's public address, for PROXY headers).
async fn dial(
    service: &ReverseService,
    proceed: &Cell<bool>,
) -> Result<Option<(OwnedConn, Option<SocketAddr>)>, DialError> {
    let addr = (service.dmz.host.as_str(), service.dmz.port);
    let connect = tokio::time::timeout(service.connect_timeout, TcpStream::connect(addr)).await;
    let mut stream = connect
        .map_err(|_| DialError::ConnectTimeout(service.connect_timeout))?
        .map_err(DialError::Connect)?;
    let _ = stream.set_nodelay(true);
    // Parked for minutes with nothing to say: the probes keep NAT and firewall state, and a
    // DMZ that vanished is noticed (the worker sees the error and the pool dials anew).
    if let Err(e) = sallyport_dataplane::set_keepalive(stream.as_fd(), service.keepalive) {
        tracing::debug!(error = %e, "reverse dial: cannot set keepalive");
    }
    let into_std = |s: TcpStream| s.into_std().map_err(DialError::Socket);
    let Some(tls) = &service.tls else {
        if !proceed.get() {
            return Ok(None);
        }
        let (buf, public) = negotiate(service, &mut stream).await?;
        return Ok(Some((OwnedConn::new(into_std(stream)?, buf), public)));
    };
    let handshake = Handshake::client(tls.config.current(), tls.server_name.clone())
        .map_err(DialError::TlsStart)?;
    let handshake = tokio::time::timeout(
        service.connect_timeout,
        tls_stream::handshake(stream, handshake),
    );
    let mut stream = handshake
        .await
        .map_err(|_| DialError::TlsTimeout(service.connect_timeout))?
        .map_err(DialError::TlsHandshake)?;
    if !proceed.get() {
        return Ok(None);
    }
    let (mut buf, public) = negotiate(service, &mut stream).await?;
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
    Ok(Some((
        OwnedConn::new(into_std(tcp)?, buf).with_tls(session),
        public,
    )))
}

/// Runs the client machine (greeting, user/password, BIND in one write; method choice, auth
/// status, first reply) within the service's `connect_timeout`. Returns the bytes read after
/// the first reply (maybe the second reply already): the parked leg's; and the first reply's
/// BND when it is an IP.
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    service: &ReverseService,
    stream: &mut S,
) -> Result<(Vec<u8>, Option<SocketAddr>), DialError> {
    let creds = service.credentials.as_ref().map(|c| socks5::Credentials {
        user: c.user.as_bytes().to_vec(),
        password: c.password.expose().as_bytes().to_vec(),
    });
    let failed = |e| DialError::socks(e, service.connect_timeout);
    let deadline = Instant::now() + service.connect_timeout;
    let mut session = BindClient::new(&service.bind_name, creds.as_ref(), deadline)
        .map_err(|e| failed(SessionError::Session(e)))?;
    let mut buf = Vec::with_capacity(64);
    socks_io::drive(stream, &mut session, &mut buf)
        .await
        .map_err(failed)?;
    Ok((buf, session.bound()))
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

    #[test]
    fn dial_errors_keep_their_log_lines_and_results() {
        use sallyport_dataplane::wire::bind::Message;
        let secs = Duration::from_secs(2);
        let socks = |e| DialError::socks(e, secs);
        let cases = [
            (
                socks(SessionError::Session(ClientError::Timeout {
                    waiting: Message::FirstReply,
                })),
                "rejected",
                "SOCKS5 negotiation took longer than 2s".to_string(),
            ),
            (
                socks(SessionError::Closed(Message::MethodChoice)),
                "rejected",
                "peer closed before the SOCKS5 method choice was complete (from the DMZ)".into(),
            ),
            (
                socks(SessionError::Session(ClientError::TooLong(
                    Message::FirstReply,
                ))),
                "rejected",
                "SOCKS5 first BIND reply too long (from the DMZ)".into(),
            ),
            (
                socks(SessionError::Session(ClientError::BindRefused {
                    bind_name: "echo".into(),
                    rep: 2,
                })),
                "rejected",
                "DMZ refused BIND for \"echo\" (REP 0x02: unknown service or not allowed)".into(),
            ),
            (
                socks(SessionError::Session(ClientError::TlsSpoken)),
                "rejected",
                ClientError::TlsSpoken.to_string(),
            ),
            (
                socks(SessionError::Write(std::io::ErrorKind::BrokenPipe.into())),
                "rejected",
                format!(
                    "write failed: {}",
                    std::io::Error::from(std::io::ErrorKind::BrokenPipe)
                ),
            ),
            (
                socks(SessionError::Tls(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    rustls::Error::DecryptError,
                ))),
                "tls_failed",
                format!(
                    "TLS with the DMZ failed: {}",
                    crate::tls::reason(&rustls::Error::DecryptError)
                ),
            ),
            (
                DialError::ConnectTimeout(secs),
                "connect_failed",
                "no answer within 2s".into(),
            ),
            (
                DialError::TlsTimeout(secs),
                "tls_failed",
                "TLS handshake with the DMZ took longer than 2s".into(),
            ),
            (
                DialError::Resolve(ResolveError::NoAddress(HostPort {
                    host: "db.internal".into(),
                    port: 5432,
                })),
                "target_unresolved",
                "back-end db.internal:5432 resolves to no address".into(),
            ),
        ];
        for (e, result, line) in cases {
            assert_eq!(e.result().label(), result, "{e:?}");
            assert_eq!(e.to_string(), line);
        }
    }
}
