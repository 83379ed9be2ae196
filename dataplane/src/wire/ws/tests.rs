use super::*;
use crate::wire::test_util::*;
use proptest::prelude::*;

/// The mask key of the RFC 6455 §5.7 examples.
const RFC_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const NO_LIMIT: usize = usize::MAX;

/// A decoded stream with adjacent data chunks of one message merged: the view of a stream
/// that does not depend on how it was split.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Close {
        code: Option<u16>,
        reason: String,
    },
    Data {
        kind: MessageKind,
        bytes: Vec<u8>,
        fin: bool,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// Appends `item`, merging a data chunk into the previous one of the same unfinished message.
fn push_seen(seen: &mut Vec<Seen>, item: Seen) {
    if let Seen::Data { kind, bytes, fin } = &item {
        if let Some(Seen::Data {
            kind: k,
            bytes: b,
            fin: f,
        }) = seen.last_mut()
        {
            if *k == *kind && !*f {
                b.extend_from_slice(bytes);
                *f = *fin;
                return;
            }
        }
    }
    seen.push(item);
}

#[derive(Debug, PartialEq)]
struct Run {
    seen: Vec<Seen>,
    /// Everything the decoder appended to the caller's payload vector.
    payload: Vec<u8>,
    error: Option<WsError>,
    /// Whether the decoder ended at a message boundary.
    boundary: bool,
}

/// Feeds `chunks` to a fresh decoder the way a caller with a reused receive buffer would,
/// checking the calling convention on every call.
fn run(role: Role, max_message: usize, chunks: &[&[u8]]) -> Run {
    let mut dec = Decoder::new(role, max_message);
    // Fed the same bytes through `decode_in_place`; must agree on every call.
    let mut in_place = Decoder::new(role, max_message);
    let mut payload = Vec::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        let mut pos = 0;
        loop {
            let rest = &chunk[pos..];
            let before = payload.len();
            let result = dec.decode(rest, &mut payload);
            let mut copy = rest.to_vec();
            let other = in_place.decode_in_place(&mut copy);
            assert_eq!(result, other, "decode and decode_in_place disagree");
            if let Ok((n, Some(Event::Data { len, .. }))) = result {
                assert_eq!(copy[n - len..n], payload[before..], "in-place chunk");
            }
            match result {
                Err(e) => {
                    // Sticky, and nothing more is appended.
                    assert_eq!(dec.decode(rest, &mut payload), Err(e));
                    assert_eq!(dec.decode(&[], &mut payload), Err(e));
                    return Run {
                        seen,
                        payload,
                        error: Some(e),
                        boundary: dec.at_message_boundary(),
                    };
                }
                Ok((n, event)) => {
                    assert!(n <= rest.len(), "consumed {n} of {}", rest.len());
                    pos += n;
                    let appended = payload.len() - before;
                    match event {
                        None => {
                            assert_eq!(pos, chunk.len(), "None before the end of input");
                            assert_eq!(appended, 0);
                            break;
                        }
                        Some(Event::Data { kind, len, fin }) => {
                            assert_eq!(appended, len);
                            assert!(len <= n);
                            let bytes = payload[before..].to_vec();
                            push_seen(&mut seen, Seen::Data { kind, bytes, fin });
                        }
                        Some(Event::Close { code, reason }) => {
                            assert_eq!(appended, 0);
                            assert!(dec.is_closed());
                            push_seen(&mut seen, Seen::Close { code, reason });
                        }
                        Some(Event::Ping(p)) => {
                            assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                            push_seen(&mut seen, Seen::Ping(p));
                        }
                        Some(Event::Pong(p)) => {
                            assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                            push_seen(&mut seen, Seen::Pong(p));
                        }
                    }
                }
            }
        }
    }
    Run {
        seen,
        payload,
        error: None,
        boundary: dec.at_message_boundary(),
    }
}

fn run_whole(role: Role, input: &[u8]) -> Run {
    run(role, NO_LIMIT, &[input])
}

/// Wire rule 4: the same stream split at every pair of offsets, and byte by byte, decodes
/// to the same result as the whole stream. Returns that result.
fn assert_split_invariant(role: Role, max_message: usize, stream: &[u8]) -> Run {
    let whole = run(role, max_message, &[stream]);
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let parts = [&stream[..i], &stream[i..j], &stream[j..]];
            assert_eq!(
                run(role, max_message, &parts),
                whole,
                "split at {i} and {j}"
            );
        }
    }
    assert_eq!(
        run(role, max_message, &byte_by_byte(stream)),
        whole,
        "byte by byte"
    );
    whole
}

