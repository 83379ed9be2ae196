//! Per-worker counters and gauges, written by exactly one worker thread (relaxed atomics, no
//! locks) and summed on read by the control thread. Metric names live in [`names`].
//!
//! This module does not format anything for people: `control` turns a [`Snapshot`] into
//! Prometheus text or JSON.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
    pub const SPLICE_FALLBACKS: &str = "sallyport_splice_fallbacks_total";
    pub const HANDSHAKE_FAILURES: &str = "sallyport_handshake_failures_total";
    pub const TLS_FAILURES: &str = "sallyport_public_tls_failures_total";
    /// Forwarding services: clients reset because the upstream refused or did not answer.
    pub const UPSTREAM_FAILURES: &str = "sallyport_upstream_failures_total";
    /// WebSocket listeners: upgrade requests answered with an HTTP error (404, 400, 426, 431…).
    pub const WS_REJECTS: &str = "sallyport_ws_rejects_total";
    pub const RECONNECTS: &str = "sallyport_reverse_dials_total";
}

/// Why a tunnel ended. Labels for `sallyport_tunnel_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions finished with EOF, every byte delivered.
    Completed,
    /// A read or write failed (reset, broken pipe); the other side was reset too.
    Error,
    /// The worker shut down with the tunnel open.
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 3] = [Self::Completed, Self::Error, Self::Shutdown];
    pub fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Error => "error",
            Self::Shutdown => "shutdown",
        }
    }
    fn index(self) -> usize {
        self as usize
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
    /// Forwarding services: clients reset because the upstream refused or did not answer.
    pub upstream_failures: AtomicU64,
    /// WebSocket listeners: upgrade requests answered with an HTTP error (404, 400, 426, 431…).
    pub ws_rejects: AtomicU64,
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerStats {
    pub services: Vec<ServiceStats>,
    pub tunnels_active: AtomicI64,
    pub tunnels_total: AtomicU64,
    pub bytes_upstream: AtomicU64,
    pub bytes_downstream: AtomicU64,
    pub closes: [AtomicU64; 3],
    pub splice_fallbacks: AtomicU64,
}

impl WorkerStats {
    pub fn new(services: usize) -> Self {
        WorkerStats {
            services: (0..services).map(|_| ServiceStats::default()).collect(),
            tunnels_active: AtomicI64::new(0),
            tunnels_total: AtomicU64::new(0),
            bytes_upstream: AtomicU64::new(0),
            bytes_downstream: AtomicU64::new(0),
            closes: Default::default(),
            splice_fallbacks: AtomicU64::new(0),
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

    pub fn tunnel_closed(&self, reason: CloseReason) {
        self.tunnels_active.fetch_sub(1, Ordering::Relaxed);
        self.closes[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, service: usize, reason: RefusalReason) {
        self.services[service].refused[reason as usize].fetch_add(1, Ordering::Relaxed);
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
    pub upstream_failures: u64,
    pub ws_rejects: u64,
}

/// Totals across workers at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<ServiceSnapshot>,
    pub tunnels_active: i64,
    pub tunnels_total: u64,
    pub bytes_upstream: u64,
    pub bytes_downstream: u64,
    /// Indexed like [`CloseReason::ALL`].
    pub closes: [u64; 3],
    pub splice_fallbacks: u64,
}

impl Snapshot {
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
                total.upstream_failures += load(&s.upstream_failures);
                total.ws_rejects += load(&s.ws_rejects);
            }
            snap.tunnels_active += w.tunnels_active.load(Ordering::Relaxed);
            snap.tunnels_total += load(&w.tunnels_total);
            snap.bytes_upstream += load(&w.bytes_upstream);
            snap.bytes_downstream += load(&w.bytes_downstream);
            for (t, c) in snap.closes.iter_mut().zip(&w.closes) {
                *t += load(c);
            }
            snap.splice_fallbacks += load(&w.splice_fallbacks);
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
        b.tunnel_closed(CloseReason::Completed);
        a.add_bytes(Direction::Upstream, 10);
        b.add_bytes(Direction::Downstream, 7);
        b.refused(0, RefusalReason::NoPrepared);
        let s = Snapshot::collect(2, [&a, &b]);
        assert_eq!(s.services[1].prepared, 5);
        assert_eq!(s.services[0].refused, [1, 0]);
        assert_eq!(s.tunnels_active, 1);
        assert_eq!(s.tunnels_total, 2);
        assert_eq!((s.bytes_upstream, s.bytes_downstream), (10, 7));
        assert_eq!(s.closes, [1, 0, 0]);
    }
}
