//! The internal side of a worker: reverse legs parked at the DMZ until the second BIND reply
//! arrives, then a non-blocking connect to the back-end (TLS when configured) and the tunnel.
//! Outcomes go back to the control thread's pool keeper as [`ReverseEvent`]s.
//!
//! [`ReverseLeg`] owns the leg and the bytes read since the first reply; its handler
//! [`ReverseLeg::on_readable`] reads and feeds them to the sans-IO BIND client's parked half
//! ([`bind::client::Parked`]) and says what comes next; the worker side (slot, poll, reports, the connect) is in
//! `driver.rs`. It does not dial the DMZ (the control
//! thread does) and relays nothing.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::handoff::ReverseIndex;
use crate::leg::Leg;
use crate::service::Upstream;
use crate::wire::bind::client::{ClientError, Paired, Parked};

/// Bytes read per `read` while waiting for the second reply: it stops as soon as the reply is
/// whole, so client bytes beyond it mostly stay in the socket for the relay.
const REPLY_READ_CHUNK: usize = 64;

/// A reverse leg parked by the internal side, waiting for the second BIND reply.
pub(super) struct ReverseLeg {
    pub(super) leg: Leg,
    pub(super) service: ReverseIndex,
    /// The back-end to connect once paired.
    pub(super) upstream: Upstream,
    /// BND of the first BIND reply: the DMZ's public address for this service (the PROXY
    /// header's destination), when it was an IP.
    pub(super) public: Option<SocketAddr>,
    /// Bytes read and not yet parsed (at most one reply plus what came with it).
    pub(super) buf: Vec<u8>,
    pub(super) parked_at: Instant,
}

/// What the bytes so far make of a parked reverse leg.
pub(super) enum ReverseStep {
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
    pub(super) fn parse(&self) -> ReverseStep {
        match Parked.handle(&self.buf) {
            Ok(None) => ReverseStep::Wait,
            Ok(Some((paired, used))) => ReverseStep::Paired { paired, used },
            Err(e) => ReverseStep::Refused(e),
        }
    }

    /// The socket is readable: reads until the reply is whole (or the socket is empty).
    pub(super) fn on_readable(&mut self) -> ReverseStep {
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
