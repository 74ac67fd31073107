//! The request and response bodies of the HTTP API, and its OpenAPI document ([`ApiDoc`]).
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

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Foresight relayer", description = "Orders, order books, matching and balances of the Foresight prediction market."),
    paths(
        orders::place_order, orders::get_order, orders::cancel_order, book::depth, book::open_orders,
        balances::balances, admin::create_api_key, admin::revoke_api_key, admin::deposit, ops::health,
        ops::ready
    ),
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
