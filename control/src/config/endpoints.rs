//! A service's two ends outside the gateway: the public listener (`accept = "tcp|tls|ws|wss://…"`
//! with `tls`, `handshake_timeout`, `origins`, `protocols`) and a forwarding service's upstream
//! (`connect = "tcp|tls|ws|wss://…"` with `connect_timeout`, `connect_tls`), whose host name is
//! resolved here, once. Per-listener keys of the coming issues (`allow`/`deny`, `admission`,
//! `proxy_protocol` received) are read in [`validate_listener`]; per-upstream ones
//! (`proxy_protocol` sent, `keepalive`) in [`validate_upstream`].
//!
//! It does not check listeners against each other (`listeners`) or open sockets.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::admission::validate_proxy_protocol;
use super::defaults::*;
use super::diagnostics::{Check, ConfigError};
use sallyport_dataplane::{PublicWs, UpstreamWs};

use super::model::{Handoff, HostPort, UpstreamConfig, WsAccept, WsConnect};
use super::raw::RawService;
use super::tls_files::{validate_connect_tls, validate_tls_server};
use super::uri::{parse_listen_uri, parse_target_uri, Scheme};
use super::websocket::WsCommon;
use super::websocket::{validate_origins, validate_protocols};
use crate::tls::{ServerRole as TlsServerRole, TlsServer};

/// A validated public listener (DMZ or forwarding service).
pub(super) struct Listener {
    pub(super) listen: SocketAddr,
    pub(super) tls: Option<TlsServer>,
    pub(super) ws: Option<WsAccept>,
    pub(super) handshake_timeout: Duration,
    /// `idle_timeout`: `None` when absent (tunnels may stay silent forever).
    pub(super) idle_timeout: Option<Duration>,
}

/// Whose public listener is validated (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListenerOf {
    Dmz,
    Forward,
}

impl ListenerOf {
    fn name(self) -> &'static str {
        match self {
            ListenerOf::Dmz => "DMZ",
            ListenerOf::Forward => "forwarding",
        }
    }

    /// Where TLS on the service's other leg is configured.
    fn other_tls(self) -> &'static str {
        match self {
            ListenerOf::Dmz => "TLS toward internal gateways is [reverse] tls",
            ListenerOf::Forward => {
                "TLS toward the upstream is connect_tls with connect = \"tls://...\""
            }
        }
    }
}

/// `accept = "tcp|tls|ws|wss://…"` with its `tls`, `handshake_timeout`, `idle_timeout`,
/// `origins` and `protocols` keys.
#[allow(clippy::too_many_arguments)]
pub(super) fn validate_listener(
    check: &Check,
    prefix: &str,
    scheme: Scheme,
    rest: &str,
    accept: &str,
    raw: &mut RawService,
    ws: WsCommon,
    of: ListenerOf,
) -> Result<Listener, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let (listen, path) =
        parse_listen_uri(scheme, rest).map_err(|r| check.fail(key("accept"), r))?;
    let tls = match (scheme.is_tls(), raw.tls.take()) {
        (true, None) => {
            return Err(check.fail(
                key("tls"),
                format!(
                    "missing; accept = \"{accept}\" needs the listener's certificate, \
                     e.g. tls = {{ cert = \"dmz.pem\", key = \"dmz.key\" }}"
                ),
            ))
        }
        (true, Some(raw_tls)) => {
            let tls = validate_tls_server(check, &key("tls"), raw_tls, TlsServerRole::Public)?;
            if scheme == Scheme::Wss {
                if let Some(other) = tls.alpn.iter().find(|p| *p != "http/1.1") {
                    return Err(check.fail(
                        key("tls.alpn"),
                        format!(
                            "a wss:// listener speaks HTTP/1.1 (the WebSocket upgrade of RFC 6455); \
                             alpn may list only \"http/1.1\", got \"{other}\""
                        ),
                    ));
                }
            }
            Some(tls)
        }
        (false, Some(_)) => {
            return Err(check.fail(
                key("tls"),
                format!(
                    "a tls table on a {} service is the certificate of a tls:// listener (or wss://), but \
                     accept is {}://; use accept = \"tls://IP:PORT\" (or \"wss://IP:PORT/PATH\") or remove tls \
                     ({})",
                    of.name(),
                    scheme.as_str(),
                    of.other_tls()
                ),
            ))
        }
        (false, None) => None,
    };
    let handshake_timeout = if scheme == Scheme::Tcp {
        if raw.handshake_timeout.is_some() {
            return Err(check.fail(
                key("handshake_timeout"),
                "handshake_timeout applies only to tls:// listeners and WebSocket listeners \
                 (ws://, wss://); this one is tcp://; remove the key",
            ));
        }
        DEFAULT_TLS_HANDSHAKE_TIMEOUT
    } else {
        check.duration(
            &key("handshake_timeout"),
            raw.handshake_timeout.as_ref(),
            DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        )?
    };
    let ws = match path {
        None => None,
        Some(path) => Some(Handoff(PublicWs {
            path,
            origins: validate_origins(check, &key("origins"), raw.origins.take())?,
            protocols: validate_protocols(check, &key("protocols"), raw.protocols.take())?,
            max_message: ws.max_message,
            ping: ws.ping,
            handshake_timeout,
        })),
    };
    let idle_timeout = validate_idle_timeout(check, &key("idle_timeout"), raw)?;
    Ok(Listener {
        listen,
        tls,
        ws,
        handshake_timeout,
        idle_timeout,
    })
}

