//! What crosses between the control thread and the data plane: the owned value that carries a
//! socket to a worker, the two index spaces services are named by, and the reverse-leg events
//! that come back.
//!
//! A socket crosses threads with the bytes already read past the end of its handshake: those
//! bytes belong to the next layer and are delivered first (wire rule 1). This module does no
//! I/O.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// A public service: its index in [`crate::DataplaneConfig::services`] (listeners, prepared
/// connection pools, per-service counters). Not to be confused with a [`ReverseIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicIndex(pub usize);

/// A reverse pool of the internal side: the index the control thread's pool keeper gave
/// [`crate::Dataplane::park_reverse`] and gets back in [`ReverseEvent::service`]. It names no
/// public service of the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReverseIndex(pub usize);

/// A connected socket, its TLS session if it has one, and the (plaintext) bytes read from it
/// that no layer has consumed yet.
pub struct OwnedConn {
    pub stream: TcpStream,
    /// Bytes read from `stream` past the last handshake message, in arrival order. For a TLS
    /// connection these are decrypted bytes; records not yet opened stay inside `tls`.
    pub leftover: Vec<u8>,
    /// The established TLS session on `stream`, when the connection speaks TLS.
    pub tls: Option<Box<crate::tls::Session>>,
}

impl OwnedConn {
    pub fn new(stream: TcpStream, leftover: Vec<u8>) -> OwnedConn {
        OwnedConn {
            stream,
            leftover,
            tls: None,
        }
    }

    pub fn with_tls(mut self, tls: crate::tls::Session) -> OwnedConn {
        self.tls = Some(Box::new(tls));
        self
    }
}

impl std::fmt::Debug for OwnedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedConn")
            .field("stream", &self.stream)
            .field("leftover", &self.leftover.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// WebSocket settings of a linked tunnel's front leg ([`Link::ws`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLink {
    /// Ping the peer after this long without a byte from it; close when it stays silent.
    pub ping: Option<Duration>,
    /// Largest message accepted from the peer.
    pub max_message: usize,
}

/// Two connections the control thread has negotiated, to be relayed as one tunnel by a worker
/// ([`crate::Dataplane::link`]): token rendezvous links a browser with a host, and a host
/// links its reverse leg with a stream's target.
#[derive(Debug)]
pub struct Link {
    /// The client's side. With `ws` set it is a WebSocket server leg whose upgrade is complete
    /// (the 101 was sent; `leftover` holds the framed bytes that followed the request):
    /// messages from it are relayed as bytes and bytes towards it go as binary messages.
    pub front: OwnedConn,
    pub ws: Option<WsLink>,
    /// The other side: plain bytes (under TLS when `back.tls` is set).
    pub back: OwnedConn,
}

/// What became of a reverse leg parked by the internal side ([`crate::Dataplane::park_reverse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseOutcome {
    /// Paired, but the back-end refused (`errno`) or did not answer in time (`None`); the
    /// DMZ leg was reset.
    BackendFailed { errno: Option<i32> },
    /// Closed (or answered with something that is not a second BIND reply) after `parked`.
    Lost { parked: Duration },
    /// The DMZ paired it with a client (second BIND reply): refill the pool.
    Paired,
    /// Closed unpaired by [`crate::Dataplane::release_reverse`] (FIN, a TLS leg's
    /// close_notify first): the DMZ counts it lost.
    Released,
}

/// One reverse leg's news, for the control thread's pool keeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReverseEvent {
    /// The index given to [`crate::Dataplane::park_reverse`].
    pub service: ReverseIndex,
    pub outcome: ReverseOutcome,
}

/// Called on a worker thread for every [`ReverseEvent`]; must not block.
pub type ReverseEvents = Arc<dyn Fn(ReverseEvent) + Send + Sync>;
