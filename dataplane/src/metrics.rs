//! Per-worker counters and gauges, written by exactly one worker thread (relaxed atomics, no
//! locks) and summed on read by the control thread. Metric names live in [`names`].
//!
//! This module does not format anything for people: `control` turns a [`Snapshot`] into
//! Prometheus text or JSON.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::handoff::PublicIndex;

/// Metric names, one place for all of them.
pub mod names {
    pub const PREPARED: &str = "sallyport_prepared_connections";
    pub const WAITING_CLIENTS: &str = "sallyport_waiting_clients";
    pub const TUNNELS_ACTIVE: &str = "sallyport_tunnels_active";
    pub const TUNNELS_TOTAL: &str = "sallyport_tunnels_total";
    pub const BYTES: &str = "sallyport_bytes_total";
    pub const CLIENTS_ACCEPTED: &str = "sallyport_clients_accepted_total";
    pub const CLIENTS_WAITED: &str = "sallyport_clients_waited_total";
    pub const REFUSALS: &str = "sallyport_refusals_total";
    pub const PREPARED_LOST: &str = "sallyport_prepared_lost_total";
    pub const PREPARED_STOLEN: &str = "sallyport_prepared_stolen_total";
    pub const TUNNEL_CLOSES: &str = "sallyport_tunnel_closes_total";
    /// Tunnel closes by reason, side and errno (finer than [`TUNNEL_CLOSES`]).
    pub const TUNNEL_CLOSE_REASONS: &str = "sallyport_tunnel_close_reasons_total";
    pub const SPLICE_FALLBACKS: &str = "sallyport_splice_fallbacks_total";
    /// Listener accepts paused after EMFILE, ENFILE, ENOBUFS or ENOMEM.
    pub const ACCEPT_PAUSES: &str = "sallyport_accept_pauses_total";
    pub const HANDSHAKE_FAILURES: &str = "sallyport_handshake_failures_total";
    pub const TLS_FAILURES: &str = "sallyport_public_tls_failures_total";
    /// Connections from an `accept_proxy` source closed for a missing, truncated or malformed
    /// PROXY header.
    pub const PROXY_HEADER_FAILURES: &str = "sallyport_proxy_header_failures_total";
    /// Forwarding services: clients reset because the upstream refused or did not answer.
    pub const UPSTREAM_FAILURES: &str = "sallyport_upstream_failures_total";
    /// WebSocket listeners: upgrade requests answered with an HTTP error (404, 400, 426, 431…).
    pub const WS_REJECTS: &str = "sallyport_ws_rejects_total";
    pub const RECONNECTS: &str = "sallyport_reverse_dials_total";
    /// Public clients by admission verdict (label `verdict`, see [`super::Verdict`]).
    pub const ADMISSION: &str = "sallyport_admission_total";
    /// DMZ services: 1 while up (taking clients), 0 while down.
    pub const SERVICE_UP: &str = "sallyport_service_up";
}

/// What happened to a public client at the door: label `verdict` of
/// `sallyport_admission_total`. Only what the gateway sees is counted: a SYN the kernel
/// refuses (a closed listener, a netfilter rule) never reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted and handed to its service.
    Accept,
    /// Refused because its service was down (e.g. reset after waiting on a listener shared
    /// with a service that is up).
    Down,
    /// Dropped without an answer.
    Drop,
    /// Refused for a per-source limit (`max_per_source`, `rate_per_source`).
    Limit,
    /// Refused by `allow` / `deny`.
    Reject,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Self::Accept,
        Self::Down,
        Self::Drop,
        Self::Limit,
        Self::Reject,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Down => "down",
            Self::Drop => "drop",
            Self::Limit => "limit",
            Self::Reject => "reject",
        }
    }
    /// Position in [`Verdict::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The coarse outcome of a tunnel: labels (`reason`) of `sallyport_tunnel_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions finished with EOF, every byte delivered.
    Completed,
    /// A leg failed (reset, broken pipe, a TLS or WebSocket error, a silent peer); the other
    /// side was reset too.
    Error,
    /// The worker shut down with the tunnel open.
    Shutdown,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Self::Completed, Self::Error, Self::Shutdown];
    pub fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Error => "error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// One leg of a tunnel: the one facing the client (the public client at the DMZ, the DMZ leg
