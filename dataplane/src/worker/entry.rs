//! What occupies a worker's slot: one variant per connection state (`LIFECYCLE.md`), and
//! [`occupant!`] to borrow a slot's state by variant.

use super::connect::Connecting;
use super::handshake::Handshake;
use super::pool::Parked;
use super::reverse::ReverseLeg;
use crate::relay::Tunnel;

/// What occupies a slot: one state type per connection state (`LIFECYCLE.md`).
pub(super) enum Entry {
    /// Back-end connect in progress (a paired reverse leg, or a forwarding client).
    Connecting(Box<Connecting>),
    /// A public client's TLS handshake or WebSocket upgrade in progress.
    Handshake(Box<Handshake>),
    /// A prepared connection parked at the DMZ side.
    Parked(Parked),
    /// A reverse leg parked by the internal side, waiting for the second BIND reply.
    Reverse(Box<ReverseLeg>),
    Tunnel(Box<Tunnel>),
}

/// `slots.get_mut(key)` if it holds the given variant, as a `&mut` to its state.
macro_rules! occupant {
    ($slots:expr, $key:expr, $variant:ident) => {
        match $slots.get_mut($key) {
            Some($crate::worker::entry::Entry::$variant(state)) => Some(state),
            _ => None,
        }
    };
}
pub(super) use occupant;
