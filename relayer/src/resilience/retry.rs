//! Retries with exponential backoff and full jitter, bounded by a retry budget.
//!
//! The delay before retry `n` (0-based) is drawn uniformly from `[0, min(maxDelay,
//! initialDelay × multiplier^n)]` ("full jitter"; without jitter it is the upper bound). A
//! `Retry-After` the server sent raises the delay to at least that much; one longer than
//! `maxDelay` ends the retries instead (waiting that long is the caller's decision, not ours).
//!
//! The [`RetryBudget`] caps retries at a share of calls (default 20 %) plus a small floor per
//! second, so during an outage retries cannot multiply the load on the failing service.
//!
//! Room: part of `resilience/`; uses the `resilience` modules `backoff` and `config` only.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

pub use super::backoff::RetryPolicy;

/// HTTP statuses worth retrying: 408, 429, 500, 502, 503, 504.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Whether a `reqwest` error is a network failure (connect, timeout, broken body) rather than
/// an answer.
pub fn is_network_error(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
}

/// Parses `Retry-After` in its delay-seconds form.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// What the retry loop needs to know of an error.
pub trait Retryable {
    /// Whether another attempt may succeed.
    fn is_retryable(&self) -> bool;
    /// A delay the server asked for (`Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Token bucket that pays for retries: every call deposits `ratio` tokens, every retry spends
/// one, and `floor_per_second` tokens accrue with time (up to a cap) so a quiet service can
/// still retry.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor_per_second: f64,
    cap: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    /// Retries at most `ratio` of calls (e.g. 0.2) plus `floor_per_second`.
    pub fn new(ratio: f64, floor_per_second: f64) -> Self {
        let cap = (floor_per_second * 10.0).max(10.0);
        Self {
            ratio,
            floor_per_second,
            cap,
            state: Mutex::new((cap, Instant::now())),
        }
    }

    fn refill(&self, state: &mut (f64, Instant), now: Instant) {
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.floor_per_second).min(self.cap);
        state.1 = now;
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut s, Instant::now());
        s.0 = (s.0 + self.ratio).min(self.cap);
    }

    /// Spends one token for a retry, if there is one.
    pub fn try_withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut s, Instant::now());
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(0.2, 1.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

/// Retry metrics, registered once and shared.
#[derive(Debug, Clone)]
pub struct RetryMetrics {
    attempts: Family<OperationLabel, Counter>,
    duration: Family<OperationLabel, Histogram, fn() -> Histogram>,
}

fn duration_ms() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 18))
}

impl RetryMetrics {
    /// Registers `foresight_retry_attempts_total` and `foresight_retry_duration_ms`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            attempts: Family::default(),
            duration: Family::new_with_constructor(duration_ms),
        };
        registry.register(
            "foresight_retry_attempts",
            "Retries made (not counting first attempts)",
            m.attempts.clone(),
        );
        registry.register(
            "foresight_retry_duration_ms",
            "Time from the first attempt to the last, for operations that retried",
            m.duration.clone(),
        );
        m
    }
}

/// Why the retry loop stopped with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The error is not retryable.
    NotRetryable,
    /// `maxRetries` reached.
    Exhausted,
    /// The retry budget is spent.
    BudgetExhausted,
    /// The server asked for a longer wait than `maxDelay`.
    RetryAfterTooLong,
}

/// Runs operations under a policy, a budget and metrics.
#[derive(Debug, Clone)]
pub struct Retrier {
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
    metrics: Option<RetryMetrics>,
}

impl Retrier {
    /// A retrier.
    pub fn new(
        policy: RetryPolicy,
        budget: Arc<RetryBudget>,
        metrics: Option<RetryMetrics>,
    ) -> Self {
        Self {
            policy,
            budget,
            metrics,
        }
    }

