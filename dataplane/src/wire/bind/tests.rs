//! The BIND session machines: segmentation invariance of each side alone, and an in-memory
//! pair harness (a client machine against a server machine, with an injected clock) for whole
//! conversations, timeouts and refusals.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::client::{self, BindClient, ClientError, Paired, Progress};
use super::server::{self, BindServer, Park, ServerError, Service};
use super::{Action, Message, Session, Stage};
use crate::wire::socks5::{self, Command, Credentials, Host, Method, WireError};
use crate::wire::test_util::*;

const HTTP: &[u8] = b"GET / HTTP/1.1\r\n";
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Svc {
    bind_name: &'static str,
    public: SocketAddr,
    credentials: Option<Credentials>,
}

impl Service for Svc {
    fn bind_name(&self) -> &str {
        self.bind_name
    }
    fn public(&self) -> SocketAddr {
        self.public
    }
    fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn creds(user: &str, password: &str) -> Credentials {
    Credentials {
        user: user.as_bytes().to_vec(),
        password: password.as_bytes().to_vec(),
    }
}

/// `echo` (open) and `vault` (user/password `internal`/`hunter2`).
fn services() -> Vec<Svc> {
    vec![
        Svc {
            bind_name: "echo",
            public: addr("192.0.2.1:9000"),
            credentials: None,
        },
        Svc {
            bind_name: "vault",
            public: addr("[2001:db8::5]:9443"),
            credentials: Some(creds("internal", "hunter2")),
        },
    ]
}

fn open_services() -> Vec<Svc> {
    services().into_iter().take(1).collect()
}

fn client_addr() -> SocketAddr {
    addr("198.51.100.23:50123")
}

fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// One side alone: a driver over any session
// ---------------------------------------------------------------------------------------------

/// Everything a session did over one delivery of a byte stream.
#[derive(Debug, PartialEq)]
struct Run<T, E> {
    /// All bytes it asked to send, concatenated.
    sent: Vec<u8>,
    /// Every action other than NeedInput, in order.
    events: Vec<Action<T, E>>,
    /// Bytes not consumed when the run stopped (the next layer's), including chunks not fed.
    leftover: Vec<u8>,
}

/// Feeds `chunks` into an accumulating buffer, calling `handle` until it needs input; stops
/// after `stop_after` Ready actions or at a Close (as a real caller hands off or closes).
fn run<M: Session>(
    m: &mut M,
    chunks: &[&[u8]],
    now: Instant,
    stop_after: usize,
) -> Run<M::Ready, M::Error> {
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let mut readies = 0;
    // An empty delivery first, as a real driver calls `handle` before its first read (the
    // client sends its requests then): a stream of no chunks still starts the session.
    let mut chunks = std::iter::once(&[][..]).chain(chunks.iter().copied());
    'feed: for chunk in chunks.by_ref() {
        buf.extend_from_slice(chunk);
        loop {
            let step = m.handle(&buf, now);
            assert!(step.consumed <= buf.len(), "consumed past the input");
            buf.drain(..step.consumed);
            sent.extend_from_slice(&step.send);
            match step.action {
                Action::NeedInput => break,
                Action::Ready(t) => {
                    events.push(Action::Ready(t));
                    readies += 1;
                    if readies == stop_after {
                        break 'feed;
                    }
                }
                Action::Close(e) => {
                    events.push(Action::Close(e));
                    break 'feed;
                }
            }
        }
    }
    for chunk in chunks {
        buf.extend_from_slice(chunk);
    }
    Run {
        sent,
        events,
        leftover: buf,
    }
}

/// Wire rule 4 for a session: `stream` delivered whole, split in two at every offset, and byte
/// by byte gives the same run. Returns it.
fn assert_invariant<M: Session>(
    make: impl Fn() -> M,
    stream: &[u8],
    stop_after: usize,
) -> Run<M::Ready, M::Error>
where
    Run<M::Ready, M::Error>: PartialEq + std::fmt::Debug,
{
    let now = Instant::now();
    let whole = run(&mut make(), &[stream], now, stop_after);
    for (k, parts) in two_part_splits(stream) {
        assert_eq!(
            run(&mut make(), &parts, now, stop_after),
            whole,
            "split at {k}"
        );
    }
    assert_eq!(
        run(&mut make(), &byte_by_byte(stream), now, stop_after),
        whole,
        "byte by byte"
    );
    whole
}

