//! The DMZ side's pairing: prepared connections parked per service ([`Parked`], oldest first),
//! public clients that are ready (plain, or their handshake done) and the ones waiting for a
//! prepared connection ([`Waiter`], reset when the service's timeout passes), lending prepared
//! connections to other workers, and the pairing itself: the second BIND reply (from the
//! sans-IO BIND server's [`bind::server::Parked`]) goes down the prepared connection ahead of
//! the client's bytes.
//!
//! It relays nothing itself: a pair becomes a tunnel through [`Worker::start_tunnel`].

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::connect::Origin;
use super::{relaxed, Entry, Key, Msg, Token, Worker};
use crate::handoff::{OwnedConn, PublicIndex};
use crate::leg::Leg;
use crate::metrics::RefusalReason;
use crate::sys::{self, Completion};
use crate::wire::bind;

/// A prepared connection parked at the DMZ side: the first BIND reply went out (on the
/// control thread); all that is left of its session is the second reply.
pub(super) struct Parked {
    pub(super) leg: Leg,
    pub(super) service: PublicIndex,
}

/// What a parked connection's poll event means.
enum ParkedStep {
    /// The poll ended (cancelled, failed): watch it again if it is still parked.
    Rearm,
    /// It became readable or closed: either way it can no longer serve.
    Lost,
}

impl Parked {
    fn on_event(c: &Completion) -> ParkedStep {
        if c.result < 0 {
            ParkedStep::Rearm
        } else {
            ParkedStep::Lost
        }
    }

    /// The second BIND reply for the public client at `client`.
    fn pair(&self, client: SocketAddr) -> Vec<u8> {
        bind::server::Parked.pair(client)
    }
}

/// A ready public client with no prepared connection here yet.
pub(super) struct Waiter {
    pub(super) client: Leg,
    pub(super) addr: SocketAddr,
    pub(super) deadline: Instant,
}

impl Worker {
    /// A public client that can be paired (plain, or its handshake done).
    pub(super) fn on_ready_client(&mut self, service: PublicIndex, client: Leg, addr: SocketAddr) {
        self.service_stats(service).accepted.fetch_add(1, relaxed());
        if let Some(upstream) = self.service(service).upstream.clone() {
            return self.connect_upstream(client, Vec::new(), &upstream, Origin::Forward(service));
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
        self.start_tunnel(client, prepared.leg, reply);
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
                if let Some(also_refused) = self.refusal_log.allow(now) {
                    tracing::info!(core = self.id, service = %local.name, client = %waiter.addr, also_refused,
                        "client reset: no prepared connection within the service's timeout");
                }
            }
        }
    }
}
