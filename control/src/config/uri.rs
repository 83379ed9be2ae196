//! URI and address parsing: the schemes a service's `accept` and `connect` may use
//! (`tcp`, `tls`, `ws`, `wss`, `reverse`), listen addresses (IP literals, port 0 allowed),
//! destinations (`HOST:PORT`, not resolved here), WebSocket paths, and service and bind names.
//!
//! Each function fails with a [`UriError`], the reason of a [`super::ConfigError`]; the caller
//! adds the file and key. Nothing here resolves names or opens sockets.

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

/// Why a URI, address or name as written is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("missing address; expected HOST:PORT")]
    AddressMissing,
    #[error("unexpected \"{0}\" after ']' in \"{1}\"")]
    AfterBracket(String, String),
    /// A name that is not valid as a bind name.
    #[error("bind name {0}")]
    BindName(Box<UriError>),
    #[error("\"{0}\" is not a bind name; a DMZ service connects to reverse://NAME, the name internal gateways BIND with (e.g. reverse://echo), not an address")]
    BindNameAddress(String),
    #[error("missing bind name; expected reverse://NAME, e.g. reverse://echo")]
    BindNameMissing,
    #[error("missing ']' in \"{0}\"")]
    Bracket(String),
    #[error("missing host in \"{0}\"; write 0.0.0.0:PORT or [::]:PORT for all interfaces")]
    HostMissing(String),
    #[error("\"{0}\" is not a valid host name or IP address")]
    HostName(String),
    #[error("IPv6 addresses must be in brackets, e.g. [::1]:7000; got \"{0}\"")]
    Ipv6Brackets(String),
    #[error("\"{0}\" is not an IP address; listen addresses are IP literals with a port, e.g. 0.0.0.0:9000 or [::]:9000")]
    ListenHost(String),
    #[error("invalid character {0:?} in \"{1}\"; names use only A-Z a-z 0-9 . _ -")]
    NameChar(char, String),
    #[error("must not be empty")]
    NameEmpty,
    #[error("is {0} bytes long; the limit is {MAX_NAME_LEN}")]
    NameLong(usize),
    #[error("\"{0}\" is not an IPv6 address")]
    NotIpv6(String),
    #[error("\"{0}\" is not a URI; expected SCHEME://ADDRESS, e.g. tcp://0.0.0.0:9000")]
    NotUri(String),
    #[error(
        "unexpected path \"{path}\"; expected {scheme}://{form} (paths belong to ws:// and wss://)"
    )]
    Path {
        path: String,
        scheme: &'static str,
        form: String,
    },
    #[error(
        "invalid character {0:?} in path \"{1}\"; write it percent-encoded as clients send it"
    )]
    PathChar(char, String),
    #[error("path \"{0}\" has a fragment ('#'); clients never send one")]
    PathFragment(String),
    #[error("path is {0} bytes long; the limit is {MAX_WS_PATH_LEN}")]
    PathLong(usize),
    #[error("path \"{0}\" has a query string; a listener is routed by path alone (queries are ignored), so write the path without '?...'")]
    PathQuery(String),
    #[error("invalid port \"{port}\" in \"{text}\"; expected {min}..=65535")]
    Port {
        port: String,
        text: String,
        min: u16,
    },
    /// The address as written and the form expected.
    #[error("missing port in \"{0}\"; expected {1}")]
    PortMissing(String, &'static str),
    #[error("port 0 in \"{0}\" is not a valid destination")]
    PortZero(String),
    #[error("missing bind name after \"reverse://{0}/\"; expected reverse://HOST:PORT/NAME")]
    ReverseEmptyName(String),
    #[error("missing bind name in \"reverse://{0}\"; expected reverse://HOST:PORT/NAME")]
    ReverseNoName(String),
    #[error("unknown scheme \"{scheme}://\" in \"{uri}\"; expected tcp://, tls://, ws://, wss:// or reverse://")]
    Scheme { scheme: String, uri: String },
}

/// Service and bind names: 1..=255 bytes of `[A-Za-z0-9._-]`.
pub(super) fn validate_name(name: &str) -> Result<(), UriError> {
    if name.is_empty() {
        return Err(UriError::NameEmpty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(UriError::NameLong(name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(UriError::NameChar(c, name.to_string()));
    }
    Ok(())
}

/// Splits `SCHEME://REST`, accepting only the schemes this build serves.
pub(super) fn split_scheme(uri: &str) -> Result<(Scheme, &str), UriError> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(UriError::NotUri(uri.to_string()));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Ok((Scheme::Tcp, rest)),
        "tls" => Ok((Scheme::Tls, rest)),
        "ws" => Ok((Scheme::Ws, rest)),
        "wss" => Ok((Scheme::Wss, rest)),
        "reverse" => Ok((Scheme::Reverse, rest)),
        _ => Err(UriError::Scheme {
            scheme: scheme.to_string(),
            uri: uri.to_string(),
        }),
    }
}

/// Splits `ADDRESS[/PATH]`: the path (from the first `/`) only for `ws://` and `wss://`, where
/// it defaults to `/`; `form` is the expected shape for messages (`IP:PORT`, `HOST:PORT`).
pub(super) fn split_path<'a>(
    scheme: Scheme,
    rest: &'a str,
    form: &str,
    routing: bool,
) -> Result<(&'a str, Option<String>), UriError> {
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if !scheme.is_ws() {
        if let Some(path) = path {
            return Err(UriError::Path {
                path: path.to_string(),
                scheme: scheme.as_str(),
                form: form.to_string(),
            });
        }
        return Ok((addr, None));
    }
    let path = path.unwrap_or("/");
    validate_ws_path(path, routing)?;
    Ok((addr, Some(path.to_string())))
}

