//! Server side of the BIND session: the DMZ's reverse endpoint, where internal gateways park
//! prepared connections.
//!
//! What it does: reads the greeting, chooses a method (user/password when the client offers it
//! and some service needs credentials; else no-auth; else user/password), checks RFC 1929
//! credentials against the services, reads the BIND request whose DST.ADDR names a service,
//! answers with the first reply (BND = the service's public address) and reports
//! [`Park`]. Refusals carry their reply: NO ACCEPTABLE METHODS, auth failure status, REP 0x07
//! for a command other than BIND, REP 0x02 for an unknown service or missing credentials.
//! Pairing ([`BindServer::pair`] or [`Parked::pair`]) gives the second reply, BND = the public
//! client's address.
//!
//! What it does not do: no I/O, no clock, no TLS; it keeps no parked connection and does not
//! choose which prepared connection a client gets. Bytes that arrive while parked (before the
//! second reply) are a protocol error ([`ServerError::EarlyData`]).

use std::net::SocketAddr;
use std::time::Instant;

use super::{looks_like_tls, parse_or_close, Action, Message, Session, Stage, Step};
use crate::wire::socks5::{self, Command, Credentials, Host, Method, WireError};

/// A service the reverse endpoint accepts BINDs for, as the session needs to see it.
pub trait Service {
    /// The DST.ADDR (DOMAINNAME) that names it in a BIND request.
    fn bind_name(&self) -> &str;
    /// Sent as BND in the first reply.
    fn public(&self) -> SocketAddr;
    /// RFC 1929 credentials the service requires, if any.
    fn credentials(&self) -> Option<&Credentials>;
}

/// The session parked: the first reply is in [`Step::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Park {
    /// Index of the service in the slice given to [`BindServer::new`].
    pub service: usize,
    /// Its public address, sent in the first reply.
    pub public: SocketAddr,
}

/// Why the server side closed the session. Every variant carries what the log needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// The BIND named a service that needs credentials other than those the client gave.
    #[error("BIND for service {bind_name:?} without its credentials")]
    CredentialsRequired { bind_name: String },
    /// Bytes arrived after the BIND request, before pairing.
    #[error("{0} bytes after BIND before pairing")]
    EarlyData(usize),
    /// A message did not parse.
    #[error("malformed SOCKS5 {what}: {error} ({})", error.label())]
    Malformed { what: Message, error: WireError },
    /// The greeting offered neither no-auth nor user/password.
    #[error("no acceptable authentication method among {offered:?}")]
    NoAcceptableMethod { offered: Vec<Method> },
    /// [`BindServer::pair`] was called before the session parked (or after it paired).
    #[error("pair called in stage {0:?}, not Parked")]
    NotParked(Stage),
    /// The handshake deadline passed while waiting for `waiting`.
    #[error("no complete SOCKS5 {waiting}")]
    Timeout { waiting: Message },
    /// The first bytes are a TLS record: the peer speaks TLS to a plain endpoint.
    #[error("the peer speaks TLS, but [reverse] has no tls (or the peer's tls is set by mistake)")]
    TlsSpoken,
    /// More than [`super::MAX_MESSAGE_BYTES`] without a complete message.
    #[error("SOCKS5 {0} too long")]
    TooLong(Message),
    /// The BIND named no known service (or an IP address).
    #[error("BIND for unknown service {0:?} refused")]
    UnknownService(String),
    /// RFC 1929 credentials that match no service.
    #[error("unknown user/password for user {user:?}")]
    UnknownUser { user: String },
    /// CONNECT or UDP ASSOCIATE.
    #[error("{0:?} is not supported here; only BIND")]
    UnsupportedCommand(Command),
}

impl ServerError {
    /// Stable snake_case label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ServerError::CredentialsRequired { .. } => "credentials_required",
            ServerError::EarlyData(_) => "early_data",
            ServerError::Malformed { .. } => "malformed",
            ServerError::NoAcceptableMethod { .. } => "no_acceptable_method",
            ServerError::NotParked(_) => "not_parked",
            ServerError::Timeout { .. } => "timeout",
            ServerError::TlsSpoken => "tls_spoken",
            ServerError::TooLong(_) => "too_long",
            ServerError::UnknownService(_) => "unknown_service",
            ServerError::UnknownUser { .. } => "unknown_user",
            ServerError::UnsupportedCommand(_) => "unsupported_command",
        }
    }
}

