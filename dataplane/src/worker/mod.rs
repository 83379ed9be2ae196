//! One data-plane worker: a pinned thread with its own io_uring ring, its own SO_REUSEPORT
//! listener per public service, its own share of each service's prepared connections, and the
//! tunnels it relays. Nothing here is shared with other workers except through bounded
//! channels (plus an eventfd to wake the ring) and the relaxed per-worker counters.
//!
//! Pairing is local: a public client takes a prepared connection parked on the same worker.
//! A worker that runs dry queues the client (until the service's timeout, then resets it) and
//! asks the worker with the most prepared connections for one, without blocking its loop.
//!
//! The parts: each connection state is its own type in its own file, owning its socket and
//! buffers, with an event handler that says what happens next ([`handshake::Handshake`],
//! [`pool::Parked`], [`reverse::ReverseLeg`], [`connect::Connecting`], and the relay's
//! [`crate::relay::Tunnel`]); `driver.rs` applies what their handlers return; [`slots`] holds them (as an [`entry::Entry`]) and [`token`] names their
//! completions. This file is the loop: it turns completions into calls on those states and
//! applies the transitions they return. The states and transitions are in `LIFECYCLE.md`
//! beside this file.
//!
//! This module does not negotiate the first half of SOCKS (the control thread does) and does
//! not move bytes itself (see `relay`).

mod accept;
mod connect;
mod door;
mod driver;
mod entry;
mod handshake;
mod policy;
mod pool;
mod reverse;
mod slots;
mod token;

use std::collections::{BinaryHeap, VecDeque};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::door::Board;
use crate::handoff::{OwnedConn, PublicIndex, ReverseEvents, ReverseIndex};
use crate::log_limit::LogLimiter;
use crate::metrics::{CloseReason, RefusalReason, WorkerStats};
use crate::runtime::RelayConfig;
use crate::service::{PublicService, Upstream};
use crate::sys::{self, Completion, Pipe, Ring};
use entry::Entry;
use pool::LocalService;
use slots::Slots;
use token::{Key, Token};

/// Messages a worker accepts from the control thread and from other workers.
pub(crate) enum Msg {
    /// Park a prepared connection (first BIND reply already sent) for `service`.
    Prepared {
        service: PublicIndex,
        conn: OwnedConn,
    },
    /// Another worker has a client waiting for `service`: send it one prepared connection.
    Steal { service: PublicIndex, to: usize },
    /// Park a reverse leg (internal gateway; first BIND reply received) until the DMZ sends
    /// the second reply, then connect to the back-end and relay.
    Reverse(Box<ReverseHandoff>),
    /// Close this worker's parked (unpaired) reverse legs of a reverse pool: its back-end is
    /// down (internal gateway, `backend_probe`).
    ReleaseReverse(ReverseIndex),
    /// Relay two connections the control thread negotiated as one tunnel
    /// ([`crate::Dataplane::link`]).
    Link(Box<crate::handoff::Link>),
    /// Close everything and return.
    Shutdown,
}

/// A reverse leg handed to a worker by the internal side's pool keeper.
pub(crate) struct ReverseHandoff {
    pub service: ReverseIndex,
    pub conn: OwnedConn,
    pub upstream: Upstream,
    /// The first BIND reply's BND (the DMZ's public address), for the PROXY header.
    pub public: Option<std::net::SocketAddr>,
}

/// How other threads reach a worker.
pub(crate) struct Peer {
    pub tx: Sender<Msg>,
    pub wake: Arc<OwnedFd>,
    pub stats: Arc<WorkerStats>,
}

impl Peer {
    /// Queues a message without blocking; gives it back when the queue is full or closed.
    pub fn send(&self, msg: Msg) -> Result<(), Msg> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                sys::eventfd_signal(self.wake.as_fd());
                Ok(())
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => Err(m),
        }
    }
}

pub(crate) struct WorkerSetup {
    pub id: usize,
    pub rx: Receiver<Msg>,
    pub wake: Arc<OwnedFd>,
    pub peers: Arc<Vec<Peer>>,
    pub stats: Arc<WorkerStats>,
    /// One listener per group of services sharing an address.
    pub listeners: Vec<TcpListener>,
    /// The services of each listener's group.
    pub groups: Vec<Vec<PublicIndex>>,
    /// Admission state shared with the door keeper and the other workers.
    pub board: Arc<Board>,
    pub services: Vec<PublicService>,
    pub relay: RelayConfig,
    pub reverse_events: Option<ReverseEvents>,
    /// Per public service: userspace per-source verdicts (shared by every worker).
    pub gates: Vec<Arc<crate::policy::SourceGate>>,
}

