//! The relayer's one typed configuration.
//!
//! The same type is the YAML config file of the relayer (camelCase keys) and `spec.config` of a
//! `RelayerDeployment`, so one schema (derived with `schemars`) serves both. This module has no
//! server dependencies: the operator uses it with the crate's `server` feature off.
//!
//! Loading ([`RelayerConfig::load`], server feature) layers defaults, then the file, then
//! `RELAYER_*` variables (`RELAYER_REDIS_URL` → `redisUrl`, `RELAYER_SHUTDOWN__DRAIN_TIMEOUT_MS`
//! → `shutdown.drainTimeoutMs`), and then [`RelayerConfig::validate`] checks every value. Any
//! error names the key.
//!
//! Room: usable by every room; it uses only the leaf config modules [`crate::ratelimit::config`]
//! and [`crate::resilience::config`], which use nothing of the crate.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Configuration of one relayer process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RelayerConfig {
    /// Socket address the HTTP server listens on, e.g. `0.0.0.0:3000`.
    #[serde(deserialize_with = "text::required")]
    #[schemars(with = "String")]
    pub listen: String,
    /// Redis URL (`redis://` or `rediss://`) of the shared store; absent: in-memory store.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::optional"
    )]
    #[schemars(with = "Option<String>")]
    pub redis_url: Option<String>,
    /// How the Redis store lays out and bounds its work (used when `redisUrl` is set).
    pub redis: RedisConfig,
    /// Bearer token of the `/admin` routes (at least 16 characters); absent: `/admin` answers
    /// 404. In Kubernetes, pass it as `RELAYER_ADMIN_TOKEN` from a Secret rather than here.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::optional"
    )]
    #[schemars(with = "Option<String>")]
    pub admin_token: Option<String>,
    /// Bounds on requests.
    pub limits: LimitsConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Deliberate faults for game days and tests; off by default.
    pub fault_injection: FaultInjectionConfig,
    /// The tiered sliding-window rate limiter.
    pub rate_limit: crate::ratelimit::config::RateLimitConfig,
    /// Where trades are settled.
    pub settlement: SettlementConfig,
    /// Circuit breakers by name (today: `settlement`).
    pub circuit_breakers: CircuitBreakersConfig,
    /// The order saga's durable log and recovery.
    pub saga: SagaConfig,
}

/// The settlement endpoint (`settlement`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// URL trades are POSTed to; absent: the embedded in-process ledger settles them.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::optional"
    )]
    #[schemars(with = "Option<String>")]
    pub url: Option<String>,
    /// Time limit of one HTTP attempt, in ms (the breaker's `timeout` bounds it too).
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
    /// Retries of a settlement call.
    pub retry: SettlementRetryConfig,
}

/// Retry settings of settlement: a named strategy, optionally overridden key by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SettlementRetryConfig {
    /// `fast`, `standard`, `slow` or `blockchain`.
    pub strategy: String,
    /// Overrides the strategy's retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Overrides the strategy's first delay bound, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_delay_ms: Option<u64>,
    /// Overrides the strategy's largest delay bound, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Share of calls that may be retried (the retry budget), 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub budget_ratio: f64,
}

/// Breakers by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CircuitBreakersConfig {
    /// The breaker in front of the settlement endpoint.
    pub settlement: crate::resilience::config::BreakerConfig,
}

/// The order saga (`saga`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SagaConfig {
    /// Write the saga log to the store before and after each step (off only to measure its
    /// cost: without it a relayer that dies mid-saga leaves work nobody finishes).
    pub durable_log: bool,
    /// How long a replica holds a saga without renewing its lease, ms.
    #[schemars(range(min = 100))]
    pub lease_ms: u64,
    /// How often abandoned sagas are looked for, ms.
    #[schemars(range(min = 100))]
    pub recovery_interval_ms: u64,
}

/// The Redis store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Prepended to every key, so several relayer deployments can share one Redis. At most 64
    /// characters, no white space and no `{` or `}` (those would break the hash tags that keep
    /// each script within one Redis Cluster slot).
    #[serde(deserialize_with = "text::required")]
    #[schemars(with = "String")]
    pub key_prefix: String,
    /// Bound on every Redis call in milliseconds (connecting included); a slower call fails the
    /// request with 503. At most `limits.requestTimeoutMs`.
    #[schemars(range(min = 1, max = 60000))]
    pub command_timeout_ms: u64,
    /// How long filled and cancelled orders (and their order-id claims) are kept, in seconds.
    #[schemars(range(min = 1, max = 31622400))]
    pub order_retention_seconds: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            key_prefix: "foresight:".to_owned(),
            // Loopback or same-zone Redis answers in well under a millisecond; a second means
            // it is gone or stalled, and the caller is better served by a prompt 503.
            command_timeout_ms: 1_000,
            // A day: long enough for clients to read the outcome of what they placed.
            order_retention_seconds: 24 * 60 * 60,
        }
    }
}

