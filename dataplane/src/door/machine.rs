//! The up/down state machine of one DMZ service (`admission`), sans-IO: it is fed what happened
//! to the service's pool of prepared connections ([`Door::on_parked`], [`Door::on_empty`]) and
//! the time ([`Door::on_tick`]), and answers with the state change, if any ([`Change`]).
//!
//! It owns no socket, reads no clock (every call takes `now`) and knows nothing of workers:
//! the keeper in `door/mod.rs` feeds it from the pool counters and opens or closes the
//! listeners. States and transitions are in `LIFECYCLE.md` beside this file.

use std::time::{Duration, Instant};

/// Whether the service takes new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorState {
    /// No prepared connection, and none is expected soon: new clients are refused.
    Down,
    /// A prepared connection is parked, or was within the service's `timeout`.
    Up,
}

impl DoorState {
    pub fn label(self) -> &'static str {
        match self {
            DoorState::Down => "down",
            DoorState::Up => "up",
        }
    }
}

/// Why the service is in its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Down: the last prepared connection was closed by the internal side, unused.
    LastLost,
    /// Down: the gateway started and no prepared connection has arrived yet.
    NeverServed,
    /// Down: the pool ran dry (clients used it) and no prepared connection arrived within the
    /// service's `timeout`.
    NoPrepared,
    /// Up: a prepared connection was parked.
    Parked,
}

impl Why {
    /// The reason as `/stats` and the log say it.
    pub fn text(self) -> &'static str {
        match self {
            Why::LastLost => "last prepared connection lost",
            Why::NeverServed => "never served",
            Why::NoPrepared => "no prepared connection within timeout",
            Why::Parked => "prepared connection parked",
        }
    }
}

/// How the pool last became empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its last prepared connection ended unused (closed or reset by the internal side, or it
    /// spoke before it was paired).
    Lost,
    /// Its last prepared connection was taken for a client (or lent to another worker).
    Used,
}

/// A state change: the service went from `from` to `to` because of `why`, at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: DoorState,
    pub to: DoorState,
    pub why: Why,
    pub at: Instant,
}

/// One service's admission state.
#[derive(Debug, Clone)]
pub struct Door {
    state: DoorState,
    why: Why,
    since: Instant,
    timeout: Duration,
    /// Up with an empty pool (used up): down at this instant unless a prepared connection
    /// is parked before.
    empty_deadline: Option<Instant>,
}

impl Door {
    /// A service just started: down, never served.
    pub fn new(timeout: Duration, now: Instant) -> Door {
        Door {
            state: DoorState::Down,
            why: Why::NeverServed,
            since: now,
            timeout,
            empty_deadline: None,
        }
    }

    pub fn state(&self) -> DoorState {
        self.state
    }

