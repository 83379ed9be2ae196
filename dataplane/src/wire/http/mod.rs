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
mod tests;
