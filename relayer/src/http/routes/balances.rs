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
use crate::http::views::BalancesView;

/// The caller's balances.
#[utoipa::path(get, path = "/v2/balances/{userId}", tag = "balances",
    params(("userId" = String, Path, description = "0x address")),
    responses((status = 200, body = BalancesView), (status = 401), (status = 403)),
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
