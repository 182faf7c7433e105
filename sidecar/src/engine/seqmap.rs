//! A map from sequence numbers to values for a queue's live messages: a ring of slots
//! indexed by `seq - base`. Sequence numbers are handed out in order and messages mostly
//! leave from the front, so this holds each message in its slot alone, with no per-entry
//! node overhead. A message that stays long at the front (a long delay) keeps the empty
//! slots behind it until it leaves.

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct SeqMap<T> {
    base: u64,
    slots: VecDeque<Option<T>>,
    len: usize,
}

impl<T> Default for SeqMap<T> {
    fn default() -> Self {
        Self {
            base: 0,
            slots: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> SeqMap<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let offset = seq.checked_sub(self.base)?;
        (offset < self.slots.len() as u64).then_some(offset as usize)
    }

    pub fn get(&self, seq: u64) -> Option<&T> {
        self.slots.get(self.index(seq)?)?.as_ref()
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        let index = self.index(seq)?;
        self.slots.get_mut(index)?.as_mut()
    }

    pub fn insert(&mut self, seq: u64, value: T) -> Option<T> {
        if self.slots.is_empty() {
            self.base = seq;
        }
        if seq < self.base {
            for _ in seq..self.base {
                self.slots.push_front(None);
            }
            self.base = seq;
        }
        let offset = (seq - self.base) as usize;
        while self.slots.len() <= offset {
            self.slots.push_back(None);
        }
        let previous = self.slots[offset].replace(value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    pub fn remove(&mut self, seq: u64) -> Option<T> {
        let index = self.index(seq)?;
        let value = self.slots.get_mut(index)?.take()?;
        self.len -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        while let Some(None) = self.slots.back() {
            self.slots.pop_back();
        }
        if self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
        Some(value)
    }

    /// The entry with the lowest sequence number.
    pub fn first(&self) -> Option<(u64, &T)> {
        // The front slot is always occupied: `remove` drops empty slots there.
        self.slots.front()?.as_ref().map(|value| (self.base, value))
    }

    /// Entries in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, slot)| slot.as_ref().map(|value| (base + i as u64, value)))
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_for_any_order_of_operations() {
        let mut map = SeqMap::default();
        let mut model = std::collections::BTreeMap::new();
        let mut state = 12345u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let seq = (state >> 33) % 200;
            if (state >> 20).is_multiple_of(3) {
                assert_eq!(map.remove(seq), model.remove(&seq));
            } else {
                assert_eq!(map.insert(seq, seq * 2), model.insert(seq, seq * 2));
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.first(), model.first_key_value().map(|(k, v)| (*k, v)));
            assert_eq!(map.get(seq), model.get(&seq));
        }
    }
}
