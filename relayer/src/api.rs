//! HTTP routes, request and response bodies, and the authentication extractors.
//!
//! Amounts and prices travel as decimal strings of integers. Each handler validates its input
//! into domain types ([`crate::domain`]) before calling [`crate::exchange::Exchange`].

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router, routing};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower::Layer;
use tower::layer::util::Stack;
use utoipa::{OpenApi, ToSchema};

use crate::domain::{
    Account, Asset, Balance, MarketKey, Order, OrderStatus, Side, UserId, parse_u64,
    validate_order_id,
};
use crate::error::{ApiError, ValidJson};
use crate::exchange::NewOrder;
use crate::ratelimit::RateLimitLayer;
use crate::server::{AppState, FaultLayer, now_ms};

/// Default and largest number of depth levels per side.
const DEFAULT_DEPTH_LEVELS: usize = 50;
const MAX_DEPTH_LEVELS: usize = 500;

/// The user an API key acts for (from `Authorization: Bearer <apiKey>`).
#[derive(Debug, Clone)]
pub struct ApiUser(pub UserId);

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key>"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <key>`"))
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts)?;
        // NB: the rate limiter has usually resolved the key already.
        let resolved = match parts.extensions.get::<crate::ratelimit::ResolvedUser>() {
            Some(r) => r.0.clone(),
            None => state.exchange().authenticate(key).await?,
        };
        match resolved {
            Some(user) => Ok(ApiUser(user)),
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
    }
}

/// Proof that the request carries the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.config().admin_token.as_deref() else {
            return Err(ApiError::not_found("route"));
        };
        let given = bearer(parts)?;
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("wrong admin token"))
        }
    }
}

/// `POST /v2/orders` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// Client-chosen id and idempotency key (1 to 64 of `[A-Za-z0-9_.:-]`); generated when
    /// absent.
    #[serde(default)]
    pub order_id: Option<String>,
    /// `chainId:marketId`.
    #[schema(example = "80002:1")]
    pub market_key: String,
    /// Owner: must be the API key's user.
    #[schema(example = "0x1111111111111111111111111111111111111111")]
    pub user_id: String,
    /// `buy` or `sell`.
    pub side: Side,
    /// Limit price in millionths, decimal string, 0 < price < 1000000.
    #[schema(example = "550000")]
    pub price: String,
    /// Shares, decimal string, at least 1.
    #[schema(example = "100")]
    pub amount: String,
}

/// An order as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// Identifier.
    pub order_id: String,
    /// Market.
    pub market_key: String,
    /// Owner.
    pub user_id: String,
    /// Side.
    pub side: Side,
    /// Limit price in millionths.
    pub price: String,
    /// Shares ordered.
    pub amount: String,
    /// Shares filled.
    pub filled: String,
    /// Shares still open (0 once filled or cancelled).
    pub remaining: String,
    /// Collateral paid (buy) or received (sell) so far.
    pub collateral: String,
    /// Lifecycle.
    pub status: OrderStatus,
    /// Arrival, milliseconds since the Unix epoch.
    pub created_at: u64,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        let remaining = if o.status.is_open() { o.remaining() } else { 0 };
        Self {
            order_id: o.order_id.clone(),
            market_key: o.market_key.to_string(),
            user_id: o.user_id.to_string(),
            side: o.side,
            price: o.price.to_string(),
            amount: o.amount.to_string(),
            filled: o.filled.to_string(),
            remaining: remaining.to_string(),
            collateral: o.paid.to_string(),
            status: o.status,
            created_at: o.created_at_ms,
        }
    }
}

/// One trade of a placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FillView {
    /// Trade id.
    pub trade_id: String,
    /// The resting order it traded with.
    pub maker_order_id: String,
    /// Execution price (the resting order's).
    pub price: String,
    /// Shares.
    pub amount: String,
    /// Collateral paid by the buyer.
    pub collateral: String,
}

/// `POST /v2/orders` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrderResponse {
    /// The order after matching.
    pub order: OrderView,
    /// Trades made by this placement.
    pub fills: Vec<FillView>,
}

/// `GET /v2/depth` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepthQuery {
    /// `chainId:marketId`.
    pub market_key: Option<String>,
    /// Levels per side, 1 to 500 (default 50).
    pub levels: Option<String>,
}

/// One aggregated price level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LevelView {
    /// Price in millionths.
    pub price: String,
    /// Σ open shares.
    pub amount: String,
    /// Resting orders.
    pub orders: usize,
}

/// `GET /v2/depth` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepthView {
    /// Market.
    pub market_key: String,
    /// Bids, best (highest) first.
    pub bids: Vec<LevelView>,
    /// Asks, best (lowest) first.
    pub asks: Vec<LevelView>,
}

/// `GET /orderbook/orders` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenOrdersQuery {
    /// `chainId:marketId` (required).
    pub market_key: Option<String>,
    /// Only this user's orders.
    pub user_id: Option<String>,
}

/// `GET /orderbook/orders` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrdersView {
    /// Open orders in arrival order.
    pub orders: Vec<OrderView>,
}