fn data(kind: MessageKind, bytes: &[u8]) -> Seen {
    Seen::Data {
        kind,
        bytes: bytes.to_vec(),
        fin: true,
    }
}

fn frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(opcode, fin, payload, mask, &mut out);
    out
}

/// The mask a client would put on a frame: the peer role decides whether one is used.
fn mask_for(receiver: Role, seed: u8) -> Option<[u8; 4]> {
    (receiver == Role::Server).then_some([seed, seed ^ 0x5a, 0xa5, seed.wrapping_mul(7)])
}

fn err(role: Role, input: &[u8]) -> WsError {
    run_whole(role, input).error.expect("rejected")
}

// --- RFC 6455 §5.7 examples ---

#[test]
fn rfc_single_frame_unmasked_text() {
    let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(frame(OpCode::Text, true, b"Hello", None), bytes);
    let r = assert_split_invariant(Role::Client, NO_LIMIT, &bytes);
    assert_eq!(r.seen, [data(MessageKind::Text, b"Hello")]);
    assert_eq!(r.error, None);
    assert!(r.boundary);
}

#[test]
fn rfc_single_frame_masked_text() {
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(frame(OpCode::Text, true, b"Hello", Some(RFC_MASK)), bytes);
    let r = assert_split_invariant(Role::Server, NO_LIMIT, &bytes);
    assert_eq!(r.seen, [data(MessageKind::Text, b"Hello")]);
    assert_eq!(r.payload, b"Hello");
}

#[test]
fn rfc_fragmented_unmasked_text() {
    let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let mut encoded = frame(OpCode::Text, false, b"Hel", None);
    encoded.extend(frame(OpCode::Continuation, true, b"lo", None));
    assert_eq!(encoded, bytes);
    let r = assert_split_invariant(Role::Client, NO_LIMIT, &bytes);
    assert_eq!(r.seen, [data(MessageKind::Text, b"Hello")]);

    // The raw events: one chunk per frame, FIN only on the last.
    let mut dec = Decoder::new(Role::Client, NO_LIMIT);
    let mut payload = Vec::new();
    let (n1, e1) = dec.decode(&bytes, &mut payload).expect("valid");
    assert_eq!(n1, 5);
    let chunk = |len, fin| {
        Some(Event::Data {
            kind: MessageKind::Text,
            len,
            fin,
        })
    };
    assert_eq!(e1, chunk(3, false));
    assert!(!dec.at_message_boundary());
    let (n2, e2) = dec.decode(&bytes[n1..], &mut payload).expect("valid");
    assert_eq!((n2, e2), (4, chunk(2, true)));
    assert!(dec.at_message_boundary());
    assert_eq!(payload, b"Hello");
}

#[test]
fn rfc_ping_and_pong() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut out = Vec::new();
    encode_ping(b"Hello", None, &mut out);
    assert_eq!(out, ping);
    let r = assert_split_invariant(Role::Client, NO_LIMIT, &ping);
    assert_eq!(r.seen, [Seen::Ping(b"Hello".to_vec())]);
    assert!(
        r.payload.is_empty(),
        "control payload never reaches the data vector"
    );

    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    out.clear();
    encode_pong(b"Hello", Some(RFC_MASK), &mut out);
    assert_eq!(out, pong);
    let r = assert_split_invariant(Role::Server, NO_LIMIT, &pong);
    assert_eq!(r.seen, [Seen::Pong(b"Hello".to_vec())]);
}

