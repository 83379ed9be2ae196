//! Per-source verdicts taken in userspace, right after `accept`: a public listener's `allow`,
//! `deny`, `max_per_source` and `rate_per_source` for the sources the kernel does not judge.
//!
//! One [`SourceGate`] per public service, shared by every worker (an `Arc`). It judges a
//! source when
//! - no kernel table enforces the service's policy (no CAP_NET_ADMIN, `nft` missing, or the
//!   table not installed yet), or
//! - the address came from a PROXY header (`accept_proxy` sources: the kernel only saw the
//!   balancer), whatever the kernel does.
//!
//! Limits are counted per [`source_key`] (an IPv4 address, an IPv6 /64) in a sharded table
//! that is touched only when a client is accepted and when its connection ends (a [`Held`]
//! is dropped). The table is bounded: when a shard is full of sources with live connections a
//! new source is admitted uncounted (and counted in [`GateCounts::untracked`]) rather than
//! refused, so a host with many addresses cannot lock others out by filling it.
//!
//! `max_per_source` under a kernel table is counted here too, because the kernel cannot count
//! live connections without connection tracking for the whole host: the gate reports each
//! source that reaches its limit (and each that drops below it) as a [`FullChange`], the control
//! side puts it in (and takes it out of) the table's set of full sources, and from then on the
//! kernel refuses that source's SYNs itself. Between the two, a client over the limit is reset
//! here after accept.
//!
//! This module does not touch sockets or the kernel: the caller resets a refused connection
//! (userspace cannot stay silent to a SYN the kernel already answered, so `deny_action =
//! "drop"` acts as a reject here), and the control side installs the kernel table.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::admission::{listed, source_key, IpNet, SourcePolicy};

/// Shards of the per-source table (lock contention across workers stays low).
const SHARDS: usize = 16;
/// Most sources one shard tracks; [`SHARDS`] × this is the table's bound.
const SHARD_CAPACITY: usize = 4096;
/// A source without live connections is forgotten once its rate window is this old.
const IDLE: Duration = Duration::from_secs(1);

/// Most [`FullChange`]s kept until the control side takes them; beyond, the oldest wait for
/// the next change of the same source (the userspace count still refuses meanwhile).
const MAX_FULL_CHANGES: usize = 65_536;

/// A source (its [`source_key`]) reached `max_per_source` (`full`) or dropped below it, while
/// a kernel table judges the listener: the control side mirrors it into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullChange {
    pub key: IpAddr,
    pub full: bool,
}

/// Why a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `allow` does not list it, or `deny` does.
    Listed,
    /// It is at `max_per_source` or over `rate_per_source`.
    Limit,
}

impl Refusal {
    /// The `verdict` label of `sallyport_admission_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Listed => "reject",
            Refusal::Limit => "limit",
        }
    }
}

/// Verdicts counted by one gate (all workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateCounts {
    /// Refused by `allow` / `deny`.
    pub rejected: u64,
    /// Refused by `max_per_source` / `rate_per_source`.
    pub limited: u64,
    /// Admitted without being counted: the source table was full.
    pub untracked: u64,
}

#[derive(Debug)]
struct Entry {
    /// Live connections (only with `max_per_source`).
    active: u32,
    /// Token bucket for `rate_per_source`: tokens left, refilled at `rate`/s up to `rate`.
    tokens: f64,
    refilled: Instant,
}

type Shard = HashMap<IpAddr, Entry>;

/// One public service's userspace verdicts.
#[derive(Debug)]
pub struct SourceGate {
    policy: SourcePolicy,
    accept_proxy: Vec<IpNet>,
    /// A kernel table judges direct sources: this gate then judges only PROXY addresses.
    kernel: AtomicBool,
    shards: Box<[Mutex<Shard>]>,
    /// Sources that reached or left `max_per_source`, for the kernel table (kernel mode only).
    full_changes: Mutex<Vec<FullChange>>,
    rejected: AtomicU64,
    limited: AtomicU64,
    untracked: AtomicU64,
}

/// A counted connection of a source under `max_per_source`: dropping it (when the
/// connection ends, whichever way) gives the slot back.
#[derive(Debug)]
pub struct Held {
    gate: Arc<SourceGate>,
    key: IpAddr,
    /// Counted for the kernel table's set of full sources (a direct source under a table).
    mirrored: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut shard = self.gate.shard(self.key);
        if let Some(entry) = shard.get_mut(&self.key) {
            let was_full = self.gate.policy.max_per_source == Some(entry.active);
            entry.active = entry.active.saturating_sub(1);
            if entry.active == 0 && self.gate.policy.rate_per_source.is_none() {
                shard.remove(&self.key);
            }
            drop(shard);
            if was_full && self.mirrored {
                self.gate.note_full(self.key, false);
            }
        }
    }
}