/// What a client sends for `bind_name` (greeting, user/password, request).
fn client_hello(bind_name: &str, creds: Option<&Credentials>) -> Vec<u8> {
    let mut c = BindClient::new(bind_name, creds, Instant::now() + TIMEOUT).expect("fits");
    c.handle(&[], Instant::now()).send
}

fn reply(rep: u8, a: SocketAddr) -> Vec<u8> {
    enc(|o| socks5::encode_reply(rep, a, o))
}

#[test]
fn server_is_segmentation_invariant() {
    let svcs = services();
    let make = || BindServer::new(&svcs, Instant::now() + TIMEOUT);
    let cases = [
        ("echo", None, 0),
        ("vault", Some(creds("internal", "hunter2")), 1),
    ];
    for (name, c, index) in cases {
        let hello = client_hello(name, c.as_ref());
        // Without and with the next layer's bytes coalesced after the BIND request.
        for tail in [&b""[..], HTTP] {
            let mut stream = hello.clone();
            stream.extend_from_slice(tail);
            let r = assert_invariant(make, &stream, 1);
            let park = Park {
                service: index,
                public: svcs[index].public,
            };
            assert_eq!(r.events, [Action::Ready(park)], "{name}");
            assert_eq!(r.leftover, tail, "{name}: leftover is handed on");
            let method = if c.is_some() { 2 } else { 0 };
            let mut expected = enc(|o| socks5::encode_method_choice(method, o));
            if c.is_some() {
                socks5::encode_userpass_status(true, &mut expected);
            }
            socks5::encode_reply(0, park.public, &mut expected);
            assert_eq!(r.sent, expected, "{name}");
        }
    }
}

#[test]
fn server_without_credentials_chooses_no_auth() {
    let svcs = open_services();
    let mut stream = enc(|o| socks5::encode_greeting(&[Method::NoAuth, Method::UserPass], o));
    socks5::encode_request(Command::Bind, &Host::Domain("echo".into()), 0, &mut stream).unwrap();
    let r = assert_invariant(
        || BindServer::new(&svcs, Instant::now() + TIMEOUT),
        &stream,
        1,
    );
    assert_eq!(&r.sent[..2], [5, 0]);
    assert!(matches!(
        r.events[..],
        [Action::Ready(Park { service: 0, .. })]
    ));
}

#[test]
fn client_is_segmentation_invariant() {
    let first = reply(0, addr("192.0.2.1:9000"));
    let second = reply(0, client_addr());
    for with_auth in [false, true] {
        let c = with_auth.then(|| creds("internal", "hunter2"));
        let make = || BindClient::new("vault", c.as_ref(), Instant::now() + TIMEOUT).unwrap();
        let mut stream = enc(|o| socks5::encode_method_choice(if with_auth { 2 } else { 0 }, o));
        if with_auth {
            socks5::encode_userpass_status(true, &mut stream);
        }
        stream.extend_from_slice(&first);
        // Up to Parked: the second reply and the payload are the parked leg's leftover.
        let mut rest = second.clone();
        rest.extend_from_slice(HTTP);
        let mut full = stream.clone();
        full.extend_from_slice(&rest);
        let r = assert_invariant(make, &full, 1);
        assert_eq!(r.events, [Action::Ready(Progress::Parked)]);
        assert_eq!(r.leftover, rest);
        assert_eq!(r.sent, client_hello("vault", c.as_ref()));
        // On to Paired: the payload is left for the relay.
        let r = assert_invariant(make, &full, 2);
        let paired = Paired {
            bind_host: Host::Ip(client_addr().ip()),
            bind_port: client_addr().port(),
        };
        assert_eq!(
            r.events,
            [
                Action::Ready(Progress::Parked),
                Action::Ready(Progress::Paired(paired))
            ]
        );
        assert_eq!(r.leftover, HTTP);
    }
}