/// A WebSocket request path as sent on the wire: visible ASCII, no fragment; a listener's
/// (`routing`) also has no query string, since routing ignores it.
pub(super) fn validate_ws_path(path: &str, routing: bool) -> Result<(), UriError> {
    if path.len() > MAX_WS_PATH_LEN {
        return Err(UriError::PathLong(path.len()));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(UriError::PathChar(c, path.to_string()));
    }
    if path.contains('#') {
        return Err(UriError::PathFragment(path.to_string()));
    }
    if routing && path.contains('?') {
        return Err(UriError::PathQuery(path.to_string()));
    }
    Ok(())
}

/// `tcp://IP:PORT`, `tls://IP:PORT`, `ws://IP:PORT[/PATH]` or `wss://IP:PORT[/PATH]` of a
/// public listener; the path (ws, wss) defaults to `/`.
pub(super) fn parse_listen_uri(
    scheme: Scheme,
    rest: &str,
) -> Result<(SocketAddr, Option<String>), UriError> {
    let (addr, path) = split_path(scheme, rest, "IP:PORT", true)?;
    Ok((parse_listen_addr(addr)?, path))
}

/// `tcp://HOST:PORT`, `tls://HOST:PORT`, `ws://HOST:PORT[/PATH]` or `wss://HOST:PORT[/PATH]` of
/// a back-end or upstream; the path (ws, wss) defaults to `/`.
pub(super) fn parse_target_uri(
    scheme: Scheme,
    rest: &str,
) -> Result<(HostPort, Option<String>), UriError> {
    let (addr, path) = split_path(scheme, rest, "HOST:PORT", false)?;
    Ok((parse_host_port(addr)?, path))
}

/// `reverse://BINDNAME` of a DMZ service.
pub(super) fn parse_dmz_bind_name(rest: &str) -> Result<String, UriError> {
    if rest.is_empty() {
        return Err(UriError::BindNameMissing);
    }
    if rest.contains([':', '/']) {
        return Err(UriError::BindNameAddress(rest.to_string()));
    }
    validate_name(rest).map_err(|r| UriError::BindName(Box::new(r)))?;
    Ok(rest.to_string())
}

/// `reverse://HOST:PORT/BINDNAME` of an internal service.
pub(super) fn parse_reverse_accept(rest: &str) -> Result<(HostPort, String), UriError> {
    let Some((addr, name)) = rest.split_once('/') else {
        return Err(UriError::ReverseNoName(rest.to_string()));
    };
    let dmz = parse_host_port(addr)?;
    if name.is_empty() {
        return Err(UriError::ReverseEmptyName(addr.to_string()));
    }
    validate_name(name).map_err(|r| UriError::BindName(Box::new(r)))?;
    Ok((dmz, name.to_string()))
}

/// `IP:PORT` (IPv6 in brackets), port 0 allowed: a listen address.
pub(super) fn parse_listen_addr(text: &str) -> Result<SocketAddr, UriError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = split_host_port(text)?;
    port.parse::<u16>().map_err(|_| UriError::Port {
        port: port.to_string(),
        text: text.to_string(),
        min: 0,
    })?;
    Err(UriError::ListenHost(host.to_string()))
}

/// `HOST:PORT` (IPv6 in brackets), port 1..=65535: a destination.
pub(super) fn parse_host_port(text: &str) -> Result<HostPort, UriError> {
    let (host, port) = split_host_port(text)?;
    let port = match port.parse::<u16>() {
        Ok(0) => return Err(UriError::PortZero(text.to_string())),
        Ok(port) => port,
        Err(_) => {
            return Err(UriError::Port {
                port: port.to_string(),
                text: text.to_string(),
                min: 1,
            })
        }
    };
    let bracketed = text.starts_with('[');
    if bracketed {
        host.parse::<Ipv6Addr>()
            .map_err(|_| UriError::NotIpv6(host.to_string()))?;
    } else if !is_host_name(host) {
        return Err(UriError::HostName(host.to_string()));
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// Splits `host:port` / `[v6]:port` without checking either part beyond presence.
pub(super) fn split_host_port(text: &str) -> Result<(&str, &str), UriError> {
    if text.is_empty() {
        return Err(UriError::AddressMissing);
    }
    if let Some(inner) = text.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(UriError::Bracket(text.to_string()));
        };
        return match after.strip_prefix(':') {
            Some(port) if !port.is_empty() => Ok((host, port)),
            _ if after.is_empty() || after == ":" => {
                Err(UriError::PortMissing(text.to_string(), "[IPV6]:PORT"))
            }
            _ => Err(UriError::AfterBracket(after.to_string(), text.to_string())),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(UriError::PortMissing(text.to_string(), "HOST:PORT"));
    };
    if host.contains(':') {
        return Err(UriError::Ipv6Brackets(text.to_string()));
    }
    if host.is_empty() {
        return Err(UriError::HostMissing(text.to_string()));
    }
    if port.is_empty() {
        return Err(UriError::PortMissing(text.to_string(), "HOST:PORT"));
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
