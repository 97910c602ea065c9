//! Skewed source mixes for the generator: Zipf-distributed ranks.
//!
//! Real traffic has a few heavy senders and a long tail; top-talker reports
//! only mean something on such a mix. [`Zipf`] draws ranks `0..n` with
//! probability proportional to `1 / (rank + 1)^s`, by Vose's alias method
//! (one random number and one table look-up a draw), from a seeded
//! generator: the same seed gives the same stream, so a test can count
//! exactly what was sent.

/// SplitMix64 (Steele, Lea and Flood, 2014): small, fast, and good enough
/// for choosing sources.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Ranks `0..n` drawn with Zipf's law of exponent `s`.
#[derive(Clone, Debug)]
pub struct Zipf {
    /// Per column: the chance (scaled to 2^32) of keeping the column's own
    /// rank rather than its alias.
    keep: Vec<u32>,
    alias: Vec<u32>,
    rng: SplitMix64,
}

impl Zipf {
    /// Ranks `0..n` (`n` at least 1, at most 2^32) with exponent `s` (at
    /// least 0; 0 is uniform), drawn from `seed`.
    pub fn new(n: u64, s: f64, seed: u64) -> Self {
        let n = n.clamp(1, 1 << 32) as usize;
        let weights: Vec<f64> = (0..n).map(|r| (r as f64 + 1.0).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        // Vose: scale to mean 1, pair each small column with a large one.
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut keep = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(&l), Some(&g)) = (small.last(), large.last()) {
            small.pop();
            keep[l] = (scaled[l] * 4_294_967_296.0).min(4_294_967_295.0) as u32;
            alias[l] = g as u32;
            scaled[g] -= 1.0 - scaled[l];
            if scaled[g] < 1.0 {
                large.pop();
                small.push(g);
            }
        }
        // What is left is 1 up to rounding: keep its own rank.
        Self {
            keep,
            alias,
            rng: SplitMix64::new(seed),
        }
    }

    /// The next rank.
    pub fn next_rank(&mut self) -> u64 {
        let r = self.rng.next_u64();
        let column = ((r >> 32) * self.keep.len() as u64) >> 32;
        let column = column as usize;
        if (r as u32) < self.keep[column] || self.keep[column] == u32::MAX {
            column as u64
        } else {
            u64::from(self.alias[column])
        }
    }
}

impl Iterator for Zipf {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        Some(self.next_rank())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_law() {
        let n = 1000;
        let draws = 2_000_000;
        let mut counts = vec![0u64; n];
        for r in Zipf::new(n as u64, 1.1, 7).take(draws) {
            counts[r as usize] += 1;
        }
        let h: f64 = (1..=n).map(|k| (k as f64).powf(-1.1)).sum();
        for rank in [0usize, 1, 9, 99] {
            let expected = draws as f64 * ((rank + 1) as f64).powf(-1.1) / h;
            let got = counts[rank] as f64;
            assert!(
                (got - expected).abs() < 5.0 * expected.sqrt() + 1.0,
                "rank {rank}: {got} against {expected}"
            );
        }
        // Heavier ranks first.
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let a: Vec<u64> = Zipf::new(100, 1.1, 3).take(1000).collect();
        let b: Vec<u64> = Zipf::new(100, 1.1, 3).take(1000).collect();
        let c: Vec<u64> = Zipf::new(100, 1.1, 4).take(1000).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn zero_exponent_is_uniform() {
        let mut counts = [0u64; 4];
        for r in Zipf::new(4, 0.0, 1).take(40_000) {
            counts[r as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}
