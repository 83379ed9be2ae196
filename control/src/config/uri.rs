//! URI and address parsing: the schemes a service's `accept` and `connect` may use
//! (`tcp`, `tls`, `ws`, `wss`, `reverse`), listen addresses (IP literals, port 0 allowed),
//! destinations (`HOST:PORT`, not resolved here), WebSocket paths, and service and bind names.
//!
//! Each function returns the reason text for a [`super::ConfigError`]; the caller adds the
//! file and key. Nothing here resolves names or opens sockets.

use std::net::{Ipv6Addr, SocketAddr};

use super::defaults::{MAX_NAME_LEN, MAX_WS_PATH_LEN};
use super::model::HostPort;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Reverse,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Scheme {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Scheme::Reverse => "reverse",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// TLS on the transport: `tls://`, `wss://`.
    pub(super) fn is_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }

    /// WebSocket: `ws://`, `wss://`.
    pub(super) fn is_ws(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// Service and bind names: 1..=255 bytes of `[A-Za-z0-9._-]`.
pub(super) fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid character {c:?} in \"{name}\"; names use only A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Splits `SCHEME://REST`, accepting only the schemes this build serves.
pub(super) fn split_scheme(uri: &str) -> Result<(Scheme, &str), String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!(
            "\"{uri}\" is not a URI; expected SCHEME://ADDRESS, e.g. tcp://0.0.0.0:9000"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Ok((Scheme::Tcp, rest)),
        "tls" => Ok((Scheme::Tls, rest)),
        "ws" => Ok((Scheme::Ws, rest)),
        "wss" => Ok((Scheme::Wss, rest)),
        "reverse" => Ok((Scheme::Reverse, rest)),
        _ => Err(format!(
            "unknown scheme \"{scheme}://\" in \"{uri}\"; expected tcp://, tls://, ws://, wss:// or reverse://"
        )),
    }
}

/// Splits `ADDRESS[/PATH]`: the path (from the first `/`) only for `ws://` and `wss://`, where
/// it defaults to `/`; `form` is the expected shape for messages (`IP:PORT`, `HOST:PORT`).
pub(super) fn split_path<'a>(
    scheme: Scheme,
    rest: &'a str,
    form: &str,
    routing: bool,
) -> Result<(&'a str, Option<String>), String> {
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if !scheme.is_ws() {
        if let Some(path) = path {
            return Err(format!(
                "unexpected path \"{path}\"; expected {}://{form} (paths belong to ws:// and wss://)",
                scheme.as_str()
            ));
        }
        return Ok((addr, None));
    }
    let path = path.unwrap_or("/");
    validate_ws_path(path, routing)?;
    Ok((addr, Some(path.to_string())))
}

/// A WebSocket request path as sent on the wire: visible ASCII, no fragment; a listener's
/// (`routing`) also has no query string, since routing ignores it.
pub(super) fn validate_ws_path(path: &str, routing: bool) -> Result<(), String> {
    if path.len() > MAX_WS_PATH_LEN {
        return Err(format!(
            "path is {} bytes long; the limit is {MAX_WS_PATH_LEN}",
            path.len()
        ));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "invalid character {c:?} in path \"{path}\"; write it percent-encoded as clients send it"
        ));
    }
    if path.contains('#') {
        return Err(format!(
            "path \"{path}\" has a fragment ('#'); clients never send one"
        ));
    }
    if routing && path.contains('?') {
        return Err(format!(
            "path \"{path}\" has a query string; a listener is routed by path alone \
             (queries are ignored), so write the path without '?...'"
        ));
    }
    Ok(())
}

/// `tcp://IP:PORT`, `tls://IP:PORT`, `ws://IP:PORT[/PATH]` or `wss://IP:PORT[/PATH]` of a
/// public listener; the path (ws, wss) defaults to `/`.
pub(super) fn parse_listen_uri(
    scheme: Scheme,
    rest: &str,
) -> Result<(SocketAddr, Option<String>), String> {
    let (addr, path) = split_path(scheme, rest, "IP:PORT", true)?;
    Ok((parse_listen_addr(addr)?, path))
}

