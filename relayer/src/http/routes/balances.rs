//! `/v2/balances/{userId}`: the caller's balances (API key).
//!
//! Room: part of `http/`; uses [`crate::domain`], [`crate::exchange`] and the `http` modules
//! `state`, `error`, `auth` and `views`.

use axum::Json;
use axum::extract::{Path, State};

use super::not_the_callers_user;
use crate::domain::UserId;
use crate::http::auth::ApiUser;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::http::views::{BalancesView, ErrorView};

/// The caller's balances.
#[utoipa::path(get, path = "/v2/balances/{userId}", tag = "balances",
    params(("userId" = String, Path, description = "0x address", pattern = "^0[xX][0-9a-fA-F]{40}$")),
    responses(
        (status = 200, description = "The balances", body = BalancesView),
        (status = 400, description = "Invalid userId", body = ErrorView),
        (status = 403, description = "userId is not the key's user", body = ErrorView),
    ),
    security(("apiKey" = [])))]
pub(crate) async fn balances(
    State(state): State<AppState>,
    ApiUser(caller): ApiUser,
    Path(user): Path<String>,
) -> Result<Json<BalancesView>, ApiError> {
    let user = UserId::parse("userId", &user)?;
    if user != caller {
        return Err(not_the_callers_user());
    }
    let account = state.exchange().account(&user).await?;
    Ok(Json(BalancesView::new(&user, account)))
}
