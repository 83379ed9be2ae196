//! Connecting a tunnel's target leg without blocking: the internal side after the DMZ pairs a
//! reverse leg, and forwarding services for each client. The connect completes at once on
//! loopback or after POLLOUT; a refusal or a missed deadline resets the other leg, so its peer
//! sees the failure at once instead of a connection that hangs.
//!
//! [`Connecting`] owns both sockets and the bytes owed to the back-end; its handler
//! [`Connecting::on_writable`] says whether the connect succeeded; what the worker then does
//! (slot, poll, deadline, counters) is in `driver.rs`. This file does not relay.

use std::os::fd::{AsFd, OwnedFd};

use crate::handoff::{PublicIndex, ReverseIndex};
use crate::leg::Leg;
use crate::service::Upstream;
use crate::sys;

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
    pub(super) from: Leg,
    pub(super) target: OwnedFd,
    pub(super) upstream: Upstream,
    pub(super) origin: Origin,
    /// Client bytes that came with the second reply: the back-end gets them first.
    pub(super) leftover: Vec<u8>,
    /// The PROXY header the upstream's `proxy_protocol` asks for, written on the raw socket
    /// once connected, before TLS, WebSocket and `leftover`.
    pub(super) header: Option<crate::wire::proxy::Encoded>,
}

/// How a connect ended.
pub(super) enum ConnectStep {
    Connected,
    /// Refused or failed, with the errno when there is one.
    Failed(Option<i32>),
}

impl Connecting {
    /// POLLOUT (or an error) on the connecting socket: SO_ERROR tells which.
    pub(super) fn on_writable(&self) -> ConnectStep {
        match sys::socket_error(self.target.as_fd()) {
            Ok(None) => ConnectStep::Connected,
            Ok(Some(e)) | Err(e) => ConnectStep::Failed(e.raw_os_error()),
        }
    }
}

/// The back-end leg: a TLS client for `tls://` and `wss://`, then a WebSocket client for
/// `ws://` and `wss://` (its upgrade request queued; its handshakes run inside the tunnel).
pub(super) fn target_leg(fd: OwnedFd, upstream: &Upstream) -> Leg {
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
