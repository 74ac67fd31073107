//! Configuration of the resilience building blocks (no server dependencies: it is part of the
//! relayer config, and so of `spec.config` of a RelayerDeployment).
//!
//! Room: a leaf config module: it uses nothing of the crate, so [`crate::config`] may use it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Settings of one breaker (`circuitBreakers.<name>` of the relayer config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// Successful probes in HALF_OPEN that close it.
    #[schemars(range(min = 1))]
    pub success_threshold: u32,
    /// How long it stays OPEN, in ms.
    #[schemars(range(min = 1))]
    pub open_duration: u64,
    /// Time limit of one call in ms; a slower call is a failure (`timeout`).
    #[schemars(range(min = 1))]
    pub timeout: u64,
    /// Failure share over the window that opens the breaker (0 to 1).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_rate_threshold: f64,
    /// Calls the window needs before its rates count.
    #[schemars(range(min = 1))]
    pub min_requests: u32,
    /// Length of the sliding window of the rates, in ms.
    #[schemars(range(min = 1))]
    pub window: u64,
    /// A call slower than this (ms) is slow.
    #[schemars(range(min = 1))]
    pub slow_call_duration_threshold: u64,
    /// Share of slow calls over the window that opens the breaker (0 to 1; 1 = only when all
    /// calls are slow).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub slow_call_rate_threshold: f64,
    /// Probes admitted at once in HALF_OPEN.
    #[schemars(range(min = 1))]
    pub half_open_max_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        // The seed's numbers; the slow-call and window settings are ours.
        Self {
            failure_threshold: 5,
            success_threshold: 3,
            open_duration: 30_000,
            timeout: 10_000,
            error_rate_threshold: 0.5,
            min_requests: 10,
            window: 60_000,
            slow_call_duration_threshold: 5_000,
            slow_call_rate_threshold: 1.0,
            half_open_max_calls: 1,
        }
    }
}

impl BreakerConfig {
    /// Checks every value; returns the bad key (relative to the breaker) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("failureThreshold", u64::from(self.failure_threshold)),
            ("successThreshold", u64::from(self.success_threshold)),
            ("openDuration", self.open_duration),
            ("timeout", self.timeout),
            ("minRequests", u64::from(self.min_requests)),
            ("window", self.window),
            (
                "slowCallDurationThreshold",
                self.slow_call_duration_threshold,
            ),
            ("halfOpenMaxCalls", u64::from(self.half_open_max_calls)),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err((key, "must be at least 1".to_owned()));
            }
        }
        for (key, v) in [
            ("errorRateThreshold", self.error_rate_threshold),
            ("slowCallRateThreshold", self.slow_call_rate_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err((key, "must be between 0.0 and 1.0".to_owned()));
            }
        }
        Ok(())
    }
}
