//! The internal gateway's view of a reverse service's back-end (`backend_probe`, on by
//! default): prepared connections are parked at the DMZ only while the back-end accepts
//! connections, so "back-end down" reaches the DMZ as "no prepared connection" (which the DMZ
//! answers at SYN) instead of as a reset after a public client was accepted.
//!
//! [`Prober`] is the state machine (no I/O, the clock passed in): `starting` (nothing parked
//! until the first probe answers), `up` (park), `down` (a back-end connect after pairing failed,
//! or a probe did: nothing parked, probes every 100 ms, 200 ms, 400 ms … capped at
//! `retry_max`). [`probe`] is one probe: resolve the back-end's name, then a plain TCP connect
//! within `connect_timeout`, closed at once (after a PROXY `UNKNOWN`/`LOCAL` header when the
//! service sends PROXY headers, as load balancers' health checks do). For `tls://`, `ws://`
//! and `wss://` back-ends the TCP connect is the whole probe: a back-end whose port accepts
//! but whose TLS or upgrade fails is still "up" (those failures reach the client as a reset, as
//! before). [`BackendHealth`] is what `/stats` shows.
//!
//! The pool keeper (`internal.rs`) applies the transitions: releasing the parked legs through
//! `Dataplane::release_reverse`, stopping and resuming its dials, logging one line per change.
//! This module dials no DMZ and parks nothing.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sallyport_dataplane::wire::proxy;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::internal::{resolve, Backoff, ResolveError, ReverseService};

/// The back-end as the pool keeper last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendState {
    /// A connect after pairing failed, or the probe at start did: nothing is parked; probing.
    Down,
    /// Probing before the first park at start-up.
    Starting,
    /// `backend_probe = false`: parked regardless of the back-end.
    #[default]
    Unchecked,
    /// The last probe answered (or no connect has failed since): parking.
    Up,
}

impl BackendState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Starting => "starting",
            Self::Unchecked => "unchecked",
            Self::Up => "up",
        }
    }
}

/// Why the back-end is down: a probe's failure or the data plane's connect error.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The connect failed (`refused`, `unreachable (…)`, …).
    #[error("{}", describe(.0))]
    Connect(std::io::Error),
    /// No answer within `connect_timeout`.
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    /// The back-end's name gave no address (the resolver's words).
    #[error("does not resolve ({0})")]
    Unresolved(String),
}

impl ProbeError {
    /// The error a worker reported for a paired leg's back-end connect (`errno`; `None`: no
    /// answer within `timeout`).
    pub fn from_errno(errno: Option<i32>, timeout: Duration) -> ProbeError {
        match errno {
            Some(e) => ProbeError::Connect(std::io::Error::from_raw_os_error(e)),
            None => ProbeError::Timeout(timeout),
        }
    }
}

/// "refused" for the common case (the log line reads "back-end HOST:PORT refused: …").
fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused".into(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => format!("unreachable ({e})"),
        ErrorKind::TimedOut => format!("did not answer ({e})"),
        _ => format!("failed ({e})"),
    }
}

/// What a probe's answer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The first probe at start failed: parking nothing until it answers.
    DownAtStart,
    /// Still down (or still up): nothing to log.
    None,
    /// Down, and this probe answered: park again.
    Recovered,
    /// The first probe at start answered: park.
    UpAtStart,
}

/// One service's back-end state machine; see the module header.
#[derive(Debug)]
pub struct Prober {
    enabled: bool,
    state: BackendState,
    backoff: Backoff,
    /// When the next probe may start; `None` while one is in flight or none is needed.
    next: Option<Instant>,
}

impl Prober {
    /// `enabled` (`backend_probe`): starts in `starting` with a probe due at once; otherwise
    /// `unchecked` for good.
    pub fn new(enabled: bool, retry_max: Duration, now: Instant) -> Prober {
        Prober {
            enabled,
            state: if enabled {
                BackendState::Starting
            } else {
                BackendState::Unchecked
            },
            backoff: Backoff::new(retry_max),
            next: enabled.then_some(now),
        }
    }

    pub fn state(&self) -> BackendState {
        self.state
    }

    /// Prepared connections may be parked now.
    pub fn may_park(&self) -> bool {
        matches!(self.state, BackendState::Up | BackendState::Unchecked)
    }

    /// When the next probe is due (`None`: none is waiting to start).
    pub fn next_probe(&self) -> Option<Instant> {
        self.next
    }

    /// A probe should start now: marks it in flight.
    pub fn start_due(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|t| t <= now) {
            self.next = None;
            return true;
        }
        false
    }

    /// A paired leg's back-end connect failed. `true` when this takes the back-end down
    /// (release the parked legs, stop dialing); `false` when probing is off or it is already.
    pub fn backend_failed(&mut self, now: Instant) -> bool {
        if self.state != BackendState::Up {
            return false;
        }
        self.state = BackendState::Down;
        self.backoff.reset();
        self.next = Some(now + self.backoff.step());
        true
    }

    /// The probe in flight answered (`Ok`) or failed.
    pub fn answered(&mut self, answered: bool, now: Instant) -> Change {
        let before = self.state;
        if !self.enabled || before == BackendState::Up {
            return Change::None; // Not ours to judge (a late answer after a state change).
        }
        if answered {
            self.state = BackendState::Up;
            self.backoff.reset();
            self.next = None;
            return if before == BackendState::Starting {
                Change::UpAtStart
            } else {
                Change::Recovered
            };
        }
        self.state = BackendState::Down;
        self.next = Some(now + self.backoff.step());
        if before == BackendState::Starting {
            Change::DownAtStart
        } else {
            Change::None
        }
    }
}

