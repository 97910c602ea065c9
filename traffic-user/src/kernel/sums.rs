//! Packets and bytes per source, summed from the kernel's logs of sources
//! ([`traffic_common::top`]): an open-addressing table that takes a batch
//! of sources at a time and asks for the memory of each before it touches
//! any.
//!
//! A general hash map finds each source with one dependent load that, on a
//! host busy capturing, misses the cache: the event ring and the pcap
//! buffer stream through it between two readings of the logs. Summing a
//! batch in two passes, the first hashing every source and prefetching its
//! slot, the second counting, keeps many of those misses in flight at once
//! instead of one.

use traffic_common::{Count, TopKey};

/// Sources hashed and prefetched before the first of them is counted.
const BATCH: usize = 32;

/// One slot: a source and its counts; no packets means free.
#[derive(Clone, Copy, Default)]
struct Slot {
    key: TopKey,
    count: Count,
}

/// Sources and their counts, at most `capacity` of them; more are summed
/// as untracked.
pub struct SourceSums {
    slots: Vec<Slot>,
    /// The slots in use, in the order they were taken: read and freed
    /// without a walk over the whole table.
    used: Vec<u32>,
    /// Sources kept at most.
    capacity: usize,
    /// From a seed drawn once per process: whoever sends chooses the
    /// addresses, and without the seed cannot choose them to collide.
    seed: u64,
    /// Frames of sources that found no room, since the table was made.
    untracked: Count,
}

impl SourceSums {
    /// An empty table that keeps up to `capacity` sources at a time.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: vec![Slot::default(); 16],
            used: Vec::new(),
            capacity: capacity.max(1),
            seed: process_seed(),
            untracked: Count::default(),
        }
    }

    /// Sources in the table.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether the table holds no source.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Frames whose source found the table full, since it was made.
    pub fn untracked(&self) -> Count {
        self.untracked
    }

    /// Counts each of `frames` (a source and a frame's bytes) once.
    pub fn add_all(&mut self, frames: &[(TopKey, u64)]) {
        for chunk in frames.chunks(BATCH) {
            // Room for the whole batch first, so that no slot moves between
            // its prefetch and its use.
            self.reserve(chunk.len());
            let mask = self.slots.len() - 1;
            let mut at = [0usize; BATCH];
            for (i, (key, _)) in chunk.iter().enumerate() {
                at[i] = self.hash(key) as usize & mask;
                prefetch(&self.slots[at[i]]);
            }
            for (i, &(key, bytes)) in chunk.iter().enumerate() {
                self.add_at(at[i], key, bytes);
            }
        }
    }

    /// Hands each source and its counts to `each`, then empties the table.
    pub fn drain(&mut self, each: &mut dyn FnMut(&TopKey, Count)) {
        for &i in &self.used {
            let slot = &mut self.slots[i as usize];
            each(&slot.key, slot.count);
            *slot = Slot::default();
        }
        self.used.clear();
    }

    fn hash(&self, key: &TopKey) -> u64 {
        let w = key.words;
        let hi = (u64::from(w[0]) << 32) | u64::from(w[1]);
        let lo = (u64::from(w[2]) << 32) | u64::from(w[3]);
        let h = ((hi ^ self.seed).rotate_left(29) ^ lo).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }

    /// Counts a frame of `bytes` for `key`, looking from slot `at` on.
    fn add_at(&mut self, mut at: usize, key: TopKey, bytes: u64) {
        let mask = self.slots.len() - 1;
        loop {
            let slot = &mut self.slots[at];
            if slot.count.packets == 0 {
                break;
            }
            if slot.key == key {
                slot.count.packets += 1;
                slot.count.bytes += bytes;
                return;
            }
            at = (at + 1) & mask;
        }
        let count = Count { packets: 1, bytes };
        if self.used.len() >= self.capacity {
            self.untracked.add(&count);
            return;
        }
        self.slots[at] = Slot { key, count };
        self.used.push(at as u32);
    }

    /// Makes room for `more` sources at half load at most (short probes),
    /// within what the capacity can ever need.
    fn reserve(&mut self, more: usize) {
        let want = (self.used.len() + more).min(self.capacity);
        if want * 2 <= self.slots.len() {
            return;
        }
        let size = (want * 2).next_power_of_two();
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        let used = std::mem::take(&mut self.used);
        let mask = size - 1;
        for i in used {
            let slot = old[i as usize];
            let mut at = self.hash(&slot.key) as usize & mask;
            while self.slots[at].count.packets != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = slot;
            self.used.push(at as u32);
        }
    }
}

