//! Load generators that drive a TCP echo path (direct, or through a tunnel) with blocking std sockets.
//!
//! [`bulk`] measures one-way throughput with verified payloads; [`rr`] measures request/response
//! latency into an HdrHistogram, closed loop or open loop at a fixed rate (latency counted from the
//! intended send time, so a stalled path cannot hide its queueing: no coordinated omission);
//! [`cps`] opens short-lived connections (connect, one round trip, close) and counts them per second.
//! [`bulk_tls`] and [`rr_tls`] are the same loads over TLS (rustls, see [`TlsTarget`]): the
//! handshake happens right after connecting, before the clock starts. [`bulk_ws`] and [`rr_ws`]
//! are the same loads over WebSocket (see [`WsTarget`]), framed with the sans-IO codecs of
//! `sallyport-dataplane`: the upgrade happens right after connecting, before the clock starts.
//!
//! Each load is bounded by a count and by a time limit. When the limit passes, a watchdog shuts the
//! sockets down so every thread returns; nothing here waits on a peer forever. These functions do not
//! start servers, pin threads or measure CPU; callers do that around them.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{RngCore, SeedableRng};
use rustls::pki_types::ServerName;

use sallyport_dataplane::wire::{http, ws};

use crate::report::ratio;
use crate::tls::{self, Inbound};

/// One connection: the usual single-stream figure; raise it to find the multi-core ceiling.
pub const DEFAULT_CONNECTIONS: usize = 1;
/// 64 MiB per connection: long enough that connection setup is noise next to the transfer.
pub const DEFAULT_BULK_BYTES: u64 = 64 * 1024 * 1024;
/// 64 KiB writes: a typical application buffer, and one that crosses pipe and segment sizes.
pub const DEFAULT_WRITE_SIZE: usize = 64 * 1024;
/// 64-byte requests: small enough that latency, not bandwidth, is what is measured.
pub const DEFAULT_RR_SIZE: usize = 64;
/// 10 000 requests per connection: enough samples for a stable p99.9 in a few seconds.
pub const DEFAULT_RR_REQUESTS: u64 = 10_000;
/// Connections opened by a new-connections-per-second run.
pub const DEFAULT_CPS_COUNT: u64 = 10_000;
/// Threads opening connections in parallel: a few, so a gateway sees overlapping setups.
pub const DEFAULT_CPS_CONCURRENCY: usize = 4;
/// One minute: long enough for every default load on a slow machine, short enough to notice a hang.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Significant digits kept by latency histograms (0.1% value resolution).
const HISTOGRAM_SIGFIG: u8 = 3;
/// Bytes read per `read` call by bulk readers.
const READ_BUFFER: usize = 256 * 1024;
/// Period of the verification pattern. Odd, so it never lines up with power-of-two write or buffer
/// sizes: a dropped, duplicated or reordered chunk shows up as a mismatch.
const PATTERN_PERIOD: usize = (1 << 20) - 3;
/// Fixed seed: the payload is the same on every run, so runs compare like with like.
const PATTERN_SEED: u64 = 0x5a11_7907_b0a7_5eed;
/// Open-loop senders sleep until this close to the intended time, then yield-spin the rest.
const SPIN_WINDOW: Duration = Duration::from_micros(100);
/// Longest single sleep of an open-loop sender, so a halt is noticed promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(10);
/// Longest `poll` of a TLS bulk connection before it looks at the stop flag again.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// Where the TLS loads ([`bulk_tls`], [`rr_tls`]) connect: the client configuration (trusted
/// CAs, protocol versions) and the name the server's certificate must be valid for.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// Largest payload of one WebSocket frame the WebSocket loads send; a longer write becomes
/// several frames (each a message of its own), so `--write-size` stays below a gateway's
/// `ws_max_message` (default 16 MiB).
pub const WS_MAX_FRAME: usize = 1 << 20;
/// Longest upgrade response head the WebSocket loads read before giving up.
const WS_MAX_HEAD: usize = 16 * 1024;

/// Where the WebSocket loads ([`bulk_ws`], [`rr_ws`]) connect: the `Host` header value and the
/// request path of the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsTarget {
    pub host: String,
    pub path: String,
}

/// What [`bulk`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSpec {
    /// Parallel connections, each with its own writer and reader thread.
    pub connections: usize,
    /// Bytes each connection sends (and expects back).
    pub bytes_per_connection: u64,
    /// Size of each `write` call (the last one may be shorter).
    pub write_size: usize,
    /// Wall-clock bound for the whole run, connects included.
    pub time_limit: Duration,
}

impl Default for BulkSpec {
    fn default() -> Self {
        BulkSpec {
            connections: DEFAULT_CONNECTIONS,
            bytes_per_connection: DEFAULT_BULK_BYTES,
            write_size: DEFAULT_WRITE_SIZE,
            time_limit: DEFAULT_TIME_LIMIT,
        }
    }
}

/// What [`bulk`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BulkResult {
    /// Echoed bytes received back, all connections.
    pub bytes: u64,
    /// From the first write to the last reader's EOF (or the time limit).
    pub seconds: f64,
    /// One-way throughput: `bytes / seconds / 1e9`.
    pub gbytes_per_sec: f64,
    /// Every byte came back, matched, and was followed by EOF before the time limit.
    pub complete: bool,
}

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

