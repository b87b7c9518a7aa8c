//! Time as the core sees it: an [`Instant`] on a monotonic clock that the host chooses, and
//! [`Duration`]s between instants. The core never reads a clock; every `handle_*` call says
//! what time it is, so tests run whole scenarios in virtual time.

use std::fmt;
use std::ops::{Add, Sub};

pub use std::time::Duration;

/// A point in time, in whole milliseconds since an origin the host picked (`performance.now()`
/// in a page, `tokio::time::Instant` minus the start in a native host). Only differences
/// between instants of the same host mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The host's origin of time.
    pub const ZERO: Instant = Instant(0);

    /// The instant `ms` milliseconds after the host's origin.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms)
    }

    /// Milliseconds since the host's origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this instant is (zero when it is not after it).
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Adds whole milliseconds, saturating at the end of time.
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(millis(d)))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Same as [`Instant::saturating_duration_since`].
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// A duration in whole milliseconds (saturating), the unit of every option.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration for messages, without floating-point formatting (which costs ~9 KB of .wasm):
/// `250 ms`, `1.5 s`, `60 s`, `4 min`, `2 min 30 s`, `3 h`.
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = millis(self.0);
        if ms < 1_000 {
            return write!(f, "{ms} ms");
        }
        if ms < 60_000 {
            // Tenths of a second, rounded.
            let tenths = (ms + 50) / 100;
            return match tenths % 10 {
                0 => write!(f, "{} s", tenths / 10),
                t => write!(f, "{}.{t} s", tenths / 10),
            };
        }
        let s = (ms + 500) / 1_000;
        if s < 3_600 {
            return match s % 60 {
                0 => write!(f, "{} min", s / 60),
                r => write!(f, "{} min {r} s", s / 60),
            };
        }
        let m = (s + 30) / 60;
        match m % 60 {
            0 => write!(f, "{} h", m / 60),
            r => write!(f, "{} h {r} min", m / 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_add_and_subtract_saturating() {
        let t = Instant::from_millis(1_000);
        assert_eq!((t + Duration::from_millis(500)).as_millis(), 1_500);
        assert_eq!(t - Instant::from_millis(400), Duration::from_millis(600));
        assert_eq!(Instant::from_millis(400) - t, Duration::ZERO);
        assert_eq!(
            (Instant::from_millis(u64::MAX) + Duration::from_secs(1)).as_millis(),
            u64::MAX
        );
    }

    #[test]
    fn human_durations() {
        let h = |ms| Human(Duration::from_millis(ms)).to_string();
        assert_eq!(h(0), "0 ms");
        assert_eq!(h(250), "250 ms");
        assert_eq!(h(1_000), "1 s");
        assert_eq!(h(1_540), "1.5 s");
        assert_eq!(h(59_960), "60 s");
        assert_eq!(h(60_000), "1 min");
        assert_eq!(h(150_000), "2 min 30 s");
        assert_eq!(h(600_000), "10 min");
        assert_eq!(h(3_600_000), "1 h");
        assert_eq!(h(5_400_000), "1 h 30 min");
        assert_eq!(h(86_400_000), "24 h");
    }
}
