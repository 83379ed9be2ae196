//! The worker's side of each connection state: what the loop does with the step a state's
//! handler returns (arming and cancelling polls, moving occupants between slots, deadlines,
//! counters, reports). The states themselves, and their handlers, are in their own files
//! (`LIFECYCLE.md`), and the relaying is `relay::Tunnel`'s; this file parses no peer bytes.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::{target_leg, ConnectStep, Connecting, Origin};
use super::entry::{occupant, Entry};
use super::handshake::{Handshake, HandshakeError, Stage, Step};
use super::pool::{Parked, ParkedStep, Waiter};
use super::reverse::{ReverseLeg, ReverseStep};
use super::{relaxed, Key, Msg, ReverseHandoff, Token, Worker};
use crate::door::Cause;
use crate::handoff::{Link, OwnedConn, PublicIndex, ReverseEvent, ReverseIndex, ReverseOutcome};
use crate::leg::Leg;
use crate::metrics::{CloseReason, Reason, RefusalReason, Side, Verdict};
use crate::relay::{Engine, Tunnel, TunnelState};
use crate::runtime::RelayMode;
use crate::service::Upstream;
use crate::sys::{self, Completion};
use crate::wire::{http, proxy};

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
                    origin,
                    leftover,
                    header,
                } = *conn;
                self.start_target(from, target, &upstream, origin, leftover, header);
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
    /// `header` (the upstream's `proxy_protocol`) goes on the raw socket first, then
    /// `leftover` is written to the upstream (inside TLS / WebSocket when those are
    /// configured) before anything relayed.
    pub(super) fn connect_upstream(
        &mut self,
        from: Leg,
        leftover: Vec<u8>,
        upstream: &Upstream,
        origin: Origin,
        header: Option<proxy::Encoded>,
    ) {
        // Verified admission: the connection made while this client's SYN was held.
        let connected = match held_upstream(upstream, &from) {
            Some(fd) => Ok((fd, true)),
            None => sys::connect_nonblocking(upstream.addr),
        };
        match connected {
            Ok((target, true)) => {
                self.start_target(from, target, upstream, origin, leftover, header)
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
                    header,
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

/// The upstream connection held for `from`'s client (`admission = "verified"`), if one is.
fn held_upstream(upstream: &Upstream, from: &Leg) -> Option<OwnedFd> {
    let held = upstream.held.as_ref()?;
    held.take(sys::peer_addr(from.fd()).ok()?)
}

impl Worker {
    /// The back-end accepted: its PROXY header (if any) goes on the raw socket, ahead of a TLS
    /// ClientHello or a WebSocket upgrade, then the tunnel starts.
    fn start_target(
        &mut self,
        from: Leg,
        target: OwnedFd,
        upstream: &Upstream,
        origin: Origin,
        leftover: Vec<u8>,
        header: Option<proxy::Encoded>,
    ) {
        if let Some(header) = header {
            // A socket that has just connected has an empty send buffer: it takes the header
            // (at most 104 bytes) whole, or the connection is already broken.
            match sys::send(target.as_fd(), header.as_bytes()) {
                Ok(n) if n == header.as_bytes().len() => {}
                Ok(_) => return self.upstream_failed(from, origin, None),
                Err(e) => return self.upstream_failed(from, origin, e.raw_os_error()),
            }
        }
        let target = target_leg(target, upstream);
        let idle = match origin {
            Origin::Forward(service) => self.service(service).idle_timeout,
            Origin::Reverse(_) => None,
        };
        self.start_tunnel(from, target, leftover, idle);
    }
}

/// The PROXY header for a back-end connection: `source` is the public client, `destination`
/// the public address it reached; either unknown (a host name in a BIND reply, a failed
/// getsockname) gives `UNKNOWN` / `LOCAL`.
fn proxy_header(
    version: proxy::Version,
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
) -> proxy::Encoded {
    let addresses = match (source, destination) {
        (Some(source), Some(destination)) => proxy::Addresses::Tcp {
            source,
            destination,
        },
        _ => proxy::Addresses::Unknown,
    };
    proxy::Encoded::new(version, addresses)
}

// Ready clients, waiters and parked prepared connections (`pool.rs`).
impl Worker {
    /// A public client that can be paired (plain, or its handshake done).
    pub(super) fn on_ready_client(&mut self, service: PublicIndex, client: Leg, addr: SocketAddr) {
        self.service_stats(service).accepted.fetch_add(1, relaxed());
        self.stats.admission(service, Verdict::Accept);
        if let Some(upstream) = self.service(service).upstream.clone() {
            // PROXY: `addr` is the client (a balancer's PROXY source included); the
            // destination is the address the client's socket reached here.
            let header = upstream.proxy_protocol.map(|version| {
                proxy_header(version, Some(addr), sys::local_addr(client.fd()).ok())
            });
            let origin = Origin::Forward(service);
            return self.connect_upstream(client, Vec::new(), &upstream, origin, header);
        }
        if let Some(prepared) = self.pop_prepared(service) {
            self.start_paired(client, addr, prepared);
            return;
        }
        let all_stats = Arc::clone(&self.stats);
        let stats = &all_stats.services[service.0];
        stats.waited.fetch_add(1, relaxed());
        stats.waiting.fetch_add(1, relaxed());
        let deadline = Instant::now() + self.service(service).timeout;
        self.services[service.0].waiting.push_back(Waiter {
            client,
            addr,
            deadline,
        });
        self.ask_for_prepared(service);
    }

    /// Asks the worker holding the most prepared connections of `service` for one.
    fn ask_for_prepared(&mut self, service: PublicIndex) {
        let richest = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.id)
            .map(|(i, p)| (i, p.stats.services[service.0].prepared.load(relaxed())))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n);
        if let Some((peer, _)) = richest {
            let steal = Msg::Steal {
                service,
                to: self.id,
            };
            // A full queue: the client waits for the next hand-off or its timeout instead.
            self.peers[peer].send(steal).ok();
        }
    }

    pub(super) fn give_prepared(&mut self, service: PublicIndex, to: usize) {
        let Some(parked) = self.pop_prepared(service) else {
            return;
        };
        self.service_stats(service).stolen.fetch_add(1, relaxed());
        let (fd, tls) = parked.leg.into_parts();
        let conn = OwnedConn {
            stream: TcpStream::from(fd),
            leftover: Vec::new(),
            tls,
        };
        if let Err(Msg::Prepared { conn, .. }) =
            self.peers[to].send(Msg::Prepared { service, conn })
        {
            self.park(service, conn);
        }
    }

    /// Takes the oldest live prepared connection of `service`, stopping its poll.
    fn pop_prepared(&mut self, service: PublicIndex) -> Option<Parked> {
        while let Some(key) = self.services[service.0].pool.pop_front() {
            if let Some(Entry::Parked(parked)) = self.slots.remove(key) {
                self.board.left(service, Cause::Used);
                self.service_stats(service).prepared.fetch_sub(1, relaxed());
                self.disarm(Token::Parked(key)).ok();
                return Some(parked);
            }
        }
        None
    }

    pub(super) fn park(&mut self, service: PublicIndex, conn: OwnedConn) {
        if !conn.leftover.is_empty() {
            // The internal side spoke before it was paired: not a prepared connection.
            self.service_stats(service)
                .prepared_lost
                .fetch_add(1, relaxed());
            return;
        }
        let fd = OwnedFd::from(conn.stream);
        if sys::prepare_stream(fd.as_fd(), self.relay.stream).is_err() {
            return;
        }
        let parked = Parked {
            leg: Leg::from_parts(fd, conn.tls),
            service,
        };
        if let Some(waiter) = self.services[service.0].waiting.pop_front() {
            // Parked and used at once: the service is up, its pool still empty.
            self.door_parked(service);
            self.board.left(service, Cause::Used);
            self.service_stats(service).waiting.fetch_sub(1, relaxed());
            self.start_paired(waiter.client, waiter.addr, parked);
            return;
        }
        let fd = parked.leg.fd().as_raw_fd();
        let key = self.slots.insert(Entry::Parked(parked));
        if self.arm(fd, sys::POLL_PARKED, Token::Parked(key)).is_err() {
            self.slots.remove(key);
            return;
        }
        self.services[service.0].pool.push_back(key);
        // Before the count is published: whoever sees it can connect.
        self.door_parked(service);
        self.service_stats(service).prepared.fetch_add(1, relaxed());
    }

    /// A parked connection's poll fired.
    pub(super) fn on_parked_event(&mut self, key: Key, c: Completion) -> std::io::Result<()> {
        match Parked::on_event(&c) {
            ParkedStep::Rearm => {
                // Cancelled (taken for a tunnel) or failed: re-arm only if still parked.
                if let Some(Entry::Parked(parked)) = self.slots.get_mut(key) {
                    let fd = parked.leg.fd().as_raw_fd();
                    self.arm(fd, sys::POLL_PARKED, Token::Parked(key))?;
                }
            }
            ParkedStep::Lost => {
                let Some(Entry::Parked(parked)) = self.slots.remove(key) else {
                    return Ok(());
                };
                self.board.left(parked.service, Cause::Lost);
                let stats = self.service_stats(parked.service);
                stats.prepared.fetch_sub(1, relaxed());
                stats.prepared_lost.fetch_add(1, relaxed());
                if sys::readable_bytes(parked.leg.fd()).unwrap_or(0) > 0 {
                    sys::set_reset_on_close(parked.leg.fd());
                }
                if c.more {
                    self.disarm(Token::Parked(key))?;
                }
            }
        }
        Ok(())
    }

    /// Pairs a public client with a prepared connection: the second BIND reply (BND = the
    /// client's address) goes down the prepared connection ahead of the client's bytes.
    fn start_paired(&mut self, client: Leg, addr: SocketAddr, prepared: Parked) {
        let reply = prepared.pair(addr);
        let idle = self.service(prepared.service).idle_timeout;
        self.start_tunnel(client, prepared.leg, reply, idle);
    }

    /// Resets clients that waited their service's whole timeout: "connection reset", never a
    /// connection left hanging.
    pub(super) fn expire_waiters(&mut self, now: Instant) {
        for (i, local) in self.services.iter_mut().enumerate() {
            while local.waiting.front().is_some_and(|w| w.deadline <= now) {
                let Some(waiter) = local.waiting.pop_front() else {
                    break;
                };
                sys::set_reset_on_close(waiter.client.fd());
                self.stats.services[i].waiting.fetch_sub(1, relaxed());
                self.stats.refused(i, RefusalReason::NoPrepared);
                if !self.board.is_up(PublicIndex(i)) {
                    // Its listener is shared with a service that is up: it stayed open.
                    self.stats.admission(PublicIndex(i), Verdict::Down);
                }
                if let Some(also_refused) = self.refusal_log.allow(now) {
                    tracing::info!(core = self.id, service = %local.name, client = %waiter.addr, also_refused,
                        "client reset: no prepared connection within the service's timeout");
                }
            }
        }
    }
}

// Tunnels (`relay::Tunnel`): building one from two legs (engine choice, polls on both legs, the
// first pump), handing each leg's readiness to the relay, and closing it with the reason the
// relay gave (FIN after a clean finish, RST otherwise; pipes and buffers go back to the pool).

/// How long a peer in a plain listener's `accept_proxy` has to send its PROXY header (TLS and
/// WebSocket listeners use their handshake timeout). A balancer sends it with its first
/// segment; 5 s covers a lost segment's retransmissions without holding a slot for long.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes read and dropped from a finished tunnel's leg before it is closed.
const DISCARD_ON_CLOSE: usize = 64 << 10;
/// Most pipes (and buffers) a worker keeps for reuse.
const POOL_KEEP: usize = 256;

impl Worker {
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

    /// Starts relaying between `client` and `target`; `to_target` is written to the target
    /// before any relayed byte (a second BIND reply, bytes read past a handshake); `idle` is
    /// the service's `idle_timeout`.
    pub(super) fn start_tunnel(
        &mut self,
        client: Leg,
        target: Leg,
        to_target: Vec<u8>,
        idle: Option<Duration>,
    ) {
        self.open_tunnel([client, target], [to_target, Vec::new()], false, idle);
    }

    /// Relays a link ([`crate::Dataplane::link`]): `front` is the client leg, `back` the
    /// target leg. A WebSocket front gets a server layer whose upgrade is already answered
    /// (its leftover is the first frames); a plain front's leftover goes to the back first,
    /// and the back's leftover goes to the front first.
    pub(super) fn link(&mut self, link: Link) {
        let Link { front, ws, back } = link;
        let mut client = Leg::from_parts(OwnedFd::from(front.stream), front.tls);
        let to_back = match ws {
            Some(ws) => {
                client.upgraded_server(front.leftover, ws.max_message, ws.ping);
                Vec::new()
            }
            None => front.leftover,
        };
        let target = Leg::from_parts(OwnedFd::from(back.stream), back.tls);
        crate::dp_debug!(core = self.id, websocket = ws.is_some(), "link: relaying");
        self.open_tunnel([client, target], [to_back, back.leftover], true, None);
    }

    /// Puts a tunnel in a slot, polls both legs, and pumps the prefixes (and anything the legs
    /// already hold) at once. `prefixes` as in [`Tunnel::new`]; `linked` counts it as a link;
    /// `idle` closes it after that long without a byte either way.
    fn open_tunnel(
        &mut self,
        legs: [Leg; 2],
        prefixes: [Vec<u8>; 2],
        linked: bool,
        idle: Option<Duration>,
    ) {
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
        let mut tunnel = Box::new(Tunnel::new(legs, prefixes, engines));
        if linked {
            tunnel.set_linked();
        }
        if let Some(after) = idle {
            tunnel.set_idle_timeout(after, Instant::now());
        }
        let key = self.slots.insert(Entry::Tunnel(tunnel));
        self.stats.tunnel_opened();
        if linked {
            self.stats.link_opened();
        }
        for side in Side::ALL {
            let Some(tunnel) = occupant!(self.slots, key, Tunnel) else {
                return;
            };
            let fd = tunnel.leg(side).as_raw_fd();
            if let Err(e) = self.arm(fd, sys::POLL_TUNNEL, Token::Leg(key, side)) {
                self.close_tunnel(key, CloseReason::failed(Reason::Poll, side, &e));
                return;
            }
        }
        if let Some(tunnel) = occupant!(self.slots, key, Tunnel) {
            if let Ok(Some(at)) = tunnel.timers(Instant::now()) {
                self.add_deadline(at, key);
            }
        }
        // Deliver the prefixes (and anything already buffered) now rather than one event later.
        let stats = Arc::clone(&self.stats);
        if let Some(tunnel) = occupant!(self.slots, key, Tunnel) {
            match tunnel.on_ready(Side::Client, None, &stats) {
                Ok(TunnelState::Open) => {}
                Ok(TunnelState::Finished) => self.close_tunnel(key, CloseReason::COMPLETED),
                Err(reason) => self.close_tunnel(key, reason),
            }
        }
    }

    pub(super) fn on_leg_event(
        &mut self,
        key: Key,
        side: Side,
        c: Completion,
    ) -> std::io::Result<()> {
        let stats = Arc::clone(&self.stats);
        let Some(tunnel) = occupant!(self.slots, key, Tunnel) else {
            return Ok(());
        };
        let revents = (c.result >= 0).then_some(c.result as u32);
        match tunnel.on_ready(side, revents, &stats) {
            Ok(TunnelState::Finished) => self.close_tunnel(key, CloseReason::COMPLETED),
            Err(reason) => self.close_tunnel(key, reason),
            Ok(TunnelState::Open) if !c.more => {
                let fd = tunnel.leg(side).as_raw_fd();
                self.arm(fd, sys::POLL_TUNNEL, Token::Leg(key, side))?;
            }
            Ok(TunnelState::Open) => {}
        }
        Ok(())
    }

    pub(super) fn close_tunnel(&mut self, key: Key, reason: CloseReason) {
        let Some(Entry::Tunnel(tunnel)) = self.slots.remove(key) else {
            return;
        };
        for side in Side::ALL {
            // Best effort: a poll that already ended has nothing to cancel.
            self.disarm(Token::Leg(key, side)).ok();
        }
        // Let the kernel drop the polls' file references now, so the close below is final.
        self.ring.submit().ok();
        if tunnel.is_linked() {
            self.stats.link_closed();
        }
        let (legs, engines) = tunnel.into_parts();
        for leg in &legs {
            if reason.reason == Reason::Completed {
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
}

// Reverse legs of the internal side (`reverse.rs`).
impl Worker {
    pub(super) fn emit(&self, service: ReverseIndex, outcome: ReverseOutcome) {
        if let Some(events) = &self.reverse_events {
            events(ReverseEvent { service, outcome });
        }
    }

    /// Internal side: parks a reverse leg until the DMZ pairs it (second BIND reply).
    pub(super) fn park_reverse(&mut self, handoff: ReverseHandoff) {
        let ReverseHandoff {
            service,
            conn,
            upstream,
            public,
        } = handoff;
        let fd = OwnedFd::from(conn.stream);
        let tls = conn.tls;
        // The control thread's buffer is usually empty: free it there and start with none, so
        // a long-parked leg pins no memory of the control thread's allocator arena.
        let buf = if conn.leftover.is_empty() {
            Vec::new()
        } else {
            conn.leftover
        };
        let leg = Box::new(ReverseLeg {
            leg: Leg::from_parts(fd, tls),
            service,
            upstream,
            public,
            buf,
            parked_at: Instant::now(),
        });
        let lost_at_once = ReverseOutcome::Lost {
            parked: Duration::ZERO,
        };
        if sys::prepare_stream(leg.leg.fd(), self.relay.stream).is_err() {
            return self.emit(service, lost_at_once);
        }
        // The second reply may have arrived in the same read as the first.
        match leg.parse() {
            ReverseStep::Wait => {}
            step => return self.end_reverse(*leg, step),
        }
        let fd = leg.leg.fd().as_raw_fd();
        let tls = leg.leg.has_buffered_input();
        let key = self.slots.insert(Entry::Reverse(leg));
        if tls {
            // Records the control thread read but did not decrypt may already hold the second
            // reply: no socket event would announce them, so look now.
            let now = Completion {
                user_data: Token::Reverse(key).user_data(),
                result: sys::POLLIN as i32,
                more: true,
            };
            if self.on_reverse_event(key, now).is_err() {
                return;
            }
            if occupant!(self.slots, key, Reverse).is_none() {
                return; // Already paired or lost.
            }
        }
        if self.arm(fd, sys::POLL_PARKED, Token::Reverse(key)).is_err() {
            self.slots.remove(key);
            self.emit(service, lost_at_once);
        }
    }

    pub(super) fn on_reverse_event(&mut self, key: Key, c: Completion) -> std::io::Result<()> {
        let Some(leg) = occupant!(self.slots, key, Reverse) else {
            return Ok(());
        };
        let step = if c.result >= 0 {
            leg.on_readable()
        } else if c.result == -libc::ECANCELED {
            leg.parse()
        } else {
            ReverseStep::Closed
        };
        if let ReverseStep::Wait = step {
            if !c.more {
                let fd = leg.leg.fd().as_raw_fd();
                self.arm(fd, sys::POLL_PARKED, Token::Reverse(key))?;
            }
            return Ok(());
        }
        let Some(Entry::Reverse(leg)) = self.slots.remove(key) else {
            return Ok(());
        };
        self.disarm(Token::Reverse(key))?;
        self.end_reverse(*leg, step);
        Ok(())
    }

    /// Closes every reverse leg of `service` parked here (each reported
    /// [`ReverseOutcome::Released`]): FIN, after a TLS leg's close_notify, so the DMZ sees its
    /// prepared connection lost. Legs already paired are not touched.
    pub(super) fn release_reverse(&mut self, service: ReverseIndex) {
        let mut released = Vec::new();
        for key in self.slots.keys() {
            if !matches!(occupant!(self.slots, key, Reverse), Some(leg) if leg.service == service) {
                continue;
            }
            if let Some(Entry::Reverse(leg)) = self.slots.remove(key) {
                self.disarm(Token::Reverse(key)).ok();
                released.push(leg);
            }
        }
        if released.is_empty() {
            return;
        }
        // Let the kernel drop the polls' file references now, so the close below is final.
        self.ring.submit().ok();
        for mut leg in released {
            // Best effort: a peer already gone gets the close anyway.
            leg.leg.shutdown_write().ok();
            drop(leg);
            self.emit(service, ReverseOutcome::Released);
        }
    }

    /// The parked leg's session ended: paired (connect to the back-end) or lost.
    fn end_reverse(&mut self, mut leg: ReverseLeg, step: ReverseStep) {
        let service = leg.service;
        let (used, client) = match step {
            ReverseStep::Paired { paired, used } => {
                crate::dp_debug!(core = self.id, service = service.0, client = %paired.bind_host, "paired; connecting to the back-end");
                (used, paired.bind_addr())
            }
            ReverseStep::Refused(error) => {
                crate::dp_debug!(core = self.id, service = service.0, %error, "parked leg lost");
                sys::set_reset_on_close(leg.leg.fd());
                let parked = leg.parked_at.elapsed();
                return self.emit(service, ReverseOutcome::Lost { parked });
            }
            ReverseStep::Closed | ReverseStep::Wait => {
                let parked = leg.parked_at.elapsed();
                return self.emit(service, ReverseOutcome::Lost { parked });
            }
        };
        self.emit(service, ReverseOutcome::Paired);
        leg.buf.drain(..used);
        let leftover = std::mem::take(&mut leg.buf);
        let ReverseLeg {
            leg: dmz,
            upstream,
            public,
            ..
        } = leg;
        // PROXY: the client as the DMZ saw it (second reply), the DMZ's public address (first).
        let header = upstream
            .proxy_protocol
            .map(|version| proxy_header(version, client, public));
        let origin = Origin::Reverse(service);
        self.connect_upstream(dmz, leftover, &upstream, origin, header);
    }
}

// Public clients' handshakes (`handshake.rs`).
impl Worker {
    /// A client accepted on listener group `group`: ready at once (plain service), or its
    /// handshake starts.
    pub(super) fn on_client(&mut self, group: usize, client: OwnedFd) {
        let first = self.groups[group][0];
        let addr = match sys::prepare_stream(client.as_fd(), self.relay.stream)
            .and_then(|()| sys::peer_addr(client.as_fd()))
        {
            Ok(addr) => addr,
            Err(_) => return, // Gone before we looked at it.
        };
        let local = self.service(first);
        let ws_timeout = local.ws.as_ref().map(|w| w.handshake_timeout);
        if crate::admission::listed(&local.accept_proxy, addr.ip()) {
            // A balancer: its PROXY header first, within the listener's handshake timeout; its
            // client is judged by the header's address when the handshake ends.
            let timeout = local.tls.as_ref().map(|t| t.handshake_timeout);
            let timeout = timeout.or(ws_timeout).unwrap_or(PROXY_HEADER_TIMEOUT);
            let leg = Leg::plain(client);
            return self.start_handshake(leg, addr, group, Stage::Proxy, timeout);
        }
        let Ok(held) = self.admit_source(first, addr, false, client.as_fd()) else {
            return; // Refused: dropping `client` resets it.
        };
        let local = self.service(first);
        let (mut leg, stage, timeout) = match &local.tls {
            Some(tls) => match crate::tls::Handshake::server(tls.config.current()) {
                Ok(handshake) => (
                    Leg::tls(client, handshake),
                    Stage::Tls,
                    tls.handshake_timeout,
                ),
                Err(e) => {
                    tracing::warn!(core = self.id, service = %local.name, error = %e, "cannot start a TLS session");
                    return;
                }
            },
            None => match ws_timeout {
                Some(timeout) => (Leg::plain(client), Stage::Http(Vec::new()), timeout),
                None => {
                    let mut leg = Leg::plain(client);
                    leg.hold(held);
                    return self.on_ready_client(first, leg, addr);
                }
            },
        };
        leg.hold(held);
        self.start_handshake(leg, addr, group, stage, timeout);
    }

    /// Puts a public client's handshake in a slot, watches its socket and sets its deadline.
    fn start_handshake(
        &mut self,
        leg: Leg,
        addr: SocketAddr,
        group: usize,
        stage: Stage,
        timeout: Duration,
    ) {
        let fd = leg.fd().as_raw_fd();
        let handshake = Box::new(Handshake {
            leg,
            addr,
            group,
            via_proxy: matches!(stage, Stage::Proxy),
            stage,
        });
        let key = self.slots.insert(Entry::Handshake(handshake));
        if self
            .arm(fd, sys::POLL_TUNNEL, Token::Handshake(key))
            .is_err()
        {
            self.slots.remove(key);
            return;
        }
        self.add_deadline(Instant::now() + timeout, key);
    }

    pub(super) fn on_handshake_event(&mut self, key: Key, c: Completion) {
        if c.result < 0 {
            return; // Cancelled: the slot has moved on.
        }
        let Some(h) = occupant!(self.slots, key, Handshake) else {
            return;
        };
        let hangup =
            c.result as u32 & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32 != 0;
        match h.on_readable(&self.services, &self.groups, hangup) {
            Step::Wait if c.more => {}
            Step::Wait => {
                let fd = h.leg.fd().as_raw_fd();
                if let Err(e) = self.arm(fd, sys::POLL_TUNNEL, Token::Handshake(key)) {
                    self.end_handshake(key, Err(HandshakeError::Poll(e)));
                }
            }
            Step::Done(service) => self.end_handshake(key, Ok(service)),
            Step::Failed(e) => self.end_handshake(key, Err(e)),
        }
    }

    /// The handshake's deadline passed.
    pub(super) fn handshake_timed_out(&mut self, key: Key) {
        self.end_handshake(key, Err(HandshakeError::TimedOut));
    }

    /// Ends a public client's handshake: ready for pairing, or answered, counted and closed.
    fn end_handshake(&mut self, key: Key, result: Result<PublicIndex, HandshakeError>) {
        let Some(Entry::Handshake(h)) = self.slots.remove(key) else {
            return;
        };
        self.disarm(Token::Handshake(key)).ok();
        let Handshake {
            mut leg,
            addr,
            group,
            stage,
            via_proxy,
        } = *h;
        let first = self.groups[group][0];
        let error = match result {
            Ok(service) => {
                // A balancer's client: judged now, by the address its PROXY header named (after
                // the TLS handshake and the upgrade, when the listener has them).
                if via_proxy {
                    match self.admit_source(first, addr, true, leg.fd()) {
                        Ok(held) => leg.hold(held),
                        Err(()) => return, // Refused: dropping `leg` resets it.
                    }
                }
                return self.on_ready_client(service, leg, addr);
            }
            Err(e) => e,
        };
        let stats = self.service_stats(first);
        if let Stage::Proxy = stage {
            stats.proxy_header_failures.fetch_add(1, relaxed());
            sys::set_reset_on_close(leg.fd());
            if let Some(also_failed) = self.handshake_log.allow(Instant::now()) {
                tracing::info!(core = self.id, service = %self.service(first).name, peer = %addr, also_failed,
                    "connection from an accept_proxy source reset: {error}");
            }
            return;
        }
        match &error {
            HandshakeError::Refused(r) => {
                stats.ws_rejects.fetch_add(1, relaxed());
                let mut response = Vec::with_capacity(256);
                http::encode_error_response(r.status(), r.reason(), r.headers(), &mut response);
                // Best effort: the client may be gone already; it is closed either way.
                leg.write(&response).ok();
                leg.shutdown_write().ok();
            }
            _ => {
                stats.tls_failures.fetch_add(1, relaxed());
            }
        }
        if let Some(also_failed) = self.handshake_log.allow(Instant::now()) {
            tracing::info!(core = self.id, service = %self.service(first).name, client = %addr, also_failed,
                "handshake with a public client failed: {error}");
        }
    }
}
