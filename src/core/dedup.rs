//! Bounded memory of recent hit ids.
//!
//! Duplicates come around reconnects and when connections are added, so only recent hits
//! need remembering: a ring of the last `window` keys (insertion order, for eviction) plus
//! an open-addressing hash index into that ring. Both grow with use up to the window, so a
//! large window costs nothing until hits arrive.
//!
//! The index uses linear probing with backward-shift deletion (no tombstones, so lookups
//! never slow down over a long-lived stream). Its hash is SipHash-1-3 keyed per instance
//! (from the client's random seed): ids come from the network, and with an unkeyed hash a
//! stream of crafted ids that share one bucket turns every insert into a scan of one long
//! probe run (issue 13: 100 k crafted records took 7.55 s against 0.13 s for random ids).
//! Without the key, colliding ids cannot be chosen in advance. A slot is one `u64`: the low 32 bits of the
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
    /// The SipHash key, derived from the seed.
    key: (u64, u64),
}

/// SplitMix64 step: spreads a seed into independent-looking 64-bit words.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One SipRound on the state `v`.
#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-1-3 (the variant Rust's `HashMap` uses) of the 16 bytes `high.to_le_bytes() ++
/// low.to_le_bytes()` under the 128-bit key `(k0, k1)`: a keyed pseudo-random function,
/// so without the key an attacker cannot pick ids that share a bucket.
#[inline]
fn siphash13(k0: u64, k1: u64, key: HitKey) -> u64 {
    siphash::<1, 3>(k0, k1, key)
}

