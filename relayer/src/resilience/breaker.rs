//! Circuit breaker: CLOSED → OPEN → HALF_OPEN → CLOSED, with a pure core and an async shell.
//!
//! [`BreakerCore`] is the state machine: it takes the time as an argument and returns
//! decisions, so every transition is tested without sleeping. [`CircuitBreaker`] wraps it for
//! async calls: a per-call timeout, an error classifier, an optional fallback, and metrics; it
//! reads the time from a [`Clock`] (the system clock unless [`CircuitBreaker::with_clock`]).
//!
//! Room: part of `resilience/`; uses [`crate::clock`] and the `resilience` config.
//!
//! Transitions:
//! - CLOSED → OPEN when `failureThreshold` calls in a row failed, or when, over the sliding
//!   `window` with at least `minRequests` calls, the failure share reaches
//!   `errorRateThreshold` or the share of calls slower than `slowCallDurationThreshold` reaches
//!   `slowCallRateThreshold`.
//! - OPEN → HALF_OPEN once `openDuration` has passed (on the next call).
//! - HALF_OPEN admits at most `halfOpenMaxCalls` probes at once; `successThreshold` successes
//!   close it, any failure opens it again for another `openDuration`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::time::Instant;

pub use super::config::BreakerConfig;
use crate::clock::{Clock, SystemClock};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Calls pass.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A few probe calls pass.
    HalfOpen,
}

impl State {
    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// How a call ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// Succeeded (or failed in a way the classifier does not count).
    Success,
    /// Failed.
    Failure,
}

/// Ticket for one admitted call; hand it back with the result.
#[derive(Debug)]
#[must_use = "report the call's result with BreakerCore::on_result"]
pub struct Permit {
    probe: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    failed: bool,
    slow: bool,
}

/// The pure state machine.
#[derive(Debug)]
pub struct BreakerCore {
    config: BreakerConfig,
    state: State,
    /// Consecutive failures while CLOSED.
    consecutive_failures: u32,
    /// When OPEN ends.
    open_until: Option<Instant>,
    /// Probes in flight while HALF_OPEN.
    probes_in_flight: u32,
    /// Successful probes while HALF_OPEN.
    probe_successes: u32,
    /// Calls of the last `window`, oldest first (CLOSED only).
    samples: VecDeque<Sample>,
    /// Why it last opened, for stats.
    last_trip: Option<String>,
}

impl BreakerCore {
    /// A CLOSED breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            consecutive_failures: 0,
            open_until: None,
            probes_in_flight: 0,
            probe_successes: 0,
            samples: VecDeque::new(),
            last_trip: None,
        }
    }

    /// The state at `now` (OPEN turns HALF_OPEN once its time is up).
    pub fn state(&mut self, now: Instant) -> State {
        if self.state == State::Open && self.open_until.is_some_and(|until| now >= until) {
            self.state = State::HalfOpen;
            self.probes_in_flight = 0;
            self.probe_successes = 0;
        }
        self.state
    }

    /// Admits a call, or `None` when it must be rejected.
    pub fn try_acquire(&mut self, now: Instant) -> Option<Permit> {
        match self.state(now) {
            State::Closed => Some(Permit { probe: false }),
            State::Open => None,
            State::HalfOpen if self.probes_in_flight < self.config.half_open_max_calls => {
                self.probes_in_flight += 1;
                Some(Permit { probe: true })
            }
            State::HalfOpen => None,
        }
    }

    /// Records an admitted call's result and duration.
    pub fn on_result(&mut self, now: Instant, permit: Permit, result: CallResult, took: Duration) {
        let failed = result == CallResult::Failure;
        if permit.probe {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
            if self.state != State::HalfOpen {
                return;
            }
            if failed {
                self.trip(now, "a half-open probe failed".to_owned());
            } else {
                self.probe_successes += 1;
                if self.probe_successes >= self.config.success_threshold {
                    self.close();
                }
            }
            return;
        }
        if self.state != State::Closed {
            // A call admitted before the breaker opened: its result is stale.
            return;
        }
        let slow = took >= Duration::from_millis(self.config.slow_call_duration_threshold);
        self.samples.push_back(Sample {
            at: now,
            failed,
            slow,
        });
        self.prune(now);
        self.consecutive_failures = if failed {
            self.consecutive_failures + 1
        } else {
            0
        };
        if self.consecutive_failures >= self.config.failure_threshold {
            let n = self.consecutive_failures;
            self.trip(now, format!("{n} consecutive failures"));
            return;
        }
        let calls = self.samples.len();
        if calls >= self.config.min_requests as usize {
            // NB: window sizes are far below 2^53.
            #[allow(clippy::cast_precision_loss)]
            let share = |n: usize| n as f64 / calls as f64;
            let failures = share(self.samples.iter().filter(|s| s.failed).count());
            let slow = share(self.samples.iter().filter(|s| s.slow).count());
            if failures >= self.config.error_rate_threshold {
                self.trip(now, format!("error rate {failures:.2} over {calls} calls"));
            } else if slow >= self.config.slow_call_rate_threshold {
                self.trip(now, format!("slow-call rate {slow:.2} over {calls} calls"));
            }
        }
    }

    /// Releases a permit without a result (the call was cancelled).
    pub fn release(&mut self, permit: Permit) {
        if permit.probe {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn prune(&mut self, now: Instant) {
        let window = Duration::from_millis(self.config.window);
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > window)
        {
            self.samples.pop_front();
        }
    }

    fn trip(&mut self, now: Instant, why: String) {
        self.state = State::Open;
        self.open_until = Some(now + Duration::from_millis(self.config.open_duration));
        self.samples.clear();
        self.consecutive_failures = 0;
        self.probe_successes = 0;
        self.last_trip = Some(why);
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.open_until = None;
        self.samples.clear();
        self.consecutive_failures = 0;
        self.probe_successes = 0;
    }

    /// Calls and failures in the current window.
    pub fn window_counts(&self) -> (usize, usize) {
        (
            self.samples.len(),
            self.samples.iter().filter(|s| s.failed).count(),
        )
    }
}

