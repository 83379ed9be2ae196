use super::*;
use crate::wire::test_util::*;
use proptest::prelude::*;

/// The client's first bytes, coalesced with the header.
const HTTP: &[u8] = b"GET / HTTP/1.1\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn tcp(source: &str, destination: &str) -> Addresses {
    Addresses::Tcp {
        source: addr(source),
        destination: addr(destination),
    }
}

fn header(version: Version, addresses: Addresses) -> ProxyHeader {
    ProxyHeader { version, addresses }
}

fn encoded(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(version, source, destination, &mut out);
    out
}

/// v2 header bytes: signature, `ver_cmd`, `fam`, length of `body`, `body`.
fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, fam]);
    out.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Feeds `chunks` into an accumulating buffer, parsing after each; returns the first complete
/// header and the bytes after it.
fn drive(chunks: &[&[u8]]) -> (ProxyHeader, Vec<u8>) {
    let mut buf = Vec::new();
    let mut found = None;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if found.is_none() {
            found = parse_header(&buf).expect("valid stream");
        }
    }
    let (h, n) = found.expect("complete header");
    (h, buf.split_off(n))
}

/// Wire rule 4 for one header: every strict prefix needs more bytes, the whole header parses to
/// `expected`, and the same holds with coalesced payload, split at every offset and byte by byte.
fn assert_segmentation_invariant(msg: &[u8], expected: &ProxyHeader) {
    for k in 0..msg.len() {
        assert_eq!(
            parse_header(&msg[..k]),
            Ok(None),
            "prefix of {k} bytes of {msg:?}"
        );
    }
    assert_eq!(parse_header(msg), Ok(Some((*expected, msg.len()))));

    let mut stream = msg.to_vec();
    stream.extend_from_slice(HTTP);
    assert_eq!(parse_header(&stream), Ok(Some((*expected, msg.len()))));
    for (k, parts) in two_part_splits(&stream) {
        assert_eq!(drive(&parts), (*expected, HTTP.to_vec()), "split at {k}");
    }
    assert_eq!(drive(&byte_by_byte(&stream)), (*expected, HTTP.to_vec()));
}

#[test]
fn v1_known_lines() {
    let cases: [(&[u8], Addresses); 5] = [
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            tcp("192.168.0.1:56324", "192.168.0.11:443"),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2:1 0 65535\r\n",
            tcp("[2001:db8::1]:0", "[2001:db8::2:1]:65535"),
        ),
        (
            b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n",
            tcp("[::ffff:192.0.2.1]:1", "[::1]:2"),
        ),
        (b"PROXY UNKNOWN\r\n", Addresses::Unknown),
        // The spec lets a sender put anything after UNKNOWN; the receiver ignores it.
        (
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
            Addresses::Unknown,
        ),
    ];
    for (line, addresses) in cases {
        assert_segmentation_invariant(line, &header(Version::V1, addresses));
    }
}

#[test]
fn v1_longest_lines_fit() {
    let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let line = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
    assert_eq!(line.len(), 104);
    let expected = header(
        Version::V1,
        tcp(&format!("[{full}]:65535"), &format!("[{full}]:65535")),
    );
    assert_segmentation_invariant(line.as_bytes(), &expected);
    // The spec's worst case.
    let line = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
    assert_eq!(line.len(), MAX_V1_LEN);
    assert_segmentation_invariant(line.as_bytes(), &header(Version::V1, Addresses::Unknown));
}

