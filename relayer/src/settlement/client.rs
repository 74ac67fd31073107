//! The HTTP settlement client: one POST per trade with its idempotency key (and, when
//! `settlement.credential` is set, the `settlement.credentialHeader: <credential>` header),
//! through the `settlement` circuit breaker and the configured retry policy, and the
//! classification of what the attempts said about the trade (see the parent module).
//!
//! Redirects are never followed (the credential would go along, and a redirect is not an
//! answer about the trade); a 2xx counts only when its body is the settlement answer,
//! `{"settled": "<idempotencyKey>"}` ([`confirms`], reading at most [`MAX_ANSWER_BYTES`]).
//!
//! Neither the credential nor a password in `settlement.url` shows in `Debug` or in an error.
//!
//! With traces on ([`crate::otel`]) each attempt is a client span whose W3C `traceparent` the
//! request carries, so the endpoint can continue the order's trace.
//!
//! May use: `otel`, `config`, `domain`, `resilience` (breaker, retry), and the parent's types.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tracing::Instrument as _;

use super::{SettleError, SettlementTrade};
use crate::config::{RelayerConfig, redact_url};
use crate::resilience::breaker::{BreakerError, BreakerRegistry, CircuitBreaker};
use crate::resilience::retry::{
    Retrier, RetryBudget, RetryMetrics, RetryPolicy, Retryable, is_retryable_status,
    parse_retry_after,
};

/// One HTTP attempt's failure.
#[derive(Debug)]
enum Attempt {
    /// Nothing was sent (connection refused).
    Refused(String),
    /// Sent, answer lost (timeout, broken connection).
    Lost(String),
    /// The endpoint answered an error status.
    Status(u16, Option<Duration>),
    /// The endpoint answered, but not that the trade is settled: a redirect (not followed) or
    /// a 2xx without the settlement answer. It may have acted on the request.
    Unconfirmed(u16, String),
    /// Not sent: the caller withdrew its permission (e.g. its saga's lease lapsed).
    Withheld,
}

/// An attempt as the retry loop sees it.
#[derive(Debug)]
struct AttemptError(BreakerError<Attempt>);

