//! A log line that a peer can trigger (a refusal, a failed accept, a bad handshake) must not let
//! that peer flood the log: [`LogLimiter`] lets one line through per interval and counts the
//! ones it held back, for the next line to report ("N more suppressed").
//!
//! It does not log anything itself and reads no clock (the caller gives the time).

use std::time::{Duration, Instant};

/// The interval of [`LogLimiter::default`].
pub const LOG_EVERY: Duration = Duration::from_secs(1);

/// One line per interval, and the count of the lines held back since the last one.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::every(LOG_EVERY)
    }
}

impl LogLimiter {
    /// At most one line per `every`.
    pub fn every(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let mut log = LogLimiter::every(Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(log.allow(t), Some(0));
        assert_eq!(log.allow(t + Duration::from_millis(10)), None);
        assert_eq!(log.allow(t + Duration::from_millis(900)), None);
        assert_eq!(log.allow(t + Duration::from_millis(1000)), Some(2));
        assert_eq!(log.allow(t + Duration::from_millis(2500)), Some(0));
    }
}