/// at the internal side) or the one facing the target (the prepared connection at the DMZ,
/// the back-end at the internal side). STYLE's third side, `Internal` (the gateway itself),
/// is a [`CloseReason`] without a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Target,
}

impl Side {
    pub const ALL: [Side; 2] = [Self::Client, Self::Target];
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Target => "target",
        }
    }
    /// The other leg.
    pub fn peer(self) -> Side {
        match self {
            Self::Client => Self::Target,
            Self::Target => Self::Client,
        }
    }
    /// 0 for the client leg, 1 for the target leg (the order of a tunnel's legs).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What ended a tunnel, finer than [`Outcome`]: label `reason` of
/// `sallyport_tunnel_close_reasons_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Both directions finished with EOF, every byte delivered.
    Completed,
    /// A socket read or write failed (the errno says how).
    Io,
    /// A WebSocket peer answered no keepalive ping.
    Keepalive,
    /// The ring could not watch a leg (arming its poll failed).
    Poll,
    /// The peer broke the protocol of the leg: a TLS error or alert, a WebSocket protocol
    /// error, a refused or missing upgrade.
    Protocol,
    /// The worker shut down with the tunnel open.
    Shutdown,
    /// No byte moved either way for the service's `idle_timeout`.
    Idle,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Self::Completed,
        Self::Idle,
        Self::Io,
        Self::Keepalive,
        Self::Poll,
        Self::Protocol,
        Self::Shutdown,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Idle => "idle",
            Self::Io => "io",
            Self::Keepalive => "keepalive",
            Self::Poll => "poll",
            Self::Protocol => "protocol",
            Self::Shutdown => "shutdown",
        }
    }
    pub fn outcome(self) -> Outcome {
        match self {
            Self::Completed => Outcome::Completed,
            Self::Shutdown => Outcome::Shutdown,
            Self::Idle | Self::Io | Self::Keepalive | Self::Poll | Self::Protocol => Outcome::Error,
        }
    }
}

/// The errno of a failed socket operation, as a metric label: the ones a relay meets, the
/// rest as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    ConnAborted,
    ConnRefused,
    ConnReset,
    HostUnreach,
    NetUnreach,
    /// No errno: the failure was not a system call's (or nothing failed).
    None,
    Other,
    Pipe,
    TimedOut,
}

impl Errno {
    pub const ALL: [Errno; 9] = [
        Self::ConnAborted,
        Self::ConnRefused,
        Self::ConnReset,
        Self::HostUnreach,
        Self::NetUnreach,
        Self::None,
        Self::Other,
        Self::Pipe,
        Self::TimedOut,
    ];
    pub fn from_raw(errno: Option<i32>) -> Errno {
        match errno {
            None => Self::None,
            Some(libc::ECONNABORTED) => Self::ConnAborted,
            Some(libc::ECONNREFUSED) => Self::ConnRefused,
            Some(libc::ECONNRESET) => Self::ConnReset,
            Some(libc::EHOSTUNREACH) => Self::HostUnreach,
            Some(libc::ENETUNREACH) => Self::NetUnreach,
            Some(libc::EPIPE) => Self::Pipe,
            Some(libc::ETIMEDOUT) => Self::TimedOut,
            Some(_) => Self::Other,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Self::ConnAborted => "econnaborted",
            Self::ConnRefused => "econnrefused",
            Self::ConnReset => "econnreset",
            Self::HostUnreach => "ehostunreach",
            Self::NetUnreach => "enetunreach",
            Self::None => "none",
            Self::Other => "other",
            Self::Pipe => "epipe",
            Self::TimedOut => "etimedout",
        }
    }
}

/// Why one tunnel ended: what happened, on which leg (`None`: no leg's doing, e.g. completed
/// or shut down), with which errno. Small and `Copy`, made on the relay's error path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub reason: Reason,
    pub side: Option<Side>,
    pub errno: Errno,
}