#[test]
fn v2_known_headers() {
    let ipv4 = v2(
        0x21,
        0x11,
        &[192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb],
    );
    assert_eq!(ipv4.len(), 28);

    // IPv6 with two TLVs: ALPN "h2" and a NOOP of 3 bytes, then AWS's VPC endpoint id (0xEA).
    let mut body = Vec::new();
    let src: std::net::Ipv6Addr = "2001:db8::1".parse().expect("literal");
    let dst: std::net::Ipv6Addr = "2001:db8::2".parse().expect("literal");
    body.extend_from_slice(&src.octets());
    body.extend_from_slice(&dst.octets());
    body.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
    body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    body.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
    body.extend_from_slice(&[0xea, 0x00, 0x05, 0x01, b'v', b'p', b'c', b'e']);
    let ipv6_tlvs = v2(0x21, 0x21, &body);

    let cases = [
        (ipv4, tcp("192.168.0.1:56324", "192.168.0.11:443")),
        (ipv6_tlvs, tcp("[2001:db8::1]:12345", "[2001:db8::2]:80")),
        // LOCAL: a health check by the proxy; any family and address block are ignored.
        (v2(0x20, 0x00, &[]), Addresses::Unknown),
        (v2(0x20, 0x11, &[]), Addresses::Unknown),
        (v2(0x20, 0x21, &[0; 5]), Addresses::Unknown),
        (v2(0x20, 0xff, &[0x04, 0x00]), Addresses::Unknown),
        (
            v2(0x20, 0x11, &[127, 0, 0, 1, 127, 0, 0, 1, 0, 1, 0, 2]),
            Addresses::Unknown,
        ),
        // PROXY with AF_UNSPEC: no addresses, whatever follows is skipped.
        (v2(0x21, 0x00, &[1, 2, 3]), Addresses::Unknown),
    ];
    for (bytes, addresses) in cases {
        assert_segmentation_invariant(&bytes, &header(Version::V2, addresses));
    }
}

#[test]
fn unknown_headers_encode_and_parse_back() {
    for (version, bytes) in [
        (Version::V1, b"PROXY UNKNOWN\r\n".to_vec()),
        (Version::V2, v2(0x20, 0x00, &[])),
    ] {
        let mut out = b"before".to_vec();
        encode_unknown(version, &mut out);
        assert_eq!(&out[..6], b"before", "appends");
        assert_eq!(out[6..], bytes[..], "{version:?}");
        assert_segmentation_invariant(&bytes, &header(version, Addresses::Unknown));
    }
}

