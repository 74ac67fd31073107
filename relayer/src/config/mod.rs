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
//! Secrets (`adminToken`, `redis.password`, `settlement.credential` and the password of any
//! URL) never show: [`RelayerConfig::redacted`] is what `relayer --print-config` prints, and the
//! `Debug` of every type holding one prints it as `<redacted>`.
//!
//! Here: the types and their defaults; `validate` (the checks and [`ConfigError`]), `load`
//! (figment layering, server feature), `env` (how `RELAYER_*` names map to keys, and which
//! would set a secret), `secrets` (redaction) and `text` (keys that accept a bare number).
//!
//! Room: usable by every room; it uses only the leaf config modules [`crate::ratelimit::config`]
//! and [`crate::resilience::config`], which use nothing of the crate.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod env;
#[cfg(feature = "server")]
mod load;
mod secrets;
#[cfg(test)]
mod tests;
mod text;
mod validate;

pub use self::env::{env_key, env_sets_secret};
pub use self::secrets::{REDACTED, redact_url, url_password};
pub use self::validate::ConfigError;

/// Configuration of one relayer process.
// NB: `Debug` by hand (in `secrets`): it redacts.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RelayerConfig {
    /// Socket address the HTTP server listens on, e.g. `0.0.0.0:3000`.
    #[serde(deserialize_with = "text::required")]
    #[schemars(with = "String")]
    pub listen: String,
    /// Redis URL (`redis://` or `rediss://`, TLS) of the shared store; absent: in-memory store.
    /// Prefer `redis.password` to a password in the URL (both at once are refused).
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
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Secret sent as the value of `credentialHeader` with every settlement POST (e.g.
    /// `Bearer …`); absent: none. In Kubernetes, pass it as `RELAYER_SETTLEMENT__CREDENTIAL`
    /// from a Secret rather than here.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::optional"
    )]
    #[schemars(with = "Option<String>")]
    pub credential: Option<String>,
    /// HTTP header that carries `credential`.
    // NB: left out when it is the default, so configs (and the operator's revision hashes)
    // written before this key existed serialise as they did.
    #[serde(
        deserialize_with = "text::required",
        skip_serializing_if = "is_default_credential_header"
    )]
    #[schemars(with = "String")]
    pub credential_header: String,
}

/// The header of `settlement.credential` unless `settlement.credentialHeader` says otherwise.
pub const DEFAULT_CREDENTIAL_HEADER: &str = "Authorization";

fn is_default_credential_header(header: &str) -> bool {
    header == DEFAULT_CREDENTIAL_HEADER
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
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Redis AUTH password, sent on every connection to `redisUrl` (the store's, and the rate
    /// limiter's when it uses the store's Redis); a user name in `redisUrl` is kept (ACL). Not
    /// together with a password inside `redisUrl`. In Kubernetes, pass it as
    /// `RELAYER_REDIS__PASSWORD` from a Secret rather than here.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::optional"
    )]
    #[schemars(with = "Option<String>")]
    pub password: Option<String>,
    /// PEM file of the CA that signs the Redis server's certificate (a `rediss://` `redisUrl`
    /// only); then only that CA is trusted. Absent: the public web PKI roots (webpki-roots).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text::optional"
    )]
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<String>,
    /// `standalone` (one Redis, or a primary behind one address) or `cluster` (Redis Cluster:
    /// `redisUrl` names one seed node, the client learns the others and follows MOVED and ASK).
    // NB: left out when standalone (the default), so that the config of every object written
    // before this key existed serializes, and so hashes, as before (its revision and ConfigMap
    // name stay, and an operator upgrade starts no cutover).
    #[serde(skip_serializing_if = "RedisMode::is_standalone")]
    pub mode: RedisMode,
    /// More seed nodes of a cluster (`host:port`), tried when `redisUrl`'s node does not
    /// answer; they share `redisUrl`'s scheme, user and password. `cluster` mode only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub cluster_nodes: Vec<String>,
    /// How many replicas must confirm each write of the store (Redis `WAIT`) before it counts
    /// as done; a write they do not confirm within a third of `commandTimeoutMs` fails with 503
    /// and its saga treats it like any write of unknown outcome. Absent: 1 in `cluster` mode
    /// (a failover then never loses an acknowledged write), 0 in `standalone` mode.
    // NB: schema as int32 (a format Kubernetes knows); the value is checked to be 0 to 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 0, max = 5))]
    pub replica_acks: Option<u32>,
}

/// Which Redis topology `redisUrl` points at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RedisMode {
    /// One node (or a primary behind one address, with or without replicas).
    #[default]
    Standalone,
    /// Redis Cluster: keys spread over the masters by hash slot.
    Cluster,
}

