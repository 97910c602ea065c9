//! When to read a source next: at once when a packet arrives while the rate
//! is low, in batches paced by the rate when it is high, or all the time.
//!
//! A wake-up costs the reader two context switches and the producer an IPI
//! (a VM exit under virtualisation): a few microseconds each. Waking for
//! every packet gives the lowest latency and is cheap at a few thousand
//! packets per second, but at hundreds of thousands it costs more than the
//! packets themselves. So the reader measures the rate it reads at and:
//!
//! - below [`LOW_RATE`], asks to be woken by the next packet (the XDP
//!   program's wake-up flag, or epoll on the AF_XDP sockets): delivery
//!   latency is the wake-up latency, tens of microseconds;
//! - above it, reads on a timer set so that a read finds about [`BATCH`]
//!   packets, never later than `--max-wait-us` and never after the buffer
//!   would be a quarter full at the measured rate: a few wake-ups per
//!   thousand packets, and no wake-up at all on the producer's side.
//!
//! The rate is measured over windows of 2 ms; batching starts after two
//! windows in a row above [`LOW_RATE`], with a first wait of 1 ms that
//! doubles at each read, so that one burst in a slow stream does not hold
//! its packets back for long. A timed read that finds nothing goes back to
//! waiting for a wake-up, so an idle source costs nothing. `--busy-poll`
//! reads without ever sleeping.

use std::time::Duration;

/// Below this many packets per second, every packet wakes the reader.
pub const LOW_RATE: f64 = 15_000.0;

/// Above [`LOW_RATE`], the number of packets a timed read aims to find.
///
/// Measured on the veth lab (release build, 64-byte frames to pcap), the
/// reader's CPU per packet at 50,000 packets/s was 321 ns reading every
/// 10 ms (500 packets a read) and 163 ns reading every 100 ms: a wake-up
/// after a sleep costs the reader about 80 µs here, mostly in refilling
/// caches and TLB the sleep let go cold (a VM's vCPU is halted meanwhile).
/// At full rate, 512 packets a read cost 230 ns a packet, 2,048 cost 160.
pub const BATCH: f64 = 4096.0;

/// The default bound on how long a packet waits while packets flow
/// (`--max-wait-us`).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(50);

/// The shortest wait between timed reads.
pub const MIN_WAIT: Duration = Duration::from_micros(20);

/// What the reader does after a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait until a packet wakes it (the source has asked to be woken).
    Woken,
    /// Read again after this long, woken or not.
    After(Duration),
    /// Read again at once (busy polling, or a packet arrived meanwhile).
    Now,
}

impl Next {
    /// The sooner of two.
    pub fn min(self, other: Next) -> Next {
        match (self, other) {
            (Next::Now, _) | (_, Next::Now) => Next::Now,
            (Next::After(a), Next::After(b)) => Next::After(a.min(b)),
            (Next::After(a), Next::Woken) | (Next::Woken, Next::After(a)) => Next::After(a),
            (Next::Woken, Next::Woken) => Next::Woken,
        }
    }
}

/// How a source is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Adapt to the rate, waiting at most this long while packets flow
    /// (zero: wake for every packet at any rate).
    Adaptive {
        /// `--max-wait-us`.
        max_wait: Duration,
    },
    /// `--busy-poll`: never sleep.
    Busy,
}

/// A source's reading pace: the rate it reads at, over windows of at
/// least [`WINDOW_NS`].
///
/// A window rather than a rate per read: packets come in bursts (a driver's
/// NAPI batch, a sender's `sendmmsg`), and a read in the middle of one would
/// take a burst for the rate.
#[derive(Clone, Debug)]
pub struct Pacer {
    mode: Mode,
    /// Packets the source's buffer holds, at the size packets have had.
    capacity: f64,
    /// The rate of the last complete window, packets per second.
    rate: f64,
    /// The rates of the last [`PEAK_WINDOWS`] windows, the newest at
    /// `windows % PEAK_WINDOWS`.
    recent: [f64; PEAK_WINDOWS],
    /// Complete windows so far.
    windows: usize,
    /// Packets read since the window started, and when it started.
    window_packets: u64,
    window_start: Option<u64>,
    /// Complete windows in a row whose rate was at least [`LOW_RATE`].
    windows_above: u32,
    batching: bool,
    /// While batching, the longest wait so far: it starts at
    /// [`FIRST_WAIT`] and doubles each timed read, so a mistaken switch
    /// (a sender that caught up on a late timer and sent a burst) costs a
    /// few milliseconds of latency, not `--max-wait-us`.
    ramp: Duration,
}

