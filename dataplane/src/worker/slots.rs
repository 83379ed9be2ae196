//! The worker's slot table: every connection a worker holds (a handshake, a parked prepared
//! connection, a parked reverse leg, a connect in progress, a tunnel) lives in one slot, named
//! by a [`Key`] (index and generation) that its completion tokens carry.
//!
//! A slot's generation moves on when its occupant leaves, so completions still in flight for
//! that occupant find nothing. This module holds the states; it does no I/O and decides
//! nothing about them.

use super::connect::Connecting;
use super::handshake::Handshake;
use super::pool::Parked;
use super::reverse::ReverseLeg;
use super::token::{Key, GEN_MASK};
use crate::relay::Tunnel;

/// What occupies a slot: one state type per connection state (`LIFECYCLE.md`).
pub(super) enum Entry {
    /// Back-end connect in progress (a paired reverse leg, or a forwarding client).
    Connecting(Box<Connecting>),
    Free,
    /// A public client's TLS handshake or WebSocket upgrade in progress.
    Handshake(Box<Handshake>),
    /// A prepared connection parked at the DMZ side.
    Parked(Parked),
    /// A reverse leg parked by the internal side, waiting for the second BIND reply.
    Reverse(Box<ReverseLeg>),
    Tunnel(Box<Tunnel>),
}

struct Slot {
    gen: u32,
    entry: Entry,
}

/// Slots for every connection of a worker; see the module header.
#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Slots {
    pub(super) fn insert(&mut self, entry: Entry) -> Key {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = entry;
            Key {
                index,
                gen: slot.gen,
            }
        } else {
            self.slots.push(Slot { gen: 0, entry });
            Key {
                index: (self.slots.len() - 1) as u32,
                gen: 0,
            }
        }
    }

    pub(super) fn get_mut(&mut self, key: Key) -> Option<&mut Entry> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.gen == key.gen && !matches!(s.entry, Entry::Free))
            .map(|s| &mut s.entry)
    }

    pub(super) fn remove(&mut self, key: Key) -> Option<Entry> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.gen != key.gen || matches!(slot.entry, Entry::Free) {
            return None;
        }
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push(key.index);
        Some(std::mem::replace(&mut slot.entry, Entry::Free))
    }

    /// The keys of every occupied slot (for shutting down).
    pub(super) fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s.entry, Entry::Free))
            .map(|(i, s)| Key {
                index: i as u32,
                gen: s.gen,
            })
            .collect()
    }
}

/// `slots.get_mut(key)` if it holds the given variant, as a `&mut` to its state.
macro_rules! occupant {
    ($slots:expr, $key:expr, $variant:ident) => {
        match $slots.get_mut($key) {
            Some($crate::worker::slots::Entry::$variant(state)) => Some(state),
            _ => None,
        }
    };
}
pub(super) use occupant;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_ignores_the_old_key() {
        let parked = || {
            let (a, _b) = crate::sys::tests::socket_pair();
            Entry::Parked(Parked {
                leg: crate::leg::Leg::plain(std::os::fd::OwnedFd::from(a)),
                service: crate::handoff::PublicIndex(0),
            })
        };
        let mut slots = Slots::default();
        let a = slots.insert(parked());
        assert!(slots.remove(a).is_some());
        let b = slots.insert(parked());
        assert_eq!(a.index, b.index);
        assert_ne!(a.gen, b.gen);
        assert!(slots.get_mut(a).is_none());
        assert!(slots.remove(a).is_none());
        assert!(slots.get_mut(b).is_some());
        assert_eq!(slots.keys(), vec![b]);
    }
}
