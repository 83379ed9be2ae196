//! Connecting a tunnel's target leg without blocking: the internal side after the DMZ pairs a
//! reverse leg, and forwarding services for each client. The connect completes at once on
//! loopback or after POLLOUT; a refusal or a missed deadline resets the other leg, so its peer
//! sees the failure at once instead of a connection that hangs.
//!
//! [`Connecting`] owns both sockets and the bytes owed to the back-end; its handler
//! [`Connecting::on_writable`] says whether the connect succeeded. This file does not relay.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use super::entry::occupant;
use super::{relaxed, Entry, Key, Token, Worker};
use crate::handoff::{PublicIndex, ReverseIndex, ReverseOutcome};
use crate::leg::Leg;
use crate::service::Upstream;
use crate::sys::{self, Completion};

/// Who asked for an upstream connect, to report its failure.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin {
    /// A forwarding public service.
    Forward(PublicIndex),
    /// A reverse leg of the internal side.
    Reverse(ReverseIndex),
}

/// A back-end connect in progress, and the leg waiting for it.
pub(super) struct Connecting {
    /// The leg waiting for its peer (the paired DMZ leg, or a public client).
    from: Leg,
    target: OwnedFd,
    upstream: Upstream,
    origin: Origin,
    /// Client bytes that came with the second reply: the back-end gets them first.
    leftover: Vec<u8>,
}

/// How a connect ended.
enum ConnectStep {
    Connected,
    /// Refused or failed, with the errno when there is one.
    Failed(Option<i32>),
}

impl Connecting {
    /// POLLOUT (or an error) on the connecting socket: SO_ERROR tells which.
    fn on_writable(&self) -> ConnectStep {
        match sys::socket_error(self.target.as_fd()) {
            Ok(None) => ConnectStep::Connected,
            Ok(Some(e)) | Err(e) => ConnectStep::Failed(e.raw_os_error()),
        }
    }
}

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
                    sys::shutdown_both(fd.as_fd()).ok();
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
