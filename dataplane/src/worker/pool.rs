//! The DMZ side's pairing: prepared connections parked per service ([`Parked`], oldest first),
//! public clients that are ready (plain, or their handshake done) and the ones waiting for a
//! prepared connection ([`Waiter`], reset when the service's timeout passes), lending prepared
//! connections to other workers, and the pairing itself: the second BIND reply (from the
//! sans-IO BIND server's [`bind::server::Parked`]) goes down the prepared connection ahead of
//! the client's bytes.
//!
//! This file holds the states and their handlers, and [`LocalService`] (a service's settings,
//! pool and queue as one worker keeps them); the worker side (pools, waiting queues,
//! polls, counters, lending) is in `driver.rs`. It relays nothing itself: a pair becomes a
//! tunnel through `Worker::start_tunnel`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::token::Key;
use crate::admission::IpNet;
use crate::handoff::PublicIndex;
use crate::leg::Leg;
use crate::service::{PublicTls, PublicWs, Upstream};
use crate::sys::Completion;
use crate::wire::bind;

/// A public service as one worker keeps it: its settings and its local pool and queue.
pub(super) struct LocalService {
    /// The service's name, for log lines.
    pub(super) name: String,
    pub(super) timeout: Duration,
    /// A tunnel that moves no byte either way for this long is reset.
    pub(super) idle_timeout: Option<Duration>,
    pub(super) tls: Option<PublicTls>,
    pub(super) ws: Option<PublicWs>,
    /// Forwarding service: each client gets its own connection to this upstream instead of a
    /// prepared connection.
    pub(super) upstream: Option<Upstream>,
    /// Peers (an L4 balancer) whose connections begin with a PROXY header (`accept_proxy`).
    pub(super) accept_proxy: Vec<IpNet>,
    /// Parked prepared connections, oldest first. Entries whose slot moved on are skipped
    /// when popped.
    pub(super) pool: VecDeque<Key>,
    pub(super) waiting: VecDeque<Waiter>,
}

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
