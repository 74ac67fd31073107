//! The [`Limiter`] of one relayer process: which counters a request touches (its tiers), the
//! verdict on what the counters answered, the store-failure policy, the metrics, and the
//! rate-limit response fields ([`RateHeaders`]). It knows requests only as an IP, an optional
//! user, a method and a route template; the tower service that feeds it is
//! `crate::http::middleware::ratelimit`.
//!
//! Room: part of `ratelimit/`; uses [`crate::domain`] (the user) and the `ratelimit` modules
//! before it. No axum: header names and values are the `http` crate's types.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::client_ip::{client_ip, client_key};
use super::config::{OnStoreError, RateLimitConfig, TierLimit};
use super::counters::{Check, Client, CounterStore, Decision, Key};
use super::window::{Outcome, Spec};
use crate::domain::UserId;
use crate::store::StoreError;

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
        if let (Some(t), Some(c)) = (self.tiers.get_mut(self.len), self.checks.get_mut(self.len)) {
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
    pub fn wants_user(&self) -> bool {
        self.config.per_user.is_some() || !self.endpoints.is_empty()
    }

    /// The client's IP: see [`client_ip`].
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(&self.trusted, peer, headers)
    }

    /// The counters a request from client `ip` touches, with their tiers. An IPv6 client is
    /// counted under its network of `ipv6Prefix` bits (see [`client_key`]).
    pub fn checks<'a>(
        &'a self,
        ip: IpAddr,
        user: Option<&'a UserId>,
        method: &str,
        route: &str,
    ) -> Checks<'a> {
        let ip = client_key(ip, self.config.ipv6_prefix);
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
            .filter(|(_, e)| e.route == route && e.method.as_deref().is_none_or(|m| m == method))
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
    fn verdict(&self, checks: &Checks<'_>, decided: Result<Decision, StoreError>) -> Verdict {
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
                        if denying.is_none_or(|d| outcome.retry_after_ms > d.outcome.retry_after_ms)
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
    pub fn apply(self, headers: &mut HeaderMap) {
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

impl Limiter {
    /// The response fields of a decision on `checks` described by the tier `tightest`, at the
    /// store's time `now_ms`.
    pub fn rate_headers(
        &self,
        checks: &Checks<'_>,
        tightest: TierOutcome,
        now_ms: u64,
    ) -> RateHeaders {
        RateHeaders {
            policy: self
                .policies
                .get(checks.policy)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("")),
            tightest,
            now_ms,
        }
    }
}

/// `X-RateLimit-Limit`: the tightest tier's quota.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: what the tightest tier has left.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: when the tightest tier resets (seconds since the epoch).
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit` (IETF draft): the tightest tier's remaining quota and reset.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `RateLimit-Policy` (IETF draft): every tier the request is counted in.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

#[cfg(test)]
mod tests;