#[test]
fn parked_halves_pair_at_every_split() {
    let bytes = server::Parked.pair(client_addr());
    let mut stream = bytes.clone();
    stream.extend_from_slice(HTTP);
    for (k, _) in two_part_splits(&stream) {
        let got = client::Parked.handle(&stream[..k]).expect("valid");
        if k < bytes.len() {
            assert_eq!(got, None, "prefix of {k}");
        } else {
            let (paired, n) = got.expect("complete");
            assert_eq!(paired.bind_addr(), Some(client_addr()));
            assert_eq!(&stream[n..k], &HTTP[..k - bytes.len()]);
        }
    }
    assert_eq!(
        client::Parked.handle(&reply(1, client_addr())),
        Err(ClientError::PairRefused(1))
    );
    assert!(matches!(
        client::Parked.handle(b"HTTP/1.1"),
        Err(ClientError::Malformed {
            what: Message::SecondReply,
            error: WireError::BadVersion(b'H')
        })
    ));
}

#[test]
fn server_refusals_carry_their_reply() {
    let svcs = services();
    let now = Instant::now();
    let greet_no_auth = enc(|o| socks5::encode_greeting(&[Method::NoAuth], o));
    let request = |cmd, host: &str| {
        enc(|o| socks5::encode_request(cmd, &Host::Domain(host.into()), 0, o).unwrap())
    };
    let cat = |parts: &[&[u8]]| parts.concat();
    let unspecified = addr("0.0.0.0:0");
    let cases: Vec<(Vec<u8>, Vec<u8>, ServerError)> = vec![
        (
            cat(&[&greet_no_auth, &request(Command::Bind, "nope")]),
            cat(&[&[5, 0], &reply(2, unspecified)]),
            ServerError::UnknownService("nope".into()),
        ),
        (
            cat(&[&greet_no_auth, &request(Command::Connect, "echo")]),
            cat(&[&[5, 0], &reply(7, unspecified)]),
            ServerError::UnsupportedCommand(Command::Connect),
        ),
        (
            // The open service's client asks for the service that needs credentials.
            cat(&[&greet_no_auth, &request(Command::Bind, "vault")]),
            cat(&[&[5, 0], &reply(2, unspecified)]),
            ServerError::CredentialsRequired {
                bind_name: "vault".into(),
            },
        ),
        (
            enc(|o| socks5::encode_greeting(&[Method::Other(1)], o)),
            vec![5, 0xff],
            ServerError::NoAcceptableMethod {
                offered: vec![Method::Other(1)],
            },
        ),
        (
            client_hello("vault", Some(&creds("internal", "wrong"))),
            vec![5, 2, 1, 1],
            ServerError::UnknownUser {
                user: "internal".into(),
            },
        ),
        (
            b"GET / HTTP/1.1\r\n".to_vec(),
            Vec::new(),
            ServerError::Malformed {
                what: Message::Greeting,
                error: WireError::BadVersion(b'G'),
            },
        ),
        (
            // A TLS ClientHello's record header.
            vec![0x16, 0x03, 0x01, 0x00, 0xc8, 0x01],
            Vec::new(),
            ServerError::TlsSpoken,
        ),
        (
            cat(&[&greet_no_auth, &[5, 2, 1]]),
            vec![5, 0],
            ServerError::Malformed {
                what: Message::Request,
                error: WireError::ReservedNotZero(1),
            },
        ),
    ];
    for (stream, sent, error) in cases {
        let r = assert_invariant(|| BindServer::new(&svcs, now + TIMEOUT), &stream, 1);
        assert_eq!(r.sent, sent, "{error}");
        assert_eq!(r.events, [Action::Close(error.clone())]);
        assert!(!error.to_string().is_empty() && !error.label().is_empty());
    }
}

#[test]
fn server_closed_repeats_its_error_and_parked_rejects_early_data() {
    let svcs = open_services();
    let now = Instant::now();
    let mut s = BindServer::new(&svcs, now + TIMEOUT);
    let step = s.handle(&client_hello("echo", None), now);
    assert!(matches!(step.action, Action::Ready(_)));
    assert_eq!(s.stage(), Stage::Parked);
    assert_eq!(
        s.poll_timeout(),
        None,
        "a parked connection has no deadline"
    );
    assert_eq!(s.handle(&[], now + TIMEOUT * 10).action, Action::NeedInput);
    let early = s.handle(b"x", now);
    assert_eq!(early.action, Action::Close(ServerError::EarlyData(1)));
    assert_eq!(s.stage(), Stage::Closed);
    assert_eq!(
        s.handle(b"", now).action,
        Action::Close(ServerError::EarlyData(1))
    );
    assert_eq!(
        s.pair(client_addr()),
        Err(ServerError::NotParked(Stage::Closed))
    );
}

