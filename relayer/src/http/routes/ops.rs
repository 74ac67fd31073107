//! Operations: the probes `/health` and `/ready`, `/metrics` and `/openapi.json`.
//!
//! Room: part of `http/`; uses [`crate::exchange`] (the store's ping), [`crate::metrics`] and
//! the `http` modules `state` and `views`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use utoipa::OpenApi;

use crate::http::state::AppState;
use crate::http::views::{ApiDoc, ProbeView};

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "probes", responses((status = 200, description = "Serving", body = ProbeView)))]
pub(crate) async fn health() -> Json<ProbeView> {
    Json(ProbeView {
        status: "ok".to_owned(),
    })
}

/// Readiness: the store answers and the process is not draining.
#[utoipa::path(get, path = "/ready", tag = "probes",
    responses(
        (status = 200, description = "Ready", body = ProbeView),
        (status = 503, description = "Draining or the store is unavailable", body = ProbeView),
    ))]
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ProbeView>) {
    let status = if state.lifecycle().is_draining() {
        Some("draining")
    } else if state.exchange().store().ping().await.is_err() {
        Some("store unavailable")
    } else {
        None
    };
    match status {
        None => (
            StatusCode::OK,
            Json(ProbeView {
                status: "ok".to_owned(),
            }),
        ),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ProbeView {
                status: why.to_owned(),
            }),
        ),
    }
}

/// Prometheus metrics (OpenMetrics text).
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}

pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Probes, metrics and the API document.
pub(crate) fn ops_routes() -> Router<AppState> {
    Router::new()
        .route("/health", routing::get(health))
        .route("/ready", routing::get(ready))
        .route("/metrics", routing::get(metrics))
        .route("/openapi.json", routing::get(openapi))
}
