//! HAProxy PROXY protocol codec: the v1 text line and the v2 binary header
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
//!
//! What it does: [`parse_header`] reads the header a load balancer sends before the client's
//! bytes and tells the client's original source and destination addresses, or that the header
//! carries none ([`Addresses::Unknown`]: v1 `UNKNOWN`, v2 `LOCAL`, v2 `AF_UNSPEC`).
//! It is incremental like the other codecs: `Ok(None)` means "need more bytes",
//! `Ok(Some((header, consumed)))` means a complete header was parsed from `input[..consumed]`, and
//! `input[consumed..]` is the client's first payload, which belongs to the next layer (wire rule
//! 1). Waiting is bounded: a prefix that cannot start a header, a v1 line without CRLF within
//! [`MAX_V1_LEN`] bytes, or a v2 header announcing more than [`MAX_V2_LEN`] bytes is an error as
//! soon as it is visible. v2 TLVs are checked to fit in the header, then consumed and skipped;
//! a v2 `LOCAL` header's family and address block are ignored, as the spec asks.
//! [`encode_header`] writes either version for TCP over IPv4 or IPv6, [`encode_unknown`] one
//! without addresses, both straight into the caller's `Vec`; [`Encoded`] holds either inline
//! for a caller that must not allocate. The line and header are parsed by the `ppp` crate;
//! this module frames them (completeness, length bounds, early rejection) and maps the result
//! to our types. The encoder is written here (a few spec-defined bytes; the tests check it
//! against `ppp`'s builder). No input panics.
//!
//! What it does not do: no I/O, no clock, no state between calls (the caller keeps its buffer),
//! no policy: which peers must, may or must not send a header, and whether to trust the
//! addresses, are the caller's decisions. UDP (v2 `DGRAM`) and Unix-socket (v2 `AF_UNIX`)
//! headers are rejected as unsupported; TLV contents (ALPN, SSL, cloud endpoint ids, CRC32C) are
//! not interpreted or checked.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// The v1 line starts with these 6 bytes.
pub const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12-byte v2 signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Longest v1 line, CRLF included (the spec's worst case: `UNKNOWN` followed by two
/// full-length IPv6 addresses and ports).
pub const MAX_V1_LEN: usize = 107;

/// Fixed part of a v2 header: signature, version/command, family/protocol, 2-byte length.
pub const V2_FIXED_LEN: usize = 16;

/// Longest v2 header accepted: the fixed part plus 536 bytes of addresses and TLVs.
///
/// The length field allows 65535 bytes, but a peer that has not been admitted yet must not make
/// us hold that much. 536 bytes (the minimum IPv4 MSS, RFC 879) hold the largest address block
/// (216 bytes for `AF_UNIX`; 36 for TCP over IPv6) plus 300 bytes of TLVs, well above what
/// load balancers send (AWS NLB's VPC endpoint id, Azure's link id, GCP's PSC id, ALPN,
/// authority, a short SSL TLV).
pub const MAX_V2_LEN: usize = V2_FIXED_LEN + 536;

/// Which version of the protocol a header is written in. Variants follow the spec's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The human-readable text line.
    V1,
    /// The binary header.
    V2,
}

/// What the header says about the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// TCP over IPv4 or IPv6: the client's address as the proxy saw it (`source`) and the
    /// address the client connected to (`destination`). Both have the same family.
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// No addresses: v1 `UNKNOWN`, v2 `LOCAL` (a health check by the proxy itself), or v2
    /// `PROXY` with `AF_UNSPEC`. The spec asks the receiver to use the connection's own
    /// endpoints.
    Unknown,
}

/// A parsed PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: Version,
    pub addresses: Addresses,
}

