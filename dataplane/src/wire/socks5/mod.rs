//! SOCKS5 (RFC 1928) and username/password sub-negotiation (RFC 1929) codec, both sides.
//!
//! What it does: parses and encodes the handshake messages the DMZ gateway (server side) and the
//! internal gateway (client side) exchange: greeting, method choice, user/password request and
//! status, request (CONNECT / BIND / UDP ASSOCIATE) and reply. Every parser is incremental:
//! `Ok(None)` means "need more bytes", `Ok(Some((value, consumed)))` means a complete message was
//! parsed from `input[..consumed]`, and `input[consumed..]` belongs to the next layer (a second
//! BIND reply is routinely coalesced with the client's first bytes; wire rule 1). Malformed input
//! is reported as a [`WireError`] as soon as the offending byte is visible, and no input panics.
//!
//! What it does not do: no I/O, no clock, no state between calls (the caller keeps its
//! accumulated buffer and decides which message it expects next), no allocation beyond the values
//! returned. It does not decide policy: which method to choose, whether credentials are valid,
//! which service a BIND domain names, or what a non-zero REP means to the caller. UDP ASSOCIATE
//! datagram headers and GSSAPI (RFC 1961) are not implemented.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version byte (VER) of every SOCKS5 message except the RFC 1929 sub-negotiation.
pub const VERSION: u8 = 5;

/// Version byte of the RFC 1929 username/password sub-negotiation (request and status).
pub const USERPASS_VERSION: u8 = 1;

/// METHOD value in the server's method choice meaning "none of the offered methods is acceptable".
pub const NO_ACCEPTABLE_METHOD: u8 = 0xFF;

/// Longest UNAME, PASSWD or DOMAINNAME: each is prefixed by a one-byte length.
pub const MAX_FIELD_LEN: usize = 255;

/// ATYP values (RFC 1928 §4).
const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// An authentication method (RFC 1928 §3).
///
/// `Other(0x00)` and `Other(0x02)` are not canonical: [`Method::from_byte`] never produces them,
/// and [`Method::to_byte`] maps them to the same byte as `NoAuth` / `UserPass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// X'00': no authentication required.
    NoAuth,
    /// X'02': username/password (RFC 1929).
    UserPass,
    /// Any other method byte (GSSAPI, IANA-assigned, private, or X'FF').
    Other(u8),
}

impl Method {
    /// The METHOD byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Method::NoAuth => 0x00,
            Method::UserPass => 0x02,
            Method::Other(b) => b,
        }
    }

    /// The method a METHOD byte names; total over all bytes.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => Method::NoAuth,
            0x02 => Method::UserPass,
            other => Method::Other(other),
        }
    }
}

/// A request command (RFC 1928 §4). Variants are alphabetical; the wire values are 2, 1, 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// X'02': BIND. The internal gateway uses it to park a prepared connection.
    Bind,
    /// X'01': CONNECT.
    Connect,
    /// X'03': UDP ASSOCIATE.
    UdpAssociate,
}

impl Command {
    /// The CMD byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Command::Bind => 0x02,
            Command::Connect => 0x01,
            Command::UdpAssociate => 0x03,
        }
    }

    /// The command a CMD byte names, or [`WireError::BadCommand`].
    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        match b {
            0x01 => Ok(Command::Connect),
            0x02 => Ok(Command::Bind),
            0x03 => Ok(Command::UdpAssociate),
            other => Err(WireError::BadCommand(other)),
        }
    }
}

/// DST.ADDR / BND.ADDR: a domain name (for BIND, the logical service name) or an IP address.
///
/// A parsed `Domain` is always non-empty, at most 255 bytes and valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// ATYP X'03'.
    Domain(String),
    /// ATYP X'01' (IPv4) or X'04' (IPv6).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(name) => f.write_str(name),
            Host::Ip(ip) => fmt::Display::fmt(ip, f),
        }
    }
}

/// A client request: VER CMD RSV ATYP DST.ADDR DST.PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub host: Host,
    pub port: u16,
}

/// The client's method-selection message: VER NMETHODS METHODS. Never empty when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<Method>,
}

impl Greeting {
    /// Whether the client offered `m` (compared by wire byte).
    pub fn offers(&self, m: Method) -> bool {
        let wanted = m.to_byte();
        self.methods.iter().any(|o| o.to_byte() == wanted)
    }
}

