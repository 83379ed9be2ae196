//! Token rendezvous: `[rendezvous]` (the DMZ's browser listener, its key and `link_timeout`)
//! and `[host]` with its `[[stream]]` tables (a gateway that dials out on command). Key files
//! are read here, so `sallyport check` catches a missing or short key.
//!
//! It does not look at how these relate to the rest of the file (a `[rendezvous]` needs
//! `[reverse]`; a `[host]` stands alone; addresses must not overlap: `listeners`).

use std::path::PathBuf;
use std::sync::Arc;

use sallyport_dataplane::wire::token::{self, Key};

use super::defaults::*;
use super::diagnostics::{Check, ConfigError, Reason};
use super::model::{
    HostConfig, NatsAuth, NatsConfig, NatsTls, RendezvousConfig, Secret, StreamConfig,
};
use super::raw::{RawHost, RawRendezvous, RawStream, RawTls};
use super::services::forbid;
use super::tls_files::{tls_allowed, tls_path, validate_tls_client, validate_tls_server};
use super::uri::{parse_host_port, parse_listen_uri, parse_target_uri, split_scheme, Scheme};
use super::websocket::{validate_origins, ws_common};
use crate::tls::ServerRole as TlsServerRole;

/// `[rendezvous]`.
pub(super) fn validate_rendezvous(
    check: &Check,
    raw: RawRendezvous,
) -> Result<RendezvousConfig, ConfigError> {
    let accept = raw.accept.ok_or_else(|| {
        check.fail(
            "rendezvous.accept",
            "missing; where browsers open ACCEPT + TOKEN, e.g. accept = \"wss://0.0.0.0:8443/stream/\"",
        )
    })?;
    let (scheme, rest) = split_scheme(&accept).map_err(|r| check.fail("rendezvous.accept", r))?;
    if !scheme.is_ws() {
        return Err(check.fail(
            "rendezvous.accept",
            format!(
                "{}:// is not a WebSocket listener; browsers reach a rendezvous over ws:// or wss://, e.g. \"wss://0.0.0.0:8443/stream/\"",
                scheme.as_str()
            ),
        ));
    }
    let (listen, path) =
        parse_listen_uri(scheme, rest).map_err(|r| check.fail("rendezvous.accept", r))?;
    let path = path.unwrap_or_else(|| "/".to_string());
    if !path.ends_with('/') {
        return Err(check.fail(
            "rendezvous.accept",
            format!(
                "the path \"{path}\" must end with \"/\": the token follows it (browsers open {path}/TOKEN), e.g. \"{}://{}{path}/\"",
                scheme.as_str(),
                listen
            ),
        ));
    }
    let tls = match (scheme, raw.tls) {
        (Scheme::Wss, Some(t)) => Some(validate_tls_server(
            check,
            "rendezvous.tls",
            t,
            TlsServerRole::Public,
        )?),
        (Scheme::Wss, None) => {
            return Err(check.fail(
                "rendezvous.tls",
                "missing; wss:// needs the listener's certificate: tls = { cert = \"dmz.pem\", key = \"dmz.key\" }",
            ))
        }
        (_, Some(_)) => {
            return Err(check.fail(
                "rendezvous.tls",
                "applies only to accept = \"wss://...\"; this accept is ws://; remove the key or use wss://",
            ))
        }
        (_, None) => None,
    };
    let key = read_key(check, "rendezvous.key", raw.key)?;
    let link_timeout = check.duration(
        "rendezvous.link_timeout",
        raw.link_timeout.as_ref(),
        DEFAULT_LINK_TIMEOUT,
    )?;
    let handshake_timeout = check.duration(
        "rendezvous.handshake_timeout",
        raw.handshake_timeout.as_ref(),
        DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    )?;
    let ws = ws_common(
        check,
        "rendezvous",
        raw.ws_ping.as_ref(),
        raw.ws_max_message.as_ref(),
    )?;
    Ok(RendezvousConfig {
        accept,
        listen,
        path,
        tls,
        key,
        link_timeout,
        handshake_timeout,
        origins: validate_origins(check, "rendezvous.origins", raw.origins)?,
        ws_max_message: ws.max_message,
        ws_ping: ws.ping,
    })
}

