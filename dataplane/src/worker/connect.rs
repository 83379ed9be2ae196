//! Connecting a tunnel's back-end leg without blocking: the internal side after the DMZ pairs
//! a reverse leg, and (later) forwarding services. The connect completes at once on loopback or
//! after POLLOUT; a refusal or a missed deadline resets the other leg, so its peer sees the
//! failure at once instead of a connection that hangs.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use super::*;
use crate::handoff::ReverseOutcome;

impl Worker {
    pub(super) fn on_connect_event(&mut self, index: u32, gen: u32, c: Completion) {
        if c.result < 0 {
            return; // Cancelled: the slot has moved on.
        }
        let Some(Entry::Connecting(conn)) = self.slots.get_mut(index, gen) else {
            return;
        };
        match sys::socket_error(conn.target.as_fd()) {
            Ok(None) => {
                let Some(Entry::Connecting(conn)) = self.slots.remove(index, gen) else {
                    return;
                };
                let _ = self.ring.cancel(
                    user_data(TAG_CONNECT, gen, index),
                    user_data(TAG_CANCEL, 0, 0),
                );
                let Connecting {
                    from,
                    target,
                    upstream,
                    leftover,
                    ..
                } = *conn;
                let target = target_leg(target, &upstream);
                self.start_tunnel([from, target], [leftover, Vec::new()]);
            }
            Ok(Some(e)) | Err(e) => self.fail_connect(index, gen, e.raw_os_error()),
        }
    }

    /// The back-end refused or did not answer: reset the other leg so its peer learns at once.
    pub(super) fn fail_connect(&mut self, index: u32, gen: u32, errno: Option<i32>) {
        let Some(Entry::Connecting(conn)) = self.slots.remove(index, gen) else {
            return;
        };
        let _ = self.ring.cancel(
            user_data(TAG_CONNECT, gen, index),
            user_data(TAG_CANCEL, 0, 0),
        );
        self.upstream_failed(conn.from, conn.origin, errno);
    }

    fn upstream_failed(&mut self, from: Leg, origin: Origin, errno: Option<i32>) {
        sys::set_reset_on_close(from.fd());
        match origin {
            Origin::Reverse(service) => self.emit(service, ReverseOutcome::BackendFailed { errno }),
            Origin::Forward(service) => {
                self.stats.services[service]
                    .upstream_failures
                    .fetch_add(1, relaxed());
                if let Some(also_failed) = self.upstream_log.allow(Instant::now()) {
                    let why = errno.map_or_else(
                        || "no answer in time".to_string(),
                        |e| std::io::Error::from_raw_os_error(e).to_string(),
                    );
                    tracing::info!(
                        core = self.id,
                        service = %self.services[service].name,
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
                self.start_tunnel([from, target], [leftover, Vec::new()])
            }
            Ok((target, false)) => {
                let deadline = Instant::now() + upstream.connect_timeout;
                let raw = target.as_raw_fd();
                let connecting = Box::new(Connecting {
                    from,
                    target,
                    upstream: upstream.clone(),
                    origin,
                    leftover,
                });
                let (index, gen) = self.slots.insert(Entry::Connecting(connecting));
                let ud = user_data(TAG_CONNECT, gen, index);
                if self.ring.poll_multi(raw, sys::POLL_CONNECT, ud).is_err() {
                    self.fail_connect(index, gen, None);
                    return;
                }
                self.deadlines
                    .push(std::cmp::Reverse((deadline, index, gen)));
            }
            Err(e) => self.upstream_failed(from, origin, e.raw_os_error()),
        }
    }
}

/// The back-end leg: a TLS client for `tls://` and `wss://`, then a WebSocket client for
/// `ws://` and `wss://` (its upgrade request queued; its handshakes run inside the tunnel).
fn target_leg(fd: OwnedFd, upstream: &Upstream) -> Leg {
    let mut leg = match &upstream.tls {
        None => Leg::plain(fd),
        Some(tls) => {
            match crate::tls::Handshake::client(tls.config.current(), tls.server_name.clone()) {
                Ok(handshake) => Leg::tls(fd, handshake),
                // Only fails on an invalid configuration: the socket is shut down, so the
                // tunnel fails at once instead of sending plaintext to a TLS back-end.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a TLS session with the back-end");
                    let _ = sys::shutdown_both(fd.as_fd());
                    Leg::plain(fd)
                }
            }
        }
    };
    if let Some(ws) = &upstream.ws {
        leg.upgrade_client(&ws.host, &ws.path, ws.max_message, ws.ping);
    }
    leg
}