pub(crate) struct Worker {
    id: usize,
    ring: Ring,
    rx: Receiver<Msg>,
    wake: Arc<OwnedFd>,
    peers: Arc<Vec<Peer>>,
    stats: Arc<WorkerStats>,
    listeners: Vec<TcpListener>,
    groups: Vec<Vec<PublicIndex>>,
    board: Arc<Board>,
    /// This worker's listener of each group: open or closed (`admission = "ready"`).
    doors: Vec<door::GroupDoor>,
    /// Indexed by [`PublicIndex`].
    services: Vec<LocalService>,
    slots: Slots<Entry>,
    pipes: Vec<Pipe>,
    buffers: Vec<Box<[u8]>>,
    relay: RelayConfig,
    stopping: bool,
    refusal_log: LogLimiter,
    handshake_log: LogLimiter,
    upstream_log: LogLimiter,
    policy_log: LogLimiter,
    accept_log: LogLimiter,
    /// Per listener group: accepts paused after a resource error (`accept.rs`).
    accept_pauses: Vec<accept::AcceptPause>,
    gates: Vec<Arc<crate::policy::SourceGate>>,
    reverse_events: Option<ReverseEvents>,
    /// Deadlines of back-end connects, handshakes and keepalives: (deadline, slot), earliest
    /// first; an entry whose slot moved on is skipped.
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, u32, u32)>>,
}

/// Most messages a worker takes from its queue per wake-up, so one burst cannot starve I/O.
const MSG_BATCH: usize = 1024;

impl Worker {
    pub fn new(setup: WorkerSetup, ring: Ring) -> Worker {
        let services = setup
            .services
            .into_iter()
            .map(|s| LocalService {
                name: s.name,
                timeout: s.timeout,
                idle_timeout: s.idle_timeout,
                tls: s.tls,
                ws: s.ws,
                upstream: s.upstream,
                accept_proxy: s.accept_proxy,
                pool: VecDeque::new(),
                waiting: VecDeque::new(),
            })
            .collect();
        let groups = setup.listeners.len();
        Worker {
            id: setup.id,
            ring,
            rx: setup.rx,
            wake: setup.wake,
            peers: setup.peers,
            stats: setup.stats,
            listeners: setup.listeners,
            groups: setup.groups,
            board: setup.board,
            doors: Vec::new(),
            services,
            slots: Slots::default(),
            pipes: Vec::new(),
            buffers: Vec::new(),
            relay: setup.relay,
            stopping: false,
            refusal_log: LogLimiter::default(),
            handshake_log: LogLimiter::default(),
            upstream_log: LogLimiter::default(),
            policy_log: LogLimiter::default(),
            accept_log: LogLimiter::default(),
            accept_pauses: vec![accept::AcceptPause::default(); groups],
            gates: setup.gates,
            reverse_events: setup.reverse_events,
            deadlines: BinaryHeap::new(),
        }
    }

    fn service(&self, service: PublicIndex) -> &LocalService {
        &self.services[service.0]
    }

    fn service_stats(&self, service: PublicIndex) -> &crate::metrics::ServiceStats {
        &self.stats.services[service.0]
    }

