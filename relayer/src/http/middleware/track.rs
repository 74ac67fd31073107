//! The metrics and trace middleware: counts and times every request by route template into
//! [`crate::metrics::Metrics`], keeps the in-flight gauge (business requests only) and, when
//! traces are on ([`crate::otel`]), runs the request in a server span named `METHOD route`,
//! child of the client's W3C `traceparent` if it sent one, with the trace id as the span field
//! `trace_id` (so every log line of the request carries it). Probes and scrapes get no span.
//!
//! Room: part of `http/`; uses [`crate::metrics`], [`crate::otel`] and the `http` module
//! `state`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::http::state::AppState;
use crate::otel;

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
    let span = if ops {
        tracing::Span::none()
    } else {
        otel::span_if_enabled(|| {
            let span = tracing::info_span!(
                "request",
                otel.name = format!("{method} {route}"),
                otel.kind = "server",
                http.request.method = %method,
                http.route = %route,
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            otel::set_remote_parent(&span, request.headers());
            otel::record_trace_id(&span);
            span
        })
    };
    let start = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    drop(guard);
    metrics.observe_http_request(
        method,
        route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}
