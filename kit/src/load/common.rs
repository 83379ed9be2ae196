//! What the load loops share: the default sizes and limits, the thread crew and its watchdog,
//! connecting, spawning and collecting, and the latency histograms. The loops themselves are in
//! `bulk`, `rr` and `cps`; nothing here opens a listener.

use hdrhistogram::Histogram;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Parallel connections of a bulk or rr run unless told otherwise.
pub const DEFAULT_CONNECTIONS: usize = 1;
/// Bytes each bulk connection sends unless told otherwise.
pub const DEFAULT_BULK_BYTES: u64 = 64 * 1024 * 1024;
/// Size of each bulk `write` unless told otherwise.
pub const DEFAULT_WRITE_SIZE: usize = 64 * 1024;
/// Request/response size unless told otherwise.
pub const DEFAULT_RR_SIZE: usize = 64;
/// Requests each rr connection sends unless told otherwise.
pub const DEFAULT_RR_REQUESTS: u64 = 10_000;
/// Connections a cps run opens unless told otherwise.
pub const DEFAULT_CPS_COUNT: u64 = 10_000;
/// Threads of a cps run unless told otherwise.
pub const DEFAULT_CPS_CONCURRENCY: usize = 4;
/// Wall-clock bound of a run unless told otherwise.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Significant digits of the latency histograms.
pub(super) const HISTOGRAM_SIGFIG: u8 = 3;

/// The stop flag and a handle to every socket, so the controlling thread can end the run.
pub(super) struct Crew {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) sockets: Vec<TcpStream>,
}

impl Crew {
    pub(super) fn new() -> Crew {
        Crew {
            stop: Arc::new(AtomicBool::new(false)),
            sockets: Vec::new(),
        }
    }

    /// Opens a run's connections with `connect`, given the deadline (`limit` from now); `each`
    /// turns every one into its socket, which the crew keeps for halting, and what the run
    /// drives. Returns the deadline, the crew and those.
    pub(super) fn connect<C, T>(
        limit: Duration,
        connect: impl FnOnce(Instant) -> io::Result<Vec<C>>,
        mut each: impl FnMut(C) -> io::Result<(TcpStream, T)>,
    ) -> io::Result<(Instant, Crew, Vec<T>)> {
        let deadline = deadline_after(limit);
        let opened = connect(deadline)?;
        let mut crew = Crew::new();
        let mut jobs = Vec::with_capacity(opened.len());
        for c in opened {
            let (socket, job) = each(c)?;
            crew.sockets.push(socket);
            jobs.push(job);
        }
        Ok((deadline, crew, jobs))
    }

    /// Sets the stop flag and shuts every socket down, which wakes threads blocked in read or write.
    pub(super) fn halt(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for socket in &self.sockets {
            // Sockets already closed report NotConnected; nothing to do.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Opens `connections` TCP connections to `addr` within the time left until `deadline`
/// (optionally with `TCP_NODELAY`); an error names the connection.
pub fn connect_all(
    addr: SocketAddr,
    connections: usize,
    deadline: Instant,
    nodelay: bool,
) -> io::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(connections);
    for conn in 0..connections {
        let left = time_left(
            deadline,
            conn,
            "connect",
            "time limit reached before connecting",
        )?;
        let stream = TcpStream::connect_timeout(&addr, left)
            .map_err(|e| named(conn, &format!("connect {addr}"), e))?;
        if nodelay {
            stream
                .set_nodelay(true)
                .map_err(|e| named(conn, "set TCP_NODELAY", e))?;
        }
        streams.push(stream);
    }
    Ok(streams)
}

/// The time left until `deadline`, or a `TimedOut` error naming connection `conn` and `what`.
pub fn time_left(deadline: Instant, conn: usize, what: &str, why: &str) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(named(conn, what, io::Error::new(ErrorKind::TimedOut, why)));
    }
    Ok(left)
}

pub(super) fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(f)
}

/// Keeps a spawned thread's handle; when the spawn failed, halts `crew`, joins the threads
/// started so far and returns the error.
pub(super) fn keep(
    handles: &mut Vec<JoinHandle<()>>,
    spawned: io::Result<JoinHandle<()>>,
    crew: &Crew,
) -> io::Result<()> {
    match spawned {
        Ok(h) => {
            handles.push(h);
            Ok(())
        }
        Err(e) => {
            crew.halt();
            join_all(std::mem::take(handles));
            Err(e)
        }
    }
}

pub(super) fn join_all(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        // A panicking load thread is a bug; its missing report already turned into an error.
        let _ = handle.join();
    }
}

/// Collects one report per connection into `acc` (`take` says whether the report ends its
/// connection, or returns the error that fails the run) until all `expected` are in, the
/// `deadline` passes or one fails; then halts the rest, joins every thread and hands the reports
/// sent meanwhile to `late` (their errors were caused by the halt; their figures are real).
/// Returns when collection ended and whether the deadline passed first.
#[allow(clippy::too_many_arguments)]
pub(super) fn collect<E, A>(
    rx: &Receiver<E>,
    expected: usize,
    deadline: Instant,
    crew: &Crew,
    handles: Vec<JoinHandle<()>>,
    acc: &mut A,
    take: fn(&mut A, E) -> io::Result<bool>,
    late: fn(&mut A, E) -> io::Result<()>,
) -> io::Result<(Instant, bool)> {
    let mut failure = None;
    let mut done = 0usize;
    let mut timed_out = false;
    while done < expected {
        match recv_until(rx, deadline) {
            Ok(event) => match take(acc, event) {
                Ok(ends) => done += usize::from(ends),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            },
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(RecvTimeoutError::Disconnected) => {
                failure = Some(io::Error::other("a load thread exited without reporting"));
                break;
            }
        }
    }
    let end = Instant::now();
    if done < expected {
        crew.halt();
    }
    join_all(handles);
    for event in rx.try_iter() {
        late(acc, event)?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((end, timed_out)),
    }
}

pub(super) fn recv_until<T>(rx: &Receiver<T>, deadline: Instant) -> Result<T, RecvTimeoutError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return rx.try_recv().map_err(|e| match e {
            mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
            mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
        });
    }
    rx.recv_timeout(left)
}

/// `now + limit`, or a far-future instant when that overflows.
pub fn deadline_after(limit: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(limit)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

pub(super) fn new_histogram() -> Histogram<u64> {
    // Auto-resizing; creation only fails for sigfig > 5, and HISTOGRAM_SIGFIG is 3.
    Histogram::new(HISTOGRAM_SIGFIG).expect("sigfig 3 is valid")
}

pub(super) fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) -> io::Result<()> {
    into.add(from)
        .map_err(|e| io::Error::other(format!("merging latency histograms: {e:?}")))
}

/// Records `nanos`, clamping when the histogram cannot grow any further rather than losing it.
pub(super) fn record(histogram: &mut Histogram<u64>, nanos: u64) {
    if histogram.record(nanos).is_err() {
        histogram.saturating_record(nanos);
    }
}

/// `e` with "connection N: what: " in front, keeping its kind.
pub fn named(conn: usize, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("connection {conn}: {what}: {e}"))
}

/// `Ok` when `ok`, else an `InvalidInput` error saying `msg`: a spec's check.
pub(super) fn ensure(ok: bool, msg: &str) -> io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(ErrorKind::InvalidInput, msg.to_string()))
    }
}
