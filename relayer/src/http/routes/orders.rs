//! `/v2/orders`: place, read and cancel orders (API key).
//!
//! Room: part of `http/`; uses [`crate::clock`], [`crate::domain`], [`crate::exchange`] and the
//! `http` modules `state`, `error`, `auth` and `views`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::not_the_callers_user;
use crate::clock::now_ms;
use crate::domain::{MarketKey, UserId, parse_u64, validate_order_id};
use crate::exchange::{Cancelled, ExchangeError, Found, NewOrder, Placed};
use crate::http::auth::ApiUser;
use crate::http::error::{ApiError, ValidJson};
use crate::http::state::AppState;
use crate::http::views::{
    ErrorView, FillView, OrderView, PendingView, PlaceOrderRequest, PlaceOrderResponse,
};

fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// 202 with the order id and its state, pointing at where to look later.
fn accepted(order_id: &str, state: &str) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(PendingView {
            order_id: order_id.to_owned(),
            state: state.to_owned(),
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v2/orders/{order_id}")) {
        response.headers_mut().insert("location", location);
    }
    response
}

/// Places an order: reserve, match, settle, move balances. The placement runs on its own: the
/// request waits for it at most `limits.placementWaitMs`, then answers 202 with the order id
/// (a client that hangs up cancels nothing). Repeating an `orderId` with the same order
/// returns the first answer, success or failure (with `Idempotent-Replayed: true`), and
/// trades nothing; a failed placement's `orderId` is spent.
#[utoipa::path(post, path = "/v2/orders", tag = "orders",
    request_body = PlaceOrderRequest,
    responses(
        (status = 201, description = "Placed (or replayed)", body = PlaceOrderResponse),
        (status = 202, description = "Accepted, still running (or parked for manual handling)", body = PendingView),
        (status = 403, description = "userId is not the key's user", body = ErrorView),
        (status = 409, description = "orderId used by another order, or not placed", body = ErrorView),
        (status = 422, description = "Insufficient balance", body = ErrorView),
        (status = 503, description = "Store or settlement unavailable (the order was not placed), or shutting down", body = ErrorView),
    ),
    security(("apiKey" = [])))]
pub(crate) async fn place_order(
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
        return Err(not_the_callers_user());
    }
    let placed = state
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
        .await;
    let placement = match placed {
        Ok(Placed::Done(placement)) => placement,
        Ok(Placed::Pending { order_id, state }) => return Ok(accepted(&order_id, state)),
        Err(ExchangeError::Replayed(failed)) => {
            return Ok(replayed(ApiError::of_failure(&failed).into_response()));
        }
        Err(e) => return Err(e.into()),
    };
    let record = &placement.record;
    let body = PlaceOrderResponse {
        order: OrderView::from(&record.order),
        fills: record
            .fills
            .iter()
            .map(|f| FillView {
                trade_id: f.trade_id.clone(),
                maker_order_id: f.maker_client_id().to_owned(),
                price: f.price.to_string(),
                amount: f.amount.to_string(),
                collateral: f.collateral.to_string(),
            })
            .collect(),
    };
    let response = (StatusCode::CREATED, Json(body)).into_response();
    Ok(if placement.replayed {
        replayed(response)
    } else {
        response
    })
}

fn path_order_id(raw: &str) -> Result<String, ApiError> {
    validate_order_id("orderId", raw).map_err(ApiError::from)
}

/// One of the caller's orders; 202 while its placement is still running.
#[utoipa::path(get, path = "/v2/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id", pattern = "^[A-Za-z0-9_.:-]{1,64}$")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 202, description = "Its placement is still running", body = PendingView),
        (status = 400, description = "Invalid order id", body = ErrorView),
        (status = 404, description = "No such order of the caller's", body = ErrorView),
    ),
    security(("apiKey" = [])))]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    ApiUser(caller): ApiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_order_id(&id)?;
    Ok(match state.exchange().order_of(&id, &caller).await? {
        Found::Order(order) => Json(OrderView::from(&order)).into_response(),
        Found::Pending => accepted(&id, "pending"),
    })
}

/// Cancels one of the caller's open orders and releases its reservation; 202 when the
/// cancellation is logged but not finished (recovery finishes it).
#[utoipa::path(delete, path = "/v2/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id", pattern = "^[A-Za-z0-9_.:-]{1,64}$")),
    responses(
        (status = 200, description = "Cancelled", body = OrderView),
        (status = 202, description = "Cancellation logged, finished by recovery", body = PendingView),
        (status = 400, description = "Invalid order id", body = ErrorView),
        (status = 404, description = "No such order of the caller's", body = ErrorView),
        (status = 409, description = "Not open, or its placement still running", body = ErrorView),
    ),
    security(("apiKey" = [])))]
pub(crate) async fn cancel_order(
    State(state): State<AppState>,
    ApiUser(caller): ApiUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_order_id(&id)?;
    Ok(match state.exchange().cancel(&id, &caller).await? {
        Cancelled::Done(order) => Json(OrderView::from(&order)).into_response(),
        Cancelled::Pending => accepted(&id, "cancel_pending"),
    })
}
