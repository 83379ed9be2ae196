//! What a listener on the control thread (reverse endpoint, admin, rendezvous) does when an
//! accept fails, most often for lack of descriptors (EMFILE, ENFILE): wait, 10 ms doubling to
//! 1 s while it keeps failing, instead of retrying in a loop that burns the thread; log at most
//! one line per second with the count held back. Clients meanwhile wait in the backlog.
//!
//! It does not close or re-bind the listener.

use std::time::Duration;

use sallyport_dataplane::log_limit::LogLimiter;

/// A control-thread listener's answer to a failed accept (EMFILE and friends): wait, 10 ms
/// doubling to 1 s while it keeps failing, instead of spinning; one log line per second.
#[derive(Default)]
pub struct AcceptPause {
    next: Duration,
    log: LogLimiter,
}

impl AcceptPause {
    const START: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Logs (rate-limited) and sleeps after `error` on `listener`.
    pub async fn after(&mut self, listener: &str, error: &std::io::Error) {
        let length = self.next.max(Self::START);
        self.next = (length * 2).min(Self::MAX);
        if let Some(also) = self.log.allow(std::time::Instant::now()) {
            tracing::warn!(%error, pause = ?length, also_failed = also, "{listener}: accept failed; new connections wait in the backlog");
        }
        tokio::time::sleep(length).await;
    }

    /// An accept succeeded: the next failure starts at the shortest pause.
    pub fn reset(&mut self) {
        self.next = Duration::ZERO;
    }
}
