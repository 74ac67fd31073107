//! Authentication: the bearer token of `Authorization: Bearer <token>`, read in one place
//! ([`bearer_token`]) by the extractors here and by the rate limiter, and the extractors
//! [`ApiUser`] (the user an API key acts for) and [`Admin`] (the admin token).
//!
//! Room: part of `http/`; uses [`crate::domain`], [`crate::exchange`] (API keys) and the `http`
//! modules `state`, `error` and `middleware::ratelimit` (the user the limiter resolved).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use crate::domain::UserId;
use crate::http::error::ApiError;
use crate::http::middleware::ratelimit::ResolvedUser;
use crate::http::state::AppState;

/// The token of `Authorization: Bearer <token>`, trimmed; `None` when the header is missing,
/// not text, of another scheme, or has an empty token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// [`bearer_token`], or the 401 that says what is wrong with the header.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::unauthorized(
            "missing Authorization: Bearer <key>",
        ));
    }
    bearer_token(&parts.headers)
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <key>`"))
}

/// The user an API key acts for (from `Authorization: Bearer <apiKey>`).
#[derive(Debug, Clone)]
pub struct ApiUser(pub UserId);

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts)?;
        // NB: the rate limiter has usually resolved the key already.
        let resolved = match parts.extensions.get::<ResolvedUser>() {
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