/// Bounds on requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body in bytes; a larger body is answered 413.
    #[schemars(range(min = 64, max = 16777216))]
    pub max_body_bytes: u64,
    /// Largest `amount` of one order, in shares.
    #[schemars(range(min = 1))]
    pub max_order_amount: u64,
    /// Time limit of one request in milliseconds; a slower request is answered 503.
    #[schemars(range(min = 1, max = 600000))]
    pub request_timeout_ms: u64,
}

/// Graceful shutdown on SIGTERM or Ctrl-C.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After the signal, `/ready` reports not-ready for this long while requests are still
    /// served, so load balancers stop sending traffic before the listener closes.
    #[schemars(range(max = 600000))]
    pub readiness_delay_ms: u64,
    /// After the readiness delay, new requests are refused and in-flight requests get this long
    /// to finish before the process exits anyway.
    #[schemars(range(min = 1, max = 600000))]
    pub drain_timeout_ms: u64,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `relayer=debug,tower_http=info`.
    #[serde(deserialize_with = "text::required")]
    #[schemars(with = "String")]
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Deliberate faults on the `/v2` and `/orderbook` routes (never on probes or metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultInjectionConfig {
    /// Share of requests answered with an injected 500, from 0.0 to 1.0.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_rate: f64,
    /// Latency added to every request, in milliseconds.
    #[schemars(range(max = 60000))]
    pub added_latency_ms: u64,
    /// Abort the process (`std::process::abort`) when an order saga reaches this point:
    /// `before:<step>`, `after:<step>` (steps `validate`, `reserve`, `match`, `settle`,
    /// `update`) or `during:settle` (settlement answered, the answer not yet recorded). Tests
    /// only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_at_step: Option<String>,
}

/// The order saga's steps, in order (names in logs, metrics and `faultInjection.crashAtStep`).
pub const ORDER_SAGA_STEPS: [&str; 5] = ["validate", "reserve", "match", "settle", "update"];

impl Default for RelayerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:3000".to_owned(),
            redis_url: None,
            redis: RedisConfig::default(),
            admin_token: None,
            limits: LimitsConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            fault_injection: FaultInjectionConfig::default(),
            rate_limit: crate::ratelimit::config::RateLimitConfig::default(),
            settlement: SettlementConfig::default(),
            circuit_breakers: CircuitBreakersConfig::default(),
            saga: SagaConfig::default(),
        }
    }
}

impl Default for SettlementConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: 10_000,
            retry: SettlementRetryConfig::default(),
        }
    }
}

impl Default for SettlementRetryConfig {
    fn default() -> Self {
        Self {
            strategy: "blockchain".to_owned(),
            max_retries: None,
            initial_delay_ms: None,
            max_delay_ms: None,
            budget_ratio: 0.2,
        }
    }
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            durable_log: true,
            lease_ms: 15_000,
            recovery_interval_ms: 5_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            // A trillion shares: far above any real order, far below where `price * amount`
            // could approach u64 limits on a balance.
            max_order_amount: 1_000_000_000_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            // Kubernetes removes a terminating pod from EndpointSlices within a second or two.
            readiness_delay_ms: 2_000,
            drain_timeout_ms: 20_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

impl Default for FaultInjectionConfig {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            added_latency_ms: 0,
            crash_at_step: None,
        }
    }
}

/// Text keys that also accept a bare number: an environment variable such as
/// `RELAYER_ADMIN_TOKEN=12345678901234567890` arrives as a number.
mod text {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    struct Text;

    impl Visitor<'_> for Text {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    struct OptionalText;

