//! The rate limiter as a tower layer over the business routes: it reads the caller (client IP,
//! API key, route template) from the request, asks the [`Limiter`], and either passes the
//! request on with the rate-limit fields added to the response or answers 429 (503 when the
//! counters fail closed) with the one [`ApiError`] body. With the API keys and the counters in
//! memory the layer decides inside `call`, without a future of its own; with Redis it waits
//! for them in one boxed future.
//!
//! Room: part of `http/`; uses [`crate::ratelimit`], [`crate::exchange`] (API keys),
//! [`crate::domain`] and the `http` modules before it (state, error, auth).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::take_readied;
use crate::domain::UserId;
use crate::http::auth::bearer_token;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::ratelimit::{Checks, Limiter, RateHeaders, Verdict};

/// The user an API key resolved to, left in the request's extensions by a limiter that hands
/// it over ([`RateLimitLayer::handing_over_user`]) so the handler does not look the key up
/// again.
#[derive(Debug, Clone)]
pub struct ResolvedUser(pub Option<UserId>);

/// What the limiter does with a request.
#[derive(Debug)]
enum Step {
    /// Pass it to the route, then add these fields to the response (none when the store
    /// failed open, or no tier applies).
    Admit(Option<RateHeaders>),
    /// Answer it: 429, or 503 when the store fails closed.
    Refuse(Response),
}

/// The parts of a request the limiter reads.
struct Caller<'r> {
    ip: IpAddr,
    /// The API key, when the limiter needs the user.
    api_key: Option<&'r str>,
    method: &'r str,
    /// The matched route template.
    route: &'r str,
}

impl Caller<'_> {
    /// The counters this caller's request touches, as `user` when its API key named one.
    fn checks<'a>(&self, limiter: &'a Limiter, user: Option<&'a UserId>) -> Checks<'a> {
        limiter.checks(self.ip, user, self.method, self.route)
    }
}

/// The parts of `request` the limiter reads.
fn caller<'r>(limiter: &Limiter, request: &'r Request) -> Caller<'r> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let api_key = if limiter.wants_user() {
        bearer_token(request.headers())
    } else {
        None
    };
    Caller {
        ip: limiter.client_ip(peer, request.headers()),
        api_key,
        method: request.method().as_str(),
        route: request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| request.uri().path(), |p| p.as_str()),
    }
}

/// The step a verdict on `checks` calls for.
fn step(limiter: &Limiter, checks: &Checks<'_>, verdict: Verdict) -> Step {
    match verdict {
        Verdict::Allowed(tightest, now_ms) => {
            Step::Admit(tightest.map(|tightest| limiter.rate_headers(checks, tightest, now_ms)))
        }
        Verdict::Denied(first, now_ms) => {
            let retry_s = first.outcome.retry_after_ms.div_ceil(1000).max(1);
            let mut response = ApiError::rate_limited(
                first.tier.as_str(),
                format!(
                    "rate limit of tier {} exceeded ({} requests per {} ms); retry in {retry_s} s",
                    first.tier.as_str(),
                    first.outcome.limit,
                    first.window_ms
                ),
            )
            .into_response();
            limiter
                .rate_headers(checks, first, now_ms)
                .apply(response.headers_mut());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_s));
            Step::Refuse(response)
        }
        Verdict::FailedOpen => Step::Admit(None),
        Verdict::FailedClosed => Step::Refuse(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limiter_unavailable",
                "the rate limiter's store is unavailable; retry later",
            )
            .into_response(),
        ),
    }
}

/// Leaves the user an API key resolved to for the handler, when the request goes on and the
/// handler reads it (`to_handler`).
fn hand_over(request: &mut Request, step: &Step, user: Option<Option<UserId>>, to_handler: bool) {
    if let (true, Step::Admit(_), Some(user)) = (to_handler, step, user) {
        request.extensions_mut().insert(ResolvedUser(user));
    }
}

/// Decides `request` when neither the API keys nor the counters need waiting for (both in
/// memory); `None` when one would wait, and then nothing was counted.
fn admit_now(
    state: &AppState,
    limiter: &Limiter,
    request: &mut Request,
    hand_over_user: bool,
) -> Option<Step> {
    let caller = caller(limiter, request);
    // `None`: no key looked up (or the lookup failed: the handler's own lookup then answers
    // 503 as usual); `Some(None)`: a key that names no user.
    let user = match caller.api_key {
        Some(key) => state.exchange().authenticate_now(key)?.ok(),
        None => None,
    };
    let checks = caller.checks(limiter, user.as_ref().and_then(Option::as_ref));
    let step = step(limiter, &checks, limiter.decide_now(&checks)?);
    hand_over(request, &step, user, hand_over_user);
    Some(step)
}

/// [`admit_now`], waiting for the stores.
async fn admit(
    state: &AppState,
    limiter: &Limiter,
    request: &mut Request,
    hand_over_user: bool,
) -> Step {
    let caller = caller(limiter, request);
    let user = match caller.api_key {
        Some(key) => state.exchange().authenticate(key).await.ok(),
        None => None,
    };
    let checks = caller.checks(limiter, user.as_ref().and_then(Option::as_ref));
    let step = step(limiter, &checks, limiter.decide(&checks).await);
    hand_over(request, &step, user, hand_over_user);
    step
}

