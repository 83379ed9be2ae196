//! The internal side of a worker: reverse legs parked at the DMZ until the second BIND reply
//! arrives, then a non-blocking connect to the back-end (TLS when configured) and the tunnel.
//! Outcomes go back to the control thread's pool keeper as [`ReverseEvent`]s.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::*;
use crate::handoff::{ReverseEvent, ReverseOutcome};
use crate::wire::socks5;

impl Worker {
    pub(super) fn emit(&self, service: usize, outcome: ReverseOutcome) {
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
        if sys::prepare_stream(leg.leg.fd(), self.relay.stream).is_err() {
            self.emit(
                service,
                ReverseOutcome::Lost {
                    parked: Duration::ZERO,
                },
            );
            return;
        }
        // The second reply may have arrived in the same read as the first.
        match socks5::parse_reply(&leg.buf) {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return self.on_second_reply(*leg),
        }
        let raw = leg.leg.fd().as_raw_fd();
        let tls = leg.leg.has_buffered_input();
        let (index, gen) = self.slots.insert(Entry::Reverse(leg));
        let ud = user_data(TAG_REVERSE, gen, index);
        if tls {
            // Records the control thread read but did not decrypt may already hold the second
            // reply: no socket event would announce them, so look now.
            let now = Completion {
                user_data: ud,
                result: sys::POLLIN as i32,
                more: true,
            };
            if self.on_reverse_event(index, gen, now).is_err() {
                return;
            }
            if !matches!(self.slots.get_mut(index, gen), Some(Entry::Reverse(_))) {
                return; // Already paired or lost.
            }
        }
        if self.ring.poll_multi(raw, sys::POLL_PARKED, ud).is_err() {
            self.slots.remove(index, gen);
            self.emit(
                service,
                ReverseOutcome::Lost {
                    parked: Duration::ZERO,
                },
            );
        }
    }

    pub(super) fn on_reverse_event(
        &mut self,
        index: u32,
        gen: u32,
        c: Completion,
    ) -> std::io::Result<()> {
        let Some(Entry::Reverse(leg)) = self.slots.get_mut(index, gen) else {
            return Ok(());
        };
        let raw = leg.leg.fd().as_raw_fd();
        let ud = user_data(TAG_REVERSE, gen, index);
        let mut ended = c.result < 0 && c.result != -libc::ECANCELED;
        if c.result >= 0 {
            // Read one chunk at a time and stop as soon as the reply is whole: client bytes
            // beyond it stay in the socket for the relay.
            let mut chunk = [0u8; 64];
            while matches!(socks5::parse_reply(&leg.buf), Ok(None)) {
                match leg.leg.read(&mut chunk) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => leg.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        let complete = !matches!(socks5::parse_reply(&leg.buf), Ok(None));
        if !complete && !ended {
            if !c.more {
                self.ring.poll_multi(raw, sys::POLL_PARKED, ud)?;
            }
            return Ok(());
        }
        let Some(Entry::Reverse(leg)) = self.slots.remove(index, gen) else {
            return Ok(());
        };
        self.ring.cancel(ud, user_data(TAG_CANCEL, 0, 0))?;
        if complete {
            self.on_second_reply(*leg);
        } else {
            let parked = leg.parked_at.elapsed();
            self.emit(leg.service, ReverseOutcome::Lost { parked });
        }
        Ok(())
    }

    /// The DMZ paired this leg with a client (or sent something that is not a reply).
    pub(super) fn on_second_reply(&mut self, mut leg: ReverseLeg) {
        let service = leg.service;
        let reply = match socks5::parse_reply(&leg.buf) {
            Ok(Some((reply, used))) if reply.rep == socks5::rep::SUCCEEDED => {
                leg.buf.drain(..used);
                reply
            }
            _ => {
                sys::set_reset_on_close(leg.leg.fd());
                let parked = leg.parked_at.elapsed();
                self.emit(service, ReverseOutcome::Lost { parked });
                return;
            }
        };
        self.emit(service, ReverseOutcome::Paired);
        crate::dp_debug!(core = self.id, service, client = %reply.host, "paired; connecting to the back-end");
        let leftover = std::mem::take(&mut leg.buf);
        let ReverseLeg {
            leg: dmz, upstream, ..
        } = leg;
        self.connect_upstream(dmz, leftover, &upstream, Origin::Reverse(service));
    }
}
