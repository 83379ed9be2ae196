//! The request/response load: closed or open loop over any `Read + Write` stream, latencies
//! into an HdrHistogram. [`run_rr`] is the one loop for every transport; [`rr`] is plain TCP.
//!
//! It does not connect or handshake for other transports (their callers do), and it does not
//! measure CPU.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::common::{
    collect, connect_all, ensure, keep, merge, named, new_histogram, record, spawn, Crew,
    DEFAULT_CONNECTIONS, DEFAULT_RR_REQUESTS, DEFAULT_RR_SIZE, DEFAULT_TIME_LIMIT,
};
use crate::report::ratio;

/// Open-loop senders sleep until this close to the intended time, then yield-spin the rest.
const SPIN_WINDOW: Duration = Duration::from_micros(100);
/// Longest single sleep of an open-loop sender, so a halt is noticed promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(10);

/// What [`rr`] sends.
#[derive(Debug, Clone, PartialEq)]
pub struct RrSpec {
    /// Parallel connections, one thread each.
    pub connections: usize,
    /// Request (and response) size in bytes; at least 1.
    pub size: usize,
    /// Requests each connection sends at most.
    pub requests_per_connection: u64,
    /// `None`: closed loop (send the next request when the previous reply arrives). `Some(r)`: open
    /// loop at `r` requests per second in total, spread evenly over the connections, latency measured
    /// from the intended send time.
    pub rate_per_sec: Option<f64>,
    /// Wall-clock bound for the whole run, connects included.
    pub time_limit: Duration,
}

impl Default for RrSpec {
    fn default() -> Self {
        RrSpec {
            connections: DEFAULT_CONNECTIONS,
            size: DEFAULT_RR_SIZE,
            requests_per_connection: DEFAULT_RR_REQUESTS,
            rate_per_sec: None,
            time_limit: DEFAULT_TIME_LIMIT,
        }
    }
}

impl RrSpec {
    /// `InvalidInput` for no connections, a zero size or a rate that is not positive.
    pub fn check(&self) -> io::Result<()> {
        ensure(
            self.connections > 0 && self.size > 0,
            "rr needs at least 1 connection and a size of at least 1 byte",
        )?;
        ensure(
            self.rate_per_sec
                .is_none_or(|rate| rate.is_finite() && rate > 0.0),
            "rr rate must be a positive number of requests per second",
        )
    }
}

/// What [`rr`] measured.
#[derive(Debug, Clone)]
pub struct RrResult {
    /// Completed requests, all connections.
    pub requests: u64,
    /// From the first request to the last reply (or the time limit).
    pub seconds: f64,
    /// Latencies in nanoseconds.
    pub histogram: Histogram<u64>,
}

impl RrResult {
    /// Latency at percentile `p` (0..=100) in microseconds; 0.0 when nothing was recorded.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_percentile(p) as f64 / 1_000.0
    }

    /// The usual percentiles, the maximum and the request rate.
    pub fn summary(&self) -> LatencySummary {
        let max_us = if self.histogram.is_empty() {
            0.0
        } else {
            self.histogram.max() as f64 / 1_000.0
        };
        LatencySummary {
            p50_us: self.percentile_us(50.0),
            p90_us: self.percentile_us(90.0),
            p99_us: self.percentile_us(99.0),
            p999_us: self.percentile_us(99.9),
            p9999_us: self.percentile_us(99.99),
            max_us,
            requests: self.requests,
            requests_per_sec: ratio(self.requests as f64, self.seconds),
        }
    }
}

/// Latency percentiles in microseconds, for tables and JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySummary {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    pub requests: u64,
    pub requests_per_sec: f64,
}

impl LatencySummary {
    /// Table column names of [`LatencySummary::cells`].
    pub const COLUMNS: [&'static str; 8] = [
        "requests",
        "req/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "p99.99 us",
        "max us",
    ];

    /// Table cells: requests, requests per second (whole), then the latencies (one decimal).
    pub fn cells(&self) -> Vec<String> {
        let mut cells = vec![
            self.requests.to_string(),
            format!("{:.0}", self.requests_per_sec),
        ];
        cells.extend(
            [
                self.p50_us,
                self.p90_us,
                self.p99_us,
                self.p999_us,
                self.p9999_us,
                self.max_us,
            ]
            .map(|v| format!("{v:.1}")),
        );
        cells
    }
}

/// Request/response against an echo server at `addr`; see the module docs.
///
/// Each connection (with `TCP_NODELAY`) writes `size` bytes, reads `size` bytes back, checks they are
/// the request, and records the latency. A socket error, a short read or a wrong reply is an `Err`
/// naming the connection. Reaching the time limit just ends the run with fewer requests.
pub fn rr(addr: SocketAddr, spec: &RrSpec) -> io::Result<RrResult> {
    run_rr(
        spec,
        |deadline| connect_all(addr, spec.connections, deadline, true),
        |s| Ok((s.try_clone()?, s)),
    )
}