#[test]
fn encodes_known_bytes() {
    let (s4, d4) = (addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
    assert_eq!(
        encoded(Version::V1, s4, d4),
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    );
    assert_eq!(
        encoded(Version::V2, s4, d4),
        v2(
            0x21,
            0x11,
            &[192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb]
        )
    );
    let (s6, d6) = (addr("[2001:db8::1]:1"), addr("[::1]:2"));
    assert_eq!(
        encoded(Version::V1, s6, d6),
        b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    );
    let v2_6 = encoded(Version::V2, s6, d6);
    assert_eq!(v2_6.len(), V2_FIXED_LEN + 36);
    assert_eq!(v2_6[12..16], [0x21, 0x21, 0, 36]);
}

/// The hand-written encoder writes what `ppp`'s builder and formatter write, for IPv4, IPv6
/// and mixed pairs (which both map to IPv6), and [`Encoded`] holds the same bytes.
#[test]
fn encoder_matches_ppp_and_round_trips() {
    let pairs = [
        ("192.0.2.1:1", "198.51.100.7:443"),
        ("255.255.255.255:65535", "0.0.0.0:0"),
        ("[2001:db8::1]:56324", "[::1]:443"),
        (
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65534",
        ),
        ("127.0.0.7:40000", "[2001:db8::7]:80"),
        ("[2001:db8::7]:80", "127.0.0.7:40000"),
    ];
    for (s, d) in pairs {
        let (s, d) = (addr(s), addr(d));
        let (ps, pd) = same_family(s, d);
        let v1 = ppp::v1::Addresses::from((ps, pd)).to_string().into_bytes();
        let v2 = {
            use ppp::v2::{Builder, Command, Protocol, Version as V};
            Builder::with_addresses(V::Two | Command::Proxy, Protocol::Stream, (ps, pd))
                .build()
                .expect("ppp builds it")
        };
        for (version, theirs) in [(Version::V1, v1), (Version::V2, v2)] {
            let ours = encoded(version, s, d);
            assert_eq!(ours, theirs, "{version:?} {s} -> {d}");
            assert!(ours.len() <= MAX_ENCODED_LEN);
            let inline = Encoded::new(
                version,
                Addresses::Tcp {
                    source: s,
                    destination: d,
                },
            );
            assert_eq!(inline.as_bytes(), &ours[..]);
            let expected = header(
                version,
                Addresses::Tcp {
                    source: ps,
                    destination: pd,
                },
            );
            assert_segmentation_invariant(&ours, &expected);
        }
    }
    // The longest line the encoder can write is exactly MAX_ENCODED_LEN.
    let longest = encoded(Version::V1, addr(pairs[3].0), addr(pairs[3].1));
    assert_eq!(longest.len(), MAX_ENCODED_LEN);
    for version in [Version::V1, Version::V2] {
        let mut unknown = Vec::new();
        encode_unknown(version, &mut unknown);
        assert_eq!(
            Encoded::new(version, Addresses::Unknown).as_bytes(),
            &unknown[..]
        );
    }
}

#[test]
fn encode_appends() {
    let mut out = b"x".to_vec();
    encode_header(Version::V1, addr("1.2.3.4:5"), addr("6.7.8.9:10"), &mut out);
    assert_eq!(out, b"xPROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n");
}

/// Mixed families are written as TCP6 with the IPv4 address mapped, in both versions.
#[test]
fn mixed_families_map_ipv4_to_ipv6() {
    let v4 = addr("192.0.2.1:1000");
    let v6 = addr("[2001:db8::7]:443");
    let mapped = addr("[::ffff:192.0.2.1]:1000");
    for version in [Version::V1, Version::V2] {
        for (s, d, ms, md) in [(v4, v6, mapped, v6), (v6, v4, v6, mapped)] {
            let bytes = encoded(version, s, d);
            let expected = header(
                version,
                Addresses::Tcp {
                    source: ms,
                    destination: md,
                },
            );
            assert_eq!(parse_header(&bytes), Ok(Some((expected, bytes.len()))));
        }
    }
    assert_eq!(
        encoded(Version::V1, v4, v6),
        b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::7 1000 443\r\n"
    );
}

#[test]
fn malformed_input_is_rejected() {
    use ProxyError::*;
    let cases: Vec<(Vec<u8>, ProxyError)> = vec![
        // Neither version, from the first byte that shows it.
        (b"GET / HTTP/1.1\r\n".to_vec(), NotProxy),
        (vec![0x16, 0x03, 0x01], NotProxy),
        (vec![5, 1, 0], NotProxy),
        (b"PROX\r\n".to_vec(), NotProxy),
        (b"PROXY\r\n".to_vec(), NotProxy),
        (b"proxy TCP4".to_vec(), NotProxy),
        (b"\r\n\r\n\0\r\nQUIT\r".to_vec(), NotProxy),
        (b"\r\nGET".to_vec(), NotProxy),
        // v1: bad fields.
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 65536\r\n".to_vec(),
            BadPort,
        ),
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n".to_vec(),
            BadPort,
        ),
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n".to_vec(),
            BadPort,
        ),
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 x 443\r\n".to_vec(),
            BadPort,
        ),
        (
            b"PROXY TCP4 192.168.0.256 192.168.0.11 1 2\r\n".to_vec(),
            BadAddress,
        ),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(), BadAddress),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n".to_vec(), BadAddress),
        (
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            UnsupportedProtocol,
        ),
        // A missing field: `ppp` reads the line's end as the last port.
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(), BadPort),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n".to_vec(), BadAddress),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(), Malformed),
        (b"PROXY \r\n".to_vec(), UnsupportedProtocol),
        // Ports: plain decimal, no sign, no leading zero.
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(), BadPort),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 02\r\n".to_vec(), BadPort),
        (b"PROXY TCP6 ::1 ::2 1 -2\r\n".to_vec(), BadPort),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n".to_vec(), BadPort),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX".to_vec(), Malformed),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(), Malformed),
        (b"PROXY TCP4 1.2.3.4\x005.6.7.8".to_vec(), Malformed),
        (b"PROXY UNKNOWN \xc3\xa9\r\n".to_vec(), Malformed),
        // v1 without CRLF: an error once no CR can come within 107 bytes.
        (
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 92]].concat(),
            TooLong,
        ),
        (
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200], b"\r\n"].concat(),
            TooLong,
        ),
        // v2: version and command nibbles, family and protocol, told from their byte.
        (v2(0x11, 0x11, &[0; 12])[..13].to_vec(), BadVersion(1)),
        (v2(0x31, 0x11, &[0; 12]), BadVersion(3)),
        (v2(0x01, 0x11, &[0; 12]), BadVersion(0)),
        (v2(0x22, 0x11, &[0; 12])[..13].to_vec(), BadCommand(2)),
        (
            v2(0x21, 0x41, &[0; 12])[..14].to_vec(),
            UnsupportedFamily(4),
        ),
        (v2(0x21, 0x31, &[0; 216]), UnsupportedFamily(3)),
        (v2(0x21, 0x13, &[0; 12])[..14].to_vec(), UnsupportedProtocol),
        (v2(0x21, 0x12, &[0; 12]), UnsupportedProtocol),
        (v2(0x21, 0x10, &[0; 12]), UnsupportedProtocol),
        // AF_UNSPEC goes only with protocol UNSPEC.
        (v2(0x21, 0x01, &[]), UnsupportedProtocol),
        (v2(0x21, 0x02, &[]), UnsupportedProtocol),
        // v2: a length too short for the address block.
        (v2(0x21, 0x11, &[0; 11]), Malformed),
        (v2(0x21, 0x21, &[0; 35]), Malformed),
        // v2: TLVs that do not fit: a length beyond the header, 2 bytes left over.
        (
            v2(
                0x21,
                0x11,
                &[[0; 12].as_slice(), &[0x01, 0x00, 0x03, b'h', b'2']].concat(),
            ),
            Malformed,
        ),
        (
            v2(0x21, 0x11, &[[0; 12].as_slice(), &[0x04, 0x00]].concat()),
            Malformed,
        ),
        // v2: longer than the bound, told from the length field alone.
        (v2(0x21, 0x11, &[0; 537])[..16].to_vec(), TooLong),
        (
            [V2_SIGNATURE.as_slice(), &[0x21, 0x11, 0xff, 0xff]].concat(),
            TooLong,
        ),
    ];
    for (input, err) in cases {
        assert_eq!(parse_header(&input), Err(err), "{input:?}");
        let mut coalesced = input.clone();
        coalesced.extend_from_slice(HTTP);
        assert_eq!(parse_header(&coalesced), Err(err), "{coalesced:?}");
    }
}