/// The shortest window the rate is measured over.
///
/// Until two windows have passed, a stream that starts at a high rate wakes
/// the reader for (nearly) every packet. With windows of 10 ms that start
/// cost the reader 6 to 7 ms of CPU per stream at 50,000 packets/s, 35 ns
/// a packet of a four-second capture; with 2 ms its CPU per packet at
/// 100,000/s fell from 165-170 to 140-153 ns (veth lab, alternating), and
/// the p99 at 10,000/s stayed where it was (39-65 against 43-73 µs).
pub const WINDOW_NS: u64 = 2_000_000;

/// Windows in a row above [`LOW_RATE`] before the reader starts batching.
pub const WINDOWS_TO_BATCH: u32 = 2;

/// Windows whose highest rate bounds the wait by the buffer's room.
///
/// One window can catch a pause of the sender (a veth sender waits out
/// backpressure) and measure a fraction of the rate; a wait sized by it
/// then lets the burst after the pause overflow a small buffer. With
/// windows of 2 ms and the last window's rate alone, the AF_XDP sockets'
/// rings (4,096 frames) lost frames in 3 of 70 runs at the AF_PACKET
/// sender's full rate, where windows of 10 ms lost none; bounded by the
/// highest rate of the last 10 ms, as here, none in 40.
pub const PEAK_WINDOWS: usize = 5;

/// The first wait after the reader starts batching.
pub const FIRST_WAIT: Duration = Duration::from_millis(1);

impl Pacer {
    /// A pacer for a buffer of `capacity` packets.
    pub fn new(mode: Mode, capacity: f64) -> Self {
        Self {
            mode,
            capacity,
            rate: 0.0,
            recent: [0.0; PEAK_WINDOWS],
            windows: 0,
            window_packets: 0,
            window_start: None,
            windows_above: 0,
            batching: false,
            ramp: FIRST_WAIT,
        }
    }

    /// Updates what the buffer holds, in packets of the size they have had.
    pub fn set_capacity(&mut self, capacity: f64) {
        self.capacity = capacity;
    }