#[test]
fn client_refusals() {
    let now = Instant::now();
    let first_ok = reply(0, addr("192.0.2.1:9000"));
    let cases: Vec<(Option<Credentials>, Vec<u8>, ClientError)> = vec![
        (
            None,
            vec![5, 0xff],
            ClientError::MethodRefused {
                offered: 0,
                chosen: 0xff,
            },
        ),
        (
            Some(creds("u", "p")),
            vec![5, 2, 1, 1],
            ClientError::AuthRejected,
        ),
        (
            None,
            [&[5, 0][..], &reply(2, addr("0.0.0.0:0"))].concat(),
            ClientError::BindRefused {
                bind_name: "echo".into(),
                rep: 2,
            },
        ),
        (
            None,
            [&[5, 0][..], &first_ok, &reply(5, client_addr())].concat(),
            ClientError::PairRefused(5),
        ),
        (
            None,
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46],
            ClientError::TlsSpoken,
        ),
        (
            None,
            vec![4, 0],
            ClientError::Malformed {
                what: Message::MethodChoice,
                error: WireError::BadVersion(4),
            },
        ),
    ];
    for (c, stream, error) in cases {
        let make = || BindClient::new("echo", c.as_ref(), now + TIMEOUT).unwrap();
        let r = assert_invariant(make, &stream, 2);
        assert_eq!(
            r.events.last(),
            Some(&Action::Close(error.clone())),
            "{error}"
        );
        assert!(error.to_string().contains("DMZ") || !error.label().is_empty());
    }
    assert_eq!(
        BindClient::new(&"x".repeat(256), None, now).unwrap_err(),
        ClientError::Encode(WireError::TooLong)
    );
    assert!(ClientError::TlsSpoken
        .to_string()
        .starts_with("the DMZ answered with TLS"));
}

proptest! {
    #[test]
    fn sessions_never_panic_on_arbitrary_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        prefix in 0usize..3,
    ) {
        let svcs = services();
        let now = Instant::now();
        let hellos = [Vec::new(), client_hello("echo", None), enc(|o| socks5::encode_greeting(&[Method::UserPass], o))];
        let mut stream = hellos[prefix].clone();
        stream.extend_from_slice(&input);
        let whole = run(&mut BindServer::new(&svcs, now + TIMEOUT), &[&stream], now, 1);
        prop_assert_eq!(run(&mut BindServer::new(&svcs, now + TIMEOUT), &byte_by_byte(&stream), now, 1), whole);
        let make = || BindClient::new("echo", None, now + TIMEOUT).unwrap();
        let whole = run(&mut make(), &[&input], now, 2);
        prop_assert_eq!(run(&mut make(), &byte_by_byte(&input), now, 2), whole);
    }
}

// ---------------------------------------------------------------------------------------------
// Both sides: an in-memory pair with an injected clock (after quinn-proto's `tests/util.rs`)
// ---------------------------------------------------------------------------------------------

/// One side of the pair: its machine, the bytes in flight to it, and how it ended.
struct Side<M: Session> {
    machine: M,
    /// Bytes the peer sent and this side has not consumed yet.
    inbox: Vec<u8>,
    /// The first Ready or Close it reported (later ones are pushed too).
    events: Vec<Action<M::Ready, M::Error>>,
    /// Closed: it takes no more bytes.
    closed: bool,
}

impl<M: Session> Side<M> {
    fn new(machine: M) -> Self {
        Side {
            machine,
            inbox: Vec::new(),
            events: Vec::new(),
            closed: false,
        }
    }

    /// Lets the machine see its inbox; returns what it sends, and whether it did anything.
    fn step(&mut self, now: Instant) -> (Vec<u8>, bool) {
        if self.closed {
            return (Vec::new(), false);
        }
        let step = self.machine.handle(&self.inbox, now);
        self.inbox.drain(..step.consumed);
        let mut progressed = step.consumed > 0 || !step.send.is_empty();
        match step.action {
            Action::NeedInput => {}
            Action::Ready(t) => {
                self.events.push(Action::Ready(t));
                progressed = true;
            }
            Action::Close(e) => {
                self.events.push(Action::Close(e));
                self.closed = true;
                progressed = true;
            }
        }
        (step.send, progressed)
    }
}

