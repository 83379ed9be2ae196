//! The SOCKS5 BIND session of a reverse connection as two sans-IO state machines: [`server`]
//! (the DMZ's reverse endpoint) and [`client`] (the internal gateway). States and transitions:
//! `LIFECYCLE.md` beside this file.
//!
//! What it does: both machines are fed the bytes read from the peer and the current time, and
//! answer with a [`Step`]: how many input bytes they used (the rest is the caller's to keep for
//! the next call, or, once the session is done, the next layer's; wire rule 1), the bytes to
//! write to the peer, and an [`Action`]: read more, the session reached its next stage (parked,
//! paired), or close (with a typed error saying why, for the caller's counters). Handshake
//! deadlines are checked against the injected `now`; [`Session::poll_timeout`] says when the
//! caller should wake the machine if no byte arrives.
//!
//! What it does not do: no sockets, no clock reads, no environment, no randomness, no TLS (a
//! session runs over plain TCP or over the plaintext of a TLS session alike), no policy beyond
//! the rules of a reverse endpoint written in [`server`]. Parked connections are not kept here:
//! once parked, the caller holds the connection and, to pair it, uses the tiny
//! [`server::Parked`] / [`client::Parked`] values (or keeps calling the machine).

use std::time::Instant;

use super::socks5::WireError;

pub mod client;
pub mod server;

#[cfg(test)]
mod tests;

/// Most unparsed bytes a handshake message may take before the session gives up. The longest
/// SOCKS5 message is 513 bytes (RFC 1929 with 255-byte user and password); more than this is a
/// wrong protocol or an attack.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// What one call into a machine produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<T, E> {
    /// Bytes of the input the machine used. `input[consumed..]` is not the machine's: keep it
    /// and pass it again with what arrives next, or hand it to the next layer once `action`
    /// says the session moved on.
    pub consumed: usize,
    /// Bytes to write to the peer, in order, before acting on `action` (also before closing:
    /// a refusal carries its reply).
    pub send: Vec<u8>,
    pub action: Action<T, E>,
}

/// What the caller does after writing [`Step::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<T, E> {
    /// Close the connection; the session failed for this reason.
    Close(E),
    /// Read more bytes (until [`Session::poll_timeout`]) and call again.
    NeedInput,
    /// The session reached its next stage (parked, or paired).
    Ready(T),
}

impl<T, E> Step<T, E> {
    fn new(consumed: usize, send: Vec<u8>, action: Action<T, E>) -> Self {
        Step {
            consumed,
            send,
            action,
        }
    }
}

/// Where a session stands; the same stages on both sides (five of the session, then `Closed`) (`LIFECYCLE.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Server: waits for the greeting. Client: greeting sent, waits for the method choice.
    Greeting,
    /// RFC 1929. Server: waits for user/password. Client: sent them, waits for the status.
    Auth,
    /// The BIND request. Server: waits for it. Client: sent it, waits for the first reply.
    Bound,
    /// First reply sent (server) or received (client): a prepared connection, no deadline.
    Parked,
    /// Second reply sent (server) or received (client): the bytes are the relay's now.
    Paired,
    /// Failed; every later call repeats the error.
    Closed,
}

/// The message a side is waiting for, named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    AuthStatus,
    FirstReply,
    Greeting,
    MethodChoice,
    Request,
    SecondReply,
    UserPass,
}

impl Message {
    /// How a log line names it ("no complete SOCKS5 greeting …").
    pub fn name(self) -> &'static str {
        match self {
            Message::AuthStatus => "auth status",
            Message::FirstReply => "first BIND reply",
            Message::Greeting => "greeting",
            Message::MethodChoice => "method choice",
            Message::Request => "request",
            Message::SecondReply => "second BIND reply",
            Message::UserPass => "user/password",
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The driving interface both machines share, so one I/O loop serves either side.
pub trait Session {
    /// What [`Action::Ready`] carries.
    type Ready;
    /// Why the session failed.
    type Error;
    /// Feeds the bytes received so far and not yet consumed; see [`Step`].
    fn handle(&mut self, input: &[u8], now: Instant) -> Step<Self::Ready, Self::Error>;
    /// When to call [`Session::handle_timeout`] if nothing arrives; `None`: no deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The deadline passed with the session still handshaking: returns the timeout error (and
    /// the session is closed), or `None` if `now` is before the deadline or there is none.
    fn handle_timeout(&mut self, now: Instant) -> Option<Self::Error>;
    /// Where the session stands.
    fn stage(&self) -> Stage;
    /// The message the session waits for now (for "peer closed before the …" errors).
    fn expecting(&self) -> Option<Message>;
}

/// Parses one message from `input`: `Err` carries the error that closes the session; `Ok(None)`
/// means more bytes are needed (and fit under [`MAX_MESSAGE_BYTES`]).
fn parse_or_close<T, E>(
    parsed: super::socks5::Parsed<T>,
    input: &[u8],
    what: Message,
    malformed: impl FnOnce(Message, WireError) -> E,
    too_long: impl FnOnce(Message) -> E,
) -> Result<Option<(T, usize)>, E> {
    match parsed {
        Ok(Some(done)) => Ok(Some(done)),
        Ok(None) if input.len() < MAX_MESSAGE_BYTES => Ok(None),
        Ok(None) => Err(too_long(what)),
        Err(e) => Err(malformed(what, e)),
    }
}

/// Whether `bytes` start like a TLS record (handshake or alert, version 3.x): the peer speaks
/// TLS where SOCKS5 was expected. `None`: one byte is not enough to tell.
fn looks_like_tls(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [] | [0x15 | 0x16] => None,
        [0x15 | 0x16, 0x03, ..] => Some(true),
        _ => Some(false),
    }
}
