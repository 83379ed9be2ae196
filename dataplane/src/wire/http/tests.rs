use super::*;
use crate::wire::test_util::*;
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
    replay_corpus("http", |input| {
        every_prefix(input, parsers_are_total);
    });
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
        let bytes = if response {
            response_bytes(RFC_KEY, Some("chat"))
        } else {
            RFC_REQUEST.as_bytes().to_vec()
        };
        mutated_prefixes(bytes, at, byte, parsers_are_total);
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
