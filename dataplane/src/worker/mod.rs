//! One data-plane worker: a pinned thread with its own io_uring ring, its own SO_REUSEPORT
//! listener per public service, its own share of each service's prepared connections, and the
//! tunnels it relays. Nothing here is shared with other workers except through bounded
//! channels (plus an eventfd to wake the ring) and the relaxed per-worker counters.
//!
//! Pairing is local: a public client takes a prepared connection parked on the same worker.
//! A worker that runs dry queues the client (until the service's timeout, then resets it) and
//! asks the worker with the most prepared connections for one, without blocking its loop.
//!
//! This module does not negotiate SOCKS (the control thread does) and does not move bytes
//! itself (see `relay`). The states are in `LIFECYCLE.md` beside this file.

mod connect;
mod public;
mod reverse;

use std::collections::{BinaryHeap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::handoff::OwnedConn;
use crate::handoff::ReverseEvents;
use crate::leg::Leg;
use crate::metrics::{CloseReason, RefusalReason, WorkerStats};
use crate::relay::{Engine, Tunnel, TunnelState};
use crate::runtime::{RelayConfig, RelayMode};
use crate::service::{PublicService, PublicTls, PublicWs, Upstream};
use crate::sys::{self, Completion, Pipe, Ring};

/// Messages a worker accepts from the control thread and from other workers.
pub(crate) enum Msg {
    /// Park a prepared connection (first BIND reply already sent) for `service`.
    Prepared { service: usize, conn: OwnedConn },
    /// Another worker has a client waiting for `service`: send it one prepared connection.
    Steal { service: usize, to: usize },
    /// Park a reverse leg (internal gateway; first BIND reply received) until the DMZ sends
    /// the second reply, then connect to the back-end and relay.
    Reverse(Box<ReverseHandoff>),
    /// Close everything and return.
    Shutdown,
}

/// A reverse leg handed to a worker by the internal side's pool keeper.
pub(crate) struct ReverseHandoff {
    pub service: usize,
    pub conn: OwnedConn,
    pub upstream: Upstream,
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

// user_data layout: tag (8 bits) | generation (24 bits) | index (32 bits).
const TAG_WAKE: u64 = 1;
const TAG_ACCEPT: u64 = 2;
const TAG_PARKED: u64 = 3;
const TAG_LEG0: u64 = 4;
const TAG_LEG1: u64 = 5;
const TAG_CANCEL: u64 = 6;
const TAG_REVERSE: u64 = 7;
const TAG_CONNECT: u64 = 8;
const TAG_HANDSHAKE: u64 = 9;
const GEN_MASK: u32 = 0x00ff_ffff;

fn user_data(tag: u64, gen: u32, index: u32) -> u64 {
    (tag << 56) | (u64::from(gen & GEN_MASK) << 32) | u64::from(index)
}

fn split_user_data(ud: u64) -> (u64, u32, u32) {
    ((ud >> 56), ((ud >> 32) as u32) & GEN_MASK, ud as u32)
}

enum Entry {
    /// Back-end connect in progress for a paired reverse leg.
    Connecting(Box<Connecting>),
    Free,
    /// A public client's TLS handshake in progress (DMZ side, `tls://` services).
    Handshake(Box<Handshake>),
    /// A prepared connection parked at the DMZ side.
    Parked {
        leg: Leg,
        service: usize,
    },
    /// A reverse leg parked by the internal side, waiting for the second BIND reply.
    Reverse(Box<ReverseLeg>),
    Tunnel(Box<Tunnel>),
}

struct Handshake {
    leg: Leg,
    addr: SocketAddr,
    /// The listener group the client came in on (its service is known after routing).
    group: usize,
    stage: HandshakeStage,
}

enum HandshakeStage {
    /// HTTP upgrade request bytes so far (WebSocket listeners).
    Http(Vec<u8>),
    Tls,
}

struct ReverseLeg {
    leg: Leg,
    service: usize,
    /// The back-end to connect once paired.
    upstream: Upstream,
    /// Bytes read and not yet parsed (at most one reply plus what came with it).
    buf: Vec<u8>,
    parked_at: Instant,
}

/// Who asked for an upstream connect, to report its failure.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// A forwarding public service (index).
    Forward(usize),
    /// A reverse leg of the internal side (reverse service index).
    Reverse(usize),
}

struct Connecting {
    /// The leg waiting for its peer (the paired DMZ leg, or a public client).
    from: Leg,
    target: OwnedFd,
    upstream: Upstream,
    origin: Origin,
    /// Client bytes that came with the second reply: the back-end gets them first.
    leftover: Vec<u8>,
}

struct Slot {
    gen: u32,
    entry: Entry,
}

/// Slots for parked connections and tunnels; a generation number per slot makes completions
/// for a previous occupant recognisable (they are ignored).
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Slots {
    fn insert(&mut self, entry: Entry) -> (u32, u32) {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = entry;
            (index, slot.gen)
        } else {
            self.slots.push(Slot { gen: 0, entry });
            ((self.slots.len() - 1) as u32, 0)
        }
    }

    fn get_mut(&mut self, index: u32, gen: u32) -> Option<&mut Entry> {
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.gen == gen && !matches!(s.entry, Entry::Free))
            .map(|s| &mut s.entry)
    }

    fn remove(&mut self, index: u32, gen: u32) -> Option<Entry> {
        let slot = self.slots.get_mut(index as usize)?;
        if slot.gen != gen || matches!(slot.entry, Entry::Free) {
            return None;
        }
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push(index);
        Some(std::mem::replace(&mut slot.entry, Entry::Free))
    }
}