/// Asks for the cache line of `slot`, without waiting for it.
#[inline(always)]
fn prefetch(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing the program sees and
    // cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(slot).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// Hashes sources by a multiply-and-fold of their words, a fraction of
/// SipHash's cost, from a seed drawn once per process: source addresses
/// are chosen by whoever sends, and without the seed they cannot be chosen
/// to collide.
#[derive(Clone, Copy, Debug)]
pub struct BuildKeyHasher(u64);

impl Default for BuildKeyHasher {
    fn default() -> Self {
        Self(process_seed())
    }
}

/// The seed of this process's source hashes ([`SourceSums`],
/// [`BuildKeyHasher`]), drawn once from the standard library's random keys.
fn process_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| std::hash::RandomState::new().build_hasher().finish())
}

/// The state of [`BuildKeyHasher`]: the words of one key, folded.
pub struct KeyHasher(u64);

impl std::hash::BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    /// A key's words come as one slice of bytes (`[u32; 4]` hashes its
    /// bytes whole): folded eight at a time, two rounds for an address.
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.write_u64(u64::from_le_bytes(w.try_into().expect("eight bytes")));
        }
        for b in words.remainder() {
            self.write_u8(*b);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write_u64(u64::from(b));
    }

    fn write_u32(&mut self, w: u32) {
        self.write_u64(u64::from(w));
    }

    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(29) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, w: usize) {
        self.write_u64(w as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{SourceSums, TopKey};
    use traffic_common::Count;

    fn key(i: u32) -> TopKey {
        TopKey::v4(0xf000_0000 | i)
    }

    #[test]
    fn sums_every_frame_of_every_source_and_grows() {
        let mut sums = SourceSums::new(1 << 20);
        let mut want: HashMap<TopKey, Count> = HashMap::new();
        let mut frames = Vec::new();
        // Sources appear and repeat across batches and growths.
        for i in 0..50_000u32 {
            let k = key((i * 7919) % 20_011);
            let bytes = u64::from(60 + i % 1400);
            frames.push((k, bytes));
            let c = want.entry(k).or_default();
            c.add(&Count { packets: 1, bytes });
        }
        for part in frames.chunks(999) {
            sums.add_all(part);
        }
        assert_eq!(sums.len(), want.len());
        let mut got = HashMap::new();
        sums.drain(&mut |k, c| assert!(got.insert(*k, c).is_none()));
        assert_eq!(got, want);
        assert!(sums.is_empty());
        assert_eq!(sums.untracked(), Count::default());
        // Emptied, it counts anew.
        sums.add_all(&[(key(1), 10), (key(1), 5)]);
        let mut again = Vec::new();
        sums.drain(&mut |k, c| again.push((*k, c)));
        assert_eq!(
            again,
            [(
                key(1),
                Count {
                    packets: 2,
                    bytes: 15
                }
            )]
        );
    }

    #[test]
    fn a_full_table_counts_new_sources_untracked_and_keeps_counting_its_own() {
        let mut sums = SourceSums::new(3);
        let frames: Vec<_> = (0..10u32).map(|i| (key(i % 5), 100)).collect();
        sums.add_all(&frames);
        assert_eq!(sums.len(), 3);
        let mut got = HashMap::new();
        sums.drain(&mut |k, c| {
            got.insert(*k, c.packets);
        });
        // The first three sources, each seen twice; the other two's four
        // frames untracked.
        assert_eq!(got, (0..3).map(|i| (key(i), 2)).collect());
        assert_eq!(
            sums.untracked(),
            Count {
                packets: 4,
                bytes: 400
            }
        );
    }
}