#[test]
fn rfc_256_and_65536_byte_binary() {
    let p256: Vec<u8> = (0..=255).collect();
    let f256 = frame(OpCode::Binary, true, &p256, None);
    assert_eq!(f256[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(f256.len(), 4 + 256);
    assert_eq!(header_len(256, false), 4);

    let p64k: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
    let f64k = frame(OpCode::Binary, true, &p64k, None);
    assert_eq!(
        f64k[..10],
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(f64k.len(), 10 + 65536);
    assert_eq!(header_len(65536, false), 10);

    for (p, f) in [(&p256, &f256), (&p64k, &f64k)] {
        let whole = run_whole(Role::Client, f);
        assert_eq!(whole.seen, [data(MessageKind::Binary, p)]);
        for k in [1, 2, 3, 4, 5, 9, 10, 11, 200, f.len() - 1] {
            let split = run(Role::Client, NO_LIMIT, &[&f[..k], &f[k..]]);
            assert_eq!(split, whole, "split at {k}");
        }
        // Masked toward a server, in 7-byte reads.
        let masked = frame(OpCode::Binary, true, p, Some(RFC_MASK));
        let chunks: Vec<&[u8]> = masked.chunks(7).collect();
        assert_eq!(run(Role::Server, NO_LIMIT, &chunks).seen, whole.seen);
    }
}

// --- segmentation invariance (wire rule 4) ---

/// A fragmented text message with a ping between its fragments, a binary message, a pong,
/// an empty message, a fragmented binary message with an empty middle fragment, a close.
fn conversation(receiver: Role) -> (Vec<u8>, Vec<Seen>) {
    let m = |seed| mask_for(receiver, seed);
    let bin: Vec<u8> = (0..200u8).collect();
    let mut s = Vec::new();
    encode_frame(OpCode::Text, false, b"Hel", m(1), &mut s);
    encode_ping(b"are you there", m(2), &mut s);
    encode_frame(OpCode::Continuation, true, b"lo", m(3), &mut s);
    encode_frame(OpCode::Binary, true, &bin, m(4), &mut s);
    encode_pong(b"", m(5), &mut s);
    encode_frame(OpCode::Binary, true, b"", m(6), &mut s);
    encode_frame(OpCode::Binary, false, b"abc", m(7), &mut s);
    encode_frame(OpCode::Continuation, false, b"", m(8), &mut s);
    encode_frame(OpCode::Continuation, true, b"def", m(9), &mut s);
    encode_close(Some(close_code::NORMAL), "bye", m(10), &mut s);
    let expected = vec![
        Seen::Data {
            kind: MessageKind::Text,
            bytes: b"Hel".to_vec(),
            fin: false,
        },
        Seen::Ping(b"are you there".to_vec()),
        data(MessageKind::Text, b"lo"),
        data(MessageKind::Binary, &bin),
        Seen::Pong(Vec::new()),
        data(MessageKind::Binary, b""),
        data(MessageKind::Binary, b"abcdef"),
        Seen::Close {
            code: Some(1000),
            reason: "bye".to_owned(),
        },
    ];
    (s, expected)
}

#[test]
fn conversation_is_split_invariant_both_roles() {
    for role in [Role::Server, Role::Client] {
        let (stream, expected) = conversation(role);
        let r = assert_split_invariant(role, NO_LIMIT, &stream);
        assert_eq!(r.seen, expected, "{role:?}");
        assert_eq!(r.error, None);
        assert!(r.boundary);
        let mut all = b"Hello".to_vec();
        all.extend(0..200u8);
        all.extend_from_slice(b"abcdef");
        assert_eq!(r.payload, all);
    }
}

#[test]
fn several_frames_in_one_input_one_event_per_call() {
    let (stream, expected) = conversation(Role::Server);
    let mut dec = Decoder::new(Role::Server, NO_LIMIT);
    let mut payload = Vec::new();
    let mut pos = 0;
    let mut events = 0;
    while let (n, Some(_)) = dec.decode(&stream[pos..], &mut payload).expect("valid") {
        pos += n;
        events += 1;
    }
    assert_eq!(pos, stream.len());
    // Two more raw events than merged ones: "abc" + "" + "def" are three chunks.
    assert_eq!(events, expected.len() + 2);
    assert!(dec.is_closed());
}

#[test]
fn errors_are_split_invariant() {
    // A valid prefix, then a continuation of a message that was never started.
    let (mut stream, _) = conversation(Role::Client);
    stream.truncate(stream.len() - 7); // drop the close frame (2 + 2 + "bye")
    stream.extend_from_slice(&[0x80, 0x01, b'x']);
    let r = assert_split_invariant(Role::Client, NO_LIMIT, &stream);
    assert_eq!(r.error, Some(WsError::UnexpectedContinuation));
    assert_eq!(r.seen.len(), 7);
}

// --- malformed input ---

#[test]
fn reserved_bits_and_opcodes() {
    for b0 in [0xC1, 0xA1, 0x91, 0xF2] {
        let e = err(Role::Client, &[b0, 0x00]);
        assert_eq!(e, WsError::ReservedBits((b0 >> 4) & 7), "{b0:#x}");
        assert_eq!(e.close_code(), 1002);
    }
    for op in [0x3, 0x4, 0x7, 0xB, 0xF] {
        let e = err(Role::Client, &[0x80 | op, 0x00]);
        assert_eq!(e, WsError::UnknownOpcode(op));
        assert_eq!(e.close_code(), 1002);
    }
    // Reported from the first byte alone.
    assert_eq!(
        Decoder::new(Role::Server, NO_LIMIT).decode(&[0xC1], &mut Vec::new()),
        Err(WsError::ReservedBits(4))
    );
}

#[test]
fn masking_must_follow_the_role() {
    let masked = frame(OpCode::Binary, true, b"x", Some(RFC_MASK));
    let unmasked = frame(OpCode::Binary, true, b"x", None);
    assert_eq!(err(Role::Client, &masked), WsError::MaskedFrame);
    assert_eq!(err(Role::Server, &unmasked), WsError::UnmaskedFrame);
    assert_eq!(WsError::MaskedFrame.close_code(), 1002);
    assert_eq!(WsError::UnmaskedFrame.close_code(), 1002);
    // Control frames too.
    assert_eq!(err(Role::Server, &[0x89, 0x00]), WsError::UnmaskedFrame);
}

#[test]
fn fragmentation_rules() {
    let r = Role::Client;
    // Continuation without a start.
    assert_eq!(err(r, &[0x80, 0x00]), WsError::UnexpectedContinuation);
    assert_eq!(err(r, &[0x00, 0x00]), WsError::UnexpectedContinuation);
    // ... also after a message that ended.
    let mut s = frame(OpCode::Text, true, b"a", None);
    s.extend(frame(OpCode::Continuation, true, b"b", None));
    assert_eq!(err(r, &s), WsError::UnexpectedContinuation);
    // A new data frame while a fragmented message is open.
    for op in [OpCode::Text, OpCode::Binary] {
        let mut s = frame(OpCode::Binary, false, b"a", None);
        s.extend(frame(op, true, b"b", None));
        let e = err(r, &s);
        assert_eq!(e, WsError::ExpectedContinuation);
        assert_eq!(e.close_code(), 1002);
    }
    // Fragmented control frames (FIN clear), even inside a message.
    for op in [0x8, 0x9, 0xA] {
        assert_eq!(err(r, &[op, 0x00]), WsError::FragmentedControl);
    }
    let mut s = frame(OpCode::Text, false, b"a", None);
    s.extend_from_slice(&[0x09, 0x00]);
    assert_eq!(err(r, &s), WsError::FragmentedControl);
}

#[test]
fn control_frames_are_at_most_125_bytes() {
    let ok = [0x89, 125];
    let mut s = ok.to_vec();
    s.extend([7; 125]);
    assert_eq!(run_whole(Role::Client, &s).seen, [Seen::Ping(vec![7; 125])]);
    for len7 in [126, 127] {
        let e = err(Role::Client, &[0x89, len7]);
        assert_eq!(e, WsError::ControlTooLong);
        assert_eq!(e.close_code(), 1002);
        assert_eq!(
            err(Role::Server, &[0x88, 0x80 | len7]),
            WsError::ControlTooLong
        );
    }
}

#[test]
fn length_with_top_bit_set() {
    let e = err(Role::Client, &[0x82, 0x7F, 0x80]);
    assert_eq!(e, WsError::LengthOverflow);
    assert_eq!(e.close_code(), 1002);
    let mut max = vec![0x82, 0x7F];
    max.extend((i64::MAX as u64).to_be_bytes());
    let r = run_whole(Role::Client, &max);
    assert_eq!(r.error, None, "2^63 - 1 is a legal length");
    assert!(!r.boundary);
}

#[test]
fn message_size_limit() {
    // One frame over the limit: rejected from its header, before any payload arrives.
    let f = frame(OpCode::Binary, true, &[1; 11], None);
    let e = err_with_limit(10, &f[..2]);
    assert_eq!(e, WsError::MessageTooBig);
    assert_eq!(e.close_code(), 1009);
    // Exactly at the limit is fine.
    let f = frame(OpCode::Binary, true, &[1; 10], None);
    assert_eq!(run(Role::Client, 10, &[&f]).error, None);
    // Fragments count together; each message starts from zero.
    let mut s = frame(OpCode::Text, false, &[1; 6], None);
    s.extend(frame(OpCode::Continuation, true, &[2; 4], None));
    s.extend(frame(OpCode::Text, false, &[3; 6], None));
    let ok = run(Role::Client, 10, &[&s]);
    assert_eq!(ok.error, None);
    s.extend(frame(OpCode::Continuation, true, &[4; 5], None));
    assert_eq!(err_with_limit(10, &s), WsError::MessageTooBig);
    // Control frames do not count.
    let mut s = frame(OpCode::Text, false, &[1; 10], None);
    s.extend(frame(OpCode::Ping, true, &[0; 100], None));
    s.extend(frame(OpCode::Continuation, true, b"", None));
    assert_eq!(run(Role::Client, 10, &[&s]).error, None);
}

fn err_with_limit(max: usize, input: &[u8]) -> WsError {
    run(Role::Client, max, &[input]).error.expect("rejected")
}

fn close_frame(payload: &[u8]) -> Vec<u8> {
    frame(OpCode::Close, true, payload, None)
}

#[test]
fn close_payload_rules() {
    let r = Role::Client;
    assert_eq!(
        run_whole(r, &close_frame(b"")).seen,
        [Seen::Close {
            code: None,
            reason: String::new()
        }]
    );
    let e = err(r, &close_frame(&[0x03]));
    assert_eq!((e, e.close_code()), (WsError::BadClosePayload, 1002));
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let e = err(r, &close_frame(&code.to_be_bytes()));
        assert_eq!((e, e.close_code()), (WsError::BadCloseCode(code), 1002));
    }
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999,
    ] {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice("gone ✓".as_bytes());
        let seen = run_whole(r, &close_frame(&p)).seen;
        let expected = Seen::Close {
            code: Some(code),
            reason: "gone ✓".to_owned(),
        };
        assert_eq!(seen, [expected]);
    }
    let e = err(r, &close_frame(&[0x03, 0xe8, 0xff, 0xfe]));
    assert_eq!((e, e.close_code()), (WsError::BadCloseReason, 1007));
    // A character split at the end of the reason is invalid too.
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend_from_slice(&"✓".as_bytes()[..2]);
    assert_eq!(err(r, &close_frame(&p)), WsError::BadCloseReason);
}

#[test]
fn nothing_after_close() {
    let mut s = close_frame(&1000u16.to_be_bytes());
    s.extend(frame(OpCode::Text, true, b"late", None));
    let r = run_whole(Role::Client, &s);
    assert_eq!(r.seen.len(), 1);
    assert_eq!(r.error, Some(WsError::FrameAfterClose));
    // An empty read after the close is not an error.
    let mut dec = Decoder::new(Role::Client, NO_LIMIT);
    let c = close_frame(b"");
    let (n, event) = dec.decode(&c, &mut Vec::new()).expect("valid");
    assert_eq!(n, c.len());
    assert!(matches!(event, Some(Event::Close { .. })));
    assert_eq!(dec.decode(&[], &mut Vec::new()), Ok((0, None)));
    assert!(dec.at_message_boundary());
}

#[test]
fn close_codes_and_labels() {
    use WsError::*;
    let all = [
        (BadCloseCode(5), "bad_close_code", 1002),
        (BadClosePayload, "bad_close_payload", 1002),
        (BadCloseReason, "bad_close_reason", 1007),
        (ControlTooLong, "control_too_long", 1002),
        (ExpectedContinuation, "expected_continuation", 1002),
        (FragmentedControl, "fragmented_control", 1002),
        (FrameAfterClose, "frame_after_close", 1002),
        (LengthOverflow, "length_overflow", 1002),
        (MaskedFrame, "masked_frame", 1002),
        (MessageTooBig, "message_too_big", 1009),
        (ReservedBits(1), "reserved_bits", 1002),
        (UnexpectedContinuation, "unexpected_continuation", 1002),
        (UnknownOpcode(3), "unknown_opcode", 1002),
        (UnmaskedFrame, "unmasked_frame", 1002),
    ];
    for (e, label, code) in all {
        assert_eq!(e.label(), label);
        assert_eq!(e.close_code(), code);
        assert!(!e.to_string().is_empty());
    }
}

// --- encoding ---

#[test]
fn opcode_bytes_round_trip() {
    for b in 0..16u8 {
        match OpCode::from_byte(b) {
            Some(op) => assert_eq!(op.to_byte(), b),
            None => assert!(matches!(b, 3..=7 | 0xB..=0xF)),
        }
    }
    assert!(OpCode::Close.is_control() && OpCode::Ping.is_control());
    assert!(!OpCode::Continuation.is_control() && !OpCode::Text.is_control());
}

#[test]
fn header_lengths_at_the_boundaries() {
    for (len, unmasked) in [
        (0u64, 2),
        (125, 2),
        (126, 4),
        (0xFFFF, 4),
        (0x1_0000, 10),
        (u64::MAX >> 1, 10),
    ] {
        for mask in [None, Some(RFC_MASK)] {
            let expected = unmasked + if mask.is_some() { 4 } else { 0 };
            assert_eq!(header_len(len, mask.is_some()), expected, "{len}");
            let (h, n) = encode_header(OpCode::Binary, true, len, mask);
            assert_eq!(n, expected, "{len}");
            if let Some(m) = mask {
                assert_eq!(h[n - 4..n], m);
            }
        }
    }
}

/// A relay writes `encode_header` then the payload itself: same bytes as `encode_frame`.
#[test]
fn header_plus_payload_equals_frame() {
    let payload = vec![0xAB; 300];
    for mask in [None, Some(RFC_MASK)] {
        let (h, n) = encode_header(OpCode::Binary, false, payload.len() as u64, mask);
        let mut manual = h[..n].to_vec();
        let start = manual.len();
        manual.extend_from_slice(&payload);
        if let Some(m) = mask {
            apply_mask(&mut manual[start..], m, 0);
        }
        assert_eq!(manual, frame(OpCode::Binary, false, &payload, mask));
    }
}

#[test]
fn close_and_ping_are_cut_to_fit() {
    let long = "é".repeat(100); // 200 bytes; 123 is mid-character
    let mut out = Vec::new();
    encode_close(Some(close_code::GOING_AWAY), &long, None, &mut out);
    assert_eq!(out[1] as usize, 2 + 122);
    let seen = run_whole(Role::Client, &out).seen;
    assert_eq!(
        seen,
        [Seen::Close {
            code: Some(1001),
            reason: "é".repeat(61)
        }]
    );
    out.clear();
    encode_close(None, "ignored", Some(RFC_MASK), &mut out);
    assert_eq!(out, [0x88, 0x80, 0x37, 0xfa, 0x21, 0x3d]);
    out.clear();
    encode_ping(&[1; 300], None, &mut out);
    assert_eq!(out.len(), 2 + 125);
    out.clear();
    encode_pong(&[1; 126], None, &mut out);
    assert_eq!(
        run_whole(Role::Client, &out).seen,
        [Seen::Pong(vec![1; 125])]
    );
}

fn mask_reference(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

#[test]
fn mask_matches_the_bytewise_definition() {
    let src: Vec<u8> = (0..67u8).collect();
    for len in 0..src.len() {
        for offset in 0..9 {
            let mut fast = src[..len].to_vec();
            let mut slow = fast.clone();
            apply_mask(&mut fast, RFC_MASK, offset);
            mask_reference(&mut slow, RFC_MASK, offset);
            assert_eq!(fast, slow, "len {len} offset {offset}");
        }
    }
}

// --- corpus and properties ---

/// Decodes `input` in both roles, whole and byte by byte: no panic, same result.
fn decode_is_total(input: &[u8]) {
    for role in [Role::Client, Role::Server] {
        for max in [NO_LIMIT, 16] {
            let whole = run(role, max, &[input]);
            assert_eq!(run(role, max, &byte_by_byte(input)), whole);
        }
    }
}

/// Replays the regression corpus (hand-made edge cases and any fuzzer finds).
#[test]
fn regression_corpus() {
    replay_corpus("ws", decode_is_total);
}

/// One step of a generated stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A message in fragments; after each fragment, maybe a ping.
    Message {
        kind: MessageKind,
        fragments: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    Pong(Vec<u8>),
}

fn arb_piece() -> impl Strategy<Value = Piece> {
    let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
    let kind = prop_oneof![Just(MessageKind::Binary), Just(MessageKind::Text)];
    prop_oneof![
        4 => (
            kind,
            proptest::collection::vec(
                (bytes(300), proptest::option::weighted(0.3, bytes(126))),
                1..4,
            ),
        )
            .prop_map(|(kind, fragments)| Piece::Message { kind, fragments }),
        1 => bytes(126).prop_map(Piece::Pong),
    ]
}

/// Encodes `pieces` (then a close) for `receiver`, masking with keys drawn from `masks`;
/// returns the stream and what decoding it must show.
fn encode_pieces(
    pieces: &[Piece],
    close: &Option<(u16, String)>,
    receiver: Role,
    masks: &[[u8; 4]],
) -> (Vec<u8>, Vec<Seen>) {
    let mut keys = masks.iter().cycle().copied();
    let mut next_mask = || {
        let key = keys.next();
        if receiver == Role::Server {
            key
        } else {
            None
        }
    };
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Message { kind, fragments } => {
                for (i, (bytes, ping)) in fragments.iter().enumerate() {
                    let fin = i + 1 == fragments.len();
                    let opcode = match (i, kind) {
                        (0, MessageKind::Text) => OpCode::Text,
                        (0, MessageKind::Binary) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    encode_frame(opcode, fin, bytes, next_mask(), &mut out);
                    let chunk = Seen::Data {
                        kind: *kind,
                        bytes: bytes.clone(),
                        fin,
                    };
                    push_seen(&mut seen, chunk);
                    if let Some(p) = ping {
                        encode_ping(p, next_mask(), &mut out);
                        let p = p[..p.len().min(MAX_CONTROL_PAYLOAD)].to_vec();
                        push_seen(&mut seen, Seen::Ping(p));
                    }
                }
            }
            Piece::Pong(p) => {
                encode_pong(p, next_mask(), &mut out);
                let p = p[..p.len().min(MAX_CONTROL_PAYLOAD)].to_vec();
                push_seen(&mut seen, Seen::Pong(p));
            }
        }
    }
    if let Some((code, reason)) = close {
        encode_close(Some(*code), reason, next_mask(), &mut out);
        let reason = reason.clone();
        push_seen(
            &mut seen,
            Seen::Close {
                code: Some(*code),
                reason,
            },
        );
    }
    (out, seen)
}

fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Server)]
}

