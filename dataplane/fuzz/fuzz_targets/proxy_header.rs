//! The PROXY protocol header parser, as a public listener that expects one would feed it:
//! arbitrary bytes from a peer, delivered whole and in two segments.
//!
//! Input layout: two bytes (little-endian u16) choose a split offset, the rest is the stream.
//! Checked:
//! - no panic; `consumed` is in `1..=len` and at most the version's maximum header length;
//! - completeness: one byte fewer than `consumed` needs more bytes (or is already an error);
//! - segmentation invariance: the first segment alone either needs more bytes or gives the
//!   same answer as the whole stream, and the whole stream gives the same answer however much
//!   of it there is past `consumed` (what follows the header is the next layer's);
//! - a parsed TCP header re-encodes, in its own version, to a header that parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sallyport_dataplane::wire::proxy::{
    encode_header, parse_header, Addresses, Version, MAX_V1_LEN, MAX_V2_LEN,
};

fuzz_target!(|data: &[u8]| {
    let Some((split, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let whole = parse_header(stream);
    if let Ok(Some((header, consumed))) = whole {
        let max = match header.version {
            Version::V1 => MAX_V1_LEN,
            Version::V2 => MAX_V2_LEN,
        };
        assert!(
            (1..=stream.len().min(max)).contains(&consumed),
            "consumed {consumed}"
        );
        assert!(
            !matches!(parse_header(&stream[..consumed - 1]), Ok(Some(_))),
            "a strict prefix parsed"
        );
        // What follows the header does not change it.
        assert_eq!(parse_header(&stream[..consumed]), whole);
        if let Addresses::Tcp {
            source,
            destination,
        } = header.addresses
        {
            let mut out = Vec::new();
            encode_header(header.version, source, destination, &mut out).expect("encodes");
            let (again, n) = parse_header(&out).expect("valid").expect("complete");
            assert_eq!((again, n), (header, out.len()));
        }
    }
    let at = usize::from(u16::from_le_bytes(*split)) % (stream.len() + 1);
    match parse_header(&stream[..at]) {
        Ok(None) => {}
        // A complete header or an error in the first segment is the whole stream's answer too.
        first => assert_eq!(first, whole, "split at {at}"),
    }
});
