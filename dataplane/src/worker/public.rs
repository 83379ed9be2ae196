//! The DMZ side of a worker: public clients (plain, or TLS handshakes done here), parked
//! prepared connections, pairing, waiting clients and their timeout reset, and lending prepared
//! connections to other workers.
//!
//! It relays nothing itself: a pair becomes a tunnel through [`Worker::start_tunnel`].

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::wire::socks5;

impl Worker {
    pub(super) fn on_client(&mut self, service: usize, client: OwnedFd) {
        let all_stats = Arc::clone(&self.stats);
        let stats = &all_stats.services[service];
        stats.accepted.fetch_add(1, relaxed());
        let addr = match sys::prepare_stream(client.as_fd(), self.relay.stream)
            .and_then(|()| sys::peer_addr(client.as_fd()))
        {
            Ok(addr) => addr,
            Err(_) => return, // Gone before we looked at it.
        };
        match &self.services[service].tls {
            Some(tls) => match rustls::ServerConnection::new(Arc::clone(&tls.config)) {
                Ok(conn) => {
                    let leg = Leg::tls(client, Box::new(conn.into()));
                    let deadline = Instant::now() + tls.handshake_timeout;
                    self.start_handshake(service, leg, addr, deadline);
                }
                Err(e) => {
                    tracing::warn!(core = self.id, service, error = %e, "cannot start a TLS session");
                }
            },
            None => self.on_ready_client(service, Leg::plain(client), addr),
        }
    }

    /// A public client that can be paired (plain, or its TLS handshake done).
    pub(super) fn on_ready_client(&mut self, service: usize, client: Leg, addr: SocketAddr) {
        if let Some(upstream) = self.services[service].upstream.clone() {
            return self.connect_upstream(client, Vec::new(), &upstream, Origin::Forward(service));
        }
        let all_stats = Arc::clone(&self.stats);
        let stats = &all_stats.services[service];
        if let Some(prepared) = self.pop_prepared(service) {
            self.start_paired(client, addr, prepared);
            return;
        }
        stats.waited.fetch_add(1, relaxed());
        stats.waiting.fetch_add(1, relaxed());
        let deadline = Instant::now() + self.services[service].timeout;
        self.services[service].waiting.push_back(Waiter {
            client,
            addr,
            deadline,
        });
        self.ask_for_prepared(service);
    }