/// Bulk transfer against an echo server at `addr`; see the module docs.
///
/// Each connection has a writer thread sending `bytes_per_connection` bytes of a deterministic
/// pseudo-random pattern in `write_size` writes and then shutting down its write side, and a reader
/// thread reading everything back until EOF and checking it against the pattern as it arrives.
/// Returns `Err` naming the connection for a connect or socket error, for echoed bytes that differ
/// from what was sent, and for an EOF before everything came back. Hitting the time limit is not an
/// error: the sockets are shut down and the result has `complete == false`.
pub fn bulk(addr: SocketAddr, spec: &BulkSpec) -> io::Result<BulkResult> {
    check_bulk(spec)?;
    let deadline = deadline_after(spec.time_limit);
    let streams = connect_all(addr, spec.connections, deadline, false)?;
    run_split_bulk(
        spec,
        deadline,
        streams.into_iter().map(|s| (s, None)).collect(),
    )
}

/// [`bulk`] over WebSocket: each connection completes the upgrade to `target` right after
/// connecting (before the clock starts). The writer sends each write as masked binary frames
/// (of at most [`WS_MAX_FRAME`] bytes, a fresh random mask each) and, when everything was sent,
/// a Close frame (1000) instead of shutting its write side down; the reader decodes the echoed
/// frames, verifies their payload and ends at the path's Close frame. A TCP EOF without a
/// Close frame, a Close with a status other than 1000, or a protocol error is an `Err` naming the
/// connection; otherwise as [`bulk`]. Pings from the path are not answered (the gateways here
/// send none: `ws_ping` is off by default).
pub fn bulk_ws(addr: SocketAddr, spec: &BulkSpec, target: &WsTarget) -> io::Result<BulkResult> {
    check_bulk(spec)?;
    let deadline = deadline_after(spec.time_limit);
    let conns = connect_all_ws(addr, spec.connections, deadline, false, target)?;
    run_split_bulk(
        spec,
        deadline,
        conns.into_iter().map(|(s, rest)| (s, Some(rest))).collect(),
    )
}

fn check_bulk(spec: &BulkSpec) -> io::Result<()> {
    if spec.connections == 0 || spec.write_size == 0 {
        return Err(invalid_input(
            "bulk needs at least 1 connection and a write size of at least 1",
        ));
    }
    Ok(())
}

/// A writer and a reader thread per connection; `Some(bytes)` marks a WebSocket connection
/// with the bytes that followed its upgrade response.
fn run_split_bulk(
    spec: &BulkSpec,
    deadline: Instant,
    conns: Vec<(TcpStream, Option<Vec<u8>>)>,
) -> io::Result<BulkResult> {
    let pattern = Arc::new(Pattern::new(spec.write_size.max(READ_BUFFER)));
    let mut pairs = Vec::with_capacity(conns.len());
    let mut crew = Crew::new();
    for (stream, ws) in conns {
        let writer = stream.try_clone()?;
        crew.sockets.push(stream.try_clone()?);
        pairs.push((writer, stream, ws));
    }

    let (tx, rx) = mpsc::channel::<BulkEvent>();
    let start = Instant::now();
    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(2 * pairs.len());
    for (conn, (writer, reader, ws)) in pairs.into_iter().enumerate() {
        let offset = pattern.start(conn);
        let job = BulkJob {
            conn,
            pattern: Arc::clone(&pattern),
            offset,
            bytes: spec.bytes_per_connection,
            stop: Arc::clone(&crew.stop),
            events: tx.clone(),
        };
        let write_size = spec.write_size;
        let writer_job = job.clone();
        let framed = ws.is_some();
        let spawned = spawn(format!("bulk-w-{conn}"), move || {
            if framed {
                writer_job.write_ws(writer, write_size);
            } else {
                writer_job.write(writer, write_size);
            }
        })
        .and_then(|w| {
            handles.push(w);
            spawn(format!("bulk-r-{conn}"), move || match ws {
                None => job.read(reader),
                Some(rest) => job.read_ws(reader, rest),
            })
        });
        match spawned {
            Ok(r) => handles.push(r),
            Err(e) => {
                crew.halt();
                join_all(handles);
                return Err(e);
            }
        }
    }
    drop(tx);
    finish_bulk(spec, deadline, start, &rx, &crew, handles)
}

/// [`bulk`] over TLS: each connection completes a TLS handshake with `tls` right after
/// connecting (before the clock starts), then one thread per connection drives its rustls
/// session (a session cannot be split between a writer and a reader thread): it encrypts the
/// pattern, writes records, reads records, decrypts and verifies the echo. When everything was
/// sent it sends close_notify and shuts its write side down; the run ends at the echo's
/// close_notify (or EOF). Errors and the time limit behave as in [`bulk`]; a failed handshake is
/// an `Err` naming the connection.
pub fn bulk_tls(addr: SocketAddr, spec: &BulkSpec, tls: &TlsTarget) -> io::Result<BulkResult> {
    check_bulk(spec)?;
    let deadline = deadline_after(spec.time_limit);
    let sessions = connect_all_tls(addr, spec.connections, deadline, false, tls)?;
    let pattern = Arc::new(Pattern::new(spec.write_size.max(READ_BUFFER)));
    let mut crew = Crew::new();
    for (_, sock) in &sessions {
        crew.sockets.push(sock.try_clone()?);
    }
    let (tx, rx) = mpsc::channel::<BulkEvent>();
    let start = Instant::now();
    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(sessions.len());
    for (conn, (session, sock)) in sessions.into_iter().enumerate() {
        let job = BulkJob {
            conn,
            pattern: Arc::clone(&pattern),
            offset: pattern.start(conn),
            bytes: spec.bytes_per_connection,
            stop: Arc::clone(&crew.stop),
            events: tx.clone(),
        };
        let write_size = spec.write_size;
        match spawn(format!("bulk-tls-{conn}"), move || {
            job.run_tls(session, sock, write_size)
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                crew.halt();
                join_all(handles);
                return Err(e);
            }
        }
    }
    drop(tx);
    finish_bulk(spec, deadline, start, &rx, &crew, handles)
}

