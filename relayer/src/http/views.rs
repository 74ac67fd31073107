//! The request and response bodies of the HTTP API, and its OpenAPI document ([`ApiDoc`]):
//! every constraint the handlers check is in its schemas (patterns, bounds), and the answers
//! of the layers around the handlers (429, 503, 401, 413, 415) are added to every operation
//! they cover by one modifier (`CommonResponses`).
//!
//! Amounts and prices travel as decimal strings of integers. Handlers (`http::routes`)
//! validate requests into domain types ([`crate::domain`]) before calling
//! [`crate::exchange::Exchange`], and answer with these views.
//!
//! Room: part of `http/`; uses [`crate::domain`] and `http::routes` (the handlers the OpenAPI
//! document describes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::domain::{Account, Balance, Order, OrderStatus, Side, UserId};
use crate::http::routes::{admin, balances, book, ops, orders};

/// `POST /v2/orders` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// Client-chosen id and idempotency key (1 to 64 of `[A-Za-z0-9_.:-]`); generated when
    /// absent.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$", example = "my-order-1")]
    pub order_id: Option<String>,
    /// `chainId:marketId` in canonical decimal (or a lower-case `0x` market id).
    #[schema(
        pattern = "^[1-9][0-9]{0,18}:(0|[1-9][0-9]{0,18}|0x[0-9a-f]{1,64})$",
        example = "80002:1"
    )]
    pub market_key: String,
    /// Owner: must be the API key's user.
    #[schema(
        pattern = "^0[xX][0-9a-fA-F]{40}$",
        example = "0x1111111111111111111111111111111111111111"
    )]
    pub user_id: String,
    /// `buy` or `sell`.
    pub side: Side,
    /// Limit price in millionths, decimal string, 0 < price < 1000000.
    #[schema(pattern = "^0*[1-9][0-9]{0,5}$", max_length = 20, example = "550000")]
    pub price: String,
    /// Shares, decimal string, 1 to `limits.maxOrderAmount` (the pattern is the default,
    /// 10^12).
    #[schema(
        pattern = "^0*([1-9][0-9]{0,11}|1000000000000)$",
        max_length = 20,
        example = "100"
    )]
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
            order_id: o.client_id().to_owned(),
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

/// A placement or cancellation accepted but not finished (202): see `GET /v2/orders/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingView {
    /// The client's order id.
    pub order_id: String,
    /// `pending` (placement running), `manual` (parked for a person) or `cancel_pending`
    /// (cancelled; the release of its reservation is finished by recovery).
    pub state: String,
}

