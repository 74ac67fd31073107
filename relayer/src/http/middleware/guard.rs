//! The guard around every request: refuses new requests once the server is stopping (503,
//! `Connection: close`) and bounds each request's time (`limits.requestTimeoutMs`, 503).
//!
//! Room: part of `http/`; uses the `http` modules `state` and `error`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Refuses new requests while stopping and bounds each request's time.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
