//! Rendezvous tokens: the one-time credential a platform mints for a browser and a host to meet
//! at the DMZ (token rendezvous).
//!
//! A token is printable, URL-safe text of at most [`MAX_TOKEN_LEN`] bytes:
//!
//! ```text
//! sp1.<host>.<stream>.<expires>.<nonce>.<mac>
//! ```
//!
//! - `host`, `stream`: names of 1 to [`MAX_NAME_LEN`] characters from `A-Z a-z 0-9 _ -`;
//! - `expires`: the Unix time (seconds, decimal, no leading zeros) after which it is refused;
//! - `nonce`: 16 random bytes, base64url without padding (22 characters); it names the token in
//!   logs and makes it single-use (the DMZ remembers it until it expires);
//! - `mac`: HMAC-SHA256 with the shared key over everything before the last `.`, base64url
//!   without padding (43 characters).
//!
//! [`verify`] checks the shape first (malformed), then the MAC in constant time (forged), then the
//! expiry (expired); claims are believed only after the MAC. This module reads no clock (the
//! caller gives the time), keeps no state (single use is the DMZ's link table) and never
//! panics on input.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The version prefix every token starts with.
pub const PREFIX: &str = "sp1";
/// Longest token accepted (a SOCKS5 DOMAINNAME holds 255 bytes).
pub const MAX_TOKEN_LEN: usize = 255;
/// Longest host or stream name.
pub const MAX_NAME_LEN: usize = 63;
/// Shortest key accepted: HMAC-SHA256's output size.
pub const MIN_KEY_LEN: usize = 32;
/// Bytes of randomness in a nonce.
pub const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;

/// What a token says, once its MAC has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub host: String,
    pub stream: String,
    /// Unix time in seconds; the token is refused after it.
    pub expires: u64,
    pub nonce: [u8; NONCE_LEN],
}

impl Claims {
    /// The nonce as it appears in the token: the token's name in logs and the link table
    /// (never log the whole token: it is a bearer credential until it is used).
    pub fn id(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.nonce)
    }
}

/// The shared HMAC key. `Debug` prints its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key has {0} bytes; at least {MIN_KEY_LEN} are required")]
    TooShort(usize),
}

impl Key {
    /// A key of `bytes` (at least [`MIN_KEY_LEN`]).
    pub fn new(bytes: Vec<u8>) -> Result<Key, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(Key(bytes))
    }

    /// A key file's contents: its bytes with one trailing newline (`\n` or `\r\n`) stripped.
    pub fn from_file_bytes(mut bytes: Vec<u8>) -> Result<Key, KeyError> {
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
        Key::new(bytes)
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format (what is wrong with it).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The MAC does not match: not minted with this key, or altered.
    #[error("forged token: its signature does not match the key")]
    Forged,
    /// A genuine token past its expiry.
    #[error("token expired {ago}s ago")]
    Expired { ago: u64 },
}

impl TokenError {
    /// Stable snake_case label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::Forged => "forged",
            TokenError::Expired { .. } => "expired",
        }
    }
}

