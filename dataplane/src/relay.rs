//! The relay engine: moves a tunnel's bytes between its two legs after readiness events.
//!
//! A [`Tunnel`] has two legs, [`Side::Client`] and [`Side::Target`], and two [`Flow`]s (client →
//! target is upstream, toward the back-end; target → client is downstream). Each flow first writes its prefix (bytes that
//! belong on the wire before any relayed byte: a SOCKS reply, or bytes read past a handshake),
//! then moves bytes with splice(2) through its own pipe (plain legs), or through a pooled
//! buffer when no pipe could be had or a leg speaks TLS (see `leg`). Half-close: EOF on a flow's source, once its pipe or
//! buffer is empty, shuts down writing on its destination; the other flow keeps going.
//! Backpressure: a flow reads only into an empty pipe or buffer, so a slow reader stops its
//! peer's reads and memory per tunnel is bounded by two pipes or two buffers.
//!
//! This module does no waiting and knows nothing of io_uring: the worker calls
//! [`Tunnel::on_ready`] with the poll bits of a leg and acts on the returned state; a failure
//! comes back as a [`CloseReason`] naming the leg, what went wrong and the errno. Its clocks
//! (WebSocket keepalive, the idle timeout) run when the worker calls [`Tunnel::timers`] at the
//! deadline it returned. See `LIFECYCLE.md` beside this file.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::leg::{Leg, WsLegError};
use crate::metrics::{CloseReason, Direction, Reason, Side, WorkerStats};
use crate::sys::{self, Pipe};

/// Where a flow keeps bytes between reading and writing them.
pub enum Engine {
    /// Userspace buffer: bytes `start..end` are read but not yet written.
    Copy {
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    },
    /// Kernel pipe: `pending` bytes are in the pipe, not yet spliced out.
    Splice { pipe: Pipe, pending: usize },
}

impl Engine {
    pub fn copy(buf: Box<[u8]>) -> Engine {
        Engine::Copy {
            buf,
            start: 0,
            end: 0,
        }
    }

    pub fn splice(pipe: Pipe) -> Engine {
        Engine::Splice { pipe, pending: 0 }
    }

    /// Bytes held and not yet delivered.
    pub fn pending(&self) -> usize {
        match self {
            Engine::Copy { start, end, .. } => end - start,
            Engine::Splice { pending, .. } => *pending,
        }
    }
}

/// One direction of a tunnel.
pub struct Flow {
    /// The leg this flow reads from; it writes to the other.
    src: Side,
    dir: Direction,
    prefix: Vec<u8>,
    prefix_sent: usize,
    engine: Engine,
    src_eof: bool,
    /// The destination's write side has been shut down: this flow is finished.
    shut: bool,
    /// The last write to the destination would have blocked: POLLOUT on it resumes the flow.
    blocked_on_write: bool,
    /// Bytes delivered to the destination so far (prefix included): the idle clock's witness.
    moved: u64,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Why a leg's operation failed, as a close reason: a peer that stopped answering pings, a
/// protocol broken on the leg (TLS, WebSocket), or a socket error.
pub fn close_reason(side: Side, error: &io::Error) -> CloseReason {
    let ws = error.get_ref().and_then(|e| e.downcast_ref::<WsLegError>());
    let reason = match (ws, error.kind()) {
        (Some(WsLegError::KeepaliveTimeout), _) => Reason::Keepalive,
        (Some(_), _) => Reason::Protocol,
        (None, _) if error.raw_os_error().is_some() => Reason::Io,
        (None, io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) => Reason::Protocol,
        (None, _) => Reason::Io,
    };
    CloseReason::failed(reason, side, error)
}

impl Flow {
    fn new(src: Side, prefix: Vec<u8>, engine: Engine) -> Flow {
        let dir = match src {
            Side::Client => Direction::Upstream,
            Side::Target => Direction::Downstream,
        };
        // A prefix is owed to the destination before anything is read: the first POLLOUT on
        // the destination must pump this flow even if its source stays silent.
        let blocked_on_write = !prefix.is_empty();
        Flow {
            src,
            dir,
            prefix,
            prefix_sent: 0,
            engine,
            src_eof: false,
            shut: false,
            blocked_on_write,
            moved: 0,
        }
    }

