//! The DMZ side's pairing: prepared connections parked per service ([`Parked`], oldest first),
//! public clients that are ready (plain, or their handshake done) and the ones waiting for a
//! prepared connection ([`Waiter`], reset when the service's timeout passes), lending prepared
//! connections to other workers, and the pairing itself: the second BIND reply (from the
//! sans-IO BIND server's [`bind::server::Parked`]) goes down the prepared connection ahead of
//! the client's bytes.
//!
//! This file holds the states and their handlers; the worker side (pools, waiting queues,
//! polls, counters, lending) is in `driver.rs`. It relays nothing itself: a pair becomes a
//! tunnel through `Worker::start_tunnel`.

use std::net::SocketAddr;
use std::time::Instant;

use crate::handoff::PublicIndex;
use crate::leg::Leg;
use crate::sys::Completion;
use crate::wire::bind;

/// A prepared connection parked at the DMZ side: the first BIND reply went out (on the
/// control thread); all that is left of its session is the second reply.
pub(super) struct Parked {
    pub(super) leg: Leg,
    pub(super) service: PublicIndex,
}

/// What a parked connection's poll event means.
pub(super) enum ParkedStep {
    /// The poll ended (cancelled, failed): watch it again if it is still parked.
    Rearm,
    /// It became readable or closed: either way it can no longer serve.
    Lost,
}

impl Parked {
    pub(super) fn on_event(c: &Completion) -> ParkedStep {
        if c.result < 0 {
            ParkedStep::Rearm
        } else {
            ParkedStep::Lost
        }
    }

    /// The second BIND reply for the public client at `client`.
    pub(super) fn pair(&self, client: SocketAddr) -> Vec<u8> {
        bind::server::Parked.pair(client)
    }
}

/// A ready public client with no prepared connection here yet.
pub(super) struct Waiter {
    pub(super) client: Leg,
    pub(super) addr: SocketAddr,
    pub(super) deadline: Instant,
}
