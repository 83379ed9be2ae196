//! One `[[service]]`: its name, its two URIs, the role they give it (DMZ, internal or
//! forwarding), and the keys that role takes; keys of another role are refused with a message
//! saying where they belong. Each role's keys are validated by one step here; the public
//! listener and the upstream by `endpoints`, WebSocket values by `websocket`, TLS tables by
//! `tls_files`.
//!
//! It does not look at other services (duplicate names, shared ports: `listeners`).

use super::admission::{
    forbid_backend_keys, forbid_listener_keys, validate_admission, validate_proxy_protocol,
};
use super::defaults::*;
use super::diagnostics::{Check, ConfigError};
use super::endpoints::{validate_listener, validate_upstream, ws_connect, ListenerOf};
use super::model::{
    Credentials, DmzService, ForwardService, InternalService, Secret, ServiceConfig, ServiceRole,
};
use super::raw::RawService;
use super::tls_files::{validate_connect_tls, validate_tls_client};
use super::uri::{
    parse_dmz_bind_name, parse_reverse_accept, parse_target_uri, split_scheme, validate_name,
    Scheme,
};
use super::websocket::{ws_common, WsCommon};

/// The first of `fields` that is present: an error built by `reason` from its name.
pub(super) fn forbid(
    check: &Check,
    prefix: &str,
    fields: &[(&str, bool)],
    reason: impl Fn(&str) -> String,
) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(check.fail(format!("{prefix}.{field}"), reason(field))),
        None => Ok(()),
    }
}

/// A service's two URIs as written, split at their schemes.
struct Uris<'a> {
    accept: &'a str,
    accept_scheme: Scheme,
    accept_rest: &'a str,
    connect: &'a str,
    connect_scheme: Scheme,
    connect_rest: &'a str,
}

/// What every role's step reads: where errors go, the URIs and the WebSocket settings.
#[derive(Clone, Copy)]
struct Service<'a> {
    check: &'a Check,
    prefix: &'a str,
    uris: &'a Uris<'a>,
    ws: WsCommon,
}

/// One `[[service]]`: name, URIs, the WebSocket and credential keys any role may have, then the
/// keys of its role.
pub(super) fn validate_service(
    check: &Check,
    prefix: &str,
    mut raw: RawService,
) -> Result<ServiceConfig, ConfigError> {
    let name = service_name(check, prefix, raw.name.take())?;
    let (accept, connect) = required_uris(check, prefix, &mut raw)?;
    let uris = split_uris(check, prefix, &accept, &connect)?;
    let ws = websocket_keys(check, prefix, &uris, &raw)?;
    let credentials = validate_credentials(check, prefix, raw.user.take(), raw.password.take())?;
    let service = Service {
        check,
        prefix,
        uris: &uris,
        ws,
    };
    let role = match (uris.accept_scheme, uris.connect_scheme) {
        (_, Scheme::Reverse) => validate_dmz(&service, &mut raw, credentials)?,
        (Scheme::Reverse, _) => validate_internal(&service, &mut raw, credentials)?,
        _ => validate_forward(&service, &mut raw, credentials)?,
    };
    Ok(ServiceConfig {
        name,
        accept,
        connect,
        role,
    })
}

/// `name`: present and a valid name.
fn service_name(check: &Check, prefix: &str, name: Option<String>) -> Result<String, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let name = match name {
        None => {
            return Err(check.fail(
                key("name"),
                "missing; every [[service]] needs a name, e.g. name = \"echo\"",
            ))
        }
        Some(name) => {
            validate_name(&name).map_err(|r| check.fail(key("name"), r))?;
            name
        }
    };
    Ok(name)
}

