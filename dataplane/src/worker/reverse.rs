//! The internal side of a worker: reverse legs parked at the DMZ until the second BIND reply
//! arrives, then a non-blocking connect to the back-end (TLS when configured) and the tunnel.
//! Outcomes go back to the control thread's pool keeper as [`ReverseEvent`]s.
//!
//! [`ReverseLeg`] owns the leg and the bytes read since the first reply; its handler
//! [`ReverseLeg::on_readable`] reads and feeds them to the sans-IO BIND client's parked half
//! ([`bind::client::Parked`]) and says what comes next. It does not dial the DMZ (the control
//! thread does) and relays nothing.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::connect::Origin;
use super::entry::occupant;
use super::{Entry, Key, ReverseHandoff, Token, Worker};
use crate::handoff::{ReverseEvent, ReverseIndex, ReverseOutcome};
use crate::leg::Leg;
use crate::service::Upstream;
use crate::sys::{self, Completion};
use crate::wire::bind::client::{ClientError, Paired, Parked};

/// Bytes read per `read` while waiting for the second reply: it stops as soon as the reply is
/// whole, so client bytes beyond it mostly stay in the socket for the relay.
const REPLY_READ_CHUNK: usize = 64;

/// A reverse leg parked by the internal side, waiting for the second BIND reply.
pub(super) struct ReverseLeg {
    leg: Leg,
    service: ReverseIndex,
    /// The back-end to connect once paired.
    upstream: Upstream,
    /// Bytes read and not yet parsed (at most one reply plus what came with it).
    buf: Vec<u8>,
    parked_at: Instant,
}

/// What the bytes so far make of a parked reverse leg.
enum ReverseStep {
    /// No whole reply yet: wait for the socket.
    Wait,
    /// Paired: the reply was `used` bytes of `buf`; the rest is the client's.
    Paired { paired: Paired, used: usize },
    /// Closed before the reply (EOF, a read error).
    Closed,
    /// A reply that is not a successful second reply (a failure REP, malformed).
    Refused(ClientError),
}

impl ReverseLeg {
    /// Parses what was read so far.
    fn parse(&self) -> ReverseStep {
        match Parked.handle(&self.buf) {
            Ok(None) => ReverseStep::Wait,
            Ok(Some((paired, used))) => ReverseStep::Paired { paired, used },
            Err(e) => ReverseStep::Refused(e),
        }
    }

    /// The socket is readable: reads until the reply is whole (or the socket is empty).
    fn on_readable(&mut self) -> ReverseStep {
        let mut chunk = [0u8; REPLY_READ_CHUNK];
        loop {
            match self.parse() {
                ReverseStep::Wait => {}
                done => return done,
            }
            match self.leg.read(&mut chunk) {
                Ok(0) => return ReverseStep::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReverseStep::Wait,
                Err(_) => return ReverseStep::Closed,
            }
        }
    }
}

impl Worker {
    pub(super) fn emit(&self, service: ReverseIndex, outcome: ReverseOutcome) {
        if let Some(events) = &self.reverse_events {
            events(ReverseEvent { service, outcome });
        }
    }

    /// Internal side: parks a reverse leg until the DMZ pairs it (second BIND reply).
    pub(super) fn park_reverse(&mut self, handoff: ReverseHandoff) {
        let ReverseHandoff {
            service,
            conn,
            upstream,
        } = handoff;
        let fd = OwnedFd::from(conn.stream);
        let tls = conn.tls;
        // The control thread's buffer is usually empty: free it there and start with none, so
        // a long-parked leg pins no memory of the control thread's allocator arena.
        let buf = if conn.leftover.is_empty() {
            Vec::new()
        } else {
            conn.leftover
        };
        let leg = Box::new(ReverseLeg {
            leg: Leg::from_parts(fd, tls),
            service,
            upstream,
            buf,
            parked_at: Instant::now(),
        });
        let lost_at_once = ReverseOutcome::Lost {
            parked: Duration::ZERO,
        };
        if sys::prepare_stream(leg.leg.fd(), self.relay.stream).is_err() {
            return self.emit(service, lost_at_once);
        }
        // The second reply may have arrived in the same read as the first.
        match leg.parse() {
            ReverseStep::Wait => {}
            step => return self.end_reverse(*leg, step),
        }
        let fd = leg.leg.fd().as_raw_fd();
        let tls = leg.leg.has_buffered_input();
        let key = self.slots.insert(Entry::Reverse(leg));
        if tls {
            // Records the control thread read but did not decrypt may already hold the second
            // reply: no socket event would announce them, so look now.
            let now = Completion {
                user_data: Token::Reverse(key).user_data(),
                result: sys::POLLIN as i32,
                more: true,
            };
            if self.on_reverse_event(key, now).is_err() {
                return;
            }
            if occupant!(self.slots, key, Reverse).is_none() {
                return; // Already paired or lost.
            }
        }
        if self.arm(fd, sys::POLL_PARKED, Token::Reverse(key)).is_err() {
            self.slots.remove(key);
            self.emit(service, lost_at_once);
        }
    }

    pub(super) fn on_reverse_event(&mut self, key: Key, c: Completion) -> io::Result<()> {
        let Some(leg) = occupant!(self.slots, key, Reverse) else {
            return Ok(());
        };
        let step = if c.result >= 0 {
            leg.on_readable()
        } else if c.result == -libc::ECANCELED {
            leg.parse()
        } else {
            ReverseStep::Closed
        };
        if let ReverseStep::Wait = step {
            if !c.more {
                let fd = leg.leg.fd().as_raw_fd();
                self.arm(fd, sys::POLL_PARKED, Token::Reverse(key))?;
            }
            return Ok(());
        }
        let Some(Entry::Reverse(leg)) = self.slots.remove(key) else {
            return Ok(());
        };
        self.disarm(Token::Reverse(key))?;
        self.end_reverse(*leg, step);
        Ok(())
    }

    /// The parked leg's session ended: paired (connect to the back-end) or lost.
    fn end_reverse(&mut self, mut leg: ReverseLeg, step: ReverseStep) {
        let service = leg.service;
        let used = match step {
            ReverseStep::Paired { paired, used } => {
                crate::dp_debug!(core = self.id, service = service.0, client = %paired.bind_host, "paired; connecting to the back-end");
                used
            }
            ReverseStep::Refused(error) => {
                crate::dp_debug!(core = self.id, service = service.0, %error, "parked leg lost");
                sys::set_reset_on_close(leg.leg.fd());
                let parked = leg.parked_at.elapsed();
                return self.emit(service, ReverseOutcome::Lost { parked });
            }
            ReverseStep::Closed | ReverseStep::Wait => {
                let parked = leg.parked_at.elapsed();
                return self.emit(service, ReverseOutcome::Lost { parked });
            }
        };
        self.emit(service, ReverseOutcome::Paired);
        leg.buf.drain(..used);
        let leftover = std::mem::take(&mut leg.buf);
        let ReverseLeg {
            leg: dmz, upstream, ..
        } = leg;
        self.connect_upstream(dmz, leftover, &upstream, Origin::Reverse(service));
    }
}
