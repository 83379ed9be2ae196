//! Accept errors on a worker's listeners. Running out of descriptors or kernel memory (EMFILE,
//! ENFILE, ENOBUFS, ENOMEM) ends the multishot accept; arming it again at once would fail again
//! at once, a loop that burns the core and floods the log while clients wait in the backlog.
//! Instead the listener's accepts pause, 10 ms doubling to 1 s while the error persists, and
//! resume by themselves; the first accept that succeeds resets the pause. Every line is
//! rate-limited (one per second per worker, with the count held back).
//!
//! It does not close the listener (clients keep queueing in the backlog, served once
//! descriptors are free) and does not decide admission (`door.rs`).

use std::time::{Duration, Instant};

use super::Worker;

/// First pause after a resource error.
const PAUSE_START: Duration = Duration::from_millis(10);
/// Longest pause: a freed descriptor is used within a second.
const PAUSE_MAX: Duration = Duration::from_secs(1);

/// One listener's accept pause.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AcceptPause {
    /// Accepts resume then; `None`: not paused.
    pub(super) until: Option<Instant>,
    /// The next pause's length (zero: the first is [`PAUSE_START`]).
    next: Duration,
}

/// Errors that say "no resources right now", not "this listener is broken".
pub(super) fn is_resource_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

impl Worker {
    /// An accept of `group` failed with `errno` (not a cancellation).
    pub(super) fn accept_failed(&mut self, group: usize, errno: i32, now: Instant) {
        let error = std::io::Error::from_raw_os_error(errno);
        if !is_resource_error(errno) {
            if let Some(also) = self.accept_log.allow(now) {
                tracing::warn!(core = self.id, group, %error, also_failed = also, "accept failed");
            }
            return;
        }
        let pause = &mut self.accept_pauses[group];
        let length = pause.next.max(PAUSE_START);
        pause.next = (length * 2).min(PAUSE_MAX);
        pause.until = Some(now + length);
        self.stats
            .accept_pauses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(also) = self.accept_log.allow(now) {
            tracing::warn!(core = self.id, group, %error, pause = ?length, also_failed = also,
                "accept failed for lack of resources; new clients wait in the backlog until accepts resume");
        }
    }

    /// A client was accepted on `group`: its next resource error starts the backoff afresh.
    pub(super) fn accept_succeeded(&mut self, group: usize) {
        self.accept_pauses[group].next = Duration::ZERO;
    }

    /// Whether `group`'s accepts are paused (its multishot accept must not be armed now).
    pub(super) fn accept_paused(&self, group: usize) -> bool {
        self.accept_pauses[group].until.is_some()
    }

    /// The earliest paused listener's resume time.
    pub(super) fn next_accept_resume(&self) -> Option<Instant> {
        self.accept_pauses.iter().filter_map(|p| p.until).min()
    }

    /// Re-arms the accepts whose pause is over.
    pub(super) fn resume_accepts(&mut self, now: Instant) -> std::io::Result<()> {
        for group in 0..self.accept_pauses.len() {
            if self.accept_pauses[group].until.is_some_and(|t| t <= now) {
                self.accept_pauses[group].until = None;
                self.accept_ended(group)?;
            }
        }
        Ok(())
    }
}
