//! The one HTTP error type, [`ApiError`], and the input extractors that reject bad requests
//! with it. Handlers, middlewares (the guard, injected faults) and the rate limiter's 429
//! answer all go through it.
//!
//! Every error reaches the client as `{"error": {"code", "message", "field"?, "tier"?}}`
//! (`tier` only on rate-limit answers). Internal details go to the log, never to the client.
//!
//! Room: part of `http/`; uses [`crate::domain`] (field errors) and [`crate::exchange`] (its
//! errors' HTTP meaning).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::FieldError;
use crate::exchange::ExchangeError;
use crate::store::{FailedPlacement, FailureKind};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_field`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The input field at fault, if one is.
    pub field: Option<String>,
    /// The rate-limit tier that refused the request, on a 429.
    pub tier: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<&'a str>,
}

impl ApiError {
    /// An error without a field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            tier: None,
        }
    }

    /// A 400 naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: message.into(),
            field: Some(field.into()),
            tier: None,
        }
    }

    /// 429 from the rate limiter: `tier` refused the request.
    pub fn rate_limited(tier: &'static str, message: impl Into<String>) -> Self {
        Self {
            tier: Some(tier),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401 about the `Authorization` header.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            field: Some("authorization".to_owned()),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 503 because the store cannot be reached.
    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the relayer's store is unavailable; retry later",
        )
    }

    /// 500 with a generic message; the detail is logged here.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::field(e.field, e.message)
    }
}

impl From<ExchangeError> for ApiError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Store(inner) => {
                tracing::warn!(error = %inner, "store error");
                ApiError::store_unavailable()
            }
            ExchangeError::Balance(b) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "insufficient_balance",
                message: b.to_string(),
                field: Some("amount".to_owned()),
                tier: None,
            },
            ExchangeError::OrderIdConflict(_) => ApiError {
                field: Some("orderId".to_owned()),
                ..ApiError::new(StatusCode::CONFLICT, "order_id_conflict", e.to_string())
            },
            ExchangeError::Replayed(failed) => ApiError::of_failure(&failed),
            ExchangeError::PlacementInProgress(_) => {
                ApiError::new(StatusCode::CONFLICT, "placement_in_progress", e.to_string())
            }
            ExchangeError::NotPlaced(_, why) => ApiError {
                field: Some("orderId".to_owned()),
                ..ApiError::new(StatusCode::CONFLICT, "order_not_placed", why)
            },
            ExchangeError::OrderNotFound => ApiError::not_found("order"),
            ExchangeError::OrderNotOpen(_) => {
                ApiError::new(StatusCode::CONFLICT, "order_not_open", e.to_string())
            }
            ExchangeError::SettlementUnavailable(detail) => {
                tracing::warn!(%detail, "settlement unavailable: order undone");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "settlement_unavailable",
                    SETTLEMENT_UNAVAILABLE,
                )
            }
        }
    }
}

impl ApiError {
    /// The answer of a failed placement, as a repeat of it gets it again.
    pub fn of_failure(failed: &FailedPlacement) -> Self {
        match failed.kind {
            FailureKind::Refused => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "insufficient_balance",
                message: failed.message.clone(),
                field: Some("amount".to_owned()),
                tier: None,
            },
            FailureKind::NotSettled => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "settlement_unavailable",
                SETTLEMENT_UNAVAILABLE,
            ),
            FailureKind::NotPlaced => ApiError {
                field: Some("orderId".to_owned()),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "order_not_placed",
                    failed.message.clone(),
                )
            },
        }
    }
}

/// What a client is told when settlement said "not settled".
const SETTLEMENT_UNAVAILABLE: &str =
    "settlement is unavailable; the order was not placed and nothing stays reserved";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                tier: self.tier,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body, rejected with an [`ApiError`] naming the field on any problem: wrong content
/// type (415), too large (413), malformed JSON, missing or unknown fields, wrong types (400).
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or_default().trim();
                mime.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(ApiError {
                field: Some("content-type".to_owned()),
                ..ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "expected Content-Type: application/json",
                )
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError {
                    field: Some("body".to_owned()),
                    ..ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "request body is too large",
                    )
                }
            } else {
                ApiError::field("body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// Deserialises `bytes`, naming the field at fault in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    result.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::field("body", format!("malformed JSON: {inner}"));
        }
        let message = inner.to_string();
        // NB: for a missing or unknown field serde reports the enclosing object as the path
        // and the field name in backticks in the message.
        let field = if path.is_empty() || path == "." {
            backticked(&message).unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        ApiError::field(field, strip_position(&message))
    })
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// serde_json appends " at line 1 column 42"; the client gets the field name instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Probe {
        market_key: String,
        amount: String,
    }

    fn field_of(json: &str) -> Option<String> {
        parse_json::<Probe>(json.as_bytes())
            .expect_err("rejected")
            .field
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(field_of(r#"{"amount":"1"}"#).as_deref(), Some("marketKey"));
        assert_eq!(
            field_of(r#"{"marketKey":"a","amount":"1","x":1}"#).as_deref(),
            Some("x")
        );
        assert_eq!(
            field_of(r#"{"marketKey":"a","amount":5}"#).as_deref(),
            Some("amount")
        );
        assert_eq!(field_of(r#"{"marketKey":"a""#).as_deref(), Some("body"));
        assert_eq!(field_of("[]").as_deref(), Some("body"));
    }
}
