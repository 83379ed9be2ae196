//! `admission = "ready"` on DMZ services: refuse at SYN while a service is down.
//!
//! Each DMZ service (a public service served by prepared connections) has an up/down state
//! ([`machine::Door`], sans-IO, states in `LIFECYCLE.md` beside this file). The [`Board`] is
//! what the workers and the keeper share: per service, the number of prepared connections
//! parked across all workers and how the pool last became empty (one atomic word), how many
//! were ever parked, and the published state; per listener group, whether its listeners
//! should be open (a generation-stamped word). Workers touch only atomics (no lock in their
//! loop); the keeper thread ([`spawn_keeper`]) is woken on the pool's edges (empty to one,
//! one to empty), runs the machines, logs each change on one line, and wakes every worker
//! when a group's door flips; each worker then closes (`shutdown(SHUT_RD)`: the kernel
//! answers new SYNs with RST) or re-opens (`listen()` and a new multishot accept) its own
//! SO_REUSEPORT listener of that group. A worker that parks a prepared connection re-opens
//! its own listener at once, so a service is reachable the moment it is up.
//!
//! This module does not accept clients, pair them or decide anything per source; SYNs the
//! kernel refuses while a listener is closed are not seen by anyone and so not counted.

pub mod machine;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::handoff::PublicIndex;
pub use machine::{Cause, Change, Door, DoorState, Why};

/// How a service's state reaches its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `admission = "always"`: the state is kept and shown but nobody is refused for it.
    None,
    /// Every worker's listener is closed (`shutdown(SHUT_RD)`) while every service on it is
    /// down: SYNs get a RST from the kernel.
    ListenerClosed,
    /// The listener is shared (same address, routed by path) with a service that is always
    /// open: it stays open, and this service's clients wait for its timeout, as with `always`.
    SharedListener,
}

impl Mechanism {
    pub fn text(self) -> &'static str {
        match self {
            Mechanism::None => "none (admission = always)",
            Mechanism::ListenerClosed => "listener closed while down",
            Mechanism::SharedListener => "none: the listener is shared with an always-open service",
        }
    }
}

/// A service's admission state as `/stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorStatus {
    pub state: DoorState,
    pub why: Why,
    /// Wall-clock time of the last change (or of the start).
    pub since: SystemTime,
    pub mechanism: Mechanism,
    /// State changes since the start.
    pub changes: u64,
}

/// Low bit of [`ServiceDoor::pool`]: the pool last became empty because its last prepared
/// connection was lost (set) or used (clear). The rest is the number parked.
const LOST_BIT: u64 = 1;

/// One service's shared part.
struct ServiceDoor {
    /// DMZ service (served by prepared connections): its state is kept.
    tracked: bool,
    /// `parked << 1 | LOST_BIT-if-last-emptied-by-loss`, across all workers.
    pool: AtomicU64,
    /// Prepared connections ever parked.
    parks: AtomicU64,
    up: AtomicBool,
    status: Mutex<Option<DoorStatus>>,
}

/// One listener group's shared part.
struct GroupDoor {
    /// Every service on it has `admission = "ready"`: its listeners open and close.
    managed: bool,
    /// `generation << 1 | open`, written by the keeper only.
    state: AtomicU64,
    members: Vec<PublicIndex>,
}

/// What the keeper needs to know about one service.
#[derive(Clone)]
pub(crate) struct DoorSpec {
    pub name: String,
    /// `None`: not a DMZ service (forwarding); no state.
    pub timeout: Option<Duration>,
    pub mechanism: Mechanism,
}

/// What the workers and the keeper share.
pub(crate) struct Board {
    services: Vec<ServiceDoor>,
    groups: Vec<GroupDoor>,
    wake: Sender<()>,
    stop: AtomicBool,
}