struct Waiter {
    client: Leg,
    addr: SocketAddr,
    deadline: Instant,
}

struct LocalService {
    /// The service's name, for log lines.
    name: String,
    timeout: Duration,
    tls: Option<PublicTls>,
    ws: Option<PublicWs>,
    /// Forwarding service: each client gets its own connection to this upstream instead of a
    /// prepared connection.
    upstream: Option<Upstream>,
    /// Parked prepared connections: (slot, generation), oldest first. Entries whose slot
    /// moved on are skipped when popped.
    pool: VecDeque<(u32, u32)>,
    waiting: VecDeque<Waiter>,
}

pub(crate) struct WorkerSetup {
    pub id: usize,
    pub rx: Receiver<Msg>,
    pub wake: Arc<OwnedFd>,
    pub peers: Arc<Vec<Peer>>,
    pub stats: Arc<WorkerStats>,
    /// One listener per group of services sharing an address.
    pub listeners: Vec<TcpListener>,
    /// The services (indexes) of each listener's group.
    pub groups: Vec<Vec<usize>>,
    pub services: Vec<PublicService>,
    pub relay: RelayConfig,
    pub reverse_events: Option<ReverseEvents>,
}

pub(crate) struct Worker {
    id: usize,
    ring: Ring,
    rx: Receiver<Msg>,
    wake: Arc<OwnedFd>,
    peers: Arc<Vec<Peer>>,
    stats: Arc<WorkerStats>,
    listeners: Vec<TcpListener>,
    groups: Vec<Vec<usize>>,
    services: Vec<LocalService>,
    slots: Slots,
    pipes: Vec<Pipe>,
    buffers: Vec<Box<[u8]>>,
    relay: RelayConfig,
    stopping: bool,
    refusal_log: LogLimiter,
    handshake_log: LogLimiter,
    upstream_log: LogLimiter,
    reverse_events: Option<ReverseEvents>,
    /// Deadlines of back-end connects and TLS handshakes: (deadline, slot, generation),
    /// earliest first; an entry whose slot moved on is skipped.
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, u32, u32)>>,
}

/// Lets one log line through per [`LOG_EVERY`] and counts the ones it held back, so a dead
/// service or a scanner under load cannot flood the log.
#[derive(Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

const LOG_EVERY: Duration = Duration::from_secs(1);