/// One probe of `service`'s back-end: see the module header. Returns the address that answered.
pub async fn probe(service: &ReverseService) -> Result<SocketAddr, ProbeError> {
    let addr = resolve(&service.target).await.map_err(|e| {
        ProbeError::Unresolved(match e {
            ResolveError::Lookup { source, .. } => source.to_string(),
            ResolveError::NoAddress(_) => "no address".into(),
        })
    })?;
    let connect = tokio::time::timeout(service.connect_timeout, TcpStream::connect(addr));
    let mut stream = connect
        .await
        .map_err(|_| ProbeError::Timeout(service.connect_timeout))?
        .map_err(ProbeError::Connect)?;
    if let Some(version) = service.proxy_protocol {
        // A back-end that expects a PROXY header logs a connection without one as an error;
        // one with no addresses says "a health check, not a client". Best effort.
        let mut header = Vec::new();
        proxy::encode_unknown(version, &mut header);
        let _ = tokio::time::timeout(service.connect_timeout, stream.write_all(&header)).await;
    }
    let _ = stream.shutdown().await;
    Ok(addr)
}

/// The back-end's state for `/stats`: written by the pool keeper on each change.
#[derive(Debug, Default)]
pub struct BackendHealth(Mutex<HealthView>);

#[derive(Debug, Default)]
struct HealthView {
    state: BackendState,
    since: Option<Instant>,
    reason: Option<String>,
}

impl BackendHealth {
    /// Records a change to `state` (`reason`: why it is down).
    pub fn set(&self, state: BackendState, reason: Option<String>) {
        let mut view = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *view = HealthView {
            state,
            since: Some(Instant::now()),
            reason,
        };
    }

    pub fn state(&self) -> BackendState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).state
    }

    /// `{"state": "up"|"down"|"starting"|"unchecked", "for_ms": N, "reason": "…"|null}`.
    pub fn to_json(&self) -> Value {
        let view = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let for_ms = view
            .since
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
        json!({
            "state": view.state.label(),
            "for_ms": for_ms,
            "reason": view.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(500);

    #[test]
    fn off_parks_regardless_and_never_probes() {
        let now = Instant::now();
        let mut p = Prober::new(false, MAX, now);
        assert_eq!(p.state(), BackendState::Unchecked);
        assert!(p.may_park());
        assert!(!p.start_due(now));
        assert!(!p.backend_failed(now));
        assert!(p.may_park());
        assert_eq!(p.next_probe(), None);
    }

    #[test]
    fn start_probes_first_and_parks_only_after_an_answer() {
        let t0 = Instant::now();
        let mut p = Prober::new(true, MAX, t0);
        assert_eq!(p.state(), BackendState::Starting);
        assert!(!p.may_park());
        assert!(p.start_due(t0));
        assert!(!p.start_due(t0), "one probe in flight at a time");
        assert_eq!(p.answered(false, t0), Change::DownAtStart);
        assert!(!p.may_park());
        // Backoff: 100 ms, 200 ms, 400 ms, then capped at retry_max.
        let mut now = t0;
        for (step, change) in [
            (100, Change::None),
            (200, Change::None),
            (400, Change::None),
        ] {
            let due = p.next_probe().expect("a probe is scheduled");
            assert_eq!(due - now, Duration::from_millis(step));
            assert!(!p.start_due(due - Duration::from_millis(1)));
            assert!(p.start_due(due));
            now = due;
            assert_eq!(p.answered(false, now), change);
        }
        assert_eq!(p.next_probe().map(|d| d - now), Some(MAX));
        assert!(p.start_due(now + MAX));
        assert_eq!(p.answered(true, now + MAX), Change::Recovered);
        assert!(p.may_park());
        assert_eq!(p.next_probe(), None);
    }

    #[test]
    fn a_failed_connect_takes_it_down_once_and_backoff_restarts() {
        let t0 = Instant::now();
        let mut p = Prober::new(true, MAX, t0);
        assert!(p.start_due(t0));
        assert_eq!(p.answered(true, t0), Change::UpAtStart);
        assert!(p.backend_failed(t0));
        assert!(!p.backend_failed(t0), "already down: one transition");
        assert!(!p.may_park());
        assert_eq!(p.next_probe(), Some(t0 + Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(100);
        assert!(p.start_due(t1));
        assert_eq!(p.answered(true, t1), Change::Recovered);
        // Down again later: the backoff starts over at 100 ms.
        let t2 = t1 + Duration::from_secs(5);
        assert!(p.backend_failed(t2));
        assert_eq!(p.next_probe(), Some(t2 + Duration::from_millis(100)));
    }

    #[test]
    fn reasons_read_as_the_log_line_says() {
        let refused = ProbeError::from_errno(Some(111), Duration::from_secs(1));
        assert_eq!(refused.to_string(), "refused");
        let silent = ProbeError::from_errno(None, Duration::from_secs(2));
        assert_eq!(silent.to_string(), "did not answer within 2s");
        let unreachable = ProbeError::from_errno(Some(113), Duration::from_secs(1));
        assert!(
            unreachable.to_string().starts_with("unreachable ("),
            "{unreachable}"
        );
    }

    #[test]
    fn health_json_names_state_and_reason() {
        let h = BackendHealth::default();
        assert_eq!(h.to_json()["state"], "unchecked");
        h.set(BackendState::Down, Some("refused".into()));
        let v = h.to_json();
        assert_eq!(v["state"], "down");
        assert_eq!(v["reason"], "refused");
        assert!(v["for_ms"].as_u64().is_some());
        assert_eq!(h.state(), BackendState::Down);
    }
}
