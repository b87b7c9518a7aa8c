//! Bounded memory of recent hit ids.
//!
//! Duplicates come around reconnects and when connections are added, so only recent hits
//! need remembering: a ring of the last `window` keys (insertion order, for eviction) plus
//! an open-addressing hash index into that ring. Both grow with use up to the window, so a
//! large window costs nothing until hits arrive.
//!
//! The index uses linear probing with backward-shift deletion (no tombstones, so lookups
//! never slow down over a long-lived stream). A slot is one `u64`: the low 32 bits of the
//! key's hash (its home bucket and a tag that rules out most mismatches without touching
//! the ring) and, in the high 32 bits, the ring position + 1 (0 = empty slot). The load
//! factor stays at or below 1/2. Memory at a full window: 16 bytes per key in the ring plus
//! 16–32 bytes per key in the index.

use super::record::HitKey;

/// Largest effective window: ring positions must fit the 32-bit half of a slot. Larger
/// configured windows are clamped to it (that is 16 GiB of keys, far beyond any real use).
pub const MAX_WINDOW: usize = 1 << 30;

/// Smallest index size allocated once the first key arrives.
const MIN_SLOTS: usize = 16;

/// Remembers the last `window` distinct hit keys and answers "seen recently?" in O(1).
pub struct Dedup {
    /// The configured window (as given).
    window: usize,
    /// The effective window: `window` clamped to [`MAX_WINDOW`].
    cap: usize,
    /// The remembered keys; grows to `cap`, then is used as a circular buffer.
    ring: Vec<HitKey>,
    /// When the ring is full: position of the oldest key (the next to be replaced).
    oldest: usize,
    /// Open-addressing index: `(ring position + 1) << 32 | hash as u32`, 0 = empty.
    slots: Vec<u64>,
}