/// RFC 1929 username and password. Both are opaque bytes; either may be empty on the wire
/// (RFC 1929 asks for 1..=255 bytes, but real clients send empty passwords, so empty is
/// accepted here and the authenticator decides). `Debug` prints the password as `"MASKED"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("password", &"MASKED")
            .finish()
    }
}

/// REP codes (RFC 1928 §6). X'09'..X'FF' are unassigned; [`parse_reply`] passes them through.
pub mod rep {
    pub const SUCCEEDED: u8 = 0;
    pub const GENERAL_FAILURE: u8 = 1;
    pub const NOT_ALLOWED: u8 = 2;
    pub const NETWORK_UNREACHABLE: u8 = 3;
    pub const HOST_UNREACHABLE: u8 = 4;
    pub const CONNECTION_REFUSED: u8 = 5;
    pub const TTL_EXPIRED: u8 = 6;
    pub const COMMAND_NOT_SUPPORTED: u8 = 7;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;
}

/// A server reply: VER REP RSV ATYP BND.ADDR BND.PORT. `rep` is any byte (see [`rep`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rep: u8,
    pub host: Host,
    pub port: u16,
}

/// Why a SOCKS5 message was rejected (or, for encoders, could not be written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// ATYP was not 1 (IPv4), 3 (domain) or 4 (IPv6).
    #[error("unsupported SOCKS5 address type {0:#04x}")]
    BadAddressType(u8),
    /// The RFC 1929 sub-negotiation version was not 1.
    #[error("bad SOCKS5 username/password version {0:#04x}")]
    BadAuthVersion(u8),
    /// CMD was not 1 (CONNECT), 2 (BIND) or 3 (UDP ASSOCIATE).
    #[error("unsupported SOCKS5 command {0:#04x}")]
    BadCommand(u8),
    /// A domain name was empty or not valid UTF-8.
    #[error("empty or non-UTF-8 SOCKS5 domain name")]
    BadDomain,
    /// VER was not 5.
    #[error("bad SOCKS version {0:#04x}")]
    BadVersion(u8),
    /// A greeting offered zero methods.
    #[error("SOCKS5 greeting offers no methods")]
    NoMethods,
    /// RSV was not 0.
    #[error("SOCKS5 reserved byte is {0:#04x}, not 0")]
    ReservedNotZero(u8),
    /// A field to encode is longer than its one-byte length prefix allows (255).
    #[error("SOCKS5 field longer than 255 bytes")]
    TooLong,
}

impl WireError {
    /// Stable snake_case label for metrics (never free text).
    pub fn label(&self) -> &'static str {
        match self {
            WireError::BadAddressType(_) => "bad_address_type",
            WireError::BadAuthVersion(_) => "bad_auth_version",
            WireError::BadCommand(_) => "bad_command",
            WireError::BadDomain => "bad_domain",
            WireError::BadVersion(_) => "bad_version",
            WireError::NoMethods => "no_methods",
            WireError::ReservedNotZero(_) => "reserved_not_zero",
            WireError::TooLong => "too_long",
        }
    }
}

/// Result of an incremental parse: `None` = need more bytes; `Some((value, consumed))`.
pub type Parsed<T> = Result<Option<(T, usize)>, WireError>;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Checks the version byte `input[0]` against `expected`, if present. `Ok(false)` = need more bytes.
fn check_version(input: &[u8], expected: u8, err: fn(u8) -> WireError) -> Result<bool, WireError> {
    match input.first() {
        None => Ok(false),
        Some(&v) if v == expected => Ok(true),
        Some(&v) => Err(err(v)),
    }
}

/// Reads a big-endian u16 at `at`, if present.
fn port_at(input: &[u8], at: usize) -> Option<u16> {
    input
        .get(at..)
        .and_then(|s| s.first_chunk::<2>())
        .map(|b| u16::from_be_bytes(*b))
}

/// Parses ATYP ADDR PORT starting at `input[0]`: returns host, port and bytes consumed.
fn parse_address(input: &[u8]) -> Parsed<(Host, u16)> {
    let Some(&atyp) = input.first() else {
        return Ok(None);
    };
    let (host, port_at_offset) = match atyp {
        ATYP_IPV4 => {
            let Some(b) = input.get(1..).and_then(|s| s.first_chunk::<4>()) else {
                return Ok(None);
            };
            (Host::Ip(IpAddr::V4(Ipv4Addr::from(*b))), 1 + 4)
        }
        ATYP_IPV6 => {
            let Some(b) = input.get(1..).and_then(|s| s.first_chunk::<16>()) else {
                return Ok(None);
            };
            (Host::Ip(IpAddr::V6(Ipv6Addr::from(*b))), 1 + 16)
        }
        ATYP_DOMAIN => {
            let Some((raw, end)) = nonempty_field(input, 1, WireError::BadDomain)? else {
                return Ok(None);
            };
            let name = std::str::from_utf8(raw).map_err(|_| WireError::BadDomain)?;
            (Host::Domain(name.to_owned()), end)
        }
        other => return Err(WireError::BadAddressType(other)),
    };
    let Some(port) = port_at(input, port_at_offset) else {
        return Ok(None);
    };
    Ok(Some(((host, port), port_at_offset + 2)))
}