/// One trade of a placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FillView {
    /// Trade id.
    pub trade_id: String,
    /// The resting order it traded with (its owner's order id).
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
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepthQuery {
    /// `chainId:marketId`.
    #[param(required = true, value_type = String, pattern = "^[1-9][0-9]{0,18}:(0|[1-9][0-9]{0,18}|0x[0-9a-f]{1,64})$", example = "80002:1")]
    pub market_key: Option<String>,
    /// Levels per side, 1 to 500 (default 50).
    #[param(required = false, value_type = u32, minimum = 1, maximum = 500, default = 50)]
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
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenOrdersQuery {
    /// `chainId:marketId` (required).
    #[param(required = true, value_type = String, pattern = "^[1-9][0-9]{0,18}:(0|[1-9][0-9]{0,18}|0x[0-9a-f]{1,64})$", example = "80002:1")]
    pub market_key: Option<String>,
    /// Only this user's orders.
    #[param(required = false, value_type = String, pattern = "^0[xX][0-9a-fA-F]{40}$")]
    pub user_id: Option<String>,
    /// Orders per page, 1 to 500 (default 100).
    #[param(required = false, value_type = u32, minimum = 1, maximum = 500, default = 100)]
    pub limit: Option<String>,
    /// Where the page starts: the previous page's `nextCursor` (opaque); absent for the first.
    // NB: the pattern is what the server accepts today (an arrival number); clients should
    // not build cursors themselves.
    #[param(required = false, value_type = String, pattern = "^(0|[1-9][0-9]{0,18})$")]
    pub cursor: Option<String>,
}

/// `GET /orderbook/orders` answer: one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrdersView {
    /// Open orders in arrival order.
    pub orders: Vec<OrderView>,
    /// The `cursor` of the next page; `null` when this is the last.
    pub next_cursor: Option<String>,
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
    pub(crate) fn new(user: &UserId, account: Account) -> Self {
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
    #[schema(
        pattern = "^0[xX][0-9a-fA-F]{40}$",
        example = "0x1111111111111111111111111111111111111111"
    )]
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
    #[schema(
        pattern = "^0[xX][0-9a-fA-F]{40}$",
        example = "0x1111111111111111111111111111111111111111"
    )]
    pub user_id: String,
    /// `collateral` or a market key (outcome shares of that market).
    #[schema(
        pattern = "^(collateral|[1-9][0-9]{0,18}:(0|[1-9][0-9]{0,18}|0x[0-9a-f]{1,64}))$",
        example = "collateral"
    )]
    pub asset: String,
    /// Decimal string, at least 1; a deposit that would overflow the balance is refused (400).
    // NB: at most 18 digits in the pattern: below 10^18, so the document's valid deposits
    // stay far from the u64 ceiling the server refuses.
    #[schema(pattern = "^0*[1-9][0-9]{0,17}$", max_length = 20, example = "1000000")]
    pub amount: String,
}

/// `/health` and `/ready` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProbeView {
    /// `ok`, or why not.
    pub status: String,
}

/// Every error answer: `{"error": {...}}` (built by `http::error::ApiError`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorView {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_field`, `unauthorized`, `rate_limited`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The input field at fault, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// The rate-limit tier that refused the request (on a 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tier: Option<String>,
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Foresight relayer", description = "Orders, order books, matching and balances of the Foresight prediction market."),
    paths(
        orders::place_order, orders::get_order, orders::cancel_order, book::depth, book::open_orders,
        balances::balances, admin::create_api_key, admin::revoke_api_key, admin::deposit, ops::health,
        ops::ready
    ),
    components(schemas(ErrorView, ErrorDetail)),
    modifiers(&SecuritySchemes, &CommonResponses)
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

/// The answers that come from the layers around the handlers rather than from the handlers
/// themselves, added to every operation they apply to (an operation's own entry for the same
/// status wins):
/// - 503 on every route: the guard refuses requests while the relayer stops and ends any
///   request that outlives `limits.requestTimeoutMs`; the limiter, the store and the settlement
///   breaker answer it on the business and admin routes.
/// - 429 on every route but the probes: the rate limiter wraps the business routes, the
///   `rateLimit.admin` tier the admin ones (`http::routes`); probes and `/openapi.json` are
///   outside it.
/// - 400, 413 and 415 on every operation with a JSON body (`http::error::ValidJson`), 401 on
///   every one that needs a token. (A 400 about a parameter is the route's own entry.)
struct CommonResponses;

impl CommonResponses {
    /// The tag of the routes outside the rate limiter.
    const UNLIMITED_TAG: &'static str = "probes";
}

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorView")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let limited = !op
                    .tags
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|t| t == Self::UNLIMITED_TAG));
                let mut common = Vec::new();
                if op.request_body.is_some() {
                    common.push(("400", "Invalid body; `error.field` names the field"));
                }
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    common.push(("401", "No, malformed or unknown token"));
                }
                if op.request_body.is_some() {
                    common.push(("413", "Body larger than `limits.maxBodyBytes`"));
                    common.push(("415", "Content-Type is not application/json"));
                }
                if limited {
                    common.push((
                        "429",
                        "Rate limited (`error.tier`; `Retry-After` says when to retry)",
                    ));
                }
                common.push((
                    "503",
                    "Unavailable: shutting down, request timed out, or a store, limiter or \
                     settlement outage",
                ));
                for (status, description) in common {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                }
            }
        }
    }
}