/// Why a PROXY header was rejected (or, for [`encode_header`], could not be written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// A v1 address is not a valid IPv4 (`TCP4`) or IPv6 (`TCP6`) literal.
    #[error("PROXY v1 header has an invalid address")]
    BadAddress,
    /// The v2 command nibble was neither 0 (`LOCAL`) nor 1 (`PROXY`).
    #[error("PROXY v2 command {0:#x} is neither LOCAL nor PROXY")]
    BadCommand(u8),
    /// A v1 port is not a decimal number in 0..=65535 without leading zeros.
    #[error("PROXY v1 header has an invalid port")]
    BadPort,
    /// The v2 version nibble (the high nibble of byte 13) was not 2.
    #[error("PROXY v2 version {0:#x}, not 2")]
    BadVersion(u8),
    /// The v1 line or v2 header is otherwise not well-formed: a missing or extra field, a
    /// separator other than one space, CR without LF, a non-ASCII byte, a v2 length too
    /// short for its address block, or a v2 TLV that does not fit in the header.
    #[error("malformed PROXY header")]
    Malformed,
    /// The input starts neither with `PROXY ` (v1) nor with the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// The v1 line has no CRLF within 107 bytes, or the v2 header announces more than
    /// [`MAX_V2_LEN`] bytes.
    #[error("PROXY header longer than its maximum")]
    TooLong,
    /// The v2 address family is `AF_UNIX` (3) or not assigned; the nibble is given.
    #[error("unsupported PROXY v2 address family {0:#x}")]
    UnsupportedFamily(u8),
    /// The v1 protocol word is not `TCP4`, `TCP6` or `UNKNOWN`, or the v2 transport is not
    /// `STREAM` (UDP, or unspecified with an IP family).
    #[error("unsupported PROXY protocol or transport")]
    UnsupportedProtocol,
}

impl ProxyError {
    /// Stable snake_case label for metrics (never free text).
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::BadAddress => "bad_address",
            ProxyError::BadCommand(_) => "bad_command",
            ProxyError::BadPort => "bad_port",
            ProxyError::BadVersion(_) => "bad_version",
            ProxyError::Malformed => "malformed",
            ProxyError::NotProxy => "not_proxy",
            ProxyError::TooLong => "too_long",
            ProxyError::UnsupportedFamily(_) => "unsupported_family",
            ProxyError::UnsupportedProtocol => "unsupported_protocol",
        }
    }
}

/// Result of an incremental parse: `None` = need more bytes; `Some((header, consumed))`.
pub type Parsed<T> = Result<Option<(T, usize)>, ProxyError>;

/// Parses a v1 or v2 header at the start of `input`, dispatching on its first byte.
///
/// `Ok(None)` only while `input` is a strict prefix of a header that could still be valid and
/// shorter than the maximum; `input[consumed..]` is not looked at and belongs to the next layer.
pub fn parse_header(input: &[u8]) -> Parsed<ProxyHeader> {
    match input.first() {
        None => Ok(None),
        Some(&b) if b == V1_PREFIX[0] => parse_v1(input),
        Some(&b) if b == V2_SIGNATURE[0] => parse_v2(input),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Largest header the encoders write: a v1 `TCP6` line with two full-length IPv6 addresses
/// and 5-digit ports is 104 bytes; the v2 IPv6 header is 52.
pub const MAX_ENCODED_LEN: usize = 104;

/// Appends a `version` header saying the connection came from `source` to `destination` over
/// TCP.
///
/// If one address is IPv4 and the other IPv6, the IPv4 one is written as its IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`) and the header is `TCP6` / `AF_INET6`: the header has one family
/// for both, and this keeps both addresses instead of refusing or dropping to `UNKNOWN`. A
/// parser then returns both as IPv6. Written straight into `out` (no intermediate buffer);
/// never more than [`MAX_ENCODED_LEN`] bytes.
pub fn encode_header(
    version: Version,
    source: SocketAddr,
    destination: SocketAddr,
    out: &mut Vec<u8>,
) {
    write_header(version, source, destination, out);
}

/// Appends a `version` header that carries no addresses: v1 `PROXY UNKNOWN`, v2 `LOCAL`.
/// For a connection whose client address is not known (a BIND reply naming a host, not an
/// address): the receiver then uses the connection's own endpoints.
pub fn encode_unknown(version: Version, out: &mut Vec<u8>) {
    write_unknown(version, out);
}

/// An encoded header held inline, for a caller that must not allocate per connection (the
/// worker writes it on a back-end socket before anything else).
#[derive(Clone, Copy)]
pub struct Encoded {
    bytes: [u8; MAX_ENCODED_LEN],
    len: usize,
}

impl Encoded {
    /// The header for `addresses` in `version`: [`encode_header`]'s bytes for
    /// [`Addresses::Tcp`], [`encode_unknown`]'s for [`Addresses::Unknown`].
    pub fn new(version: Version, addresses: Addresses) -> Encoded {
        let mut encoded = Encoded {
            bytes: [0; MAX_ENCODED_LEN],
            len: 0,
        };
        match addresses {
            Addresses::Tcp {
                source,
                destination,
            } => write_header(version, source, destination, &mut encoded),
            Addresses::Unknown => write_unknown(version, &mut encoded),
        }
        encoded
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded(\"{}\")", self.as_bytes().escape_ascii())
    }
}

/// Where the encoders write: a `Vec` (appended to) or an [`Encoded`].
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Encoded {
    fn put(&mut self, bytes: &[u8]) {
        // The encoders write at most MAX_ENCODED_LEN bytes (tests check the worst cases); a
        // bug here truncates the header (the peer then rejects it) rather than panicking.
        let end = (self.len + bytes.len()).min(MAX_ENCODED_LEN);
        debug_assert_eq!(
            end,
            self.len + bytes.len(),
            "header longer than MAX_ENCODED_LEN"
        );
        self.bytes[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }
}

/// A [`Sink`] as a `fmt::Write`, for the v1 line's addresses and ports (formatted by
/// `Display`, which needs no heap).
struct Fmt<'a, S>(&'a mut S);

impl<S: Sink> std::fmt::Write for Fmt<'_, S> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put(s.as_bytes());
        Ok(())
    }
}

