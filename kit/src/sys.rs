//! The one place where the demo's, bench's and tests' libc calls live, each behind a safe
//! function: signals, `poll` on one socket, thread CPU time, `sysconf`, the open-files limit and
//! the parent-death signal for spawned children.
//!
//! Every other module of kit, bench and tests is `#![deny(unsafe_code)]` and calls these. It
//! holds no state and retries nothing; errors come back as `io::Error` from `errno`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

pub use libc::{c_int, SIGHUP, SIGINT, SIGKILL, SIGTERM};

/// Sends `signal` to process `pid`; a negative `pid` names a process group (`kill(2)`).
/// Returns the `errno` error (e.g. `ESRCH` for a process already gone).
pub fn kill(pid: i64, signal: c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) reads and writes no memory of ours; a stale pid only returns ESRCH.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`kill`] for a child's `u32` id (`Child::id`).
pub fn signal_pid(pid: u32, signal: c_int) -> io::Result<()> {
    kill(i64::from(pid), signal)
}

/// Blocks until `sock` is readable (`read`) and/or writable (`write`), at most `timeout`.
/// `EINTR` counts as a wake-up, not an error.
pub fn poll(sock: &impl AsRawFd, read: bool, write: bool, timeout: Duration) -> io::Result<()> {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    let mut fd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: one valid, writable pollfd for the duration of the call; the fd is borrowed from
    // `sock`, which outlives the call.
    let r = unsafe { libc::poll(&mut fd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// User + system CPU time of the calling thread (`RUSAGE_THREAD`); zero if the call fails.
pub fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain old data; all-zero is a valid value that getrusage overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Kernel clock ticks per second (`_SC_CLK_TCK`), if the kernel says.
pub fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf reads and writes no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0)
}

/// The page size (`_SC_PAGESIZE`), if the kernel says.
pub fn page_size() -> Option<u64> {
    // SAFETY: sysconf reads and writes no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0)
}

/// This process's open-files limit: (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Sets this process's open-files limit (soft must not exceed hard).
pub fn set_nofile_limit(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit, only read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child `cmd` spawns receive `SIGKILL` when this process's spawning thread dies
/// (`PR_SET_PDEATHSIG`), so no child outlives a crashed harness.
pub fn kill_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysconf_values_are_sane() {
        assert!(clock_ticks().is_some_and(|h| h >= 1));
        assert!(page_size().is_some_and(|s| s >= 4096));
        let (soft, hard) = nofile_limit().expect("getrlimit");
        assert!(soft <= hard);
    }

    #[test]
    fn kill_of_a_gone_process_is_an_error() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        // Reaped: the pid names no one of ours (ESRCH) unless reused, which signal 0 tolerates.
        let _ = signal_pid(pid, 0);
        assert!(kill(i64::from(u32::MAX), 0).is_err());
    }

    #[test]
    fn poll_times_out_on_an_idle_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let sock = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("c");
        let started = std::time::Instant::now();
        poll(&sock, true, false, Duration::from_millis(20)).expect("poll");
        assert!(started.elapsed() >= Duration::from_millis(10));
        poll(&sock, false, true, Duration::from_secs(5)).expect("writable at once");
    }
}