/// One asset's balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BalanceView {
    /// Free to use.
    pub available: String,
    /// Held for open orders.
    pub reserved: String,
}

impl From<Balance> for BalanceView {
    fn from(b: Balance) -> Self {
        Self {
            available: b.available.to_string(),
            reserved: b.reserved.to_string(),
        }
    }
}

/// `GET /v2/balances/{userId}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalancesView {
    /// Owner.
    pub user_id: String,
    /// Collateral.
    pub collateral: BalanceView,
    /// Outcome shares by market key.
    pub shares: BTreeMap<String, BalanceView>,
}

impl BalancesView {
    fn new(user: &UserId, account: Account) -> Self {
        Self {
            user_id: user.to_string(),
            collateral: account.collateral.into(),
            shares: account
                .shares
                .into_iter()
                .map(|(m, b)| (m.to_string(), b.into()))
                .collect(),
        }
    }
}

/// `POST /admin/api-keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// The user the key will act for.
    pub user_id: String,
}

/// `POST /admin/api-keys` answer. The key is shown once; only its hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    /// Identifier for revocation.
    pub key_id: String,
    /// The key, for `Authorization: Bearer <apiKey>`.
    pub api_key: String,
    /// Its user.
    pub user_id: String,
}

/// `POST /admin/deposits` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepositRequest {
    /// Receiver.
    pub user_id: String,
    /// `collateral` or a market key (outcome shares of that market).
    pub asset: String,
    /// Decimal string, at least 1.
    pub amount: String,
}

/// `/health` and `/ready` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProbeView {
    /// `ok`, or why not.
    pub status: String,
}

fn order_view_response(status: StatusCode, body: PlaceOrderResponse, replayed: bool) -> Response {
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Places an order: reserve, match, move balances. Repeating an `orderId` returns the first
/// answer (with `Idempotent-Replayed: true`) and trades nothing.
#[utoipa::path(post, path = "/v2/orders", tag = "orders",
    request_body = PlaceOrderRequest,
    responses(
        (status = 201, description = "Placed (or replayed)", body = PlaceOrderResponse),
        (status = 400, description = "Invalid field"), (status = 401, description = "No or unknown API key"),
        (status = 403, description = "userId is not the key's user"), (status = 409, description = "orderId used by another order"),
        (status = 413, description = "Body too large"), (status = 422, description = "Insufficient balance"),
        (status = 503, description = "Store unavailable"),
    ),
    security(("apiKey" = [])))]
async fn place_order(
    State(state): State<AppState>,
    ApiUser(caller): ApiUser,
    ValidJson(req): ValidJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let order_id = match &req.order_id {
        Some(id) => validate_order_id("orderId", id)?,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let market_key = MarketKey::parse("marketKey", &req.market_key)?;
    let user_id = UserId::parse("userId", &req.user_id)?;
    let price = parse_u64("price", &req.price)?;
    if price == 0 || price >= crate::domain::PRICE_SCALE {
        return Err(ApiError::field(
            "price",
            "must be between 1 and 999999 (millionths)",
        ));
    }
    let amount = parse_u64("amount", &req.amount)?;
    let max = state.config().limits.max_order_amount;
    if amount == 0 || amount > max {
        return Err(ApiError::field(
            "amount",
            format!("must be between 1 and {max}"),
        ));
    }
    if user_id != caller {
        return Err(ApiError {
            field: Some("userId".to_owned()),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the API key does not act for this userId",
            )
        });
    }
    let placement = state
        .exchange()
        .place(
            NewOrder {
                order_id,
                market_key,
                user_id,
                side: req.side,
                price,
                amount,
            },
            now_ms(),
        )
        .await?;
    let record = &placement.record;
    let body = PlaceOrderResponse {
        order: OrderView::from(&record.order),
        fills: record
            .fills
            .iter()
            .map(|f| FillView {
                trade_id: f.trade_id.clone(),
                maker_order_id: f.maker_order_id.clone(),
                price: f.price.to_string(),
                amount: f.amount.to_string(),
                collateral: f.collateral.to_string(),
            })
            .collect(),
    };
    Ok(order_view_response(
        StatusCode::CREATED,
        body,
        placement.replayed,
    ))
}

fn path_order_id(raw: &str) -> Result<String, ApiError> {
    validate_order_id("orderId", raw).map_err(ApiError::from)
}

/// One of the caller's orders.
#[utoipa::path(get, path = "/v2/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 401), (status = 404)),
    security(("apiKey" = [])))]
async fn get_order(
    State(state): State<AppState>,
    ApiUser(caller): ApiUser,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = path_order_id(&id)?;
    let order = state.exchange().order_of(&id, &caller).await?;
    Ok(Json(OrderView::from(&order)))
}

/// Cancels one of the caller's open orders and releases its reservation.
#[utoipa::path(delete, path = "/v2/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 401), (status = 404), (status = 409, description = "Not open")),
    security(("apiKey" = [])))]
async fn cancel_order(
    State(state): State<AppState>,
    ApiUser(caller): ApiUser,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = path_order_id(&id)?;
    let order = state.exchange().cancel(&id, &caller).await?;
    Ok(Json(OrderView::from(&order)))
}

fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
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

fn required_market(raw: Option<&str>) -> Result<MarketKey, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::field("marketKey", "is required"))?;
    Ok(MarketKey::parse("marketKey", raw)?)
}

/// Aggregated bid and ask levels of one market.
#[utoipa::path(get, path = "/v2/depth", tag = "market data", params(DepthQuery),
    responses((status = 200, body = DepthView), (status = 400)))]
async fn depth(
    State(state): State<AppState>,
    query: Result<Query<DepthQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DepthView>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let market = required_market(q.market_key.as_deref())?;
    let levels = match q.levels.as_deref() {
        None => DEFAULT_DEPTH_LEVELS,
        Some(raw) => {
            let n = parse_u64("levels", raw)?;
            usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_DEPTH_LEVELS).contains(n))
                .ok_or_else(|| {
                    ApiError::field(
                        "levels",
                        format!("must be between 1 and {MAX_DEPTH_LEVELS}"),
                    )
                })?
        }
    };
    let (bids, asks) = state.exchange().depth(&market, levels).await?;
    let view = |l: crate::book::Level| LevelView {
        price: l.price.to_string(),
        amount: l.amount.to_string(),
        orders: l.orders,
    };
    Ok(Json(DepthView {
        market_key: market.to_string(),
        bids: bids.into_iter().map(view).collect(),
        asks: asks.into_iter().map(view).collect(),
    }))
}

/// Open orders of a market, optionally of one user (public).
#[utoipa::path(get, path = "/orderbook/orders", tag = "market data", params(OpenOrdersQuery),
    responses((status = 200, body = OrdersView), (status = 400)))]
async fn open_orders(
    State(state): State<AppState>,
    query: Result<Query<OpenOrdersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OrdersView>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let market = required_market(q.market_key.as_deref())?;
    let user = q
        .user_id
        .as_deref()
        .map(|u| UserId::parse("userId", u))
        .transpose()?;
    let orders = state.exchange().open_orders(&market, user.as_ref()).await?;
    Ok(Json(OrdersView {
        orders: orders.iter().map(OrderView::from).collect(),
    }))
}

/// The caller's balances.
#[utoipa::path(get, path = "/v2/balances/{userId}", tag = "balances",
    params(("userId" = String, Path, description = "0x address")),
    responses((status = 200, body = BalancesView), (status = 401), (status = 403)),
    security(("apiKey" = [])))]
async fn balances(
    State(state): State<AppState>,
    ApiUser(caller): ApiUser,
    Path(user): Path<String>,
) -> Result<Json<BalancesView>, ApiError> {
    let user = UserId::parse("userId", &user)?;
    if user != caller {
        return Err(ApiError {
            field: Some("userId".to_owned()),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the API key does not act for this userId",
            )
        });
    }
    let account = state.exchange().account(&user).await?;
    Ok(Json(BalancesView::new(&user, account)))
}

/// Issues an API key for a user (admin).
#[utoipa::path(post, path = "/admin/api-keys", tag = "admin", request_body = CreateApiKeyRequest,
    responses((status = 201, body = ApiKeyView), (status = 400), (status = 401)),
    security(("adminToken" = [])))]
async fn create_api_key(
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
async fn revoke_api_key(
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
async fn deposit(
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
            crate::exchange::ExchangeError::Balance(b) => ApiError::field("amount", b.to_string()),
            other => other.into(),
        })?;
    Ok(Json(BalancesView::new(&user, account)))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "probes", responses((status = 200, body = ProbeView)))]
async fn health() -> Json<ProbeView> {
    Json(ProbeView {
        status: "ok".to_owned(),
    })
}

/// Readiness: the store answers and the process is not draining.
#[utoipa::path(get, path = "/ready", tag = "probes",
    responses((status = 200, body = ProbeView), (status = 503, body = ProbeView)))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ProbeView>) {
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
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Foresight relayer", description = "Orders, order books, matching and balances of the Foresight prediction market."),
    paths(place_order, get_order, cancel_order, depth, open_orders, balances, create_api_key, revoke_api_key, deposit, health, ready),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["apiKey", "adminToken"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The business routes (subject to fault injection and, later, rate limiting).
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
    query: Result<axum::extract::Query<SagaQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(q) = query.map_err(query_error)?;
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
        .map_err(|e| ApiError::from(crate::exchange::ExchangeError::Store(e)))?;
    Ok(Json(serde_json::json!({ "sagas": sagas })))
}

/// The business routes inside `layers`; those whose handler reads the caller's user
/// ([`ApiUser`]) are handed the user the rate limiter resolved.
pub(crate) fn business_routes(layers: &BusinessLayers) -> Router<AppState> {
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
    /// The layers for a handler that reads the caller's user ([`ApiUser`]): the limiter hands
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

/// Probes, metrics and the API document.
pub(crate) fn ops_routes() -> Router<AppState> {
    Router::new()
        .route("/health", routing::get(health))
        .route("/ready", routing::get(ready))
        .route("/metrics", routing::get(metrics))
        .route("/openapi.json", routing::get(openapi))
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
