//! The routes of the HTTP API, one file per group: [`orders`], [`book`] (market data),
//! [`balances`], [`admin`] and [`ops`] (probes, metrics, the API document); and how the
//! business routes are wrapped in the rate limiter and injected faults (`BusinessLayers`).
//!
//! Room: part of `http/`; its files use [`crate::clock`], [`crate::domain`], [`crate::book`],
//! [`crate::exchange`], [`crate::metrics`] and the `http` modules `state`, `error`, `auth`,
//! `views` and `middleware`.

pub mod admin;
pub mod balances;
pub mod book;
pub mod ops;
pub mod orders;

use axum::extract::rejection::QueryRejection;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Router, routing};
use tower::Layer;
use tower::layer::util::Stack;

pub(crate) use self::admin::admin_routes;
pub(crate) use self::ops::ops_routes;
use crate::http::error::ApiError;
use crate::http::middleware::faults::FaultLayer;
use crate::http::middleware::ratelimit::RateLimitLayer;
use crate::http::state::AppState;

/// 403: the `userId` of the request is not the API key's user.
fn not_the_callers_user() -> ApiError {
    ApiError {
        field: Some("userId".to_owned()),
        ..ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the API key does not act for this userId",
        )
    }
}

fn query_error(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let field = text
        .find('`')
        .and_then(|s| {
            text[s + 1..]
                .find('`')
                .map(|l| text[s + 1..s + 1 + l].to_owned())
        })
        .unwrap_or_else(|| "query".to_owned());
    ApiError::field(field, text)
}

/// The business routes inside `layers`; those whose handler reads the caller's user
/// ([`ApiUser`](crate::http::auth::ApiUser)) are handed the user the rate limiter resolved.
pub(crate) fn business_routes(layers: &BusinessLayers) -> Router<AppState> {
    use self::balances::balances;
    use self::book::{depth, open_orders};
    use self::orders::{cancel_order, get_order, place_order};
    let user = &layers.for_api_user();
    Router::new()
        .route("/v2/orders", on(MethodFilter::POST, place_order, user))
        .route(
            "/v2/orders/{id}",
            on(MethodFilter::GET, get_order, user).merge(on(
                MethodFilter::DELETE,
                cancel_order,
                user,
            )),
        )
        .route("/v2/depth", on(MethodFilter::GET, depth, layers))
        .route(
            "/v2/balances/{userId}",
            on(MethodFilter::GET, balances, user),
        )
        .route(
            "/orderbook/orders",
            on(MethodFilter::GET, open_orders, layers),
        )
}

/// What every business handler runs inside, outermost first: the rate limiter, then injected
/// faults (so injected faults are rate limited like real work).
#[derive(Debug, Clone)]
pub(crate) struct BusinessLayers {
    /// The state the handlers are bound to when a layer wraps them.
    pub(crate) state: AppState,
    pub(crate) limit: Option<RateLimitLayer>,
    pub(crate) faults: Option<FaultLayer>,
}

impl BusinessLayers {
    /// The layers for a handler that reads the caller's user ([`ApiUser`](crate::http::auth::ApiUser)): the limiter hands
    /// over the user it resolved the API key to.
    fn for_api_user(&self) -> Self {
        Self {
            limit: self.limit.clone().map(RateLimitLayer::handing_over_user),
            ..self.clone()
        }
    }
}

/// `handler` for the methods of `filter`, inside `layers`.
///
/// NB: the layers wrap the handler's own service (`handler.with_state(..)`), the endpoint the
/// route calls, rather than the route ([`Router::route_layer`]) or the handler
/// ([`Handler::layer`]). A route layer is one more boxed service level, which axum clones on
/// every request; a handler layer builds its service anew on every request and drives it
/// through a oneshot future of its own. Wrapping the endpoint costs neither.
fn on<H, T>(filter: MethodFilter, handler: H, layers: &BusinessLayers) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let endpoint = || handler.clone().with_state(layers.state.clone());
    match (&layers.limit, &layers.faults) {
        (None, None) => routing::on(filter, handler),
        (Some(limit), None) => routing::on_service(filter, limit.layer(endpoint())),
        (None, Some(faults)) => routing::on_service(filter, faults.layer(endpoint())),
        (Some(limit), Some(faults)) => routing::on_service(
            filter,
            Stack::new(faults.clone(), limit.clone()).layer(endpoint()),
        ),
    }
}
