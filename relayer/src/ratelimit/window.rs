//! Sliding-window arithmetic: pure, clock passed in.
//!
//! # Algorithm: bucketed sliding window, counted conservatively
//!
//! A window of `W` ms is split into `N` buckets of `w = ceil(W / N)` ms. Bucket `i` holds the
//! requests admitted in `[i·w, (i+1)·w)`. At time `t`, with `b = floor(t / w)`, the estimate is
//! the sum of buckets `b-N ..= b`, which cover `[(b-N)·w, (b+1)·w)`, a superset of the exact
//! sliding window `(t-W, t]`. A request is admitted when `estimate + 1 <= L`.
//!
//! Guarantees, against an exact sliding log of window `W`:
//! - **Never more than `L` in any window of length `W`**: the estimate is never below the exact
//!   count, so there is no over-admission at all, boundary bursts included.
//! - **At most `w = W/N` late in giving quota back**: the only requests the estimate counts
//!   beyond the exact log are those in the oldest bucket, older than `W` but younger than
//!   `W + w`. So the limiter behaves as an exact sliding log whose window lies between `W` and
//!   `W·(1 + 1/N)`; with the default `N = 10`, at most 10 % longer.
//! - Memory is `N + 1` counters per key, independent of `L`.
//!
//! The Redis store runs the same arithmetic in Lua (`ratelimit.lua`); the tests hold both to
//! it.
//!
//! Room: part of `ratelimit/`; uses nothing else of the crate.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// One tier's limit as the arithmetic needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Window length in ms.
    pub window_ms: u64,
    /// Requests admitted per window.
    pub limit: u64,
    /// Buckets per window (precision).
    pub buckets: u64,
}

impl Spec {
    /// Bucket width in ms (at least 1).
    pub fn bucket_ms(&self) -> u64 {
        self.window_ms.div_ceil(self.buckets.max(1)).max(1)
    }
}

/// Counters of one key: `(bucket index, count)`, oldest first, only buckets still counted.
/// Inline up to the default 10 buckets (plus the one being filled), so a key's counters sit
/// beside the key rather than behind another pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    buckets: SmallVec<[(u64, u64); 11]>,
    /// The sum of the buckets' counts.
    total: u64,
}

/// What one key's check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Admitted by this tier.
    pub allowed: bool,
    /// Requests counted after this decision (this one included when allowed).
    pub count: u64,
    /// The tier's limit.
    pub limit: u64,
    /// `limit - count`, never below 0.
    pub remaining: u64,
    /// Ms until one more request would be admitted (0 when it would be now).
    pub retry_after_ms: u64,
    /// Ms until every counted request has left the window.
    pub reset_ms: u64,
}

impl Window {
    /// Drops buckets that no longer count at `now`.
    pub fn prune(&mut self, spec: &Spec, now_ms: u64) {
        let oldest = (now_ms / spec.bucket_ms()).saturating_sub(spec.buckets);
        // NB: oldest first, so the buckets that left form a prefix (usually empty).
        let gone = self.buckets.iter().take_while(|(i, _)| *i < oldest).count();
        if gone > 0 {
            let left: u64 = self.buckets.drain(..gone).map(|(_, c)| c).sum();
            self.total = self.total.saturating_sub(left);
        }
    }

    /// The conservative estimate at `now` (call [`Window::prune`] first).
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Whether nothing is counted any more (the key can be forgotten).
    pub fn is_idle(&self, spec: &Spec, now_ms: u64) -> bool {
        let oldest = (now_ms / spec.bucket_ms()).saturating_sub(spec.buckets);
        self.buckets.last().is_none_or(|(i, _)| *i < oldest)
    }

    /// Counts one request at `now`.
    pub fn record(&mut self, spec: &Spec, now_ms: u64) {
        let current = now_ms / spec.bucket_ms();
        match self.buckets.last_mut() {
            // NB: a clock that stepped back counts into the newest bucket, which keeps the
            // buckets in order and the request counted at least as long as it should be.
            Some((i, c)) if *i >= current => *c += 1,
            _ => self.buckets.push((current, 1)),
        }
        self.total += 1;
    }

    /// The outcome of a check at `now`, before (`allowed` decided) and after counting.
    pub fn outcome(&self, spec: &Spec, now_ms: u64, admitted: bool) -> Outcome {
        let count = self.count();
        let w = spec.bucket_ms();
        // Bucket i stops counting at time (i + N + 1)·w.
        let leaves = |i: u64| ((i + spec.buckets + 1) * w).saturating_sub(now_ms);
        let retry_after_ms = if count < spec.limit {
            0
        } else {
            // Drop buckets oldest first until one more request fits.
            let mut left = count;
            let mut at = 0;
            for (i, c) in &self.buckets {
                left -= c;
                at = leaves(*i);
                if left < spec.limit {
                    break;
                }
            }
            at
        };
        Outcome {
            allowed: admitted,
            count,
            limit: spec.limit,
            remaining: spec.limit.saturating_sub(count),
            retry_after_ms,
            reset_ms: self.buckets.last().map_or(0, |(i, _)| leaves(*i)),
        }
    }
}

/// Phase one of a decision: drops what left the window and says whether this tier admits one
/// more request at `now`.
pub fn admits(window: &mut Window, spec: &Spec, now_ms: u64) -> bool {
    window.prune(spec, now_ms);
    window.count() < spec.limit
}

/// Phase two: counts the request when every tier admitted it, and reports this tier's outcome.
/// A tier that would itself have admitted reports `allowed` even when another tier denied.
pub fn settle(window: &mut Window, spec: &Spec, now_ms: u64, admitted: bool) -> Outcome {
    if admitted {
        window.record(spec, now_ms);
    }
    let mut outcome = window.outcome(spec, now_ms, admitted);
    outcome.allowed = admitted || outcome.count < spec.limit;
    outcome
}