    /// The worker's loop; returns after a `Shutdown` message (or a ring failure).
    pub fn run(mut self) -> std::io::Result<()> {
        self.arm_wake()?;
        self.start_doors()?;
        let mut completions = Vec::with_capacity(256);
        let busy_poll = self.relay.busy_poll;
        let mut last_activity = Instant::now();
        let mut spinning = false;
        while !self.stopping {
            if spinning {
                // Busy-poll: reap without sleeping, so a peer's wake-up needs no IPI; give the
                // core to any other runnable thread between looks.
                self.ring.submit_and_wait(Some(Duration::ZERO))?;
                std::thread::yield_now();
            } else {
                let timeout = self
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()));
                self.ring.submit_and_wait(timeout)?;
            }
            completions.clear();
            self.ring.drain(&mut completions);
            for c in &completions {
                self.on_completion(*c)?;
            }
            let now = Instant::now();
            if !completions.is_empty() {
                last_activity = now;
            }
            spinning = !busy_poll.is_zero() && now.duration_since(last_activity) < busy_poll;
            self.expire_waiters(now);
            self.expire_deadlines(now);
            self.resume_accepts(now)?;
        }
        self.close_all();
        Ok(())
    }

    fn arm_wake(&mut self) -> std::io::Result<()> {
        let fd = self.wake.as_raw_fd();
        self.arm(fd, sys::POLL_READABLE, Token::Wake)
    }

    fn arm_accept(&mut self, group: usize) -> std::io::Result<()> {
        let fd = self.listeners[group].as_raw_fd();
        let token = Token::Accept {
            group: group as u32,
        };
        self.ring.accept_multi(fd, token.user_data())?;
        if let Some(door) = self.doors.get_mut(group) {
            door.armed = true;
        }
        Ok(())
    }

    /// Arms a multishot poll on `fd` (owned by the slot `token` names) for `token`.
    fn arm(&mut self, fd: RawFd, events: u32, token: Token) -> std::io::Result<()> {
        self.ring.poll_multi(fd, events, token.user_data())
    }

    /// Asks the ring to stop the request `token` names (best effort: a request that already
    /// ended finds nothing to cancel, and its slot has moved on anyway).
    fn disarm(&mut self, token: Token) -> std::io::Result<()> {
        self.ring
            .cancel(token.user_data(), Token::Cancel.user_data())
    }

    fn on_completion(&mut self, c: Completion) -> std::io::Result<()> {
        let Some(token) = Token::from_user_data(c.user_data) else {
            return Ok(());
        };
        match token {
            Token::Wake => {
                if !c.more {
                    self.arm_wake()?;
                }
                sys::eventfd_drain(self.wake.as_fd());
                self.drain_queue();
                self.apply_doors()?;
            }
            Token::Accept { group } => {
                let group = group as usize;
                if let Some(fd) = self.ring.take_accepted(&c) {
                    self.accept_succeeded(group);
                    self.on_client(group, fd);
                } else if c.result != -libc::ECANCELED && self.doors[group].open {
                    self.accept_failed(group, -c.result, Instant::now());
                }
                if !c.more {
                    self.accept_ended(group)?;
                }
            }
            Token::Parked(key) => self.on_parked_event(key, c)?,
            Token::Reverse(key) => self.on_reverse_event(key, c)?,
            Token::Connect(key) => self.on_connect_event(key, c),
            Token::Handshake(key) => self.on_handshake_event(key, c),
            Token::Leg(key, side) => self.on_leg_event(key, side, c)?,
            Token::Cancel => {}
        }
        Ok(())
    }

    fn drain_queue(&mut self) {
        for _ in 0..MSG_BATCH {
            let Ok(msg) = self.rx.try_recv() else { return };
            match msg {
                Msg::Prepared { service, conn } => self.park(service, conn),
                Msg::Steal { service, to } => self.give_prepared(service, to),
                Msg::Reverse(handoff) => self.park_reverse(*handoff),
                Msg::ReleaseReverse(service) => self.release_reverse(service),
                Msg::Link(link) => self.link(*link),
                Msg::Shutdown => self.stopping = true,
            }
        }
        // More queued than one batch: come back on the next loop turn.
        sys::eventfd_signal(self.wake.as_fd());
    }

    fn add_deadline(&mut self, at: Instant, key: Key) {
        self.deadlines
            .push(std::cmp::Reverse((at, key.index, key.gen)));
    }

    /// Back-end connects, handshakes and tunnel clocks (keepalive, idle) whose time came.
    fn expire_deadlines(&mut self, now: Instant) {
        while let Some(std::cmp::Reverse((deadline, index, gen))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let key = Key { index, gen };
            match self.slots.get_mut(key) {
                Some(Entry::Connecting(_)) => self.fail_connect(key, None),
                Some(Entry::Handshake(_)) => self.handshake_timed_out(key),
                Some(Entry::Tunnel(tunnel)) => match tunnel.timers(now) {
                    Ok(Some(at)) => self.add_deadline(at, key),
                    Ok(None) => {}
                    Err(reason) => self.close_tunnel(key, reason),
                },
                _ => {}
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let waiting = self
            .services
            .iter()
            .filter_map(|s| s.waiting.front().map(|w| w.deadline));
        let timers = self.deadlines.peek().map(|d| d.0 .0);
        waiting.chain(timers).chain(self.next_accept_resume()).min()
    }

    fn close_all(&mut self) {
        for (i, local) in self.services.iter_mut().enumerate() {
            let service = PublicIndex(i);
            for waiter in local.waiting.drain(..) {
                sys::set_reset_on_close(waiter.client.fd());
                self.stats.services[i].waiting.fetch_sub(1, relaxed());
                self.stats.refused(service.0, RefusalReason::Shutdown);
            }
            local.pool.clear();
        }
        for key in self.slots.keys() {
            match self.slots.get_mut(key) {
                Some(Entry::Tunnel(_)) => self.close_tunnel(key, CloseReason::SHUTDOWN),
                Some(Entry::Parked(parked)) => {
                    let service = parked.service;
                    self.service_stats(service).prepared.fetch_sub(1, relaxed());
                    self.slots.remove(key);
                }
                Some(_) => {
                    self.slots.remove(key);
                }
                None => {}
            }
        }
        self.listeners.clear();
    }
}

fn relaxed() -> std::sync::atomic::Ordering {
    std::sync::atomic::Ordering::Relaxed
}