/// Collects the bulk threads' reports until every connection is done, the time limit passes or
/// one fails; then stops the rest and sums up.
fn finish_bulk(
    spec: &BulkSpec,
    deadline: Instant,
    start: Instant,
    rx: &Receiver<BulkEvent>,
    crew: &Crew,
    handles: Vec<JoinHandle<()>>,
) -> io::Result<BulkResult> {
    let mut bytes = 0u64;
    let mut failure = None;
    let mut done = 0usize;
    let mut timed_out = false;
    while done < spec.connections {
        match recv_until(rx, deadline) {
            Ok(BulkEvent::Read {
                bytes: b, result, ..
            }) => {
                done += 1;
                bytes += b;
                if let Err(e) = result {
                    failure = Some(e);
                    break;
                }
            }
            Ok(BulkEvent::WriteFailed { error, .. }) => {
                failure = Some(error);
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(RecvTimeoutError::Disconnected) => {
                failure = Some(io::Error::other("a bulk thread exited without reporting"));
                break;
            }
        }
    }
    let end = Instant::now();
    if done < spec.connections {
        crew.halt();
    }
    join_all(handles);
    // Events after the halt: their errors were caused by it, but their bytes did arrive.
    for event in rx.try_iter() {
        if let BulkEvent::Read { bytes: b, .. } = event {
            bytes += b;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let seconds = end.duration_since(start).as_secs_f64();
    Ok(BulkResult {
        bytes,
        seconds,
        gbytes_per_sec: ratio(bytes as f64, seconds) / 1e9,
        complete: !timed_out,
    })
}

/// Request/response against an echo server at `addr`; see the module docs.
///
/// Each connection (with `TCP_NODELAY`) writes `size` bytes, reads `size` bytes back, checks they are
/// the request, and records the latency. A socket error, a short read or a wrong reply is an `Err`
/// naming the connection. Reaching the time limit just ends the run with fewer requests.
pub fn rr(addr: SocketAddr, spec: &RrSpec) -> io::Result<RrResult> {
    check_rr(spec)?;
    let deadline = deadline_after(spec.time_limit);
    let streams = connect_all(addr, spec.connections, deadline, true)?;
    let conns = streams
        .into_iter()
        .map(|s| Ok((s.try_clone()?, s)))
        .collect::<io::Result<Vec<_>>>()?;
    run_rr(spec, deadline, conns)
}

/// [`rr`] over TLS: each connection (with `TCP_NODELAY`) completes a TLS handshake with `tls`
/// right after connecting, before the clock starts; each request and reply is then one TLS
/// record each way. Errors as in [`rr`]; a failed handshake is an `Err` naming the connection.
pub fn rr_tls(addr: SocketAddr, spec: &RrSpec, tls: &TlsTarget) -> io::Result<RrResult> {
    check_rr(spec)?;
    let deadline = deadline_after(spec.time_limit);
    let sessions = connect_all_tls(addr, spec.connections, deadline, true, tls)?;
    let conns = sessions
        .into_iter()
        .map(|(session, sock)| Ok((sock.try_clone()?, rustls::StreamOwned::new(session, sock))))
        .collect::<io::Result<Vec<_>>>()?;
    run_rr(spec, deadline, conns)
}

/// [`rr`] over WebSocket: each connection (with `TCP_NODELAY`) completes the upgrade to
/// `target` right after connecting, before the clock starts; each request is then one masked
/// binary frame and its reply is read from the echoed frames (however the path split them).
/// Pings from the path are answered. Errors as in [`rr`]; a failed upgrade, a protocol error
/// or a Close from the path is an `Err` naming the connection. When the run ends each
/// connection sends a Close frame (1000) before closing.
pub fn rr_ws(addr: SocketAddr, spec: &RrSpec, target: &WsTarget) -> io::Result<RrResult> {
    check_rr(spec)?;
    let deadline = deadline_after(spec.time_limit);
    let conns = connect_all_ws(addr, spec.connections, deadline, true, target)?;
    let conns = conns
        .into_iter()
        .map(|(sock, rest)| Ok((sock.try_clone()?, WsStream::new(sock, rest))))
        .collect::<io::Result<Vec<_>>>()?;
    run_rr(spec, deadline, conns)
}

fn check_rr(spec: &RrSpec) -> io::Result<()> {
    if spec.connections == 0 || spec.size == 0 {
        return Err(invalid_input(
            "rr needs at least 1 connection and a size of at least 1 byte",
        ));
    }
    if let Some(rate) = spec.rate_per_sec {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(invalid_input(
                "rr rate must be a positive number of requests per second",
            ));
        }
    }
    Ok(())
}

/// Runs the rr jobs over `conns`: (a handle to the socket, for halting; the stream to use).
fn run_rr<S: Read + Write + Send + 'static>(
    spec: &RrSpec,
    deadline: Instant,
    conns: Vec<(TcpStream, S)>,
) -> io::Result<RrResult> {
    let mut crew = Crew::new();
    let mut streams = Vec::with_capacity(conns.len());
    for (socket, stream) in conns {
        crew.sockets.push(socket);
        streams.push(stream);
    }

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
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                crew.halt();
                join_all(handles);
                return Err(e);
            }
        }
    }
    drop(tx);

    let mut histogram = new_histogram();
    let mut failure = None;
    let mut done = 0usize;
    while done < spec.connections {
        match recv_until(&rx, deadline) {
            Ok(event) => {
                done += 1;
                merge(&mut histogram, &event.histogram)?;
                if let Err(e) = event.result {
                    failure = Some(e);
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                failure = Some(io::Error::other("an rr thread exited without reporting"));
                break;
            }
        }
    }
    let end = Instant::now();
    if done < spec.connections {
        crew.halt();
    }
    join_all(handles);
    // Events after the halt: their errors were caused by it, but their samples are real.
    for event in rx.try_iter() {
        merge(&mut histogram, &event.histogram)?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(RrResult {
        requests: histogram.len(),
        seconds: end.duration_since(start).as_secs_f64(),
        histogram,
    })
}

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
    if spec.concurrency == 0 || spec.size == 0 {
        return Err(invalid_input(
            "cps needs at least 1 thread and a size of at least 1 byte",
        ));
    }
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
                    if event.histogram.record(nanos).is_err() {
                        event.histogram.saturating_record(nanos);
                    }
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

/// The deterministic payload: `PATTERN_PERIOD` random bytes followed by a copy of their start, so any
/// window of up to `extra` bytes starting inside the period is one contiguous slice.
#[derive(Debug)]
struct Pattern {
    bytes: Vec<u8>,
}

impl Pattern {
    fn new(extra: usize) -> Pattern {
        let mut bytes = vec![0u8; PATTERN_PERIOD];
        rand::rngs::StdRng::seed_from_u64(PATTERN_SEED).fill_bytes(&mut bytes);
        bytes.reserve(extra);
        for i in 0..extra {
            bytes.push(bytes[i % PATTERN_PERIOD]);
        }
        Pattern { bytes }
    }

    /// Where connection `conn` starts in the period: different per connection, so crossed streams
    /// are caught too.
    fn start(&self, conn: usize) -> usize {
        ((conn as u64).wrapping_mul(0x9e37_79b9) % PATTERN_PERIOD as u64) as usize
    }

    /// `len` bytes of the stream at period position `pos`; `len` is at most the `extra` of `new`.
    fn window(&self, pos: usize, len: usize) -> &[u8] {
        debug_assert!(pos < PATTERN_PERIOD && pos + len <= self.bytes.len());
        &self.bytes[pos..pos + len]
    }
}

fn advance(pos: usize, by: usize) -> usize {
    (pos + by) % PATTERN_PERIOD
}

enum BulkEvent {
    Read { bytes: u64, result: io::Result<()> },
    WriteFailed { error: io::Error },
}

#[derive(Clone)]
struct BulkJob {
    conn: usize,
    pattern: Arc<Pattern>,
    offset: usize,
    bytes: u64,
    stop: Arc<AtomicBool>,
    events: Sender<BulkEvent>,
}

impl BulkJob {
    fn write(self, mut stream: TcpStream, write_size: usize) {
        let mut pos = self.offset;
        let mut left = self.bytes;
        let result = (|| {
            while left > 0 && !self.stop.load(Ordering::Relaxed) {
                // `write_size` fits in usize, so the min does too.
                let n = left.min(write_size as u64) as usize;
                stream.write_all(self.pattern.window(pos, n))?;
                pos = advance(pos, n);
                left -= n as u64;
            }
            stream.shutdown(Shutdown::Write)
        })();
        if let Err(e) = result {
            let error = named(self.conn, "write", e);
            // The receiver only goes away after every thread is joined.
            let _ = self.events.send(BulkEvent::WriteFailed { error });
        }
    }

    /// [`BulkJob::write`] over WebSocket: masked binary frames, then a Close frame (1000).
    fn write_ws(self, mut stream: TcpStream, write_size: usize) {
        let mut pos = self.offset;
        let mut left = self.bytes;
        let mut rng = rand::rngs::StdRng::from_entropy();
        let frames = write_size.div_ceil(WS_MAX_FRAME);
        let mut out = Vec::with_capacity(write_size + frames * ws::MAX_HEADER_LEN);
        let result = (|| {
            while left > 0 && !self.stop.load(Ordering::Relaxed) {
                // `write_size` fits in usize, so the min does too.
                let n = left.min(write_size as u64) as usize;
                out.clear();
                for chunk in self.pattern.window(pos, n).chunks(WS_MAX_FRAME) {
                    let mask = ws_mask(&mut rng);
                    ws::encode_frame(ws::OpCode::Binary, true, chunk, Some(mask), &mut out);
                }
                stream.write_all(&out)?;
                pos = advance(pos, n);
                left -= n as u64;
            }
            out.clear();
            let mask = ws_mask(&mut rng);
            ws::encode_close(Some(ws::close_code::NORMAL), "", Some(mask), &mut out);
            stream.write_all(&out)
        })();
        if let Err(e) = result {
            let error = named(self.conn, "write", e);
            // The receiver only goes away after every thread is joined.
            let _ = self.events.send(BulkEvent::WriteFailed { error });
        }
    }

    fn read(self, stream: TcpStream) {
        self.read_with(stream, |job, stream, received| {
            job.read_all(stream, received)
        });
    }

    /// [`BulkJob::read`] over WebSocket; `rest` is what followed the upgrade response.
    fn read_ws(self, stream: TcpStream, rest: Vec<u8>) {
        self.read_with(stream, move |job, stream, received| {
            job.read_all_ws(stream, rest, received)
        });
    }

    fn read_with(
        self,
        mut stream: TcpStream,
        read_all: impl FnOnce(&BulkJob, &mut TcpStream, &mut u64) -> io::Result<()>,
    ) {
        let mut received = 0u64;
        let result = read_all(&self, &mut stream, &mut received);
        let failed = result.is_err();
        let event = BulkEvent::Read {
            bytes: received,
            result,
        };
        // The receiver only goes away after every thread is joined.
        let _ = self.events.send(event);
        if failed {
            // Unblock our writer, which may be stuck behind an echo server we stopped reading. Only
            // after reporting, so the writer's resulting EPIPE cannot be mistaken for the cause.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn read_all(&self, stream: &mut TcpStream, received: &mut u64) -> io::Result<()> {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut verify = Verifier::new(self);
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(named(self.conn, "read", e)),
            };
            let checked = verify.check(&buf[..n]);
            *received = verify.received;
            checked?;
        }
        verify.finish()
    }

    fn read_all_ws(
        &self,
        stream: &mut TcpStream,
        rest: Vec<u8>,
        received: &mut u64,
    ) -> io::Result<()> {
        let conn = self.conn;
        let mut buf = rest;
        let mut filled = buf.len();
        buf.resize(READ_BUFFER.max(filled), 0);
        let mut decoder = ws::Decoder::new(ws::Role::Client, usize::MAX);
        let mut verify = Verifier::new(self);
        loop {
            let mut at = 0;
            while at < filled {
                let (used, event) = decoder
                    .decode_in_place(&mut buf[at..filled])
                    .map_err(|e| named(conn, "WebSocket", ws_error(e)))?;
                at += used;
                match event {
                    Some(ws::Event::Data { len, .. }) => {
                        let checked = verify.check(&buf[at - len..at]);
                        *received = verify.received;
                        checked?;
                    }
                    Some(ws::Event::Close { code, reason }) => {
                        if code.is_some_and(|c| c != ws::close_code::NORMAL) {
                            let msg = format!(
                                "the path closed the WebSocket with {code:?} {reason:?} after {} of {} bytes",
                                verify.received, self.bytes
                            );
                            return Err(named(
                                conn,
                                "read",
                                io::Error::new(ErrorKind::ConnectionAborted, msg),
                            ));
                        }
                        return verify.finish();
                    }
                    Some(ws::Event::Ping(_) | ws::Event::Pong(_)) | None => {}
                }
            }
            filled = match stream.read(&mut buf) {
                Ok(0) => {
                    verify.finish()?;
                    let e = io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "TCP closed without a WebSocket Close frame",
                    );
                    return Err(named(conn, "read", e));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => 0,
                Err(e) => return Err(named(conn, "read", e)),
            };
        }
    }

    /// One connection of [`bulk_tls`]: drive the session, then report like [`BulkJob::read`].
    fn run_tls(self, session: rustls::ClientConnection, sock: TcpStream, write_size: usize) {
        let mut received = 0u64;
        let result = self.pump_tls(session, &sock, write_size, &mut received);
        let failed = result.is_err();
        // The receiver only goes away after every thread is joined.
        let _ = self.events.send(BulkEvent::Read {
            bytes: received,
            result,
        });
        if failed {
            let _ = sock.shutdown(Shutdown::Both);
        }
    }

    fn pump_tls(
        &self,
        session: rustls::ClientConnection,
        sock: &TcpStream,
        write_size: usize,
        received: &mut u64,
    ) -> io::Result<()> {
        let conn = self.conn;
        let mut session = rustls::Connection::Client(session);
        session.set_buffer_limit(Some(tls::TLS_BUFFER_LIMIT.max(write_size)));
        sock.set_nonblocking(true)
            .map_err(|e| named(conn, "set non-blocking", e))?;
        let mut verify = Verifier::new(self);
        let mut wire = vec![0u8; READ_BUFFER];
        let mut plain = vec![0u8; READ_BUFFER];
        let mut pos = self.offset;
        let mut sent = 0u64;
        let mut close_queued = false;
        let mut shut = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let e = io::Error::new(ErrorKind::Interrupted, "stopped");
                return Err(named(conn, "bulk", e));
            }
            let mut progress = false;
            while sent < self.bytes {
                // `write_size` fits in usize, so the min does too.
                let n = (self.bytes - sent).min(write_size as u64) as usize;
                let k = session
                    .writer()
                    .write(self.pattern.window(pos, n))
                    .map_err(|e| named(conn, "encrypt", e))?;
                if k == 0 {
                    break;
                }
                sent += k as u64;
                pos = advance(pos, k);
                progress = true;
            }
            if sent == self.bytes && !close_queued {
                session.send_close_notify();
                close_queued = true;
            }
            let (wrote, drained) =
                tls::pump_out(&mut session, sock).map_err(|e| named(conn, "write", e))?;
            progress |= wrote;
            if close_queued && drained && !shut {
                sock.shutdown(Shutdown::Write)
                    .map_err(|e| named(conn, "shutdown", e))?;
                shut = true;
            }
            let inbound = tls::pump_in(&mut session, sock, &mut wire, &mut plain, |chunk| {
                verify.check(chunk)
            });
            *received = verify.received;
            match inbound {
                Ok(Inbound::Idle) => {}
                Ok(Inbound::Data) => progress = true,
                Ok(Inbound::End) => return verify.finish(),
                Err(e) if verify.failed => return Err(e),
                Err(e) => return Err(named(conn, "read", e)),
            }
            if !progress {
                tls::wait(sock, true, session.wants_write(), POLL_SLICE)
                    .map_err(|e| named(conn, "poll", e))?;
            }
        }
    }
}