/// The transport-neutral loop behind [`rr`] and its TLS and WebSocket variants: checks `spec`,
/// opens the connections with `connect` (given the deadline: the time limit from now), turns
/// each into a handle to its socket (for halting) and the stream to use with `stream`, and runs
/// the rr jobs over them. Errors and the time limit behave as in [`rr`].
pub fn run_rr<C, S: Read + Write + Send + 'static>(
    spec: &RrSpec,
    connect: impl FnOnce(Instant) -> io::Result<Vec<C>>,
    stream: impl FnMut(C) -> io::Result<(TcpStream, S)>,
) -> io::Result<RrResult> {
    spec.check()?;
    let (deadline, crew, streams) = Crew::connect(spec.time_limit, connect, stream)?;

    let (tx, rx) = mpsc::channel::<RrEvent>();
    let start = Instant::now();
    // Per-connection period of the open loop, and the stagger between connections.
    let period = spec.rate_per_sec.map(|rate| spec.connections as f64 / rate);
    let mut handles = Vec::with_capacity(streams.len());
    for (conn, stream) in streams.into_iter().enumerate() {
        let schedule = period.map(|period| Schedule {
            start,
            offset_secs: period * conn as f64 / spec.connections as f64,
            period_secs: period,
        });
        let job = RrJob {
            conn,
            size: spec.size,
            requests: spec.requests_per_connection,
            schedule,
            deadline,
            stop: Arc::clone(&crew.stop),
        };
        let events = tx.clone();
        let spawned = spawn(format!("rr-{conn}"), move || {
            let mut histogram = new_histogram();
            let result = job.run(stream, &mut histogram);
            // The receiver only goes away after every thread is joined.
            let _ = events.send(RrEvent { histogram, result });
        });
        keep(&mut handles, spawned, &crew)?;
    }
    drop(tx);

    let mut histogram = new_histogram();
    let take = |histogram: &mut Histogram<u64>, event: RrEvent| {
        merge(histogram, &event.histogram)?;
        event.result.map(|()| true)
    };
    let late = |histogram: &mut Histogram<u64>, event: RrEvent| merge(histogram, &event.histogram);
    let (end, _timed_out) = collect(
        &rx,
        spec.connections,
        deadline,
        &crew,
        handles,
        &mut histogram,
        take,
        late,
    )?;
    Ok(RrResult {
        requests: histogram.len(),
        seconds: end.duration_since(start).as_secs_f64(),
        histogram,
    })
}

struct RrEvent {
    histogram: Histogram<u64>,
    result: io::Result<()>,
}

/// Open-loop send times of one connection: `start + offset + k * period`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    offset_secs: f64,
    period_secs: f64,
}

struct RrJob {
    conn: usize,
    size: usize,
    requests: u64,
    schedule: Option<Schedule>,
    deadline: Instant,
    stop: Arc<AtomicBool>,
}

impl RrJob {
    fn run<S: Read + Write>(
        &self,
        mut stream: S,
        histogram: &mut Histogram<u64>,
    ) -> io::Result<()> {
        let mut request: Vec<u8> = (0..self.size)
            .map(|i| (i as u64).wrapping_mul(31).wrapping_add(self.conn as u64) as u8)
            .collect();
        let mut response = vec![0u8; self.size];
        let stamp = self.size.min(8);
        for k in 0..self.requests {
            let began = match self.schedule {
                None => Instant::now(),
                Some(s) => {
                    let at = s.offset_secs + k as f64 * s.period_secs;
                    let Some(intended) = Duration::try_from_secs_f64(at)
                        .ok()
                        .and_then(|d| s.start.checked_add(d))
                    else {
                        break;
                    };
                    if intended >= self.deadline {
                        break;
                    }
                    self.wait_until(intended);
                    intended
                }
            };
            if began >= self.deadline || self.stop.load(Ordering::Relaxed) {
                break;
            }
            request[..stamp].copy_from_slice(&k.to_le_bytes()[..stamp]);
            stream
                .write_all(&request)
                .map_err(|e| named(self.conn, &format!("write request {k}"), e))?;
            if let Err(e) = stream.read_exact(&mut response) {
                let what = if e.kind() == ErrorKind::UnexpectedEof {
                    format!("short read: echo closed during reply {k}")
                } else {
                    format!("read reply {k}")
                };
                return Err(named(self.conn, &what, e));
            }
            let nanos = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if response != request {
                let e = io::Error::new(ErrorKind::InvalidData, "reply differs from request");
                return Err(named(self.conn, &format!("verify reply {k}"), e));
            }
            record(histogram, nanos);
        }
        Ok(())
    }

    /// Sleeps in slices until close to `when`, then yield-spins; returns early on a halt.
    fn wait_until(&self, when: Instant) {
        loop {
            let now = Instant::now();
            if now >= when || self.stop.load(Ordering::Relaxed) {
                return;
            }
            let left = when - now;
            if left > SPIN_WINDOW {
                thread::sleep((left - SPIN_WINDOW).min(SLEEP_SLICE));
            } else {
                thread::yield_now();
            }
        }
    }
}
