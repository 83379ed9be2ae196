//! The process-wide sections: `[gateway]` (workers, admin endpoint, relay and ring settings)
//! and `[reverse]` (the DMZ's SOCKS5 endpoint). Future sections of the same kind (`[host]`,
//! `[rendezvous]`) and process-wide keys (`drain_timeout`) are validated here.
//!
//! It does not check how these addresses relate to the services' (see `listeners`).

use std::time::Duration;

use sallyport_dataplane::{RelayConfig, RelayMode};
use sallyport_dataplane::{RingSetup, StreamOptions};

use super::defaults::*;
use super::diagnostics::{Check, ConfigError};
use super::model::{GatewayConfig, ReverseConfig};
use super::raw::{RawGateway, RawReverse};
use super::tls_files::validate_tls_server;
use super::units::size_in;
use super::uri::parse_listen_addr;
use crate::tls::ServerRole as TlsServerRole;

pub(super) fn validate_gateway(
    check: &Check,
    raw: RawGateway,
) -> Result<GatewayConfig, ConfigError> {
    let workers = match raw.workers {
        None => default_workers(),
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => n,
            _ => {
                return Err(check.fail(
                    "gateway.workers",
                    format!("must be between 1 and {MAX_WORKERS}, got {n}"),
                ))
            }
        },
    };
    let admin = raw
        .admin
        .as_deref()
        .map(parse_listen_addr)
        .transpose()
        .map_err(|r| check.fail("gateway.admin", r))?;
    let relay = match raw.relay.as_deref() {
        None => DEFAULT_RELAY,
        Some("splice") => RelayMode::Splice,
        Some("copy") => RelayMode::Copy,
        Some(other) => {
            return Err(check.fail(
                "gateway.relay",
                format!("unknown relay mode \"{other}\"; expected \"splice\" or \"copy\""),
            ))
        }
    };
    let pipe_size = size_in(
        check,
        "gateway.pipe_size",
        raw.pipe_size.as_ref(),
        DEFAULT_PIPE_SIZE,
        MIN_PIPE_SIZE,
        MAX_PIPE_SIZE,
    )?;
    let buffer_size = size_in(
        check,
        "gateway.buffer_size",
        raw.buffer_size.as_ref(),
        DEFAULT_BUFFER_SIZE,
        MIN_BUFFER_SIZE,
        MAX_BUFFER_SIZE,
    )?;
    let cores = match &raw.cores {
        None => None,
        Some(list) => {
            let mut cores = Vec::with_capacity(list.len());
            for &c in list {
                if !(0..MAX_WORKERS as i64).contains(&c) {
                    return Err(check.fail(
                        "gateway.cores",
                        format!(
                            "core ids must be between 0 and {}, got {c}",
                            MAX_WORKERS - 1
                        ),
                    ));
                }
                cores.push(c as usize);
            }
            Some(cores)
        }
    };
    let socket_buffer = match raw.socket_buffer.as_ref() {
        None => None,
        Some(_) => Some(size_in(
            check,
            "gateway.socket_buffer",
            raw.socket_buffer.as_ref(),
            0,
            MIN_SOCKET_BUFFER,
            MAX_SOCKET_BUFFER,
        )?),
    };
    let busy_poll = check.duration("gateway.busy_poll", raw.busy_poll.as_ref(), Duration::ZERO)?;
    if busy_poll > MAX_BUSY_POLL {
        return Err(check.fail(
            "gateway.busy_poll",
            format!("at most {MAX_BUSY_POLL:?}: a worker that polls longer only burns its core"),
        ));
    }
    let ring_setup = match raw.ring_setup.as_deref() {
        None => DEFAULT_RING_SETUP,
        Some("defer_taskrun") => RingSetup::DeferTaskrun,
        Some("coop_taskrun") => RingSetup::CoopTaskrun,
        Some("plain") => RingSetup::Plain,
        Some(other) => {
            return Err(check.fail(
                "gateway.ring_setup",
                format!(
                    "unknown ring setup \"{other}\"; expected \"defer_taskrun\", \"coop_taskrun\" or \"plain\""
                ),
            ))
        }
    };
    Ok(GatewayConfig {
        workers,
        admin,
        cores,
        relay: RelayConfig {
            mode: relay,
            pipe_size,
            buffer_size,
            stream: StreamOptions {
                nodelay: raw.nodelay.unwrap_or(DEFAULT_NODELAY),
                buffer: socket_buffer,
            },
            busy_poll,
        },
        ring_setup,
    })
}
pub(super) fn validate_reverse(
    check: &Check,
    raw: RawReverse,
) -> Result<ReverseConfig, ConfigError> {
    let listen = match raw.listen.as_deref() {
        None => {
            return Err(check.fail(
                "reverse.listen",
                "missing; [reverse] needs the address internal gateways dial in to, e.g. listen = \"0.0.0.0:1080\"",
            ))
        }
        Some(text) => parse_listen_addr(text).map_err(|r| check.fail("reverse.listen", r))?,
    };
    let handshake_timeout = check.duration(
        "reverse.handshake_timeout",
        raw.handshake_timeout.as_ref(),
        DEFAULT_HANDSHAKE_TIMEOUT,
    )?;
    let tls = raw
        .tls
        .map(|t| validate_tls_server(check, "reverse.tls", t, TlsServerRole::Reverse))
        .transpose()?;
    Ok(ReverseConfig {
        listen,
        handshake_timeout,
        tls,
        keepalive: check.keepalive("reverse.keepalive", raw.keepalive.as_ref())?,
        unauthenticated: raw.dangerous_unauthenticated_reverse.unwrap_or(false),
    })
}