impl CloseReason {
    pub const COMPLETED: CloseReason = CloseReason::without_side(Reason::Completed);
    pub const SHUTDOWN: CloseReason = CloseReason::without_side(Reason::Shutdown);
    /// How many distinct values there are (the size of a per-reason counter table).
    pub const COUNT: usize = Reason::ALL.len() * (Side::ALL.len() + 1) * Errno::ALL.len();

    pub const fn without_side(reason: Reason) -> CloseReason {
        CloseReason {
            reason,
            side: None,
            errno: Errno::None,
        }
    }

    /// A failure on leg `side`: `reason`, with the errno of `error` if it has one.
    pub fn failed(reason: Reason, side: Side, error: &std::io::Error) -> CloseReason {
        CloseReason {
            reason,
            side: Some(side),
            errno: Errno::from_raw(error.raw_os_error()),
        }
    }

    pub fn outcome(self) -> Outcome {
        self.reason.outcome()
    }

    /// The `side` label: the leg's, or `none`.
    pub fn side_label(self) -> &'static str {
        self.side.map_or("none", Side::label)
    }

    /// Position in a counter table of [`CloseReason::COUNT`] entries.
    pub fn index(self) -> usize {
        let side = self.side.map_or(0, |s| s.index() + 1);
        let errno = Errno::ALL
            .iter()
            .position(|e| *e == self.errno)
            .unwrap_or(0);
        let reason = Reason::ALL
            .iter()
            .position(|r| *r == self.reason)
            .unwrap_or(0);
        (reason * (Side::ALL.len() + 1) + side) * Errno::ALL.len() + errno
    }

    /// The value at `index` (inverse of [`CloseReason::index`]).
    pub fn from_index(index: usize) -> Option<CloseReason> {
        let errno = *Errno::ALL.get(index % Errno::ALL.len())?;
        let rest = index / Errno::ALL.len();
        let side = match rest % (Side::ALL.len() + 1) {
            0 => None,
            s => Some(Side::ALL[s - 1]),
        };
        let reason = *Reason::ALL.get(rest / (Side::ALL.len() + 1))?;
        Some(CloseReason {
            reason,
            side,
            errno,
        })
    }
}

/// Why a public client was refused (reset) at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// No prepared connection arrived within the service's `timeout`.
    NoPrepared,
    /// The worker shut down while the client waited.
    Shutdown,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 2] = [Self::NoPrepared, Self::Shutdown];
    pub fn label(self) -> &'static str {
        match self {
            Self::NoPrepared => "no_prepared",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Direction of bytes through a tunnel: upstream is toward the back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Downstream,
    Upstream,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
        }
    }
}

/// Per-service numbers kept by one worker.
#[derive(Debug, Default)]
pub struct ServiceStats {
    pub prepared: AtomicI64,
    pub waiting: AtomicI64,
    pub accepted: AtomicU64,
    pub waited: AtomicU64,
    pub refused: [AtomicU64; 2],
    pub prepared_lost: AtomicU64,
    pub stolen: AtomicU64,
    /// Public clients whose TLS handshake failed or timed out.
    pub tls_failures: AtomicU64,
    /// Connections from an `accept_proxy` source without a valid PROXY header in time.
    pub proxy_header_failures: AtomicU64,
    /// Forwarding services: clients reset because the upstream refused or did not answer.
    pub upstream_failures: AtomicU64,
    /// WebSocket listeners: upgrade requests answered with an HTTP error (404, 400, 426, 431…).
    pub ws_rejects: AtomicU64,
    /// Indexed by [`Verdict::index`].
    pub admission: [AtomicU64; 5],
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerStats {
    pub services: Vec<ServiceStats>,
    pub tunnels_active: AtomicI64,
    pub tunnels_total: AtomicU64,
    pub bytes_upstream: AtomicU64,
    pub bytes_downstream: AtomicU64,
    /// Tunnels made by [`crate::Dataplane::link`] (also counted in `tunnels_*`).
    pub links_active: AtomicI64,
    pub links_total: AtomicU64,
    /// Indexed by [`CloseReason::index`].
    pub closes: Box<[AtomicU64]>,
    pub splice_fallbacks: AtomicU64,
    /// Accept pauses after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    pub accept_pauses: AtomicU64,
}

impl WorkerStats {
    pub fn new(services: usize) -> Self {
        WorkerStats {
            services: (0..services).map(|_| ServiceStats::default()).collect(),
            tunnels_active: AtomicI64::new(0),
            tunnels_total: AtomicU64::new(0),
            bytes_upstream: AtomicU64::new(0),
            bytes_downstream: AtomicU64::new(0),
            links_active: AtomicI64::new(0),
            links_total: AtomicU64::new(0),
            closes: (0..CloseReason::COUNT).map(|_| AtomicU64::new(0)).collect(),
            splice_fallbacks: AtomicU64::new(0),
            accept_pauses: AtomicU64::new(0),
        }
    }

