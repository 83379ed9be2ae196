//! The bulk load: every connection sends a deterministic pseudo-random pattern and checks the
//! echo as it arrives. [`run_bulk`] is the one loop for every transport; [`bulk`] is plain TCP.
//!
//! It does not connect or handshake for other transports (their callers do, then hand over a
//! [`BulkConn`]), and it does not measure CPU.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

use super::common::{
    collect, connect_all, ensure, keep, named, spawn, Crew, DEFAULT_BULK_BYTES,
    DEFAULT_CONNECTIONS, DEFAULT_TIME_LIMIT, DEFAULT_WRITE_SIZE,
};
use crate::report::ratio;

/// Bytes read per `read` call by bulk readers.
pub const READ_BUFFER: usize = 256 * 1024;
/// Period of the verification pattern. Odd, so it never lines up with power-of-two write or buffer
/// sizes: a dropped, duplicated or reordered chunk shows up as a mismatch.
const PATTERN_PERIOD: usize = (1 << 20) - 3;
/// Fixed seed: the payload is the same on every run, so runs compare like with like.
const PATTERN_SEED: u64 = 0x5a11_7907_b0a7_5eed;

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

impl BulkSpec {
    /// `InvalidInput` for no connections or a zero write size.
    pub fn check(&self) -> io::Result<()> {
        ensure(
            self.connections > 0 && self.write_size > 0,
            "bulk needs at least 1 connection and a write size of at least 1",
        )
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

/// The sending half of a split bulk connection.
pub trait EchoWriter: Send + 'static {
    /// Sends all of `chunk` (one write's worth of the pattern).
    fn send(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Everything was sent (or the run stopped): end the stream (half-close, Close frame, ...).
    fn finish(&mut self) -> io::Result<()>;
}

/// The receiving half of a split bulk connection.
pub trait EchoReader: Send + 'static {
    /// Reads the echo until it ends, passing every chunk to `verify.check`; returns
    /// `verify.finish()` at a clean end, or the error that ended it (named with `verify.conn()`).
    fn read_echo(&mut self, verify: &mut Verifier) -> io::Result<()>;
}

/// A bulk connection one thread drives both ways (a TLS session cannot be split in two).
pub trait EchoDuplex: Send + 'static {
    /// Sends `source` (in writes of at most the run's write size), reads and checks the echo
    /// with `verify`, and returns as [`EchoReader::read_echo`] does; gives up once `stop` is set.
    fn pump(
        &mut self,
        source: &mut Source,
        verify: &mut Verifier,
        stop: &AtomicBool,
    ) -> io::Result<()>;
}

/// One connection of [`run_bulk`].
pub enum BulkConn {
    /// A writer thread and a reader thread.
    Split(Box<dyn EchoWriter>, Box<dyn EchoReader>),
    /// One thread for both directions.
    Duplex(Box<dyn EchoDuplex>),
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
    run_bulk(
        spec,
        |deadline| connect_all(addr, spec.connections, deadline, false),
        |s| {
            let writer: Box<dyn EchoWriter> = Box::new(TcpWriter(s.try_clone()?));
            let reader: Box<dyn EchoReader> = Box::new(TcpReader(s.try_clone()?));
            Ok((s, BulkConn::Split(writer, reader)))
        },
    )
}

/// Plain TCP writer: `write_all`, then `SHUT_WR`.
struct TcpWriter(TcpStream);

impl EchoWriter for TcpWriter {
    fn send(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0.write_all(chunk)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

/// Plain TCP reader: until EOF.
struct TcpReader(TcpStream);

impl EchoReader for TcpReader {
    fn read_echo(&mut self, verify: &mut Verifier) -> io::Result<()> {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(named(verify.conn(), "read", e)),
            };
            verify.check(&buf[..n])?;
        }
        verify.finish()
    }
}