    impl<'de> Visitor<'de> for OptionalText {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or nothing")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            required(d).map(Some)
        }
    }

    pub(super) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(Text)
    }

    pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(OptionalText)
    }
}

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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
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
                || point.split_once(':').is_some_and(|(when, step)| {
                    matches!(when, "before" | "after") && ORDER_SAGA_STEPS.contains(&step)
                });
            if !ok {
                return Err(invalid(
                    "faultInjection.crashAtStep",
                    "must be before:<step>, after:<step> or during:settle, with step one of validate, reserve, match, settle, update",
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

#[cfg(feature = "server")]
mod load {
    use std::path::Path;

    use figment::{
        Figment,
        providers::{Env, Format, Serialized, Yaml},
    };

    use super::{ConfigError, RelayerConfig};

    /// `SHUTDOWN__DRAIN_TIMEOUT_MS` (prefix already stripped) → `shutdown.drainTimeoutMs`.
    fn env_key_to_path(key: &str) -> String {
        key.split("__")
            .map(|segment| {
                let mut out = String::with_capacity(segment.len());
                let mut upper = false;
                for c in segment.chars() {
                    if c == '_' {
                        upper = true;
                    } else if upper {
                        out.extend(c.to_uppercase());
                        upper = false;
                    } else {
                        out.extend(c.to_lowercase());
                    }
                }
                out
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    impl RelayerConfig {
        /// Defaults, then `file` (if given; it must exist), then `RELAYER_*` variables, then
        /// [`RelayerConfig::validate`].
        pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
            Self::load_from(file, Env::prefixed("RELAYER_"))
        }

        /// [`RelayerConfig::load`] with an explicit environment provider (for tests).
        pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
            let mut figment = Figment::from(Serialized::defaults(RelayerConfig::default()));
            if let Some(path) = file {
                if !path.is_file() {
                    return Err(super::invalid(
                        "--config",
                        format!("{} does not exist or is not a file", path.display()),
                    ));
                }
                figment = figment.merge(Yaml::file_exact(path));
            }
            // NB: `RELAYER_CONFIG` names the file itself (a CLI flag), not a key.
            let env = env
                .ignore(&["config"])
                .map(|k| env_key_to_path(k.as_str()).into())
                // NB: must come after `map`: every `filter`/`map` resets it to `true`.
                .lowercase(false);
            let config: RelayerConfig = figment
                .merge(env)
                .extract()
                .map_err(|e| ConfigError::Load(Box::new(e)))?;
            config.validate()?;
            Ok(config)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn numeric_text_values_stay_text() {
            let config: RelayerConfig =
                Figment::from(Serialized::defaults(RelayerConfig::default()))
                    .merge(Yaml::string(
                        "adminToken: 12345678901234567890\nlog:\n  filter: info\n",
                    ))
                    .extract()
                    .expect("a numeric token is text");
            assert_eq!(config.admin_token.as_deref(), Some("12345678901234567890"));
        }

        #[test]
        fn env_keys_become_camel_case_paths() {
            // (and text keys keep a string schema despite their lenient deserializer)
            let schema =
                serde_json::to_value(schemars::schema_for!(RelayerConfig)).expect("schema");
            assert_eq!(schema["properties"]["listen"]["type"], "string");
            assert_eq!(
                schema["properties"]["adminToken"]["type"],
                serde_json::json!(["string", "null"])
            );
            assert_eq!(env_key_to_path("REDIS_URL"), "redisUrl");
            assert_eq!(
                env_key_to_path("SHUTDOWN__DRAIN_TIMEOUT_MS"),
                "shutdown.drainTimeoutMs"
            );
            assert_eq!(env_key_to_path("listen"), "listen");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RelayerConfig::default()
            .validate()
            .expect("defaults validate");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        type Mutation = Box<dyn Fn(&mut RelayerConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("listen", Box::new(|c| c.listen = "nope".into())),
            (
                "redisUrl",
                Box::new(|c| c.redis_url = Some("http://x".into())),
            ),
            (
                "adminToken",
                Box::new(|c| c.admin_token = Some("short".into())),
            ),
            (
                "limits.maxBodyBytes",
                Box::new(|c| c.limits.max_body_bytes = 1),
            ),
            (
                "limits.maxOrderAmount",
                Box::new(|c| c.limits.max_order_amount = 0),
            ),
            (
                "limits.requestTimeoutMs",
                Box::new(|c| c.limits.request_timeout_ms = 0),
            ),
            (
                "shutdown.drainTimeoutMs",
                Box::new(|c| c.shutdown.drain_timeout_ms = 0),
            ),
            (
                "shutdown.readinessDelayMs",
                Box::new(|c| c.shutdown.readiness_delay_ms = u64::MAX),
            ),
            ("log.filter", Box::new(|c| c.log.filter = " ".into())),
            (
                "redis.keyPrefix",
                Box::new(|c| c.redis.key_prefix = "a{b}:".into()),
            ),
            (
                "redis.commandTimeoutMs",
                Box::new(|c| c.redis.command_timeout_ms = 0),
            ),
            (
                "redis.commandTimeoutMs",
                Box::new(|c| {
                    c.limits.request_timeout_ms = 500;
                    c.redis.command_timeout_ms = 501;
                }),
            ),
            (
                "redis.orderRetentionSeconds",
                Box::new(|c| c.redis.order_retention_seconds = 0),
            ),
            (
                "faultInjection.errorRate",
                Box::new(|c| c.fault_injection.error_rate = 1.5),
            ),
            (
                "faultInjection.addedLatencyMs",
                Box::new(|c| c.fault_injection.added_latency_ms = 60_001),
            ),
        ];
        for (key, mutate) in cases {
            let mut config = RelayerConfig::default();
            mutate(&mut config);
            match config.validate() {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{key}: expected an invalid-key error, got {other:?}"),
            }
        }
    }
}