/// `accept` and `connect`: both present.
fn required_uris(
    check: &Check,
    prefix: &str,
    raw: &mut RawService,
) -> Result<(String, String), ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let accept = raw.accept.take().ok_or_else(|| {
        check.fail(
            key("accept"),
            "missing; e.g. accept = \"tcp://0.0.0.0:9000\" (DMZ or forwarding), \
             accept = \"ws://0.0.0.0:8080/echo\" (WebSocket) or \
             accept = \"reverse://dmz.example.net:1080/echo\" (internal)",
        )
    })?;
    let connect = raw.connect.take().ok_or_else(|| {
        check.fail(
            key("connect"),
            "missing; e.g. connect = \"reverse://echo\" (DMZ) or \
             connect = \"tcp://10.0.0.5:7000\" (internal or forwarding)",
        )
    })?;
    Ok((accept, connect))
}

/// The schemes of both URIs, and a combination that is not served at all, before any key is
/// looked at.
fn split_uris<'a>(
    check: &Check,
    prefix: &str,
    accept: &'a str,
    connect: &'a str,
) -> Result<Uris<'a>, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let (accept_scheme, accept_rest) =
        split_scheme(accept).map_err(|r| check.fail(key("accept"), r))?;
    let (connect_scheme, connect_rest) =
        split_scheme(connect).map_err(|r| check.fail(key("connect"), r))?;

    if (accept_scheme, connect_scheme) == (Scheme::Reverse, Scheme::Reverse) {
        return Err(check.fail(
            key("connect"),
            "reverse:// on both sides is not supported; a DMZ service is tcp:// (or tls://, ws://, wss://) -> reverse://NAME, \
             an internal service is reverse://HOST:PORT/NAME -> tcp:// (or tls://, ws://, wss://) HOST:PORT",
        ));
    }

    Ok(Uris {
        accept,
        accept_scheme,
        accept_rest,
        connect,
        connect_scheme,
        connect_rest,
    })
}

/// `ws_ping`, `ws_max_message` (where a WebSocket leg is), `origins` and `protocols` (where a
/// WebSocket listener is).
fn websocket_keys(
    check: &Check,
    prefix: &str,
    uris: &Uris<'_>,
    raw: &RawService,
) -> Result<WsCommon, ConfigError> {
    // WebSocket keys: only where a WebSocket leg is.
    if !uris.accept_scheme.is_ws() && !uris.connect_scheme.is_ws() {
        forbid(
            check,
            prefix,
            &[
                ("ws_ping", raw.ws_ping.is_some()),
                ("ws_max_message", raw.ws_max_message.is_some()),
            ],
            |field| {
                format!(
                    "{field} applies only to WebSocket legs (accept or connect = \"ws://...\" or \"wss://...\"); \
                     this service is {}:// -> {}://; remove the key",
                    uris.accept_scheme.as_str(),
                    uris.connect_scheme.as_str()
                )
            },
        )?;
    }
    if !uris.accept_scheme.is_ws() {
        forbid(
            check,
            prefix,
            &[
                ("origins", raw.origins.is_some()),
                ("protocols", raw.protocols.is_some()),
            ],
            |field| {
                format!(
                    "{field} applies only to WebSocket listeners (accept = \"ws://IP:PORT/PATH\" or \
                     \"wss://...\"); this accept is {}://; remove the key",
                    uris.accept_scheme.as_str()
                )
            },
        )?;
    }
    ws_common(
        check,
        prefix,
        raw.ws_ping.as_ref(),
        raw.ws_max_message.as_ref(),
    )
}