/// The transport-neutral loop behind [`bulk`] and its TLS and WebSocket variants: checks `spec`,
/// opens the connections with `connect` (given the deadline: the time limit from now), turns
/// each into a handle to its socket (for halting) and a [`BulkConn`] with `conn`, and runs them
/// as one bulk run. Errors and the time limit behave as in [`bulk`].
pub fn run_bulk<C>(
    spec: &BulkSpec,
    connect: impl FnOnce(Instant) -> io::Result<Vec<C>>,
    mut conn: impl FnMut(C) -> io::Result<(TcpStream, BulkConn)>,
) -> io::Result<BulkResult> {
    spec.check()?;
    let (deadline, crew, jobs) = Crew::connect(spec.time_limit, connect, |c| {
        let (socket, kind) = conn(c)?;
        let shut = socket.try_clone()?;
        Ok((socket, (shut, kind)))
    })?;
    let pattern = Arc::new(Pattern::new(spec.write_size.max(READ_BUFFER)));

    let (tx, rx) = mpsc::channel::<BulkEvent>();
    let start = Instant::now();
    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(2 * jobs.len());
    for (conn, (shut, kind)) in jobs.into_iter().enumerate() {
        let job = BulkJob {
            conn,
            pattern: Arc::clone(&pattern),
            offset: pattern.start(conn),
            bytes: spec.bytes_per_connection,
            write_size: spec.write_size,
            stop: Arc::clone(&crew.stop),
            events: tx.clone(),
        };
        let spawned = match kind {
            BulkConn::Split(writer, reader) => {
                let writer_job = job.clone();
                spawn(format!("bulk-w-{conn}"), move || writer_job.write(writer)).and_then(|w| {
                    handles.push(w);
                    spawn(format!("bulk-r-{conn}"), move || {
                        job.report(&shut, |verify| {
                            let mut reader = reader;
                            reader.read_echo(verify)
                        })
                    })
                })
            }
            BulkConn::Duplex(mut duplex) => spawn(format!("bulk-{conn}"), move || {
                let mut source = job.source();
                let stop = Arc::clone(&job.stop);
                job.report(&shut, |verify| duplex.pump(&mut source, verify, &stop))
            }),
        };
        keep(&mut handles, spawned, &crew)?;
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
    let take = |bytes: &mut u64, event: BulkEvent| match event {
        BulkEvent::Read { bytes: b, result } => {
            *bytes += b;
            result.map(|()| true)
        }
        BulkEvent::WriteFailed { error } => Err(error),
    };
    let late = |bytes: &mut u64, event: BulkEvent| {
        if let BulkEvent::Read { bytes: b, .. } = event {
            *bytes += b;
        }
        Ok(())
    };
    let (end, timed_out) = collect(
        rx,
        spec.connections,
        deadline,
        crew,
        handles,
        &mut bytes,
        take,
        late,
    )?;
    let seconds = end.duration_since(start).as_secs_f64();
    Ok(BulkResult {
        bytes,
        seconds,
        gbytes_per_sec: ratio(bytes as f64, seconds) / 1e9,
        complete: !timed_out,
    })
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

/// What one connection still has to send.
pub struct Source {
    pattern: Arc<Pattern>,
    pos: usize,
    left: u64,
    write_size: usize,
}

impl Source {
    /// Bytes not sent yet.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// The next write: at most the run's write size, empty when everything was sent.
    pub fn peek(&self) -> &[u8] {
        // `write_size` fits in usize, so the min does too.
        let n = self.left.min(self.write_size as u64) as usize;
        self.pattern.window(self.pos, n)
    }

    /// `n` bytes of [`Source::peek`] were sent.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n as u64 <= self.left);
        self.pos = advance(self.pos, n);
        self.left -= n as u64;
    }
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
    write_size: usize,
    stop: Arc<AtomicBool>,
    events: Sender<BulkEvent>,
}

impl BulkJob {
    fn source(&self) -> Source {
        Source {
            pattern: Arc::clone(&self.pattern),
            pos: self.offset,
            left: self.bytes,
            write_size: self.write_size,
        }
    }

    fn write(self, mut writer: Box<dyn EchoWriter>) {
        let mut source = self.source();
        let result = (|| {
            while source.remaining() > 0 && !self.stop.load(Ordering::Relaxed) {
                let chunk = source.peek();
                let n = chunk.len();
                writer.send(chunk)?;
                source.consume(n);
            }
            writer.finish()
        })();
        if let Err(e) = result {
            let error = named(self.conn, "write", e);
            // The receiver only goes away after every thread is joined.
            let _ = self.events.send(BulkEvent::WriteFailed { error });
        }
    }

    /// Runs `read` with a fresh verifier and reports what arrived; after a failure shuts the
    /// socket down, which unblocks a writer stuck behind an echo server we stopped reading. Only
    /// after reporting, so the writer's resulting EPIPE cannot be mistaken for the cause.
    fn report(self, socket: &TcpStream, read: impl FnOnce(&mut Verifier) -> io::Result<()>) {
        let mut verify = Verifier {
            conn: self.conn,
            pattern: Arc::clone(&self.pattern),
            pos: self.offset,
            bytes: self.bytes,
            received: 0,
            failed: false,
        };
        let result = read(&mut verify);
        let failed = result.is_err();
        // The receiver only goes away after every thread is joined.
        let _ = self.events.send(BulkEvent::Read {
            bytes: verify.received,
            result,
        });
        if failed {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Checks echoed bytes against the pattern as they arrive.
pub struct Verifier {
    conn: usize,
    pattern: Arc<Pattern>,
    pos: usize,
    bytes: u64,
    received: u64,
    /// A check failed (its error is already named).
    failed: bool,
}

impl Verifier {
    /// The connection number, for naming errors.
    pub fn conn(&self) -> usize {
        self.conn
    }

    /// Bytes checked so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes the connection sends in all.
    pub fn expected(&self) -> u64 {
        self.bytes
    }

    /// A check failed (its error is already named).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// `got` (at most [`READ_BUFFER`] or the write size, whichever is larger) is the next part
    /// of the echo.
    pub fn check(&mut self, got: &[u8]) -> io::Result<()> {
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
    pub fn finish(&self) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_windows_wrap_around_the_period() {
        let p = Pattern::new(16);
        assert_eq!(p.window(PATTERN_PERIOD - 4, 8)[4..], p.window(0, 4)[..]);
        assert_ne!(p.start(0), p.start(1));
    }
}