/// Why a guarded call did not return the operation's value.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker is open (or its half-open probes are taken): the call was not made.
    #[error("circuit breaker {0} is open")]
    Open(String),
    /// The call took longer than the breaker's timeout.
    #[error("call through circuit breaker {0} timed out")]
    Timeout(String),
    /// The operation failed.
    #[error(transparent)]
    Inner(E),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    name: String,
    result: &'static str,
}

/// The breakers' metrics, shared by a registry.
#[derive(Debug, Clone)]
struct BreakerMetrics {
    state: Family<NameLabel, Gauge>,
    calls: Family<CallLabels, Counter>,
    latency: Family<NameLabel, Histogram, fn() -> Histogram>,
}

fn latency_ms() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl BreakerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            state: Family::default(),
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_ms),
        };
        registry.register(
            "foresight_circuit_breaker_state",
            "Breaker state: 0 closed, 1 open, 2 half-open",
            m.state.clone(),
        );
        registry.register(
            "foresight_circuit_breaker_calls",
            "Calls through breakers by result (success, failure, timeout, rejected, fallback)",
            m.calls.clone(),
        );
        registry.register(
            "foresight_circuit_breaker_latency_ms",
            "Duration of calls made through breakers, in ms",
            m.latency.clone(),
        );
        m
    }
}

/// Statistics of one breaker (`GET /admin/breakers`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStats {
    /// Name.
    pub name: String,
    /// State now.
    pub state: State,
    /// Calls in the current window.
    pub window_calls: usize,
    /// Failures in the current window.
    pub window_failures: usize,
    /// Why it last opened.
    pub last_trip: Option<String>,
}

