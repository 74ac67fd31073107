//! The metrics middleware: counts and times every request by route template into
//! [`crate::metrics::Metrics`], and keeps the in-flight gauge (business requests only).
//!
//! Room: part of `http/`; uses [`crate::metrics`] and the `http` module `state`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::state::AppState;

/// Middleware: counts and times every request by route template.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let metrics = state.metrics();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // NB: probes and scrapes are not work to drain: counting them would make a scrape of an
    // idle relayer read "1 in flight".
    let ops = matches!(route.as_str(), "/metrics" | "/health" | "/ready");
    let guard = (!ops).then(|| metrics.in_flight_guard());
    let start = Instant::now();
    let response = next.run(request).await;
    drop(guard);
    metrics.observe_http_request(
        method,
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}
