//! The shared application state, the router with its middleware, and the server with its
//! graceful shutdown.
//!
//! Shutdown, in order: the signal arrives → `/ready` answers 503 while requests are still
//! served (`shutdown.readinessDelayMs`, so load balancers stop routing here) → the listener
//! closes, new requests on open connections get 503, in-flight requests run to completion →
//! after `shutdown.drainTimeoutMs` the process stops waiting for stragglers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tower::{Layer, Service};

use crate::api;
use crate::config::RelayerConfig;
use crate::error::ApiError;
use crate::exchange::Exchange;
use crate::metrics::{self as http_metrics, Metrics};
use crate::order_saga::OrderSagas;
use crate::ratelimit::store::{CounterStore, MemoryCounters, RedisCounters, SystemClock};
use crate::ratelimit::{self, Limiter};
use crate::resilience::breaker::BreakerRegistry;
use crate::resilience::retry::RetryMetrics;
use crate::resilience::saga::SagaMetrics;
use crate::settlement::Settlement;
use crate::store::Store;

/// Keys the in-memory limiter keeps at most (about 300 bytes each): a flood of distinct client
/// addresses evicts idle and then least recently used keys instead of growing without bound.
const MEMORY_LIMITER_KEYS: usize = 100_000;

/// Why the application state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The rate limiter's store.
    #[error("rate limiter: {0}")]
    Limiter(#[source] ratelimit::store::StoreFailure),
    /// The settlement client.
    #[error("settlement client: {0}")]
    Settlement(#[source] reqwest::Error),
}

/// The exchange with its order sagas, settlement and breakers, reporting into `metrics`.
fn build_exchange(
    config: &RelayerConfig,
    store: Store,
    metrics: &mut Metrics,
) -> Result<(Exchange, BreakerRegistry), StateError> {
    let registry = metrics.registry_mut();
    let breakers = BreakerRegistry::new(registry);
    let retry_metrics = RetryMetrics::register(registry);
    let saga_metrics = SagaMetrics::register(registry);
    let settlement = Settlement::from_config(config, &breakers, Some(retry_metrics))
        .map_err(StateError::Settlement)?;
    // NB: the breaker exists (state gauge 0) from the start, so health gates can read it.
    breakers.get_or_create("settlement", &config.circuit_breakers.settlement);
    let sagas = OrderSagas::new(config, store.clone(), settlement, Some(saga_metrics));
    Ok((Exchange::with_sagas(store, sagas), breakers))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where the process is in its life.
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
    pub fn new(config: RelayerConfig, store: Store) -> Result<Self, StateError> {
        let limits = &config.rate_limit;
        let counters: Option<Arc<dyn CounterStore>> = if !limits.enabled {
            None
        } else if let Some(url) = &limits.redis_url {
            let timeout = Duration::from_millis(config.redis.command_timeout_ms);
            let redis = RedisCounters::connect(url, &config.redis.key_prefix, timeout)
                .map_err(StateError::Limiter)?;
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
    ) -> Result<Self, StateError> {
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

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let config = state.config();
    let faults = &config.fault_injection;
    let layers = api::BusinessLayers {
        state: state.clone(),
        limit: state
            .limiter()
            .is_some()
            .then(|| ratelimit::RateLimitLayer::new(state.clone())),
        faults: (faults.error_rate > 0.0 || faults.added_latency_ms > 0)
            .then(|| FaultLayer(state.clone())),
    };
    let business = api::business_routes(&layers);
    let mut router = business.merge(api::ops_routes());
    if config.admin_token.is_some() {
        router = router.merge(api::admin_routes());
    }
    router
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(
            usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http_metrics::track,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            },
        ))
        .with_state(state)
}

/// Refuses new requests while stopping and bounds each request's time.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.lifecycle().is_stopping() {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the relayer is shutting down",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let limit = Duration::from_millis(state.config().limits.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Injects the configured faults before a business handler runs: the added latency, then
/// errors at the configured rate (game days and tests only).
#[derive(Debug, Clone)]
pub(crate) struct FaultLayer(AppState);

impl<S> Layer<S> for FaultLayer {
    type Service = Faults<S>;

    fn layer(&self, inner: S) -> Faults<S> {
        Faults {
            inner,
            state: self.0.clone(),
        }
    }
}

/// The service of [`FaultLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Faults<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Faults<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut inner = take_readied(&mut self.inner);
        let state = self.state.clone();
        Box::pin(async move {
            let faults = &state.config().fault_injection;
            if faults.added_latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(faults.added_latency_ms)).await;
            }
            if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
                return Ok(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "injected_fault",
                    "fault injected by configuration",
                )
                .into_response());
            }
            inner.call(request).await
        })
    }
}

/// The service `poll_ready` readied, for a future that calls it later; a clone takes its place
/// for the next call. (Only the readied instance may be called: its clones are not ready.)
pub(crate) fn take_readied<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains as described in the
/// module docs.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let readiness_delay = Duration::from_millis(state.config().shutdown.readiness_delay_ms);
    let drain_timeout = Duration::from_millis(state.config().shutdown.drain_timeout_ms);
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = close_rx.await;
    })
    .into_future();
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    tracing::info!(?readiness_delay, "shutdown signal: readiness off");
    state
        .inner
        .lifecycle
        .draining
        .store(true, Ordering::Release);
    tokio::select! {
        result = &mut server => return result,
        () = tokio::time::sleep(readiness_delay) => {}
    }
    tracing::info!(
        in_flight = state.metrics().in_flight(),
        ?drain_timeout,
        "closing the listener and draining"
    );
    state
        .inner
        .lifecycle
        .stopping
        .store(true, Ordering::Release);
    let _ = close_tx.send(());
    match tokio::time::timeout(drain_timeout, &mut server).await {
        Ok(result) => {
            tracing::info!("drained");
            result
        }
        Err(_) => {
            tracing::warn!(
                in_flight = state.metrics().in_flight(),
                "drain timeout: abandoning in-flight requests"
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