impl LogLimiter {
    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Most bytes read and dropped from a finished tunnel's leg before it is closed.
const DISCARD_ON_CLOSE: usize = 64 << 10;
/// Most pipes (and buffers) a worker keeps for reuse.
const POOL_KEEP: usize = 256;
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
                tls: s.tls,
                ws: s.ws,
                upstream: s.upstream,
                pool: VecDeque::new(),
                waiting: VecDeque::new(),
            })
            .collect();
        Worker {
            id: setup.id,
            ring,
            rx: setup.rx,
            wake: setup.wake,
            peers: setup.peers,
            stats: setup.stats,
            listeners: setup.listeners,
            groups: setup.groups,
            services,
            slots: Slots {
                slots: Vec::new(),
                free: Vec::new(),
            },
            pipes: Vec::new(),
            buffers: Vec::new(),
            relay: setup.relay,
            stopping: false,
            refusal_log: LogLimiter::default(),
            handshake_log: LogLimiter::default(),
            upstream_log: LogLimiter::default(),
            reverse_events: setup.reverse_events,
            deadlines: BinaryHeap::new(),
        }
    }

    /// The worker's loop; returns after a `Shutdown` message (or a ring failure).
    pub fn run(mut self) -> std::io::Result<()> {
        self.ring.poll_multi(
            self.wake.as_raw_fd(),
            sys::POLL_READABLE,
            user_data(TAG_WAKE, 0, 0),
        )?;
        for i in 0..self.listeners.len() {
            self.arm_accept(i)?;
        }
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
        }
        self.close_all();
        Ok(())
    }

    fn arm_accept(&mut self, group: usize) -> std::io::Result<()> {
        let fd = self.listeners[group].as_raw_fd();
        self.ring
            .accept_multi(fd, user_data(TAG_ACCEPT, 0, group as u32))
    }

    fn on_completion(&mut self, c: Completion) -> std::io::Result<()> {
        let (tag, gen, index) = split_user_data(c.user_data);
        match tag {
            TAG_WAKE => {
                if !c.more {
                    self.ring.poll_multi(
                        self.wake.as_raw_fd(),
                        sys::POLL_READABLE,
                        user_data(TAG_WAKE, 0, 0),
                    )?;
                }
                sys::eventfd_drain(self.wake.as_fd());
                self.drain_queue();
            }
            TAG_ACCEPT => {
                let group = index as usize;
                if let Some(fd) = self.ring.take_accepted(&c) {
                    self.on_client(group, fd);
                } else if c.result != -libc::ECANCELED {
                    tracing::warn!(core = self.id, group, errno = -c.result, "accept failed");
                }
                if !c.more && !self.stopping {
                    self.arm_accept(group)?;
                }
            }
            TAG_PARKED => self.on_parked_event(index, gen, c)?,
            TAG_REVERSE => self.on_reverse_event(index, gen, c)?,
            TAG_CONNECT => self.on_connect_event(index, gen, c),
            TAG_HANDSHAKE => self.on_handshake_event(index, gen, c),
            TAG_LEG0 | TAG_LEG1 => {
                let leg = (tag - TAG_LEG0) as usize;
                self.on_leg_event(index, gen, leg, c)?;
            }
            _ => {} // TAG_CANCEL and completions for slots that moved on.
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
                Msg::Shutdown => self.stopping = true,
            }
        }
        // More queued than one batch: come back on the next loop turn.
        sys::eventfd_signal(self.wake.as_fd());
    }

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

    fn start_tunnel(&mut self, legs: [Leg; 2], prefixes: [Vec<u8>; 2]) {
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
        let raws: [RawFd; 2] = [legs[0].fd().as_raw_fd(), legs[1].fd().as_raw_fd()];
        let tunnel = Box::new(Tunnel::new(legs, prefixes, engines));
        let (index, gen) = self.slots.insert(Entry::Tunnel(tunnel));
        self.stats.tunnel_opened();
        for (i, raw) in raws.into_iter().enumerate() {
            let ud = user_data(TAG_LEG0 + i as u64, gen, index);
            if self.ring.poll_multi(raw, sys::POLL_TUNNEL, ud).is_err() {
                self.close_tunnel(index, gen, CloseReason::Error);
                return;
            }
        }
        if let Some(Entry::Tunnel(tunnel)) = self.slots.get_mut(index, gen) {
            if let Ok(Some(at)) = tunnel.keepalive(Instant::now()) {
                self.deadlines.push(std::cmp::Reverse((at, index, gen)));
            }
        }
        // Deliver the prefixes (and anything already buffered) now rather than one event later.
        let stats = Arc::clone(&self.stats);
        if let Some(Entry::Tunnel(tunnel)) = self.slots.get_mut(index, gen) {
            match tunnel.on_ready(0, None, &stats) {
                Ok(TunnelState::Open) => {}
                Ok(TunnelState::Finished) => self.close_tunnel(index, gen, CloseReason::Completed),
                Err(_) => self.close_tunnel(index, gen, CloseReason::Error),
            }
        }
    }

    fn on_leg_event(
        &mut self,
        index: u32,
        gen: u32,
        leg: usize,
        c: Completion,
    ) -> std::io::Result<()> {
        let stats = Arc::clone(&self.stats);
        let Some(Entry::Tunnel(tunnel)) = self.slots.get_mut(index, gen) else {
            return Ok(());
        };
        let revents = (c.result >= 0).then_some(c.result as u32);
        match tunnel.on_ready(leg, revents, &stats) {
            Ok(TunnelState::Finished) => self.close_tunnel(index, gen, CloseReason::Completed),
            Err(_) => self.close_tunnel(index, gen, CloseReason::Error),
            Ok(TunnelState::Open) if !c.more => {
                let raw = tunnel.leg(leg).as_raw_fd();
                let ud = user_data(TAG_LEG0 + leg as u64, gen, index);
                self.ring.poll_multi(raw, sys::POLL_TUNNEL, ud)?;
            }
            Ok(TunnelState::Open) => {}
        }
        Ok(())
    }

    fn close_tunnel(&mut self, index: u32, gen: u32, reason: CloseReason) {
        let Some(Entry::Tunnel(tunnel)) = self.slots.remove(index, gen) else {
            return;
        };
        for tag in [TAG_LEG0, TAG_LEG1] {
            let _ = self
                .ring
                .cancel(user_data(tag, gen, index), user_data(TAG_CANCEL, 0, 0));
        }
        // Let the kernel drop the polls' file references now, so the close below is final.
        let _ = self.ring.submit();
        let (legs, engines) = tunnel.into_parts();
        for leg in &legs {
            if reason == CloseReason::Completed {
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

    /// Back-end connects and TLS handshakes that ran out of time.
    fn expire_deadlines(&mut self, now: Instant) {
        while let Some(std::cmp::Reverse((deadline, index, gen))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            match self.slots.get_mut(index, gen) {
                Some(Entry::Connecting(_)) => self.fail_connect(index, gen, None),
                Some(Entry::Handshake(_)) => self.end_handshake(index, gen, public::Step::Wait),
                Some(Entry::Tunnel(tunnel)) => match tunnel.keepalive(now) {
                    Ok(Some(at)) => self.deadlines.push(std::cmp::Reverse((at, index, gen))),
                    Ok(None) => {}
                    Err(_) => self.close_tunnel(index, gen, CloseReason::Error),
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
        let connecting = self.deadlines.peek().map(|d| d.0 .0);
        waiting.chain(connecting).min()
    }

    fn close_all(&mut self) {
        for (service, local) in self.services.iter_mut().enumerate() {
            for waiter in local.waiting.drain(..) {
                sys::set_reset_on_close(waiter.client.fd());
                self.stats.services[service].waiting.fetch_sub(1, relaxed());
                self.stats.refused(service, RefusalReason::Shutdown);
            }
            local.pool.clear();
        }
        for index in 0..self.slots.slots.len() as u32 {
            let gen = self.slots.slots[index as usize].gen;
            match self.slots.slots[index as usize].entry {
                Entry::Tunnel(_) => self.close_tunnel(index, gen, CloseReason::Shutdown),
                Entry::Parked { service, .. } => {
                    self.stats.services[service]
                        .prepared
                        .fetch_sub(1, relaxed());
                    self.slots.remove(index, gen);
                }
                Entry::Reverse(_) | Entry::Connecting(_) | Entry::Handshake(_) => {
                    self.slots.remove(index, gen);
                }
                Entry::Free => {}
            }
        }
        self.listeners.clear();
    }
}

fn relaxed() -> std::sync::atomic::Ordering {
    std::sync::atomic::Ordering::Relaxed
}
