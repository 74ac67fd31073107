//! The backoff schedule every retry loop of the workspace uses: exponential growth from an
//! initial delay to a cap, with optional full jitter. Pure (no clock, no randomness of its own:
//! the caller passes the uniform draw), and built without the `server` feature so the operator
//! shares it.
//!
//! - [`RetryPolicy`]: the settings and the delay before retry `n`;
//! - [`Backoff`]: a cursor over that schedule for loops that wait, try and wait longer.
//!
//! Room: part of `resilience/`; uses nothing else of the crate.

use std::time::Duration;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Upper bound of the first delay.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Growth of the bound per retry.
    pub backoff_multiplier: f64,
    /// Full jitter (true) or the bound itself (false).
    pub jitter: bool,
}

impl RetryPolicy {
    const fn strategy(max_retries: u32, initial_ms: u64, max_ms: u64) -> Self {
        Self {
            max_retries,
            initial_delay: Duration::from_millis(initial_ms),
            max_delay: Duration::from_millis(max_ms),
            backoff_multiplier: 2.0,
            jitter: true,
        }
    }

    /// Idempotent, latency-sensitive calls: 3 retries, 100 ms to 1 s.
    pub const FAST: Self = Self::strategy(3, 100, 1_000);
    /// General purpose: 3 retries, 1 s to 10 s.
    pub const STANDARD: Self = Self::strategy(3, 1_000, 10_000);
    /// External services: 5 retries, 2 s to 60 s.
    pub const SLOW: Self = Self::strategy(5, 2_000, 60_000);
    /// On-chain operations: 5 retries, 3 s to 30 s.
    pub const BLOCKCHAIN: Self = Self::strategy(5, 3_000, 30_000);

    /// A strategy by its seed name: `fast`, `standard`, `slow`, `blockchain`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "fast" => Some(Self::FAST),
            "standard" => Some(Self::STANDARD),
            "slow" => Some(Self::SLOW),
            "blockchain" => Some(Self::BLOCKCHAIN),
            _ => None,
        }
    }

    /// The upper bound of the delay before retry `retry` (0-based).
    pub fn bound(&self, retry: u32) -> Duration {
        let exp = self
            .backoff_multiplier
            .max(1.0)
            .powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let bound = self.initial_delay.as_secs_f64() * exp;
        if !bound.is_finite() || bound >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(bound)
        }
    }

    /// The delay before retry `retry`, with `unit` a uniform draw from `[0, 1)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let bound = self.bound(retry);
        if self.jitter {
            bound.mul_f64(unit.clamp(0.0, 1.0))
        } else {
            bound
        }
    }
}

/// A cursor over a policy's schedule (without jitter): each [`Backoff::next_delay`] returns the
/// bound of the next retry, growing to `max_delay`; [`Backoff::reset`] starts again.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    retry: u32,
}

impl Backoff {
    /// Doubling from `initial` to `max`, no jitter.
    pub const fn doubling(initial: Duration, max: Duration) -> Self {
        Self {
            policy: RetryPolicy {
                max_retries: u32::MAX,
                initial_delay: initial,
                max_delay: max,
                backoff_multiplier: 2.0,
                jitter: false,
            },
            retry: 0,
        }
    }

    /// The delay to wait now; the next call returns the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.policy.bound(self.retry);
        self.retry = self.retry.saturating_add(1);
        delay
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.retry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doubling_cursor_grows_to_its_cap_and_starts_again_after_a_reset() {
        let mut backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_millis(500));
        let seen: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(seen, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn a_cursor_never_overflows_however_long_it_runs() {
        let mut backoff = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..10_000 {
            assert!(backoff.next_delay() <= Duration::from_secs(300));
        }
    }
}
