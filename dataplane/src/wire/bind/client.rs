//! Client side of the BIND session: the internal gateway parking a prepared connection at the
//! DMZ.
//!
//! What it does: on the first call it sends the greeting (one method: user/password when it has
//! credentials, else no-auth), the RFC 1929 request and the BIND request (DST.ADDR = the
//! service's bind name, DST.PORT 0) all at once (pipelined: the server reads them in order),
//! then checks the method choice, the auth status and the first reply (Parked). Fed more bytes
//! while parked, it reads the second reply (Paired: BND = the public client's address); the
//! bytes after it are the client's and belong to the relay. [`Parked`] does that last step
//! alone for whoever holds a parked connection without the machine.
//!
//! What it does not do: no I/O, no clock, no TLS, no back-end connect, no retry policy.

use std::net::SocketAddr;
use std::time::Instant;

use super::{looks_like_tls, parse_or_close, Action, Message, Session, Stage, Step};
use crate::wire::socks5::{self, Command, Credentials, Host, Method, WireError};

/// Why the client side closed the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// RFC 1929 status non-zero.
    #[error("DMZ rejected the user/password")]
    AuthRejected,
    /// The first reply's REP was not 0.
    #[error("DMZ refused BIND for {bind_name:?} (REP {rep:#04x}{})",
        if *rep == socks5::rep::NOT_ALLOWED { ": unknown service or not allowed" } else { "" })]
    BindRefused { bind_name: String, rep: u8 },
    /// The BIND request could not be encoded (a bind name over 255 bytes, or empty; or
    /// credentials over 255 bytes).
    #[error("cannot encode the SOCKS5 request: {0}")]
    Encode(WireError),
    /// A message did not parse.
    #[error("malformed SOCKS5 {what}: {error} ({})", error.label())]
    Malformed { what: Message, error: WireError },
    /// The server chose another method than the one offered.
    #[error("DMZ refused authentication method {offered:#04x} (answered {chosen:#04x})")]
    MethodRefused { offered: u8, chosen: u8 },
    /// The second reply's REP was not 0.
    #[error("DMZ refused the pairing (second BIND reply REP {0:#04x})")]
    PairRefused(u8),
    /// The handshake deadline passed while waiting for `waiting`.
    #[error("no complete SOCKS5 {waiting}")]
    Timeout { waiting: Message },
    /// The server's first bytes are a TLS record.
    #[error(
        "the DMZ answered with TLS: its reverse endpoint has [reverse] tls, so this service needs \
         tls = {{ ca = ... }} too"
    )]
    TlsSpoken,
    /// More than [`super::MAX_MESSAGE_BYTES`] without a complete message.
    #[error("SOCKS5 {0} too long")]
    TooLong(Message),
}

impl ClientError {
    /// Stable snake_case label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ClientError::AuthRejected => "auth_rejected",
            ClientError::BindRefused { .. } => "bind_refused",
            ClientError::Encode(_) => "encode",
            ClientError::Malformed { .. } => "malformed",
            ClientError::MethodRefused { .. } => "method_refused",
            ClientError::PairRefused(_) => "pair_refused",
            ClientError::Timeout { .. } => "timeout",
            ClientError::TlsSpoken => "tls_spoken",
            ClientError::TooLong(_) => "too_long",
        }
    }
}

/// The second reply arrived: the DMZ paired this connection with a public client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    /// BND.ADDR of the second reply: the public client's address (an IP in practice).
    pub bind_host: Host,
    /// BND.PORT of the second reply: the public client's port.
    pub bind_port: u16,
}

impl Paired {
    /// The public client's socket address, when BND.ADDR is an IP.
    pub fn bind_addr(&self) -> Option<SocketAddr> {
        match self.bind_host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.bind_port)),
            Host::Domain(_) => None,
        }
    }
}

/// What [`BindClient::handle`] reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The first reply arrived: hand the connection (and the bytes after `consumed`) on.
    Parked,
    /// The second reply arrived; the bytes after `consumed` are the client's.
    Paired(Paired),
}

