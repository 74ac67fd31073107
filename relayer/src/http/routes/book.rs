//! Market data: `/v2/depth` (aggregated levels) and `/orderbook/orders` (open orders, one page
//! at a time: `limit` and `cursor`); public.
//!
//! Room: part of `http/`; uses [`crate::book`], [`crate::domain`], [`crate::exchange`] and the
//! `http` modules `state`, `error` and `views`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use super::query_error;
use crate::book::{MAX_PAGE, PageRequest};
use crate::domain::{MarketKey, UserId, parse_u64};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::http::views::{
    DepthQuery, DepthView, LevelView, OpenOrdersQuery, OrderView, OrdersView,
};

/// Default and largest number of depth levels per side.
const DEFAULT_DEPTH_LEVELS: usize = 50;
const MAX_DEPTH_LEVELS: usize = 500;

/// Default number of orders per page of `/orderbook/orders` (at most [`MAX_PAGE`]).
const DEFAULT_PAGE: usize = 100;

fn required_market(raw: Option<&str>) -> Result<MarketKey, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::field("marketKey", "is required"))?;
    Ok(MarketKey::parse("marketKey", raw)?)
}

/// Aggregated bid and ask levels of one market.
#[utoipa::path(get, path = "/v2/depth", tag = "market data", params(DepthQuery),
    responses(
        (status = 200, description = "Bids and asks", body = DepthView),
        (status = 400, description = "Invalid or missing parameter", body = crate::http::views::ErrorView),
    ))]
pub(crate) async fn depth(
    State(state): State<AppState>,
    query: Result<Query<DepthQuery>, QueryRejection>,
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
    responses(
        (status = 200, description = "One page of open orders", body = OrdersView),
        (status = 400, description = "Invalid or missing parameter", body = crate::http::views::ErrorView),
    ))]
pub(crate) async fn open_orders(
    State(state): State<AppState>,
    query: Result<Query<OpenOrdersQuery>, QueryRejection>,
) -> Result<Json<OrdersView>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let market = required_market(q.market_key.as_deref())?;
    let user = q
        .user_id
        .as_deref()
        .map(|u| UserId::parse("userId", u))
        .transpose()?;
    let page = PageRequest {
        after: q.cursor.as_deref().map(parse_cursor).transpose()?,
        limit: page_limit(q.limit.as_deref())?,
    };
    let page = state
        .exchange()
        .open_orders_page(&market, user.as_ref(), page)
        .await?;
    Ok(Json(OrdersView {
        orders: page.orders.iter().map(OrderView::from).collect(),
        next_cursor: page.next.map(|after| after.to_string()),
    }))
}

/// `limit`: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
fn page_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_PAGE);
    };
    parse_u64("limit", raw)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| {
            ApiError::field(
                "limit",
                format!("must be an integer between 1 and {MAX_PAGE}"),
            )
        })
}

/// `cursor`: a `nextCursor` this route answered (the arrival number of the last order of the
/// previous page, in canonical decimal; clients treat it as opaque).
fn parse_cursor(raw: &str) -> Result<u64, ApiError> {
    let canonical = raw == "0" || (!raw.starts_with('0') && !raw.is_empty());
    parse_u64("cursor", raw)
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| ApiError::field("cursor", "must be a nextCursor of an earlier page"))
}