impl SourceGate {
    pub fn new(policy: SourcePolicy, accept_proxy: Vec<IpNet>) -> Arc<SourceGate> {
        let shards = if policy.max_per_source.is_some() || policy.rate_per_source.is_some() {
            SHARDS
        } else {
            0
        };
        Arc::new(SourceGate {
            policy,
            accept_proxy,
            kernel: AtomicBool::new(false),
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            full_changes: Mutex::new(Vec::new()),
            rejected: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        })
    }

    pub fn policy(&self) -> &SourcePolicy {
        &self.policy
    }

    /// Whether the gate has anything to judge at all.
    pub fn is_open(&self) -> bool {
        self.policy.is_open()
    }

    /// Says that a kernel table now judges (true) or no longer judges (false) direct sources.
    pub fn set_kernel(&self, on: bool) {
        self.kernel.store(on, Ordering::Relaxed);
    }

    pub fn kernel(&self) -> bool {
        self.kernel.load(Ordering::Relaxed)
    }

    /// The sources that reached or left `max_per_source` since the last call, oldest first.
    pub fn take_full_changes(&self) -> Vec<FullChange> {
        std::mem::take(&mut *self.full_changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn note_full(&self, key: IpAddr, full: bool) {
        let mut changes = self.full_changes.lock().unwrap_or_else(|p| p.into_inner());
        if changes.len() < MAX_FULL_CHANGES {
            changes.push(FullChange { key, full });
        }
    }

    pub fn counts(&self) -> GateCounts {
        GateCounts {
            rejected: self.rejected.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            untracked: self.untracked.load(Ordering::Relaxed),
        }
    }

    fn shard(&self, key: IpAddr) -> MutexGuard<'_, Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % self.shards.len()];
        // A worker that panicked while holding the lock left counts, not broken invariants.
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verdict on a new connection from `source`. `via_proxy`: the address came from a
    /// PROXY header (judged here even when the kernel judges the listener's direct sources);
    /// otherwise it is the socket's peer, and an `accept_proxy` source passes (its header is
    /// judged when it has been read). `Ok(Some(held))`: keep `held` as long as the connection.
    pub fn check(
        self: &Arc<Self>,
        source: IpAddr,
        via_proxy: bool,
        now: Instant,
    ) -> Result<Option<Held>, Refusal> {
        if self.policy.is_open() {
            return Ok(None);
        }
        if !via_proxy && listed(&self.accept_proxy, source) {
            return Ok(None);
        }
        // Under a kernel table a direct source was judged by the kernel, except for the live
        // connections of `max_per_source`, which only this gate counts.
        let mirrored = !via_proxy && self.kernel();
        if mirrored && self.policy.max_per_source.is_none() {
            return Ok(None);
        }
        if !mirrored && !self.policy.admits(source) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Listed);
        }
        let max = self.policy.max_per_source;
        let rate = self.policy.rate_per_source.filter(|_| !mirrored);
        if max.is_none() && rate.is_none() {
            return Ok(None);
        }
        let key = source_key(source);
        let mut shard = self.shard(key);
        if !shard.contains_key(&key) && shard.len() >= SHARD_CAPACITY {
            shard.retain(|_, e| e.active > 0 || now.saturating_duration_since(e.refilled) < IDLE);
            if shard.len() >= SHARD_CAPACITY {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        }
        let entry = shard.entry(key).or_insert_with(|| Entry {
            active: 0,
            tokens: f64::from(rate.unwrap_or(0)),
            refilled: now,
        });
        if max.is_some_and(|max| entry.active >= max) {
            drop(shard);
            self.limited.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Limit);
        }
        if let Some(rate) = rate {
            let rate = f64::from(rate);
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * rate).min(rate);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                drop(shard);
                self.limited.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Limit);
            }
            entry.tokens -= 1.0;
        }
        if max.is_none() {
            return Ok(None);
        }
        entry.active += 1;
        let now_full = max == Some(entry.active);
        drop(shard);
        if now_full && mirrored {
            self.note_full(key, true);
        }
        Ok(Some(Held {
            gate: Arc::clone(self),
            key,
            mirrored,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::DenyAction;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn gate(policy: SourcePolicy) -> Arc<SourceGate> {
        SourceGate::new(policy, vec!["10.9.0.0/16".parse().unwrap()])
    }

    #[test]
    fn lists_refuse_and_proxy_sources_wait_for_their_header() {
        let g = gate(SourcePolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            deny: vec!["127.0.0.9/32".parse().unwrap()],
            deny_action: DenyAction::Drop,
            ..SourcePolicy::default()
        });
        let now = Instant::now();
        assert_eq!(
            g.check(ip("127.0.0.9"), false, now).unwrap_err(),
            Refusal::Listed
        );
        assert!(g.check(ip("127.0.0.1"), false, now).unwrap().is_none());
        // The balancer itself passes; the address in its header is judged.
        assert!(g.check(ip("10.9.1.1"), false, now).is_ok());
        assert!(g.check(ip("10.9.1.1"), true, now).is_err());
        assert!(g.check(ip("127.0.0.3"), true, now).is_ok());
        // With a kernel table only PROXY addresses are judged here.
        g.set_kernel(true);
        assert!(g.check(ip("127.0.0.9"), false, now).is_ok());
        assert!(g.check(ip("127.0.0.9"), true, now).is_err());
        assert_eq!(g.counts().rejected, 3);
    }

    #[test]
    fn under_a_kernel_table_max_per_source_is_counted_and_mirrored() {
        let g = gate(SourcePolicy {
            deny: vec!["127.0.0.9/32".parse().unwrap()],
            max_per_source: Some(2),
            rate_per_source: Some(1),
            ..SourcePolicy::default()
        });
        g.set_kernel(true);
        let now = Instant::now();
        // The kernel judged the lists and the rate: only live connections are counted here.
        let a = g.check(ip("127.0.0.9"), false, now).unwrap();
        let b = g.check(ip("127.0.0.9"), false, now).unwrap();
        assert!(a.is_some() && b.is_some());
        let full = FullChange {
            key: ip("127.0.0.9"),
            full: true,
        };
        assert_eq!(g.take_full_changes(), [full]);
        // Before the kernel has it, a third is refused here.
        assert_eq!(
            g.check(ip("127.0.0.9"), false, now).unwrap_err(),
            Refusal::Limit
        );
        drop(a);
        assert_eq!(
            g.take_full_changes(),
            [FullChange {
                full: false,
                ..full
            }]
        );
        drop(b);
        assert!(g.take_full_changes().is_empty());
        // A PROXY address is judged whole here, never mirrored into the kernel.
        let p1 = g.check(ip("127.0.0.7"), true, now).unwrap();
        assert!(p1.is_some());
        assert_eq!(
            g.check(ip("127.0.0.7"), true, now).unwrap_err(),
            Refusal::Limit,
            "rate_per_source = 1/s"
        );
        assert!(g.take_full_changes().is_empty());
    }

    #[test]
    fn max_per_source_counts_live_connections_per_key() {
        let g = gate(SourcePolicy {
            max_per_source: Some(2),
            ..SourcePolicy::default()
        });
        let now = Instant::now();
        let a = g.check(ip("2001:db8:0:1::1"), false, now).unwrap();
        let b = g.check(ip("2001:db8:0:1::2"), false, now).unwrap();
        assert!(a.is_some() && b.is_some());
        // The same /64: refused; another /64 and another IPv4 address: taken.
        assert_eq!(
            g.check(ip("2001:db8:0:1::3"), false, now).unwrap_err(),
            Refusal::Limit
        );
        assert!(g.check(ip("2001:db8:0:2::1"), false, now).is_ok());
        assert!(g.check(ip("192.0.2.1"), false, now).is_ok());
        drop(a);
        let c = g.check(ip("2001:db8:0:1::3"), false, now).unwrap();
        assert!(c.is_some());
        assert_eq!(g.counts().limited, 1);
        drop((b, c));
        assert!(g.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[test]
    fn rate_per_source_is_a_token_bucket() {
        let g = gate(SourcePolicy {
            rate_per_source: Some(5),
            ..SourcePolicy::default()
        });
        let t0 = Instant::now();
        let taken = (0..20)
            .filter(|_| g.check(ip("127.0.0.5"), false, t0).is_ok())
            .count();
        assert_eq!(taken, 5);
        assert!(g.check(ip("127.0.0.6"), false, t0).is_ok());
        // 200 ms later one more token has come back.
        let t1 = t0 + Duration::from_millis(200);
        assert!(g.check(ip("127.0.0.5"), false, t1).is_ok());
        assert!(g.check(ip("127.0.0.5"), false, t1).is_err());
        assert_eq!(g.counts().limited, 16);
    }

    #[test]
    fn the_table_is_bounded() {
        let g = gate(SourcePolicy {
            max_per_source: Some(1),
            ..SourcePolicy::default()
        });
        let now = Instant::now();
        let mut held = Vec::new();
        for i in 0..(SHARDS * SHARD_CAPACITY * 2) as u32 {
            let addr = IpAddr::V4((0x0a00_0000 + i).into());
            if let Ok(Some(h)) = g.check(addr, false, now) {
                held.push(h);
            }
        }
        let tracked: usize = g.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(tracked <= SHARDS * SHARD_CAPACITY);
        assert!(g.counts().untracked > 0);
        drop(held);
        let tracked: usize = g.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(tracked, 0);
    }
}