/// A parked connection's half of the session: waiting for the second reply. Zero-sized, so the
/// holder of a parked connection needs no more than its buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parked;

impl Parked {
    /// Parses the second reply from the bytes received since the first one: `Ok(None)` = need
    /// more bytes; `Ok(Some((paired, consumed)))` = paired, `input[consumed..]` is the public
    /// client's first bytes (wire rule 1). A malformed reply or a non-zero REP is an error
    /// (close the connection, with a reset).
    pub fn handle(self, input: &[u8]) -> Result<Option<(Paired, usize)>, ClientError> {
        let parsed = parse(socks5::parse_reply(input), input, Message::SecondReply)?;
        let Some((reply, n)) = parsed else {
            return Ok(None);
        };
        if reply.rep != socks5::rep::SUCCEEDED {
            return Err(ClientError::PairRefused(reply.rep));
        }
        let paired = Paired {
            bind_host: reply.host,
            bind_port: reply.port,
        };
        Ok(Some((paired, n)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nothing sent yet: the first call sends `hello`.
    Start,
    Greeting,
    Auth,
    Bound,
    Parked,
    Paired,
    Closed(ClientError),
}

/// The client side of one BIND session for one service.
#[derive(Debug)]
pub struct BindClient {
    bind_name: String,
    method: Method,
    /// Greeting, user/password and BIND request, sent by the first call.
    hello: Vec<u8>,
    /// The handshake must reach Parked by then.
    deadline: Instant,
    state: State,
    /// BND of the first reply, once parked: the DMZ's public address for the service.
    bound: Option<(Host, u16)>,
}

impl BindClient {
    /// A session that BINDs `bind_name` (with RFC 1929 `credentials` when given) and must park
    /// by `deadline`. Fails only if a field does not fit its one-byte length.
    pub fn new(
        bind_name: &str,
        credentials: Option<&Credentials>,
        deadline: Instant,
    ) -> Result<Self, ClientError> {
        let method = match credentials {
            Some(_) => Method::UserPass,
            None => Method::NoAuth,
        };
        let mut hello = Vec::with_capacity(600);
        socks5::encode_greeting(&[method], &mut hello);
        if let Some(creds) = credentials {
            socks5::encode_userpass(creds, &mut hello).map_err(ClientError::Encode)?;
        }
        let host = Host::Domain(bind_name.to_owned());
        socks5::encode_request(Command::Bind, &host, 0, &mut hello).map_err(ClientError::Encode)?;
        Ok(BindClient {
            bind_name: bind_name.to_owned(),
            method,
            hello,
            deadline,
            state: State::Start,
            bound: None,
        })
    }

    /// BND of the first reply (the DMZ's public address for the service, the PROXY header's
    /// destination), once parked and when it is an IP.
    pub fn bound(&self) -> Option<SocketAddr> {
        match &self.bound {
            Some((Host::Ip(ip), port)) => Some(SocketAddr::new(*ip, *port)),
            _ => None,
        }
    }

    fn close(&mut self, error: ClientError) -> Action<Progress, ClientError> {
        self.state = State::Closed(error.clone());
        Action::Close(error)
    }

    /// One message from `input`: `None` = need more bytes; `Some((consumed, action))`, with
    /// `action` `None` = go on with the next message.
    fn advance(&mut self, input: &[u8]) -> Option<(usize, Option<Action<Progress, ClientError>>)> {
        let result = match self.state {
            State::Greeting => match looks_like_tls(input) {
                None => return None,
                Some(true) => Err(ClientError::TlsSpoken),
                Some(false) => self.on_method_choice(input),
            },
            State::Auth => self.on_status(input),
            State::Bound => self.on_first_reply(input),
            State::Parked => match Parked.handle(input) {
                Ok(Some((paired, n))) => {
                    self.state = State::Paired;
                    Ok(Some((n, Some(Progress::Paired(paired)))))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
            State::Start | State::Paired | State::Closed(_) => return None,
        };
        match result {
            Ok(None) => None,
            Ok(Some((n, next))) => Some((n, next.map(Action::Ready))),
            Err(e) => Some((0, Some(self.close(e)))),
        }
    }

    fn on_method_choice(&mut self, input: &[u8]) -> Parse {
        let Some((chosen, n)) = parse(
            socks5::parse_method_choice(input),
            input,
            Message::MethodChoice,
        )?
        else {
            return Ok(None);
        };
        let offered = self.method.to_byte();
        if chosen != offered {
            return Err(ClientError::MethodRefused { offered, chosen });
        }
        self.state = match self.method {
            Method::UserPass => State::Auth,
            _ => State::Bound,
        };
        Ok(Some((n, None)))
    }

    fn on_status(&mut self, input: &[u8]) -> Parse {
        let parsed = socks5::parse_userpass_status(input);
        let Some((ok, n)) = parse(parsed, input, Message::AuthStatus)? else {
            return Ok(None);
        };
        if !ok {
            return Err(ClientError::AuthRejected);
        }
        self.state = State::Bound;
        Ok(Some((n, None)))
    }

    fn on_first_reply(&mut self, input: &[u8]) -> Parse {
        let parsed = socks5::parse_reply(input);
        let Some((reply, n)) = parse(parsed, input, Message::FirstReply)? else {
            return Ok(None);
        };
        if reply.rep != socks5::rep::SUCCEEDED {
            return Err(ClientError::BindRefused {
                bind_name: self.bind_name.clone(),
                rep: reply.rep,
            });
        }
        self.state = State::Parked;
        self.bound = Some((reply.host, reply.port));
        Ok(Some((n, Some(Progress::Parked))))
    }
}

/// A message step: need more, consumed `n` (and maybe reached a stage), or the error.
type Parse = Result<Option<(usize, Option<Progress>)>, ClientError>;

fn parse<T>(
    parsed: socks5::Parsed<T>,
    input: &[u8],
    what: Message,
) -> Result<Option<(T, usize)>, ClientError> {
    parse_or_close(
        parsed,
        input,
        what,
        |what, error| ClientError::Malformed { what, error },
        ClientError::TooLong,
    )
}

impl Session for BindClient {
    type Ready = Progress;
    type Error = ClientError;

    /// Sends the requests on the first call, then handles every complete message in `input`,
    /// stopping at Parked (and, on a later call, at Paired). Once paired the bytes are the
    /// relay's: nothing is consumed.
    fn handle(&mut self, input: &[u8], now: Instant) -> Step<Progress, ClientError> {
        if let State::Closed(e) = &self.state {
            return Step::new(0, Vec::new(), Action::Close(e.clone()));
        }
        if let Some(e) = self.handle_timeout(now) {
            return Step::new(0, Vec::new(), Action::Close(e));
        }
        let mut send = Vec::new();
        if self.state == State::Start {
            send = std::mem::take(&mut self.hello);
            self.state = State::Greeting;
        }
        let mut at = 0;
        while let Some((n, action)) = self.advance(&input[at..]) {
            at += n;
            if let Some(action) = action {
                return Step::new(at, send, action);
            }
        }
        Step::new(at, send, Action::NeedInput)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Start | State::Greeting | State::Auth | State::Bound => Some(self.deadline),
            State::Parked | State::Paired | State::Closed(_) => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Option<ClientError> {
        self.poll_timeout()?;
        if now < self.deadline {
            return None;
        }
        let waiting = self.expecting().unwrap_or(Message::MethodChoice);
        let e = ClientError::Timeout { waiting };
        self.state = State::Closed(e.clone());
        Some(e)
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::Start | State::Greeting => Stage::Greeting,
            State::Auth => Stage::Auth,
            State::Bound => Stage::Bound,
            State::Parked => Stage::Parked,
            State::Paired => Stage::Paired,
            State::Closed(_) => Stage::Closed,
        }
    }

    fn expecting(&self) -> Option<Message> {
        match self.state {
            State::Start | State::Greeting => Some(Message::MethodChoice),
            State::Auth => Some(Message::AuthStatus),
            State::Bound => Some(Message::FirstReply),
            State::Parked => Some(Message::SecondReply),
            State::Paired | State::Closed(_) => None,
        }
    }
}