    /// Asks the worker holding the most prepared connections of `service` for one.
    pub(super) fn ask_for_prepared(&mut self, service: usize) {
        let richest = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.id)
            .map(|(i, p)| (i, p.stats.services[service].prepared.load(relaxed())))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n);
        if let Some((peer, _)) = richest {
            let _ = self.peers[peer].send(Msg::Steal {
                service,
                to: self.id,
            });
        }
    }

    pub(super) fn give_prepared(&mut self, service: usize, to: usize) {
        let Some(leg) = self.pop_prepared(service) else {
            return;
        };
        self.stats.services[service].stolen.fetch_add(1, relaxed());
        let (fd, tls) = leg.into_parts();
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
    pub(super) fn pop_prepared(&mut self, service: usize) -> Option<Leg> {
        while let Some((index, gen)) = self.services[service].pool.pop_front() {
            if let Some(Entry::Parked { leg, .. }) = self.slots.remove(index, gen) {
                self.stats.services[service]
                    .prepared
                    .fetch_sub(1, relaxed());
                let _ = self.ring.cancel(
                    user_data(TAG_PARKED, gen, index),
                    user_data(TAG_CANCEL, 0, 0),
                );
                return Some(leg);
            }
        }
        None
    }

    pub(super) fn park(&mut self, service: usize, conn: OwnedConn) {
        if !conn.leftover.is_empty() {
            // The internal side spoke before it was paired: not a prepared connection.
            self.stats.services[service]
                .prepared_lost
                .fetch_add(1, relaxed());
            return;
        }
        let fd = OwnedFd::from(conn.stream);
        if sys::prepare_stream(fd.as_fd(), self.relay.stream).is_err() {
            return;
        }
        let leg = Leg::from_parts(fd, conn.tls);
        if let Some(waiter) = self.services[service].waiting.pop_front() {
            self.stats.services[service].waiting.fetch_sub(1, relaxed());
            self.start_paired(waiter.client, waiter.addr, leg);
            return;
        }
        let raw = leg.fd().as_raw_fd();
        let (index, gen) = self.slots.insert(Entry::Parked { leg, service });
        if self
            .ring
            .poll_multi(raw, sys::POLL_PARKED, user_data(TAG_PARKED, gen, index))
            .is_err()
        {
            self.slots.remove(index, gen);
            return;
        }
        self.services[service].pool.push_back((index, gen));
        self.stats.services[service]
            .prepared
            .fetch_add(1, relaxed());
    }

    /// A parked connection became readable or closed: either way it can no longer serve.
    pub(super) fn on_parked_event(
        &mut self,
        index: u32,
        gen: u32,
        c: Completion,
    ) -> std::io::Result<()> {
        if c.result < 0 {
            // Cancelled (taken for a tunnel) or failed: re-arm only if still parked.
            if let Some(Entry::Parked { leg, .. }) = self.slots.get_mut(index, gen) {
                let raw = leg.fd().as_raw_fd();
                self.ring
                    .poll_multi(raw, sys::POLL_PARKED, user_data(TAG_PARKED, gen, index))?;
            }
            return Ok(());
        }
        if let Some(Entry::Parked { leg, service }) = self.slots.remove(index, gen) {
            let stats = &self.stats.services[service];
            stats.prepared.fetch_sub(1, relaxed());
            stats.prepared_lost.fetch_add(1, relaxed());
            if sys::readable_bytes(leg.fd()).unwrap_or(0) > 0 {
                sys::set_reset_on_close(leg.fd());
            }
            if c.more {
                self.ring.cancel(
                    user_data(TAG_PARKED, gen, index),
                    user_data(TAG_CANCEL, 0, 0),
                )?;
            }
            drop(leg);
        }
        Ok(())
    }

    /// Pairs a public client with a prepared connection: the second BIND reply (BND = the
    /// client's address) goes down the prepared connection ahead of the client's bytes.
    pub(super) fn start_paired(&mut self, client: Leg, addr: SocketAddr, prepared: Leg) {
        let mut reply = Vec::with_capacity(22);
        socks5::encode_reply(socks5::rep::SUCCEEDED, addr, &mut reply);
        self.start_tunnel([client, prepared], [reply, Vec::new()]);
    }

    /// Starts a public client's TLS handshake; it is paired once the handshake completes.
    pub(super) fn start_handshake(
        &mut self,
        service: usize,
        leg: Leg,
        addr: SocketAddr,
        deadline: Instant,
    ) {
        let raw = leg.fd().as_raw_fd();
        let handshake = Box::new(Handshake { leg, addr, service });
        let (index, gen) = self.slots.insert(Entry::Handshake(handshake));
        let ud = user_data(TAG_HANDSHAKE, gen, index);
        if self.ring.poll_multi(raw, sys::POLL_TUNNEL, ud).is_err() {
            self.slots.remove(index, gen);
            return;
        }
        self.deadlines
            .push(std::cmp::Reverse((deadline, index, gen)));
    }

    pub(super) fn on_handshake_event(&mut self, index: u32, gen: u32, c: Completion) {
        if c.result < 0 {
            return; // Cancelled: the slot has moved on.
        }
        let Some(Entry::Handshake(h)) = self.slots.get_mut(index, gen) else {
            return;
        };
        let result = h.leg.handshake();
        match result {
            Ok(false) if c.more => {}
            Ok(false) => {
                let raw = h.leg.fd().as_raw_fd();
                let ud = user_data(TAG_HANDSHAKE, gen, index);
                if self.ring.poll_multi(raw, sys::POLL_TUNNEL, ud).is_err() {
                    self.end_handshake(index, gen, Err("cannot poll".into()));
                }
            }
            Ok(true) => self.end_handshake(index, gen, Ok(())),
            Err(e) => self.end_handshake(index, gen, Err(e.to_string())),
        }
    }

    /// Ends a public TLS handshake: pair the client, or count and log why it failed.
    pub(super) fn end_handshake(&mut self, index: u32, gen: u32, result: Result<(), String>) {
        let Some(Entry::Handshake(h)) = self.slots.remove(index, gen) else {
            return;
        };
        let _ = self.ring.cancel(
            user_data(TAG_HANDSHAKE, gen, index),
            user_data(TAG_CANCEL, 0, 0),
        );
        let Handshake { leg, addr, service } = *h;
        match result {
            Ok(()) => self.on_ready_client(service, leg, addr),
            Err(reason) => {
                self.stats.services[service]
                    .tls_failures
                    .fetch_add(1, relaxed());
                if let Some(also_failed) = self.handshake_log.allow(Instant::now()) {
                    tracing::info!(core = self.id, service, client = %addr, also_failed,
                        "TLS handshake with a public client failed: {reason}");
                }
            }
        }
    }

    /// Resets clients that waited their service's whole timeout: "connection reset", never a
    /// connection left hanging.
    pub(super) fn expire_waiters(&mut self, now: Instant) {
        for (service, local) in self.services.iter_mut().enumerate() {
            while local.waiting.front().is_some_and(|w| w.deadline <= now) {
                let Some(waiter) = local.waiting.pop_front() else {
                    break;
                };
                sys::set_reset_on_close(waiter.client.fd());
                self.stats.services[service].waiting.fetch_sub(1, relaxed());
                self.stats.refused(service, RefusalReason::NoPrepared);
                if let Some(also_refused) = self.refusal_log.allow(now) {
                    tracing::info!(core = self.id, service, client = %waiter.addr, also_refused,
                        "client reset: no prepared connection within the service's timeout");
                }
            }
        }
    }
}
