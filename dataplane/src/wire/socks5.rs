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
            let Some(&len) = input.get(1) else {
                return Ok(None);
            };
            if len == 0 {
                return Err(WireError::BadDomain);
            }
            let end = 2 + usize::from(len);
            let Some(raw) = input.get(2..end) else {
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

// ---------------------------------------------------------------------------------------------
// Server side (DMZ gateway): parsers
// ---------------------------------------------------------------------------------------------

/// Parses the client greeting `VER NMETHODS METHODS`. Zero methods is [`WireError::NoMethods`].
pub fn parse_greeting(input: &[u8]) -> Parsed<Greeting> {
    if !check_version(input, VERSION, WireError::BadVersion)? {
        return Ok(None);
    }
    let Some(&n) = input.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(WireError::NoMethods);
    }
    let end = 2 + usize::from(n);
    let Some(raw) = input.get(2..end) else {
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HTTP: &[u8] = b"GET / HTTP/1.1\r\n";

    /// Any of the module's parsers, mapped to a common message type.
    type Parser<M> = fn(&[u8]) -> Parsed<M>;

    fn v4() -> SocketAddr {
        "192.0.2.7:8443".parse().expect("literal address")
    }

    fn v6() -> SocketAddr {
        "[2001:db8::1:2]:65535".parse().expect("literal address")
    }

    fn hosts() -> Vec<Host> {
        vec![
            Host::Domain("echo".to_owned()),
            Host::Domain("ünïcode.example".to_owned()),
            Host::Domain("x".repeat(255)),
            Host::Ip(v4().ip()),
            Host::Ip(v6().ip()),
        ]
    }

    fn creds(user: &[u8], password: &[u8]) -> Credentials {
        Credentials {
            user: user.to_vec(),
            password: password.to_vec(),
        }
    }

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    fn request_bytes(command: Command, host: &Host, port: u16) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(command, host, port, &mut out).expect("valid request");
        out
    }

    /// A reply with any host: a reply has the same layout as a request with CMD replaced by REP.
    fn reply_bytes(rep: u8, host: &Host, port: u16) -> Vec<u8> {
        let mut out = request_bytes(Command::Connect, host, port);
        out[1] = rep;
        out
    }

    /// Wire rule 4 for one message: every strict prefix needs more bytes, the whole message
    /// parses to `expected`, and coalesced trailing bytes are left for the next layer.
    fn assert_segmentation_invariant<T: PartialEq + fmt::Debug>(
        parse: Parser<T>,
        msg: &[u8],
        expected: &T,
    ) {
        for k in 0..msg.len() {
            assert_eq!(parse(&msg[..k]), Ok(None), "prefix of {k} bytes of {msg:?}");
        }
        let (value, n) = parse(msg).expect("valid").expect("complete");
        assert_eq!((&value, n), (expected, msg.len()));

        let mut stream = msg.to_vec();
        stream.extend_from_slice(HTTP);
        let (value, n) = parse(&stream).expect("valid").expect("complete");
        assert_eq!((&value, n), (expected, msg.len()));
        assert_eq!(&stream[n..], HTTP, "leftover belongs to the next layer");
    }

    #[test]
    fn method_bytes_round_trip() {
        for b in 0..=u8::MAX {
            assert_eq!(Method::from_byte(b).to_byte(), b);
        }
        assert_eq!(Method::from_byte(0), Method::NoAuth);
        assert_eq!(Method::from_byte(2), Method::UserPass);
        assert_eq!(Method::from_byte(1), Method::Other(1));
        for c in [Command::Bind, Command::Connect, Command::UdpAssociate] {
            assert_eq!(Command::from_byte(c.to_byte()), Ok(c));
        }
        assert_eq!(Command::Bind.to_byte(), 2);
        assert_eq!(Command::Connect.to_byte(), 1);
        assert_eq!(Command::UdpAssociate.to_byte(), 3);
    }

    #[test]
    fn greeting_round_trip_and_offers() {
        let methods = vec![Method::NoAuth, Method::UserPass, Method::Other(0x80)];
        let bytes = enc(|o| encode_greeting(&methods, o));
        assert_eq!(bytes, [5, 3, 0, 2, 0x80]);
        let expected = Greeting { methods };
        assert_segmentation_invariant(parse_greeting, &bytes, &expected);
        assert!(expected.offers(Method::UserPass));
        assert!(expected.offers(Method::Other(0)), "compared by wire byte");
        assert!(!expected.offers(Method::Other(1)));
    }

    #[test]
    fn greeting_with_255_methods() {
        let methods: Vec<Method> = (0..=254).map(Method::from_byte).collect();
        let bytes = enc(|o| encode_greeting(&methods, o));
        assert_eq!(bytes.len(), 257);
        assert_segmentation_invariant(parse_greeting, &bytes, &Greeting { methods });
    }

    #[test]
    fn method_choice_round_trip() {
        for m in [0, 2, NO_ACCEPTABLE_METHOD] {
            let bytes = enc(|o| encode_method_choice(m, o));
            assert_eq!(bytes, [5, m]);
            assert_segmentation_invariant(parse_method_choice, &bytes, &m);
        }
    }

    #[test]
    fn userpass_round_trip() {
        let cases = [
            creds(b"alice", b"s3cret"),
            creds(b"", b""),
            creds(&[0xff; 255], &[0; 255]),
        ];
        for c in cases {
            let bytes = enc(|o| encode_userpass(&c, o).expect("fits"));
            assert_eq!(bytes.len(), 3 + c.user.len() + c.password.len());
            assert_segmentation_invariant(parse_userpass, &bytes, &c);
        }
    }

    #[test]
    fn userpass_too_long_leaves_out_untouched() {
        let mut out = vec![9];
        assert_eq!(
            encode_userpass(&creds(&[b'u'; 256], b"p"), &mut out),
            Err(WireError::TooLong)
        );
        assert_eq!(
            encode_userpass(&creds(b"u", &[b'p'; 256]), &mut out),
            Err(WireError::TooLong)
        );
        assert_eq!(out, [9]);
    }

    #[test]
    fn userpass_status_round_trip() {
        for ok in [true, false] {
            let bytes = enc(|o| encode_userpass_status(ok, o));
            assert_eq!(bytes, [1, u8::from(!ok)]);
            assert_segmentation_invariant(parse_userpass_status, &bytes, &ok);
        }
        // Any non-zero status is a failure (RFC 1929 §2).
        assert_eq!(parse_userpass_status(&[1, 0x7f]), Ok(Some((false, 2))));
    }

    #[test]
    fn request_round_trip_all_address_types() {
        for command in [Command::Bind, Command::Connect, Command::UdpAssociate] {
            for host in hosts() {
                let bytes = request_bytes(command, &host, 4242);
                let expected = Request {
                    command,
                    host,
                    port: 4242,
                };
                assert_segmentation_invariant(parse_request, &bytes, &expected);
            }
        }
        let bind = request_bytes(Command::Bind, &Host::Domain("echo".to_owned()), 0);
        assert_eq!(bind, [5, 2, 0, 3, 4, b'e', b'c', b'h', b'o', 0, 0]);
    }

    #[test]
    fn request_encoding_errors_leave_out_untouched() {
        let mut out = vec![7];
        let long = Host::Domain("x".repeat(256));
        assert_eq!(
            encode_request(Command::Bind, &long, 1, &mut out),
            Err(WireError::TooLong)
        );
        let empty = Host::Domain(String::new());
        assert_eq!(
            encode_request(Command::Bind, &empty, 1, &mut out),
            Err(WireError::BadDomain)
        );
        assert_eq!(out, [7]);
    }

    #[test]
    fn reply_round_trip_ip() {
        let bytes = enc(|o| encode_reply(rep::SUCCEEDED, v4(), o));
        assert_eq!(bytes, [5, 0, 0, 1, 192, 0, 2, 7, 0x20, 0xfb]);
        let bytes6 = enc(|o| encode_reply(rep::NOT_ALLOWED, v6(), o));
        assert_eq!(bytes6.len(), 22);
        for (bytes, r, addr) in [(bytes, 0, v4()), (bytes6, 2, v6())] {
            let expected = Reply {
                rep: r,
                host: Host::Ip(addr.ip()),
                port: addr.port(),
            };
            assert_segmentation_invariant(parse_reply, &bytes, &expected);
        }
    }

    #[test]
    fn reply_with_domain_and_unassigned_rep() {
        for host in hosts() {
            let bytes = reply_bytes(0x42, &host, 80);
            let expected = Reply {
                rep: 0x42,
                host,
                port: 80,
            };
            assert_segmentation_invariant(parse_reply, &bytes, &expected);
        }
    }

    /// The DMZ side of the two BIND replies: the second reply and the client's first bytes
    /// arrive in one segment.
    #[test]
    fn second_bind_reply_coalesced_with_payload() {
        let mut stream = Vec::new();
        encode_reply(rep::SUCCEEDED, v4(), &mut stream);
        encode_reply(rep::SUCCEEDED, v6(), &mut stream);
        stream.extend_from_slice(HTTP);
        let (first, n1) = parse_reply(&stream).expect("valid").expect("complete");
        assert_eq!(first.host, Host::Ip(v4().ip()));
        let (second, n2) = parse_reply(&stream[n1..])
            .expect("valid")
            .expect("complete");
        assert_eq!(second.host, Host::Ip(v6().ip()));
        assert_eq!(&stream[n1 + n2..], HTTP);
    }

    /// Messages a server parses, in conversation order.
    #[derive(Debug, PartialEq)]
    enum ClientMsg {
        Greeting(Greeting),
        UserPass(Credentials),
        Request(Request),
    }

    /// Messages a client parses, in conversation order.
    #[derive(Debug, PartialEq)]
    enum ServerMsg {
        Choice(u8),
        Status(bool),
        Reply(Reply),
    }

    /// Feeds `chunks` into an accumulating buffer and parses `parsers` in order, each from the
    /// leftover of the previous one; returns the messages and the unparsed tail.
    fn drive<M>(chunks: &[&[u8]], parsers: &[Parser<M>]) -> (Vec<M>, Vec<u8>) {
        let mut buf = Vec::new();
        let mut msgs = Vec::new();
        let mut next = parsers.iter();
        let mut parser = next.next();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(p) = parser {
                match p(&buf).expect("valid stream") {
                    None => break,
                    Some((m, n)) => {
                        assert!(n <= buf.len());
                        msgs.push(m);
                        buf.drain(..n);
                        parser = next.next();
                    }
                }
            }
        }
        (msgs, buf)
    }

    #[test]
    fn whole_client_conversation_at_every_split() {
        let c = creds(b"internal-gw", b"hunter2");
        let req = Request {
            command: Command::Bind,
            host: Host::Domain("echo".to_owned()),
            port: 9000,
        };
        let mut stream = Vec::new();
        encode_greeting(&[Method::NoAuth, Method::UserPass], &mut stream);
        encode_userpass(&c, &mut stream).expect("fits");
        encode_request(req.command, &req.host, req.port, &mut stream).expect("fits");
        stream.extend_from_slice(HTTP);

        let parsers: [Parser<ClientMsg>; 3] = [
            |i| Ok(parse_greeting(i)?.map(|(g, n)| (ClientMsg::Greeting(g), n))),
            |i| Ok(parse_userpass(i)?.map(|(c, n)| (ClientMsg::UserPass(c), n))),
            |i| Ok(parse_request(i)?.map(|(r, n)| (ClientMsg::Request(r), n))),
        ];
        let expected = vec![
            ClientMsg::Greeting(Greeting {
                methods: vec![Method::NoAuth, Method::UserPass],
            }),
            ClientMsg::UserPass(c),
            ClientMsg::Request(req),
        ];
        for k in 0..=stream.len() {
            let (msgs, tail) = drive(&[&stream[..k], &stream[k..]], &parsers);
            assert_eq!(msgs, expected, "split at {k}");
            assert_eq!(tail, HTTP, "split at {k}");
        }
    }

    #[test]
    fn whole_server_conversation_at_every_split() {
        let mut stream = Vec::new();
        encode_method_choice(Method::UserPass.to_byte(), &mut stream);
        encode_userpass_status(true, &mut stream);
        encode_reply(rep::SUCCEEDED, v6(), &mut stream);
        stream.extend_from_slice(HTTP);

        let parsers: [Parser<ServerMsg>; 3] = [
            |i| Ok(parse_method_choice(i)?.map(|(m, n)| (ServerMsg::Choice(m), n))),
            |i| Ok(parse_userpass_status(i)?.map(|(s, n)| (ServerMsg::Status(s), n))),
            |i| Ok(parse_reply(i)?.map(|(r, n)| (ServerMsg::Reply(r), n))),
        ];
        let expected = vec![
            ServerMsg::Choice(2),
            ServerMsg::Status(true),
            ServerMsg::Reply(Reply {
                rep: 0,
                host: Host::Ip(v6().ip()),
                port: v6().port(),
            }),
        ];
        for k in 0..=stream.len() {
            let (msgs, tail) = drive(&[&stream[..k], &stream[k..]], &parsers);
            assert_eq!(msgs, expected, "split at {k}");
            assert_eq!(tail, HTTP, "split at {k}");
        }
    }

    #[test]
    fn malformed_input_is_rejected() {
        use WireError::*;
        // Wrong version, reported from the first byte alone.
        assert_eq!(parse_greeting(&[4]), Err(BadVersion(4)));
        assert_eq!(parse_greeting(b"GET / HTTP/1.1\r\n"), Err(BadVersion(b'G')));
        assert_eq!(parse_request(&[4, 1, 0, 1]), Err(BadVersion(4)));
        assert_eq!(parse_method_choice(&[0x16, 3]), Err(BadVersion(0x16)));
        assert_eq!(parse_reply(&[1]), Err(BadVersion(1)));
        // Zero methods.
        assert_eq!(parse_greeting(&[5, 0]), Err(NoMethods));
        assert_eq!(parse_greeting(&[5, 0, 0, 2]), Err(NoMethods));
        // Bad ATYP.
        assert_eq!(parse_request(&[5, 2, 0, 2]), Err(BadAddressType(2)));
        assert_eq!(parse_request(&[5, 2, 0, 0, 1, 2]), Err(BadAddressType(0)));
        assert_eq!(parse_reply(&[5, 0, 0, 5]), Err(BadAddressType(5)));
        // Bad CMD.
        assert_eq!(parse_request(&[5, 0]), Err(BadCommand(0)));
        assert_eq!(parse_request(&[5, 4, 0, 1]), Err(BadCommand(4)));
        // Non-zero RSV.
        assert_eq!(parse_request(&[5, 2, 1]), Err(ReservedNotZero(1)));
        assert_eq!(parse_reply(&[5, 0, 0xff, 1]), Err(ReservedNotZero(0xff)));
        // Empty domain.
        assert_eq!(parse_request(&[5, 2, 0, 3, 0]), Err(BadDomain));
        assert_eq!(parse_request(&[5, 2, 0, 3, 0, 0, 80]), Err(BadDomain));
        assert_eq!(parse_reply(&[5, 0, 0, 3, 0, 0, 80]), Err(BadDomain));
        // Non-UTF-8 domain, reported before the port arrives.
        assert_eq!(parse_request(&[5, 2, 0, 3, 2, 0xc3, 0x28]), Err(BadDomain));
        assert_eq!(parse_request(&[5, 2, 0, 3, 1, 0xff, 0, 80]), Err(BadDomain));
        // Bad auth version (a client that skipped the sub-negotiation, or an old one).
        assert_eq!(
            parse_userpass(&[5, 1, b'u', 1, b'p']),
            Err(BadAuthVersion(5))
        );
        assert_eq!(parse_userpass(&[0]), Err(BadAuthVersion(0)));
        assert_eq!(parse_userpass_status(&[5, 0]), Err(BadAuthVersion(5)));
    }

    #[test]
    fn labels_are_stable_snake_case() {
        use WireError::*;
        let all = [
            (BadAddressType(0), "bad_address_type"),
            (BadAuthVersion(0), "bad_auth_version"),
            (BadCommand(0), "bad_command"),
            (BadDomain, "bad_domain"),
            (BadVersion(0), "bad_version"),
            (NoMethods, "no_methods"),
            (ReservedNotZero(0), "reserved_not_zero"),
            (TooLong, "too_long"),
        ];
        for (e, label) in all {
            assert_eq!(e.label(), label);
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn credentials_debug_masks_password() {
        let c = creds(b"alice", b"correct horse battery staple");
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(shown.contains("MASKED"), "{shown}");
        assert!(!shown.contains("horse"), "{shown}");
        let pretty = format!("{c:#?}");
        assert!(!pretty.contains("horse"), "{pretty}");
    }

    #[test]
    fn host_display() {
        assert_eq!(Host::Domain("echo".to_owned()).to_string(), "echo");
        assert_eq!(Host::Ip(v4().ip()).to_string(), "192.0.2.7");
        assert_eq!(Host::Ip(v6().ip()).to_string(), "2001:db8::1:2");
    }

    /// Runs every parser on `input`: none may panic, and `consumed` never exceeds the input.
    fn all_parsers_are_total(input: &[u8]) {
        fn check<T>(r: Parsed<T>, len: usize) {
            if let Ok(Some((_, n))) = r {
                assert!(n > 0 && n <= len, "consumed {n} of {len}");
            }
        }
        check(parse_greeting(input), input.len());
        check(parse_userpass(input), input.len());
        check(parse_request(input), input.len());
        check(parse_method_choice(input), input.len());
        check(parse_userpass_status(input), input.len());
        check(parse_reply(input), input.len());
    }

    /// Replays the regression corpus (fuzzer crash inputs and hand-made edge cases).
    #[test]
    fn regression_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/socks5");
        let entries = std::fs::read_dir(dir).expect("corpus directory exists");
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("readable corpus entry").path();
            let input = std::fs::read(&path).expect("readable corpus file");
            all_parsers_are_total(&input);
            count += 1;
        }
        assert!(count > 0, "empty corpus at {dir}");
    }

    fn arb_host() -> impl Strategy<Value = Host> {
        prop_oneof![
            "[a-z0-9.-]{1,255}".prop_map(Host::Domain),
            // At most 4 bytes per char: never above 255 bytes.
            "\\PC{1,63}".prop_map(Host::Domain),
            any::<[u8; 4]>().prop_map(|b| Host::Ip(IpAddr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Host::Ip(IpAddr::from(b))),
        ]
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::Bind),
            Just(Command::Connect),
            Just(Command::UdpAssociate),
        ]
    }

    /// Byte strings that look like the start of a SOCKS message, so parsers get past byte 0.
    fn plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![Just(1u8), Just(5u8), any::<u8>()],
            prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()],
            prop_oneof![Just(0u8), any::<u8>()],
            prop_oneof![Just(1u8), Just(3), Just(4), any::<u8>()],
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(a, b, c, d, rest)| {
                let mut v = vec![a, b, c, d];
                v.extend(rest);
                v
            })
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(
            input in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            all_parsers_are_total(&input);
        }

        #[test]
        fn parsers_never_panic_on_plausible_bytes(input in plausible_bytes()) {
            for k in 0..=input.len() {
                all_parsers_are_total(&input[..k]);
            }
        }

        #[test]
        fn parsers_never_panic_on_mutated_messages(
            command in arb_command(),
            host in arb_host(),
            port in any::<u16>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = request_bytes(command, &host, port);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            for k in 0..=bytes.len() {
                all_parsers_are_total(&bytes[..k]);
            }
        }

        #[test]
        fn request_round_trips(
            command in arb_command(),
            host in arb_host(),
            port in any::<u16>(),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut bytes = request_bytes(command, &host, port);
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            let expected = Request { command, host, port };
            prop_assert_eq!(parse_request(&bytes), Ok(Some((expected, len))));
            prop_assert_eq!(parse_request(&bytes[..len - 1]), Ok(None));
        }

        #[test]
        fn reply_round_trips(
            r in any::<u8>(),
            ip in prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
            ],
            port in any::<u16>(),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let addr = SocketAddr::new(ip, port);
            let mut bytes = enc(|o| encode_reply(r, addr, o));
            let len = bytes.len();
            prop_assert_eq!(len, if ip.is_ipv4() { 10 } else { 22 });
            bytes.extend_from_slice(&tail);
            let expected = Reply { rep: r, host: Host::Ip(ip), port };
            prop_assert_eq!(parse_reply(&bytes), Ok(Some((expected, len))));
        }

        #[test]
        fn domain_reply_round_trips(r in any::<u8>(), host in arb_host(), port in any::<u16>()) {
            let bytes = reply_bytes(r, &host, port);
            let expected = Reply { rep: r, host, port };
            prop_assert_eq!(parse_reply(&bytes), Ok(Some((expected, bytes.len()))));
        }

        #[test]
        fn credentials_round_trip(
            user in proptest::collection::vec(any::<u8>(), 0..=255),
            password in proptest::collection::vec(any::<u8>(), 0..=255),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let c = Credentials { user, password };
            let mut bytes = enc(|o| encode_userpass(&c, o).expect("fits"));
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(parse_userpass(&bytes), Ok(Some((c.clone(), len))));
            let shown = format!("{:?}", c);
            prop_assert!(shown.contains("password: \"MASKED\""), "{}", shown);
        }

        #[test]
        fn greeting_round_trips(
            raw in proptest::collection::vec(any::<u8>(), 1..=255),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let methods: Vec<Method> = raw.iter().map(|&b| Method::from_byte(b)).collect();
            let mut bytes = enc(|o| encode_greeting(&methods, o));
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(parse_greeting(&bytes), Ok(Some((Greeting { methods }, len))));
        }
    }
}
