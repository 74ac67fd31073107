//! [`RelayerConfig::validate`]: every value checked, the first bad one returned as a
//! [`ConfigError`] naming its key.
//!
//! Part of the `config` room; uses the config types only.

use std::net::SocketAddr;

use super::{ORDER_SAGA_STEPS, RedisMode, RelayerConfig, url_password};

/// Largest request body the server may be configured to accept (16 MiB).
const MAX_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// Drains longer than this would outlive any sane `terminationGracePeriodSeconds`.
const MAX_DRAIN_MS: u64 = 10 * 60 * 1000;
/// Below this length an admin token is guessable.
const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// Ten minutes to send a request's headers is already a socket held hostage.
const MAX_HEADER_READ_MS: u64 = 10 * 60 * 1000;
/// An hour: a connection silent longer than that is dead, whatever the client thinks.
const MAX_IDLE_MS: u64 = 60 * 60 * 1000;
/// A million sockets is beyond any one process's file limit.
const MAX_CONNECTIONS: u32 = 1_000_000;
/// A Redis call slower than a minute is an outage, not latency.
const MAX_COMMAND_TIMEOUT_MS: u64 = 60_000;
/// Retention beyond a year is unbounded growth in practice.
const MAX_RETENTION_SECONDS: u64 = 366 * 24 * 60 * 60;
/// Most extra seed nodes of a cluster (`redis.clusterNodes`).
const MAX_CLUSTER_NODES: usize = 32;
/// Most replicas a write may wait for (`redis.replicaAcks`).
const MAX_REPLICA_ACKS: u32 = 5;
/// Headers the settlement client sets itself (or HTTP does): a credential must not replace them.
const RESERVED_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "idempotency-key",
    "te",
];
/// What a PEM certificate starts with.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

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
        self.validate_redis_access()?;
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
        if !(1..=MAX_HEADER_READ_MS).contains(&l.header_read_timeout_ms) {
            return Err(invalid(
                "limits.headerReadTimeoutMs",
                format!("must be between 1 and {MAX_HEADER_READ_MS}"),
            ));
        }
        if let Some(idle) = l.idle_timeout_ms
            && (idle <= l.request_timeout_ms || idle > MAX_IDLE_MS)
        {
            return Err(invalid(
                "limits.idleTimeoutMs",
                format!(
                    "must be above limits.requestTimeoutMs ({}) and at most {MAX_IDLE_MS}, so \
                     a slow request is answered rather than cut off",
                    l.request_timeout_ms
                ),
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&l.max_connections) {
            return Err(invalid(
                "limits.maxConnections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
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
        if !r.cluster_nodes.is_empty() && r.mode != RedisMode::Cluster {
            return Err(invalid(
                "redis.clusterNodes",
                "is only used with redis.mode: cluster",
            ));
        }
        if r.cluster_nodes.len() > MAX_CLUSTER_NODES {
            return Err(invalid(
                "redis.clusterNodes",
                format!("must list at most {MAX_CLUSTER_NODES} nodes"),
            ));
        }
        for (i, node) in r.cluster_nodes.iter().enumerate() {
            if !is_host_port(node) {
                return Err(invalid(
                    &format!("redis.clusterNodes[{i}]"),
                    "must be host:port (no scheme, no user or password: those come from \
                     redisUrl)",
                ));
            }
        }
        if r.mode == RedisMode::Cluster
            && let Some(url) = &self.redis_url
            && !matches!(url_database(url), None | Some("0"))
        {
            return Err(invalid(
                "redisUrl",
                "names a database other than 0: Redis Cluster has only database 0",
            ));
        }
        if self.redis_url.is_some() && r.effective_replica_acks() > 0 && !self.saga.durable_log {
            return Err(invalid(
                "saga.durableLog",
                "must be true when writes wait for replicas (redis.replicaAcks, 1 by default \
                 in cluster mode): a write its replica did not confirm has happened, and only \
                 the saga log lets recovery finish or undo it",
            ));
        }
        if r.replica_acks.is_some_and(|n| n > MAX_REPLICA_ACKS) {
            return Err(invalid(
                "redis.replicaAcks",
                format!("must be at most {MAX_REPLICA_ACKS}"),
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
        self.validate_settlement_credential()?;
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

    /// `redis.password` and `redis.caFile` against `redisUrl`.
    fn validate_redis_access(&self) -> Result<(), ConfigError> {
        let url = self.redis_url.as_deref();
        let r = &self.redis;
        if let Some(password) = &r.password {
            if password.is_empty() {
                return Err(invalid("redis.password", "must not be empty"));
            }
            let Some(url) = url else {
                return Err(invalid(
                    "redis.password",
                    "is set but redisUrl is not: the in-memory store uses no password",
                ));
            };
            if url_password(url).is_some() {
                return Err(invalid(
                    "redis.password",
                    "is set and redisUrl holds a password too: give the password in one of \
                     redis.password and redisUrl",
                ));
            }
        }
        if let Some(ca_file) = &r.ca_file {
            if ca_file.trim().is_empty() {
                return Err(invalid("redis.caFile", "must not be empty"));
            }
            if !url.is_some_and(|u| u.starts_with("rediss://")) {
                return Err(invalid(
                    "redis.caFile",
                    "needs a rediss:// redisUrl (a CA is only used for TLS)",
                ));
            }
        }
        Ok(())
    }

    /// `settlement.credential` and `settlement.credentialHeader`.
    fn validate_settlement_credential(&self) -> Result<(), ConfigError> {
        let s = &self.settlement;
        let header = &s.credential_header;
        if !is_header_name(header) {
            return Err(invalid(
                "settlement.credentialHeader",
                format!("{header:?} is not an HTTP header name"),
            ));
        }
        if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "settlement.credentialHeader",
                format!("{header} is set by the settlement client itself"),
            ));
        }
        if let Some(credential) = &s.credential {
            // NB: the messages never echo the value: it is a secret.
            if credential.trim().is_empty() {
                return Err(invalid("settlement.credential", "must not be empty"));
            }
            if !is_header_value(credential) {
                return Err(invalid(
                    "settlement.credential",
                    "must be a valid HTTP header value (no control characters or line breaks)",
                ));
            }
            if s.url.is_none() {
                return Err(invalid(
                    "settlement.credential",
                    "is set but settlement.url is not: the embedded ledger takes no credential",
                ));
            }
        }
        Ok(())
    }

    /// The checks that read the relayer's own files: `redis.caFile` must be a readable PEM
    /// file holding at least one certificate. Not part of [`RelayerConfig::validate`], which
    /// the operator also runs on `spec.config` (where the file does not exist);
    /// [`RelayerConfig::load`] runs both.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.redis.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| invalid("redis.caFile", format!("cannot read {path}: {e}")))?;
            if !pem
                .windows(PEM_CERTIFICATE.len())
                .any(|w| w == PEM_CERTIFICATE.as_bytes())
            {
                return Err(invalid(
                    "redis.caFile",
                    format!("{path} holds no PEM certificate ({PEM_CERTIFICATE})"),
                ));
            }
        }
        Ok(())
    }
}

/// The database a Redis URL names (`redis://host:6379/3` → `3`), if any.
fn url_database(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let db = path.split(['?', '#']).next().unwrap_or_default();
    (!db.is_empty()).then_some(db)
}

/// `host:port` with a DNS name, an IPv4 address or a bracketed IPv6 address, and a port.
fn is_host_port(node: &str) -> bool {
    let Some((host, port)) = node.rsplit_once(':') else {
        return false;
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An HTTP field name (RFC 9110 `token`).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP field value as `http::HeaderValue` accepts it: no control character but tab.
fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}
