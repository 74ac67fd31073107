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
//! [`DueQueue`] keeps keys in the order they fall due, for the tables that forget what
//! finished a retention ago (the in-memory store, the embedded settlement ledger).
//!
//! Room: the first of the relayer; it uses no other module of the crate.

use std::collections::VecDeque;
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

/// Keys in the order they were queued, each with the instant it falls due: with a constant
/// retention that is due order, so the front is always the next one due.
///
/// Kept in chunks of [`DueQueue::CHUNK`] entries, so that growing never copies the queue: a
/// queue of every order of a retention (hundreds of thousands) would otherwise be moved
/// whole, under its table's lock, each time it doubles.
#[derive(Debug)]
pub struct DueQueue<K> {
    chunks: VecDeque<VecDeque<(Instant, K)>>,
}

impl<K> Default for DueQueue<K> {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
        }
    }
}

impl<K> DueQueue<K> {
    /// Entries per chunk.
    pub const CHUNK: usize = 1024;

    /// Queues `key` to fall due at `due` (nothing when `None`: never).
    pub fn push(&mut self, due: Option<Instant>, key: K) {
        let Some(due) = due else { return };
        match self.chunks.back_mut() {
            Some(last) if last.len() < Self::CHUNK => last.push_back((due, key)),
            _ => {
                let mut chunk = VecDeque::with_capacity(Self::CHUNK);
                chunk.push_back((due, key));
                self.chunks.push_back(chunk);
            }
        }
    }

    /// Takes the first entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let first = self.chunks.front_mut()?;
        if first.front().is_none_or(|(due, _)| *due > now) {
            return None;
        }
        let entry = first.pop_front();
        if first.is_empty() {
            self.chunks.pop_front();
        }
        entry
    }

    /// How many entries are queued (due or not).
    pub fn len(&self) -> usize {
        self.chunks.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_queue_pops_in_order_only_what_is_due_across_chunks() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut q = DueQueue::default();
        let n = DueQueue::<u64>::CHUNK as u64 * 2 + 5;
        for i in 0..n {
            q.push(Some(at(i)), i);
        }
        q.push(None, u64::MAX);
        assert_eq!(
            q.len() as u64,
            n,
            "a key that never falls due is not queued"
        );
        assert_eq!(
            q.pop_due(t0 - Duration::from_millis(1)),
            None,
            "nothing due yet"
        );
        let popped: Vec<u64> =
            std::iter::from_fn(|| q.pop_due(at(n / 2)).map(|(_, k)| k)).collect();
        assert_eq!(popped, (0..=n / 2).collect::<Vec<_>>());
        let rest: Vec<u64> = std::iter::from_fn(|| q.pop_due(at(n)).map(|(_, k)| k)).collect();
        assert_eq!(rest, (n / 2 + 1..n).collect::<Vec<_>>());
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        q.push(Some(at(1)), 7);
        assert_eq!(
            q.pop_due(at(1)),
            Some((at(1), 7)),
            "usable again once drained"
        );
    }

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