/// `[host]` and its `[[stream]]` tables.
pub(super) fn validate_host(
    check: &Check,
    raw: RawHost,
    streams: Vec<RawStream>,
) -> Result<HostConfig, ConfigError> {
    let name = raw.name.ok_or_else(|| {
        check.fail(
            "host.name",
            "missing; the host's name in tokens and in its subject sallyport.dial.NAME, e.g. name = \"h1\"",
        )
    })?;
    check_token_name(check, "host.name", &name)?;
    let dmz_text = raw.dmz.ok_or_else(|| {
        check.fail(
            "host.dmz",
            "missing; the DMZ's reverse endpoint, e.g. dmz = \"reverse://dmz.example.net:1080\"",
        )
    })?;
    let dmz = match split_scheme(&dmz_text).map_err(|r| check.fail("host.dmz", r))? {
        (Scheme::Reverse, rest) if !rest.contains('/') => {
            parse_host_port(rest).map_err(|r| check.fail("host.dmz", r))?
        }
        (Scheme::Reverse, _) => {
            return Err(check.fail(
                "host.dmz",
                "a host names no bind name (the token is its BIND name); write reverse://HOST:PORT",
            ))
        }
        (other, _) => {
            return Err(check.fail(
                "host.dmz",
                format!(
                    "{}:// is not a reverse endpoint; write reverse://HOST:PORT (the DMZ's [reverse] listen address)",
                    other.as_str()
                ),
            ))
        }
    };
    let tls = raw
        .tls
        .map(|t| {
            validate_tls_client(
                check,
                "host.tls",
                t,
                &dmz.host,
                "the reverse leg to the DMZ",
            )
        })
        .transpose()?;
    let key = read_key(check, "host.key", raw.key)?;
    let connect_timeout = check.duration(
        "host.connect_timeout",
        raw.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
    )?;
    let nats = match raw.nats {
        Some(servers) => Some(validate_nats(
            check,
            servers.into_vec(),
            raw.nats_user,
            raw.nats_password,
            raw.nats_token,
            raw.nats_tls,
        )?),
        None => {
            forbid(
                check,
                "host",
                &[
                    ("nats_user", raw.nats_user.is_some()),
                    ("nats_password", raw.nats_password.is_some()),
                    ("nats_token", raw.nats_token.is_some()),
                    ("nats_tls", raw.nats_tls.is_some()),
                ],
                |field| {
                    format!("{field} applies only with nats = \"nats://HOST:PORT\"; set nats or remove the key")
                },
            )?;
            None
        }
    };
    if streams.is_empty() {
        return Err(check.fail(
            "stream",
            "no [[stream]] tables; a host needs at least one: [[stream]] name = \"logs\" connect = \"tcp://127.0.0.1:7000\"",
        ));
    }
    let mut validated: Vec<StreamConfig> = Vec::with_capacity(streams.len());
    for (i, raw) in streams.into_iter().enumerate() {
        let stream = validate_stream(check, i + 1, raw)?;
        if let Some(first) = validated.iter().position(|s| s.name == stream.name) {
            return Err(check.fail(
                format!("stream[{}].name", stream.name),
                format!(
                    "duplicate stream name \"{}\"; already used by stream {}",
                    stream.name,
                    first + 1
                ),
            ));
        }
        validated.push(stream);
    }
    Ok(HostConfig {
        name,
        dmz,
        tls,
        key,
        connect_timeout,
        keepalive: check.keepalive("host.keepalive", raw.keepalive.as_ref())?,
        nats,
        streams: validated,
    })
}

/// One `[[stream]]` (`position` counts from 1, for keys of a stream without a valid name).
fn validate_stream(
    check: &Check,
    position: usize,
    raw: RawStream,
) -> Result<StreamConfig, ConfigError> {
    let name = raw.name.ok_or_else(|| {
        check.fail(
            format!("stream[{position}].name"),
            "missing; what a token asks for, e.g. name = \"logs\"",
        )
    })?;
    check_token_name(check, &format!("stream[{position}].name"), &name)?;
    let prefix = format!("stream[{name}]");
    let connect = raw.connect.ok_or_else(|| {
        check.fail(
            format!("{prefix}.connect"),
            "missing; where the stream's bytes come from, e.g. connect = \"tcp://127.0.0.1:7000\"",
        )
    })?;
    let target =
        match split_scheme(&connect).map_err(|r| check.fail(format!("{prefix}.connect"), r))? {
            (Scheme::Tcp, rest) => {
                parse_target_uri(Scheme::Tcp, rest)
                    .map_err(|r| check.fail(format!("{prefix}.connect"), r))?
                    .0
            }
            (other, _) => {
                return Err(check.fail(
                    format!("{prefix}.connect"),
                    format!(
                        "{}:// is not served for streams; a stream connects to tcp://HOST:PORT",
                        other.as_str()
                    ),
                ))
            }
        };
    Ok(StreamConfig {
        name,
        connect,
        target,
    })
}

/// A host or stream name: it travels inside tokens, so it takes their alphabet.
fn check_token_name(check: &Check, key: &str, name: &str) -> Result<(), ConfigError> {
    if token::valid_name(name) {
        return Ok(());
    }
    Err(check.fail(
        key,
        format!(
            "\"{name}\" is not a valid name: 1 to {} characters from A-Z a-z 0-9 _ - (it travels inside tokens)",
            token::MAX_NAME_LEN
        ),
    ))
}

