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
use crate::wire::{http, socks5};

/// How far a public client's handshake got.
pub(super) enum Step {
    /// Complete: pair it with (or forward it for) this service.
    Done(usize),
    Failed(Failure),
    /// Wait for the socket.
    Wait,
}

/// An HTTP answer that refuses an upgrade.
pub(super) struct Refusal {
    status: u16,
    reason: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

impl From<&http::HttpError> for Refusal {
    fn from(e: &http::HttpError) -> Refusal {
        Refusal {
            status: e.status(),
            reason: e.reason(),
            headers: e.extra_headers(),
        }
    }
}

const NOT_FOUND: Refusal = Refusal {
    status: 404,
    reason: "Not Found",
    headers: &[],
};

const FORBIDDEN: Refusal = Refusal {
    status: 403,
    reason: "Forbidden",
    headers: &[],
};

/// Why a public client's handshake failed.
pub(super) enum Failure {
    /// The upgrade request was refused with this response (the detail goes to the log).
    Http(Refusal, String),
    /// TLS failed, timed out, or the client left.
    Tls(String),
}

impl Worker {
    pub(super) fn on_client(&mut self, group: usize, client: OwnedFd) {
        let first = self.groups[group][0];
        let addr = match sys::prepare_stream(client.as_fd(), self.relay.stream)
            .and_then(|()| sys::peer_addr(client.as_fd()))
        {
            Ok(addr) => addr,
            Err(_) => return, // Gone before we looked at it.
        };
        let local = &self.services[first];
        let ws_timeout = local.ws.as_ref().map(|w| w.handshake_timeout);
        let (leg, stage, timeout) = match &local.tls {
            Some(tls) => match crate::tls::Handshake::server(tls.config.current()) {
                Ok(handshake) => (
                    Leg::tls(client, handshake),
                    HandshakeStage::Tls,
                    tls.handshake_timeout,
                ),
                Err(e) => {
                    tracing::warn!(core = self.id, service = %local.name, error = %e, "cannot start a TLS session");
                    return;
                }
            },
            None => match ws_timeout {
                Some(timeout) => (
                    Leg::plain(client),
                    HandshakeStage::Http(Vec::new()),
                    timeout,
                ),
                None => return self.on_ready_client(first, Leg::plain(client), addr),
            },
        };
        let raw = leg.fd().as_raw_fd();
        let handshake = Box::new(Handshake {
            leg,
            addr,
            group,
            stage,
        });
        let (index, gen) = self.slots.insert(Entry::Handshake(handshake));
        let ud = user_data(TAG_HANDSHAKE, gen, index);
        if self.ring.poll_multi(raw, sys::POLL_TUNNEL, ud).is_err() {
            self.slots.remove(index, gen);
            return;
        }
        self.deadlines
            .push(std::cmp::Reverse((Instant::now() + timeout, index, gen)));
    }

