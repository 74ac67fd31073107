//! The tiered sliding-window rate limiter: the relayer's first line of defence.
//!
//! - [`config`]: `rateLimit` of the relayer config (no server dependencies).
//! - [`window`]: the sliding-window arithmetic and its error bound. Pure.
//! - [`store`]: counters in memory (per replica) or in Redis (shared), both deciding every tier
//!   of a request in one atomic step.
//! - This module: the [`Limiter`] (client identity, which counters a request touches, metrics,
//!   the store-failure policy) and the tower layer [`RateLimitLayer`] with its response fields.
//!   With the API keys and the counters in memory the layer decides inside `call`, without a
//!   future of its own; with Redis it waits for them in one boxed future.
//!
//! Tiers: `global` (one key), `perIp`, `perUser` (when the request carries a valid API key) and
//! `perEndpoint` (route template and method, per client: the user when authenticated, else the
//! IP). A request is admitted only if every tier admits it, and a denied request counts against
//! no tier.

pub mod config;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod window;

#[cfg(feature = "server")]
pub use server_side::*;

#[cfg(feature = "server")]
mod server_side {
    use std::convert::Infallible;
    use std::future::{Future, Ready, ready};
    use std::net::{IpAddr, SocketAddr};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::task::{Context, Poll, ready};

    use axum::extract::{ConnectInfo, MatchedPath, Request};
    use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use bytes::BytesMut;
    use futures::future::BoxFuture;
    use ipnet::IpNet;
    use pin_project_lite::pin_project;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use tower::{Layer, Service};

    use super::config::{OnStoreError, RateLimitConfig, TierLimit};
    use super::store::{Check, Client, CounterStore, Decision, Key, StoreFailure};
    use super::window::{Outcome, Spec};
    use crate::domain::UserId;
    use crate::server::AppState;

