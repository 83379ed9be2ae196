//! The new-connections load: short-lived connections, each one round trip, counted per second.
//!
//! Plain TCP only; a failed connection is a measured outcome, not an error of the run.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::common::{
    deadline_after, ensure, join_all, merge, new_histogram, record, recv_until, spawn,
    DEFAULT_CPS_CONCURRENCY, DEFAULT_CPS_COUNT, DEFAULT_RR_SIZE, DEFAULT_TIME_LIMIT,
};
use crate::report::ratio;

/// What [`cps`] runs: short-lived connections, each one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpsSpec {
    /// Connections opened at most, all threads together.
    pub count: u64,
    /// Threads opening connections in parallel (closed loop: each opens the next when done).
    pub concurrency: usize,
    /// Request (and response) size in bytes; at least 1.
    pub size: usize,
    /// Wall-clock bound for the whole run.
    pub time_limit: Duration,
}

impl Default for CpsSpec {
    fn default() -> Self {
        CpsSpec {
            count: DEFAULT_CPS_COUNT,
            concurrency: DEFAULT_CPS_CONCURRENCY,
            size: DEFAULT_RR_SIZE,
            time_limit: DEFAULT_TIME_LIMIT,
        }
    }
}

/// What [`cps`] measured.
#[derive(Debug, Clone)]
pub struct CpsResult {
    /// Connections that completed their round trip.
    pub completed: u64,
    /// Connections that failed (refused, reset, short or wrong reply).
    pub failed: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// From the first connect to the last close (or the time limit).
    pub seconds: f64,
    /// Per-connection time from `connect` to the reply (nanoseconds), completed ones only.
    pub histogram: Histogram<u64>,
}

impl CpsResult {
    /// Completed connections per second.
    pub fn per_sec(&self) -> f64 {
        ratio(self.completed as f64, self.seconds)
    }
}

/// New connections per second against an echo server at `addr`: each thread connects (with
/// `TCP_NODELAY`), sends `size` bytes, reads them back, checks them and closes, until `count`
/// connections were started or the time limit passed. A failed connection is counted, not fatal:
/// through a gateway a refusal is a measured outcome. Returns `Err` only for bad input or when no
/// thread can be started.
pub fn cps(addr: SocketAddr, spec: &CpsSpec) -> io::Result<CpsResult> {
    ensure(
        spec.concurrency > 0 && spec.size > 0,
        "cps needs at least 1 thread and a size of at least 1 byte",
    )?;
    let deadline = deadline_after(spec.time_limit);
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<CpsEvent>();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(spec.concurrency);
    for thread_no in 0..spec.concurrency {
        let job = CpsJob {
            addr,
            size: spec.size,
            count: spec.count,
            deadline,
            next: Arc::clone(&next),
            stop: Arc::clone(&stop),
            salt: thread_no as u8,
        };
        let events = tx.clone();
        match spawn(format!("cps-{thread_no}"), move || {
            let _ = events.send(job.run());
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                join_all(handles);
                return Err(e);
            }
        }
    }
    drop(tx);
    let mut result = CpsResult {
        completed: 0,
        failed: 0,
        first_error: None,
        seconds: 0.0,
        histogram: new_histogram(),
    };
    let mut done = 0usize;
    while done < spec.concurrency {
        match recv_until(&rx, deadline) {
            Ok(event) => {
                done += 1;
                result.completed += event.completed;
                result.failed += event.failed;
                if result.first_error.is_none() {
                    result.first_error = event.first_error;
                }
                merge(&mut result.histogram, &event.histogram)?;
            }
            // Threads notice the deadline themselves (every socket has a timeout up to it).
            Err(RecvTimeoutError::Timeout) => {
                stop.store(true, Ordering::SeqCst);
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let end = Instant::now();
    join_all(handles);
    for event in rx.try_iter() {
        result.completed += event.completed;
        result.failed += event.failed;
        merge(&mut result.histogram, &event.histogram)?;
    }
    result.seconds = end.duration_since(start).as_secs_f64();
    Ok(result)
}

struct CpsEvent {
    completed: u64,
    failed: u64,
    first_error: Option<String>,
    histogram: Histogram<u64>,
}

struct CpsJob {
    addr: SocketAddr,
    size: usize,
    count: u64,
    deadline: Instant,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    salt: u8,
}

impl CpsJob {
    fn run(&self) -> CpsEvent {
        let mut event = CpsEvent {
            completed: 0,
            failed: 0,
            first_error: None,
            histogram: new_histogram(),
        };
        let request: Vec<u8> = (0..self.size)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(self.salt))
            .collect();
        let mut response = vec![0u8; self.size];
        loop {
            if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
                break;
            }
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            if k >= self.count {
                break;
            }
            let began = Instant::now();
            match self.one(&request, &mut response) {
                Ok(()) => {
                    event.completed += 1;
                    let nanos = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    record(&mut event.histogram, nanos);
                }
                // Cut off by the time limit: neither a success nor a failure of the path.
                Err(_) if Instant::now() >= self.deadline => break,
                Err(e) => {
                    event.failed += 1;
                    if event.first_error.is_none() {
                        event.first_error = Some(format!("connection {k}: {e}"));
                    }
                }
            }
        }
        event
    }

    fn one(&self, request: &[u8], response: &mut [u8]) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "time limit"));
        }
        let mut stream = TcpStream::connect_timeout(&self.addr, left)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        stream.write_all(request)?;
        stream.read_exact(response).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "closed before the whole reply arrived")
            } else {
                e
            }
        })?;
        if response != request {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "reply differs from request",
            ));
        }
        Ok(())
        // Dropping the stream closes it: the connection's lifetime ends here.
    }
}
