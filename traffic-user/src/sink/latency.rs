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
        }
    }

    /// Records one latency; values outside 1 ns..60 s are clamped.
    pub fn record(&mut self, ns: u64) {
        let ns = ns.clamp(1, MAX_NS);
        // Within bounds after the clamp, so recording cannot fail.
        let _ = self.interval.record(ns);
    }

    /// The interval's percentiles; starts a new interval.
    pub fn take_interval(&mut self) -> Percentiles {
        let p = percentiles(&self.interval);
        // Same bounds, so adding cannot fail.
        let _ = self.total.add(&self.interval);
        self.interval.reset();
        p
    }

    /// The whole run's percentiles, the current interval included.
    pub fn total(&self) -> Percentiles {
        percentiles(&self.total_histogram())
    }

    /// The whole run's histogram, the current interval included, for plots.
    pub fn total_histogram(&self) -> Histogram<u64> {
        let mut total = self.total.clone();
        // Same bounds, so adding cannot fail.
        let _ = total.add(&self.interval);
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
}