/// A key file: its bytes, one trailing newline stripped, at least 32 of them.
fn read_key(check: &Check, key: &str, written: Option<String>) -> Result<Arc<Key>, ConfigError> {
    let written = match written.as_deref() {
        None => {
            return Err(check.fail(
                key,
                "missing; the file with the HMAC key shared with the platform (at least 32 bytes), e.g. key = \"rendezvous.key\"",
            ))
        }
        Some("") => return Err(check.fail(key, "must not be empty")),
        Some(path) => path,
    };
    let path = check.path(written);
    let bytes = std::fs::read(&path).map_err(|error| {
        check.fail(
            key,
            Reason::File {
                path: path.clone(),
                error,
            },
        )
    })?;
    let parsed = Key::from_file_bytes(bytes)
        .map_err(|e| check.fail(key, format!("{}: {e}", path.display())))?;
    Ok(Arc::new(parsed))
}

/// `nats` and its companions.
fn validate_nats(
    check: &Check,
    servers: Vec<String>,
    user: Option<String>,
    password: Option<Secret>,
    auth_token: Option<Secret>,
    tls: Option<RawTls>,
) -> Result<NatsConfig, ConfigError> {
    if servers.is_empty() {
        return Err(check.fail(
            "host.nats",
            "an empty list; name at least one server, e.g. nats = \"nats://nats.internal:4222\"",
        ));
    }
    for server in &servers {
        check_nats_url(server)
            .map_err(|r| check.fail("host.nats", format!("\"{server}\": {r}")))?;
    }
    let user_password = check.both_or_neither(
        "host",
        ("nats_user", user),
        ("nats_password", password),
        [
            "missing; nats_user is set, so its password is needed too (set both or neither)",
            "missing; nats_password is set, so nats_user is needed too (set both or neither)",
        ],
    )?;
    let auth = match (user_password, auth_token) {
        (Some(_), Some(_)) => {
            return Err(check.fail(
                "host.nats_token",
                "set either nats_user/nats_password or nats_token, not both",
            ))
        }
        (Some((user, password)), None) => NatsAuth::UserPassword { user, password },
        (None, Some(token)) => NatsAuth::Token(token),
        (None, None) => NatsAuth::None,
    };
    let tls = tls.map(|raw| validate_nats_tls(check, raw)).transpose()?;
    Ok(NatsConfig { servers, auth, tls })
}

/// `nats://HOST[:PORT]` or `tls://HOST[:PORT]`; credentials go in their own keys.
fn check_nats_url(server: &str) -> Result<(), String> {
    let Some((scheme, rest)) = server.split_once("://") else {
        return Err("expected nats://HOST:PORT or tls://HOST:PORT".into());
    };
    if scheme != "nats" && scheme != "tls" {
        return Err(format!(
            "scheme {scheme}:// is not served; expected nats:// or tls://"
        ));
    }
    if rest.contains('@') {
        return Err(
            "credentials go in nats_user / nats_password or nats_token, not in the URL".into(),
        );
    }
    if rest.is_empty() || rest.contains('/') {
        return Err("expected HOST[:PORT] after the scheme, nothing else".into());
    }
    if rest.contains(':') {
        parse_host_port(rest).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `nats_tls = { ca, cert, key }`: the files must exist (the NATS client reads them itself).
fn validate_nats_tls(check: &Check, raw: RawTls) -> Result<NatsTls, ConfigError> {
    let prefix = "host.nats_tls";
    tls_allowed(
        check,
        prefix,
        &raw,
        &["ca", "cert", "key"],
        "the NATS connection (server_name comes from the server URL)",
    )?;
    let example = "ca = \"nats-ca.pem\"";
    let readable = |field: &str, path: PathBuf| -> Result<PathBuf, ConfigError> {
        std::fs::File::open(&path).map_err(|error| {
            check.fail(
                format!("{prefix}.{field}"),
                Reason::File {
                    path: path.clone(),
                    error,
                },
            )
        })?;
        Ok(path)
    };
    let ca = match raw.ca {
        None => None,
        Some(ca) => Some(readable(
            "ca",
            tls_path(check, prefix, "ca", Some(ca), example)?,
        )?),
    };
    let client = match check.both_or_neither(
        prefix,
        ("cert", raw.cert),
        ("key", raw.key),
        [
            "missing; cert is set, so the key of that certificate is needed too (set both or neither)",
            "missing; key is set, so its certificate is needed too (set both or neither)",
        ],
    )? {
        None => None,
        Some((cert, key)) => Some((
            readable("cert", tls_path(check, prefix, "cert", Some(cert), example)?)?,
            readable("key", tls_path(check, prefix, "key", Some(key), example)?)?,
        )),
    };
    Ok(NatsTls { ca, client })
}
