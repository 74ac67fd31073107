//! The whole HTTP application: [`app`] puts the routes, their layers and the fallbacks together
//! into one [`Router`], which `crate::server` serves and tests call directly.
//!
//! Room: part of `http/`; uses the other `http` modules.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;

use crate::http::error::ApiError;
use crate::http::middleware::faults::FaultLayer;
use crate::http::middleware::guard::guard;
use crate::http::middleware::ratelimit::RateLimitLayer;
use crate::http::middleware::track::track;
use crate::http::routes::{self, BusinessLayers};
use crate::http::state::AppState;

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let config = state.config();
    let faults = &config.fault_injection;
    let layers = BusinessLayers {
        state: state.clone(),
        limit: state
            .limiter()
            .is_some()
            .then(|| RateLimitLayer::new(state.clone())),
        faults: (faults.error_rate > 0.0 || faults.added_latency_ms > 0)
            .then(|| FaultLayer(state.clone())),
    };
    let business = routes::business_routes(&layers);
    let mut router = business.merge(routes::ops_routes());
    if config.admin_token.is_some() {
        router = router.merge(routes::admin_routes(&state));
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
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            },
        ))
        .with_state(state)
}