/// `tcp://HOST:PORT`, `tls://HOST:PORT`, `ws://HOST:PORT[/PATH]` or `wss://HOST:PORT[/PATH]` of
/// a back-end or upstream; the path (ws, wss) defaults to `/`.
pub(super) fn parse_target_uri(
    scheme: Scheme,
    rest: &str,
) -> Result<(HostPort, Option<String>), String> {
    let (addr, path) = split_path(scheme, rest, "HOST:PORT", false)?;
    Ok((parse_host_port(addr)?, path))
}

/// `reverse://BINDNAME` of a DMZ service.
pub(super) fn parse_dmz_bind_name(rest: &str) -> Result<String, String> {
    if rest.is_empty() {
        return Err("missing bind name; expected reverse://NAME, e.g. reverse://echo".to_string());
    }
    if rest.contains([':', '/']) {
        return Err(format!(
            "\"{rest}\" is not a bind name; a DMZ service connects to reverse://NAME, \
             the name internal gateways BIND with (e.g. reverse://echo), not an address"
        ));
    }
    validate_name(rest).map_err(|r| format!("bind name {r}"))?;
    Ok(rest.to_string())
}

/// `reverse://HOST:PORT/BINDNAME` of an internal service.
pub(super) fn parse_reverse_accept(rest: &str) -> Result<(HostPort, String), String> {
    let Some((addr, name)) = rest.split_once('/') else {
        return Err(format!(
            "missing bind name in \"reverse://{rest}\"; expected reverse://HOST:PORT/NAME"
        ));
    };
    let dmz = parse_host_port(addr)?;
    if name.is_empty() {
        return Err(format!(
            "missing bind name after \"reverse://{addr}/\"; expected reverse://HOST:PORT/NAME"
        ));
    }
    validate_name(name).map_err(|r| format!("bind name {r}"))?;
    Ok((dmz, name.to_string()))
}

/// `IP:PORT` (IPv6 in brackets), port 0 allowed: a listen address.
pub(super) fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = split_host_port(text)?;
    port.parse::<u16>()
        .map_err(|_| format!("invalid port \"{port}\" in \"{text}\"; expected 0..=65535"))?;
    Err(format!(
        "\"{host}\" is not an IP address; listen addresses are IP literals with a port, \
         e.g. 0.0.0.0:9000 or [::]:9000"
    ))
}

/// `HOST:PORT` (IPv6 in brackets), port 1..=65535: a destination.
pub(super) fn parse_host_port(text: &str) -> Result<HostPort, String> {
    let (host, port) = split_host_port(text)?;
    let port = match port.parse::<u16>() {
        Ok(0) => return Err(format!("port 0 in \"{text}\" is not a valid destination")),
        Ok(port) => port,
        Err(_) => {
            return Err(format!(
                "invalid port \"{port}\" in \"{text}\"; expected 1..=65535"
            ))
        }
    };
    let bracketed = text.starts_with('[');
    if bracketed {
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("\"{host}\" is not an IPv6 address"))?;
    } else if !is_host_name(host) {
        return Err(format!("\"{host}\" is not a valid host name or IP address"));
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// Splits `host:port` / `[v6]:port` without checking either part beyond presence.
pub(super) fn split_host_port(text: &str) -> Result<(&str, &str), String> {
    if text.is_empty() {
        return Err("missing address; expected HOST:PORT".to_string());
    }
    if let Some(inner) = text.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("missing ']' in \"{text}\""));
        };
        return match after.strip_prefix(':') {
            Some(port) if !port.is_empty() => Ok((host, port)),
            _ if after.is_empty() || after == ":" => {
                Err(format!("missing port in \"{text}\"; expected [IPV6]:PORT"))
            }
            _ => Err(format!("unexpected \"{after}\" after ']' in \"{text}\"")),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("missing port in \"{text}\"; expected HOST:PORT"));
    };
    if host.contains(':') {
        return Err(format!(
            "IPv6 addresses must be in brackets, e.g. [::1]:7000; got \"{text}\""
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "missing host in \"{text}\"; write 0.0.0.0:PORT or [::]:PORT for all interfaces"
        ));
    }
    if port.is_empty() {
        return Err(format!("missing port in \"{text}\"; expected HOST:PORT"));
    }
    Ok((host, port))
}

/// RFC 1123 host name (IPv4 literals included): labels of 1..=63 `[A-Za-z0-9-]`, ≤ 253 bytes.
pub(super) fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
