//! Top talkers: the sources with the most packets, per interval and over
//! the run, in bounded memory.
//!
//! The kernel counts packets and bytes per source (or `--top-prefix`
//! prefix) in a per-CPU hash of `--top-capacity` entries, one of two: each
//! interval the session switches the program to the other map, waits until
//! no packet can still be counting into the first, and reads and empties
//! it. A source that finds the map full is counted as untracked (in the
//! totals, in no source), so an interval's counts are exact for every
//! source listed, and the report says how many packets were not placed.
//!
//! Over the run, sources are kept in a Space-Saving summary (Metwally,
//! Agrawal and El Abbadi, 2005) of the same capacity: when it is full, a
//! new source takes the place of the one with the fewest packets and
//! inherits its count as an error bound. A source never displaced has an
//! exact count (error 0); every count is at most its error too high, and
//! any source with more packets than the smallest count kept is listed.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::IpAddr,
};

use traffic_common::{Count, TopKey};

use crate::{
    kernel::sums::BuildKeyHasher,
    rules::RuleSet,
    sink::json::{TopReport, TopRow},
};

/// A source's address, as a report writes it: the address, or the prefix
/// with `--top-prefix`.
pub fn source_text(key: &TopKey, prefix_v4: u8, prefix_v6: u8) -> String {
    let addr = key_addr(key);
    let (len, full) = match addr {
        IpAddr::V4(_) => (prefix_v4, 32),
        IpAddr::V6(_) => (prefix_v6, 128),
    };
    if len >= full {
        addr.to_string()
    } else {
        format!("{addr}/{len}")
    }
}

/// The address of a key.
pub fn key_addr(key: &TopKey) -> IpAddr {
    key.addr()
}

/// One source kept over the run.
#[derive(Clone, Copy, Debug, Default)]
struct Kept {
    count: Count,
    /// At most this many of `count.packets` belong to sources displaced.
    error: u64,
}

/// A Space-Saving summary of sources by packets, of fixed capacity.
#[derive(Debug)]
pub struct SpaceSaving {
    capacity: usize,
    kept: HashMap<TopKey, Kept, BuildKeyHasher>,
    /// Candidates for the smallest: (packets when pushed, key); stale ones
    /// (the source counted more since, or left) are skipped when popped.
    heap: BinaryHeap<Reverse<(u64, TopKey)>>,
    /// Whether a source was ever displaced.
    displaced: bool,
}

impl SpaceSaving {
    /// An empty summary keeping at most `capacity` sources.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            kept: HashMap::default(),
            heap: BinaryHeap::new(),
            displaced: false,
        }
    }

    /// Adds `count` to source `key`.
    pub fn add(&mut self, key: TopKey, count: Count) {
        if let Some(k) = self.kept.get_mut(&key) {
            k.count.add(&count);
            self.heap.push(Reverse((k.count.packets, key)));
        } else if self.kept.len() < self.capacity {
            self.kept.insert(key, Kept { count, error: 0 });
            self.heap.push(Reverse((count.packets, key)));
        } else {
            let (min_key, min) = self.pop_min();
            self.displaced = true;
            let mut kept = Kept {
                count: min.count,
                error: min.count.packets,
            };
            kept.count.add(&count);
            self.kept.remove(&min_key);
            self.heap.push(Reverse((kept.count.packets, key)));
            self.kept.insert(key, kept);
        }
        if self.heap.len() > 4 * self.capacity + 64 {
            self.heap = self
                .kept
                .iter()
                .map(|(k, v)| Reverse((v.count.packets, *k)))
                .collect();
        }
    }

    /// The kept source with the fewest packets.
    fn pop_min(&mut self) -> (TopKey, Kept) {
        while let Some(Reverse((packets, key))) = self.heap.pop() {
            if let Some(k) = self.kept.get(&key)
                && k.count.packets == packets
            {
                return (key, *k);
            }
        }
        // The heap always holds a current entry for each kept source.
        let (key, k) = self
            .kept
            .iter()
            .min_by_key(|(_, k)| k.count.packets)
            .expect("a full summary has entries");
        (*key, *k)
    }

    /// The `n` sources with the most packets, with their error bounds.
    fn top(&self, n: usize) -> Vec<(TopKey, Kept)> {
        let mut all: Vec<(TopKey, Kept)> = self.kept.iter().map(|(k, v)| (*k, *v)).collect();
        sort(&mut all, |k| k.count.packets);
        all.truncate(n);
        all
    }
}

/// Most packets first, then by address, so that ties come in a stable order.
fn sort<T>(v: &mut [(TopKey, T)], packets: impl Fn(&T) -> u64) {
    v.sort_by(|a, b| busier(a, b, &packets));
}

/// The order of [`sort`].
fn busier<T>(a: &(TopKey, T), b: &(TopKey, T), packets: impl Fn(&T) -> u64) -> std::cmp::Ordering {
    packets(&b.1)
        .cmp(&packets(&a.1))
        .then_with(|| key_addr(&a.0).cmp(&key_addr(&b.0)))
}

/// Top talkers for a run.
pub struct TopTally {
    n: usize,
    prefix_v4: u8,
    prefix_v6: u8,
    run: SpaceSaving,
    /// Packets of the run placed in no source, and their bytes.
    untracked: Count,
    /// Packets of the run, placed or not.
    counted: u64,
}