/// Checks echoed bytes against the pattern as they arrive.
struct Verifier<'a> {
    conn: usize,
    pattern: &'a Pattern,
    pos: usize,
    bytes: u64,
    received: u64,
    /// A check failed (its error is already named).
    failed: bool,
}

impl<'a> Verifier<'a> {
    fn new(job: &'a BulkJob) -> Verifier<'a> {
        Verifier {
            conn: job.conn,
            pattern: &job.pattern,
            pos: job.offset,
            bytes: job.bytes,
            received: 0,
            failed: false,
        }
    }

    /// `got` (at most the pattern's `extra` bytes) is the next part of the echo.
    fn check(&mut self, got: &[u8]) -> io::Result<()> {
        let n = got.len();
        if self.received + n as u64 > self.bytes {
            self.failed = true;
            let msg = format!("echo returned more than the {} bytes sent", self.bytes);
            return Err(named(
                self.conn,
                "verify",
                io::Error::new(ErrorKind::InvalidData, msg),
            ));
        }
        let want = self.pattern.window(self.pos, n);
        if got != want {
            self.failed = true;
            let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            let msg = format!(
                "echoed byte {} differs from what was sent",
                self.received + at as u64
            );
            return Err(named(
                self.conn,
                "verify",
                io::Error::new(ErrorKind::InvalidData, msg),
            ));
        }
        self.received += n as u64;
        self.pos = advance(self.pos, n);
        Ok(())
    }

    /// The echo ended: everything must have come back.
    fn finish(&self) -> io::Result<()> {
        if self.received < self.bytes {
            let msg = format!(
                "echo closed after {} of {} bytes",
                self.received, self.bytes
            );
            return Err(named(
                self.conn,
                "read",
                io::Error::new(ErrorKind::UnexpectedEof, msg),
            ));
        }
        Ok(())
    }
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
            if histogram.record(nanos).is_err() {
                // Only when the histogram cannot grow any further; clamp rather than lose the sample.
                histogram.saturating_record(nanos);
            }
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

/// The stop flag and a handle to every socket, so the controlling thread can end the run.
struct Crew {
    stop: Arc<AtomicBool>,
    sockets: Vec<TcpStream>,
}

impl Crew {
    fn new() -> Crew {
        Crew {
            stop: Arc::new(AtomicBool::new(false)),
            sockets: Vec::new(),
        }
    }

    /// Sets the stop flag and shuts every socket down, which wakes threads blocked in read or write.
    fn halt(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for socket in &self.sockets {
            // Sockets already closed report NotConnected; nothing to do.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

fn connect_all(
    addr: SocketAddr,
    connections: usize,
    deadline: Instant,
    nodelay: bool,
) -> io::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(connections);
    for conn in 0..connections {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let e = io::Error::new(ErrorKind::TimedOut, "time limit reached before connecting");
            return Err(named(conn, "connect", e));
        }
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

/// [`connect_all`], then a TLS handshake on each connection within the time left.
fn connect_all_tls(
    addr: SocketAddr,
    connections: usize,
    deadline: Instant,
    nodelay: bool,
    tls: &TlsTarget,
) -> io::Result<Vec<(rustls::ClientConnection, TcpStream)>> {
    let streams = connect_all(addr, connections, deadline, nodelay)?;
    let mut sessions = Vec::with_capacity(streams.len());
    for (conn, mut sock) in streams.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let e = io::Error::new(
                ErrorKind::TimedOut,
                "time limit reached before the handshake",
            );
            return Err(named(conn, "TLS handshake", e));
        }
        let mut session =
            rustls::ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
                .map_err(|e| named(conn, "TLS session", io::Error::other(e)))?;
        client_handshake(&mut session, &mut sock, left)
            .map_err(|e| named(conn, "TLS handshake", e))?;
        sessions.push((session, sock));
    }
    Ok(sessions)
}

/// Blocking handshake within `limit`; the socket is left without timeouts.
fn client_handshake(
    session: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    limit: Duration,
) -> io::Result<()> {
    sock.set_read_timeout(Some(limit))?;
    sock.set_write_timeout(Some(limit))?;
    while session.is_handshaking() {
        session.complete_io(sock)?;
    }
    while session.wants_write() {
        session.write_tls(sock)?;
    }
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)
}

/// [`connect_all`], then a WebSocket upgrade on each connection within the time left; each
/// comes with the bytes that followed the `101` response (frames already sent, if any).
fn connect_all_ws(
    addr: SocketAddr,
    connections: usize,
    deadline: Instant,
    nodelay: bool,
    target: &WsTarget,
) -> io::Result<Vec<(TcpStream, Vec<u8>)>> {
    let streams = connect_all(addr, connections, deadline, nodelay)?;
    let mut conns = Vec::with_capacity(streams.len());
    for (conn, mut sock) in streams.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let e = io::Error::new(ErrorKind::TimedOut, "time limit reached before the upgrade");
            return Err(named(conn, "WebSocket upgrade", e));
        }
        let rest = ws_upgrade(&mut sock, target, left)
            .map_err(|e| named(conn, &format!("WebSocket upgrade to {addr}"), e))?;
        conns.push((sock, rest));
    }
    Ok(conns)
}

