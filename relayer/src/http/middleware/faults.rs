//! Fault injection for game days and tests: a tower layer around each business handler that
//! adds the configured latency, then answers 500 at the configured rate
//! (`faultInjection.addedLatencyMs`, `faultInjection.errorRate`).
//!
//! Room: part of `http/`; uses the `http` modules `state` and `error`.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::take_readied;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Injects the configured faults before a business handler runs: the added latency, then
/// errors at the configured rate (game days and tests only).
#[derive(Debug, Clone)]
pub(crate) struct FaultLayer(pub(crate) AppState);

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