/// SipHash-C-D of a hit key's 16 bytes (generic so the test can check the 2-4 variant
/// against the standard library's implementation; the rounds are all that differ).
#[inline(always)]
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, key: HitKey) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    // Two message words, then the length block (16 << 56).
    for m in [key.high, key.low, 16 << 56] {
        v[3] ^= m;
        for _ in 0..C {
            sip_round(&mut v);
        }
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

impl Dedup {
    /// Remembers the last `window` distinct keys; 0 turns de-duplication off. `seed` keys
    /// the index's hash: pass a value the stream's sender cannot know (the client's random
    /// seed), so crafted ids cannot be made to collide.
    pub fn new(window: usize, seed: u64) -> Self {
        let mut x = seed;
        Dedup {
            window,
            cap: window.min(MAX_WINDOW),
            ring: Vec::new(),
            oldest: 0,
            slots: Vec::new(),
            key: (splitmix(&mut x), splitmix(&mut x)),
        }
    }

    /// The keyed hash of a hit key.
    #[inline]
    fn hash(&self, key: HitKey) -> u64 {
        siphash13(self.key.0, self.key.1, key)
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
        let h = self.hash(key);
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

    /// Forgets every key and frees the memory (window and hash key are kept), for a client
    /// that is finished.
    pub fn release(&mut self) {
        self.ring = Vec::new();
        self.slots = Vec::new();
        self.oldest = 0;
    }

    /// Allocated capacity, in keys of the ring and in index slots (for memory-bound tests).
    #[doc(hidden)]
    pub fn allocated(&self) -> (usize, usize) {
        (self.ring.capacity(), self.slots.capacity())
    }

    /// Probe lengths of the index now: (longest, total) distance of a key's slot from its
    /// home bucket, over all remembered keys. A lookup costs about one more probe than the
    /// distance; a flooding attack shows up as a long longest and a large total (for tests
    /// and benches: deterministic, unlike timing).
    #[doc(hidden)]
    pub fn probe_stats(&self) -> (usize, usize) {
        let mask = self.slots.len().wrapping_sub(1);
        let (mut longest, mut total) = (0, 0);
        for (i, &s) in self.slots.iter().enumerate() {
            if s != 0 {
                let d = i.wrapping_sub(s as u32 as usize) & mask;
                longest = longest.max(d);
                total += d;
            }
        }
        (longest, total)
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
        let h = self.hash(self.ring[pos]);
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
        let mut d = Dedup::new(0, 1);
        assert!(d.insert(k(1, 1)));
        assert!(d.insert(k(1, 1)));
        assert!(d.is_empty());
        assert_eq!(d.window(), 0);
        assert_eq!(d.allocated(), (0, 0));
    }

    #[test]
    fn detects_duplicates_within_window_and_forgets_beyond() {
        let mut d = Dedup::new(3, 1);
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
        let mut d = Dedup::new(1, 1);
        assert!(d.insert(k(0, 0)));
        assert!(!d.insert(k(0, 0)));
        assert!(d.insert(k(0, 1)));
        assert!(d.insert(k(0, 0)));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn lazy_allocation() {
        let mut d = Dedup::new(1_000_000, 1);
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
            let mut d = Dedup::new(window, 7);
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

    /// The unkeyed hash before issue 13: `high * C ^ low`, then a fixed bijective mix.
    fn old_hash(key: HitKey) -> u64 {
        let mut x = key.high.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.low;
        x ^= x >> 32;
        x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
        x ^ (x >> 32)
    }

    /// Ids an attacker who knows the old code sends: all share one hash under it.
    fn crafted_against_old_hash(n: u64) -> Vec<HitKey> {
        (1..=n)
            .map(|i| k(i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef))
            .collect()
    }

    fn random_keys(n: usize, mut x: u64) -> Vec<HitKey> {
        (0..n)
            .map(|_| k(splitmix(&mut x), splitmix(&mut x)))
            .collect()
    }

    /// (longest, average) probe distance after inserting `keys` into a window as large.
    fn probes(keys: &[HitKey], seed: u64) -> (usize, f64) {
        let mut d = Dedup::new(keys.len(), seed);
        for &key in keys {
            assert!(d.insert(key));
        }
        let (longest, total) = d.probe_stats();
        (longest, total as f64 / keys.len() as f64)
    }

    #[test]
    fn crafted_ids_do_not_flood_the_index() {
        let n = 20_000;
        let crafted = crafted_against_old_hash(n as u64);
        let h0 = old_hash(crafted[0]);
        assert!(crafted.iter().all(|&c| old_hash(c) == h0), "crafting works");
        let families: Vec<(&str, Vec<HitKey>)> = vec![
            ("colliding under the old hash", crafted),
            (
                "low ids at multiples of 2^32",
                (0..n as u64).map(|i| k(0, i << 32)).collect(),
            ),
            (
                "high ids at multiples of 2^40",
                (0..n as u64).map(|i| k(i << 40, 0)).collect(),
            ),
            ("equal halves", (0..n as u64).map(|i| k(i, i)).collect()),
            ("sequential", (0..n as u64).map(|i| k(7, i)).collect()),
        ];
        let (random_longest, random_avg) = probes(&random_keys(n, 99), 42);
        for seed in [42, 0, u64::MAX] {
            for (name, keys) in &families {
                let (longest, avg) = probes(keys, seed);
                // Load factor <= 1/2: ~1 on average, a few dozen at most for random ids.
                assert!(
                    longest <= 4 * random_longest.max(16) && avg <= 3.0 * random_avg.max(0.5),
                    "{name} (seed {seed}): longest {longest}, average {avg:.2} against \
                     {random_longest} / {random_avg:.2} for random ids"
                );
            }
        }
    }

    #[test]
    fn ids_crafted_for_a_guessed_key_only_flood_that_key() {
        // An attacker who knows the algorithm but not the seed guesses one (0) and picks
        // ids whose hash under it falls in bucket 0 of every table up to 256 slots.
        let guess = Dedup::new(1, 0);
        let mut crafted = Vec::new();
        let mut x = 0u64;
        while crafted.len() < 4000 {
            let key = k(7, splitmix(&mut x));
            if guess.hash(key) & 0xff == 0 {
                crafted.push(key);
            }
        }
        let (random_longest, random_avg) = probes(&random_keys(crafted.len(), 5), 12345);
        // The probe stats see the flood when the guess is right (about 60 against 1)…
        let (longest, avg) = probes(&crafted, 0);
        assert!(
            longest > 4 * random_longest && avg > 20.0 * random_avg.max(0.5),
            "{longest} {avg} against {random_longest} / {random_avg:.2}"
        );
        // …and nothing when it is not.
        let (longest, avg) = probes(&crafted, 12345);
        assert!(
            longest <= 4 * random_longest.max(16) && avg <= 3.0 * random_avg.max(0.5),
            "longest {longest}, average {avg:.2} against {random_longest} / {random_avg:.2}"
        );
    }

    #[test]
    #[allow(deprecated)] // std's SipHasher (2-4) is deprecated, but exact: the reference.
    fn siphash_matches_std() {
        use std::hash::Hasher;
        let mut x = 1u64;
        for _ in 0..1000 {
            let (k0, k1) = (splitmix(&mut x), splitmix(&mut x));
            let key = k(splitmix(&mut x), splitmix(&mut x));
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(&key.high.to_le_bytes());
            h.write(&key.low.to_le_bytes());
            assert_eq!(siphash::<2, 4>(k0, k1, key), h.finish());
        }
        // The paper's key 00..0f: SipHash-2-4 of 00..0f per its reference test vectors.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
        h.write(&(0u8..16).collect::<Vec<_>>());
        assert_eq!(siphash::<2, 4>(k0, k1, k(k0, k1)), h.finish());
        // Different seeds, different hashes.
        let key = k(1, 2);
        assert_ne!(Dedup::new(1, 1).hash(key), Dedup::new(1, 2).hash(key));
    }

    #[test]
    fn release_frees_and_keeps_working() {
        let mut d = Dedup::new(100, 3);
        for i in 0..50 {
            d.insert(k(i, i));
        }
        d.release();
        assert_eq!(d.allocated(), (0, 0));
        assert!(d.is_empty());
        assert!(d.insert(k(1, 1)));
        assert!(!d.insert(k(1, 1)));
        assert_eq!(d.window(), 100);
    }

    #[test]
    fn clear_forgets() {
        let mut d = Dedup::new(10, 1);
        d.insert(k(1, 2));
        d.clear();
        assert!(d.is_empty());
        assert!(d.insert(k(1, 2)));
    }
}