    /// A public client that can be paired (plain, or its TLS handshake done).
    pub(super) fn on_ready_client(&mut self, service: usize, client: Leg, addr: SocketAddr) {
        self.stats.services[service]
            .accepted
            .fetch_add(1, relaxed());
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

    pub(super) fn on_handshake_event(&mut self, index: u32, gen: u32, c: Completion) {
        if c.result < 0 {
            return; // Cancelled: the slot has moved on.
        }
        let Some(Entry::Handshake(h)) = self.slots.get_mut(index, gen) else {
            return;
        };
        let step = match h.stage {
            HandshakeStage::Tls => match h.leg.handshake() {
                Ok(true) if self.services[self.groups[h.group][0]].ws.is_some() => {
                    h.stage = HandshakeStage::Http(Vec::new());
                    self.http_step(index, gen)
                }
                Ok(true) => Step::Done(self.groups[h.group][0]),
                Ok(false) => Step::Wait,
                Err(e) => Step::Failed(Failure::Tls(e.to_string())),
            },
            HandshakeStage::Http(_) => self.http_step(index, gen),
        };
        match step {
            Step::Wait if c.more => {}
            Step::Wait => {
                let Some(Entry::Handshake(h)) = self.slots.get_mut(index, gen) else {
                    return;
                };
                let raw = h.leg.fd().as_raw_fd();
                let ud = user_data(TAG_HANDSHAKE, gen, index);
                if self.ring.poll_multi(raw, sys::POLL_TUNNEL, ud).is_err() {
                    self.end_handshake(
                        index,
                        gen,
                        Step::Failed(Failure::Tls("cannot poll".into())),
                    );
                }
            }
            done => self.end_handshake(index, gen, done),
        }
    }

    /// Reads the upgrade request as far as it has come and answers it: a routed service with
    /// its 101 queued, or an HTTP error response queued before the close.
    fn http_step(&mut self, index: u32, gen: u32) -> Step {
        let Some(Entry::Handshake(h)) = self.slots.get_mut(index, gen) else {
            return Step::Wait;
        };
        let HandshakeStage::Http(buf) = &mut h.stage else {
            return Step::Wait;
        };
        let limits = http::RequestLimits::default();
        let mut chunk = [0u8; 2048];
        loop {
            match http::parse_upgrade_request(buf, &limits) {
                Ok(None) => {}
                Ok(Some((request, used))) => {
                    let members = &self.groups[h.group];
                    let path = request.path.split('?').next().unwrap_or("");
                    let routed = members
                        .iter()
                        .copied()
                        .find(|&m| self.services[m].ws.as_ref().is_some_and(|w| w.path == path));
                    let Some(service) = routed else {
                        let detail = format!("no service at path {path:?}");
                        return Step::Failed(Failure::Http(NOT_FOUND, detail));
                    };
                    let Some(ws) = self.services[service].ws.as_ref() else {
                        return Step::Wait;
                    };
                    if !ws.origins.is_empty()
                        && !request
                            .origin
                            .as_ref()
                            .is_some_and(|o| ws.origins.contains(o))
                    {
                        let origin = request.origin.clone().unwrap_or_default();
                        let detail = format!("origin {origin:?} not allowed");
                        return Step::Failed(Failure::Http(FORBIDDEN, detail));
                    }
                    let protocol = request
                        .protocols
                        .iter()
                        .find(|p| ws.protocols.contains(p))
                        .map(String::as_str);
                    let mut response = Vec::with_capacity(256);
                    http::encode_switching_protocols(&request.key, protocol, &mut response);
                    let leftover = buf.split_off(used);
                    let (max_message, ping) = (ws.max_message, ws.ping);
                    return match h.leg.upgrade_server(response, &leftover, max_message, ping) {
                        Ok(()) => Step::Done(service),
                        Err(e) => Step::Failed(Failure::Tls(e.to_string())),
                    };
                }
                Err(e) => return Step::Failed(Failure::Http((&e).into(), e.to_string())),
            }
            match h.leg.read(&mut chunk) {
                Ok(0) => return Step::Failed(Failure::Tls("closed during the upgrade".into())),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) => return Step::Failed(Failure::Tls(e.to_string())),
            }
        }
    }

    /// Ends a public client's handshake: ready for pairing, or answered, counted and closed.
    pub(super) fn end_handshake(&mut self, index: u32, gen: u32, step: Step) {
        let Some(Entry::Handshake(h)) = self.slots.remove(index, gen) else {
            return;
        };
        let _ = self.ring.cancel(
            user_data(TAG_HANDSHAKE, gen, index),
            user_data(TAG_CANCEL, 0, 0),
        );
        let Handshake {
            mut leg,
            addr,
            group,
            ..
        } = *h;
        let first = self.groups[group][0];
        let failure = match step {
            Step::Done(service) => return self.on_ready_client(service, leg, addr),
            Step::Wait => Failure::Tls("handshake timed out".into()),
            Step::Failed(f) => f,
        };
        let stats = &self.stats.services[first];
        let reason = match failure {
            Failure::Http(r, detail) => {
                stats.ws_rejects.fetch_add(1, relaxed());
                let mut response = Vec::with_capacity(256);
                http::encode_error_response(r.status, r.reason, r.headers, &mut response);
                let _ = leg.write(&response);
                let _ = leg.shutdown_write();
                format!("HTTP {} {}: {detail}", r.status, r.reason)
            }
            Failure::Tls(reason) => {
                stats.tls_failures.fetch_add(1, relaxed());
                reason
            }
        };
        if let Some(also_failed) = self.handshake_log.allow(Instant::now()) {
            tracing::info!(core = self.id, service = %self.services[first].name, client = %addr, also_failed,
                "handshake with a public client failed: {reason}");
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
                    tracing::info!(core = self.id, service = %local.name, client = %waiter.addr, also_refused,
                        "client reset: no prepared connection within the service's timeout");
                }
            }
        }
    }
}