/// A named breaker for async calls.
pub struct CircuitBreaker {
    name: String,
    core: Mutex<BreakerCore>,
    timeout: Duration,
    metrics: Option<BreakerMetrics>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<BreakerCore>) -> MutexGuard<'_, BreakerCore> {
    // NB: every transition completes inside one critical section; a poisoned lock still holds a
    // consistent state machine.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CircuitBreaker {
    /// A breaker without metrics.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self {
            name: name.into(),
            timeout: Duration::from_millis(config.timeout),
            core: Mutex::new(BreakerCore::new(config)),
            metrics: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The breaker reading the time from `clock`.
    #[must_use]
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// State now.
    pub fn state(&self) -> State {
        lock(&self.core).state(self.clock.now())
    }

    /// Statistics now.
    pub fn stats(&self) -> BreakerStats {
        let mut core = lock(&self.core);
        let state = core.state(self.clock.now());
        let (window_calls, window_failures) = core.window_counts();
        BreakerStats {
            name: self.name.clone(),
            state,
            window_calls,
            window_failures,
            last_trip: core.last_trip.clone(),
        }
    }

    fn count(&self, result: &'static str) {
        if let Some(m) = &self.metrics {
            m.calls
                .get_or_create(&CallLabels {
                    name: self.name.clone(),
                    result,
                })
                .inc();
        }
    }

    fn publish_state(&self, state: State) {
        if let Some(m) = &self.metrics {
            m.state
                .get_or_create(&NameLabel {
                    name: self.name.clone(),
                })
                .set(state.as_gauge());
        }
    }

    /// Runs `op` through the breaker. `is_failure` says which errors count against it (others
    /// pass through as successes, e.g. a 4xx the caller caused).
    pub async fn call<T, E, F>(
        &self,
        op: F,
        is_failure: impl Fn(&E) -> bool,
    ) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = {
            let mut core = lock(&self.core);
            let permit = core.try_acquire(self.clock.now());
            self.publish_state(core.state);
            permit
        };
        let Some(permit) = permit else {
            self.count("rejected");
            return Err(BreakerError::Open(self.name.clone()));
        };
        // NB: if this future is dropped mid-call, the guard hands the probe slot back.
        let mut guard = PermitGuard {
            breaker: self,
            permit: Some(permit),
        };
        let started = self.clock.now();
        let outcome = tokio::time::timeout(self.timeout, op).await;
        let took = self.clock.now().saturating_duration_since(started);
        if let Some(m) = &self.metrics {
            // NB: millisecond durations are far below 2^53.
            #[allow(clippy::cast_precision_loss)]
            m.latency
                .get_or_create(&NameLabel {
                    name: self.name.clone(),
                })
                .observe(took.as_secs_f64() * 1000.0);
        }
        let (result, label, out) = match outcome {
            Ok(Ok(v)) => (CallResult::Success, "success", Ok(v)),
            Ok(Err(e)) if is_failure(&e) => {
                (CallResult::Failure, "failure", Err(BreakerError::Inner(e)))
            }
            Ok(Err(e)) => (CallResult::Success, "success", Err(BreakerError::Inner(e))),
            Err(_) => (
                CallResult::Failure,
                "timeout",
                Err(BreakerError::Timeout(self.name.clone())),
            ),
        };
        if let Some(permit) = guard.permit.take() {
            let mut core = lock(&self.core);
            let before = core.state;
            core.on_result(self.clock.now(), permit, result, took);
            if core.state != before {
                tracing::warn!(breaker = %self.name, from = ?before, to = ?core.state, why = ?core.last_trip, "circuit breaker changed state");
            }
            self.publish_state(core.state);
        }
        self.count(label);
        out
    }

    /// [`CircuitBreaker::call`], answering with `fallback` when the call is rejected or fails.
    pub async fn call_with_fallback<T, E, F>(
        &self,
        op: F,
        is_failure: impl Fn(&E) -> bool,
        fallback: impl FnOnce(&BreakerError<E>) -> T,
    ) -> T
    where
        F: Future<Output = Result<T, E>>,
    {
        match self.call(op, is_failure).await {
            Ok(v) => v,
            Err(e) => {
                self.count("fallback");
                fallback(&e)
            }
        }
    }
}

struct PermitGuard<'a> {
    breaker: &'a CircuitBreaker,
    permit: Option<Permit>,
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            lock(&self.breaker.core).release(permit);
        }
    }
}

/// Breakers by name, created on first use, sharing one set of metrics.
#[derive(Debug, Clone)]
pub struct BreakerRegistry {
    breakers: Arc<Mutex<HashMap<String, Arc<CircuitBreaker>>>>,
    metrics: Option<BreakerMetrics>,
}

impl BreakerRegistry {
    /// A registry whose breakers report into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            breakers: Arc::default(),
            metrics: Some(BreakerMetrics::register(registry)),
        }
    }

    /// The breaker called `name`, created with `config` if it does not exist yet.
    pub fn get_or_create(&self, name: &str, config: &BreakerConfig) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned())
            .or_insert_with(|| {
                let mut breaker = CircuitBreaker::new(name, config.clone());
                breaker.metrics = self.metrics.clone();
                breaker.publish_state(State::Closed);
                Arc::new(breaker)
            })
            .clone()
    }

    /// Statistics of every breaker, by name.
    pub fn stats(&self) -> Vec<BreakerStats> {
        let map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<BreakerStats> = map.values().map(|b| b.stats()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

#[cfg(test)]
mod tests;