fn write_header(
    version: Version,
    source: SocketAddr,
    destination: SocketAddr,
    out: &mut impl Sink,
) {
    let (source, destination) = same_family(source, destination);
    match version {
        Version::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            // Infallible: both sinks' `write_str` always succeed.
            let _ = write!(
                Fmt(out),
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            );
        }
        Version::V2 => {
            out.put(V2_SIGNATURE);
            match (source, destination) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    // Version 2, PROXY; AF_INET, STREAM; 12 bytes of addresses.
                    out.put(&[0x21, 0x11, 0, 12]);
                    out.put(&s.ip().octets());
                    out.put(&d.ip().octets());
                }
                (s, d) => {
                    // Version 2, PROXY; AF_INET6, STREAM; 36 bytes of addresses.
                    out.put(&[0x21, 0x21, 0, 36]);
                    out.put(&ipv6_octets(s.ip()));
                    out.put(&ipv6_octets(d.ip()));
                }
            }
            out.put(&source.port().to_be_bytes());
            out.put(&destination.port().to_be_bytes());
        }
    }
}

fn write_unknown(version: Version, out: &mut impl Sink) {
    match version {
        Version::V1 => out.put(b"PROXY UNKNOWN\r\n"),
        Version::V2 => {
            out.put(V2_SIGNATURE);
            // Version 2, command LOCAL; AF_UNSPEC, UNSPEC; no address block.
            out.put(&[0x20, 0x00, 0x00, 0x00]);
        }
    }
}

/// An address of a pair [`same_family`] made IPv6 (an IPv4 one only if both are IPv4, which
/// the caller matched first).
fn ipv6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    }
}

/// `source` and `destination` in one family: unchanged if they already are, else both IPv6
/// with the IPv4 one mapped.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    fn v6(a: SocketAddr) -> SocketAddr {
        match a.ip() {
            IpAddr::V4(ip) => {
                SocketAddr::V6(SocketAddrV6::new(ip.to_ipv6_mapped(), a.port(), 0, 0))
            }
            IpAddr::V6(_) => a,
        }
    }
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (v6(source), v6(destination))
    }
}

// ---------------------------------------------------------------------------------------------
// v1: "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
// ---------------------------------------------------------------------------------------------