/// A DMZ service (`connect = "reverse://NAME"`): its listener, bind name and `timeout`.
fn validate_dmz(
    service: &Service<'_>,
    raw: &mut RawService,
    credentials: Option<Credentials>,
) -> Result<ServiceRole, ConfigError> {
    let Service {
        check,
        prefix,
        uris,
        ws,
    } = *service;
    let key = |field: &str| format!("{prefix}.{field}");
    forbid(
        check,
        prefix,
        &[
            ("prepared", raw.prepared.is_some()),
            ("retry_max", raw.retry_max.is_some()),
            ("connect_timeout", raw.connect_timeout.is_some()),
            ("connect_tls", raw.connect_tls.is_some()),
            ("keepalive", raw.keepalive.is_some()),
        ],
        |field| {
            format!(
                "{field} applies only to internal services (accept = \"reverse://HOST:PORT/NAME\"); \
                 this is a DMZ service (accept = \"{}://...\", connect = \"reverse://...\"); remove the key",
                uris.accept_scheme.as_str()
            )
        },
    )?;
    forbid_backend_keys(check, prefix, raw)?;
    let listener = validate_listener(
        check,
        prefix,
        uris.accept_scheme,
        uris.accept_rest,
        uris.accept,
        raw,
        ws,
        ListenerOf::Dmz,
    )?;
    let admission = validate_admission(check, prefix, raw, ListenerOf::Dmz, uris.connect_scheme)?;
    let bind_name =
        parse_dmz_bind_name(uris.connect_rest).map_err(|r| check.fail(key("connect"), r))?;
    let timeout = check.duration(&key("timeout"), raw.timeout.as_ref(), DEFAULT_TIMEOUT)?;
    Ok(ServiceRole::Dmz(DmzService {
        listen: listener.listen,
        tls: listener.tls,
        ws: listener.ws,
        handshake_timeout: listener.handshake_timeout,
        bind_name,
        timeout,
        idle_timeout: listener.idle_timeout,
        credentials,
        admission,
    }))
}

/// An internal service (`accept = "reverse://HOST:PORT/NAME"`): the DMZ it dials, its pool
/// (`prepared`, `retry_max`), the back-end with `connect_timeout`, `tls` and `connect_tls`.
fn validate_internal(
    service: &Service<'_>,
    raw: &mut RawService,
    credentials: Option<Credentials>,
) -> Result<ServiceRole, ConfigError> {
    let Service {
        check,
        prefix,
        uris,
        ws,
    } = *service;
    let key = |field: &str| format!("{prefix}.{field}");
    if raw.timeout.is_some() {
        return Err(check.fail(
            key("timeout"),
            "timeout applies only to DMZ services (connect = \"reverse://NAME\"); \
             this is an internal service; for the back-end connect limit use connect_timeout",
        ));
    }
    if raw.handshake_timeout.is_some() {
        return Err(check.fail(
            key("handshake_timeout"),
            "handshake_timeout applies only to public listeners (accept = \"tls://...\", \"ws://...\", \"wss://...\"); \
             an internal service's TLS handshakes run within connect_timeout",
        ));
    }
    forbid_listener_keys(check, prefix, raw)?;
    let proxy_protocol = validate_proxy_protocol(check, prefix, raw)?;
    let backend_probe = raw.backend_probe.take().unwrap_or(DEFAULT_BACKEND_PROBE);
    let (dmz, bind_name) =
        parse_reverse_accept(uris.accept_rest).map_err(|r| check.fail(key("accept"), r))?;
    let (target, path) = parse_target_uri(uris.connect_scheme, uris.connect_rest)
        .map_err(|r| check.fail(key("connect"), r))?;
    let target_ws = path.map(|path| ws_connect(uris.connect_rest, path, &ws));
    let prepared = match raw.prepared {
        None => DEFAULT_PREPARED,
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=MAX_PREPARED).contains(&n) => n,
            _ => {
                return Err(check.fail(
                    key("prepared"),
                    format!("must be between 1 and {MAX_PREPARED}, got {n}"),
                ))
            }
        },
    };
    let retry_max = check.duration(&key("retry_max"), raw.retry_max.as_ref(), DEFAULT_RETRY_MAX)?;
    let keepalive = check.keepalive(&key("keepalive"), raw.keepalive.as_ref())?;
    let connect_timeout = check.duration(
        &key("connect_timeout"),
        raw.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    let tls = raw
        .tls
        .take()
        .map(|t| {
            validate_tls_client(
                check,
                &key("tls"),
                t,
                &dmz.host,
                "an internal service's tls (the reverse leg to the DMZ)",
            )
        })
        .transpose()?;
    let target_tls = validate_connect_tls(
        check,
        prefix,
        uris.connect_scheme,
        uris.connect,
        raw.connect_tls.take(),
        &target,
        " (the reverse leg's TLS is tls)",
    )?;
    Ok(ServiceRole::Internal(InternalService {
        dmz,
        bind_name,
        target,
        prepared,
        retry_max,
        connect_timeout,
        credentials,
        tls,
        target_tls,
        target_ws,
        proxy_protocol,
        keepalive,
        backend_probe,
    }))
}

