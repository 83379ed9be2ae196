//! Child processes the benchmark starts (gateways, peer tunnels), owned so that they always stop.
//!
//! A [`Proc`] sends SIGTERM to its process when dropped, waits a moment, then SIGKILLs it; this
//! runs on every exit path that unwinds, including errors and panics. For the paths that do not
//! unwind, every live child is also in a process-wide registry: [`install_signal_cleanup`] kills
//! them on SIGINT/SIGTERM/SIGHUP before exiting, and each child is spawned with
//! `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it if the benchmark itself dies.
//!
//! Each child's stdout is read line by line (so callers can wait for ready lines) and its stderr
//! goes to a file in a [`Scratch`] directory, whose tail is shown when something fails.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use sallyport_kit::sys;

/// How long a child gets to exit after SIGTERM before it is SIGKILLed.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often an exiting child is polled.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Lines of a child's stderr shown in an error.
const TAIL_LINES: usize = 20;

/// Process ids of the children alive now, for the signal handler.
fn registry() -> &'static Mutex<HashSet<u32>> {
    static REGISTRY: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashSet::new()))
}

fn registered() -> std::sync::MutexGuard<'static, HashSet<u32>> {
    registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Scratch directories alive now, for the signal handler (which exits without unwinding).
fn scratch_dirs() -> std::sync::MutexGuard<'static, HashSet<PathBuf>> {
    static DIRS: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// On SIGINT, SIGTERM or SIGHUP: stop every registered child (SIGTERM, then SIGKILL after a
/// short grace), remove the scratch directories, then exit with 128 + the signal number. Call
/// once, early in `main`.
pub fn install_signal_cleanup() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    thread::Builder::new()
        .name("signal-cleanup".to_string())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let pids: Vec<u32> = registered().iter().copied().collect();
                eprintln!(
                    "\nsallyport-bench: signal {signal}: stopping {} child process(es)",
                    pids.len()
                );
                for &pid in &pids {
                    signal_pid(pid, sys::SIGTERM);
                }
                thread::sleep(Duration::from_millis(300));
                for &pid in &pids {
                    signal_pid(pid, sys::SIGKILL);
                }
                for dir in scratch_dirs().iter() {
                    let _ = std::fs::remove_dir_all(dir);
                }
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

fn signal_pid(pid: u32, signal: sys::c_int) {
    // A gone pid just returns ESRCH; nothing to do about it.
    let _ = sys::signal_pid(pid, signal);
}

/// A private directory for config files and child logs, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates `$TMPDIR/sallyport-bench-PID-N`.
    pub fn new() -> io::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sallyport-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        scratch_dirs().insert(dir.clone());
        Ok(Scratch { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> io::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover temp directory is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
        scratch_dirs().remove(&self.dir);
    }
}

/// A running child process that is stopped when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    lines: Receiver<String>,
    /// Dying of the SIGTERM that [`Proc::stop`] sent counts as a clean stop (programs that do
    /// not handle SIGTERM, e.g. haproxy in the foreground, socat).
    sigterm_is_clean: bool,
}

impl Proc {
    /// Spawns `cmd` with stdout piped (read by [`Proc::wait_for_line`]), stderr written to
    /// `NAME.stderr` in `scratch`, stdin closed, and `PR_SET_PDEATHSIG = SIGKILL`.
    pub fn spawn(name: &str, mut cmd: Command, scratch: &Scratch) -> Result<Proc> {
        let stderr_path = scratch.path().join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        sys::kill_with_parent(&mut cmd);
        // Register under the lock, so a signal cannot slip between spawn and registration.
        let mut reg = registered();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("{name}: starting {:?}", cmd.get_program()))?;
        reg.insert(child.id());
        drop(reg);
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        let reader = thread::Builder::new()
            .name(format!("stdout-{name}"))
            .spawn(move || {
                // Keep draining until EOF so the child never blocks on a full pipe; lines nobody
                // waits for are dropped with the receiver.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        let proc = Proc {
            name: name.to_string(),
            child,
            stderr_path,
            lines,
            sigterm_is_clean: false,
        };
        reader.with_context(|| format!("{name}: starting its stdout reader"))?;
        Ok(proc)
    }

    /// Accepts death by SIGTERM as a clean stop (for peers that do not handle it).
    pub fn with_sigterm_is_clean(mut self) -> Proc {
        self.sigterm_is_clean = true;
        self
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `limit` for a stdout line for which `accept` returns `Some`, passing every
    /// line to `accept` in order. Fails with the stderr tail when the child exits or time runs out.
    pub fn wait_for_line<T>(
        &mut self,
        limit: Duration,
        mut accept: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    if let Some(found) = accept(&line) {
                        return Ok(found);
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!("not ready after {limit:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed: the child is exiting; give it a moment to be reaped.
                    thread::sleep(Duration::from_millis(50));
                    let status = self.child.try_wait().ok().flatten();
                    let what = match status {
                        Some(s) => format!("exited ({s}) before it was ready"),
                        None => "closed its stdout before it was ready".to_string(),
                    };
                    return Err(self.failure(&what));
                }
            }
        }
    }

