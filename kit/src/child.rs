//! Waiting with a deadline for what sends no message: a child process's exit, or a condition
//! that can only be polled (a counter in `/stats`, a line in a log).
//!
//! One poll loop for the demo, bench and tests instead of one per caller. It does not spawn,
//! signal or read children's output; callers do that around it.

use std::io;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_exit`] and [`poll_until`] look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits up to `timeout` for `child` to exit on its own: `Some(status)`, or `None` if it is
/// still running then (it is left running; see [`kill_and_reap`]).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    wait_exit_every(child, timeout, POLL_INTERVAL)
}

/// [`wait_exit`] looking every `interval`.
pub fn wait_exit_every(
    child: &mut Child,
    timeout: Duration,
    interval: Duration,
) -> io::Result<Option<ExitStatus>> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        thread::sleep(interval.min(end.saturating_duration_since(Instant::now())));
    }
}

/// Runs `cmd` with stdin closed and stdout and stderr captured until it exits, at most
/// `timeout`: `Ok(output)`, or `Err(output)` (what it wrote until then) after killing it when
/// it was still running. The outer error is a failed spawn or wait.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> io::Result<Result<Output, Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let exited = wait_exit(&mut child, timeout)?.is_some();
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output()?;
    Ok(if exited { Ok(output) } else { Err(output) })
}

/// SIGKILL and reap; the process is gone when this returns (errors: it already was).
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Calls `done` every [`POLL_INTERVAL`] until it returns true (then true) or `timeout` passes
/// (then false, after one last call).
pub fn poll_until(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    poll_every(timeout, POLL_INTERVAL, done)
}

/// [`poll_until`] for tests: panics with "timed out waiting for {what}" when `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    assert!(poll_until(timeout, done), "timed out waiting for {what}");
}

/// [`poll_until`] looking every `interval`.
pub fn poll_every(timeout: Duration, interval: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(interval.min(end.saturating_duration_since(Instant::now())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_exit_sees_an_exit_and_a_timeout() {
        let mut done = Command::new("true").spawn().expect("spawn true");
        let status = wait_exit(&mut done, Duration::from_secs(10)).expect("wait");
        assert!(status.expect("exited").success());
        let mut running = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let status = wait_exit(&mut running, Duration::from_millis(50)).expect("wait");
        assert!(status.is_none());
        kill_and_reap(&mut running);
        assert!(running.try_wait().expect("reaped").is_some());
    }

    #[test]
    fn output_within_captures_or_kills() {
        let out = output_within(
            Command::new("sh").args(["-c", "echo hi; echo err >&2"]),
            Duration::from_secs(10),
        )
        .expect("spawn sh")
        .expect("exited");
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        let late = output_within(
            Command::new("sh").args(["-c", "echo early; exec sleep 30"]),
            Duration::from_millis(200),
        )
        .expect("spawn sh");
        assert_eq!(late.expect_err("still running").stdout, b"early\n");
    }

    #[test]
    fn poll_until_stops_at_true_or_timeout() {
        let mut calls = 0;
        assert!(poll_until(Duration::from_secs(10), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        assert!(!poll_until(Duration::from_millis(30), || false));
    }
}