/// `idle_timeout`: absent is off (a duration is more than zero).
fn validate_idle_timeout(
    check: &Check,
    key: &str,
    raw: &RawService,
) -> Result<Option<Duration>, ConfigError> {
    raw.idle_timeout
        .as_ref()
        .map(|text| check.duration(key, Some(text), Duration::ZERO))
        .transpose()
}

/// A forwarding service's `connect = "tcp|tls|ws|wss://HOST:PORT[/PATH]"` with
/// `connect_timeout` and `connect_tls`; the host is resolved here.
pub(super) fn validate_upstream(
    check: &Check,
    prefix: &str,
    scheme: Scheme,
    rest: &str,
    connect: &str,
    raw: &mut RawService,
    ws: WsCommon,
) -> Result<UpstreamConfig, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let (target, path) =
        parse_target_uri(scheme, rest).map_err(|r| check.fail(key("connect"), r))?;
    let connect_timeout = check.duration(
        &key("connect_timeout"),
        raw.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    let tls = validate_connect_tls(
        check,
        prefix,
        scheme,
        connect,
        raw.connect_tls.take(),
        &target,
        "",
    )?;
    let ws = path.map(|path| ws_connect(rest, path, &ws));
    let addr = resolve_upstream(&target).map_err(|r| check.fail(key("connect"), r))?;
    let proxy_protocol = validate_proxy_protocol(check, prefix, raw)?;
    Ok(UpstreamConfig {
        target,
        addr,
        tls,
        connect_timeout,
        ws,
        proxy_protocol,
    })
}

/// The WebSocket client leg of `connect = "ws://REST"` (or `wss://`), `path` taken from it.
pub(super) fn ws_connect(rest: &str, path: String, ws: &WsCommon) -> WsConnect {
    Handoff(UpstreamWs {
        // As written: `[::1]:80` keeps its brackets, a name keeps its case.
        host: rest.split('/').next().unwrap_or(rest).to_string(),
        path,
        max_message: ws.max_message,
        ping: ws.ping,
    })
}

/// The first address `target` resolves to (IP literals need no resolver).
pub(super) fn resolve_upstream(target: &HostPort) -> Result<SocketAddr, ResolveError> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let mut addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|error| ResolveError::Lookup {
            host: target.host.clone(),
            error,
        })?;
    addrs
        .next()
        .ok_or_else(|| ResolveError::NoAddress(target.host.clone()))
}

/// Why a forwarding service's upstream has no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve upstream \"{host}\": {error}")]
    Lookup { host: String, error: std::io::Error },
    #[error("upstream \"{0}\" resolves to no address")]
    NoAddress(String),
}