    /// `Ok` while the process runs; an error with its exit status and stderr tail once it exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failure(&format!("exited unexpectedly ({status})"))),
            Err(e) => Err(self.failure(&format!("cannot be waited for: {e}"))),
        }
    }

    /// An error naming this process, with `what` and the last lines of its stderr.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "{} (pid {}) {what}{}",
            self.name,
            self.child.id(),
            tail_section(&self.stderr_path)
        )
    }

    /// Sends SIGTERM without waiting; [`Proc::stop`] or drop finishes the job.
    pub fn terminate(&self) {
        if registered().contains(&self.child.id()) {
            signal_pid(self.child.id(), sys::SIGTERM);
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Returns the exit status, or an error
    /// when the process had to be killed or did not exit cleanly (with its stderr tail).
    pub fn stop(mut self) -> Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.stop_inner()?;
        // Either killed by the signal, or handled it and exited with the shell's 128 + 15.
        let by_sigterm = self.sigterm_is_clean
            && (status.signal() == Some(sys::SIGTERM) || status.code() == Some(128 + sys::SIGTERM));
        if !status.success() && !by_sigterm {
            return Err(self.failure(&format!("stopped with {status}")));
        }
        Ok(status)
    }

    fn stop_inner(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            registered().remove(&self.child.id());
            return Ok(status);
        }
        self.terminate();
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                registered().remove(&self.child.id());
                return Ok(status);
            }
            thread::sleep(EXIT_POLL);
        }
        // Unregister before the reaping wait, so the pid cannot be reused while still listed.
        registered().remove(&self.child.id());
        let _ = self.child.kill();
        let status = self.child.wait()?;
        Err(self.failure(&format!(
            "did not exit within {TERM_GRACE:?} of SIGTERM; killed ({status})"
        )))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Errors here mean the process was already gone or had to be killed; either way it is
        // stopped now, and a drop has nobody to report to.
        let _ = self.stop_inner();
        registered().remove(&self.child.id());
    }
}

/// Stops every process, sending all the SIGTERMs first so they exit in parallel. Returns the
/// first failure (after stopping the rest).
pub fn stop_all(procs: Vec<Proc>) -> Result<()> {
    for p in &procs {
        p.terminate();
    }
    let mut first = Ok(());
    for p in procs {
        if let Err(e) = p.stop() {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// `"\n--- last lines of PATH ---\n..."`, or nothing when the file is empty or unreadable.
pub fn tail_section(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(TAIL_LINES);
    format!(
        "\n--- last lines of {} ---\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

/// A free loopback TCP port: bind 127.0.0.1:0, read the port, release it.
pub fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr().map(|a| a.port())
}

/// The first executable named `name` in `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Progress messages on stderr: one line rewritten in place on a terminal, plain lines otherwise.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    shown: bool,
}

impl Progress {
    pub fn new() -> Progress {
        use std::io::IsTerminal;
        Progress {
            tty: io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Shows `msg` as the current progress line.
    pub fn show(&mut self, msg: &str) {
        let mut err = io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{msg}");
        } else {
            let _ = writeln!(err, "{msg}");
        }
        let _ = err.flush();
        self.shown = true;
    }

    /// Prints `msg` as a line of its own that stays (e.g. "haproxy not installed: skipped").
    pub fn note(&mut self, msg: &str) {
        self.clear();
        eprintln!("{msg}");
    }

    /// Removes the progress line (on a terminal).
    pub fn clear(&mut self) {
        if self.tty && self.shown {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
        self.shown = false;
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_reads_lines_and_stops_on_drop() {
        let scratch = Scratch::new().expect("scratch");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; echo ready; echo oops >&2; exec sleep 30"]);
        let mut p = Proc::spawn("sleeper", cmd, &scratch).expect("spawn");
        let pid = p.pid();
        let got = p
            .wait_for_line(Duration::from_secs(10), |l| {
                (l == "ready").then_some(l.len())
            })
            .expect("ready");
        assert_eq!(got, 5);
        assert!(registered().contains(&pid));
        p.check_alive().expect("alive");
        drop(p);
        assert!(!registered().contains(&pid));
        // Reaped: the pid is gone (or reused by an unrelated process, which is not our child).
        assert!(!Path::new(&format!("/proc/{pid}/stat")).exists() || !registered().contains(&pid));
    }

    #[test]
    fn early_exit_reports_stderr_tail() {
        let scratch = Scratch::new().expect("scratch");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo broken config >&2; exit 2"]);
        let mut p = Proc::spawn("failing", cmd, &scratch).expect("spawn");
        let err = p
            .wait_for_line(Duration::from_secs(10), |_| Some(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("failing"), "{err}");
        assert!(err.contains("broken config"), "{err}");
    }

    #[test]
    fn stop_reports_unclean_exit() {
        let scratch = Scratch::new().expect("scratch");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let p = Proc::spawn("three", cmd, &scratch).expect("spawn");
        thread::sleep(Duration::from_millis(200));
        assert!(p.stop().is_err());
    }

    #[test]
    fn free_port_and_which() {
        assert_ne!(free_port().expect("port"), 0);
        assert!(which("sh").is_some());
        assert!(which("surely-not-a-command-xyz").is_none());
    }
}
