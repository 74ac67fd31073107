//! Logging setup and the operator's own HTTP server: `/metrics`, `/health` and `/ready`.
//!
//! The server takes its listener and shutdown signal from the caller, so tests bind
//! `127.0.0.1:0` and run it in-process.
//!
//! May use: [`crate::metrics`] only (and `relayer::otel`, the traces both binaries share).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Installs the global `tracing` subscriber: `json` lines for log pipelines, text otherwise,
/// and, when the standard `OTEL_*` variables ask for traces ([`relayer::otel`]), the
/// OpenTelemetry layer with the operator's own spans (reconciles and cutover steps, at `info`
/// whatever `filter` says; log lines then name the spans they happened in, with their
/// `trace_id`). Answers the tracer provider to flush at exit; an `OTEL_*` variable this build
/// cannot follow is an error naming it. Must run inside the tokio runtime.
pub fn init_logging(
    filter: &str,
    json: bool,
) -> Result<Option<relayer::otel::Tracing>, relayer::otel::OtelError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::new(filter);
    let logs = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let ours = || {
        tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span()
                && meta.target().starts_with("relayer_operator")
                && *meta.level() <= tracing::Level::INFO
        })
    };
    let (traces, spans) = match relayer::otel::install("relayer-operator")? {
        Some((traces, tracer)) => {
            let spans = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(ours());
            (Some(traces), Some(spans))
        }
        None => (None, None),
    };
    let logs = match spans {
        Some(_) => logs.with_filter(filter.or(ours())).boxed(),
        None => logs.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(spans).with(logs).init();
    Ok(traces)
}

/// What the HTTP server reports: metrics and readiness.
#[derive(Clone)]
pub struct Health {
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the operator is either leading with warm caches or standing by.
    pub ready: Arc<AtomicBool>,
}

impl Health {
    /// Fresh state: not ready yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the operator ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The routes of the operator's HTTP server.
pub fn app(state: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<Health>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn ready(State(state): State<Health>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Serves [`app`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_follows_the_flag_and_metrics_are_served() {
        let state = Health::new(Arc::new(Metrics::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        assert!(get("/ready").await.starts_with("HTTP/1.1 503"));
        state.set_ready(true);
        assert!(get("/ready").await.starts_with("HTTP/1.1 200"));
        assert!(get("/health").await.starts_with("HTTP/1.1 200"));
        assert!(
            get("/metrics")
                .await
                .contains("relayer_operator_reconcile_total")
        );
        let _ = stop.send(());
        server.await.expect("join").expect("server");
    }
}
