//! Tunnels in the worker: building one from two legs (engine choice, polls on both legs, the
//! first pump), handing each leg's readiness to the relay, and closing it with the reason the
//! relay gave (FIN after a clean finish, RST otherwise; pipes and buffers go back to the pool).
//!
//! The relaying itself is `relay::Tunnel`'s; this file owns no state of its own beyond the
//! worker's pools of pipes and buffers.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use super::entry::occupant;
use super::{relaxed, Entry, Key, Token, Worker};
use crate::leg::Leg;
use crate::metrics::{CloseReason, Reason, Side};
use crate::relay::{Engine, Tunnel, TunnelState};
use crate::runtime::RelayMode;
use crate::sys::{self, Completion};

/// Most bytes read and dropped from a finished tunnel's leg before it is closed.
const DISCARD_ON_CLOSE: usize = 64 << 10;
/// Most pipes (and buffers) a worker keeps for reuse.
const POOL_KEEP: usize = 256;

impl Worker {
    fn engine(&mut self, may_splice: bool) -> Engine {
        if may_splice && self.relay.mode == RelayMode::Splice {
            if let Some(pipe) = self.pipes.pop() {
                return Engine::splice(pipe);
            }
            match sys::pipe(self.relay.pipe_size) {
                Ok(pipe) => return Engine::splice(pipe),
                Err(_) => {
                    self.stats.splice_fallbacks.fetch_add(1, relaxed());
                }
            }
        }
        let buf = self
            .buffers
            .pop()
            .unwrap_or_else(|| vec![0u8; self.relay.buffer_size].into_boxed_slice());
        Engine::copy(buf)
    }

    /// Starts relaying between `client` and `target`; `to_target` is written to the target
    /// before any relayed byte (a second BIND reply, bytes read past a handshake).
    pub(super) fn start_tunnel(&mut self, client: Leg, target: Leg, to_target: Vec<u8>) {
        let legs = [client, target];
        for leg in &legs {
            if sys::prepare_stream(leg.fd(), self.relay.stream).is_err() {
                for l in &legs {
                    sys::set_reset_on_close(l.fd());
                }
                return;
            }
        }
        // TLS and WebSocket bytes pass through userspace: splice only between plain legs.
        let plain = !legs.iter().any(Leg::needs_userspace);
        let engines = [self.engine(plain), self.engine(plain)];
        let tunnel = Box::new(Tunnel::new(legs, [to_target, Vec::new()], engines));
        let key = self.slots.insert(Entry::Tunnel(tunnel));
        self.stats.tunnel_opened();
        for side in Side::ALL {
            let Some(tunnel) = occupant!(self.slots, key, Tunnel) else {
                return;
            };
            let fd = tunnel.leg(side).as_raw_fd();
            if let Err(e) = self.arm(fd, sys::POLL_TUNNEL, Token::Leg(key, side)) {
                self.close_tunnel(key, CloseReason::failed(Reason::Poll, side, &e));
                return;
            }
        }
        if let Some(tunnel) = occupant!(self.slots, key, Tunnel) {
            if let Ok(Some(at)) = tunnel.keepalive(Instant::now()) {
                self.add_deadline(at, key);
            }
        }
        // Deliver the prefixes (and anything already buffered) now rather than one event later.
        let stats = Arc::clone(&self.stats);
        if let Some(tunnel) = occupant!(self.slots, key, Tunnel) {
            match tunnel.on_ready(Side::Client, None, &stats) {
                Ok(TunnelState::Open) => {}
                Ok(TunnelState::Finished) => self.close_tunnel(key, CloseReason::COMPLETED),
                Err(reason) => self.close_tunnel(key, reason),
            }
        }
    }

    pub(super) fn on_leg_event(
        &mut self,
        key: Key,
        side: Side,
        c: Completion,
    ) -> std::io::Result<()> {
        let stats = Arc::clone(&self.stats);
        let Some(tunnel) = occupant!(self.slots, key, Tunnel) else {
            return Ok(());
        };
        let revents = (c.result >= 0).then_some(c.result as u32);
        match tunnel.on_ready(side, revents, &stats) {
            Ok(TunnelState::Finished) => self.close_tunnel(key, CloseReason::COMPLETED),
            Err(reason) => self.close_tunnel(key, reason),
            Ok(TunnelState::Open) if !c.more => {
                let fd = tunnel.leg(side).as_raw_fd();
                self.arm(fd, sys::POLL_TUNNEL, Token::Leg(key, side))?;
            }
            Ok(TunnelState::Open) => {}
        }
        Ok(())
    }

    pub(super) fn close_tunnel(&mut self, key: Key, reason: CloseReason) {
        let Some(Entry::Tunnel(tunnel)) = self.slots.remove(key) else {
            return;
        };
        for side in Side::ALL {
            // Best effort: a poll that already ended has nothing to cancel.
            self.disarm(Token::Leg(key, side)).ok();
        }
        // Let the kernel drop the polls' file references now, so the close below is final.
        self.ring.submit().ok();
        let (legs, engines) = tunnel.into_parts();
        for leg in &legs {
            if reason.reason == Reason::Completed {
                // A peer's last records (a TLS close_notify behind a WebSocket Close) may still
                // be unread: read them so the close is a FIN and loses nothing of the peer's.
                sys::discard_input(leg.fd(), DISCARD_ON_CLOSE);
            } else {
                sys::set_reset_on_close(leg.fd());
            }
        }
        drop(legs);
        for engine in engines {
            self.recycle(engine);
        }
        self.stats.tunnel_closed(reason);
    }

    fn recycle(&mut self, engine: Engine) {
        if engine.pending() != 0 {
            return; // Undelivered bytes of a failed tunnel: the pipe goes with them.
        }
        match engine {
            Engine::Splice { pipe, .. } if self.pipes.len() < POOL_KEEP => self.pipes.push(pipe),
            Engine::Copy { buf, .. } if self.buffers.len() < POOL_KEEP => self.buffers.push(buf),
            _ => {}
        }
    }
}
