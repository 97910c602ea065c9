//! Delivery latency: from the XDP hook to the moment userspace reads the
//! event, in HDR histograms (2 significant digits, 1 ns to 60 s).
//!
//! Each packet is recorded once, in the interval's histogram, which is
//! added to the run's at the end of the interval. Two significant digits
//! (1% resolution, enough for a percentile of a latency) keep the
//! histogram at 28 KiB, in the CPU's cache: with three, its 220 KiB of
//! counters spread over the cache and recording cost a cache miss a packet.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The percentiles reported, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Events measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// Latencies of the current interval and of the whole run.
pub struct Latency {
    interval: Histogram<u64>,
    total: Histogram<u64>,
    /// Latencies of one histogram bucket not yet recorded: consecutive
    /// packets of a batch mostly fall in the same bucket (at 2 significant
    /// digits a bucket of a 10 ms latency is 100 µs wide), and counting them
    /// here costs a comparison where recording each cost a lookup.
    run: Run,
    /// The sum of every latency recorded, in nanoseconds (for Prometheus'
    /// `_sum`).
    sum_ns: u128,
}

/// Consecutive latencies in one bucket, `lo..=hi`.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    lo: u64,
    hi: u64,
    value: u64,
    count: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

const MAX_NS: u64 = 60_000_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 2).expect("valid histogram bounds")
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

impl Latency {
    /// Empty histograms.
    pub fn new() -> Self {
        Self {
            interval: histogram(),
            total: histogram(),
            run: Run::default(),
            sum_ns: 0,
        }
    }

    /// The sum of every latency recorded so far, in seconds.
    pub fn sum_s(&self) -> f64 {
        self.sum_ns as f64 * 1e-9
    }

    /// Records one latency; values outside 1 ns..60 s are clamped.
    pub fn record(&mut self, ns: u64) {
        let ns = ns.clamp(1, MAX_NS);
        self.sum_ns += u128::from(ns);
        let run = &mut self.run;
        if run.count > 0 && (run.lo..=run.hi).contains(&ns) {
            run.count += 1;
            return;
        }
        self.flush_run();
        self.run = Run {
            lo: self.interval.lowest_equivalent(ns),
            hi: self.interval.highest_equivalent(ns),
            value: ns,
            count: 1,
        };
    }

    /// Records the run of latencies of one bucket.
    fn flush_run(&mut self) {
        if self.run.count > 0 {
            // Within bounds (clamped when it was taken): cannot fail.
            let _ = self.interval.record_n(self.run.value, self.run.count);
            self.run.count = 0;
        }
    }

    /// The interval's percentiles; starts a new interval.
    pub fn take_interval(&mut self) -> Percentiles {
        self.flush_run();
        let p = percentiles(&self.interval);
        // Same bounds, so adding cannot fail.
        let _ = self.total.add(&self.interval);
        self.interval.reset();
        p
    }

    /// The run's histogram up to the end of the last interval
    /// ([`Latency::take_interval`]).
    pub fn run_histogram(&self) -> &Histogram<u64> {
        &self.total
    }

    /// The whole run's percentiles, the current interval included.
    pub fn total(&self) -> Percentiles {
        percentiles(&self.total_histogram())
    }

    /// The whole run's histogram, the current interval included, for plots.
    pub fn total_histogram(&self) -> Histogram<u64> {
        let mut total = self.total.clone();
        // Same bounds, so adding and recording cannot fail.
        let _ = total.add(&self.interval);
        if self.run.count > 0 {
            let _ = total.record_n(self.run.value, self.run.count);
        }
        total
    }
}

impl Latency {
    /// Records a packet's delivery latency, when it is known.
    pub fn record_packet(&mut self, packet: &crate::source::Captured<'_>) {
        if let Some(ns) = packet.latency_ns {
            self.record(ns);
        }
    }
}

impl super::Sink for Latency {
    fn packet(&mut self, packet: &crate::source::Captured<'_>) -> Result<(), super::SinkError> {
        self.record_packet(packet);
        Ok(())
    }

    fn is_output(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_data() {
        let mut l = Latency::new();
        for ns in 1..=1000 {
            l.record(ns * 1000);
        }
        let p = l.take_interval();
        assert_eq!(p.count, 1000);
        assert!((495_000..=505_000).contains(&p.p50), "{p:?}");
        assert!((980_000..=1_000_000).contains(&p.p99), "{p:?}");
        assert!((990_000..=1_010_000).contains(&p.max), "{p:?}");
        assert_eq!(l.take_interval(), Percentiles::default());
        assert_eq!(l.total().count, 1000);
        l.record(5);
        assert_eq!(l.total().count, 1001, "the open interval counts");
    }

    #[test]
    fn runs_of_one_bucket_count_as_each_value_would() {
        let mut runs = Latency::new();
        let mut each = histogram();
        // Descending latencies, as in a batch read at one time, some runs
        // long, crossing bucket edges, with outliers between.
        let values: Vec<u64> = (0..5000u64)
            .map(|i| 10_000_000 - i * 1_700)
            .chain([1, 5, 60_000_000_000, 123_456])
            .chain((0..300u64).map(|i| 20_000 + (i % 7) * 3_000))
            .collect();
        for &v in &values {
            runs.record(v);
            each.record(v).unwrap();
        }
        let want = percentiles(&each);
        assert_eq!(runs.total(), want, "before the interval ends");
        assert_eq!(runs.take_interval(), want);
        assert_eq!(runs.total(), want, "after");
    }
}