/// A parked prepared connection's half of the session: all that is left is the second reply.
/// Zero-sized, so whoever holds the parked connection can make one without keeping the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parked;

impl Parked {
    /// The second BIND reply (REP 0x00, BND = the public client's address), to be written
    /// ahead of the client's bytes.
    pub fn pair(self, client: SocketAddr) -> Vec<u8> {
        let mut reply = Vec::with_capacity(22);
        socks5::encode_reply(socks5::rep::SUCCEEDED, client, &mut reply);
        reply
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Greeting,
    Auth,
    Bound,
    Parked(Park),
    Paired,
    Closed(ServerError),
}

/// The server side of one BIND session over the services in `services`.
#[derive(Debug)]
pub struct BindServer<'a, S> {
    services: &'a [S],
    /// The handshake must reach Parked by then.
    deadline: Instant,
    state: State,
    /// The credentials the client authenticated with, if it did.
    authenticated: Option<Credentials>,
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

impl<'a, S: Service> BindServer<'a, S> {
    /// A session that must park by `deadline`.
    pub fn new(services: &'a [S], deadline: Instant) -> Self {
        BindServer {
            services,
            deadline,
            state: State::Greeting,
            authenticated: None,
        }
    }

    /// The second reply for the public client at `client`; the session is then Paired.
    pub fn pair(&mut self, client: SocketAddr) -> Result<Vec<u8>, ServerError> {
        match self.state {
            State::Parked(_) => {
                self.state = State::Paired;
                Ok(Parked.pair(client))
            }
            _ => Err(ServerError::NotParked(self.stage())),
        }
    }

    fn any_credentials(&self) -> bool {
        self.services.iter().any(|s| s.credentials().is_some())
    }

    fn close(&mut self, error: ServerError) -> Action<Park, ServerError> {
        self.state = State::Closed(error.clone());
        Action::Close(error)
    }