/// Appends ATYP ADDR PORT for an IP socket address.
fn encode_ip(ip: IpAddr, port: u16, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
}

/// Appends ATYP ADDR PORT for any host; `out` is untouched on error.
fn encode_address(host: &Host, port: u16, out: &mut Vec<u8>) -> Result<(), WireError> {
    match host {
        Host::Ip(ip) => encode_ip(*ip, port, out),
        Host::Domain(name) => {
            if name.is_empty() {
                return Err(WireError::BadDomain);
            }
            let len = u8::try_from(name.len()).map_err(|_| WireError::TooLong)?;
            out.push(ATYP_DOMAIN);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    Ok(())
}

/// Parses a one-byte-length-prefixed field at `at`: returns the field and the offset after it.
fn length_prefixed(input: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(*input.get(at)?);
    let end = at + 1 + len;
    Some((input.get(at + 1..end)?, end))
}

/// Parses a one-byte-length-prefixed field at `at` that may not be empty (`empty` when its
/// length is 0, told as soon as the length byte is in): the field and the offset after it.
fn nonempty_field(input: &[u8], at: usize, empty: WireError) -> Parsed<&[u8]> {
    match input.get(at) {
        None => Ok(None),
        Some(0) => Err(empty),
        Some(_) => Ok(length_prefixed(input, at)),
    }
}

// ---------------------------------------------------------------------------------------------
// Server side (DMZ gateway): parsers
// ---------------------------------------------------------------------------------------------

/// Parses the client greeting `VER NMETHODS METHODS`. Zero methods is [`WireError::NoMethods`].
pub fn parse_greeting(input: &[u8]) -> Parsed<Greeting> {
    if !check_version(input, VERSION, WireError::BadVersion)? {
        return Ok(None);
    }
    let Some((raw, end)) = nonempty_field(input, 1, WireError::NoMethods)? else {
        return Ok(None);
    };
    let methods = raw.iter().map(|&b| Method::from_byte(b)).collect();
    Ok(Some((Greeting { methods }, end)))
}

/// Parses the RFC 1929 request `VER=1 ULEN UNAME PLEN PASSWD`. Empty fields are accepted.
pub fn parse_userpass(input: &[u8]) -> Parsed<Credentials> {
    if !check_version(input, USERPASS_VERSION, WireError::BadAuthVersion)? {
        return Ok(None);
    }
    let Some((user, after_user)) = length_prefixed(input, 1) else {
        return Ok(None);
    };
    let Some((password, end)) = length_prefixed(input, after_user) else {
        return Ok(None);
    };
    let creds = Credentials {
        user: user.to_vec(),
        password: password.to_vec(),
    };
    Ok(Some((creds, end)))
}

/// Parses a request `VER CMD RSV ATYP DST.ADDR DST.PORT`. ATYP must be 1, 3 or 4; a domain must
/// be non-empty valid UTF-8.
pub fn parse_request(input: &[u8]) -> Parsed<Request> {
    if !check_version(input, VERSION, WireError::BadVersion)? {
        return Ok(None);
    }
    let Some(&cmd) = input.get(1) else {
        return Ok(None);
    };
    let command = Command::from_byte(cmd)?;
    let Some(&rsv) = input.get(2) else {
        return Ok(None);
    };
    if rsv != 0 {
        return Err(WireError::ReservedNotZero(rsv));
    }
    // `input.get(2)` succeeded above, so `3..` is in bounds.
    let Some(((host, port), n)) = parse_address(&input[3..])? else {
        return Ok(None);
    };
    let request = Request {
        command,
        host,
        port,
    };
    Ok(Some((request, 3 + n)))
}

// ---------------------------------------------------------------------------------------------
// Server side (DMZ gateway): encoders
// ---------------------------------------------------------------------------------------------

/// Appends the method choice `[5, method]`; use [`NO_ACCEPTABLE_METHOD`] to refuse.
pub fn encode_method_choice(method: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, method]);
}

