//! [`RelayerConfig::validate`]: every value checked, the first bad one returned as a
//! [`ConfigError`] naming its key.
//!
//! Part of the `config` room; uses the config types only.

use std::net::SocketAddr;

use super::{ORDER_SAGA_STEPS, RelayerConfig};

/// Largest request body the server may be configured to accept (16 MiB).
const MAX_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// Drains longer than this would outlive any sane `terminationGracePeriodSeconds`.
const MAX_DRAIN_MS: u64 = 10 * 60 * 1000;
/// Below this length an admin token is guessable.
const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// A Redis call slower than a minute is an outage, not latency.
const MAX_COMMAND_TIMEOUT_MS: u64 = 60_000;
/// Retention beyond a year is unbounded growth in practice.
const MAX_RETENTION_SECONDS: u64 = 366 * 24 * 60 * 60;

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or malformed.
    #[error("invalid config key `{key}`: {message}")]
    Invalid {
        /// Dotted camelCase path of the key, e.g. `limits.maxBodyBytes`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file or an environment variable could not be read or parsed.
    #[cfg(feature = "server")]
    #[error("config: {0}")]
    Load(#[source] Box<figment::Error>),
}

pub(super) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl RelayerConfig {
    /// Checks every value; the first bad one is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "listen",
                format!("{:?} is not a socket address: {e}", self.listen),
            )
        })?;
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid("redisUrl", "must start with redis:// or rediss://"));
        }
        if let Some(token) = &self.admin_token
            && (token.len() < MIN_ADMIN_TOKEN_LEN || token.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "adminToken",
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters without white space"),
            ));
        }
        let l = &self.limits;
        if !(64..=MAX_BODY_LIMIT).contains(&l.max_body_bytes) {
            return Err(invalid(
                "limits.maxBodyBytes",
                format!("must be between 64 and {MAX_BODY_LIMIT}"),
            ));
        }
        if l.max_order_amount == 0 {
            return Err(invalid("limits.maxOrderAmount", "must be at least 1"));
        }
        if !(1..=MAX_DRAIN_MS).contains(&l.request_timeout_ms) {
            return Err(invalid(
                "limits.requestTimeoutMs",
                format!("must be between 1 and {MAX_DRAIN_MS}"),
            ));
        }
        if let Some(wait) = l.placement_wait_ms
            && (wait == 0 || wait >= l.request_timeout_ms)
        {
            return Err(invalid(
                "limits.placementWaitMs",
                format!(
                    "must be at least 1 and below limits.requestTimeoutMs ({}), so a placement \
                     still running is answered 202 rather than cut off",
                    l.request_timeout_ms
                ),
            ));
        }
        let s = &self.shutdown;
        if s.readiness_delay_ms > MAX_DRAIN_MS {
            return Err(invalid(
                "shutdown.readinessDelayMs",
                format!("must be at most {MAX_DRAIN_MS}"),
            ));
        }
        if !(1..=MAX_DRAIN_MS).contains(&s.drain_timeout_ms) {
            return Err(invalid(
                "shutdown.drainTimeoutMs",
                format!("must be between 1 and {MAX_DRAIN_MS}"),
            ));
        }
        let r = &self.redis;
        if r.key_prefix.len() > 64
            || r.key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(invalid(
                "redis.keyPrefix",
                "must be at most 64 characters without white space, `{` or `}`",
            ));
        }
        if !(1..=MAX_COMMAND_TIMEOUT_MS).contains(&r.command_timeout_ms)
            || r.command_timeout_ms > self.limits.request_timeout_ms
        {
            return Err(invalid(
                "redis.commandTimeoutMs",
                format!(
                    "must be between 1 and {MAX_COMMAND_TIMEOUT_MS} and at most \
                     limits.requestTimeoutMs"
                ),
            ));
        }
        if !(1..=MAX_RETENTION_SECONDS).contains(&r.order_retention_seconds) {
            return Err(invalid(
                "redis.orderRetentionSeconds",
                format!("must be between 1 and {MAX_RETENTION_SECONDS}"),
            ));
        }
        if self.log.filter.trim().is_empty() {
            return Err(invalid("log.filter", "must not be empty"));
        }
        self.rate_limit
            .validate()
            .map_err(|(key, message)| invalid(&format!("rateLimit.{key}"), message))?;
        let f = &self.fault_injection;
        if !(0.0..=1.0).contains(&f.error_rate) {
            return Err(invalid(
                "faultInjection.errorRate",
                "must be between 0.0 and 1.0",
            ));
        }
        if f.added_latency_ms > 60_000 {
            return Err(invalid(
                "faultInjection.addedLatencyMs",
                "must be at most 60000",
            ));
        }
        if let Some(point) = &f.crash_at_step {
            let ok = point == "during:settle"
                || point == "after:cancel"
                || point.split_once(':').is_some_and(|(when, step)| {
                    matches!(when, "before" | "after") && ORDER_SAGA_STEPS.contains(&step)
                });
            if !ok {
                return Err(invalid(
                    "faultInjection.crashAtStep",
                    "must be before:<step>, after:<step>, during:settle or after:cancel, with step one of validate, reserve, match, settle, update",
                ));
            }
        }
        let s = &self.settlement;
        if let Some(url) = &s.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "settlement.url",
                "must be an http:// or https:// URL",
            ));
        }
        if s.timeout_ms == 0 {
            return Err(invalid("settlement.timeoutMs", "must be at least 1"));
        }
        if !["fast", "standard", "slow", "blockchain"].contains(&s.retry.strategy.as_str()) {
            return Err(invalid(
                "settlement.retry.strategy",
                "must be fast, standard, slow or blockchain",
            ));
        }
        if s.retry.max_delay_ms == Some(0) || s.retry.initial_delay_ms == Some(0) {
            return Err(invalid(
                "settlement.retry",
                "initialDelayMs and maxDelayMs must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&s.retry.budget_ratio) {
            return Err(invalid(
                "settlement.retry.budgetRatio",
                "must be between 0.0 and 1.0",
            ));
        }
        self.circuit_breakers
            .settlement
            .validate()
            .map_err(|(key, message)| {
                invalid(&format!("circuitBreakers.settlement.{key}"), message)
            })?;
        if self.saga.lease_ms < 100 {
            return Err(invalid("saga.leaseMs", "must be at least 100"));
        }
        if self.saga.recovery_interval_ms < 100 {
            return Err(invalid("saga.recoveryIntervalMs", "must be at least 100"));
        }
        Ok(())
    }
}