    pub fn why(&self) -> Why {
        self.why
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    /// When [`Door::on_tick`] may next change the state.
    pub fn deadline(&self) -> Option<Instant> {
        self.empty_deadline
    }

    /// A prepared connection was parked: up (or still up), and the pool is no longer empty.
    pub fn on_parked(&mut self, now: Instant) -> Option<Change> {
        self.empty_deadline = None;
        self.set(DoorState::Up, Why::Parked, now)
    }

    /// The pool is empty, last emptied by `cause`. Lost: down at once. Used: still up, clients
    /// wait for the refill; down if none is parked within the timeout.
    pub fn on_empty(&mut self, cause: Cause, now: Instant) -> Option<Change> {
        if self.state == DoorState::Down {
            return None;
        }
        match cause {
            Cause::Lost => {
                self.empty_deadline = None;
                self.set(DoorState::Down, Why::LastLost, now)
            }
            Cause::Used => {
                if self.empty_deadline.is_none() {
                    self.empty_deadline = Some(now + self.timeout);
                }
                None
            }
        }
    }

    /// Time passed: down if the pool stayed empty for the whole timeout.
    pub fn on_tick(&mut self, now: Instant) -> Option<Change> {
        match self.empty_deadline {
            Some(at) if at <= now => {
                self.empty_deadline = None;
                self.set(DoorState::Down, Why::NoPrepared, now)
            }
            _ => None,
        }
    }

    fn set(&mut self, to: DoorState, why: Why, now: Instant) -> Option<Change> {
        if self.state == to {
            return None;
        }
        let change = Change {
            from: self.state,
            to,
            why,
            at: now,
        };
        self.state = to;
        self.why = why;
        self.since = now;
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn starts_down_never_served() {
        let t0 = Instant::now();
        let mut door = Door::new(TIMEOUT, t0);
        assert_eq!(
            (door.state(), door.why()),
            (DoorState::Down, Why::NeverServed)
        );
        assert_eq!(
            door.on_tick(at(t0, 60_000)),
            None,
            "time alone changes nothing"
        );
        assert_eq!(door.on_empty(Cause::Used, at(t0, 1)), None);
        assert_eq!(door.deadline(), None);
    }

    #[test]
    fn parked_brings_it_up_once() {
        let t0 = Instant::now();
        let mut door = Door::new(TIMEOUT, t0);
        let change = door.on_parked(at(t0, 5)).expect("a change");
        assert_eq!(
            (change.from, change.to, change.why),
            (DoorState::Down, DoorState::Up, Why::Parked)
        );
        assert_eq!(door.since(), at(t0, 5));
        assert_eq!(door.on_parked(at(t0, 6)), None, "already up");
        assert_eq!(door.since(), at(t0, 5));
    }

    #[test]
    fn last_one_lost_goes_down_at_once() {
        let t0 = Instant::now();
        let mut door = Door::new(TIMEOUT, t0);
        door.on_parked(t0);
        let change = door.on_empty(Cause::Lost, at(t0, 10)).expect("down");
        assert_eq!((change.to, change.why), (DoorState::Down, Why::LastLost));
        assert_eq!(door.on_empty(Cause::Lost, at(t0, 11)), None);
    }

    #[test]
    fn used_up_stays_up_until_the_timeout() {
        let t0 = Instant::now();
        let mut door = Door::new(TIMEOUT, t0);
        door.on_parked(t0);
        assert_eq!(door.on_empty(Cause::Used, at(t0, 100)), None);
        assert_eq!(door.deadline(), Some(at(t0, 2_100)));
        // Seen empty again later: the deadline is the first one's.
        assert_eq!(door.on_empty(Cause::Used, at(t0, 500)), None);
        assert_eq!(door.deadline(), Some(at(t0, 2_100)));
        assert_eq!(door.on_tick(at(t0, 2_099)), None);
        assert_eq!(door.state(), DoorState::Up);
        let change = door.on_tick(at(t0, 2_100)).expect("down");
        assert_eq!((change.to, change.why), (DoorState::Down, Why::NoPrepared));
        assert_eq!(door.deadline(), None);
    }

    #[test]
    fn a_refill_within_the_timeout_keeps_it_up() {
        let t0 = Instant::now();
        let mut door = Door::new(TIMEOUT, t0);
        door.on_parked(t0);
        door.on_empty(Cause::Used, at(t0, 100));
        assert_eq!(door.on_parked(at(t0, 101)), None, "still up, no change");
        assert_eq!(door.deadline(), None);
        assert_eq!(door.on_tick(at(t0, 10_000)), None);
        assert_eq!(door.state(), DoorState::Up);
        // Emptied again: a fresh timeout from then.
        door.on_empty(Cause::Used, at(t0, 10_000));
        assert_eq!(door.deadline(), Some(at(t0, 12_000)));
    }

    #[test]
    fn lost_after_used_goes_down_without_waiting() {
        let t0 = Instant::now();
        let mut door = Door::new(TIMEOUT, t0);
        door.on_parked(t0);
        door.on_empty(Cause::Used, at(t0, 1));
        door.on_parked(at(t0, 2));
        let change = door.on_empty(Cause::Lost, at(t0, 3)).expect("down");
        assert_eq!(change.why, Why::LastLost);
        assert_eq!(door.deadline(), None);
    }

    #[test]
    fn down_then_up_again() {
        let t0 = Instant::now();
        let mut door = Door::new(TIMEOUT, t0);
        door.on_parked(t0);
        door.on_empty(Cause::Lost, at(t0, 1));
        let change = door.on_parked(at(t0, 2)).expect("up");
        assert_eq!(
            (change.from, change.to, change.why),
            (DoorState::Down, DoorState::Up, Why::Parked)
        );
    }
}