impl RedisMode {
    /// Whether this is the default, [`RedisMode::Standalone`].
    pub fn is_standalone(&self) -> bool {
        *self == RedisMode::Standalone
    }
}

impl RedisConfig {
    /// How many replicas must confirm each store write (`replicaAcks`, else by mode).
    pub fn effective_replica_acks(&self) -> u32 {
        self.replica_acks.unwrap_or(match self.mode {
            RedisMode::Standalone => 0,
            RedisMode::Cluster => 1,
        })
    }
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
            password: None,
            ca_file: None,
            mode: RedisMode::Standalone,
            cluster_nodes: Vec::new(),
            replica_acks: None,
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
    /// How long `POST /v2/orders` waits for its order saga, in milliseconds; a placement still
    /// running then is answered 202 and goes on (settlement retries can take longer than any
    /// request should). Below `requestTimeoutMs`; unset, 5000 or half of `requestTimeoutMs`,
    /// whichever is less (see [`LimitsConfig::placement_wait`]).
    #[schemars(range(min = 1, max = 600000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_wait_ms: Option<u64>,
    /// Time a client has to send the headers of a request, in milliseconds, counted from when
    /// the connection opens or its previous response went out; a connection slower than that
    /// is closed (slowloris), and so is a keep-alive connection idle that long between requests.
    // NB: left out when default, so configs written before this key existed serialise as they
    // did (the operator hashes them into revisions); the same for the two keys below.
    #[serde(skip_serializing_if = "is_default_header_read_timeout")]
    #[schemars(range(min = 1, max = 600000))]
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moves either way for this long, in milliseconds, is closed
    /// (a stalled upload, a client that stops reading its response). Above `requestTimeoutMs`,
    /// so a slow request is answered rather than cut off; unset, 60000 or `requestTimeoutMs` +
    /// 1000, whichever is more (see [`LimitsConfig::idle_timeout`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 3600000))]
    pub idle_timeout_ms: Option<u64>,
    /// Connections served at once. At the cap the server stops accepting: new connections wait
    /// in the listen backlog until one of the open ones closes.
    #[serde(skip_serializing_if = "is_default_max_connections")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: u32,
}

/// `limits.headerReadTimeoutMs` unless configured: a real client sends its headers in one
/// packet; 10 s leaves room for a slow mobile link and frees a slowloris socket quickly.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;

/// `limits.idleTimeoutMs` unless configured (and `limits.requestTimeoutMs` is below it).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// `limits.maxConnections` unless configured: far above what one replica serves (a few
/// hundred keep-alive clients behind a load balancer), far below the usual file limit of a
/// container (65536), so a flood of sockets meets the cap before it exhausts descriptors.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4_096;

fn is_default_header_read_timeout(ms: &u64) -> bool {
    *ms == DEFAULT_HEADER_READ_TIMEOUT_MS
}

fn is_default_max_connections(n: &u32) -> bool {
    *n == DEFAULT_MAX_CONNECTIONS
}

/// The placement wait when `limits.placementWaitMs` is unset, at most.
pub const DEFAULT_PLACEMENT_WAIT_MS: u64 = 5_000;

impl LimitsConfig {
    /// How long `POST /v2/orders` waits for its saga: `placementWaitMs`, or, unset, 5000 ms or
    /// half of `requestTimeoutMs`, whichever is less (at least 1 ms).
    pub fn placement_wait(&self) -> std::time::Duration {
        let ms = self.placement_wait_ms.unwrap_or_else(|| {
            DEFAULT_PLACEMENT_WAIT_MS
                .min(self.request_timeout_ms / 2)
                .max(1)
        });
        std::time::Duration::from_millis(ms)
    }

    /// How long a connection may move no byte before it is closed: `idleTimeoutMs`, or,
    /// unset, 60000 ms or `requestTimeoutMs` + 1000 ms, whichever is more.
    pub fn idle_timeout(&self) -> std::time::Duration {
        let ms = self.idle_timeout_ms.unwrap_or_else(|| {
            DEFAULT_IDLE_TIMEOUT_MS.max(self.request_timeout_ms.saturating_add(1_000))
        });
        std::time::Duration::from_millis(ms)
    }
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
    /// `update`), `during:settle` (settlement answered, the answer not yet recorded) or
    /// `after:cancel` (a cancellation changed the book, its release not yet done). Tests
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
            credential: None,
            credential_header: DEFAULT_CREDENTIAL_HEADER.to_owned(),
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
            placement_wait_ms: None,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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
