//! The one clock of the relayer: [`Clock`], with the [`SystemClock`] every process uses and
//! the [`ManualClock`] tests set by hand. The rate limiter's in-memory counters, the circuit
//! breakers, the order saga's lease and recovery read the time through it, so the arithmetic
//! around them can be tested without sleeping.
//!
//! A clock has two readings: wall time in ms since the Unix epoch ([`Clock::now_ms`], for
//! what is stored or compared across processes: windows, leases) and a monotonic
//! [`Instant`] ([`Clock::now`], for durations inside one process: a breaker's open time). The
//! system clock's `Instant` is tokio's, so `tokio::time::pause` moves it in tests too.
//!
//! Room: the first of the relayer; it uses no other module of the crate.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Source of the current time, injected so time-dependent code can be tested without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A monotonic reading, for durations within this process.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// A clock that moves only when told to, for tests. Its monotonic reading moves with its wall
/// reading: the instant it was made plus how far the wall reading is past its first one.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
    /// The reading it was made with, and the `Instant` of that moment.
    origin: (u64, Instant),
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::at(0)
    }
}

impl ManualClock {
    /// A clock reading `ms`.
    pub fn at(ms: u64) -> Self {
        Self {
            ms: AtomicU64::new(ms),
            origin: (ms, Instant::now()),
        }
    }

    /// Sets the time to `ms` (it may go back, as a stepped system clock can).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }

    fn now(&self) -> Instant {
        let (origin_ms, origin) = self.origin;
        origin + Duration::from_millis(self.now_ms().saturating_sub(origin_ms))
    }
}

/// Milliseconds since the Unix epoch on the system clock (0 before the epoch).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(250);
        assert_eq!(clock.now_ms(), 1_250);
        let later = clock.now();
        clock.set(10);
        assert_eq!(clock.now_ms(), 10);
        assert!(
            clock.now() < later,
            "the monotonic reading follows the clock back"
        );
        clock.advance(2_000);
        assert_eq!(clock.now() - later, Duration::from_millis(760));
    }

    #[test]
    fn the_system_clock_is_past_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