impl Board {
    /// `groups[g]`: the services on listener group `g`; `enforced[i]`: service `i` refuses
    /// while down. Returns the board and the keeper's end of its wake-up channel.
    pub(crate) fn new(
        specs: &[DoorSpec],
        groups: &[Vec<PublicIndex>],
        enforced: &[bool],
    ) -> (Arc<Board>, Receiver<()>) {
        let (wake, rx) = crossbeam_channel::bounded(1);
        let now = SystemTime::now();
        let services = specs
            .iter()
            .map(|s| ServiceDoor {
                tracked: s.timeout.is_some(),
                pool: AtomicU64::new(0),
                parks: AtomicU64::new(0),
                up: AtomicBool::new(false),
                status: Mutex::new(s.timeout.map(|_| DoorStatus {
                    state: DoorState::Down,
                    why: Why::NeverServed,
                    since: now,
                    mechanism: s.mechanism,
                    changes: 0,
                })),
            })
            .collect();
        let groups = groups
            .iter()
            .map(|members| {
                let managed = members.iter().all(|m| enforced[m.0]);
                GroupDoor {
                    managed,
                    state: AtomicU64::new(u64::from(!managed)),
                    members: members.clone(),
                }
            })
            .collect();
        let board = Board {
            services,
            groups,
            wake,
            stop: AtomicBool::new(false),
        };
        (Arc::new(board), rx)
    }

    fn notify(&self) {
        // Full: a wake-up is already pending, and the keeper reads every counter when it runs.
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    /// A worker parked a prepared connection of `service` (or paired one at once with a
    /// waiting client: call [`Board::left`] right after).
    pub(crate) fn parked(&self, service: PublicIndex) {
        let s = &self.services[service.0];
        if !s.tracked {
            return;
        }
        s.parks.fetch_add(1, Ordering::Release);
        let old = s.pool.fetch_add(2, Ordering::AcqRel);
        if old >> 1 == 0 {
            self.notify();
        }
    }

    /// A parked prepared connection of `service` left the pool: taken (`Used`) or ended unused
    /// (`Lost`).
    pub(crate) fn left(&self, service: PublicIndex, cause: Cause) {
        let s = &self.services[service.0];
        if !s.tracked {
            return;
        }
        let bit = match cause {
            Cause::Lost => LOST_BIT,
            Cause::Used => 0,
        };
        let old = s
            .pool
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some((((v >> 1).saturating_sub(1)) << 1) | bit)
            })
            .unwrap_or_else(|v| v);
        if old >> 1 <= 1 {
            self.notify();
        }
    }

    /// Whether `service` is up (always true for a service without state).
    pub(crate) fn is_up(&self, service: PublicIndex) -> bool {
        let s = &self.services[service.0];
        !s.tracked || s.up.load(Ordering::Acquire)
    }

    /// Whether listener group `group` opens and closes with its services' state.
    pub(crate) fn managed(&self, group: usize) -> bool {
        self.groups[group].managed
    }

    /// `(generation, open)` of group `group`'s door as the keeper last decided it.
    pub(crate) fn group_door(&self, group: usize) -> (u64, bool) {
        let v = self.groups[group].state.load(Ordering::Acquire);
        (v >> 1, v & 1 == 1)
    }

    /// Service `service`'s admission state, for `/stats`.
    pub(crate) fn status(&self, service: PublicIndex) -> Option<DoorStatus> {
        match self.services[service.0].status.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks the keeper to return.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify();
    }
}

/// Most state-change lines logged per service per [`LOG_WINDOW`]; the internal side can make a
/// service flap, so the rest are counted and reported on the next line let through.
const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(1);