    /// Its policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Calls `op` until it succeeds or the policy, the budget or the error says stop.
    /// `on_retry(error, retry, delay)` is told before each wait.
    pub async fn run<T, E, F, Fut>(
        &self,
        operation: &str,
        mut op: F,
        mut on_retry: impl FnMut(&E, u32, Duration),
    ) -> Result<T, (E, GaveUp)>
    where
        E: Retryable,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.budget.deposit();
        let started = Instant::now();
        let mut retry = 0;
        let result = loop {
            let error = match op(retry).await {
                Ok(v) => break Ok(v),
                Err(e) => e,
            };
            let gave_up = if !error.is_retryable() {
                Some(GaveUp::NotRetryable)
            } else if retry >= self.policy.max_retries {
                Some(GaveUp::Exhausted)
            } else if error
                .retry_after()
                .is_some_and(|ra| ra > self.policy.max_delay)
            {
                Some(GaveUp::RetryAfterTooLong)
            } else if !self.budget.try_withdraw() {
                Some(GaveUp::BudgetExhausted)
            } else {
                None
            };
            if let Some(why) = gave_up {
                break Err((error, why));
            }
            let mut delay = self.policy.delay(retry, rand::random::<f64>());
            if let Some(ra) = error.retry_after() {
                delay = delay.max(ra);
            }
            on_retry(&error, retry + 1, delay);
            if let Some(m) = &self.metrics {
                m.attempts
                    .get_or_create(&OperationLabel {
                        operation: operation.to_owned(),
                    })
                    .inc();
            }
            tokio::time::sleep(delay).await;
            retry += 1;
        };
        if retry > 0
            && let Some(m) = &self.metrics
        {
            m.duration
                .get_or_create(&OperationLabel {
                    operation: operation.to_owned(),
                })
                .observe(started.elapsed().as_secs_f64() * 1000.0);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Err503(Option<Duration>);

    impl Retryable for Err503 {
        fn is_retryable(&self) -> bool {
            true
        }
        fn retry_after(&self) -> Option<Duration> {
            self.0
        }
    }

    #[derive(Debug)]
    struct Err400;

    impl Retryable for Err400 {
        fn is_retryable(&self) -> bool {
            false
        }
    }

    proptest! {
        #[test]
        fn every_strategy_keeps_each_delay_within_its_bounds(
            which in 0usize..4, retry in 0u32..12, unit in 0.0f64..1.0
        ) {
            let policy = [RetryPolicy::FAST, RetryPolicy::STANDARD, RetryPolicy::SLOW, RetryPolicy::BLOCKCHAIN][which];
            let delay = policy.delay(retry, unit);
            prop_assert!(delay <= policy.max_delay);
            prop_assert!(delay <= policy.bound(retry));
            let expected = policy.initial_delay.as_secs_f64() * 2f64.powi(i32::try_from(retry).unwrap_or(0));
            prop_assert!((policy.bound(retry).as_secs_f64() - expected.min(policy.max_delay.as_secs_f64())).abs() < 1e-9);
            let fixed = RetryPolicy { jitter: false, ..policy };
            prop_assert_eq!(fixed.delay(retry, unit), fixed.bound(retry));
        }
    }

    #[test]
    fn strategies_have_the_seed_numbers() {
        let p = |name| {
            RetryPolicy::named(name).map(|p| {
                (
                    p.max_retries,
                    p.initial_delay.as_millis(),
                    p.max_delay.as_millis(),
                )
            })
        };
        assert_eq!(p("fast"), Some((3, 100, 1_000)));
        assert_eq!(p("standard"), Some((3, 1_000, 10_000)));
        assert_eq!(p("slow"), Some((5, 2_000, 60_000)));
        assert_eq!(p("blockchain"), Some((5, 3_000, 30_000)));
    }

    #[test]
    fn jitter_spreads_delays_over_the_whole_range() {
        let policy = RetryPolicy::STANDARD;
        let delays: Vec<f64> = (0..1_000)
            .map(|_| policy.delay(2, rand::random()).as_secs_f64())
            .collect();
        let bound = policy.bound(2).as_secs_f64();
        let low = delays.iter().filter(|d| **d < bound / 4.0).count();
        let high = delays.iter().filter(|d| **d > bound * 3.0 / 4.0).count();
        // Uniform: about 250 in each quarter; far from all-equal delays.
        assert!(low > 150 && high > 150, "low {low} high {high}");
    }

    #[test]
    fn retryable_statuses_are_the_seed_list() {
        let retryable: Vec<u16> = (100..600).filter(|s| is_retryable_status(*s)).collect();
        assert_eq!(retryable, vec![408, 429, 500, 502, 503, 504]);
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_honours_retry_after() {
        let retrier = Retrier::new(RetryPolicy::FAST, Arc::new(RetryBudget::default()), None);
        let mut waits = Vec::new();
        let started = Instant::now();
        let result = retrier
            .run(
                "op",
                |attempt| async move {
                    if attempt < 2 {
                        Err(Err503(Some(Duration::from_millis(900))))
                    } else {
                        Ok(attempt)
                    }
                },
                |_, _, delay| waits.push(delay),
            )
            .await;
        assert_eq!(result.ok(), Some(2));
        assert_eq!(waits.len(), 2);
        assert!(
            waits.iter().all(|d| *d >= Duration::from_millis(900)),
            "{waits:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(1_800));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_errors_that_are_not_retryable_and_on_long_retry_after() {
        let retrier = Retrier::new(RetryPolicy::FAST, Arc::new(RetryBudget::default()), None);
        let r = retrier
            .run("op", |_| async { Err::<(), _>(Err400) }, |_, _, _| {})
            .await;
        assert!(matches!(r, Err((Err400, GaveUp::NotRetryable))));
        let r = retrier
            .run(
                "op",
                |_| async { Err::<(), _>(Err503(Some(Duration::from_secs(5)))) },
                |_, _, _| {},
            )
            .await;
        assert!(matches!(r, Err((_, GaveUp::RetryAfterTooLong))));
        let r = retrier
            .run("op", |_| async { Err::<(), _>(Err503(None)) }, |_, _, _| {})
            .await;
        assert!(matches!(r, Err((_, GaveUp::Exhausted))));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_retries_during_an_outage() {
        // A budget of 20 % with no floor and an empty bucket: 100 failing calls may retry
        // about 20 times in all, not 300.
        let budget = Arc::new(RetryBudget::new(0.2, 0.0));
        while budget.try_withdraw() {}
        let retrier = Retrier::new(RetryPolicy::FAST, budget, None);
        let mut retries = 0;
        for _ in 0..100 {
            let _ = retrier
                .run(
                    "op",
                    |_| async { Err::<(), _>(Err503(None)) },
                    |_, _, _| retries += 1,
                )
                .await;
        }
        assert!((15..=21).contains(&retries), "{retries} retries");
    }
}