/// Blocking client handshake (RFC 6455 §4.1) within `limit`, with the `sallyport-dataplane`
/// codecs: sends `GET PATH` with a fresh random key and no subprotocol, reads until the
/// `101` response is complete and checked, returns what followed it. The socket is left
/// without timeouts.
fn ws_upgrade(sock: &mut TcpStream, target: &WsTarget, limit: Duration) -> io::Result<Vec<u8>> {
    sock.set_read_timeout(Some(limit))?;
    sock.set_write_timeout(Some(limit))?;
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let key = http::generate_key(nonce);
    let mut request = Vec::new();
    http::encode_upgrade_request(&target.host, &target.path, &key, &[], &mut request);
    sock.write_all(&request)?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before answering the upgrade request",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        match http::parse_upgrade_response(&head, &key) {
            Ok(Some((_, used))) => {
                sock.set_read_timeout(None)?;
                sock.set_write_timeout(None)?;
                return Ok(head.split_off(used));
            }
            Ok(None) if head.len() < WS_MAX_HEAD => {}
            Ok(None) => {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "upgrade response head too large",
                ))
            }
            Err(e) => {
                let status = String::from_utf8_lossy(&head);
                let status = status.lines().next().unwrap_or("").trim().to_string();
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{e} (answer: {status:?})"),
                ));
            }
        }
    }
}

