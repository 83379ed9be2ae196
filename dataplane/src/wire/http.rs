//! The WebSocket opening handshake over HTTP/1.1 (RFC 6455 §4), both sides.
//!
//! What it does: parses and checks a client's upgrade request ([`parse_upgrade_request`]) and
//! encodes the server's answer: `101 Switching Protocols` ([`encode_switching_protocols`]) or an
//! error response whose status comes from the [`HttpError`] ([`encode_error`]). For the client
//! side it encodes the request ([`encode_upgrade_request`], with a key from
//! [`generate_key`]) and checks the server's response ([`parse_upgrade_response`]).
//!
//! Parsers are incremental like every codec in [`crate::wire`]: `Ok(None)` means "the head is not
//! complete yet", `Ok(Some((value, consumed)))` means the head is `input[..consumed]`, and
//! `input[consumed..]` belongs to the WebSocket layer: a client's first frame routinely shares a
//! segment with its request, and a server's first frames with its 101 (wire rule 1). A request
//! that announces a body is rejected, so nothing after the head is ever HTTP. Errors carry the
//! status a server answers with; no input panics, and the head is bounded by
//! [`RequestLimits`].
//!
//! What it does not do: no I/O, no randomness (the caller supplies the key's nonce), no
//! keep-alive (one request per connection: a failed handshake is answered and closed), no
//! extensions (`Sec-WebSocket-Extensions` is ignored in requests and rejected in responses),
//! no policy (which paths, origins, hosts or subprotocols to accept is the caller's), and no
//! HTTP/2 or HTTP/3 WebSocket bootstrapping (RFC 8441, RFC 9220).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only `Sec-WebSocket-Version` this codec speaks (RFC 6455).
pub const WS_VERSION: &str = "13";

/// Default [`RequestLimits::max_head`]: 8 KiB, what common servers allow for a whole request
/// head; a browser's upgrade request with cookies fits with room to spare.
pub const DEFAULT_MAX_HEAD: usize = 8192;

/// Default [`RequestLimits::max_headers`]: a browser sends about 15 headers on an upgrade.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Bounds on a request head. Beyond either, the request is [`HttpError::HeadersTooLarge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest head, request line through the blank line, in bytes.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_head: DEFAULT_MAX_HEAD,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// A client's request head, with the fields the opening handshake uses. Header names are
/// matched case-insensitively and values trimmed.
///
/// From [`parse_upgrade_request`] it is a checked upgrade: `method` is `GET`, `host` is set,
/// both flags are true, `version` is `Some("13")` and `key` is valid. From
/// [`parse_request_head`] it is only well-formed, and [`UpgradeRequest::validate`] tells why it
/// is not an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    pub method: String,
    /// The request target as sent (origin form such as `/stream/abc?x=1`, or absolute form).
    pub path: String,
    pub host: Option<String>,
    /// `Sec-WebSocket-Key`; empty if absent.
    pub key: String,
    /// `Sec-WebSocket-Version`.
    pub version: Option<String>,
    /// `Sec-WebSocket-Protocol`, every field line, comma-split, trimmed, empty items dropped.
    pub protocols: Vec<String>,
    pub origin: Option<String>,
    /// An `Upgrade` field lists `websocket` (case-insensitive).
    pub upgrade_websocket: bool,
    /// A `Connection` field lists `upgrade` (case-insensitive), e.g. `keep-alive, Upgrade`.
    pub connection_upgrade: bool,
}

impl UpgradeRequest {
    /// Checks a well-formed request against RFC 6455 §4.2.1, in this order: `GET`
    /// ([`HttpError::MethodNotAllowed`]), `Host` ([`HttpError::BadRequest`]), `Upgrade:
    /// websocket` ([`HttpError::NotUpgrade`]), `Connection: upgrade` (400), version 13
    /// ([`HttpError::UnsupportedVersion`], also when absent) and a key that is the base64 of 16
    /// bytes (400).
    pub fn validate(&self) -> Result<(), HttpError> {
        if self.method != "GET" {
            return Err(HttpError::MethodNotAllowed);
        }
        if self.host.is_none() {
            return Err(HttpError::BadRequest("missing Host"));
        }
        if !self.upgrade_websocket {
            return Err(HttpError::NotUpgrade);
        }
        if !self.connection_upgrade {
            return Err(HttpError::BadRequest("Connection does not list upgrade"));
        }
        if self.version.as_deref() != Some(WS_VERSION) {
            return Err(HttpError::UnsupportedVersion);
        }
        if self.key.is_empty() {
            return Err(HttpError::BadRequest("missing Sec-WebSocket-Key"));
        }
        if !key_is_valid(&self.key) {
            return Err(HttpError::BadRequest(
                "Sec-WebSocket-Key is not 16 bytes of base64",
            ));
        }
        Ok(())
    }
}

/// The server's answer, as far as the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeResponse {
    /// The subprotocol the server chose (`Sec-WebSocket-Protocol`). The caller checks that it is
    /// one it offered, and fails the connection otherwise (RFC 6455 §4.1).
    pub protocol: Option<String>,
}