#[test]
fn length_bounds() {
    // v1: 105 bytes without CR may still end in CRLF at 105..107.
    let open = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 91]].concat();
    assert_eq!(open.len(), MAX_V1_LEN - 2);
    assert_eq!(parse_header(&open), Ok(None));
    let closed = [open.as_slice(), b"\r\n"].concat();
    assert_eq!(
        parse_header(&closed),
        Ok(Some((header(Version::V1, Addresses::Unknown), MAX_V1_LEN)))
    );
    // v2: exactly MAX_V2_LEN is accepted, one more is not.
    let mut body = vec![0; MAX_V2_LEN - V2_FIXED_LEN];
    let longest = v2(0x21, 0x00, &body);
    assert_eq!(longest.len(), MAX_V2_LEN);
    assert_eq!(
        parse_header(&longest),
        Ok(Some((header(Version::V2, Addresses::Unknown), MAX_V2_LEN)))
    );
    body.push(0);
    assert_eq!(
        parse_header(&v2(0x21, 0x00, &body)),
        Err(ProxyError::TooLong)
    );
}

#[test]
fn truncated_v2_waits_then_completes() {
    let bytes = encoded(Version::V2, addr("[::1]:1"), addr("[::2]:2"));
    for k in 0..bytes.len() {
        assert_eq!(parse_header(&bytes[..k]), Ok(None), "{k}");
    }
    assert!(parse_header(&bytes).expect("valid").is_some());
}

#[test]
fn labels_are_stable_snake_case() {
    use ProxyError::*;
    let all = [
        (BadAddress, "bad_address"),
        (BadCommand(2), "bad_command"),
        (BadPort, "bad_port"),
        (BadVersion(1), "bad_version"),
        (Malformed, "malformed"),
        (NotProxy, "not_proxy"),
        (TooLong, "too_long"),
        (UnsupportedFamily(3), "unsupported_family"),
        (UnsupportedProtocol, "unsupported_protocol"),
    ];
    for (e, label) in all {
        assert_eq!(e.label(), label);
        assert!(!e.to_string().is_empty());
    }
}