/// A fresh client mask key (RFC 6455 §5.3: unpredictable, one per frame).
fn ws_mask(rng: &mut rand::rngs::StdRng) -> [u8; 4] {
    rng.next_u32().to_ne_bytes()
}

fn ws_error(e: ws::WsError) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, e)
}

/// A blocking WebSocket client connection as a byte stream (for [`run_rr`]): each `write` sends
/// one masked binary frame (at most [`WS_MAX_FRAME`] bytes of it), `read` returns decoded
/// payload, answering pings on the way; the path's Close frame reads as EOF. Dropping it sends
/// a Close frame (1000) unless the path closed first.
struct WsStream {
    sock: TcpStream,
    decoder: ws::Decoder,
    rng: rand::rngs::StdRng,
    frame: Vec<u8>,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    payload: Vec<u8>,
    payload_pos: usize,
    closed: bool,
}

impl WsStream {
    fn new(sock: TcpStream, rest: Vec<u8>) -> WsStream {
        let mut input = rest;
        let in_end = input.len();
        input.resize(in_end.max(64 * 1024), 0);
        WsStream {
            sock,
            decoder: ws::Decoder::new(ws::Role::Client, usize::MAX),
            rng: rand::rngs::StdRng::from_entropy(),
            frame: Vec::new(),
            input,
            in_start: 0,
            in_end,
            payload: Vec::new(),
            payload_pos: 0,
            closed: false,
        }
    }