proptest! {
    #[test]
    fn round_trip_at_random_splits(
        pieces in proptest::collection::vec(arb_piece(), 0..6),
        close in proptest::option::of((
            prop_oneof![Just(1000u16), 1000..=1003u16, 1007..=1014u16, 3000..=4999u16],
            "\\PC{0,30}",
        )),
        receiver in arb_role(),
        masks in proptest::collection::vec(any::<[u8; 4]>(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (stream, expected) = encode_pieces(&pieces, &close, receiver, &masks);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        let chunks: Vec<&[u8]> = at.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
        let r = run(receiver, NO_LIMIT, &chunks);
        prop_assert_eq!(r.error, None);
        prop_assert!(r.boundary);
        let all: Vec<u8> = expected.iter().flat_map(|s| match s {
            Seen::Data { bytes, .. } => bytes.clone(),
            _ => Vec::new(),
        }).collect();
        prop_assert_eq!(&r.payload, &all);
        prop_assert_eq!(r.seen, expected);
    }

    #[test]
    fn decoder_is_total_on_arbitrary_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        decode_is_total(&input);
    }

    #[test]
    fn decoder_is_total_on_mutated_streams(
        pieces in proptest::collection::vec(arb_piece(), 1..4),
        receiver in arb_role(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let (mut stream, _) = encode_pieces(&pieces, &None, receiver, &[RFC_MASK]);
        let i = at.index(stream.len());
        stream[i] = byte;
        decode_is_total(&stream);
    }

    #[test]
    fn masking_is_an_involution(
        buf in proptest::collection::vec(any::<u8>(), 0..200),
        mask in any::<[u8; 4]>(),
        offset in 0usize..1000,
        split in any::<prop::sample::Index>(),
    ) {
        let mut once = buf.clone();
        apply_mask(&mut once, mask, offset);
        let mut slow = buf.clone();
        mask_reference(&mut slow, mask, offset);
        prop_assert_eq!(&once, &slow);
        // Masking piecewise from any split point gives the same bytes.
        let k = split.index(buf.len() + 1);
        let mut pieces = buf.clone();
        let (a, b) = pieces.split_at_mut(k);
        apply_mask(a, mask, offset);
        apply_mask(b, mask, offset + k);
        prop_assert_eq!(&pieces, &once);
        apply_mask(&mut once, mask, offset);
        prop_assert_eq!(once, buf);
    }
}