/// Frames the v1 line (prefix, printable ASCII, CRLF within [`MAX_V1_LEN`]) and hands the
/// complete line to `ppp`. `ppp` is only ever given a whole line: its answers on a partial line
/// depend on where the line was cut.
fn parse_v1(input: &[u8]) -> Parsed<ProxyHeader> {
    let seen = input.len().min(V1_PREFIX.len());
    if input[..seen] != V1_PREFIX[..seen] {
        return Err(ProxyError::NotProxy);
    }
    // The CR of a line of at most MAX_V1_LEN bytes sits at an index below MAX_V1_LEN - 1.
    let window = &input[..input.len().min(MAX_V1_LEN - 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if !printable(window) {
            // A LF without CR, a NUL, binary or UTF-8: never a v1 line.
            return Err(ProxyError::Malformed);
        }
        return if input.len() >= MAX_V1_LEN - 1 {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    if !printable(&window[..cr]) {
        return Err(ProxyError::Malformed);
    }
    match input.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::Malformed),
    }
    let line = &input[..cr + 2];
    if !ports_are_decimal(&line[..cr]) {
        return Err(ProxyError::BadPort);
    }
    let header = ppp::v1::Header::try_from(line).map_err(v1_error)?;
    let addresses = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Addresses::Tcp {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        ppp::v1::Addresses::Tcp6(a) => Addresses::Tcp {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        ppp::v1::Addresses::Unknown => Addresses::Unknown,
    };
    let parsed = ProxyHeader {
        version: Version::V1,
        addresses,
    };
    Ok(Some((parsed, line.len())))
}

/// Whether a `TCP4`/`TCP6` line's two ports (its last two fields) are plain decimal numbers
/// without a sign or a leading zero, as the spec writes them (`ppp` alone would take `+1`
/// and `01`). Other lines (`UNKNOWN`, a wrong field count) are left to `ppp`.
fn ports_are_decimal(line: &[u8]) -> bool {
    let fields = line.split(|&b| b == b' ');
    let tcp = matches!(fields.clone().nth(1), Some(b"TCP4" | b"TCP6"));
    if !tcp || fields.clone().count() != 6 {
        return true;
    }
    fields.skip(4).all(|p| {
        !p.is_empty() && p.iter().all(u8::is_ascii_digit) && (p.len() == 1 || p[0] != b'0')
    })
}

/// Whether `bytes` are all printable US-ASCII (space to `~`), as a v1 line before its CRLF is.
fn printable(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (b' '..=b'~').contains(b))
}

/// Maps `ppp`'s v1 errors on a complete line to ours.
fn v1_error(e: ppp::v1::BinaryParseError) -> ProxyError {
    use ppp::v1::{BinaryParseError, ParseError as P};
    match e {
        BinaryParseError::InvalidUtf8(_) => ProxyError::Malformed,
        BinaryParseError::Parse(p) => match p {
            P::InvalidSourceAddress(_) | P::InvalidDestinationAddress(_) => ProxyError::BadAddress,
            P::InvalidSourcePort(_) | P::InvalidDestinationPort(_) => ProxyError::BadPort,
            P::InvalidProtocol => ProxyError::UnsupportedProtocol,
            P::HeaderTooLong => ProxyError::TooLong,
            P::InvalidPrefix => ProxyError::NotProxy,
            // A complete line that lacks a field or has a bad suffix: not a partial line.
            P::Partial
            | P::MissingPrefix
            | P::MissingNewLine
            | P::MissingProtocol
            | P::MissingSourceAddress
            | P::MissingDestinationAddress
            | P::MissingSourcePort
            | P::MissingDestinationPort
            | P::InvalidSuffix => ProxyError::Malformed,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// v2: signature, ver/cmd, fam/proto, length, addresses, TLVs
// ---------------------------------------------------------------------------------------------

/// Byte 13: version (high nibble) and command (low nibble).
const V2_VERSION_COMMAND: usize = 12;
/// Byte 14: address family (high nibble) and transport protocol (low nibble).
const V2_FAMILY_PROTOCOL: usize = 13;

/// Checks what of the fixed part is visible (so a bad byte is an error at once), bounds the
/// length, and hands exactly the announced header to `ppp`.
fn parse_v2(input: &[u8]) -> Parsed<ProxyHeader> {
    let seen = input.len().min(V2_SIGNATURE.len());
    if input[..seen] != V2_SIGNATURE[..seen] {
        return Err(ProxyError::NotProxy);
    }
    if let Some(&b) = input.get(V2_VERSION_COMMAND) {
        if b >> 4 != 2 {
            return Err(ProxyError::BadVersion(b >> 4));
        }
        if b & 0x0f > 1 {
            return Err(ProxyError::BadCommand(b & 0x0f));
        }
    }
    // LOCAL (a proxy's own health check): the family and address block are ignored.
    let local = input
        .get(V2_VERSION_COMMAND)
        .is_some_and(|&b| b & 0x0f == 0);
    if let Some(&b) = input.get(V2_FAMILY_PROTOCOL).filter(|_| !local) {
        if b >> 4 > 3 {
            return Err(ProxyError::UnsupportedFamily(b >> 4));
        }
        if b & 0x0f > 2 {
            return Err(ProxyError::UnsupportedProtocol);
        }
    }
    let Some(len) = input
        .get(V2_FIXED_LEN - 2..)
        .and_then(|s| s.first_chunk::<2>())
    else {
        return Ok(None);
    };
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes(*len));
    if total > MAX_V2_LEN {
        return Err(ProxyError::TooLong);
    }
    let Some(bytes) = input.get(..total) else {
        return Ok(None);
    };
    if local {
        // The spec: accept it and discard the protocol block, whatever it holds.
        let parsed = ProxyHeader {
            version: Version::V2,
            addresses: Addresses::Unknown,
        };
        return Ok(Some((parsed, total)));
    }
    let header = ppp::v2::Header::try_from(bytes).map_err(v2_error)?;
    debug_assert_eq!(header.len(), total);
    // TLVs are skipped, but each must fit in the header (the spec's rule; HAProxy rejects too).
    if header.tlvs().any(|tlv| tlv.is_err()) {
        return Err(ProxyError::Malformed);
    }
    let addresses = v2_addresses(&header)?;
    let parsed = ProxyHeader {
        version: Version::V2,
        addresses,
    };
    Ok(Some((parsed, total)))
}

/// What a well-formed v2 header means for us.
fn v2_addresses(header: &ppp::v2::Header<'_>) -> Result<Addresses, ProxyError> {
    use ppp::v2::{Addresses as A, Protocol};
    match (header.addresses, header.protocol) {
        // AF_UNSPEC goes only with UNSPEC (0x00); the spec has receivers reject 0x01, 0x02.
        (A::Unspecified, Protocol::Unspecified) => Ok(Addresses::Unknown),
        (A::Unspecified, _) => Err(ProxyError::UnsupportedProtocol),
        (A::Unix(_), _) => Err(ProxyError::UnsupportedFamily(3)),
        (_, Protocol::Datagram | Protocol::Unspecified) => Err(ProxyError::UnsupportedProtocol),
        (A::IPv4(a), Protocol::Stream) => Ok(Addresses::Tcp {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        }),
        (A::IPv6(a), Protocol::Stream) => Ok(Addresses::Tcp {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        }),
    }
}

/// Maps `ppp`'s v2 errors on a complete header to ours. The fixed part was checked above, so
/// only the length check is expected here; the rest keep their meaning.
fn v2_error(e: ppp::v2::ParseError) -> ProxyError {
    use ppp::v2::ParseError as P;
    match e {
        P::Prefix => ProxyError::NotProxy,
        P::Version(v) => ProxyError::BadVersion(v >> 4),
        P::Command(c) => ProxyError::BadCommand(c),
        P::AddressFamily(f) => ProxyError::UnsupportedFamily(f >> 4),
        P::Protocol(_) => ProxyError::UnsupportedProtocol,
        P::Incomplete(_)
        | P::Partial(..)
        | P::InvalidAddresses(..)
        | P::InvalidTLV(..)
        | P::Leftovers(_) => ProxyError::Malformed,
    }
}

#[cfg(test)]
mod tests;