    fn send_control(
        &mut self,
        encode: impl FnOnce(Option<[u8; 4]>, &mut Vec<u8>),
    ) -> io::Result<()> {
        self.frame.clear();
        encode(Some(ws_mask(&mut self.rng)), &mut self.frame);
        self.sock.write_all(&self.frame)
    }
}

impl Write for WsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(WS_MAX_FRAME);
        self.frame.clear();
        let mask = ws_mask(&mut self.rng);
        ws::encode_frame(
            ws::OpCode::Binary,
            true,
            &buf[..n],
            Some(mask),
            &mut self.frame,
        );
        self.sock.write_all(&self.frame)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for WsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.payload_pos < self.payload.len() {
                let k = buf.len().min(self.payload.len() - self.payload_pos);
                buf[..k].copy_from_slice(&self.payload[self.payload_pos..self.payload_pos + k]);
                self.payload_pos += k;
                if self.payload_pos == self.payload.len() {
                    self.payload.clear();
                    self.payload_pos = 0;
                }
                return Ok(k);
            }
            if self.closed {
                return Ok(0);
            }
            if self.in_start < self.in_end {
                let (used, event) = self
                    .decoder
                    .decode(&self.input[self.in_start..self.in_end], &mut self.payload)
                    .map_err(ws_error)?;
                self.in_start += used;
                match event {
                    Some(ws::Event::Ping(data)) => {
                        self.send_control(|mask, out| ws::encode_pong(&data, mask, out))?;
                    }
                    Some(ws::Event::Close { code, reason }) => {
                        self.closed = true;
                        return Err(io::Error::new(
                            ErrorKind::ConnectionAborted,
                            format!("the path sent a WebSocket Close ({code:?} {reason:?})"),
                        ));
                    }
                    Some(ws::Event::Data { .. } | ws::Event::Pong(_)) | None => {}
                }
                continue;
            }
            let n = self.sock.read(&mut self.input)?;
            if n == 0 {
                return Ok(0);
            }
            self.in_start = 0;
            self.in_end = n;
        }
    }
}

impl Drop for WsStream {
    fn drop(&mut self) {
        if !self.closed {
            // Best effort: a halted socket refuses it, which is fine.
            let _ = self.sock.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = self.send_control(|mask, out| {
                ws::encode_close(Some(ws::close_code::NORMAL), "", mask, out);
            });
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(f)
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        // A panicking load thread is a bug; its missing report already turned into an error.
        let _ = handle.join();
    }
}

fn recv_until<T>(rx: &Receiver<T>, deadline: Instant) -> Result<T, RecvTimeoutError> {
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
fn deadline_after(limit: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(limit)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing; creation only fails for sigfig > 5, and HISTOGRAM_SIGFIG is 3.
    Histogram::new(HISTOGRAM_SIGFIG).expect("sigfig 3 is valid")
}

fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) -> io::Result<()> {
    into.add(from)
        .map_err(|e| io::Error::other(format!("merging latency histograms: {e:?}")))
}

fn named(conn: usize, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("connection {conn}: {what}: {e}"))
}