    pub fn add_bytes(&self, dir: Direction, n: usize) {
        let counter = match dir {
            Direction::Upstream => &self.bytes_upstream,
            Direction::Downstream => &self.bytes_downstream,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn tunnel_opened(&self) {
        self.tunnels_active.fetch_add(1, Ordering::Relaxed);
        self.tunnels_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A tunnel made by [`crate::Dataplane::link`] opened (after [`WorkerStats::tunnel_opened`]).
    pub fn link_opened(&self) {
        self.links_active.fetch_add(1, Ordering::Relaxed);
        self.links_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A link's tunnel closed (beside [`WorkerStats::tunnel_closed`]).
    pub fn link_closed(&self) {
        self.links_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn tunnel_closed(&self, reason: CloseReason) {
        self.tunnels_active.fetch_sub(1, Ordering::Relaxed);
        if let Some(counter) = self.closes.get(reason.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refused(&self, service: usize, reason: RefusalReason) {
        self.services[service].refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one admission `verdict` for a client of `service`.
    pub fn admission(&self, service: PublicIndex, verdict: Verdict) {
        if let Some(s) = self.services.get(service.0) {
            s.admission[verdict.index()].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Per-service totals across workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSnapshot {
    pub prepared: i64,
    pub waiting: i64,
    pub accepted: u64,
    pub waited: u64,
    /// Indexed like [`RefusalReason::ALL`].
    pub refused: [u64; 2],
    pub prepared_lost: u64,
    pub stolen: u64,
    pub tls_failures: u64,
    pub proxy_header_failures: u64,
    pub upstream_failures: u64,
    pub ws_rejects: u64,
    /// Indexed like [`Verdict::ALL`].
    pub admission: [u64; 5],
    /// DMZ services: the admission state (up/down, since when, why); `None` for forwarding
    /// services. Filled by [`crate::Dataplane::snapshot`], not by [`Snapshot::collect`].
    pub door: Option<crate::door::DoorStatus>,
}

/// Totals across workers at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<ServiceSnapshot>,
    pub tunnels_active: i64,
    pub tunnels_total: u64,
    pub bytes_upstream: u64,
    pub bytes_downstream: u64,
    /// Tunnels made by [`crate::Dataplane::link`] relaying now, and ever opened (both also
    /// counted in `tunnels_active` and `tunnels_total`). A link handed over but not yet
    /// drained from a worker's queue is in neither.
    pub links_active: i64,
    pub links_total: u64,
    /// Indexed like [`Outcome::ALL`].
    pub closes: [u64; 3],
    /// Every close reason counted at least once, in [`CloseReason::index`] order.
    pub close_reasons: Vec<(CloseReason, u64)>,
    pub splice_fallbacks: u64,
    pub accept_pauses: u64,
}

impl Snapshot {
    /// The counters of public service `index`.
    pub fn service(&self, index: PublicIndex) -> &ServiceSnapshot {
        &self.services[index.0]
    }

    /// Sums the given workers' stats.
    pub fn collect<'a>(
        services: usize,
        workers: impl IntoIterator<Item = &'a WorkerStats>,
    ) -> Self {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut snap = Snapshot {
            services: vec![ServiceSnapshot::default(); services],
            ..Snapshot::default()
        };
        let mut closes = vec![0u64; CloseReason::COUNT];
        for w in workers {
            for (total, s) in snap.services.iter_mut().zip(&w.services) {
                total.prepared += s.prepared.load(Ordering::Relaxed);
                total.waiting += s.waiting.load(Ordering::Relaxed);
                total.accepted += load(&s.accepted);
                total.waited += load(&s.waited);
                for (t, r) in total.refused.iter_mut().zip(&s.refused) {
                    *t += load(r);
                }
                total.prepared_lost += load(&s.prepared_lost);
                total.stolen += load(&s.stolen);
                total.tls_failures += load(&s.tls_failures);
                total.proxy_header_failures += load(&s.proxy_header_failures);
                total.upstream_failures += load(&s.upstream_failures);
                total.ws_rejects += load(&s.ws_rejects);
                for (t, a) in total.admission.iter_mut().zip(&s.admission) {
                    *t += load(a);
                }
            }
            snap.tunnels_active += w.tunnels_active.load(Ordering::Relaxed);
            snap.tunnels_total += load(&w.tunnels_total);
            snap.bytes_upstream += load(&w.bytes_upstream);
            snap.bytes_downstream += load(&w.bytes_downstream);
            snap.links_active += w.links_active.load(Ordering::Relaxed);
            snap.links_total += load(&w.links_total);
            for (t, c) in closes.iter_mut().zip(w.closes.iter()) {
                *t += load(c);
            }
            snap.splice_fallbacks += load(&w.splice_fallbacks);
            snap.accept_pauses += load(&w.accept_pauses);
        }
        for (index, n) in closes.into_iter().enumerate() {
            let Some(reason) = CloseReason::from_index(index).filter(|_| n > 0) else {
                continue;
            };
            let outcome = Outcome::ALL.iter().position(|o| *o == reason.outcome());
            snap.closes[outcome.unwrap_or(0)] += n;
            snap.close_reasons.push((reason, n));
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_workers() {
        let a = WorkerStats::new(2);
        let b = WorkerStats::new(2);
        a.services[1].prepared.fetch_add(3, Ordering::Relaxed);
        b.services[1].prepared.fetch_add(2, Ordering::Relaxed);
        a.tunnel_opened();
        b.tunnel_opened();
        b.tunnel_closed(CloseReason::COMPLETED);
        a.tunnel_opened();
        a.link_opened();
        a.add_bytes(Direction::Upstream, 10);
        b.add_bytes(Direction::Downstream, 7);
        b.refused(0, RefusalReason::NoPrepared);
        a.admission(PublicIndex(1), Verdict::Accept);
        b.admission(PublicIndex(1), Verdict::Accept);
        b.admission(PublicIndex(1), Verdict::Down);
        let s = Snapshot::collect(2, [&a, &b]);
        assert_eq!(s.services[1].admission, [2, 1, 0, 0, 0]);
        assert_eq!(s.services[1].prepared, 5);
        assert_eq!(s.services[0].refused, [1, 0]);
        assert_eq!(s.tunnels_active, 2);
        assert_eq!(s.tunnels_total, 3);
        assert_eq!((s.links_active, s.links_total), (1, 1));
        assert_eq!((s.bytes_upstream, s.bytes_downstream), (10, 7));
        assert_eq!(s.closes, [1, 0, 0]);
        assert_eq!(s.close_reasons, vec![(CloseReason::COMPLETED, 1)]);
    }

    #[test]
    fn close_reasons_index_round_trip() {
        for index in 0..CloseReason::COUNT {
            let reason = CloseReason::from_index(index).expect("in range");
            assert_eq!(reason.index(), index);
        }
        assert_eq!(CloseReason::from_index(CloseReason::COUNT), None);
        let reset = std::io::Error::from_raw_os_error(libc::ECONNRESET);
        let r = CloseReason::failed(Reason::Io, Side::Target, &reset);
        assert_eq!(
            (r.errno, r.side_label(), r.outcome()),
            (Errno::ConnReset, "target", Outcome::Error)
        );
    }
}
