//! `/admin`: API keys, deposits, circuit breakers and the saga log (admin token). Mounted only
//! when an admin token is configured. With the rate limiter on, every `/admin` request first
//! passes the `rateLimit.admin` tier (`admin_limit`): per client IP, over all the admin
//! routes together, before the token is even looked at, so guessing tokens meets 429.
//!
//! Room: part of `http/`; uses [`crate::clock`], [`crate::domain`], [`crate::exchange`] (with
//! its order sagas and breakers), [`crate::ratelimit`] (in-memory counters, the client IP) and
//! the `http` modules `state`, `error`, `auth` and `views`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};

use super::query_error;
use crate::clock::{SystemClock, now_ms};
use crate::domain::{Asset, UserId, parse_u64};
use crate::exchange::ExchangeError;
use crate::http::auth::Admin;
use crate::http::error::{ApiError, ValidJson};
use crate::http::state::AppState;
use crate::http::views::{ApiKeyView, BalancesView, CreateApiKeyRequest, DepositRequest};
use crate::ratelimit::client_ip::client_key;
use crate::ratelimit::counters::{Check, Client, Key, MemoryCounters};
use crate::ratelimit::window::Spec;

/// Issues an API key for a user (admin).
#[utoipa::path(post, path = "/admin/api-keys", tag = "admin", request_body = CreateApiKeyRequest,
    responses((status = 201, description = "Issued", body = ApiKeyView)),
    security(("adminToken" = [])))]
pub(crate) async fn create_api_key(
    State(state): State<AppState>,
    _admin: Admin,
    ValidJson(req): ValidJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyView>), ApiError> {
    let user = UserId::parse("userId", &req.user_id)?;
    let (key_id, api_key) = state.exchange().issue_api_key(&user, now_ms()).await?;
    tracing::info!(%user, key_id, "api key issued");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyView {
            key_id,
            api_key,
            user_id: user.to_string(),
        }),
    ))
}

/// Revokes an API key (admin).
#[utoipa::path(delete, path = "/admin/api-keys/{keyId}", tag = "admin",
    params(("keyId" = String, Path, description = "The `keyId` its issue answered")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key", body = crate::http::views::ErrorView),
    ),
    security(("adminToken" = [])))]
pub(crate) async fn revoke_api_key(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.exchange().revoke_api_key(&id).await? {
        tracing::info!(key_id = %id, "api key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("api key"))
    }
}

/// Credits collateral or shares to a user (admin; for funding test users).
#[utoipa::path(post, path = "/admin/deposits", tag = "admin", request_body = DepositRequest,
    responses((status = 200, description = "The user's balances after the deposit", body = BalancesView)),
    security(("adminToken" = [])))]
pub(crate) async fn deposit(
    State(state): State<AppState>,
    _admin: Admin,
    ValidJson(req): ValidJson<DepositRequest>,
) -> Result<Json<BalancesView>, ApiError> {
    let user = UserId::parse("userId", &req.user_id)?;
    let asset = Asset::parse("asset", &req.asset)?;
    let amount = parse_u64("amount", &req.amount)?;
    if amount == 0 {
        return Err(ApiError::field("amount", "must be at least 1"));
    }
    let account = state
        .exchange()
        .deposit(&user, asset, amount)
        .await
        .map_err(|e| match e {
            ExchangeError::Balance(b) => ApiError::field("amount", b.to_string()),
            other => other.into(),
        })?;
    Ok(Json(BalancesView::new(&user, account)))
}

/// `GET /admin/breakers`: statistics of every circuit breaker.
async fn admin_breakers(State(state): State<AppState>, _admin: Admin) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "breakers": state.breakers().stats() }))
}

/// Query of `GET /admin/sagas`.
#[derive(Debug, serde::Deserialize)]
struct SagaQuery {
    state: Option<String>,
}

/// `GET /admin/sagas?state=manual`: entries of the saga log, optionally in one state
/// (`running`, `pending`, `compensating`, `manual`).
async fn admin_sagas(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<SagaQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    if let Some(s) = &q.state
        && !["running", "pending", "compensating", "manual"].contains(&s.as_str())
    {
        return Err(ApiError::field(
            "state",
            "must be running, pending, compensating or manual",
        ));
    }
    let sagas = state
        .exchange()
        .sagas()
        .list(q.state.as_deref())
        .await
        .map_err(|e| ApiError::from(ExchangeError::Store(e)))?;
    Ok(Json(serde_json::json!({ "sagas": sagas })))
}

/// Client IPs the admin tier keeps counters for at most (a few hundred bytes each): a flood
/// from many addresses evicts the idle ones rather than growing memory.
const ADMIN_LIMITER_KEYS: usize = 10_000;

/// The `rateLimit.admin` tier of one relayer process: its own in-memory counters, apart from
/// the business tiers (an operator's admin calls spend none of their clients' budgets).
#[derive(Debug, Clone)]
struct AdminLimit {
    state: AppState,
    counters: Arc<MemoryCounters>,
    spec: Spec,
}

/// Middleware of the `/admin` routes: counts the request against its client IP's admin
/// budget and answers 429 (with `Retry-After`) once that is spent, whatever token it carries.
async fn admin_limit(State(limit): State<AdminLimit>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let ip = match limit.state.limiter() {
        Some(limiter) => limiter.client_ip(peer, request.headers()),
        None => peer,
    };
    // NB: keyed like `perIp`: an IPv6 client's whole network shares one budget, else one /64
    // would hold 2^64 of them.
    let key = client_key(ip, limit.state.config().rate_limit.ipv6_prefix);
    let checks = [Check {
        key: Key::Client(Client::Ip(key)),
        spec: limit.spec,
    }];
    let decision = limit.counters.check_now(&checks);
    match decision.outcomes.first() {
        Some(outcome) if !outcome.allowed => {
            let retry_s = outcome.retry_after_ms.div_ceil(1000).max(1);
            let mut response = ApiError::rate_limited(
                "admin",
                format!(
                    "rate limit of tier admin exceeded ({} requests per {} ms); retry in \
                     {retry_s} s",
                    limit.spec.limit, limit.spec.window_ms
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_s));
            response
        }
        _ => next.run(request).await,
    }
}

/// The `/admin` routes; mounted only when an admin token is configured. With the rate limiter
/// on and `rateLimit.admin` set, they pass [`admin_limit`] first.
pub(crate) fn admin_routes(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .route("/admin/api-keys", routing::post(create_api_key))
        .route("/admin/api-keys/{id}", routing::delete(revoke_api_key))
        .route("/admin/deposits", routing::post(deposit))
        .route("/admin/breakers", routing::get(admin_breakers))
        .route("/admin/sagas", routing::get(admin_sagas));
    let rate_limit = &state.config().rate_limit;
    match (state.limiter(), rate_limit.admin) {
        (Some(_), Some(tier)) => {
            let limit = AdminLimit {
                state: state.clone(),
                counters: Arc::new(MemoryCounters::new(
                    ADMIN_LIMITER_KEYS,
                    Arc::new(SystemClock),
                )),
                spec: Spec {
                    window_ms: tier.window_ms,
                    limit: tier.max_requests,
                    buckets: u64::from(rate_limit.buckets),
                },
            };
            routes.route_layer(middleware::from_fn_with_state(limit, admin_limit))
        }
        _ => routes,
    }
}