/// The limiter as a tower layer over the business routes. It wraps each business handler's
/// service (`handler.with_state(..)`), the endpoint the router calls once it has matched
/// the route, so the matched route template is known.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    state: AppState,
    hand_over_user: bool,
}

impl RateLimitLayer {
    /// The layer for the relayer's state (a no-op when its limiter is off).
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            hand_over_user: false,
        }
    }

    /// The layer for a handler that reads the caller's user: the user the limiter resolved
    /// an API key to is left in the request as [`ResolvedUser`]. Other handlers are spared
    /// the clone and the extension (a handler that reads the user without it looks the key
    /// up itself).
    #[must_use]
    pub fn handing_over_user(self) -> Self {
        Self {
            hand_over_user: true,
            ..self
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            state: self.state.clone(),
            hand_over_user: self.hand_over_user,
        }
    }
}

/// The service [`RateLimitLayer`] wraps a route in. With both stores in memory it decides
/// in `call` and wraps the route's own future; otherwise it waits for the stores in a boxed
/// future.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    state: AppState,
    hand_over_user: bool,
}

pin_project! {
    /// The future of [`RateLimit`].
    #[project = Projection]
    pub enum ResponseFuture<F> {
        /// Admitted: the route's future, then the rate-limit fields.
        Admitted { #[pin] inner: F, headers: Option<RateHeaders> },
        /// Answered by the limiter.
        Refused { #[pin] response: Ready<Result<Response, Infallible>> },
        /// Waiting for the stores, then maybe for the route.
        Waiting { future: BoxFuture<'static, Response> },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projection::Admitted { inner, headers } => {
                let Ok(mut response) = ready!(inner.poll(cx));
                if let Some(headers) = headers.take() {
                    headers.apply(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            Projection::Refused { response } => response.poll(cx),
            Projection::Waiting { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let Some(limiter) = self.state.limiter() else {
            return ResponseFuture::Admitted {
                inner: self.inner.call(request),
                headers: None,
            };
        };
        match admit_now(&self.state, limiter, &mut request, self.hand_over_user) {
            Some(Step::Admit(headers)) => ResponseFuture::Admitted {
                inner: self.inner.call(request),
                headers,
            },
            Some(Step::Refuse(response)) => ResponseFuture::Refused {
                response: ready(Ok(response)),
            },
            None => {
                let mut inner = take_readied(&mut self.inner);
                let state = self.state.clone();
                let hand_over_user = self.hand_over_user;
                let future = async move {
                    let Some(limiter) = state.limiter() else {
                        let Ok(response) = inner.call(request).await;
                        return response;
                    };
                    match admit(&state, limiter, &mut request, hand_over_user).await {
                        Step::Admit(headers) => {
                            let Ok(mut response) = inner.call(request).await;
                            if let Some(headers) = headers {
                                headers.apply(response.headers_mut());
                            }
                            response
                        }
                        Step::Refuse(response) => response,
                    }
                };
                ResponseFuture::Waiting {
                    future: Box::pin(future),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;
    use crate::ratelimit::counters::MemoryCounters;
    use crate::ratelimit::limiter::X_RATELIMIT_LIMIT;

    /// Whether the handler behind a [`RateLimit`] finds the user the limiter resolved.
    async fn handler_finds_user(layer: RateLimitLayer, key: &str) -> Option<Option<UserId>> {
        let handler = tower::service_fn(|request: Request| async move {
            let found = request.extensions().get::<ResolvedUser>().cloned();
            let mut response = Response::new(axum::body::Body::empty());
            response.extensions_mut().insert(found);
            Ok::<_, Infallible>(response)
        });
        let mut service = layer.layer(handler);
        let mut request = Request::new(axum::body::Body::empty());
        *request.uri_mut() = axum::http::Uri::from_static("/v2/orders");
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).expect("header"),
        );
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        let Ok(response) = service.call(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key(X_RATELIMIT_LIMIT));
        response
            .extensions()
            .get::<Option<ResolvedUser>>()
            .cloned()
            .flatten()
            .map(|r| r.0)
    }

    #[tokio::test]
    async fn the_resolved_user_is_handed_only_to_handlers_that_read_it() {
        let state = AppState::with_limiter(
            crate::config::RelayerConfig::default(),
            crate::store::Store::memory(),
            Some(Arc::new(MemoryCounters::new(1_000, Arc::new(SystemClock)))),
        )
        .expect("state");
        let user =
            UserId::parse("userId", "0x1111111111111111111111111111111111111111").expect("user");
        let (_, key) = state.exchange().issue_api_key(&user, 0).await.expect("key");
        let layer = RateLimitLayer::new(state);
        assert_eq!(
            handler_finds_user(layer.clone().handing_over_user(), &key).await,
            Some(Some(user.clone()))
        );
        assert_eq!(
            handler_finds_user(layer.clone().handing_over_user(), "not-a-key").await,
            Some(None),
            "a key that names nobody is handed over as such"
        );
        assert_eq!(handler_finds_user(layer, &key).await, None);
    }
}