/// Whether `name` may be a host or stream name in a token.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `text` claims to be a token (starts with the version prefix and a dot); says
/// nothing of whether it is a valid one.
pub fn looks_like_token(text: &str) -> bool {
    text.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The token for `claims`. The names must satisfy [`valid_name`] (the result is not a valid
/// token otherwise; [`mint`] callers check names first).
pub fn mint(key: &Key, claims: &Claims) -> String {
    let body = format!(
        "{PREFIX}.{}.{}.{}.{}",
        claims.host,
        claims.stream,
        claims.expires,
        claims.id()
    );
    let tag = key.mac(body.as_bytes()).finalize().into_bytes();
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks `token` against `key` at Unix time `now` (seconds) and returns its claims.
pub fn verify(key: &Key, token: &str, now: u64) -> Result<Claims, TokenError> {
    let malformed = TokenError::Malformed;
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("longer than 255 bytes"));
    }
    let Some((body, mac_text)) = token.rsplit_once('.') else {
        return Err(malformed("no signature"));
    };
    let mut fields = body.split('.');
    if fields.next() != Some(PREFIX) {
        return Err(malformed("does not start with sp1."));
    }
    let (Some(host), Some(stream), Some(expires), Some(nonce), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(malformed("expected six dot-separated fields"));
    };
    if !valid_name(host) {
        return Err(malformed("bad host name"));
    }
    if !valid_name(stream) {
        return Err(malformed("bad stream name"));
    }
    let expires = parse_unix_time(expires).ok_or(malformed("bad expiry"))?;
    let nonce: [u8; NONCE_LEN] = decode_exact(nonce).ok_or(malformed("bad nonce"))?;
    let tag: [u8; MAC_LEN] = decode_exact(mac_text).ok_or(malformed("bad signature encoding"))?;
    key.mac(body.as_bytes())
        .verify_slice(&tag)
        .map_err(|_| TokenError::Forged)?;
    if now > expires {
        return Err(TokenError::Expired { ago: now - expires });
    }
    Ok(Claims {
        host: host.to_owned(),
        stream: stream.to_owned(),
        expires,
        nonce,
    })
}

/// Decimal digits, no sign, no leading zero (one spelling per time, so the MAC covers it).
fn parse_unix_time(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// Base64url without padding of exactly `N` bytes, in its canonical spelling only.
fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let array: [u8; N] = bytes.try_into().ok()?;
    // The decoder accepts non-zero trailing bits; a second spelling of the same bytes is refused.
    (URL_SAFE_NO_PAD.encode(array) == text).then_some(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            host: "h1".into(),
            stream: "logs".into(),
            expires: 1_800_000_000,
            nonce: *b"0123456789abcdef",
        }
    }

    #[test]
    fn round_trip() {
        let token = mint(&key(), &claims());
        assert!(token.starts_with("sp1.h1.logs.1800000000."));
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        assert_eq!(verify(&key(), &token, 1_799_999_999), Ok(claims()));
        assert_eq!(verify(&key(), &token, 1_800_000_000), Ok(claims()));
        assert_eq!(
            verify(&key(), &token, 1_800_000_005),
            Err(TokenError::Expired { ago: 5 })
        );
    }

    #[test]
    fn longest_names_fit_in_a_socks_domain_name() {
        let mut c = claims();
        c.host = "h".repeat(MAX_NAME_LEN);
        c.stream = "s".repeat(MAX_NAME_LEN);
        c.expires = u64::MAX;
        let token = mint(&key(), &c);
        assert!(token.len() <= MAX_TOKEN_LEN, "{}", token.len());
        assert_eq!(verify(&key(), &token, 0), Ok(c));
    }

    #[test]
    fn every_single_byte_corruption_is_refused() {
        let token = mint(&key(), &claims());
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for b in 0..=255u8 {
                if b == bytes[i] {
                    continue;
                }
                let mut bad = bytes.to_vec();
                bad[i] = b;
                let Ok(text) = std::str::from_utf8(&bad) else {
                    continue; // Not text: never reaches `verify` (URLs and DOMAINNAMEs are checked).
                };
                assert!(
                    verify(&key(), text, 0).is_err(),
                    "byte {i} set to {b:#x} still verifies: {text}"
                );
            }
        }
    }

    #[test]
    fn another_key_is_forged() {
        let token = mint(&key(), &claims());
        let other = Key::new(vec![7; 32]).unwrap();
        assert_eq!(verify(&other, &token, 0), Err(TokenError::Forged));
    }

    #[test]
    fn malformed_inputs_say_what_is_wrong() {
        let token = mint(&key(), &claims());
        let cases = [
            "".to_string(),
            "sp1".into(),
            "sp2.h1.logs.1.AAAAAAAAAAAAAAAAAAAAAA.x".into(),
            token.replacen(".logs.", ".lo.gs.", 1),
            token.replacen(".1800000000.", ".01800000000.", 1),
            token.replacen(".1800000000.", ".-1.", 1),
            token.replacen("h1", "h 1", 1),
            format!("{token}="),
            "x".repeat(300),
        ];
        for case in cases {
            assert!(
                matches!(verify(&key(), &case, 0), Err(TokenError::Malformed(_))),
                "{case:?}: {:?}",
                verify(&key(), &case, 0)
            );
        }
    }

    #[test]
    fn keys_shorter_than_32_bytes_are_refused_and_newlines_stripped() {
        assert_eq!(Key::new(vec![1; 31]), Err(KeyError::TooShort(31)));
        let mut file = vec![b'k'; 32];
        file.extend_from_slice(b"\r\n");
        assert_eq!(Key::from_file_bytes(file), Key::new(vec![b'k'; 32]));
        assert_eq!(
            Key::from_file_bytes(b"short\n".to_vec()),
            Err(KeyError::TooShort(5))
        );
        assert_eq!(format!("{:?}", key()), "Key(32 bytes)");
    }

    #[test]
    fn names_and_prefix() {
        assert!(valid_name("logs-2_a"));
        assert!(!valid_name(""));
        assert!(!valid_name("a.b"));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(looks_like_token("sp1.x"));
        assert!(!looks_like_token("sp1"));
        assert!(!looks_like_token("echo"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_text(text in ".{0,300}") {
            let _ = verify(&key(), &text, 0);
        }

        #[test]
        fn never_panics_on_token_shaped_text(
            host in "[A-Za-z0-9_.-]{0,70}", stream in "[A-Za-z0-9_.-]{0,70}",
            exp in "[0-9]{0,22}", nonce in "[A-Za-z0-9_-]{0,30}", mac in "[A-Za-z0-9_=-]{0,50}",
        ) {
            let text = format!("sp1.{host}.{stream}.{exp}.{nonce}.{mac}");
            proptest::prop_assert!(verify(&key(), &text, 0).is_err());
        }
    }
}