/// Why a handshake failed. Server-side errors carry the response to send ([`status`],
/// [`reason`], [`extra_headers`]; see [`encode_error`]); client-side errors (a bad or refusing
/// server) map to 502 for a gateway that must answer its own client.
///
/// [`status`]: HttpError::status
/// [`reason`]: HttpError::reason
/// [`extra_headers`]: HttpError::extra_headers
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Client side: `Sec-WebSocket-Accept` missing, repeated, or not the one the key asks for.
    #[error("WebSocket handshake: wrong or missing Sec-WebSocket-Accept")]
    BadAccept,
    /// Server side, 400: a malformed head or a broken handshake rule (the text says which).
    #[error("bad HTTP request: {0}")]
    BadRequest(&'static str),
    /// Client side: a malformed response or one that does not complete the upgrade.
    #[error("bad WebSocket handshake response: {0}")]
    BadResponse(&'static str),
    /// Server side, 431: the head exceeds [`RequestLimits`].
    #[error("HTTP request head exceeds the size or header-count limit")]
    HeadersTooLarge,
    /// Server side, 405: the method is not GET.
    #[error("WebSocket upgrade requires GET")]
    MethodNotAllowed,
    /// Server side, 426: a valid HTTP request, but not a WebSocket upgrade.
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// Client side: the server answered with this status instead of 101.
    #[error("WebSocket upgrade refused with HTTP status {0}")]
    Rejected(u16),
    /// Server side, 426: `Sec-WebSocket-Version` absent or not 13.
    #[error("unsupported Sec-WebSocket-Version (only 13 is spoken)")]
    UnsupportedVersion,
}

/// Headers that announce the upgrade a 426 requires (RFC 9110 §15.5.22 asks for `Upgrade`,
/// and `Upgrade` needs the `upgrade` connection option).
const UPGRADE_REQUIRED_HEADERS: [(&str, &str); 2] =
    [("Upgrade", "websocket"), ("Connection", "Upgrade, close")];

impl HttpError {
    /// The HTTP status a server answers with (502 for client-side errors).
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadersTooLarge => 431,
            HttpError::MethodNotAllowed => 405,
            HttpError::NotUpgrade | HttpError::UnsupportedVersion => 426,
            HttpError::BadAccept | HttpError::BadResponse(_) | HttpError::Rejected(_) => 502,
        }
    }

    /// The standard reason phrase of [`HttpError::status`].
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "Bad Request",
            HttpError::HeadersTooLarge => "Request Header Fields Too Large",
            HttpError::MethodNotAllowed => "Method Not Allowed",
            HttpError::NotUpgrade | HttpError::UnsupportedVersion => "Upgrade Required",
            HttpError::BadAccept | HttpError::BadResponse(_) | HttpError::Rejected(_) => {
                "Bad Gateway"
            }
        }
    }

    /// Headers the error response must carry besides the ones [`encode_error_response`] writes:
    /// `Allow: GET` for 405, the upgrade announcement for 426, and `Sec-WebSocket-Version: 13`
    /// for a version mismatch (RFC 6455 §4.4).
    pub fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        const VERSION_HEADERS: [(&str, &str); 3] = [
            ("Sec-WebSocket-Version", WS_VERSION),
            UPGRADE_REQUIRED_HEADERS[0],
            UPGRADE_REQUIRED_HEADERS[1],
        ];
        match self {
            HttpError::MethodNotAllowed => &[("Allow", "GET")],
            HttpError::NotUpgrade => &UPGRADE_REQUIRED_HEADERS,
            HttpError::UnsupportedVersion => &VERSION_HEADERS,
            _ => &[],
        }
    }

    /// Stable snake_case label for metrics (never free text).
    pub fn label(&self) -> &'static str {
        match self {
            HttpError::BadAccept => "bad_accept",
            HttpError::BadRequest(_) => "bad_request",
            HttpError::BadResponse(_) => "bad_response",
            HttpError::HeadersTooLarge => "headers_too_large",
            HttpError::MethodNotAllowed => "method_not_allowed",
            HttpError::NotUpgrade => "not_upgrade",
            HttpError::Rejected(_) => "rejected",
            HttpError::UnsupportedVersion => "unsupported_version",
        }
    }
}

/// Result of an incremental parse: `None` = need more bytes; `Some((value, head_len))`.
pub type Parsed<T> = Result<Option<(T, usize)>, HttpError>;

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// A `Sec-WebSocket-Key` from 16 random bytes the caller draws (fresh for every connection).
pub fn generate_key(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// Whether `key` is the base64 of exactly 16 bytes (24 characters with `==` padding).
fn key_is_valid(key: &str) -> bool {
    key.len() == 24 && BASE64.decode(key).is_ok_and(|k| k.len() == 16)
}

// ---------------------------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------------------------

fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// Whether the comma-separated list `value` has an element equal to `token` (ASCII
/// case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| trim_ows(item).eq_ignore_ascii_case(token.as_bytes()))
}

/// The trimmed value as text.
fn text(value: &[u8], err: HttpError) -> Result<&str, HttpError> {
    std::str::from_utf8(trim_ows(value)).map_err(|_| err)
}

/// Stores a field that may appear once.
fn set_once(slot: &mut Option<String>, value: &str, dup: HttpError) -> Result<(), HttpError> {
    if slot.is_some() {
        return Err(dup);
    }
    *slot = Some(value.to_owned());
    Ok(())
}

