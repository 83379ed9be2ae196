use super::*;
use crate::wire::test_util::*;
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
    replay_corpus("socks5", all_parsers_are_total);
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
        every_prefix(&input, all_parsers_are_total);
    }

    #[test]
    fn parsers_never_panic_on_mutated_messages(
        command in arb_command(),
        host in arb_host(),
        port in any::<u16>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        mutated_prefixes(request_bytes(command, &host, port), at, byte, all_parsers_are_total);
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
