//! Server side of the SOCKS5 handshake, as the DMZ gateway sees it: arbitrary bytes arrive in an
//! accumulating buffer and are parsed as greeting, (user/password,) request, each message from
//! the leftover of the previous one.
//!
//! Input layout: two bytes (little-endian u16) choose a split offset, the rest is the stream.
//! Checked, for the conversation with and without the RFC 1929 step:
//! - no parser panics; `consumed` is in `1..=buffered`, and one byte fewer needs more bytes;
//! - every parsed message re-encodes to exactly the bytes it consumed;
//! - segmentation invariance: the stream delivered in two segments (split at the chosen offset)
//!   gives the same messages, error and leftover as the stream delivered whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sallyport_dataplane::wire::socks5::{
    encode_greeting, encode_request, encode_userpass, parse_greeting, parse_request,
    parse_userpass, Credentials, Greeting, Parsed, Request, WireError,
};

#[derive(Debug, PartialEq)]
enum ClientMsg {
    Greeting(Greeting),
    UserPass(Credentials),
    Request(Request),
}

type Step = fn(&[u8]) -> Parsed<ClientMsg>;

fn greeting(i: &[u8]) -> Parsed<ClientMsg> {
    Ok(parse_greeting(i)?.map(|(g, n)| (ClientMsg::Greeting(g), n)))
}

fn userpass(i: &[u8]) -> Parsed<ClientMsg> {
    Ok(parse_userpass(i)?.map(|(c, n)| (ClientMsg::UserPass(c), n)))
}

fn request(i: &[u8]) -> Parsed<ClientMsg> {
    Ok(parse_request(i)?.map(|(r, n)| (ClientMsg::Request(r), n)))
}

/// Encodes a parsed message back to the wire.
fn encode(msg: &ClientMsg) -> Vec<u8> {
    let mut out = Vec::new();
    match msg {
        ClientMsg::Greeting(g) => encode_greeting(&g.methods, &mut out),
        ClientMsg::UserPass(c) => encode_userpass(c, &mut out).expect("parsed credentials fit"),
        ClientMsg::Request(r) => {
            encode_request(r.command, &r.host, r.port, &mut out).expect("parsed request fits")
        }
    }
    out
}

#[derive(Debug, PartialEq)]
struct Outcome {
    /// Parsed messages with the bytes each consumed.
    msgs: Vec<(ClientMsg, usize)>,
    /// The first error; parsing stops there (the connection would be closed).
    error: Option<WireError>,
    /// Bytes not consumed by any message (the next layer's, or the rest after an error).
    tail: Vec<u8>,
}

/// Feeds `chunks` into an accumulating buffer and runs `steps` in order, each from the leftover
/// of the previous one, re-trying the current step whenever more bytes arrive.
fn drive(chunks: &[&[u8]], steps: &[Step]) -> Outcome {
    let mut buf = Vec::new();
    let mut msgs = Vec::new();
    let mut error = None;
    let mut next = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while error.is_none() && next < steps.len() {
            match steps[next](&buf) {
                Err(e) => error = Some(e),
                Ok(None) => break,
                Ok(Some((msg, n))) => {
                    assert!(n > 0 && n <= buf.len(), "consumed {n} of {}", buf.len());
                    assert_eq!(
                        steps[next](&buf[..n - 1]),
                        Ok(None),
                        "one byte short of a complete message must need more bytes"
                    );
                    assert_eq!(encode(&msg), &buf[..n], "re-encoding {msg:?}");
                    msgs.push((msg, n));
                    buf.drain(..n);
                    next += 1;
                }
            }
        }
    }
    Outcome {
        msgs,
        error,
        tail: buf,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((split, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*split)) % (stream.len() + 1);
    let (head, rest) = stream.split_at(split);

    // The server parses user/password only if it chose method 2: try both conversations.
    let with_auth: [Step; 3] = [greeting, userpass, request];
    let without_auth: [Step; 2] = [greeting, request];
    for steps in [&with_auth[..], &without_auth[..]] {
        let whole = drive(&[stream], steps);
        let consumed: usize = whole.msgs.iter().map(|(_, n)| n).sum();
        assert!(consumed <= stream.len());
        assert_eq!(whole.tail, &stream[consumed..]);
        let segmented = drive(&[head, rest], steps);
        assert_eq!(segmented, whole, "split at {split}");
    }
});
