//! The state shared by every request, [`AppState`], and how it is built from the config: the
//! exchange with its order sagas, settlement client and circuit breakers, the metrics, the rate
//! limiter with its counters, and the [`Lifecycle`] flags that `crate::server` sets during
//! shutdown.
//!
//! Room: part of `http/`; uses [`crate::config`], [`crate::clock`], [`crate::store`],
//! [`crate::resilience`], [`crate::settlement`], [`crate::order_saga`], [`crate::exchange`],
//! [`crate::ratelimit`] and [`crate::metrics`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::SystemClock;
use crate::config::RelayerConfig;
use crate::exchange::Exchange;
use crate::metrics::Metrics;
use crate::order_saga::OrderSagas;
use crate::ratelimit::Limiter;
use crate::ratelimit::counters::{CounterStore, MemoryCounters, RedisCounters};
use crate::resilience::breaker::BreakerRegistry;
use crate::resilience::retry::RetryMetrics;
use crate::resilience::saga::SagaMetrics;
use crate::settlement::Settlement;
use crate::store::{RedisTarget, Store, StoreError};

/// Keys the in-memory limiter keeps at most (about 300 bytes each): a flood of distinct client
/// addresses evicts idle and then least recently used keys instead of growing without bound.
const MEMORY_LIMITER_KEYS: usize = 100_000;

/// Why the application state could not be built at start-up: the config key at fault and, in
/// the message, the whole chain of causes below it.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The rate limiter's counters (`rateLimit.redisUrl`).
    #[error("invalid config key `rateLimit.redisUrl`: {0}")]
    Limiter(StoreError),
    /// The settlement client (`settlement`).
    #[error("cannot build the settlement client of config key `settlement.url`: {}", causes(.0))]
    Settlement(reqwest::Error),
}

/// `error` and its sources, `: `-separated (reqwest's own text is often only "builder error").
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The exchange with its order sagas, settlement and breakers, reporting into `metrics`.
fn build_exchange(
    config: &RelayerConfig,
    store: Store,
    metrics: &mut Metrics,
) -> Result<(Exchange, BreakerRegistry), StartupError> {
    let registry = metrics.registry_mut();
    let breakers = BreakerRegistry::new(registry);
    let retry_metrics = RetryMetrics::register(registry);
    let saga_metrics = SagaMetrics::register(registry);
    let settlement = Settlement::from_config(config, &breakers, Some(retry_metrics))
        .map_err(StartupError::Settlement)?;
    // NB: the breaker exists (state gauge 0) from the start, so health gates can read it.
    breakers.get_or_create("settlement", &config.circuit_breakers.settlement);
    let sagas = OrderSagas::new(config, store.clone(), settlement, Some(saga_metrics));
    let wait = config.limits.placement_wait();
    Ok((
        Exchange::with_sagas(store, sagas).with_placement_wait(wait),
        breakers,
    ))
}

/// Where the process is in its life. `crate::server` moves it on during shutdown.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Set when the shutdown signal arrives: readiness fails from then on.
    draining: AtomicBool,
    /// Set when the listener closes: new requests are refused from then on.
    stopping: AtomicBool,
}

impl Lifecycle {
    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether new requests are refused.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Shutdown has begun: readiness fails from now on.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The listener closes: new requests are refused from now on.
    pub(crate) fn start_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

/// State shared by every request.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    config: RelayerConfig,
    exchange: Exchange,
    metrics: Metrics,
    lifecycle: Lifecycle,
    limiter: Option<Limiter>,
    breakers: BreakerRegistry,
}

impl AppState {
    /// State over `store` with `config` (assumed validated). The rate limiter keeps its
    /// counters in `rateLimit.redisUrl`, else in `redisUrl`, else in memory.
    pub fn new(config: RelayerConfig, store: Store) -> Result<Self, StartupError> {
        let limits = &config.rate_limit;
        let counters: Option<Arc<dyn CounterStore>> = if !limits.enabled {
            None
        } else if let Some(url) = &limits.redis_url {
            let timeout = Duration::from_millis(config.redis.command_timeout_ms);
            // NB: the limiter's own Redis has the store's topology (`redis.mode`); extra seed
            // nodes (`redis.clusterNodes`) belong to the store's.
            let target = RedisTarget {
                url: url.clone(),
                mode: config.redis.mode,
                cluster_nodes: Vec::new(),
            };
            let redis = RedisCounters::connect(&target, &config.redis.key_prefix, timeout)
                .map_err(StartupError::Limiter)?;
            Some(Arc::new(redis))
        } else if let Some(conn) = store.redis_connection() {
            // NB: the store's own multiplexed connection: one connection per replica, not two.
            let timeout = Duration::from_millis(config.redis.command_timeout_ms);
            Some(Arc::new(RedisCounters::new(
                conn,
                &config.redis.key_prefix,
                timeout,
            )))
        } else {
            Some(Arc::new(MemoryCounters::new(
                MEMORY_LIMITER_KEYS,
                Arc::new(SystemClock),
            )))
        };
        Self::with_limiter(config, store, counters)
    }

    /// State with an explicit limiter store (or no limiter), for tests and benchmarks.
    pub fn with_limiter(
        config: RelayerConfig,
        store: Store,
        counters: Option<Arc<dyn CounterStore>>,
    ) -> Result<Self, StartupError> {
        let mut metrics = Metrics::default();
        let limiter =
            counters.map(|c| Limiter::new(config.rate_limit.clone(), c, metrics.registry_mut()));
        let (exchange, breakers) = build_exchange(&config, store, &mut metrics)?;
        Ok(Self {
            inner: Arc::new(StateInner {
                config,
                exchange,
                metrics,
                lifecycle: Lifecycle::default(),
                limiter,
                breakers,
            }),
        })
    }

    /// The circuit breakers.
    pub fn breakers(&self) -> &BreakerRegistry {
        &self.inner.breakers
    }

    /// The rate limiter, when enabled.
    pub fn limiter(&self) -> Option<&Limiter> {
        self.inner.limiter.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &RelayerConfig {
        &self.inner.config
    }

    /// The exchange's use cases.
    pub fn exchange(&self) -> &Exchange {
        &self.inner.exchange
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The lifecycle flags.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_up_error_names_the_config_key_and_the_cause() {
        let mut config = RelayerConfig::default();
        config.rate_limit.enabled = true;
        // NB: `validate` would refuse this URL; the state is built from whatever it is given.
        config.rate_limit.redis_url = Some("bogus://x".to_owned());
        let error = AppState::new(config, Store::memory()).expect_err("an invalid URL");
        let text = error.to_string();
        assert!(
            text.starts_with("invalid config key `rateLimit.redisUrl`: ")
                && text.contains("invalid redis URL"),
            "{text}"
        );
    }
}