/// Keeper-side state of one service.
struct Kept {
    name: String,
    door: Door,
    seen_parks: u64,
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Starts the keeper thread: it runs every DMZ service's machine, publishes states and group
/// doors on `board`, and calls `wake_workers` when a group's door flips.
pub(crate) fn spawn_keeper(
    board: Arc<Board>,
    rx: Receiver<()>,
    specs: Vec<DoorSpec>,
    wake_workers: Box<dyn Fn() + Send>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sallyport-door".into())
        .spawn(move || keep(&board, &rx, specs, &*wake_workers))
}

fn keep(board: &Board, rx: &Receiver<()>, specs: Vec<DoorSpec>, wake_workers: &dyn Fn()) {
    let start = Instant::now();
    let mut kept: Vec<Option<Kept>> = specs
        .into_iter()
        .map(|s| {
            s.timeout.map(|timeout| Kept {
                name: s.name,
                door: Door::new(timeout, start),
                seen_parks: 0,
                window: None,
                logged: 0,
                suppressed: 0,
            })
        })
        .collect();
    const IDLE: Duration = Duration::from_secs(3600);
    loop {
        if board.stop.load(Ordering::Acquire) {
            return;
        }
        let next = kept
            .iter()
            .flatten()
            .filter_map(|k| k.door.deadline())
            .min();
        let wait = next.map_or(IDLE, |d| d.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if board.stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut changed = false;
        let mut parked = vec![false; kept.len()];
        for (i, k) in kept.iter_mut().enumerate() {
            let Some(k) = k else { continue };
            let shared = &board.services[i];
            let (seen_park, changes) = evaluate(k, shared, now);
            parked[i] = seen_park;
            for change in changes {
                changed = true;
                shared
                    .up
                    .store(change.to == DoorState::Up, Ordering::Release);
                publish(shared, &change);
                log_change(k, &change, now);
            }
        }
        if (changed || parked.contains(&true)) && flip_groups(board, &parked) {
            wake_workers();
        }
    }
}

/// Feeds one service's machine what happened to its pool since the last look; also says
/// whether something was parked since (its worker may have opened its listener on its own).
fn evaluate(k: &mut Kept, shared: &ServiceDoor, now: Instant) -> (bool, Vec<Change>) {
    let mut changes = Vec::new();
    let parks = shared.parks.load(Ordering::Acquire);
    let pool = shared.pool.load(Ordering::Acquire);
    let seen_park = parks != k.seen_parks;
    if seen_park {
        k.seen_parks = parks;
        changes.extend(k.door.on_parked(now));
    }
    if pool >> 1 == 0 {
        let cause = if pool & LOST_BIT != 0 {
            Cause::Lost
        } else {
            Cause::Used
        };
        changes.extend(k.door.on_empty(cause, now));
    }
    changes.extend(k.door.on_tick(now));
    (seen_park, changes)
}

fn publish(shared: &ServiceDoor, change: &Change) {
    let mut guard = match shared.status.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(status) = guard.as_mut() {
        status.state = change.to;
        status.why = change.why;
        status.since = SystemTime::now();
        status.changes += 1;
    }
}

fn log_change(k: &mut Kept, change: &Change, now: Instant) {
    if k.window.is_none_or(|w| now.duration_since(w) >= LOG_WINDOW) {
        k.window = Some(now);
        k.logged = 0;
    }
    if k.logged >= LOG_BURST {
        k.suppressed += 1;
        return;
    }
    k.logged += 1;
    let also_changed = std::mem::take(&mut k.suppressed);
    tracing::info!(
        service = %k.name,
        from = change.from.label(),
        to = change.to.label(),
        why = change.why.text(),
        also_changed,
        "service admission state changed"
    );
}

/// Re-decides every managed group's door from its services' states; true when one flipped.
/// `parked[i]`: service `i` had a connection parked since the last look; the worker that
/// parked it opened its own listener, so a group that is closed after all (that connection
/// was lost at once) gets a new generation, and that worker closes its listener again.
fn flip_groups(board: &Board, parked: &[bool]) -> bool {
    let mut flipped = false;
    for group in board.groups.iter().filter(|g| g.managed) {
        let open = group.members.iter().any(|&m| board.is_up(m));
        let reclose = !open && group.members.iter().any(|m| parked[m.0]);
        let v = group.state.load(Ordering::Acquire);
        if (v & 1 == 1) != open || reclose {
            let next = (((v >> 1) + 1) << 1) | u64::from(open);
            group.state.store(next, Ordering::Release);
            flipped = true;
        }
    }
    flipped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(enforced: &[bool], groups: &[Vec<PublicIndex>]) -> (Arc<Board>, Receiver<()>) {
        let specs: Vec<DoorSpec> = enforced
            .iter()
            .enumerate()
            .map(|(i, _)| DoorSpec {
                name: format!("s{i}"),
                timeout: Some(Duration::from_secs(1)),
                mechanism: Mechanism::ListenerClosed,
            })
            .collect();
        Board::new(&specs, groups, enforced)
    }

    #[test]
    fn pool_edges_wake_the_keeper_and_keep_the_cause() {
        let (b, rx) = board(&[true], &[vec![PublicIndex(0)]]);
        b.parked(PublicIndex(0));
        assert!(rx.try_recv().is_ok(), "empty to one wakes");
        b.parked(PublicIndex(0));
        assert!(rx.try_recv().is_err(), "one to two does not");
        b.left(PublicIndex(0), Cause::Used);
        assert!(rx.try_recv().is_err(), "two to one does not");
        b.left(PublicIndex(0), Cause::Lost);
        assert!(rx.try_recv().is_ok(), "one to empty wakes");
        let pool = b.services[0].pool.load(Ordering::Relaxed);
        assert_eq!((pool >> 1, pool & LOST_BIT), (0, LOST_BIT));
        b.parked(PublicIndex(0));
        let pool = b.services[0].pool.load(Ordering::Relaxed);
        assert_eq!(pool >> 1, 1);
    }

    #[test]
    fn a_group_opens_when_any_member_is_up_and_closes_when_all_are_down() {
        let members = vec![PublicIndex(0), PublicIndex(1)];
        let (b, _rx) = board(&[true, true], &[members]);
        assert!(b.managed(0));
        assert_eq!(b.group_door(0), (0, false));
        let none = [false, false];
        b.services[1].up.store(true, Ordering::Relaxed);
        assert!(flip_groups(&b, &none));
        assert_eq!(b.group_door(0), (1, true));
        assert!(!flip_groups(&b, &none), "nothing changed");
        b.services[1].up.store(false, Ordering::Relaxed);
        assert!(flip_groups(&b, &none));
        assert_eq!(b.group_door(0), (2, false));
        // Parked and lost before the keeper looked: still closed, but a new generation, so
        // the worker that opened its listener for that park closes it again.
        assert!(flip_groups(&b, &[true, false]));
        assert_eq!(b.group_door(0), (3, false));
    }

    #[test]
    fn a_group_with_an_always_member_is_not_managed() {
        let (b, _rx) = board(&[true, false], &[vec![PublicIndex(0), PublicIndex(1)]]);
        assert!(!b.managed(0));
        assert_eq!(b.group_door(0), (0, true));
    }

    #[test]
    fn keeper_follows_the_pool() {
        let (b, rx) = board(&[true], &[vec![PublicIndex(0)]]);
        let specs = vec![DoorSpec {
            name: "s0".into(),
            timeout: Some(Duration::from_millis(50)),
            mechanism: Mechanism::ListenerClosed,
        }];
        let (flips_tx, flips) = crossbeam_channel::unbounded();
        let keeper = spawn_keeper(
            Arc::clone(&b),
            rx,
            specs,
            Box::new(move || {
                flips_tx.send(()).ok();
            }),
        )
        .unwrap();
        let wait = || flips.recv_timeout(Duration::from_secs(10)).unwrap();
        b.parked(PublicIndex(0));
        wait();
        assert_eq!(b.group_door(0), (1, true));
        assert_eq!(b.status(PublicIndex(0)).unwrap().why, Why::Parked);
        b.left(PublicIndex(0), Cause::Lost);
        wait();
        assert_eq!(b.group_door(0), (2, false));
        assert_eq!(b.status(PublicIndex(0)).unwrap().why, Why::LastLost);
        // Used up and not refilled: down after the timeout.
        b.parked(PublicIndex(0));
        wait();
        b.left(PublicIndex(0), Cause::Used);
        wait();
        let status = b.status(PublicIndex(0)).unwrap();
        assert_eq!(
            (status.state, status.why),
            (DoorState::Down, Why::NoPrepared)
        );
        assert_eq!(status.changes, 4);
        b.stop();
        keeper.join().unwrap();
    }
}
