//! Clocks: the kernel's monotonic timestamps as wall-clock time, and a
//! nanosecond one-shot timer the reactor can wait on.

use std::time::Duration;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: an all-zero timespec is valid and clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; CLOCK_MONOTONIC and CLOCK_REALTIME always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now on `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Converts the kernel's monotonic timestamps to wall-clock time.
///
/// The offset between the two clocks is measured when made and on each
/// [`WallClock::resync`], so that NTP adjustments are followed.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock {
    /// Measures the offset now.
    pub fn new() -> Self {
        // Read monotonic on both sides of realtime and take the middle.
        let before = monotonic_ns();
        let real = clock_ns(libc::CLOCK_REALTIME);
        let after = monotonic_ns();
        let mono = before / 2 + after / 2;
        Self {
            offset_ns: i128::from(real) - i128::from(mono),
        }
    }

    /// Measures the offset again.
    pub fn resync(&mut self) {
        *self = Self::new();
    }

    /// The Unix time of a monotonic timestamp.
    pub fn unix(&self, monotonic_ns: u64) -> Duration {
        let ns = (i128::from(monotonic_ns) + self.offset_ns).max(0);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// A one-shot timer with nanosecond resolution, as a file descriptor that
/// becomes readable when it fires; tokio's own timers tick in milliseconds,
/// too coarse for delivery latencies measured in microseconds.
pub struct TimerFd(std::os::fd::OwnedFd);

impl TimerFd {
    /// A disarmed timer on `CLOCK_MONOTONIC`.
    ///
    /// # Errors
    ///
    /// When the kernel refuses a timerfd.
    pub fn new() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and owned by nothing else.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once, `after` from now (re-arming replaces the previous time).
    ///
    /// # Errors
    ///
    /// When the kernel refuses the setting.
    pub fn arm(&self, after: Duration) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec.
        if unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes the expiry so the descriptor stops being readable.
    pub fn clear(&self) {
        use std::os::fd::AsRawFd as _;
        let mut expirations = 0u64;
        // SAFETY: reads 8 bytes into a u64; EAGAIN (not expired) is fine.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut expirations).cast(), 8) };
    }
}

impl std::os::fd::AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_close_to_now() {
        let clock = WallClock::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let converted = clock.unix(monotonic_ns());
        let diff = converted.abs_diff(now);
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }
}
