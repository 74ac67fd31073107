//! `/admin`: API keys, deposits, circuit breakers and the saga log (admin token). Mounted only
//! when an admin token is configured.
//!
//! Room: part of `http/`; uses [`crate::clock`], [`crate::domain`], [`crate::exchange`] (with
//! its order sagas and breakers) and the `http` modules `state`, `error`, `auth` and `views`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Json, Router, routing};

use super::query_error;
use crate::clock::now_ms;
use crate::domain::{Asset, UserId, parse_u64};
use crate::exchange::ExchangeError;
use crate::http::auth::Admin;
use crate::http::error::{ApiError, ValidJson};
use crate::http::state::AppState;
use crate::http::views::{ApiKeyView, BalancesView, CreateApiKeyRequest, DepositRequest};

/// Issues an API key for a user (admin).
#[utoipa::path(post, path = "/admin/api-keys", tag = "admin", request_body = CreateApiKeyRequest,
    responses((status = 201, body = ApiKeyView), (status = 400), (status = 401)),
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
#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204), (status = 401), (status = 404)),
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
    responses((status = 200, body = BalancesView), (status = 400), (status = 401)),
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

/// The `/admin` routes; mounted only when an admin token is configured.
pub(crate) fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", routing::post(create_api_key))
        .route("/admin/api-keys/{id}", routing::delete(revoke_api_key))
        .route("/admin/deposits", routing::post(deposit))
        .route("/admin/breakers", routing::get(admin_breakers))
        .route("/admin/sagas", routing::get(admin_sagas))
}