/// Hash of a key: ids are already well mixed, but sequential or structured ids must not
/// cluster in a linear-probing table, so mix both halves with two multiplies.
#[inline]
fn hash(key: HitKey) -> u64 {
    let mut x = key.high.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.low;
    x ^= x >> 32;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

impl Dedup {
    /// Remembers the last `window` distinct keys; 0 turns de-duplication off.
    pub fn new(window: usize) -> Self {
        Dedup {
            window,
            cap: window.min(MAX_WINDOW),
            ring: Vec::new(),
            oldest: 0,
            slots: Vec::new(),
        }
    }

    /// True when `key` was not among the remembered keys (then it is remembered, evicting the
    /// oldest when full); false for a duplicate.
    pub fn insert(&mut self, key: HitKey) -> bool {
        if self.cap == 0 {
            return true;
        }
        if self.slots.is_empty() {
            self.slots = vec![0; MIN_SLOTS.min(self.max_slots())];
        }
        let h = hash(key);
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                break;
            }
            if s as u32 == h as u32 && self.ring[(s >> 32) as usize - 1] == key {
                return false;
            }
            i = (i + 1) & mask;
        }
        let pos = if self.ring.len() == self.cap {
            // Full: replace the oldest key. Removing it may shift slots, so the new key's
            // slot is found afresh below.
            let pos = self.oldest;
            self.remove_slot_of(pos);
            self.ring[pos] = key;
            self.oldest = if pos + 1 == self.cap { 0 } else { pos + 1 };
            pos
        } else {
            if self.ring.len() == self.ring.capacity() {
                // Grow geometrically, never beyond the window.
                let extra = self
                    .ring
                    .capacity()
                    .max(MIN_SLOTS)
                    .min(self.cap - self.ring.len());
                self.ring.reserve_exact(extra);
            }
            self.ring.push(key);
            if self.ring.len() * 2 > self.slots.len() {
                self.grow();
            }
            self.ring.len() - 1
        };
        self.place(h, pos);
        true
    }

    /// How many keys are remembered now (never more than the window).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when no key is remembered (always so with a window of 0).
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The configured window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Forgets every key but keeps the allocations (e.g. when the stream is reconfigured).
    pub fn clear(&mut self) {
        self.ring.clear();
        self.slots.iter_mut().for_each(|s| *s = 0);
        self.oldest = 0;
    }

    /// Allocated capacity, in keys of the ring and in index slots (for memory-bound tests).
    #[doc(hidden)]
    pub fn allocated(&self) -> (usize, usize) {
        (self.ring.capacity(), self.slots.capacity())
    }

    /// Index size for a full window: load factor <= 1/2.
    fn max_slots(&self) -> usize {
        (self.cap * 2).max(4).next_power_of_two()
    }

    /// Puts `(pos, h)` into the first free slot from its home.
    #[inline]
    fn place(&mut self, h: u64, pos: usize) {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = ((pos as u64 + 1) << 32) | (h & 0xffff_ffff);
    }

    /// Removes the slot that points at ring position `pos`, shifting later entries of the
    /// probe run back so no tombstone is needed.
    fn remove_slot_of(&mut self, pos: usize) {
        let mask = self.slots.len() - 1;
        let h = hash(self.ring[pos]);
        let want = (pos as u64 + 1) << 32;
        let mut hole = h as usize & mask;
        while self.slots[hole] & !0xffff_ffff != want {
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = s as u32 as usize & mask;
            // `s` may move into the hole when its home is not in (hole, j] (cyclically).
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
    }

    /// Doubles the index (up to the size for a full window) and re-inserts every key.
    fn grow(&mut self) {
        let new_len = (self.slots.len() * 2).min(self.max_slots());
        if new_len == self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![0; new_len]);
        let mask = new_len - 1;
        for s in old.into_iter().filter(|&s| s != 0) {
            // The stored 32 hash bits hold the home bucket for any table up to 2^32 slots.
            let mut i = s as u32 as usize & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashSet, VecDeque};

    fn k(high: u64, low: u64) -> HitKey {
        HitKey { high, low }
    }

    #[test]
    fn window_zero_is_off() {
        let mut d = Dedup::new(0);
        assert!(d.insert(k(1, 1)));
        assert!(d.insert(k(1, 1)));
        assert!(d.is_empty());
        assert_eq!(d.window(), 0);
        assert_eq!(d.allocated(), (0, 0));
    }

    #[test]
    fn detects_duplicates_within_window_and_forgets_beyond() {
        let mut d = Dedup::new(3);
        assert!(d.insert(k(1, 1)));
        assert!(d.insert(k(1, 2)));
        assert!(!d.insert(k(1, 1)));
        assert!(d.insert(k(1, 3)));
        assert_eq!(d.len(), 3);
        assert!(d.insert(k(1, 4))); // evicts (1,1)
        assert_eq!(d.len(), 3);
        assert!(!d.insert(k(1, 2)));
        assert!(d.insert(k(1, 1))); // forgotten, so new again; evicts (1,2)
        assert!(d.insert(k(1, 2)));
    }

    #[test]
    fn window_one() {
        let mut d = Dedup::new(1);
        assert!(d.insert(k(0, 0)));
        assert!(!d.insert(k(0, 0)));
        assert!(d.insert(k(0, 1)));
        assert!(d.insert(k(0, 0)));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn lazy_allocation() {
        let mut d = Dedup::new(1_000_000);
        assert_eq!(d.allocated(), (0, 0));
        for i in 0..10 {
            d.insert(k(i, i));
        }
        let (ring, slots) = d.allocated();
        assert!(ring <= 64 && slots <= 64, "{ring} {slots}");
    }

    #[test]
    fn matches_reference_model_with_colliding_keys() {
        // Keys from a small space so duplicates, evictions and probe-run shifts are common.
        for window in [1, 2, 5, 16, 100, 1000] {
            let mut d = Dedup::new(window);
            let mut order: VecDeque<HitKey> = VecDeque::new();
            let mut set: HashSet<HitKey> = HashSet::new();
            let mut x: u64 = 0x1234_5678;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = k(x % 7, (x >> 8) % (window as u64 * 3 + 2));
                let fresh = !set.contains(&key);
                assert_eq!(d.insert(key), fresh, "window {window} key {key:?}");
                if fresh {
                    if order.len() == window {
                        set.remove(&order.pop_front().unwrap());
                    }
                    order.push_back(key);
                    set.insert(key);
                }
                assert_eq!(d.len(), order.len());
                assert!(d.len() <= window);
            }
            let (ring, slots) = d.allocated();
            assert!(ring <= window, "ring {ring} > {window}");
            assert!(slots <= (window * 2).max(4).next_power_of_two());
        }
    }

    #[test]
    fn clear_forgets() {
        let mut d = Dedup::new(10);
        d.insert(k(1, 2));
        d.clear();
        assert!(d.is_empty());
        assert!(d.insert(k(1, 2)));
    }
}
