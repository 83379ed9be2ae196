//! The typed completion token: what an io_uring completion is about, packed into the 64-bit
//! `user_data` the ring carries and unpacked when the completion is drained.
//!
//! Layout: kind (7 bits, 56..=62) | generation (24 bits) | slot index (32 bits). Bit 63 stays
//! clear: the ring reserves it for multishot accepts (`sys::ring`). This module does no I/O and
//! knows nothing of what the slots hold.

use crate::metrics::Side;

/// Generations wrap at 24 bits.
pub(super) const GEN_MASK: u32 = 0x00ff_ffff;

/// A slot and the generation of its occupant: a completion for a previous occupant carries an
/// older generation and finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub index: u32,
    pub gen: u32,
}

/// What a completion is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// The multishot accept of listener group `group`.
    Accept { group: u32 },
    /// The answer to a cancel request: nothing to do.
    Cancel,
    /// The POLLOUT of a back-end connect in progress.
    Connect(Key),
    /// The poll of a public client's TLS or HTTP upgrade handshake.
    Handshake(Key),
    /// The poll of one leg of a tunnel.
    Leg(Key, Side),
    /// The poll of a parked prepared connection (DMZ side).
    Parked(Key),
    /// The poll of a parked reverse leg (internal side).
    Reverse(Key),
    /// The worker's wake-up eventfd.
    Wake,
}

const ACCEPT: u64 = 1;
const CANCEL: u64 = 2;
const CONNECT: u64 = 3;
const HANDSHAKE: u64 = 4;
const LEG_CLIENT: u64 = 5;
const LEG_TARGET: u64 = 6;
const PARKED: u64 = 7;
const REVERSE: u64 = 8;
const WAKE: u64 = 9;

fn pack(kind: u64, gen: u32, index: u32) -> u64 {
    (kind << 56) | (u64::from(gen & GEN_MASK) << 32) | u64::from(index)
}

impl Token {
    /// The `user_data` to submit with the request.
    pub(super) fn user_data(self) -> u64 {
        let keyed = |kind, key: Key| pack(kind, key.gen, key.index);
        match self {
            Token::Accept { group } => pack(ACCEPT, 0, group),
            Token::Cancel => pack(CANCEL, 0, 0),
            Token::Connect(key) => keyed(CONNECT, key),
            Token::Handshake(key) => keyed(HANDSHAKE, key),
            Token::Leg(key, Side::Client) => keyed(LEG_CLIENT, key),
            Token::Leg(key, Side::Target) => keyed(LEG_TARGET, key),
            Token::Parked(key) => keyed(PARKED, key),
            Token::Reverse(key) => keyed(REVERSE, key),
            Token::Wake => pack(WAKE, 0, 0),
        }
    }

    /// The token a completion's `user_data` carries; `None` for a value no token makes.
    pub(super) fn from_user_data(user_data: u64) -> Option<Token> {
        let key = Key {
            index: user_data as u32,
            gen: ((user_data >> 32) as u32) & GEN_MASK,
        };
        Some(match user_data >> 56 {
            ACCEPT => Token::Accept { group: key.index },
            CANCEL => Token::Cancel,
            CONNECT => Token::Connect(key),
            HANDSHAKE => Token::Handshake(key),
            LEG_CLIENT => Token::Leg(key, Side::Client),
            LEG_TARGET => Token::Leg(key, Side::Target),
            PARKED => Token::Parked(key),
            REVERSE => Token::Reverse(key),
            WAKE => Token::Wake,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_round_trips_and_leaves_the_reserved_bit_clear() {
        let key = Key {
            index: u32::MAX,
            gen: GEN_MASK,
        };
        let tokens = [
            Token::Accept { group: 7 },
            Token::Cancel,
            Token::Connect(key),
            Token::Handshake(key),
            Token::Leg(key, Side::Client),
            Token::Leg(key, Side::Target),
            Token::Parked(key),
            Token::Reverse(Key { index: 3, gen: 1 }),
            Token::Wake,
        ];
        for token in tokens {
            let ud = token.user_data();
            assert_eq!(ud >> 63, 0, "{token:?} sets the ring's bit");
            assert_eq!(Token::from_user_data(ud), Some(token));
        }
        assert_eq!(Token::from_user_data(0), None);
        assert_eq!(Token::from_user_data(0x7f << 56), None);
    }

    #[test]
    fn generations_wrap_at_24_bits() {
        let key = Key {
            index: 1,
            gen: GEN_MASK + 2,
        };
        let back = Token::from_user_data(Token::Parked(key).user_data());
        assert_eq!(back, Some(Token::Parked(Key { index: 1, gen: 1 })));
    }
}
