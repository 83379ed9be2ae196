//! The worker's side of each connection state: what the loop does with the step a state's
//! handler returns (arming and cancelling polls, moving occupants between slots, deadlines,
//! counters, reports). The states themselves, and their handlers, are in their own files
//! (`LIFECYCLE.md`); this file does not read or parse peer bytes.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::connect::{target_leg, ConnectStep, Connecting, Origin};
use super::entry::{occupant, Entry};
use super::{relaxed, Key, Token, Worker};
use crate::handoff::ReverseOutcome;
use crate::leg::Leg;
use crate::service::Upstream;
use crate::sys::{self, Completion};

// Connecting (`connect.rs`).
impl Worker {
    pub(super) fn on_connect_event(&mut self, key: Key, c: Completion) {
        if c.result < 0 {
            return; // Cancelled: the slot has moved on.
        }
        let Some(conn) = occupant!(self.slots, key, Connecting) else {
            return;
        };
        match conn.on_writable() {
            ConnectStep::Connected => {
                let Some(Entry::Connecting(conn)) = self.slots.remove(key) else {
                    return;
                };
                self.disarm(Token::Connect(key)).ok();
                let Connecting {
                    from,
                    target,
                    upstream,
                    leftover,
                    ..
                } = *conn;
                let target = target_leg(target, &upstream);
                self.start_tunnel(from, target, leftover);
            }
            ConnectStep::Failed(errno) => self.fail_connect(key, errno),
        }
    }

    /// The back-end refused or did not answer (`errno` `None`): reset the other leg so its
    /// peer learns at once.
    pub(super) fn fail_connect(&mut self, key: Key, errno: Option<i32>) {
        let Some(Entry::Connecting(conn)) = self.slots.remove(key) else {
            return;
        };
        self.disarm(Token::Connect(key)).ok();
        self.upstream_failed(conn.from, conn.origin, errno);
    }

    fn upstream_failed(&mut self, from: Leg, origin: Origin, errno: Option<i32>) {
        sys::set_reset_on_close(from.fd());
        match origin {
            Origin::Reverse(service) => self.emit(service, ReverseOutcome::BackendFailed { errno }),
            Origin::Forward(service) => {
                self.service_stats(service)
                    .upstream_failures
                    .fetch_add(1, relaxed());
                if let Some(also_failed) = self.upstream_log.allow(Instant::now()) {
                    let why = errno.map_or_else(
                        || "no answer in time".to_string(),
                        |e| std::io::Error::from_raw_os_error(e).to_string(),
                    );
                    tracing::info!(
                        core = self.id,
                        service = %self.service(service).name,
                        also_failed,
                        "upstream unreachable ({why}); client reset"
                    );
                }
            }
        }
    }

    /// Connects `from`'s tunnel to `upstream` without blocking: at once when the kernel
    /// completes the connect immediately (loopback), else after POLLOUT or the deadline.
    /// `leftover` is written to the upstream before anything relayed.
    pub(super) fn connect_upstream(
        &mut self,
        from: Leg,
        leftover: Vec<u8>,
        upstream: &Upstream,
        origin: Origin,
    ) {
        match sys::connect_nonblocking(upstream.addr) {
            Ok((target, true)) => {
                let target = target_leg(target, upstream);
                self.start_tunnel(from, target, leftover)
            }
            Ok((target, false)) => {
                let deadline = Instant::now() + upstream.connect_timeout;
                let fd = target.as_raw_fd();
                let connecting = Box::new(Connecting {
                    from,
                    target,
                    upstream: upstream.clone(),
                    origin,
                    leftover,
                });
                let key = self.slots.insert(Entry::Connecting(connecting));
                if self
                    .arm(fd, sys::POLL_CONNECT, Token::Connect(key))
                    .is_err()
                {
                    self.fail_connect(key, None);
                    return;
                }
                self.add_deadline(deadline, key);
            }
            Err(e) => self.upstream_failed(from, origin, e.raw_os_error()),
        }
    }
}
