//! Encode-then-parse round trips for every SOCKS5 message: a value built from fuzz bytes is
//! encoded (after arbitrary bytes already in the output buffer), parsed back from the encoding
//! followed by arbitrary trailing bytes, and must come back equal, consuming exactly the
//! encoding; every strict prefix of the encoding must need more bytes. Values an encoder must
//! refuse (empty or over-long domain, over-long user or password) must be refused with the
//! documented error and leave the output untouched.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sallyport_dataplane::wire::socks5::{
    encode_greeting, encode_method_choice, encode_reply, encode_request, encode_userpass,
    encode_userpass_status, parse_greeting, parse_method_choice, parse_reply, parse_request,
    parse_userpass, parse_userpass_status, Command, Credentials, Greeting, Host, Method, Parsed,
    Reply, Request, WireError, MAX_FIELD_LEN,
};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FuzzCommand {
    Bind,
    Connect,
    UdpAssociate,
}

impl From<FuzzCommand> for Command {
    fn from(c: FuzzCommand) -> Self {
        match c {
            FuzzCommand::Bind => Command::Bind,
            FuzzCommand::Connect => Command::Connect,
            FuzzCommand::UdpAssociate => Command::UdpAssociate,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum FuzzHost {
    V4([u8; 4]),
    V6([u8; 16]),
    Domain(String),
}

impl From<FuzzHost> for Host {
    fn from(h: FuzzHost) -> Self {
        match h {
            FuzzHost::V4(b) => Host::Ip(IpAddr::from(b)),
            FuzzHost::V6(b) => Host::Ip(IpAddr::from(b)),
            FuzzHost::Domain(s) => Host::Domain(s),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bytes already in the output buffer: encoders append and must not touch them.
    prefix: Vec<u8>,
    /// Bytes after the message (the next layer's): never consumed.
    tail: Vec<u8>,
    command: FuzzCommand,
    request_host: FuzzHost,
    request_port: u16,
    rep: u8,
    reply_host: FuzzHost,
    reply_port: u16,
    methods: Vec<u8>,
    user: Vec<u8>,
    password: Vec<u8>,
    choice: u8,
    status_ok: bool,
}

/// `bytes` (a complete encoding) parses to `expected` with and without `tail` after it, and
/// every strict prefix needs more bytes.
fn assert_round_trip<T: PartialEq + std::fmt::Debug>(
    parse: fn(&[u8]) -> Parsed<T>,
    bytes: &[u8],
    tail: &[u8],
    expected: &T,
) {
    for k in 0..bytes.len() {
        assert_eq!(parse(&bytes[..k]), Ok(None), "prefix {k} of {bytes:?}");
    }
    let (value, n) = parse(bytes).expect("valid").expect("complete");
    assert_eq!((&value, n), (expected, bytes.len()));
    let mut stream = bytes.to_vec();
    stream.extend_from_slice(tail);
    let (value, n) = parse(&stream).expect("valid").expect("complete");
    assert_eq!((&value, n), (expected, bytes.len()));
}

/// Runs an appending encoder after `prefix`; returns what it appended (or its error, after
/// checking the buffer was left untouched).
fn append(
    prefix: &[u8],
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
) -> Result<Vec<u8>, WireError> {
    let mut out = prefix.to_vec();
    match f(&mut out) {
        Ok(()) => {
            assert_eq!(
                &out[..prefix.len()],
                prefix,
                "encoder touched earlier bytes"
            );
            Ok(out.split_off(prefix.len()))
        }
        Err(e) => {
            assert_eq!(out, prefix, "failed encoder left bytes behind");
            Err(e)
        }
    }
}

/// The error `encode_request` must return for `host`, if any.
fn host_error(host: &Host) -> Option<WireError> {
    match host {
        Host::Domain(d) if d.is_empty() => Some(WireError::BadDomain),
        Host::Domain(d) if d.len() > MAX_FIELD_LEN => Some(WireError::TooLong),
        _ => None,
    }
}

fuzz_target!(|input: Input| {
    let Input {
        prefix,
        tail,
        command,
        request_host,
        request_port,
        rep,
        reply_host,
        reply_port,
        methods,
        user,
        password,
        choice,
        status_ok,
    } = input;

    // Request.
    let command = Command::from(command);
    let host = Host::from(request_host);
    let encoded = append(&prefix, |o| encode_request(command, &host, request_port, o));
    match host_error(&host) {
        Some(e) => assert_eq!(encoded, Err(e)),
        None => {
            let bytes = encoded.expect("encodable request");
            let expected = Request {
                command,
                host,
                port: request_port,
            };
            assert_round_trip(parse_request, &bytes, &tail, &expected);
        }
    }

    // Reply. `encode_reply` takes IP addresses only; a reply with any host has the request's
    // layout with CMD replaced by REP.
    let host = Host::from(reply_host);
    let encoded = match &host {
        Host::Ip(ip) => append(&prefix, |o| {
            encode_reply(rep, SocketAddr::new(*ip, reply_port), o);
            Ok(())
        }),
        Host::Domain(_) => append(&prefix, |o| {
            encode_request(Command::Connect, &host, reply_port, o)
        })
        .map(|mut b| {
            b[1] = rep;
            b
        }),
    };
    match host_error(&host) {
        Some(e) => assert_eq!(encoded, Err(e)),
        None => {
            let bytes = encoded.expect("encodable reply");
            if let Host::Ip(ip) = host {
                assert_eq!(bytes.len(), if ip.is_ipv4() { 10 } else { 22 });
            }
            let expected = Reply {
                rep,
                host,
                port: reply_port,
            };
            assert_round_trip(parse_reply, &bytes, &tail, &expected);
        }
    }

    // Greeting. More than 255 methods is a caller bug (debug-asserted), so stay within 255.
    let methods: Vec<Method> = methods
        .iter()
        .take(MAX_FIELD_LEN)
        .map(|&b| Method::from_byte(b))
        .collect();
    let bytes = append(&prefix, |o| {
        encode_greeting(&methods, o);
        Ok(())
    })
    .expect("infallible");
    if methods.is_empty() {
        assert_eq!(parse_greeting(&bytes), Err(WireError::NoMethods));
    } else {
        assert_round_trip(parse_greeting, &bytes, &tail, &Greeting { methods });
    }

    // User/password.
    let creds = Credentials { user, password };
    let encoded = append(&prefix, |o| encode_userpass(&creds, o));
    if creds.user.len() > MAX_FIELD_LEN || creds.password.len() > MAX_FIELD_LEN {
        assert_eq!(encoded, Err(WireError::TooLong));
    } else {
        let bytes = encoded.expect("encodable credentials");
        assert_round_trip(parse_userpass, &bytes, &tail, &creds);
    }

    // Method choice and user/password status.
    let bytes = append(&prefix, |o| {
        encode_method_choice(choice, o);
        Ok(())
    })
    .expect("infallible");
    assert_round_trip(parse_method_choice, &bytes, &tail, &choice);
    let bytes = append(&prefix, |o| {
        encode_userpass_status(status_ok, o);
        Ok(())
    })
    .expect("infallible");
    assert_round_trip(parse_userpass_status, &bytes, &tail, &status_ok);
});
