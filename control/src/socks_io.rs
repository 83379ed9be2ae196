//! Reads whole SOCKS5 messages from a tokio stream (plain TCP, or TLS through `tls_stream`) with
//! the sans-IO parsers of `sallyport_dataplane::wire::socks5`, keeping whatever follows a message
//! in the caller's buffer (wire rule 1). Shared by the DMZ's server side and the internal
//! gateway's client side.
//!
//! It decides nothing about the protocol's flow; callers map the errors to their own counters.

use sallyport_dataplane::wire::socks5::Parsed;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most unparsed bytes a message may take. The longest SOCKS5 message is 513 bytes (RFC 1929
/// with 255-byte user and password); more than this is a wrong protocol or an attack.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Bytes asked for per read. Small on purpose: a parked connection waiting for its second
/// reply keeps this buffer, and bytes past the reply stay in the socket for the worker.
const READ_CHUNK: usize = 64;

/// Why no message could be read.
#[derive(Debug)]
pub enum ReadError {
    /// EOF or a socket error before the message was complete.
    Closed(String),
    /// The bytes are not a valid message (or too many of them).
    Malformed(String),
    /// The TLS session failed (a bad record, or an alert from the peer, e.g. it rejected our
    /// certificate after the handshake looked complete on our side).
    Tls(String),
}

/// Reads until `parse` yields a message; `what` names it in errors ("greeting").
pub async fn read_message<S: AsyncRead + Unpin, T>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Parsed<T>,
    what: &str,
) -> Result<T, ReadError> {
    loop {
        match parse(buf) {
            Ok(Some((value, used))) => {
                buf.drain(..used);
                return Ok(value);
            }
            Ok(None) if buf.len() < MAX_MESSAGE_BYTES => {}
            Ok(None) => return Err(ReadError::Malformed(format!("SOCKS5 {what} too long"))),
            Err(e) => {
                return Err(ReadError::Malformed(format!(
                    "malformed SOCKS5 {what}: {e} ({})",
                    e.label()
                )))
            }
        }
        buf.reserve(READ_CHUNK);
        match stream.read_buf(buf).await {
            Ok(0) => {
                return Err(ReadError::Closed(format!(
                    "peer closed before the SOCKS5 {what} was complete"
                )))
            }
            Ok(_) => {}
            Err(e) if crate::tls::rustls_error(&e).is_some() => {
                return Err(ReadError::Tls(crate::tls::io_reason(&e)))
            }
            Err(e) => {
                return Err(ReadError::Closed(format!(
                    "read failed during the SOCKS5 {what}: {e}"
                )))
            }
        }
    }
}

/// Whether `bytes` start like a TLS record (handshake or alert, version 3.x): the peer speaks
/// TLS where SOCKS5 was expected.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed(s) | ReadError::Malformed(s) | ReadError::Tls(s) => f.write_str(s),
        }
    }
}