    /// Writes held bytes to `dst`. Ok(true) when all were written (for TLS: and every
    /// record is on the wire), Ok(false) when `dst` is full.
    fn flush(&mut self, dst: &mut Leg, stats: &WorkerStats) -> io::Result<bool> {
        while self.prefix_sent < self.prefix.len() {
            match dst.write(&self.prefix[self.prefix_sent..]) {
                Ok(n) => {
                    self.prefix_sent += n;
                    self.moved += n as u64;
                    stats.add_bytes(self.dir, n);
                }
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if !self.prefix.is_empty() {
            self.prefix = Vec::new();
            self.prefix_sent = 0;
        }
        loop {
            let written = match &mut self.engine {
                Engine::Copy { start, end, .. } if start == end => return dst.flush_tls(),
                Engine::Splice { pending: 0, .. } => return Ok(true),
                Engine::Copy { buf, start, end } => {
                    let res = dst.write(&buf[*start..*end]);
                    if let Ok(n) = res {
                        *start += n;
                        if start == end {
                            (*start, *end) = (0, 0);
                        }
                    }
                    res
                }
                Engine::Splice { pipe, pending } => {
                    let res = sys::splice(pipe.read.as_fd(), dst.fd(), *pending);
                    if let Ok(n) = res {
                        *pending -= n;
                    }
                    res
                }
            };
            match written {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.moved += n as u64;
                    stats.add_bytes(self.dir, n);
                }
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads once from `src` into the (empty) pipe or buffer. Ok(false) when nothing was there.
    fn fill(&mut self, src: &mut Leg) -> io::Result<bool> {
        debug_assert_eq!(self.engine.pending(), 0);
        let res = match &mut self.engine {
            Engine::Copy { buf, start, end } => {
                let res = src.read(buf);
                if let Ok(n) = res {
                    (*start, *end) = (0, n);
                }
                res
            }
            Engine::Splice { pipe, pending } => {
                debug_assert!(
                    !src.needs_userspace(),
                    "TLS and WebSocket legs never splice"
                );
                let res = sys::splice(src.fd(), pipe.write.as_fd(), pipe.capacity);
                if let Ok(n) = res {
                    *pending = n;
                }
                res
            }
        };
        match res {
            Ok(0) => {
                self.src_eof = true;
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves bytes until the source is empty or the destination is full; a failure names the
    /// leg it happened on.
    fn pump(
        &mut self,
        src: &mut Leg,
        dst: &mut Leg,
        stats: &WorkerStats,
    ) -> Result<(), CloseReason> {
        let (src_side, dst_side) = (self.src, self.src.peer());
        if self.shut {
            return Ok(());
        }
        loop {
            let flushed = self
                .flush(dst, stats)
                .map_err(|e| close_reason(dst_side, &e))?;
            if !flushed {
                self.blocked_on_write = true;
                return Ok(());
            }
            self.blocked_on_write = false;
            if self.src_eof {
                // Everything read has been delivered: propagate the half-close.
                if dst
                    .shutdown_write()
                    .map_err(|e| close_reason(dst_side, &e))?
                {
                    self.shut = true;
                } else {
                    self.blocked_on_write = true;
                }
                return Ok(());
            }
            if !self.fill(src).map_err(|e| close_reason(src_side, &e))? {
                return Ok(());
            }
        }
    }
}

/// What the worker should do with a tunnel after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// Both flows finished: every byte delivered, both write sides shut. Close it.
    Finished,
    /// Still relaying; wait for the next event.
    Open,
}

/// Two legs and the two flows between them.
pub struct Tunnel {
    legs: [Leg; 2],
    flows: [Flow; 2],
    /// Made by [`crate::Dataplane::link`] from two legs the control thread negotiated: counted
    /// among the links as well as the tunnels.
    linked: bool,
    /// The service's `idle_timeout`, and when a byte last moved.
    idle: Option<IdleClock>,
}

/// When a tunnel that moves nothing is closed: `after` this long since `last` moved a byte.
#[derive(Debug, Clone, Copy)]
struct IdleClock {
    after: std::time::Duration,
    last: std::time::Instant,
    /// Both flows' `moved` at `last`.
    seen: u64,
}

impl Tunnel {
    /// `legs[0]` is the [`Side::Client`] leg (its bytes go upstream), `legs[1]` the
    /// [`Side::Target`] leg. `prefixes[0]` is written to the target before anything relayed
    /// upstream, `prefixes[1]` to the client before anything relayed downstream.
    /// A TLS leg needs buffer engines on both flows (the worker chooses them).
    pub fn new(legs: [Leg; 2], prefixes: [Vec<u8>; 2], engines: [Engine; 2]) -> Tunnel {
        let [up_prefix, down_prefix] = prefixes;
        let [up_engine, down_engine] = engines;
        Tunnel {
            legs,
            flows: [
                Flow::new(Side::Client, up_prefix, up_engine),
                Flow::new(Side::Target, down_prefix, down_engine),
            ],
            linked: false,
            idle: None,
        }
    }

    /// Closes the tunnel after `after` without a byte either way, counted from `now`.
    pub fn set_idle_timeout(&mut self, after: std::time::Duration, now: std::time::Instant) {
        self.idle = Some(IdleClock {
            after,
            last: now,
            seen: self.moved(),
        });
    }

    /// Bytes delivered both ways so far.
    fn moved(&self) -> u64 {
        self.flows[0].moved + self.flows[1].moved
    }

    /// Marks the tunnel as a link ([`crate::Dataplane::link`]).
    pub fn set_linked(&mut self) {
        self.linked = true;
    }

    pub fn is_linked(&self) -> bool {
        self.linked
    }

    pub fn leg(&self, side: Side) -> BorrowedFd<'_> {
        self.legs[side.index()].fd()
    }

    /// Runs the flow that reads from `src`.
    fn pump_flow(&mut self, src: Side, stats: &WorkerStats) -> Result<(), CloseReason> {
        let [client, target] = &mut self.legs;
        let (from, to) = match src {
            Side::Client => (client, target),
            Side::Target => (target, client),
        };
        self.flows[src.index()].pump(from, to, stats)
    }

    /// Handles poll bits `revents` reported on leg `side` (`None`: pump everything, e.g. on
    /// the first arming). An error means a leg failed: the caller resets both.
    pub fn on_ready(
        &mut self,
        side: Side,
        revents: Option<u32>,
        stats: &WorkerStats,
    ) -> Result<TunnelState, CloseReason> {
        let all = revents.is_none();
        let bits = revents.unwrap_or(0);
        let readable = all || bits & !sys::POLLOUT != 0;
        let writable = all || bits & !sys::POLLIN != 0;
        // Readable leg: the flow it feeds. Writable leg: the flow that writes into it, but
        // only when that flow is waiting for room (a socket is nearly always writable).
        let other = side.peer();
        let leg = side.index();
        if readable {
            self.pump_flow(side, stats)?;
            // Reading a TLS or WebSocket leg can unblock writes into it (a handshake finished,
            // the 101 came back) without any POLLOUT: a data wake-up reports POLLIN only.
            if self.legs[leg].needs_userspace() && self.flows[other.index()].blocked_on_write {
                self.pump_flow(other, stats)?;
            }
        }
        if writable {
            // TLS records of the leg's own (handshake, key update answers) go out first.
            if self.legs[leg].wants_write() {
                self.legs[leg]
                    .flush_tls()
                    .map_err(|e| close_reason(side, &e))?;
            }
            if all || self.flows[other.index()].blocked_on_write {
                self.pump_flow(other, stats)?;
            }
        }
        Ok(if self.flows.iter().all(|f| f.shut) {
            TunnelState::Finished
        } else {
            TunnelState::Open
        })
    }

    /// Runs the tunnel's clocks: both legs' WebSocket keepalive (see [`Leg::keepalive`]) and
    /// the idle timeout. Returns the next time to look, or `None` when there is no clock. An
    /// error means a peer stopped answering, or nothing moved for the idle timeout.
    ///
    /// The idle clock is read here only (never per event): bytes moved since the last look
    /// restart it from `now`, so a tunnel is closed between `after` and twice `after` of
    /// silence (looks come at least every `after`).
    pub fn timers(
        &mut self,
        now: std::time::Instant,
    ) -> Result<Option<std::time::Instant>, CloseReason> {
        let mut next = None;
        let mut earliest = |at: std::time::Instant| {
            next = Some(next.map_or(at, |n: std::time::Instant| n.min(at)));
        };
        for (leg, side) in self.legs.iter_mut().zip(Side::ALL) {
            if let Some(at) = leg.keepalive(now).map_err(|e| close_reason(side, &e))? {
                earliest(at);
            }
        }
        let moved = self.moved();
        if let Some(idle) = &mut self.idle {
            if moved != idle.seen {
                idle.seen = moved;
                idle.last = now;
            } else if now >= idle.last + idle.after {
                return Err(CloseReason::without_side(Reason::Idle));
            }
            earliest(idle.last + idle.after);
        }
        Ok(next)
    }

    /// Takes the tunnel apart: its legs, and each flow's engine with the bytes it still held.
    pub fn into_parts(self) -> ([Leg; 2], [Engine; 2]) {
        let [up, down] = self.flows;
        (self.legs, [up.engine, down.engine])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::tests::socket_pair;
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    fn engine(splice: bool) -> Engine {
        if splice {
            Engine::splice(sys::pipe(64 << 10).unwrap())
        } else {
            Engine::copy(vec![0u8; 16 << 10].into_boxed_slice())
        }
    }

    /// Drives a tunnel by busy-pumping (no ring) until it finishes or the deadline passes,
    /// while the test's client and server threads exchange bytes.
    fn run_tunnel(splice: bool) {
        let (client, leg0) = socket_pair();
        let (leg1, mut server) = socket_pair();
        for s in [&leg0, &leg1] {
            sys::prepare_stream(s.as_fd(), sys::StreamOptions::default()).unwrap();
        }
        let stats = WorkerStats::new(0);
        let mut tunnel = Tunnel::new(
            [
                Leg::plain(OwnedFd::from(leg0)),
                Leg::plain(OwnedFd::from(leg1)),
            ],
            [b"HELLO".to_vec(), Vec::new()],
            [engine(splice), engine(splice)],
        );
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = payload.clone();
        let writer = sallyport_kit::backend::send_half_close_read(client, payload);
        let server_thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            server.write_all(b"reply after half-close").unwrap();
            server.shutdown(Shutdown::Write).unwrap();
            got
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s0 = tunnel.on_ready(Side::Client, None, &stats).unwrap();
            let s1 = tunnel.on_ready(Side::Target, None, &stats).unwrap();
            if s0 == TunnelState::Finished || s1 == TunnelState::Finished {
                break;
            }
            assert!(Instant::now() < deadline, "tunnel did not finish");
            std::thread::yield_now();
        }
        let got = server_thread.join().unwrap();
        assert_eq!(&got[..5], b"HELLO");
        assert!(got[5..] == expected[..], "upstream bytes differ");
        assert_eq!(writer.join().unwrap().unwrap(), b"reply after half-close");
        let (_, engines) = tunnel.into_parts();
        assert!(engines.iter().all(|e| e.pending() == 0));
    }

    #[test]
    fn splice_flow_relays_and_half_closes() {
        run_tunnel(true);
    }

    #[test]
    fn copy_flow_relays_and_half_closes() {
        run_tunnel(false);
    }

    #[test]
    fn close_reasons_name_what_failed() {
        use crate::metrics::Errno;
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        let r = close_reason(Side::Target, &reset);
        assert_eq!(
            (r.reason, r.side, r.errno),
            (Reason::Io, Some(Side::Target), Errno::ConnReset)
        );
        let silent = io::Error::new(io::ErrorKind::TimedOut, WsLegError::KeepaliveTimeout);
        assert_eq!(
            close_reason(Side::Client, &silent).reason,
            Reason::Keepalive
        );
        let upgrade = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            WsLegError::ClosedBeforeUpgrade,
        );
        assert_eq!(
            close_reason(Side::Target, &upgrade).reason,
            Reason::Protocol
        );
        let tls = io::Error::new(io::ErrorKind::InvalidData, "bad record mac");
        let r = close_reason(Side::Client, &tls);
        assert_eq!((r.reason, r.errno), (Reason::Protocol, Errno::None));
        let zero = io::Error::from(io::ErrorKind::WriteZero);
        assert_eq!(close_reason(Side::Client, &zero).reason, Reason::Io);
    }

    #[test]
    fn reset_leg_is_an_error() {
        let (client, leg0) = socket_pair();
        let (leg1, _server) = socket_pair();
        sys::prepare_stream(leg0.as_fd(), sys::StreamOptions::default()).unwrap();
        sys::prepare_stream(leg1.as_fd(), sys::StreamOptions::default()).unwrap();
        sys::set_reset_on_close(client.as_fd());
        drop(client);
        let stats = WorkerStats::new(0);
        let mut tunnel = Tunnel::new(
            [
                Leg::plain(OwnedFd::from(leg0)),
                Leg::plain(OwnedFd::from(leg1)),
            ],
            [Vec::new(), Vec::new()],
            [engine(true), engine(true)],
        );
        let reason = tunnel.on_ready(Side::Client, None, &stats).unwrap_err();
        assert_eq!(reason.side, Some(Side::Client), "{reason:?}");
        assert_eq!(reason.reason, Reason::Io, "{reason:?}");
    }
}