    /// One message from `input` in the current state: `Ok(None)` = need more bytes,
    /// `Ok(Some((consumed, action)))` with `action` `None` = go on with the next message.
    fn advance(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<(usize, Option<Action<Park, ServerError>>)> {
        let waiting = self.expecting()?;
        let parsed = match waiting {
            Message::Greeting => match looks_like_tls(input) {
                None => return None,
                Some(true) => return Some((0, Some(self.close(ServerError::TlsSpoken)))),
                Some(false) => self.on_greeting(input, out),
            },
            Message::UserPass => self.on_userpass(input, out),
            _ => self.on_request(input, out),
        };
        match parsed {
            Ok(None) => None,
            Ok(Some((n, next))) => Some((n, next.map(Action::Ready))),
            Err(e) => Some((0, Some(self.close(e)))),
        }
    }

    fn on_greeting(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<(usize, Option<Park>)>, ServerError> {
        let Some((greeting, n)) = parse(socks5::parse_greeting(input), input, Message::Greeting)?
        else {
            return Ok(None);
        };
        let any_credentials = self.any_credentials();
        let method = if greeting.offers(Method::UserPass) && any_credentials {
            Method::UserPass
        } else if greeting.offers(Method::NoAuth) {
            Method::NoAuth
        } else if greeting.offers(Method::UserPass) {
            Method::UserPass
        } else {
            socks5::encode_method_choice(socks5::NO_ACCEPTABLE_METHOD, out);
            return Err(ServerError::NoAcceptableMethod {
                offered: greeting.methods,
            });
        };
        socks5::encode_method_choice(method.to_byte(), out);
        self.state = if method == Method::UserPass {
            State::Auth
        } else {
            State::Bound
        };
        Ok(Some((n, None)))
    }

    fn on_userpass(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<(usize, Option<Park>)>, ServerError> {
        let Some((creds, n)) = parse(socks5::parse_userpass(input), input, Message::UserPass)?
        else {
            return Ok(None);
        };
        let known = !self.any_credentials()
            || self
                .services
                .iter()
                .any(|s| s.credentials() == Some(&creds));
        socks5::encode_userpass_status(known, out);
        if !known {
            return Err(ServerError::UnknownUser {
                user: String::from_utf8_lossy(&creds.user).into_owned(),
            });
        }
        self.authenticated = Some(creds);
        self.state = State::Bound;
        Ok(Some((n, None)))
    }

    fn on_request(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<(usize, Option<Park>)>, ServerError> {
        let Some((request, n)) = parse(socks5::parse_request(input), input, Message::Request)?
        else {
            return Ok(None);
        };
        if request.command != Command::Bind {
            socks5::encode_reply(socks5::rep::COMMAND_NOT_SUPPORTED, unspecified(), out);
            return Err(ServerError::UnsupportedCommand(request.command));
        }
        let found = match &request.host {
            Host::Domain(name) => self.services.iter().position(|s| s.bind_name() == name),
            Host::Ip(_) => None,
        };
        let Some(index) = found else {
            socks5::encode_reply(socks5::rep::NOT_ALLOWED, unspecified(), out);
            return Err(ServerError::UnknownService(request.host.to_string()));
        };
        let service = &self.services[index];
        if let Some(required) = service.credentials() {
            if self.authenticated.as_ref() != Some(required) {
                socks5::encode_reply(socks5::rep::NOT_ALLOWED, unspecified(), out);
                return Err(ServerError::CredentialsRequired {
                    bind_name: service.bind_name().to_owned(),
                });
            }
        }
        let park = Park {
            service: index,
            public: service.public(),
        };
        socks5::encode_reply(socks5::rep::SUCCEEDED, park.public, out);
        self.state = State::Parked(park);
        Ok(Some((n, Some(park))))
    }
}

fn parse<T>(
    parsed: socks5::Parsed<T>,
    input: &[u8],
    what: Message,
) -> Result<Option<(T, usize)>, ServerError> {
    parse_or_close(
        parsed,
        input,
        what,
        |what, error| ServerError::Malformed { what, error },
        ServerError::TooLong,
    )
}

impl<S: Service> Session for BindServer<'_, S> {
    type Ready = Park;
    type Error = ServerError;

    /// Handles every complete message in `input`, stopping once parked. While parked, any byte
    /// is [`ServerError::EarlyData`]; once paired, the bytes are the relay's (nothing consumed).
    fn handle(&mut self, input: &[u8], now: Instant) -> Step<Park, ServerError> {
        match &self.state {
            State::Closed(e) => return Step::new(0, Vec::new(), Action::Close(e.clone())),
            State::Parked(_) if !input.is_empty() => {
                let action = self.close(ServerError::EarlyData(input.len()));
                return Step::new(0, Vec::new(), action);
            }
            State::Parked(_) | State::Paired => return Step::new(0, Vec::new(), Action::NeedInput),
            _ => {}
        }
        if let Some(e) = self.handle_timeout(now) {
            return Step::new(0, Vec::new(), Action::Close(e));
        }
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((n, action)) = self.advance(&input[at..], &mut out) {
            at += n;
            if let Some(action) = action {
                return Step::new(at, out, action);
            }
        }
        Step::new(at, out, Action::NeedInput)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.expecting().map(|_| self.deadline)
    }

    fn handle_timeout(&mut self, now: Instant) -> Option<ServerError> {
        let waiting = self.expecting()?;
        if now < self.deadline {
            return None;
        }
        let e = ServerError::Timeout { waiting };
        self.state = State::Closed(e.clone());
        Some(e)
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::Greeting => Stage::Greeting,
            State::Auth => Stage::Auth,
            State::Bound => Stage::Bound,
            State::Parked(_) => Stage::Parked,
            State::Paired => Stage::Paired,
            State::Closed(_) => Stage::Closed,
        }
    }

    fn expecting(&self) -> Option<Message> {
        match self.state {
            State::Greeting => Some(Message::Greeting),
            State::Auth => Some(Message::UserPass),
            State::Bound => Some(Message::Request),
            State::Parked(_) | State::Paired | State::Closed(_) => None,
        }
    }
}