fn request_syntax_error(e: httparse::Error) -> HttpError {
    HttpError::BadRequest(match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    })
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// Parses a request head without judging whether it is an upgrade: errors are only syntax
/// ([`HttpError::BadRequest`]: malformed head, HTTP/1.0, non-UTF-8 value in a used field, a
/// repeated `Host`, `Origin`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version`, a body announced by
/// `Content-Length` other than 0 or by `Transfer-Encoding`) and size
/// ([`HttpError::HeadersTooLarge`]). Malformed bytes are reported as soon as they are seen.
pub fn parse_request_head(input: &[u8], limits: &RequestLimits) -> Parsed<UpgradeRequest> {
    let window = &input[..input.len().min(limits.max_head)];
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if input.len() >= limits.max_head {
                Err(HttpError::HeadersTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(e) => return Err(request_syntax_error(e)),
    };
    if req.version != Some(1) {
        return Err(HttpError::BadRequest("HTTP/1.1 required"));
    }
    let not_utf8 = HttpError::BadRequest("header value is not UTF-8");
    let mut parsed = UpgradeRequest {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        host: None,
        key: String::new(),
        version: None,
        protocols: Vec::new(),
        origin: None,
        upgrade_websocket: false,
        connection_upgrade: false,
    };
    let mut key = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            parsed.upgrade_websocket |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.connection_upgrade |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("host") {
            let v = text(h.value, not_utf8)?;
            set_once(&mut parsed.host, v, HttpError::BadRequest("repeated Host"))?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            let v = text(h.value, not_utf8)?;
            let dup = HttpError::BadRequest("repeated Sec-WebSocket-Key");
            set_once(&mut key, v, dup)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            let v = text(h.value, not_utf8)?;
            let dup = HttpError::BadRequest("repeated Sec-WebSocket-Version");
            set_once(&mut parsed.version, v, dup)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let v = text(h.value, not_utf8)?;
            parsed.protocols.extend(
                v.split(',')
                    .map(|p| p.trim_matches([' ', '\t']))
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
        } else if name.eq_ignore_ascii_case("origin") {
            let v = text(h.value, not_utf8)?;
            set_once(
                &mut parsed.origin,
                v,
                HttpError::BadRequest("repeated Origin"),
            )?;
        } else if name.eq_ignore_ascii_case("content-length") {
            if trim_ows(h.value) != b"0" {
                return Err(HttpError::BadRequest("request body not allowed"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::BadRequest("request body not allowed"));
        }
    }
    parsed.key = key.unwrap_or_default();
    Ok(Some((parsed, head_len)))
}

/// Parses and checks a WebSocket upgrade request: [`parse_request_head`], then
/// [`UpgradeRequest::validate`]. `input[head_len..]` is WebSocket frames.
pub fn parse_upgrade_request(input: &[u8], limits: &RequestLimits) -> Parsed<UpgradeRequest> {
    let Some((req, n)) = parse_request_head(input, limits)? else {
        return Ok(None);
    };
    req.validate()?;
    Ok(Some((req, n)))
}

/// Appends `s`, with control characters (CR and LF above all) replaced by spaces so that no
/// caller-supplied text can end a line early.
fn put_text(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().map(|b| {
        if b < 0x20 && b != b'\t' || b == 0x7f {
            b' '
        } else {
            b
        }
    }));
}

/// Appends `name: value\r\n`; a name is reduced to token characters.
fn put_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    out.extend(name.bytes().map(|b| if is_tchar(b) { b } else { b'-' }));
    out.extend_from_slice(b": ");
    put_text(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the `101 Switching Protocols` response for the client's `key`, with the chosen
/// subprotocol if any (it must be one the client offered). Frames may follow at once.
pub fn encode_switching_protocols(key: &str, protocol: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    put_header(out, "Upgrade", "websocket");
    put_header(out, "Connection", "Upgrade");
    put_header(out, "Sec-WebSocket-Accept", &accept_key(key));
    if let Some(p) = protocol {
        put_header(out, "Sec-WebSocket-Protocol", p);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an error response: status line, `Content-Type: text/plain`, `Content-Length`,
/// `Connection: close` (unless `extra_headers` has its own `Connection`), `extra_headers`, and
/// the body `reason` + newline. The caller closes the connection once it is written. A status
/// outside 100..=599 is sent as 500; control characters in text become spaces.
pub fn encode_error_response(
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    put_text(out, reason);
    out.extend_from_slice(b"\r\n");
    put_header(out, "Content-Type", "text/plain; charset=utf-8");
    put_header(out, "Content-Length", &(reason.len() + 1).to_string());
    if !extra_headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
    {
        put_header(out, "Connection", "close");
    }
    for (name, value) in extra_headers {
        put_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    put_text(out, reason);
    out.push(b'\n');
}

/// Appends the response a server sends for `err` (see [`encode_error_response`]).
pub fn encode_error(err: &HttpError, out: &mut Vec<u8>) {
    encode_error_response(err.status(), err.reason(), err.extra_headers(), out);
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// Appends an upgrade request for `path` (empty means `/`; bytes that cannot appear in a
/// request target are percent-encoded) on `host` (with `:port` when not the default), offering
/// `protocols` if any.
pub fn encode_upgrade_request(
    host: &str,
    path: &str,
    key: &str,
    protocols: &[String],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"GET ");
    if path.is_empty() {
        out.push(b'/');
    }
    for b in path.bytes() {
        if b <= b' ' || b >= 0x7f {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    put_header(out, "Host", host);
    put_header(out, "Upgrade", "websocket");
    put_header(out, "Connection", "Upgrade");
    put_header(out, "Sec-WebSocket-Key", key);
    put_header(out, "Sec-WebSocket-Version", WS_VERSION);
    if !protocols.is_empty() {
        put_header(out, "Sec-WebSocket-Protocol", &protocols.join(", "));
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses the server's response to a request sent with `expected_key` and checks it completes
/// the handshake (RFC 6455 §4.1): HTTP/1.1, status 101 (else [`HttpError::Rejected`]),
/// `Upgrade: websocket` and `Connection: upgrade` ([`HttpError::BadResponse`]), the right
/// `Sec-WebSocket-Accept` ([`HttpError::BadAccept`]), no extension and at most one subprotocol.
/// The head is bounded by the default [`RequestLimits`]. `input[head_len..]` is the server's
/// first frames.
pub fn parse_upgrade_response(input: &[u8], expected_key: &str) -> Parsed<UpgradeResponse> {
    let window = &input[..input.len().min(DEFAULT_MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; DEFAULT_MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() < DEFAULT_MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::BadResponse("response head too large"));
        }
        Err(_) => return Err(HttpError::BadResponse("malformed response head")),
    };
    if resp.version != Some(1) {
        return Err(HttpError::BadResponse("HTTP/1.1 required"));
    }
    let code = resp.code.unwrap_or_default();
    if code != 101 {
        return Err(HttpError::Rejected(code));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accept = None;
    let mut protocol = None;
    let not_utf8 = HttpError::BadResponse("header value is not UTF-8");
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            set_once(&mut accept, text(h.value, not_utf8)?, HttpError::BadAccept)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let v = text(h.value, not_utf8)?;
            let many = HttpError::BadResponse("more than one Sec-WebSocket-Protocol");
            if v.contains(',') {
                return Err(many);
            }
            set_once(&mut protocol, v, many)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            return Err(HttpError::BadResponse("extension not requested"));
        }
    }
    if !upgrade {
        return Err(HttpError::BadResponse("missing Upgrade: websocket"));
    }
    if !connection {
        return Err(HttpError::BadResponse("Connection does not list upgrade"));
    }
    if accept.as_deref() != Some(accept_key(expected_key).as_str()) {
        return Err(HttpError::BadAccept);
    }
    Ok(Some((UpgradeResponse { protocol }, head_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ws;
    use proptest::prelude::*;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// The request of RFC 6455 §1.2.
    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\
        \r\n";

    fn limits() -> RequestLimits {
        RequestLimits::default()
    }

    fn parse(input: &[u8]) -> Parsed<UpgradeRequest> {
        parse_upgrade_request(input, &limits())
    }

    fn rfc_parsed() -> UpgradeRequest {
        UpgradeRequest {
            method: "GET".to_owned(),
            path: "/chat".to_owned(),
            host: Some("server.example.com".to_owned()),
            key: RFC_KEY.to_owned(),
            version: Some("13".to_owned()),
            protocols: vec!["chat".to_owned(), "superchat".to_owned()],
            origin: Some("http://example.com".to_owned()),
            upgrade_websocket: true,
            connection_upgrade: true,
        }
    }

    /// The client's first frame: a masked "Hello".
    fn first_frame() -> Vec<u8> {
        let mut f = Vec::new();
        ws::encode_frame(ws::OpCode::Text, true, b"Hello", Some([1, 2, 3, 4]), &mut f);
        f
    }

    /// A request with the RFC's fields except `replace` (name, new line or "" to drop it).
    fn request_with(replace: &[(&str, &str)]) -> Vec<u8> {
        let mut out = String::new();
        for line in RFC_REQUEST.split_inclusive("\r\n") {
            let name = line.split(':').next().unwrap_or_default();
            match replace.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((_, new)) => out.push_str(new),
                None => out.push_str(line),
            }
        }
        out.into_bytes()
    }

    /// `request` with `line` added as its last header field.
    fn add_line(mut request: Vec<u8>, line: &[u8]) -> Vec<u8> {
        let at = request.len() - 2;
        request.splice(at..at, line.iter().copied());
        request
    }

    fn with_extra_line(line: &str) -> Vec<u8> {
        add_line(RFC_REQUEST.as_bytes().to_vec(), line.as_bytes())
    }

    fn parse_err(input: &[u8]) -> HttpError {
        parse(input).expect_err("rejected")
    }

    #[test]
    fn rfc_accept_key_and_nonce() {
        assert_eq!(accept_key(RFC_KEY), RFC_ACCEPT);
        assert_eq!(generate_key(*b"the sample nonce"), RFC_KEY);
        assert!(key_is_valid(&generate_key([0xff; 16])));
    }

    #[test]
    fn rfc_request_at_every_split_leaves_the_first_frame() {
        let req = RFC_REQUEST.as_bytes();
        for k in 0..req.len() {
            assert_eq!(parse(&req[..k]), Ok(None), "prefix of {k} bytes");
        }
        assert_eq!(parse(req), Ok(Some((rfc_parsed(), req.len()))));
        let mut stream = req.to_vec();
        stream.extend(first_frame());
        let (parsed, n) = parse(&stream).expect("valid").expect("complete");
        assert_eq!(parsed, rfc_parsed());
        assert_eq!(
            &stream[n..],
            first_frame(),
            "the frame is left for the WebSocket layer"
        );
    }

    #[test]
    fn header_names_are_case_insensitive_and_lists_are_split() {
        let req = "get /x HTTP/1.1\r\n".to_owned();
        // Methods are case-sensitive: a lowercase "get" is not GET.
        assert_eq!(
            parse_err(format!("{req}Host: h\r\n\r\n").as_bytes()),
            HttpError::MethodNotAllowed
        );
        let req = "GET /x?y=1 HTTP/1.1\r\n\
            hOsT: h:8080\r\n\
            UPGRADE: WebSocket\r\n\
            connection: keep-alive, Upgrade\r\n\
            sec-websocket-key:   dGhlIHNhbXBsZSBub25jZQ==  \r\n\
            SEC-WEBSOCKET-VERSION: 13\r\n\
            Sec-WebSocket-Protocol: a,b\r\n\
            sec-websocket-protocol:  , c ,\r\n\
            \r\n";
        let (r, n) = parse(req.as_bytes()).expect("valid").expect("complete");
        assert_eq!(n, req.len());
        assert_eq!(r.path, "/x?y=1");
        assert_eq!(r.host.as_deref(), Some("h:8080"));
        assert_eq!(r.key, RFC_KEY);
        assert_eq!(r.protocols, ["a", "b", "c"]);
        assert_eq!(r.origin, None);
        // Upgrade and Connection as several field lines.
        let req = request_with(&[
            ("Upgrade", "Upgrade: h2c\r\nUpgrade: websocket\r\n"),
            (
                "Connection",
                "Connection: keep-alive\r\nConnection: upgrade\r\n",
            ),
        ]);
        assert!(parse(&req).expect("valid").is_some());
    }

    #[test]
    fn missing_or_bad_key_is_400() {
        let e = parse_err(&request_with(&[("Sec-WebSocket-Key", "")]));
        assert_eq!(e, HttpError::BadRequest("missing Sec-WebSocket-Key"));
        assert_eq!(e.status(), 400);
        for bad in [
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ==AAAA",
            "!!!!!!!!!!!!!!!!!!!!!!==",
        ] {
            let line = format!("Sec-WebSocket-Key: {bad}\r\n");
            let e = parse_err(&request_with(&[("Sec-WebSocket-Key", &line)]));
            assert_eq!(e.status(), 400, "{bad}");
        }
        let e = parse_err(&with_extra_line(
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
        ));
        assert_eq!(e, HttpError::BadRequest("repeated Sec-WebSocket-Key"));
    }

    #[test]
    fn wrong_version_is_426_with_the_version_header() {
        for line in [
            "Sec-WebSocket-Version: 8\r\n",
            "Sec-WebSocket-Version: 13, 8\r\n",
            "",
        ] {
            let e = parse_err(&request_with(&[("Sec-WebSocket-Version", line)]));
            assert_eq!(e, HttpError::UnsupportedVersion, "{line:?}");
            assert_eq!(e.status(), 426);
            let mut out = Vec::new();
            encode_error(&e, &mut out);
            let text = String::from_utf8(out).expect("ASCII");
            assert!(
                text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
                "{text}"
            );
            assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
            assert!(text.contains("\r\nUpgrade: websocket\r\n"), "{text}");
        }
    }

    #[test]
    fn plain_http_request_is_426_not_upgrade() {
        let req = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        let e = parse_err(req);
        assert_eq!(e, HttpError::NotUpgrade);
        assert_eq!((e.status(), e.reason()), (426, "Upgrade Required"));
        // The head alone is fine: the caller may serve it some other way.
        let (head, n) = parse_request_head(req, &limits())
            .expect("valid")
            .expect("complete");
        assert_eq!(n, req.len());
        assert!(!head.upgrade_websocket && !head.connection_upgrade);
        assert_eq!(head.validate(), Err(HttpError::NotUpgrade));
        // Upgrade to something else.
        let e = parse_err(&request_with(&[("Upgrade", "Upgrade: h2c\r\n")]));
        assert_eq!(e, HttpError::NotUpgrade);
    }

    #[test]
    fn other_handshake_rules() {
        let e = parse_err(&request_with(&[(
            "Connection",
            "Connection: keep-alive\r\n",
        )]));
        assert_eq!(e.status(), 400);
        let e = parse_err(&request_with(&[("Host", "")]));
        assert_eq!(e, HttpError::BadRequest("missing Host"));
        let e = parse_err(&with_extra_line("Host: other\r\n"));
        assert_eq!(e, HttpError::BadRequest("repeated Host"));
        let post = RFC_REQUEST.replacen("GET", "POST", 1);
        let e = parse_err(post.as_bytes());
        assert_eq!((e, e.status()), (HttpError::MethodNotAllowed, 405));
        assert_eq!(e.extra_headers(), [("Allow", "GET")]);
        let old = RFC_REQUEST.replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(parse_err(old.as_bytes()).status(), 400);
        for line in ["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"] {
            let e = parse_err(&with_extra_line(line));
            assert_eq!(
                e,
                HttpError::BadRequest("request body not allowed"),
                "{line}"
            );
        }
        assert!(parse(&with_extra_line("Content-Length: 0\r\n"))
            .expect("valid")
            .is_some());
        let e = parse_err(&with_extra_line("Origin: http://other.example\r\n"));
        assert_eq!(e, HttpError::BadRequest("repeated Origin"));
        let req = add_line(request_with(&[("Origin", "")]), b"Origin: x\xffy\r\n");
        assert_eq!(
            parse_err(&req),
            HttpError::BadRequest("header value is not UTF-8")
        );
        // Non-UTF-8 in a field nobody reads is fine.
        let req = add_line(RFC_REQUEST.as_bytes().to_vec(), b"X-Junk: \xfe\xff\r\n");
        assert!(parse(&req).expect("valid").is_some());
    }

    #[test]
    fn oversize_head_is_431() {
        let filler = format!("X-Filler: {}\r\n", "a".repeat(DEFAULT_MAX_HEAD));
        let big = with_extra_line(&filler);
        let e = parse_err(&big);
        assert_eq!((e, e.status()), (HttpError::HeadersTooLarge, 431));
        // Reported as soon as max_head bytes are in, without waiting for the end of the head.
        assert_eq!(
            parse_err(&big[..DEFAULT_MAX_HEAD]),
            HttpError::HeadersTooLarge
        );
        assert_eq!(parse(&big[..DEFAULT_MAX_HEAD - 1]), Ok(None));
        // A head of exactly max_head bytes fits, even with frames after it.
        let exact = RequestLimits {
            max_head: RFC_REQUEST.len(),
            max_headers: 7,
        };
        let mut stream = RFC_REQUEST.as_bytes().to_vec();
        stream.extend(first_frame());
        let (_, n) = parse_upgrade_request(&stream, &exact)
            .expect("fits")
            .expect("complete");
        assert_eq!(n, RFC_REQUEST.len());
        let smaller = RequestLimits {
            max_head: RFC_REQUEST.len() - 1,
            ..exact
        };
        assert_eq!(
            parse_upgrade_request(&stream, &smaller),
            Err(HttpError::HeadersTooLarge)
        );
        // Too many header fields.
        let fewer = RequestLimits {
            max_headers: 6,
            ..exact
        };
        assert_eq!(
            parse_upgrade_request(&stream, &fewer),
            Err(HttpError::HeadersTooLarge)
        );
        let many: String = (0..DEFAULT_MAX_HEADERS)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert_eq!(
            parse_err(&with_extra_line(&many)),
            HttpError::HeadersTooLarge
        );
    }

    #[test]
    fn garbage_is_400() {
        let tls_client_hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        let socks5 = [0x05, 0x01, 0x00];
        let cases: [&[u8]; 7] = [
            &tls_client_hello,
            &socks5,
            b"\x00\x00\x00\x00",
            b"GET / HTTP/1.1\r\nBad Header\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
        ];
        for input in cases {
            let e = parse_err(input);
            assert_eq!(e.status(), 400, "{input:?}: {e}");
            assert!(matches!(e, HttpError::BadRequest(_)));
        }
        // Found from the first byte that cannot start a request.
        assert_eq!(parse_err(&[0x16]).status(), 400);
    }

    #[test]
    fn switching_protocols_response() {
        let mut out = Vec::new();
        encode_switching_protocols(RFC_KEY, Some("chat"), &mut out);
        let expected = "HTTP/1.1 101 Switching Protocols\r\n\
            Upgrade: websocket\r\n\
            Connection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
            Sec-WebSocket-Protocol: chat\r\n\
            \r\n";
        assert_eq!(String::from_utf8(out).expect("ASCII"), expected);
    }

    #[test]
    fn error_responses() {
        let mut out = Vec::new();
        encode_error_response(403, "Forbidden", &[("X-Why", "token\r\nexpired")], &mut out);
        let expected = "HTTP/1.1 403 Forbidden\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\
            Content-Length: 10\r\n\
            Connection: close\r\n\
            X-Why: token  expired\r\n\
            \r\n\
            Forbidden\n";
        assert_eq!(String::from_utf8(out).expect("ASCII"), expected);

        let mut out = Vec::new();
        encode_error(&HttpError::NotUpgrade, &mut out);
        let text = String::from_utf8(out).expect("ASCII");
        assert!(
            text.contains("\r\nConnection: Upgrade, close\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("Connection:").count(), 1, "{text}");

        // Every error's response is one parseable HTTP response with its body.
        let all = [
            HttpError::BadAccept,
            HttpError::BadRequest("x"),
            HttpError::BadResponse("x"),
            HttpError::HeadersTooLarge,
            HttpError::MethodNotAllowed,
            HttpError::NotUpgrade,
            HttpError::Rejected(403),
            HttpError::UnsupportedVersion,
        ];
        for e in all {
            let mut out = Vec::new();
            encode_error(&e, &mut out);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            let n = match resp.parse(&out) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{e:?}: {other:?}"),
            };
            assert_eq!(resp.code, Some(e.status()));
            assert_eq!(resp.reason, Some(e.reason()));
            assert_eq!(out.len() - n, e.reason().len() + 1);
        }
    }

    #[test]
    fn error_status_reason_label() {
        use HttpError::*;
        let all = [
            (BadAccept, 502, "bad_accept"),
            (BadRequest("x"), 400, "bad_request"),
            (BadResponse("x"), 502, "bad_response"),
            (HeadersTooLarge, 431, "headers_too_large"),
            (MethodNotAllowed, 405, "method_not_allowed"),
            (NotUpgrade, 426, "not_upgrade"),
            (Rejected(404), 502, "rejected"),
            (UnsupportedVersion, 426, "unsupported_version"),
        ];
        for (e, status, label) in all {
            assert_eq!((e.status(), e.label()), (status, label));
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
        }
    }

    // --- client side ---

    fn response_bytes(key: &str, protocol: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_switching_protocols(key, protocol, &mut out);
        out
    }

    #[test]
    fn client_request_round_trips_through_the_server_parser() {
        let key = generate_key([7; 16]);
        let protocols = vec!["chat".to_owned(), "v2.sallyport".to_owned()];
        let mut out = Vec::new();
        encode_upgrade_request(
            "dmz.example.net:443",
            "/stream/tok en",
            &key,
            &protocols,
            &mut out,
        );
        let (req, n) = parse(&out).expect("valid").expect("complete");
        assert_eq!(n, out.len());
        assert_eq!(req.path, "/stream/tok%20en");
        assert_eq!(req.host.as_deref(), Some("dmz.example.net:443"));
        assert_eq!(req.key, key);
        assert_eq!(req.protocols, protocols);
        out.clear();
        encode_upgrade_request("h", "", &key, &[], &mut out);
        let (req, _) = parse(&out).expect("valid").expect("complete");
        assert_eq!((req.path.as_str(), req.protocols.len()), ("/", 0));
    }

    #[test]
    fn response_at_every_split_leaves_the_first_frames() {
        let mut frames = Vec::new();
        ws::encode_frame(ws::OpCode::Binary, true, b"banner", None, &mut frames);
        ws::encode_ping(b"p", None, &mut frames);
        let head = response_bytes(RFC_KEY, Some("chat"));
        let mut stream = head.clone();
        stream.extend_from_slice(&frames);
        let expected = UpgradeResponse {
            protocol: Some("chat".to_owned()),
        };
        for k in 0..head.len() {
            assert_eq!(
                parse_upgrade_response(&stream[..k], RFC_KEY),
                Ok(None),
                "prefix {k}"
            );
        }
        for k in head.len()..=stream.len() {
            let (r, n) = parse_upgrade_response(&stream[..k], RFC_KEY)
                .expect("valid")
                .expect("complete");
            assert_eq!((&r, n), (&expected, head.len()));
        }
        let no_protocol = response_bytes(RFC_KEY, None);
        assert_eq!(
            parse_upgrade_response(&no_protocol, RFC_KEY),
            Ok(Some((
                UpgradeResponse { protocol: None },
                no_protocol.len()
            )))
        );
    }

    #[test]
    fn bad_responses() {
        let ok = String::from_utf8(response_bytes(RFC_KEY, None)).expect("ASCII");
        let check = |resp: &str| parse_upgrade_response(resp.as_bytes(), RFC_KEY);
        // Wrong key.
        assert_eq!(
            parse_upgrade_response(ok.as_bytes(), "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(HttpError::BadAccept)
        );
        assert_eq!(
            check(&ok.replace("Sec-WebSocket-Accept", "X-Accept")),
            Err(HttpError::BadAccept)
        );
        let twice = ok.replace(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Accept: {RFC_ACCEPT}\r\n\r\n"),
        );
        assert_eq!(check(&twice), Err(HttpError::BadAccept));
        // Refusals keep their status.
        let refused = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        let e = check(refused).expect_err("refused");
        assert_eq!((e, e.status()), (HttpError::Rejected(403), 502));
        assert_eq!(
            check("HTTP/1.1 200 OK\r\n\r\n"),
            Err(HttpError::Rejected(200))
        );
        // Missing upgrade headers, extensions, several protocols, HTTP/1.0, garbage.
        let cases = [
            ok.replace("Upgrade: websocket\r\n", ""),
            ok.replace("Upgrade: websocket", "Upgrade: h2c"),
            ok.replace("Connection: Upgrade", "Connection: close"),
            ok.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            ),
            ok.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: a, b\r\n\r\n"),
            ok.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n\r\n",
            ),
            ok.replace("HTTP/1.1", "HTTP/1.0"),
            "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned(),
            format!(
                "HTTP/1.1 101 Switching\r\nX: {}\r\n\r\n",
                "a".repeat(DEFAULT_MAX_HEAD)
            ),
        ];
        for c in cases {
            let e = check(&c).expect_err("rejected");
            assert!(matches!(e, HttpError::BadResponse(_)), "{c:?}: {e:?}");
        }
        // Case-insensitive names and token lists are fine.
        let relaxed = ok
            .replace("Upgrade: websocket", "upgrade: WEBSOCKET")
            .replace("Connection: Upgrade", "CONNECTION: keep-alive, upgrade");
        assert!(check(&relaxed).expect("valid").is_some());
    }

    #[test]
    fn whole_handshake_both_sides_with_coalesced_frames() {
        let key = generate_key(*b"0123456789abcdef");
        let offered = vec!["tunnel".to_owned()];
        // Client → server: request + first frame in one segment.
        let mut c2s = Vec::new();
        encode_upgrade_request("gw-b:80", "/", &key, &offered, &mut c2s);
        let frame = first_frame();
        c2s.extend_from_slice(&frame);
        for k in 0..=c2s.len() {
            let mut buf = c2s[..k].to_vec();
            let head = match parse(&buf).expect("valid") {
                Some(done) => done,
                None => {
                    buf.extend_from_slice(&c2s[k..]);
                    parse(&buf).expect("valid").expect("complete")
                }
            };
            assert_eq!(&c2s[head.1..], frame, "split at {k}");
        }
        let (req, _) = parse(&c2s).expect("valid").expect("complete");
        // Server → client: 101 + first frame.
        let mut s2c = Vec::new();
        encode_switching_protocols(
            &req.key,
            req.protocols.first().map(String::as_str),
            &mut s2c,
        );
        let head_len = s2c.len();
        ws::encode_frame(ws::OpCode::Binary, true, b"hi", None, &mut s2c);
        let (resp, n) = parse_upgrade_response(&s2c, &key)
            .expect("valid")
            .expect("complete");
        assert_eq!(resp.protocol.as_deref(), Some("tunnel"));
        assert_eq!(n, head_len);
        let mut dec = ws::Decoder::new(ws::Role::Client, 1 << 20);
        let mut payload = Vec::new();
        let (_, event) = dec.decode(&s2c[n..], &mut payload).expect("valid frame");
        assert!(matches!(
            event,
            Some(ws::Event::Data {
                len: 2,
                fin: true,
                ..
            })
        ));
        assert_eq!(payload, b"hi");
    }

    // --- corpus and properties ---

    /// Runs every parser on `input` and its prefixes: no panic, consumed within the input.
    fn parsers_are_total(input: &[u8]) {
        fn check<T>(r: Parsed<T>, len: usize) {
            if let Ok(Some((_, n))) = r {
                assert!(n > 0 && n <= len, "consumed {n} of {len}");
            }
        }
        let tight = RequestLimits {
            max_head: 64,
            max_headers: 2,
        };
        check(parse_upgrade_request(input, &limits()), input.len());
        check(parse_upgrade_request(input, &tight), input.len());
        check(parse_request_head(input, &limits()), input.len());
        check(parse_upgrade_response(input, RFC_KEY), input.len());
    }

    #[test]
    fn regression_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/http");
        let entries = std::fs::read_dir(dir).expect("corpus directory exists");
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("readable corpus entry").path();
            let input = std::fs::read(&path).expect("readable corpus file");
            for k in 0..=input.len() {
                parsers_are_total(&input[..k]);
            }
            count += 1;
        }
        assert!(count > 0, "empty corpus at {dir}");
    }

    fn arb_token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9.-]{1,12}"
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(
            input in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            parsers_are_total(&input);
        }

        #[test]
        fn parsers_never_panic_on_mutated_heads(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            response in any::<bool>(),
        ) {
            let mut bytes = if response {
                response_bytes(RFC_KEY, Some("chat"))
            } else {
                RFC_REQUEST.as_bytes().to_vec()
            };
            let i = at.index(bytes.len());
            bytes[i] = byte;
            for k in 0..=bytes.len() {
                parsers_are_total(&bytes[..k]);
            }
        }

        #[test]
        fn handshake_round_trips(
            nonce in any::<[u8; 16]>(),
            host in arb_token(),
            path in "/[ -~]{0,40}",
            protocols in proptest::collection::vec(arb_token(), 0..4),
            chosen in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let key = generate_key(nonce);
            let mut req = Vec::new();
            encode_upgrade_request(&host, &path, &key, &protocols, &mut req);
            let len = req.len();
            req.extend_from_slice(&tail);
            let (parsed, n) = parse(&req).expect("valid").expect("complete");
            prop_assert_eq!(n, len);
            prop_assert_eq!(&parsed.key, &key);
            prop_assert_eq!(parsed.host.as_deref(), Some(host.as_str()));
            prop_assert_eq!(&parsed.protocols, &protocols);
            let protocol = (!protocols.is_empty())
                .then(|| protocols[chosen.index(protocols.len())].as_str());
            let mut resp = response_bytes(&parsed.key, protocol);
            let len = resp.len();
            resp.extend_from_slice(&tail);
            let expected = UpgradeResponse { protocol: protocol.map(str::to_owned) };
            prop_assert_eq!(parse_upgrade_response(&resp, &key), Ok(Some((expected, len))));
        }
    }
}