    /// A tier of the limiter.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Tier {
        /// Every request.
        Global,
        /// Per client IP.
        PerIp,
        /// Per authenticated user.
        PerUser,
        /// Per route and client.
        PerEndpoint,
    }

    impl Tier {
        /// The tier's name in config, headers, bodies and metrics.
        pub fn as_str(self) -> &'static str {
            match self {
                Tier::Global => "global",
                Tier::PerIp => "perIp",
                Tier::PerUser => "perUser",
                Tier::PerEndpoint => "perEndpoint",
            }
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct TierResult {
        tier: &'static str,
        result: &'static str,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct TierLabel {
        tier: &'static str,
    }

    /// The user an API key resolved to, left in the request's extensions by a limiter that hands
    /// it over ([`RateLimitLayer::handing_over_user`]) so the handler does not look the key up
    /// again.
    #[derive(Debug, Clone)]
    pub struct ResolvedUser(pub Option<UserId>);

    const TIERS: [Tier; 4] = [Tier::Global, Tier::PerIp, Tier::PerUser, Tier::PerEndpoint];
    const RESULTS: [&str; 4] = ["allowed", "denied", "error_allowed", "error_denied"];

    /// One tier's metric handles, resolved once so a decision only touches atomics.
    #[derive(Debug)]
    struct TierMetrics {
        /// Counters by [`RESULTS`] index.
        results: [Counter; 4],
        usage: Gauge<f64, AtomicU64>,
    }

    /// One `perEndpoint` entry, parsed.
    #[derive(Debug)]
    struct Endpoint {
        /// The method, or `None` for any.
        method: Option<String>,
        /// The route template.
        route: String,
        /// The entry's key in config (`METHOD /route` or `/route`), which names its counters.
        name: String,
        limit: TierLimit,
    }

    /// The limiter of one relayer process.
    #[derive(Debug)]
    pub struct Limiter {
        config: RateLimitConfig,
        trusted: Vec<IpNet>,
        store: Arc<dyn CounterStore>,
        /// By [`TIERS`] index.
        metrics: [TierMetrics; 4],
        endpoints: Vec<Endpoint>,
        /// `RateLimit-Policy` values, built once, by [`policy_index`].
        policies: Vec<HeaderValue>,
        /// Set while the store is failing: the incident is logged once, on the way in, and once
        /// on recovery.
        failing: AtomicBool,
    }

    /// One tier's part in a decision.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TierOutcome {
        /// Which tier.
        pub tier: Tier,
        /// Its window in ms.
        pub window_ms: u64,
        /// What the counters said.
        pub outcome: Outcome,
    }

    /// What the limiter decided for a request, with the one tier its response describes and
    /// the store's clock (ms since the epoch).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Verdict {
        /// Admitted; the tightest tier (least remaining, then latest reset), `None` when no tier
        /// applies.
        Allowed(Option<TierOutcome>, u64),
        /// Denied; of the tiers that deny, the one with the longest wait.
        Denied(TierOutcome, u64),
        /// The store failed and the policy admits.
        FailedOpen,
        /// The store failed and the policy denies.
        FailedClosed,
    }

    /// The counters one request touches, in tier order (at most one per tier).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Checks<'a> {
        len: usize,
        tiers: [Tier; 4],
        checks: [Check<'a>; 4],
        /// Which `RateLimit-Policy` value describes these tiers.
        policy: usize,
    }

    /// Fills the unused places of [`Checks`].
    const UNUSED: Check<'static> = Check {
        key: Key::Global,
        spec: Spec {
            window_ms: 0,
            limit: 0,
            buckets: 1,
        },
    };

    impl<'a> Checks<'a> {
        fn new() -> Self {
            Self {
                len: 0,
                tiers: TIERS,
                checks: [UNUSED; 4],
                policy: 0,
            }
        }

        fn push(&mut self, tier: Tier, key: Key<'a>, spec: Spec) {
            // NB: one check per tier, and there are four tiers.
            if let (Some(t), Some(c)) =
                (self.tiers.get_mut(self.len), self.checks.get_mut(self.len))
            {
                *t = tier;
                *c = Check { key, spec };
                self.len += 1;
            }
        }

        /// The tier of each check.
        pub fn tiers(&self) -> &[Tier] {
            &self.tiers[..self.len]
        }

        /// The counters, as the store takes them.
        pub fn checks(&self) -> &[Check<'a>] {
            &self.checks[..self.len]
        }
    }

    /// Where the `RateLimit-Policy` value for a request lives: by the endpoint entry that applies
    /// (0 for none, else its index + 1) and whether the per-user tier applies.
    fn policy_index(endpoint: Option<usize>, per_user: bool) -> usize {
        endpoint.map_or(0, |i| i + 1) * 2 + usize::from(per_user)
    }

    impl Limiter {
        /// A limiter over `store`, registering its metrics in `registry`.
        pub fn new(
            config: RateLimitConfig,
            store: Arc<dyn CounterStore>,
            registry: &mut Registry,
        ) -> Self {
            let requests = Family::<TierResult, Counter>::default();
            registry.register(
                "foresight_ratelimit_requests",
                "Rate-limit decisions by tier and result (allowed, denied, error_allowed, error_denied)",
                requests.clone(),
            );
            let usage = Family::<TierLabel, Gauge<f64, AtomicU64>>::default();
            registry.register(
                "foresight_ratelimit_current_usage",
                "Share of its limit used by the key of each tier at the latest decision (0 to 1)",
                usage.clone(),
            );
            let metrics = TIERS.map(|tier| TierMetrics {
                results: RESULTS.map(|result| {
                    requests
                        .get_or_create(&TierResult {
                            tier: tier.as_str(),
                            result,
                        })
                        .clone()
                }),
                usage: usage
                    .get_or_create(&TierLabel {
                        tier: tier.as_str(),
                    })
                    .clone(),
            });
            let endpoints: Vec<Endpoint> = config
                .per_endpoint
                .iter()
                .map(|(name, limit)| {
                    let (method, route) = match name.split_once(' ') {
                        Some((method, route)) => (Some(method.to_owned()), route.to_owned()),
                        None => (None, name.clone()),
                    };
                    Endpoint {
                        method,
                        route,
                        name: name.clone(),
                        limit: *limit,
                    }
                })
                .collect();
            let policies = (0..=endpoints.len())
                .flat_map(|slot| [(slot, false), (slot, true)])
                .map(|(slot, per_user)| {
                    let endpoint = slot.checked_sub(1).map(|i| &endpoints[i].limit);
                    let items: Vec<String> = [
                        (Tier::Global, config.global.as_ref()),
                        (Tier::PerIp, config.per_ip.as_ref()),
                        (Tier::PerUser, config.per_user.as_ref().filter(|_| per_user)),
                        (Tier::PerEndpoint, endpoint),
                    ]
                    .into_iter()
                    .filter_map(|(tier, limit)| {
                        limit.map(|l| {
                            format!(
                                "\"{}\";q={};w={}",
                                tier.as_str(),
                                l.max_requests,
                                l.window_ms.div_ceil(1000)
                            )
                        })
                    })
                    .collect();
                    // NB: tier names and numbers only: always valid header text.
                    HeaderValue::try_from(items.join(", "))
                        .unwrap_or_else(|_| HeaderValue::from_static(""))
                })
                .collect();
            Self {
                endpoints,
                policies,
                trusted: config.trusted_cidrs(),
                config,
                store,
                metrics,
                failing: AtomicBool::new(false),
            }
        }

        fn tier_metrics(&self, tier: Tier) -> &TierMetrics {
            &self.metrics[TIERS.iter().position(|t| *t == tier).unwrap_or(0)]
        }

        /// The configuration.
        pub fn config(&self) -> &RateLimitConfig {
            &self.config
        }

        /// Whether a tier needs the caller's user resolved.
        fn wants_user(&self) -> bool {
            self.config.per_user.is_some() || !self.endpoints.is_empty()
        }

        /// The client's IP: the socket peer, unless the peer is a trusted proxy; then the
        /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. A client can
        /// therefore not choose its own key by sending the header: an untrusted peer's header is
        /// ignored, and entries left of the first untrusted hop are never read.
        pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
            let trusted = |ip: &IpAddr| {
                let ip = ip.to_canonical();
                self.trusted.iter().any(|net| net.contains(&ip))
            };
            if !trusted(&peer) {
                return peer.to_canonical();
            }
            let mut client = peer;
            let hops = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect::<Vec<_>>();
            for hop in hops.iter().rev() {
                match hop
                    .parse::<IpAddr>()
                    .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
                {
                    Ok(ip) => {
                        client = ip;
                        if !trusted(&ip) {
                            break;
                        }
                    }
                    // NB: a malformed hop means we cannot trust anything further left.
                    Err(_) => break,
                }
            }
            client.to_canonical()
        }

        /// The counters a request touches, with their tiers.
        pub fn checks<'a>(
            &'a self,
            ip: IpAddr,
            user: Option<&'a UserId>,
            method: &str,
            route: &str,
        ) -> Checks<'a> {
            let spec = |t: &TierLimit| Spec {
                window_ms: t.window_ms,
                limit: t.max_requests,
                buckets: u64::from(self.config.buckets),
            };
            let mut checks = Checks::new();
            if let Some(t) = &self.config.global {
                checks.push(Tier::Global, Key::Global, spec(t));
            }
            if let Some(t) = &self.config.per_ip {
                checks.push(Tier::PerIp, Key::Client(Client::Ip(ip)), spec(t));
            }
            let per_user = match (&self.config.per_user, user) {
                (Some(t), Some(user)) => {
                    checks.push(Tier::PerUser, Key::Client(Client::User(user)), spec(t));
                    true
                }
                _ => false,
            };
            // `METHOD /route` wins over `/route`.
            let endpoint = self
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.route == route && e.method.as_deref().is_none_or(|m| m == method)
                })
                .min_by_key(|(_, e)| e.method.is_none());
            if let Some((_, e)) = endpoint {
                let client = user.map_or(Client::Ip(ip), Client::User);
                checks.push(
                    Tier::PerEndpoint,
                    Key::Endpoint(&e.name, client),
                    spec(&e.limit),
                );
            }
            checks.policy = policy_index(endpoint.map(|(i, _)| i), per_user);
            checks
        }

        /// Decides one request.
        pub async fn decide(&self, checks: &Checks<'_>) -> Verdict {
            if checks.checks().is_empty() {
                return Verdict::Allowed(None, 0);
            }
            let decided = match self.store.check_sync(checks.checks()) {
                Some(decision) => Ok(decision),
                None => self.store.check(checks.checks()).await,
            };
            self.verdict(checks, decided)
        }

        /// [`Limiter::decide`] when the store answers without waiting (in memory); `None` when
        /// it would wait, and then nothing was counted.
        pub fn decide_now(&self, checks: &Checks<'_>) -> Option<Verdict> {
            if checks.checks().is_empty() {
                return Some(Verdict::Allowed(None, 0));
            }
            let decision = self.store.check_sync(checks.checks())?;
            Some(self.verdict(checks, Ok(decision)))
        }

        /// The verdict on what the store answered, counted in the metrics.
        fn verdict(&self, checks: &Checks<'_>, decided: Result<Decision, StoreFailure>) -> Verdict {
            match decided {
                Ok(Decision { outcomes, now_ms }) => {
                    // NB: load first: a swap on every request would bounce the cache line.
                    if self.failing.load(Ordering::Relaxed)
                        && self.failing.swap(false, Ordering::AcqRel)
                    {
                        tracing::info!("rate-limit store recovered");
                    }
                    let denied = outcomes.iter().any(|o| !o.allowed);
                    // One pass: the metrics, the tightest tier and the denying tier with the
                    // longest wait (the earlier tier on ties).
                    let mut tightest: Option<TierOutcome> = None;
                    let mut denying: Option<TierOutcome> = None;
                    for ((tier, check), outcome) in
                        checks.tiers().iter().zip(checks.checks()).zip(&outcomes)
                    {
                        let t = TierOutcome {
                            tier: *tier,
                            window_ms: check.spec.window_ms,
                            outcome: *outcome,
                        };
                        let result = match (denied, outcome.allowed) {
                            (false, _) => 0,
                            (true, false) => 1,
                            // Admissible by this tier, refused by another: not counted here.
                            (true, true) => continue,
                        };
                        let m = self.tier_metrics(t.tier);
                        m.results[result].inc();
                        // NB: counts are far below 2^53; the ratio is exact enough for a gauge.
                        #[allow(clippy::cast_precision_loss)]
                        let used = outcome.count as f64 / outcome.limit.max(1) as f64;
                        // NB: a plain store: `Gauge::set` swaps, a locked instruction, for the old
                        // value nobody reads.
                        m.usage
                            .inner()
                            .store(used.min(1.0).to_bits(), Ordering::Relaxed);
                        if denied {
                            if denying
                                .is_none_or(|d| outcome.retry_after_ms > d.outcome.retry_after_ms)
                            {
                                denying = Some(t);
                            }
                        } else if tightest.is_none_or(|b| {
                            (outcome.remaining, std::cmp::Reverse(outcome.reset_ms))
                                < (b.outcome.remaining, std::cmp::Reverse(b.outcome.reset_ms))
                        }) {
                            tightest = Some(t);
                        }
                    }
                    match denying {
                        Some(first) => Verdict::Denied(first, now_ms),
                        None => Verdict::Allowed(tightest, now_ms),
                    }
                }
                Err(error) => {
                    if !self.failing.swap(true, Ordering::AcqRel) {
                        tracing::warn!(%error, policy = ?self.config.on_store_error, "rate-limit store failing");
                    }
                    let result = match self.config.on_store_error {
                        OnStoreError::Allow => 2,
                        OnStoreError::Deny => 3,
                    };
                    for tier in checks.tiers() {
                        self.tier_metrics(*tier).results[result].inc();
                    }
                    match self.config.on_store_error {
                        OnStoreError::Allow => Verdict::FailedOpen,
                        OnStoreError::Deny => Verdict::FailedClosed,
                    }
                }
            }
        }
    }

    /// The rate-limit fields of an admitted response, decided before the route runs.
    #[derive(Debug)]
    pub struct RateHeaders {
        policy: HeaderValue,
        tightest: TierOutcome,
        now_ms: u64,
    }

    impl RateHeaders {
        /// `X-RateLimit-*` of the tightest tier, and the IETF `RateLimit-Policy` / `RateLimit`
        /// fields (draft-ietf-httpapi-ratelimit-headers: `"<tier>";q=<quota>;w=<window s>` for
        /// every tier, and `"<tier>";r=<remaining>;t=<seconds to reset>` for the tightest).
        fn apply(self, headers: &mut HeaderMap) {
            let o = &self.tightest.outcome;
            // NB: the four values share one buffer (slices of it), not an allocation each.
            let mut buf = BytesMut::with_capacity(96);
            let mut digits = itoa::Buffer::new();
            let mut ends = [0; 4];
            for (end, n) in ends.iter_mut().zip([
                o.limit,
                o.remaining,
                (self.now_ms + o.reset_ms).div_ceil(1000),
            ]) {
                buf.extend_from_slice(digits.format(n).as_bytes());
                *end = buf.len();
            }
            for part in [
                "\"",
                self.tightest.tier.as_str(),
                "\";r=",
                digits.format(o.remaining),
                ";t=",
            ] {
                buf.extend_from_slice(part.as_bytes());
            }
            buf.extend_from_slice(digits.format(o.reset_ms.div_ceil(1000)).as_bytes());
            ends[3] = buf.len();
            let buf = buf.freeze();
            // NB: five fields here, and the content-length axum adds afterwards.
            headers.reserve(6);
            let mut start = 0;
            for (name, end) in [
                X_RATELIMIT_LIMIT,
                X_RATELIMIT_REMAINING,
                X_RATELIMIT_RESET,
                RATELIMIT,
            ]
            .into_iter()
            .zip(ends)
            {
                // NB: digits and tier names only: always valid header text.
                if let Ok(value) = HeaderValue::from_maybe_shared(buf.slice(start..end)) {
                    headers.insert(name, value);
                }
                start = end;
            }
            headers.insert(RATELIMIT_POLICY, self.policy);
        }
    }

    const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

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

    impl Limiter {
        fn caller<'r>(&self, request: &'r Request) -> Caller<'r> {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
            let api_key = if self.wants_user() {
                request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
            } else {
                None
            };
            Caller {
                ip: self.client_ip(peer, request.headers()),
                api_key,
                method: request.method().as_str(),
                route: request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or_else(|| request.uri().path(), |p| p.as_str()),
            }
        }

        /// The step a verdict on `checks` calls for.
        fn step(&self, checks: &Checks<'_>, verdict: Verdict) -> Step {
            let headers = |tightest: TierOutcome, now_ms| RateHeaders {
                policy: self
                    .policies
                    .get(checks.policy)
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static("")),
                tightest,
                now_ms,
            };
            match verdict {
                Verdict::Allowed(tightest, now_ms) => {
                    Step::Admit(tightest.map(|tightest| headers(tightest, now_ms)))
                }
                Verdict::Denied(first, now_ms) => {
                    let retry_s = first.outcome.retry_after_ms.div_ceil(1000).max(1);
                    let mut response = error_body(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "rate limit of tier {} exceeded ({} requests per {} ms); retry in {retry_s} s",
                            first.tier.as_str(),
                            first.outcome.limit,
                            first.window_ms
                        ),
                        Some(first.tier),
                    );
                    headers(first, now_ms).apply(response.headers_mut());
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(retry_s));
                    Step::Refuse(response)
                }
                Verdict::FailedOpen => Step::Admit(None),
                Verdict::FailedClosed => Step::Refuse(error_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate_limiter_unavailable",
                    "the rate limiter's store is unavailable; retry later".to_owned(),
                    None,
                )),
            }
        }
    }

    fn error_body(status: StatusCode, code: &str, message: String, tier: Option<Tier>) -> Response {
        let mut error = serde_json::json!({ "code": code, "message": message });
        if let Some(tier) = tier {
            error["tier"] = serde_json::Value::from(tier.as_str());
        }
        (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
    }

    /// Leaves the user an API key resolved to for the handler, when the request goes on and the
    /// handler reads it (`to_handler`).
    fn hand_over(
        request: &mut Request,
        step: &Step,
        user: Option<Option<UserId>>,
        to_handler: bool,
    ) {
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
        let caller = limiter.caller(request);
        // `None`: no key looked up (or the lookup failed: the handler's own lookup then answers
        // 503 as usual); `Some(None)`: a key that names no user.
        let user = match caller.api_key {
            Some(key) => state.exchange().authenticate_now(key)?.ok(),
            None => None,
        };
        let checks = caller.checks(limiter, user.as_ref().and_then(Option::as_ref));
        let step = limiter.step(&checks, limiter.decide_now(&checks)?);
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
        let caller = limiter.caller(request);
        let user = match caller.api_key {
            Some(key) => state.exchange().authenticate(key).await.ok(),
            None => None,
        };
        let checks = caller.checks(limiter, user.as_ref().and_then(Option::as_ref));
        let step = limiter.step(&checks, limiter.decide(&checks).await);
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
                    let mut inner = crate::server::take_readied(&mut self.inner);
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
        use super::*;
        use crate::ratelimit::store::{MemoryCounters, SystemClock};

        fn limiter(trusted: &[&str]) -> Limiter {
            let config = RateLimitConfig {
                trusted_proxies: trusted.iter().map(|s| (*s).to_owned()).collect(),
                ..RateLimitConfig::default()
            };
            Limiter::new(
                config,
                Arc::new(MemoryCounters::new(1_000, Arc::new(SystemClock))),
                &mut Registry::default(),
            )
        }

        fn xff(value: &str) -> HeaderMap {
            let mut h = HeaderMap::new();
            h.insert(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("header"),
            );
            h
        }

        fn ip(s: &str) -> IpAddr {
            s.parse().expect("ip")
        }

        #[test]
        fn an_untrusted_peer_cannot_choose_its_ip() {
            let l = limiter(&["10.0.0.0/8"]);
            assert_eq!(
                l.client_ip(ip("203.0.113.9"), &xff("1.2.3.4")),
                ip("203.0.113.9")
            );
        }

        #[test]
        fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
            let l = limiter(&["10.0.0.0/8"]);
            // The client forged "1.2.3.4"; the proxy appended the real client 198.51.100.7.
            assert_eq!(
                l.client_ip(ip("10.0.0.2"), &xff("1.2.3.4, 198.51.100.7, 10.0.0.1")),
                ip("198.51.100.7")
            );
            assert_eq!(
                l.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
                ip("10.0.0.2")
            );
            assert_eq!(
                l.client_ip(ip("10.0.0.2"), &xff("garbage, 10.0.0.1")),
                ip("10.0.0.1")
            );
        }

        /// A limiter with only global and per-IP tiers, as given.
        fn two_tiers(global: (u64, u64), per_ip: (u64, u64)) -> Limiter {
            let tier = |(max_requests, window_ms)| {
                Some(TierLimit {
                    window_ms,
                    max_requests,
                })
            };
            let config = RateLimitConfig {
                global: tier(global),
                per_ip: tier(per_ip),
                per_user: None,
                per_endpoint: Default::default(),
                ..RateLimitConfig::default()
            };
            Limiter::new(
                config,
                Arc::new(MemoryCounters::new(1_000, Arc::new(SystemClock))),
                &mut Registry::default(),
            )
        }

        /// Sends `n` requests from one IP; the last one's verdict.
        fn verdict_after(l: &Limiter, n: usize) -> Option<Verdict> {
            let checks = l.checks(ip("192.0.2.1"), None, "GET", "/v2/depth");
            (0..n).filter_map(|_| l.decide_now(&checks)).last()
        }

        #[test]
        fn a_verdict_names_the_tightest_tier_or_the_longest_wait() {
            // Admitted: the tier with the least left, whichever comes first.
            for (global, per_ip, tightest) in [
                ((10, 60_000), (3, 60_000), Tier::PerIp),
                ((3, 60_000), (10, 60_000), Tier::Global),
            ] {
                let Some(Verdict::Allowed(Some(t), _)) =
                    verdict_after(&two_tiers(global, per_ip), 1)
                else {
                    panic!("the first request is admitted with a tier");
                };
                assert_eq!((t.tier, t.outcome.remaining), (tightest, 2));
            }
            // Denied by both: the tier with the longer wait, whichever comes first.
            for (global, per_ip, longest) in [
                ((3, 1_000), (3, 60_000), Tier::PerIp),
                ((3, 60_000), (3, 1_000), Tier::Global),
            ] {
                let Some(Verdict::Denied(t, _)) = verdict_after(&two_tiers(global, per_ip), 4)
                else {
                    panic!("the fourth request is denied");
                };
                assert_eq!(t.tier, longest);
                assert!(t.outcome.retry_after_ms > 1_000, "{t:?}");
            }
            // Denied by one: that tier, though the other is listed first.
            let Some(Verdict::Denied(t, _)) =
                verdict_after(&two_tiers((10, 60_000), (3, 60_000)), 4)
            else {
                panic!("the fourth request is denied");
            };
            assert_eq!(t.tier, Tier::PerIp);
        }

        #[test]
        fn the_policy_field_lists_exactly_the_tiers_a_request_is_counted_in() {
            // Seed defaults: global 10000/1 s, per IP 100/60 s, per user 200/60 s, and
            // `POST /v2/orders` 30/60 s.
            let l = limiter(&[]);
            let user = UserId::parse("userId", "0x1111111111111111111111111111111111111111")
                .expect("user");
            let policy = |checks: &Checks<'_>| {
                l.policies
                    .get(checks.policy)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let order = l.checks(ip("127.0.0.1"), Some(&user), "POST", "/v2/orders");
            assert_eq!(
                policy(&order).as_deref(),
                Some(
                    r#""global";q=10000;w=1, "perIp";q=100;w=60, "perUser";q=200;w=60, "perEndpoint";q=30;w=60"#
                )
            );
            let anonymous = l.checks(ip("127.0.0.1"), None, "POST", "/v2/orders");
            assert_eq!(
                policy(&anonymous).as_deref(),
                Some(r#""global";q=10000;w=1, "perIp";q=100;w=60, "perEndpoint";q=30;w=60"#)
            );
            let depth = l.checks(ip("127.0.0.1"), Some(&user), "GET", "/v2/depth");
            assert_eq!(
                policy(&depth).as_deref(),
                Some(r#""global";q=10000;w=1, "perIp";q=100;w=60, "perUser";q=200;w=60"#)
            );
            assert_eq!(depth.tiers(), [Tier::Global, Tier::PerIp, Tier::PerUser]);
        }

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
            let user = UserId::parse("userId", "0x1111111111111111111111111111111111111111")
                .expect("user");
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

        #[test]
        fn endpoint_keys_match_method_and_template_per_client() {
            let l = limiter(&[]);
            let user = UserId::parse("userId", "0x1111111111111111111111111111111111111111")
                .expect("user");
            let checks = l.checks(ip("127.0.0.1"), Some(&user), "POST", "/v2/orders");
            let tiers: Vec<_> = checks
                .tiers()
                .iter()
                .zip(checks.checks())
                .map(|(t, c)| (t.as_str(), c.key.to_string()))
                .collect();
            assert_eq!(
                tiers,
                vec![
                    ("global", "g".to_owned()),
                    ("perIp", "ip:127.0.0.1".to_owned()),
                    (
                        "perUser",
                        "u:0x1111111111111111111111111111111111111111".to_owned()
                    ),
                    (
                        "perEndpoint",
                        "ep:POST /v2/orders:u:0x1111111111111111111111111111111111111111"
                            .to_owned()
                    ),
                ]
            );
            let get = l.checks(ip("127.0.0.1"), None, "GET", "/v2/orders/{id}");
            assert_eq!(get.checks().len(), 2, "no user, no endpoint limit for GET");
        }
    }
}
