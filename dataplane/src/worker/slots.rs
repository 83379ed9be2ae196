//! The worker's slot table: every connection a worker holds (a handshake, a parked prepared
//! connection, a parked reverse leg, a connect in progress, a tunnel) lives in one slot, named
//! by a [`Key`] (index and generation) that its completion tokens carry. The table is generic
//! over what it holds (the worker's is `Slots<Entry>`, see `entry.rs`), so it names no state.
//!
//! A slot's generation moves on when its occupant leaves, so completions still in flight for
//! that occupant find nothing. This module holds the occupants; it does no I/O and decides
//! nothing about them.

use super::token::{Key, GEN_MASK};

struct Slot<E> {
    gen: u32,
    /// `None` while the slot is free.
    entry: Option<E>,
}

/// Slots for every connection of a worker; see the module header.
pub(super) struct Slots<E> {
    slots: Vec<Slot<E>>,
    free: Vec<u32>,
}

impl<E> Default for Slots<E> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<E> Slots<E> {
    pub(super) fn insert(&mut self, entry: E) -> Key {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = Some(entry);
            Key {
                index,
                gen: slot.gen,
            }
        } else {
            self.slots.push(Slot {
                gen: 0,
                entry: Some(entry),
            });
            Key {
                index: (self.slots.len() - 1) as u32,
                gen: 0,
            }
        }
    }

    pub(super) fn get_mut(&mut self, key: Key) -> Option<&mut E> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.gen == key.gen)
            .and_then(|s| s.entry.as_mut())
    }

    pub(super) fn remove(&mut self, key: Key) -> Option<E> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.gen != key.gen || slot.entry.is_none() {
            return None;
        }
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push(key.index);
        slot.entry.take()
    }

    /// The keys of every occupied slot (for shutting down).
    pub(super) fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, s)| Key {
                index: i as u32,
                gen: s.gen,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_ignores_the_old_key() {
        let parked = || 7u32;
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
