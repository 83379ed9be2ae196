//! WebSocket values of a listener: `origins` (serialized origins as browsers send them) and
//! `protocols` (subprotocol names, HTTP tokens). `ws_ping` and `ws_max_message`, which apply
//! to either leg, are read in `services` into a [`WsCommon`]; paths in `uri`.

use std::time::Duration;

use super::defaults::*;
use super::diagnostics::{Check, ConfigError};
use super::raw::{RawDuration, RawSize};
use super::units::size_in;

/// The WebSocket settings that apply to either side (`ws_ping`, `ws_max_message`).
#[derive(Debug, Clone, Copy)]
pub(super) struct WsCommon {
    pub(super) max_message: usize,
    pub(super) ping: Option<Duration>,
}

/// `ws_ping` (at least [`MIN_WS_PING`], off when absent) and `ws_max_message` (within
/// [`MIN_WS_MAX_MESSAGE`]..=[`MAX_WS_MAX_MESSAGE`]) of the table at `prefix`.
pub(super) fn ws_common(
    check: &Check,
    prefix: &str,
    ws_ping: Option<&RawDuration>,
    ws_max_message: Option<&RawSize>,
) -> Result<WsCommon, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let ping = match ws_ping {
        None => None,
        Some(d) => {
            let ping = check.duration(&key("ws_ping"), Some(d), Duration::ZERO)?;
            if ping < MIN_WS_PING {
                return Err(check.fail(
                    key("ws_ping"),
                    format!(
                        "at least {MIN_WS_PING:?}: a keepalive this frequent is traffic; write e.g. \"30s\""
                    ),
                ));
            }
            Some(ping)
        }
    };
    Ok(WsCommon {
        max_message: size_in(
            check,
            &key("ws_max_message"),
            ws_max_message,
            DEFAULT_WS_MAX_MESSAGE,
            MIN_WS_MAX_MESSAGE,
            MAX_WS_MAX_MESSAGE,
        )?,
        ping,
    })
}

/// `origins`: serialized origins (`https://app.example.com`, `http://localhost:8080`) or `null`,
/// compared byte for byte with the `Origin` header browsers send.
pub(super) fn validate_origins(
    check: &Check,
    key: &str,
    raw: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let origins = raw.unwrap_or_default();
    for (i, origin) in origins.iter().enumerate() {
        let reason = if origin == "null" {
            None
        } else if let Some((scheme, rest)) = origin.split_once("://") {
            if scheme.is_empty() || rest.is_empty() {
                Some("expected SCHEME://HOST[:PORT], e.g. \"https://app.example.com\"".to_string())
            } else if rest.contains('/') {
                Some(
                    "an origin has no path, not even a trailing '/'; browsers send e.g. \"https://app.example.com\""
                        .to_string(),
                )
            } else if origin.bytes().any(|b| !b.is_ascii_graphic()) {
                Some("an origin is ASCII without spaces (IDN hosts in punycode)".to_string())
            } else if origin.bytes().any(|b| b.is_ascii_uppercase()) {
                Some(format!(
                    "browsers send origins in lower case; write \"{}\"",
                    origin.to_ascii_lowercase()
                ))
            } else {
                None
            }
        } else {
            Some(
                "expected SCHEME://HOST[:PORT] (e.g. \"https://app.example.com\") or \"null\""
                    .to_string(),
            )
        };
        if let Some(reason) = reason {
            return Err(check.fail(key, format!("\"{origin}\": {reason}")));
        }
        if origins[..i].contains(origin) {
            return Err(check.fail(key, format!("\"{origin}\" is listed twice")));
        }
    }
    Ok(origins)
}

/// `protocols`: subprotocol names, HTTP tokens (RFC 6455 §4.1, RFC 7230 §3.2.6).
pub(super) fn validate_protocols(
    check: &Check,
    key: &str,
    raw: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let protocols = raw.unwrap_or_default();
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    for (i, protocol) in protocols.iter().enumerate() {
        if protocol.is_empty() || !protocol.bytes().all(tchar) {
            return Err(check.fail(
                key,
                format!(
                    "\"{protocol}\" is not a subprotocol name; names are HTTP tokens: letters, digits \
                     and !#$%&'*+-.^_`|~, no spaces or commas"
                ),
            ));
        }
        if protocols[..i].contains(protocol) {
            return Err(check.fail(key, format!("\"{protocol}\" is listed twice")));
        }
    }
    Ok(protocols)
}