/// A BIND client and a BIND server connected by two in-memory byte pipes. Bytes travel in
/// chunks of at most `mtu` per round (so every conversation also runs segmented); time moves
/// only when the test or [`Pair::advance_time`] moves it.
struct Pair<'a> {
    server: Side<BindServer<'a, Svc>>,
    client: Side<BindClient>,
    /// In flight, not yet delivered.
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    now: Instant,
    mtu: usize,
    /// The pipe to the server carries at most this many bytes in all; the rest is lost (a
    /// stalled peer).
    to_server_budget: usize,
}

impl<'a> Pair<'a> {
    fn new(svcs: &'a [Svc], bind_name: &str, c: Option<Credentials>, mtu: usize) -> Self {
        let now = Instant::now();
        let client = BindClient::new(bind_name, c.as_ref(), now + TIMEOUT).expect("fits");
        Pair {
            server: Side::new(BindServer::new(svcs, now + TIMEOUT)),
            client: Side::new(client),
            to_server: Vec::new(),
            to_client: Vec::new(),
            now,
            mtu,
            to_server_budget: usize::MAX,
        }
    }

    /// One round: up to `mtu` bytes arrive each way, then each side handles its inbox.
    fn step(&mut self) -> bool {
        let n = self
            .to_server
            .len()
            .min(self.mtu)
            .min(self.to_server_budget);
        self.to_server_budget -= n;
        self.server.inbox.extend(self.to_server.drain(..n));
        let m = self.to_client.len().min(self.mtu);
        self.client.inbox.extend(self.to_client.drain(..m));
        let (sent, c) = self.client.step(self.now);
        self.to_server.extend_from_slice(&sent);
        let (sent, s) = self.server.step(self.now);
        self.to_client.extend_from_slice(&sent);
        n > 0 || m > 0 || c || s
    }

    /// Steps until neither side makes progress and nothing deliverable is in flight.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair did not settle");
    }

    /// Jumps to the earlier deadline of the two sides and lets both notice the time.
    fn advance_time(&mut self) {
        let next = [
            self.server.machine.poll_timeout(),
            self.client.machine.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("some side has a deadline");
        self.now = self.now.max(next);
        if let Some(e) = self.server.machine.handle_timeout(self.now) {
            self.server.events.push(Action::Close(e));
            self.server.closed = true;
        }
        if let Some(e) = self.client.machine.handle_timeout(self.now) {
            self.client.events.push(Action::Close(e));
            self.client.closed = true;
        }
    }

    fn stages(&self) -> (Stage, Stage) {
        (self.server.machine.stage(), self.client.machine.stage())
    }
}

#[test]
fn pair_parks_and_pairs_over_every_mtu() {
    let svcs = services();
    for (name, c, index) in [
        ("echo", None, 0),
        ("vault", Some(creds("internal", "hunter2")), 1),
    ] {
        for mtu in [1, 2, 3, 7, 64, 1500] {
            let mut pair = Pair::new(&svcs, name, c.clone(), mtu);
            pair.drive();
            assert_eq!(
                pair.stages(),
                (Stage::Parked, Stage::Parked),
                "{name} mtu {mtu}"
            );
            assert_eq!(
                pair.server.events,
                [Action::Ready(Park {
                    service: index,
                    public: svcs[index].public
                })]
            );
            assert_eq!(pair.client.events, [Action::Ready(Progress::Parked)]);
            // The first reply's BND (the PROXY header's destination) is kept.
            assert_eq!(pair.client.machine.bound(), Some(svcs[index].public));
            // A public client arrives: the DMZ's second reply with its first bytes coalesced.
            let mut second = pair.server.machine.pair(client_addr()).expect("parked");
            assert_eq!(second, server::Parked.pair(client_addr()));
            second.extend_from_slice(HTTP);
            pair.to_client.extend_from_slice(&second);
            pair.drive();
            assert_eq!(pair.stages(), (Stage::Paired, Stage::Paired));
            let Some(Action::Ready(Progress::Paired(paired))) = pair.client.events.last() else {
                panic!("client not paired: {:?}", pair.client.events);
            };
            assert_eq!(paired.bind_addr(), Some(client_addr()));
            assert_eq!(pair.client.inbox, HTTP, "the payload is the relay's");
            assert_eq!(pair.server.machine.poll_timeout(), None);
            assert_eq!(pair.client.machine.poll_timeout(), None);
        }
    }
}