/// Appends the RFC 1929 status: `[1, 0]` on success, `[1, 1]` on failure.
pub fn encode_userpass_status(ok: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&[USERPASS_VERSION, if ok { 0 } else { 1 }]);
}

/// Appends a reply `VER REP RSV ATYP BND.ADDR BND.PORT`: 10 bytes for IPv4, 22 for IPv6.
pub fn encode_reply(rep: u8, addr: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, rep, 0]);
    encode_ip(addr.ip(), addr.port(), out);
}

// ---------------------------------------------------------------------------------------------
// Client side (internal gateway)
// ---------------------------------------------------------------------------------------------

/// Appends the greeting `VER NMETHODS METHODS`.
///
/// At most 255 methods fit; any beyond the 255th are not sent (there are only 256 method bytes,
/// so a longer list necessarily repeats one). An empty list encodes NMETHODS=0, which servers
/// (including [`parse_greeting`]) reject.
pub fn encode_greeting(methods: &[Method], out: &mut Vec<u8>) {
    debug_assert!(
        methods.len() <= MAX_FIELD_LEN,
        "more than 255 SOCKS5 methods"
    );
    let methods = &methods[..methods.len().min(MAX_FIELD_LEN)];
    let n = u8::try_from(methods.len()).unwrap_or(u8::MAX);
    out.reserve(2 + methods.len());
    out.extend_from_slice(&[VERSION, n]);
    out.extend(methods.iter().map(|m| m.to_byte()));
}

/// Appends the RFC 1929 request `VER=1 ULEN UNAME PLEN PASSWD`.
/// A user or password longer than 255 bytes is [`WireError::TooLong`]; `out` is then untouched.
pub fn encode_userpass(creds: &Credentials, out: &mut Vec<u8>) -> Result<(), WireError> {
    let ulen = u8::try_from(creds.user.len()).map_err(|_| WireError::TooLong)?;
    let plen = u8::try_from(creds.password.len()).map_err(|_| WireError::TooLong)?;
    out.reserve(3 + creds.user.len() + creds.password.len());
    out.extend_from_slice(&[USERPASS_VERSION, ulen]);
    out.extend_from_slice(&creds.user);
    out.push(plen);
    out.extend_from_slice(&creds.password);
    Ok(())
}

/// Appends a request `VER CMD RSV ATYP DST.ADDR DST.PORT`.
/// A domain longer than 255 bytes is [`WireError::TooLong`], an empty one [`WireError::BadDomain`];
/// `out` is then untouched.
pub fn encode_request(
    command: Command,
    host: &Host,
    port: u16,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[VERSION, command.to_byte(), 0]);
    encode_address(host, port, out).inspect_err(|_| out.truncate(start))
}

/// Parses the server's method choice `[5, METHOD]`; METHOD may be [`NO_ACCEPTABLE_METHOD`].
pub fn parse_method_choice(input: &[u8]) -> Parsed<u8> {
    if !check_version(input, VERSION, WireError::BadVersion)? {
        return Ok(None);
    }
    let Some(&method) = input.get(1) else {
        return Ok(None);
    };
    Ok(Some((method, 2)))
}

/// Parses the RFC 1929 status `[1, STATUS]`: `true` iff STATUS is 0.
pub fn parse_userpass_status(input: &[u8]) -> Parsed<bool> {
    if !check_version(input, USERPASS_VERSION, WireError::BadAuthVersion)? {
        return Ok(None);
    }
    let Some(&status) = input.get(1) else {
        return Ok(None);
    };
    Ok(Some((status == 0, 2)))
}

/// Parses a reply `VER REP RSV ATYP BND.ADDR BND.PORT`. Any REP byte is accepted and returned;
/// the address rules are those of [`parse_request`].
pub fn parse_reply(input: &[u8]) -> Parsed<Reply> {
    if !check_version(input, VERSION, WireError::BadVersion)? {
        return Ok(None);
    }
    let Some(&rep) = input.get(1) else {
        return Ok(None);
    };
    let Some(&rsv) = input.get(2) else {
        return Ok(None);
    };
    if rsv != 0 {
        return Err(WireError::ReservedNotZero(rsv));
    }
    // `input.get(2)` succeeded above, so `3..` is in bounds.
    let Some(((host, port), n)) = parse_address(&input[3..])? else {
        return Ok(None);
    };
    Ok(Some((Reply { rep, host, port }, 3 + n)))
}

#[cfg(test)]
mod tests;