/// [`parse_header`] on `input` does not panic, consumes at most the input, and waits for more
/// only below the maximum header length.
fn parser_is_total(input: &[u8]) {
    match parse_header(input) {
        Ok(Some((_, n))) => {
            assert!(n > 0 && n <= input.len(), "consumed {n} of {}", input.len());
            assert!(n <= MAX_V1_LEN.max(MAX_V2_LEN));
        }
        Ok(None) => assert!(input.len() < MAX_V2_LEN, "waits with {} bytes", input.len()),
        Err(_) => {}
    }
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn arb_version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

/// Byte strings that start like a header, so the parser gets past its first bytes.
fn plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(b"PROXY TCP4 ".to_vec()),
            Just(b"PROXY TCP6 ".to_vec()),
            Just(b"PROXY UNKNOWN".to_vec()),
            Just(V2_SIGNATURE.to_vec()),
            Just([V2_SIGNATURE.as_slice(), &[0x21, 0x11]].concat()),
            Just([V2_SIGNATURE.as_slice(), &[0x21, 0x21, 0x00]].concat()),
        ],
        proptest::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(mut head, rest)| {
            head.extend(rest);
            head
        })
}

/// Replays the hand-made edge cases in `tests/corpus/proxy`.
#[test]
fn regression_corpus() {
    replay_corpus("proxy", |input| {
        parser_is_total(input);
        every_prefix(input, parser_is_total);
    });
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..700)) {
        parser_is_total(&input);
    }

    #[test]
    fn never_panics_on_plausible_bytes(input in plausible_bytes()) {
        every_prefix(&input, parser_is_total);
    }

    #[test]
    fn never_panics_on_mutated_headers(
        version in arb_version(),
        s in arb_ip(),
        d in arb_ip(),
        ports in any::<(u16, u16)>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let bytes = encoded(version, SocketAddr::new(s, ports.0), SocketAddr::new(d, ports.1));
        mutated_prefixes(bytes, at, byte, parser_is_total);
    }

    #[test]
    fn round_trips(
        version in arb_version(),
        ips in prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>())
                .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
            (any::<[u8; 16]>(), any::<[u8; 16]>())
                .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        ],
        ports in any::<(u16, u16)>(),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let source = SocketAddr::new(ips.0, ports.0);
        let destination = SocketAddr::new(ips.1, ports.1);
        let mut bytes = encoded(version, source, destination);
        let len = bytes.len();
        let max = match version {
            Version::V1 => MAX_V1_LEN,
            Version::V2 => MAX_V2_LEN,
        };
        prop_assert!(len <= max, "{} bytes", len);
        bytes.extend_from_slice(&tail);
        let expected = header(version, Addresses::Tcp { source, destination });
        prop_assert_eq!(parse_header(&bytes), Ok(Some((expected, len))));
        prop_assert_eq!(parse_header(&bytes[..len - 1]), Ok(None));
        for (k, parts) in two_part_splits(&bytes) {
            prop_assert_eq!(drive(&parts), (expected, tail.clone()), "split at {}", k);
        }
    }
}
/// Each corpus file's answer, so the corpus also pins what the parser says, not only that it
/// does not panic.
#[test]
fn corpus_files_give_their_answers() {
    use ProxyError::*;
    let tcp4 = header(Version::V1, tcp("192.168.0.1:56324", "192.168.0.11:443"));
    let expected: [(&str, Parsed<ProxyHeader>); 14] = [
        ("empty", Ok(None)),
        ("tls-client-hello", Err(NotProxy)),
        ("v1-cr-at-end", Ok(None)),
        ("v1-lf-only", Err(Malformed)),
        ("v1-no-crlf-200", Err(TooLong)),
        ("v1-port-overflow", Err(BadPort)),
        ("v1-tcp4-coalesced", Ok(Some((tcp4, 47)))),
        (
            "v1-unknown-107",
            Ok(Some((header(Version::V1, Addresses::Unknown), 107))),
        ),
        ("v2-length-ffff", Err(TooLong)),
        (
            "v2-local",
            Ok(Some((header(Version::V2, Addresses::Unknown), 16))),
        ),
        ("v2-short-addresses", Err(Malformed)),
        ("v2-tlv-overrun", Err(Malformed)),
        ("v2-truncated-ipv6", Ok(None)),
        ("v2-unix", Err(UnsupportedFamily(3))),
    ];
    let dir = format!("{}/tests/corpus/proxy", env!("CARGO_MANIFEST_DIR"));
    let files = std::fs::read_dir(&dir).expect("corpus directory").count();
    assert_eq!(
        files,
        expected.len(),
        "a corpus file without an expected answer"
    );
    for (name, answer) in expected {
        let bytes = std::fs::read(format!("{dir}/{name}.bin")).expect("corpus file");
        assert_eq!(parse_header(&bytes), answer, "{name}");
    }
}
