//! The metrics and trace middleware: counts and times every request by route template into
//! [`crate::metrics::Metrics`], keeps the in-flight gauge (business requests only) and, when
//! traces are on ([`crate::otel`]), runs the request in a server span named `METHOD route`,
//! child of the client's W3C `traceparent` if it sent one, with the trace id as the span field
//! `trace_id` (so every log line of the request carries it). Probes and scrapes get no span.
//!
//! Labels are bounded whatever clients send: the method is one of [`METHODS`] or `other`, the
//! route the matched template or [`UNMATCHED_ROUTE`] (so made-up methods and paths cannot grow
//! `/metrics` or the span names without bound).
//!
//! Room: part of `http/`; uses [`crate::metrics`], [`crate::otel`] and the `http` module
//! `state`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::http::state::AppState;
use crate::otel;

/// The methods that keep their own label (the standard ones of RFC 9110 and `PATCH`).
pub const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// The method label of any method not in [`METHODS`].
pub const OTHER_METHOD: &str = "other";

/// The route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method label of `method`: its name if standard, else [`OTHER_METHOD`].
pub fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| *m == method)
        .map_or(OTHER_METHOD, Method::as_str)
}

/// The route label of a request: the matched route template, else [`UNMATCHED_ROUTE`].
pub fn route_label(matched: Option<&MatchedPath>) -> &str {
    matched.map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
}

/// Middleware: counts and times every request by route template.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let metrics = state.metrics();
    let method = method_label(request.method()).to_owned();
    let route = route_label(request.extensions().get::<MatchedPath>()).to_owned();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_label_and_any_other_is_other() {
        for method in &METHODS {
            assert_eq!(method_label(method), method.as_str());
        }
        for made_up in ["FETCH", "get", "XYZZY", "PROPFIND"] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("a valid method token");
            assert_eq!(method_label(&method), OTHER_METHOD, "{made_up}");
        }
    }

    #[test]
    fn a_request_that_matched_no_route_is_unmatched() {
        assert_eq!(route_label(None), UNMATCHED_ROUTE);
    }
}