/// A forwarding service (neither side `reverse://`): its listener and upstream.
fn validate_forward(
    service: &Service<'_>,
    raw: &mut RawService,
    credentials: Option<Credentials>,
) -> Result<ServiceRole, ConfigError> {
    let Service {
        check,
        prefix,
        uris,
        ws,
    } = *service;
    let key = |field: &str| format!("{prefix}.{field}");
    forbid(
        check,
        prefix,
        &[
            ("prepared", raw.prepared.is_some()),
            ("retry_max", raw.retry_max.is_some()),
            ("keepalive", raw.keepalive.is_some()),
        ],
        |field| {
            format!(
                "{field} applies only to internal services (accept = \"reverse://HOST:PORT/NAME\"); \
                 this is a forwarding service ({}:// -> {}://), which connects upstream once per \
                 client and keeps no prepared connections; remove the key",
                uris.accept_scheme.as_str(),
                uris.connect_scheme.as_str()
            )
        },
    )?;
    if raw.timeout.is_some() {
        return Err(check.fail(
            key("timeout"),
            "timeout applies only to DMZ services (connect = \"reverse://NAME\"): how long a client \
             waits for a prepared connection; a forwarding service connects upstream per client, \
             limited by connect_timeout",
        ));
    }
    if credentials.is_some() {
        return Err(check.fail(
            key("user"),
            "user and password apply only to reverse:// services (SOCKS5 authentication between \
             gateways); a forwarding service has no reverse leg; remove them",
        ));
    }
    let listener = validate_listener(
        check,
        prefix,
        uris.accept_scheme,
        uris.accept_rest,
        uris.accept,
        raw,
        ws,
        ListenerOf::Forward,
    )?;
    let admission =
        validate_admission(check, prefix, raw, ListenerOf::Forward, uris.connect_scheme)?;
    if raw.backend_probe.is_some() {
        return Err(check.fail(
            key("backend_probe"),
            "backend_probe applies only to internal services, which park prepared connections \
             for a back-end; a forwarding service connects its upstream per client (see \
             admission = \"verified\")",
        ));
    }
    let upstream = validate_upstream(
        check,
        prefix,
        uris.connect_scheme,
        uris.connect_rest,
        uris.connect,
        raw,
        ws,
    )?;
    Ok(ServiceRole::Forward(ForwardService {
        listen: listener.listen,
        tls: listener.tls,
        ws: listener.ws,
        handshake_timeout: listener.handshake_timeout,
        idle_timeout: listener.idle_timeout,
        upstream,
        admission,
    }))
}

pub(super) fn validate_credentials(
    check: &Check,
    prefix: &str,
    user: Option<String>,
    password: Option<Secret>,
) -> Result<Option<Credentials>, ConfigError> {
    let Some((user, password)) = check.both_or_neither(
        prefix,
        ("user", user),
        ("password", password),
        [
            "user is set but password is missing; set both or neither",
            "password is set but user is missing; set both or neither",
        ],
    )?
    else {
        return Ok(None);
    };
    for (field, len) in [("user", user.len()), ("password", password.expose().len())] {
        if !(1..=MAX_CREDENTIAL_LEN).contains(&len) {
            return Err(check.fail(
                format!("{prefix}.{field}"),
                format!("must be 1 to {MAX_CREDENTIAL_LEN} bytes (RFC 1929), got {len}"),
            ));
        }
    }
    Ok(Some(Credentials { user, password }))
}