#[test]
fn pair_auth_failure_and_unknown_service() {
    let svcs = services();
    let mut pair = Pair::new(&svcs, "vault", Some(creds("internal", "nope")), 5);
    pair.drive();
    assert_eq!(
        pair.server.events,
        [Action::Close(ServerError::UnknownUser {
            user: "internal".into()
        })]
    );
    assert_eq!(
        pair.client.events,
        [Action::Close(ClientError::AuthRejected)]
    );

    let mut pair = Pair::new(&svcs, "nope", None, 5);
    pair.drive();
    assert_eq!(
        pair.server.events,
        [Action::Close(ServerError::UnknownService("nope".into()))]
    );
    assert_eq!(
        pair.client.events,
        [Action::Close(ClientError::BindRefused {
            bind_name: "nope".into(),
            rep: socks5::rep::NOT_ALLOWED
        })]
    );

    // A service that needs credentials, dialled without them.
    let mut pair = Pair::new(&svcs, "vault", None, 64);
    pair.drive();
    assert!(matches!(
        pair.server.events[..],
        [Action::Close(ServerError::CredentialsRequired { .. })]
    ));
    assert!(matches!(
        pair.client.events[..],
        [Action::Close(ClientError::BindRefused { rep: 2, .. })]
    ));
}

#[test]
fn pair_timeouts_follow_the_injected_clock() {
    let svcs = services();
    // The server hears nothing: its deadline closes it, not before.
    let now = Instant::now();
    let mut server = BindServer::new(&svcs, now + TIMEOUT);
    assert_eq!(server.handle(&[5], now).action, Action::NeedInput);
    assert_eq!(server.poll_timeout(), Some(now + TIMEOUT));
    assert_eq!(
        server.handle_timeout(now + TIMEOUT - Duration::from_millis(1)),
        None
    );
    assert_eq!(
        server
            .handle(&[5], now + TIMEOUT - Duration::from_millis(1))
            .action,
        Action::NeedInput
    );
    let late = server.handle(&[5, 1, 0], now + TIMEOUT);
    assert_eq!(
        late.action,
        Action::Close(ServerError::Timeout {
            waiting: Message::Greeting
        })
    );
    assert_eq!(late.consumed, 0);

    // The client hears nothing: timeout while waiting for the method choice.
    let mut client = BindClient::new("echo", None, now + TIMEOUT).unwrap();
    assert!(!client.handle(&[], now).send.is_empty());
    assert_eq!(
        client.handle_timeout(now + TIMEOUT),
        Some(ClientError::Timeout {
            waiting: Message::MethodChoice
        })
    );
    assert_eq!(client.stage(), Stage::Closed);

    // In a pair whose bytes stop half way (the client's hello stalls after 3 bytes: the
    // greeting got through, the request did not), the clock decides, for both sides.
    for budget in [0, 3, 5] {
        let mut pair = Pair::new(&svcs, "echo", None, 64);
        pair.to_server_budget = budget;
        pair.drive();
        let waiting = if budget < 3 {
            Message::Greeting
        } else {
            Message::Request
        };
        let client_waiting = if budget < 3 {
            Message::MethodChoice
        } else {
            Message::FirstReply
        };
        let deadline = pair.server.machine.poll_timeout().expect("handshaking");
        assert_eq!(pair.client.machine.poll_timeout(), Some(deadline));
        pair.advance_time();
        assert_eq!(pair.now, deadline);
        assert_eq!(pair.stages(), (Stage::Closed, Stage::Closed));
        assert_eq!(
            pair.server.events,
            [Action::Close(ServerError::Timeout { waiting })]
        );
        assert_eq!(
            pair.client.events,
            [Action::Close(ClientError::Timeout {
                waiting: client_waiting
            })]
        );
    }
}

#[test]
fn pair_server_against_garbage_and_tls() {
    let svcs = services();
    for (garbage, expected) in [
        (
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            ServerError::TlsSpoken,
        ),
        (
            &b"\x05\x00"[..],
            ServerError::Malformed {
                what: Message::Greeting,
                error: WireError::NoMethods,
            },
        ),
    ] {
        let mut side = Side::new(BindServer::new(&svcs, Instant::now() + TIMEOUT));
        for b in garbage {
            side.inbox.push(*b);
            side.step(Instant::now());
        }
        assert_eq!(side.events, [Action::Close(expected)]);
    }
}