    /// The rate of the last complete window, packets per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// After a read at `now_ns` (monotonic) that found `packets`: what to
    /// do next. [`Next::Woken`] means the caller must ask to be woken.
    pub fn after_read(&mut self, packets: u64, now_ns: u64) -> Next {
        let max_wait = match self.mode {
            Mode::Busy => return Next::Now,
            Mode::Adaptive { max_wait } => max_wait,
        };
        let start = *self.window_start.get_or_insert(now_ns);
        self.window_packets += packets;
        let elapsed = now_ns.saturating_sub(start);
        if elapsed >= WINDOW_NS {
            self.rate = self.window_packets as f64 * 1e9 / elapsed as f64;
            self.recent[self.windows % PEAK_WINDOWS] = self.rate;
            self.windows += 1;
            self.window_packets = 0;
            self.window_start = Some(now_ns);
            if self.rate >= LOW_RATE {
                self.windows_above += 1;
            } else {
                self.windows_above = 0;
            }
        }
        let rate = self.rate;
        // Hysteresis: start batching after WINDOWS_TO_BATCH windows above
        // LOW_RATE, stop below three quarters of it, so a rate near the line
        // or one burst does not flip the mode.
        let batching = if self.batching {
            rate >= LOW_RATE * 0.75
        } else {
            self.windows_above >= WINDOWS_TO_BATCH
        };
        if !batching || !self.batching {
            self.ramp = FIRST_WAIT;
        }
        self.batching = batching;
        if packets == 0 || !self.batching || max_wait.is_zero() {
            return Next::Woken;
        }
        let peak = self.recent.iter().fold(rate, |a, &b| a.max(b));
        let wait = Duration::from_secs_f64(
            (BATCH / rate)
                .min(self.capacity / 4.0 / peak)
                .min(max_wait.as_secs_f64()),
        )
        .min(self.ramp)
        .max(MIN_WAIT);
        self.ramp = (self.ramp * 2).min(max_wait);
        Next::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads at `rate` for 1 s, as the pacer asks; its last answer.
    fn steady(pacer: &mut Pacer, rate: f64) -> Next {
        let start = 1_000_000_000u64;
        let mut now = start;
        let mut next = Next::Woken;
        while now < start + 1_000_000_000 {
            let gap = match next {
                Next::After(d) => d.as_secs_f64(),
                _ => 1.0 / rate,
            };
            now += (gap * 1e9) as u64;
            let packets = (gap * rate).round().max(1.0) as u64;
            next = pacer.after_read(packets, now);
        }
        next
    }

    fn adaptive() -> Pacer {
        Pacer::new(
            Mode::Adaptive {
                max_wait: Duration::from_millis(100),
            },
            100_000.0,
        )
    }

    #[test]
    fn low_rates_wake_for_every_packet() {
        assert_eq!(steady(&mut adaptive(), 10_000.0), Next::Woken);
    }

    #[test]
    fn high_rates_read_in_batches_paced_by_the_rate() {
        let Next::After(d) = steady(&mut adaptive(), 100_000.0) else {
            panic!("expected a timed read");
        };
        // About BATCH packets per read.
        let per_read = d.as_secs_f64() * 100_000.0;
        assert!((BATCH * 0.8..BATCH * 1.2).contains(&per_read), "{per_read}");
    }

    #[test]
    fn the_wait_keeps_the_buffer_under_a_quarter_full_and_under_the_maximum() {
        let mut p = Pacer::new(
            Mode::Adaptive {
                max_wait: Duration::from_millis(10),
            },
            1_000.0,
        );
        let Next::After(d) = steady(&mut p, 1_000_000.0) else {
            panic!("expected a timed read");
        };
        assert!(d.as_secs_f64() * 1_000_000.0 <= 250.0 + 1.0, "{d:?}");
        let mut p = adaptive();
        let Next::After(d) = steady(&mut p, 25_000.0) else {
            panic!("expected a timed read");
        };
        assert!(d <= Duration::from_millis(100) + MIN_WAIT, "{d:?}");
    }

    #[test]
    fn a_burst_at_a_low_rate_does_not_make_the_reader_wait_long() {
        let mut p = adaptive();
        let mut now = 1_000_000_000u64;
        // 10,000/s, one packet a read, but for one window of 5,000.
        for i in 0..200u64 {
            now += 100_000;
            let packets = if i == 100 { 5_000 } else { 1 };
            match p.after_read(packets, now) {
                Next::Woken | Next::Now => {}
                Next::After(d) => panic!("read {i}: a wait of {d:?} after one burst"),
            }
        }
    }

    #[test]
    fn the_first_waits_after_the_switch_are_short() {
        let mut p = adaptive();
        let mut now = 1_000_000_000u64;
        let mut waits = Vec::new();
        for _ in 0..400 {
            now += 100_000;
            if let Next::After(d) = p.after_read(20, now) {
                waits.push(d);
            }
        }
        assert_eq!(waits.first(), Some(&FIRST_WAIT), "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] <= w[0] * 2), "{waits:?}");
    }

    #[test]
    fn a_window_that_caught_a_pause_does_not_stretch_the_wait_past_the_room() {
        let mut p = Pacer::new(
            Mode::Adaptive {
                max_wait: Duration::from_millis(50),
            },
            2_048.0,
        );
        steady(&mut p, 200_000.0);
        // The sender slowed: the next read, 100 ms after the steady
        // stream's last (which ended near 2 s), finds a tenth of the rate,
        // still above the batching threshold.
        let Next::After(d) = p.after_read(2_000, 2_100_000_000) else {
            panic!("still batching");
        };
        assert!(p.rate() < 25_000.0, "the slow window was measured");
        // A quarter of the room at the rate of the windows before, not at
        // the tenth: 512 frames at 200,000/s.
        assert!(d <= Duration::from_micros(2_600), "{d:?}");
    }

    #[test]
    fn a_read_that_finds_nothing_waits_for_a_wake_up() {
        let mut p = adaptive();
        steady(&mut p, 200_000.0);
        assert_eq!(p.after_read(0, 2_000_000_000), Next::Woken);
    }

    #[test]
    fn busy_polling_never_sleeps_and_zero_max_wait_always_wakes() {
        let mut p = Pacer::new(Mode::Busy, 1.0);
        assert_eq!(p.after_read(0, 1), Next::Now);
        let mut p = Pacer::new(
            Mode::Adaptive {
                max_wait: Duration::ZERO,
            },
            40_000.0,
        );
        assert_eq!(steady(&mut p, 500_000.0), Next::Woken);
    }
}
