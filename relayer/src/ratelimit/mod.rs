//! The tiered sliding-window rate limiter: the relayer's first line of defence.
//!
//! - [`config`]: `rateLimit` of the relayer config (no server dependencies).
//! - [`window`]: the sliding-window arithmetic and its error bound. Pure.
//! - [`store`]: counters in memory (per replica) or in Redis (shared), both deciding every tier
//!   of a request in one atomic step.
//! - This module: the [`Limiter`] (client identity, which counters a request touches, metrics,
//!   the store-failure policy) and the axum middleware [`limit`] with its response headers.
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
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use axum::extract::{ConnectInfo, MatchedPath, Request, State};
    use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
    use axum::middleware::Next;
    use axum::response::{IntoResponse, Response};
    use ipnet::IpNet;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    use super::config::{OnStoreError, RateLimitConfig, TierLimit};
    use super::store::{Check, CounterStore, Decision};
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

    /// The user an API key resolved to, left in the request's extensions by the limiter so the
    /// handler does not look the key up again.
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
        /// `"<tier>";q=<quota>;w=<window s>` when the tier has one limit (not per endpoint).
        policy: Option<String>,
    }

    /// The limiter of one relayer process.
    #[derive(Debug)]
    pub struct Limiter {
        config: RateLimitConfig,
        trusted: Vec<IpNet>,
        store: Arc<dyn CounterStore>,
        /// By [`TIERS`] index.
        metrics: [TierMetrics; 4],
        /// `perEndpoint` parsed: (method or any, route template, config key, limit).
        endpoints: Vec<(Option<String>, String, String, TierLimit)>,
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

    /// What the limiter decided for a request.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Verdict {
        /// Admitted; the tiers as counted.
        Allowed(Vec<TierOutcome>, u64),
        /// Denied by the first tier listed; all tiers as checked.
        Denied(Vec<TierOutcome>, u64),
        /// The store failed and the policy admits.
        FailedOpen,
        /// The store failed and the policy denies.
        FailedClosed,
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
            let metrics = TIERS.map(|tier| {
                let limit = match tier {
                    Tier::Global => config.global,
                    Tier::PerIp => config.per_ip,
                    Tier::PerUser => config.per_user,
                    Tier::PerEndpoint => None,
                };
                TierMetrics {
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
                    policy: limit.map(|l| policy_item(tier, l.max_requests, l.window_ms)),
                }
            });
            let endpoints = config
                .per_endpoint
                .iter()
                .map(|(key, limit)| match key.split_once(' ') {
                    Some((method, route)) => (
                        Some(method.to_owned()),
                        route.to_owned(),
                        key.clone(),
                        *limit,
                    ),
                    None => (None, key.clone(), key.clone(), *limit),
                })
                .collect();
            Self {
                endpoints,
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

        /// Whether a request to `route` needs the caller's user resolved.
        fn wants_user(&self) -> bool {
            self.config.per_user.is_some() || !self.config.per_endpoint.is_empty()
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
        pub fn checks(
            &self,
            ip: IpAddr,
            user: Option<&UserId>,
            method: &str,
            route: &str,
        ) -> Vec<(Tier, Check)> {
            let spec = |t: &TierLimit| Spec {
                window_ms: t.window_ms,
                limit: t.max_requests,
                buckets: u64::from(self.config.buckets),
            };
            let mut checks = Vec::with_capacity(4);
            if let Some(t) = &self.config.global {
                checks.push((
                    Tier::Global,
                    Check {
                        key: "g".to_owned(),
                        spec: spec(t),
                    },
                ));
            }
            if let Some(t) = &self.config.per_ip {
                checks.push((
                    Tier::PerIp,
                    Check {
                        key: format!("ip:{ip}"),
                        spec: spec(t),
                    },
                ));
            }
            if let (Some(t), Some(user)) = (&self.config.per_user, user) {
                checks.push((
                    Tier::PerUser,
                    Check {
                        key: format!("u:{user}"),
                        spec: spec(t),
                    },
                ));
            }
            // `METHOD /route` wins over `/route`; matched without building the key.
            let endpoint = self
                .endpoints
                .iter()
                .filter(|(m, r, _, _)| r == route && m.as_deref().is_none_or(|m| m == method))
                .min_by_key(|(m, ..)| m.is_none())
                .map(|(_, _, name, t)| (name.as_str(), t));
            if let Some((name, t)) = endpoint {
                let client = user.map_or_else(|| format!("ip:{ip}"), |u| format!("u:{u}"));
                checks.push((
                    Tier::PerEndpoint,
                    Check {
                        key: format!("ep:{name}:{client}"),
                        spec: spec(t),
                    },
                ));
            }
            checks
        }

        /// Decides one request.
        pub async fn decide(&self, checks: Vec<(Tier, Check)>) -> Verdict {
            if checks.is_empty() {
                return Verdict::Allowed(Vec::new(), 0);
            }
            let (tiers, checks): (Vec<Tier>, Vec<Check>) = checks.into_iter().unzip();
            let decided = match self.store.check_sync(&checks) {
                Some(decision) => Ok(decision),
                None => self.store.check(&checks).await,
            };
            match decided {
                Ok(Decision { outcomes, now_ms }) => {
                    // NB: load first: a swap on every request would bounce the cache line.
                    if self.failing.load(Ordering::Relaxed)
                        && self.failing.swap(false, Ordering::AcqRel)
                    {
                        tracing::info!("rate-limit store recovered");
                    }
                    let mut tiered: Vec<TierOutcome> = tiers
                        .iter()
                        .zip(&checks)
                        .zip(outcomes)
                        .map(|((tier, check), outcome)| TierOutcome {
                            tier: *tier,
                            window_ms: check.spec.window_ms,
                            outcome,
                        })
                        .collect();
                    let denied = tiered.iter().any(|t| !t.outcome.allowed);
                    for t in &tiered {
                        let result = match (denied, t.outcome.allowed) {
                            (false, _) => 0,
                            (true, false) => 1,
                            // Admissible by this tier, refused by another: not counted here.
                            (true, true) => continue,
                        };
                        let m = self.tier_metrics(t.tier);
                        m.results[result].inc();
                        // NB: counts are far below 2^53; the ratio is exact enough for a gauge.
                        #[allow(clippy::cast_precision_loss)]
                        let used = t.outcome.count as f64 / t.outcome.limit.max(1) as f64;
                        m.usage.set(used.min(1.0));
                    }
                    if denied {
                        // The denying tier with the longest wait goes first.
                        tiered.sort_by_key(|t| {
                            (
                                t.outcome.allowed,
                                std::cmp::Reverse(t.outcome.retry_after_ms),
                            )
                        });
                        Verdict::Denied(tiered, now_ms)
                    } else {
                        Verdict::Allowed(tiered, now_ms)
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
                    for tier in tiers {
                        self.tier_metrics(tier).results[result].inc();
                    }
                    match self.config.on_store_error {
                        OnStoreError::Allow => Verdict::FailedOpen,
                        OnStoreError::Deny => Verdict::FailedClosed,
                    }
                }
            }
        }
    }

    fn policy_item(tier: Tier, quota: u64, window_ms: u64) -> String {
        format!(
            "\"{}\";q={quota};w={}",
            tier.as_str(),
            window_ms.div_ceil(1000)
        )
    }

    /// `X-RateLimit-*` of the tightest tier, and the IETF `RateLimit-Policy` / `RateLimit`
    /// fields (draft-ietf-httpapi-ratelimit-headers: `"<tier>";q=<quota>;w=<window s>` and
    /// `"<tier>";r=<remaining>;t=<seconds to reset>`).
    fn set_headers(
        limiter: &Limiter,
        headers: &mut HeaderMap,
        tiers: &[TierOutcome],
        tightest: &TierOutcome,
        now_ms: u64,
    ) {
        let o = &tightest.outcome;
        headers.reserve(5);
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(o.limit),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(o.remaining),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from((now_ms + o.reset_ms).div_ceil(1000)),
        );
        let mut policy = String::with_capacity(96);
        for t in tiers {
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            match &limiter.tier_metrics(t.tier).policy {
                Some(cached) => policy.push_str(cached),
                None => policy.push_str(&policy_item(t.tier, t.outcome.limit, t.window_ms)),
            }
        }
        let current = format!(
            "\"{}\";r={};t={}",
            tightest.tier.as_str(),
            o.remaining,
            o.reset_ms.div_ceil(1000)
        );
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", current)] {
            // NB: tier names and numbers only: always valid header text.
            if let Ok(v) = HeaderValue::try_from(value) {
                headers.insert(HeaderName::from_static(name), v);
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

    /// Middleware: decides the request, answers 429 (or 503 when the store fails closed), and
    /// adds the rate-limit headers to admitted responses.
    pub async fn limit(
        State(state): State<AppState>,
        mut request: Request,
        next: Next,
    ) -> Response {
        let Some(limiter) = state.limiter() else {
            return next.run(request).await;
        };
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let ip = limiter.client_ip(peer, request.headers());
        let mut user = None;
        if limiter.wants_user()
            && let Some(key) = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        {
            // NB: a store failure here leaves the user unknown; the handler's own lookup then
            // answers 503 as usual.
            if let Ok(resolved) = state.exchange().authenticate(key.trim()).await {
                user = Some(resolved);
            }
        }
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| request.uri().path(), |p| p.as_str());
        let checks = limiter.checks(
            ip,
            user.as_ref().and_then(Option::as_ref),
            request.method().as_str(),
            route,
        );
        if let Some(resolved) = user {
            request.extensions_mut().insert(ResolvedUser(resolved));
        }
        match limiter.decide(checks).await {
            Verdict::Allowed(tiers, now_ms) => {
                let mut response = next.run(request).await;
                if let Some(tightest) = tiers
                    .iter()
                    .min_by_key(|t| (t.outcome.remaining, std::cmp::Reverse(t.outcome.reset_ms)))
                {
                    set_headers(limiter, response.headers_mut(), &tiers, tightest, now_ms);
                }
                response
            }
            Verdict::Denied(tiers, now_ms) => {
                let first = tiers[0];
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
                set_headers(limiter, response.headers_mut(), &tiers, &first, now_ms);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_s));
                response
            }
            Verdict::FailedOpen => next.run(request).await,
            Verdict::FailedClosed => error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limiter_unavailable",
                "the rate limiter's store is unavailable; retry later".to_owned(),
                None,
            ),
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

        #[test]
        fn endpoint_keys_match_method_and_template_per_client() {
            let l = limiter(&[]);
            let user = UserId::parse("userId", "0x1111111111111111111111111111111111111111")
                .expect("user");
            let checks = l.checks(ip("127.0.0.1"), Some(&user), "POST", "/v2/orders");
            let tiers: Vec<_> = checks
                .iter()
                .map(|(t, c)| (t.as_str(), c.key.as_str()))
                .collect();
            assert_eq!(
                tiers,
                vec![
                    ("global", "g"),
                    ("perIp", "ip:127.0.0.1"),
                    ("perUser", "u:0x1111111111111111111111111111111111111111"),
                    (
                        "perEndpoint",
                        "ep:POST /v2/orders:u:0x1111111111111111111111111111111111111111"
                    ),
                ]
            );
            let get = l.checks(ip("127.0.0.1"), None, "GET", "/v2/orders/{id}");
            assert_eq!(get.len(), 2, "no user, no endpoint limit for GET");
        }
    }
}