impl TopTally {
    /// Reports of the `n` busiest sources, keeping `capacity` over the run.
    pub fn new(n: usize, capacity: usize, prefix_v4: u8, prefix_v6: u8) -> Self {
        Self {
            n,
            prefix_v4,
            prefix_v6,
            run: SpaceSaving::new(capacity),
            untracked: Count::default(),
            counted: 0,
        }
    }

    /// The report of one interval, from every source the kernel counted in
    /// it (`sources`), `untracked` more, of `total` packets counted.
    pub fn interval(
        &mut self,
        mut sources: Vec<(TopKey, Count)>,
        untracked: Count,
        total: u64,
        rules: &RuleSet,
    ) -> TopReport {
        // Busiest first when the summary may fill, so that heavy sources
        // take the room before light ones would push them out.
        if self.run.kept.len() + sources.len() > self.run.capacity {
            sort(&mut sources, |c| c.packets);
        }
        for (key, count) in &sources {
            self.run.add(*key, *count);
            self.counted += count.packets;
        }
        self.untracked.add(&untracked);
        self.counted += untracked.packets;
        let tracked = sources.len() as u64;
        // Only the first n are reported: put them first, then in order.
        if sources.len() > self.n && self.n > 0 {
            sources.select_nth_unstable_by(self.n - 1, |a, b| busier(a, b, |c| c.packets));
            sources.truncate(self.n);
        }
        sort(&mut sources, |c| c.packets);
        sources.truncate(self.n);
        let rows = sources
            .iter()
            .map(|(key, count)| self.row(key, *count, 0, total, rules))
            .collect();
        TopReport {
            sources: rows,
            tracked,
            untracked_packets: untracked.packets,
            untracked_bytes: untracked.bytes,
            exact: untracked.packets == 0,
        }
    }

    /// Packets counted over the run, placed in a source or not.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// The report of the run, of `total` packets counted.
    pub fn summary(&self, total: u64, rules: &RuleSet) -> TopReport {
        let rows = self
            .run
            .top(self.n)
            .into_iter()
            .map(|(key, kept)| self.row(&key, kept.count, kept.error, total, rules))
            .collect::<Vec<_>>();
        TopReport {
            exact: self.untracked.packets == 0 && !self.run.displaced,
            sources: rows,
            tracked: self.run.kept.len() as u64,
            untracked_packets: self.untracked.packets,
            untracked_bytes: self.untracked.bytes,
        }
    }

    fn row(&self, key: &TopKey, count: Count, error: u64, total: u64, rules: &RuleSet) -> TopRow {
        let addr = key_addr(key);
        let (rule, action) = match rules.lookup(addr) {
            Some((_, r)) => (r.cidr.to_string(), r.action),
            None => ("default".to_owned(), rules.default_action()),
        };
        TopRow {
            source: source_text(key, self.prefix_v4, self.prefix_v6),
            packets: count.packets,
            bytes: count.bytes,
            share: if total > 0 {
                count.packets as f64 / total as f64
            } else {
                0.0
            },
            rule,
            action,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> TopKey {
        TopKey::v4(0xc000_0200 + i)
    }

    fn count(p: u64) -> Count {
        Count {
            packets: p,
            bytes: p * 100,
        }
    }

    #[test]
    fn space_saving_is_exact_while_it_has_room() {
        let mut s = SpaceSaving::new(10);
        for i in 0..10 {
            s.add(key(i), count(u64::from(i) + 1));
            s.add(key(i), count(1));
        }
        let top = s.top(3);
        assert_eq!(
            top.iter()
                .map(|(k, v)| (*k, v.count.packets, v.error))
                .collect::<Vec<_>>(),
            [(key(9), 11, 0), (key(8), 10, 0), (key(7), 9, 0)]
        );
        assert!(!s.displaced);
    }

    #[test]
    fn space_saving_keeps_heavy_sources_exact_and_bounds_the_rest() {
        // Zipf-like: source i sends 1000 / (i + 1) packets, in rounds, many
        // more sources than room.
        let mut s = SpaceSaving::new(64);
        let truth = |i: u32| 1000 / (u64::from(i) + 1);
        for round in 0..10u64 {
            for i in 0..1000u32 {
                let share = truth(i) / 10 + u64::from(round < truth(i) % 10);
                if share > 0 {
                    s.add(key(i), count(share));
                }
            }
        }
        let top = s.top(10);
        for (rank, (k, v)) in top.iter().enumerate() {
            assert_eq!(*k, key(rank as u32), "rank {rank}");
            assert!(v.count.packets >= truth(rank as u32));
            assert!(v.count.packets - v.error <= truth(rank as u32));
        }
        // The heaviest were never displaced.
        assert_eq!(top[0].1.error, 0);
        assert_eq!(top[0].1.count.packets, 1000);
        assert!(s.displaced);
    }

    #[test]
    fn sources_are_written_as_addresses_or_prefixes() {
        assert_eq!(source_text(&key(1), 32, 128), "192.0.2.1");
        assert_eq!(
            source_text(&TopKey::v4(0xc000_0200), 24, 128),
            "192.0.2.0/24"
        );
        let v6 = TopKey {
            words: [0x2001_0db8, 0, 0, 0],
        };
        assert_eq!(source_text(&v6, 32, 64), "2001:db8::/64");
        assert_eq!(source_text(&v6, 32, 128), "2001:db8::");
    }
}