fn invalid_input(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::EchoServer;

    fn echo() -> EchoServer {
        EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind echo server")
    }

    #[test]
    fn bulk_two_connections_complete() {
        let server = echo();
        let spec = BulkSpec {
            connections: 2,
            bytes_per_connection: 4 * 1024 * 1024,
            write_size: 64 * 1024,
            time_limit: Duration::from_secs(120),
        };
        let result = bulk(server.addr(), &spec).expect("bulk run");
        assert!(result.complete, "{result:?}");
        assert_eq!(result.bytes, 2 * 4 * 1024 * 1024);
        assert!(result.gbytes_per_sec >= 0.0);
        assert_eq!(server.connections(), 2);
    }

    #[test]
    fn bulk_odd_write_size_and_zero_bytes() {
        let server = echo();
        let spec = BulkSpec {
            connections: 3,
            bytes_per_connection: 1_000_003,
            write_size: 4_099,
            time_limit: Duration::from_secs(120),
        };
        let result = bulk(server.addr(), &spec).expect("bulk run");
        assert!(result.complete);
        assert_eq!(result.bytes, 3 * 1_000_003);
        let empty = BulkSpec {
            bytes_per_connection: 0,
            ..spec
        };
        let result = bulk(server.addr(), &empty).expect("empty bulk run");
        assert!(result.complete);
        assert_eq!(result.bytes, 0);
    }

    #[test]
    fn bulk_stops_at_time_limit() {
        let server = echo();
        let spec = BulkSpec {
            connections: 1,
            bytes_per_connection: u64::MAX,
            write_size: 64 * 1024,
            time_limit: Duration::from_millis(300),
        };
        let result = bulk(server.addr(), &spec).expect("bulk run");
        assert!(!result.complete);
    }

    #[test]
    fn bulk_rejects_zero_connections() {
        let spec = BulkSpec {
            connections: 0,
            ..BulkSpec::default()
        };
        let err = bulk(SocketAddr::from(([127, 0, 0, 1], 9)), &spec).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn bulk_detects_a_corrupting_backend() {
        // A backend that flips one byte of everything it echoes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let backend = thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 65536];
            let mut first = true;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if first {
                            buf[n / 2] ^= 0xff;
                            first = false;
                        }
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let spec = BulkSpec {
            connections: 1,
            bytes_per_connection: 1 << 20,
            write_size: 16 * 1024,
            time_limit: Duration::from_secs(60),
        };
        let err = bulk(addr, &spec).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("connection 0"), "{err}");
        backend.join().expect("backend thread");
    }

    #[test]
    fn rr_closed_loop_counts_every_request() {
        let server = echo();
        let spec = RrSpec {
            connections: 2,
            size: 64,
            requests_per_connection: 200,
            rate_per_sec: None,
            time_limit: Duration::from_secs(120),
        };
        let result = rr(server.addr(), &spec).expect("rr run");
        assert_eq!(result.requests, 400);
        assert_eq!(result.histogram.len(), 400);
        let summary = result.summary();
        assert!(summary.p50_us <= summary.max_us);
        assert!(summary.p99_us <= summary.p9999_us);
        assert_eq!(summary.requests, 400);
        // Not a speed check: a TCP round trip takes far more than 100 ns, so samples were not clamped.
        assert!(result.histogram.max() > 100, "{}", result.histogram.max());
    }

    #[test]
    fn rr_open_loop_runs() {
        let server = echo();
        let spec = RrSpec {
            connections: 2,
            size: 32,
            requests_per_connection: 50,
            rate_per_sec: Some(2_000.0),
            time_limit: Duration::from_secs(120),
        };
        let result = rr(server.addr(), &spec).expect("open-loop rr run");
        assert_eq!(result.requests, 100);
        assert!(result.percentile_us(50.0) <= result.summary().max_us);
    }

    #[test]
    fn rr_open_loop_stops_at_time_limit() {
        let server = echo();
        let spec = RrSpec {
            connections: 1,
            size: 8,
            requests_per_connection: u64::MAX,
            rate_per_sec: Some(1_000.0),
            time_limit: Duration::from_millis(200),
        };
        let result = rr(server.addr(), &spec).expect("rr run");
        assert!(result.requests < u64::MAX);
    }

    #[test]
    fn rr_short_read_is_an_error_naming_the_connection() {
        // A backend that answers half a reply, then closes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let backend = thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 64];
            s.read_exact(&mut buf).expect("read request");
            s.write_all(&buf[..32]).expect("write half");
        });
        let spec = RrSpec {
            connections: 1,
            requests_per_connection: 10,
            time_limit: Duration::from_secs(60),
            ..RrSpec::default()
        };
        let err = rr(addr, &spec).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("connection 0"), "{err}");
        backend.join().expect("backend thread");
    }

    #[test]
    fn rr_rejects_bad_rate() {
        let spec = RrSpec {
            rate_per_sec: Some(0.0),
            ..RrSpec::default()
        };
        let err = rr(SocketAddr::from(([127, 0, 0, 1], 9)), &spec).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn empty_result_percentiles_are_zero() {
        let result = RrResult {
            requests: 0,
            seconds: 0.0,
            histogram: new_histogram(),
        };
        let s = result.summary();
        assert_eq!(s.p50_us, 0.0);
        assert_eq!(s.max_us, 0.0);
        assert_eq!(s.requests_per_sec, 0.0);
    }

    #[test]
    fn cps_counts_every_connection() {
        let server = echo();
        let spec = CpsSpec {
            count: 50,
            concurrency: 3,
            size: 64,
            time_limit: Duration::from_secs(120),
        };
        let result = cps(server.addr(), &spec).expect("cps run");
        assert_eq!(result.completed, 50, "{:?}", result.first_error);
        assert_eq!(result.failed, 0);
        assert_eq!(result.histogram.len(), 50);
        assert_eq!(server.connections(), 50);
        assert!(result.per_sec() > 0.0);
    }

    #[test]
    fn cps_counts_refusals_as_failures() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr");
        drop(free);
        let spec = CpsSpec {
            count: 5,
            concurrency: 1,
            size: 8,
            time_limit: Duration::from_secs(60),
        };
        let result = cps(addr, &spec).expect("cps run");
        assert_eq!(result.completed, 0);
        assert_eq!(result.failed, 5);
        assert!(result.first_error.expect("error").contains("connection 0"));
    }

    #[test]
    fn pattern_windows_wrap_around_the_period() {
        let p = Pattern::new(16);
        assert_eq!(p.window(PATTERN_PERIOD - 4, 8)[4..], p.window(0, 4)[..]);
        assert_ne!(p.start(0), p.start(1));
    }
}