/// Checks every `(window, spec)` and counts the request in all of them only if all admit it:
/// a request denied by one tier consumes no quota of the others.
pub fn check_all(windows: &mut [(&mut Window, Spec)], now_ms: u64) -> Vec<Outcome> {
    let mut admitted = true;
    for (window, spec) in windows.iter_mut() {
        admitted &= admits(window, spec, now_ms);
    }
    windows
        .iter_mut()
        .map(|(window, spec)| settle(window, spec, now_ms, admitted))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SPEC: Spec = Spec {
        window_ms: 60_000,
        limit: 100,
        buckets: 10,
    };

    fn admit(window: &mut Window, spec: Spec, now: u64) -> Outcome {
        check_all(&mut [(window, spec)], now)[0]
    }

    /// Exact sliding log of the admitted requests, for comparison.
    fn exact_count(log: &[u64], spec: &Spec, now: u64) -> u64 {
        log.iter().filter(|t| **t + spec.window_ms > now).count() as u64
    }

    #[test]
    fn admits_up_to_the_limit_then_denies() {
        let mut w = Window::default();
        for i in 0..100 {
            let o = admit(&mut w, SPEC, 1_000);
            assert!(o.allowed, "request {i}");
            assert_eq!(o.remaining, 99 - i);
        }
        let o = admit(&mut w, SPEC, 1_000);
        assert!(!o.allowed);
        assert_eq!(o.remaining, 0);
        // Everything sits in bucket 0, which stops counting at (0 + 10 + 1) * 6000 ms.
        assert_eq!(o.retry_after_ms, 66_000 - 1_000);
        assert_eq!(o.reset_ms, 65_000);
    }

    #[test]
    fn a_burst_at_the_window_boundary_does_not_get_twice_the_limit() {
        // L requests just before a fixed window would roll over, then L just after: a fixed
        // window admits 2L within a few ms; the sliding window admits only L.
        let mut w = Window::default();
        let admitted_before = (0..100)
            .filter(|_| admit(&mut w, SPEC, 59_999).allowed)
            .count();
        let admitted_after = (0..100)
            .filter(|_| admit(&mut w, SPEC, 60_001).allowed)
            .count();
        assert_eq!(admitted_before, 100);
        assert_eq!(admitted_after, 0);
    }

    #[test]
    fn quota_returns_as_the_window_slides() {
        let mut w = Window::default();
        for _ in 0..50 {
            admit(&mut w, SPEC, 0);
        }
        for _ in 0..50 {
            admit(&mut w, SPEC, 30_000);
        }
        assert!(!admit(&mut w, SPEC, 59_000).allowed);
        // The first 50 (bucket 0) stop counting at 66 s; the next 50 (bucket 5) at 96 s.
        assert!(!admit(&mut w, SPEC, 65_999).allowed);
        let o = admit(&mut w, SPEC, 66_000);
        assert!(o.allowed);
        assert_eq!(o.count, 51);
    }

    proptest! {
        // NB: each case is 5,000 arrivals over five windows; a few dozen such runs cover the
        // boundaries well without slowing the suite.
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn never_admits_more_than_the_exact_log_and_lags_it_by_at_most_one_bucket(
            mut times in prop::collection::vec(0u64..300_000, 5_000)
        ) {
            times.sort_unstable();
            let mut w = Window::default();
            let mut log: Vec<u64> = Vec::new();
            let longer = Spec {
                window_ms: SPEC.window_ms + SPEC.bucket_ms(),
                ..SPEC
            };
            for t in times {
                let exact_before = exact_count(&log, &SPEC, t);
                let o = admit(&mut w, SPEC, t);
                if o.allowed {
                    log.push(t);
                    prop_assert!(exact_before < SPEC.limit, "over-admitted at {}", t);
                } else {
                    // Denied only when an exact log with a window one bucket longer is full.
                    prop_assert!(
                        exact_count(&log, &longer, t) >= SPEC.limit,
                        "denied at {} without cause",
                        t
                    );
                }
                prop_assert!(exact_count(&log, &SPEC, t) <= SPEC.limit);
                prop_assert_eq!(w.count(), w.buckets.iter().map(|(_, c)| c).sum::<u64>());
            }
        }
    }

    #[test]
    fn a_clock_that_steps_back_keeps_requests_counted_in_order() {
        let mut w = Window::default();
        assert!(admit(&mut w, SPEC, 30_000).allowed);
        // The clock steps back by more than a bucket: counted in the newest bucket.
        let o = admit(&mut w, SPEC, 10_000);
        assert_eq!(o.count, 2);
        assert_eq!(w.buckets.as_slice(), &[(5, 2)]);
        // Both leave together, when the newest bucket does: (5 + 10 + 1) * 6000 ms.
        w.prune(&SPEC, 95_999);
        assert_eq!(w.count(), 2);
        assert!(w.is_idle(&SPEC, 96_000));
        assert_eq!(admit(&mut w, SPEC, 96_000).count, 1);
    }

    #[test]
    fn a_denial_by_one_tier_consumes_no_quota_of_the_others() {
        let tight = Spec {
            window_ms: 1_000,
            limit: 1,
            buckets: 10,
        };
        let (mut a, mut b) = (Window::default(), Window::default());
        let first = check_all(&mut [(&mut a, SPEC), (&mut b, tight)], 0);
        assert!(first.iter().all(|o| o.allowed));
        let second = check_all(&mut [(&mut a, SPEC), (&mut b, tight)], 1);
        assert!(second[0].allowed, "the loose tier alone would admit");
        assert!(!second[1].allowed);
        assert_eq!(
            second[0].count, 1,
            "nothing counted in the loose tier for a denied request"
        );
    }
}