impl Retryable for AttemptError {
    fn is_retryable(&self) -> bool {
        match &self.0 {
            BreakerError::Open(_) => false,
            BreakerError::Timeout(_) => true,
            // NB: a repeat under the same key is safe, and may confirm the trade.
            BreakerError::Inner(
                Attempt::Refused(_) | Attempt::Lost(_) | Attempt::Unconfirmed(..),
            ) => true,
            BreakerError::Inner(Attempt::Status(s, _)) => is_retryable_status(*s),
            BreakerError::Inner(Attempt::Withheld) => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match &self.0 {
            BreakerError::Inner(Attempt::Status(_, ra)) => *ra,
            _ => None,
        }
    }
}

/// The most of a 2xx body read: the settlement answer is a few dozen bytes, and an endpoint
/// (or whatever answers in its place) must not make the relayer buffer megabytes per trade.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Whether `body` (a 2xx's) is the settlement answer for `idempotency_key`: a JSON object whose
/// `settled` is that key (other fields are ignored). Else why not, for the error.
fn confirms(body: &[u8], idempotency_key: &str) -> Result<(), String> {
    let expected = format!(r#"expected {{"settled": "{idempotency_key}"}}"#);
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| format!("the body is not JSON ({expected})"))?;
    match value.get("settled") {
        Some(serde_json::Value::String(key)) if key == idempotency_key => Ok(()),
        Some(serde_json::Value::String(key)) => {
            let shown: String = key.chars().take(80).collect();
            Err(format!(
                "`settled` names another key, {shown:?} ({expected})"
            ))
        }
        Some(other) => Err(format!(
            "`settled` is a {}, not the idempotency key ({expected})",
            json_kind(other)
        )),
        None if value.is_object() => Err(format!("the body has no `settled` ({expected})")),
        None => Err(format!(
            "the body is a JSON {}, not an object ({expected})",
            json_kind(&value)
        )),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Reads the body of `resp`, at most [`MAX_ANSWER_BYTES`] of it; `Ok(None)`: longer.
async fn read_bounded(mut resp: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The HTTP settlement client.
pub struct HttpSettlement {
    client: reqwest::Client,
    url: String,
    /// Sent with every request: the credential, if any (its value marked sensitive).
    headers: HeaderMap,
    breaker: Arc<CircuitBreaker>,
    retrier: Retrier,
}

impl fmt::Debug for HttpSettlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettlement")
            .field("url", &redact_url(&self.url))
            .field("headers", &self.headers)
            .field("breaker", &self.breaker)
            .field("retrier", &self.retrier)
            .finish_non_exhaustive()
    }
}

/// The headers every settlement request to `url` carries: `credentialHeader: credential`, if
/// set, parsed by reqwest itself (a request to `url` is built with them): `validate` has checked
/// both, and should either still not parse, the error is reqwest's (naming neither value).
fn credential_headers(
    client: &reqwest::Client,
    url: &str,
    config: &RelayerConfig,
) -> Result<HeaderMap, reqwest::Error> {
    let s = &config.settlement;
    let Some(credential) = &s.credential else {
        return Ok(HeaderMap::new());
    };
    let mut probe = client
        .post(url)
        .header(s.credential_header.as_str(), credential.as_str())
        .build()
        .map_err(reqwest::Error::without_url)?;
    let mut headers = std::mem::take(probe.headers_mut());
    for value in headers.values_mut() {
        // NB: sensitive values are left out of `Debug` and of HTTP/2 header compression.
        value.set_sensitive(true);
    }
    Ok(headers)
}

impl HttpSettlement {
    /// The client for the endpoint at `url`, with the breaker from `breakers`.
    pub(super) fn from_config(
        url: &str,
        config: &RelayerConfig,
        breakers: &BreakerRegistry,
        retry_metrics: Option<RetryMetrics>,
    ) -> Result<Self, reqwest::Error> {
        let s = &config.settlement;
        let mut policy = RetryPolicy::named(&s.retry.strategy).unwrap_or(RetryPolicy::BLOCKCHAIN);
        if let Some(n) = s.retry.max_retries {
            policy.max_retries = n;
        }
        if let Some(ms) = s.retry.initial_delay_ms {
            policy.initial_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = s.retry.max_delay_ms {
            policy.max_delay = Duration::from_millis(ms);
        }
        let client = reqwest::Client::builder()
            // NB: a redirect is answered, never followed: see `Attempt::Unconfirmed`.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(s.timeout_ms))
            .connect_timeout(Duration::from_millis(s.timeout_ms.min(2_000)))
            .build()?;
        let headers = credential_headers(&client, url, config)?;
        Ok(Self {
            client,
            url: url.to_owned(),
            headers,
            breaker: breakers.get_or_create("settlement", &config.circuit_breakers.settlement),
            retrier: Retrier::new(
                policy,
                Arc::new(RetryBudget::new(s.retry.budget_ratio, 1.0)),
                retry_metrics,
            ),
        })
    }

    async fn attempt(&self, trade: &SettlementTrade) -> Result<(), Attempt> {
        let span = crate::otel::span_if_enabled(|| {
            tracing::info_span!(
                "settlement request",
                otel.name = "POST settlement",
                otel.kind = "client",
                http.request.method = "POST",
                settlement.idempotency_key = %trade.idempotency_key,
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        });
        let mut headers = self.headers.clone();
        crate::otel::inject(&span, &mut headers);
        let result = self.send(trade, headers).instrument(span.clone()).await;
        match &result {
            Ok(()) => span.record("http.response.status_code", 200),
            Err(Attempt::Status(status, _) | Attempt::Unconfirmed(status, _)) => span
                .record("http.response.status_code", status)
                .record("otel.status_code", "error"),
            Err(_) => span.record("otel.status_code", "error"),
        };
        result
    }

    async fn send(&self, trade: &SettlementTrade, headers: HeaderMap) -> Result<(), Attempt> {
        let sent = self
            .client
            .post(&self.url)
            .headers(headers)
            .header("Idempotency-Key", &trade.idempotency_key)
            .json(trade)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                let status = resp.status().as_u16();
                match read_bounded(resp).await {
                    Ok(Some(body)) => confirms(&body, &trade.idempotency_key).map_err(|why| {
                        Attempt::Unconfirmed(status, format!("HTTP {status} unconfirmed: {why}"))
                    }),
                    Ok(None) => Err(Attempt::Unconfirmed(
                        status,
                        format!(
                            "HTTP {status} unconfirmed: the body is over {MAX_ANSWER_BYTES} bytes, \
                             not the settlement answer"
                        ),
                    )),
                    // NB: the answer was lost on the way, like a connection broken mid-answer.
                    Err(e) => Err(Attempt::Lost(e.without_url().to_string())),
                }
            }
            Ok(resp) if resp.status().is_redirection() => {
                let status = resp.status().as_u16();
                // NB: the target is not shown: it may carry a token in its query.
                Err(Attempt::Unconfirmed(
                    status,
                    format!(
                        "HTTP {status} redirect, not followed: a redirect does not say the trade \
                         is settled (is settlement.url the endpoint itself?)"
                    ),
                ))
            }
            Ok(resp) => {
                let ra = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                Err(Attempt::Status(resp.status().as_u16(), ra))
            }
            // NB: a refused connection never carried the request; anything else (timeout,
            // reset) may have. `without_url`: reqwest's text would show the URL's password.
            Err(e) if e.is_connect() && !e.is_timeout() => {
                Err(Attempt::Refused(e.without_url().to_string()))
            }
            Err(e) => Err(Attempt::Lost(e.without_url().to_string())),
        }
    }

    /// Settles `trade`, asking `may_send` before each attempt: once it says no, nothing more
    /// is sent and the answer is [`SettleError::InDoubt`] (an earlier attempt may have been
    /// accepted, and the caller's successor carries on).
    pub(super) async fn settle(
        &self,
        trade: &SettlementTrade,
        may_send: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), SettleError> {
        let doubt = AtomicBool::new(false);
        let result = self
            .retrier
            .run(
                "settlement",
                |_| async {
                    if !may_send() {
                        doubt.store(true, Ordering::Relaxed);
                        return Err(AttemptError(BreakerError::Inner(Attempt::Withheld)));
                    }
                    let r = self
                        .breaker
                        .call(self.attempt(trade), |e: &Attempt| match e {
                            Attempt::Status(s, _) => *s >= 500 || *s == 408 || *s == 429,
                            Attempt::Refused(_) | Attempt::Lost(_) | Attempt::Unconfirmed(..) => {
                                true
                            }
                            Attempt::Withheld => false,
                        })
                        .await
                        .map_err(AttemptError);
                    if matches!(
                        &r,
                        Err(AttemptError(
                            BreakerError::Timeout(_)
                                | BreakerError::Inner(Attempt::Lost(_) | Attempt::Unconfirmed(..))
                        ))
                    ) {
                        doubt.store(true, Ordering::Relaxed);
                    }
                    r
                },
                |error, retry, delay| {
                    tracing::warn!(error = ?error.0, retry, ?delay, key = %trade.idempotency_key, "retrying settlement");
                },
            )
            .await;
        let Err((AttemptError(last), _)) = result else {
            return Ok(());
        };
        let detail = match &last {
            BreakerError::Open(_) => "circuit breaker settlement is open".to_owned(),
            BreakerError::Timeout(_) => "no answer in time".to_owned(),
            BreakerError::Inner(Attempt::Refused(e) | Attempt::Lost(e)) => e.clone(),
            BreakerError::Inner(Attempt::Status(s, _)) => format!("HTTP {s}"),
            BreakerError::Inner(Attempt::Unconfirmed(_, why)) => why.clone(),
            BreakerError::Inner(Attempt::Withheld) => {
                "not sent again: the caller may no longer send it".to_owned()
            }
        };
        let rejected =
            matches!(last, BreakerError::Inner(Attempt::Status(s, _)) if !is_retryable_status(s));
        match (doubt.load(Ordering::Relaxed), rejected) {
            (true, true) => Err(SettleError::RejectedInDoubt(detail)),
            (true, false) => Err(SettleError::InDoubt(detail)),
            (false, true) => Err(SettleError::Rejected(detail)),
            (false, false) => Err(SettleError::NotSettled(detail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "trade:t-1";

    #[test]
    fn the_settlement_answer_for_the_key_sent_confirms() {
        assert_eq!(confirms(br#"{"settled": "trade:t-1"}"#, KEY), Ok(()));
        assert_eq!(
            confirms(br#"{"settled":"trade:t-1","at":"2026-01-01"}"#, KEY),
            Ok(())
        );
    }

    #[test]
    fn any_other_body_does_not_confirm_and_says_what_was_wrong() {
        let why = |body: &[u8]| confirms(body, KEY).expect_err("not confirmed");
        assert!(why(b"").contains("not JSON"), "{}", why(b""));
        assert!(why(b"<html>ok</html>").contains("not JSON"));
        assert!(why(b"{}").contains("no `settled`"));
        assert!(why(br#"{"ok": true}"#).contains("no `settled`"));
        assert!(why(br#"{"settled": true}"#).contains("`settled` is a boolean"));
        assert!(why(br#"{"settled": null}"#).contains("`settled` is a null"));
        assert!(why(br#"["trade:t-1"]"#).contains("not an object"));
        let other = why(br#"{"settled": "trade:t-2"}"#);
        assert!(other.contains(r#""trade:t-2""#), "{other}");
        assert!(
            other.contains(r#"expected {"settled": "trade:t-1"}"#),
            "{other}"
        );
    }

    #[test]
    fn a_long_foreign_key_is_cut_in_the_message() {
        let body = format!(r#"{{"settled": "{}"}}"#, "x".repeat(10_000));
        let why = confirms(body.as_bytes(), KEY).expect_err("not confirmed");
        assert!(why.len() < 300, "{why}");
    }
}
