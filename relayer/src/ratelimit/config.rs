//! Rate-limit configuration (`rateLimit` of the relayer config). No server dependencies.
//!
//! Room: a leaf config module: it uses nothing of the crate, so [`crate::config`] may use it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Methods a `perEndpoint` key may name.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// Finer buckets cost memory and Lua time for little gain; coarser ones lag more.
const MAX_BUCKETS: u32 = 60;

/// The `ipv6Prefix` unless configured: a subscriber is usually given a whole /64.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

fn is_default_ipv6_prefix(prefix: &u8) -> bool {
    *prefix == DEFAULT_IPV6_PREFIX
}

/// The `admin` tier unless configured: 60 a second per client IP, above a script that polls
/// `/admin/sagas` every 20 ms (as the test harness does) and far below what guessing a token
/// of at least 16 characters needs; it bounds the admin load one address can cause.
pub const DEFAULT_ADMIN_LIMIT: TierLimit = TierLimit {
    window_ms: 10_000,
    max_requests: 600,
};

fn is_default_admin(admin: &Option<TierLimit>) -> bool {
    *admin == Some(DEFAULT_ADMIN_LIMIT)
}

/// The tiered sliding-window rate limiter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// One budget shared by every client (and, with Redis, every replica).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<TierLimit>,
    /// Per client IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<TierLimit>,
    /// Per authenticated user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_user: Option<TierLimit>,
    /// Per route and client (the user when authenticated, else the IP). Keys are a route
    /// template, matching every method (`/v2/orders`), or a method and a route template
    /// (`POST /v2/orders`).
    pub per_endpoint: BTreeMap<String, TierLimit>,
    /// Per client IP over all the `/admin` routes together, apart from the other tiers (so a
    /// brute force of the admin token meets 429). Counted in memory, per replica; `null` turns
    /// it off. Default: 600 requests per 10 s.
    // NB: left out when default, so configs written before this key existed serialise as they
    // did (the operator hashes them into revisions).
    #[serde(skip_serializing_if = "is_default_admin")]
    pub admin: Option<TierLimit>,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs such as `10.0.0.0/8`). The client IP is
    /// the right-most address of that header that is not itself a trusted proxy.
    pub trusted_proxies: Vec<String>,
    /// Bits of an IPv6 client address that make its `perIp` (and per-IP `perEndpoint`) key:
    /// the client's network of this length shares one budget (IPv4 addresses are keyed whole).
    #[serde(skip_serializing_if = "is_default_ipv6_prefix")]
    #[schemars(range(min = 1, max = 128))]
    pub ipv6_prefix: u8,
    /// What to do when the limiter's store fails: `allow` (default) or `deny` (503).
    pub on_store_error: OnStoreError,
    /// Buckets per window: the limiter is at most `windowMs / buckets` late in giving quota back.
    #[schemars(range(min = 1, max = 60))]
    pub buckets: u32,
    /// Redis for the limiter's counters when it should differ from `redisUrl`; absent: the
    /// store's Redis when `redisUrl` is set, else in-memory counters (per replica).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

/// One tier's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierLimit {
    /// Window length in milliseconds.
    #[schemars(range(min = 1, max = 86400000))]
    pub window_ms: u64,
    /// Requests admitted per window.
    #[schemars(range(min = 1))]
    pub max_requests: u64,
}

/// Policy when the limiter's store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnStoreError {
    /// Let the request through (counted as `error_allowed`).
    #[default]
    Allow,
    /// Answer 503 (counted as `error_denied`).
    Deny,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        // The seed's defaults.
        Self {
            enabled: true,
            global: Some(TierLimit {
                window_ms: 1_000,
                max_requests: 10_000,
            }),
            per_ip: Some(TierLimit {
                window_ms: 60_000,
                max_requests: 100,
            }),
            per_user: Some(TierLimit {
                window_ms: 60_000,
                max_requests: 200,
            }),
            per_endpoint: BTreeMap::from([(
                "POST /v2/orders".to_owned(),
                TierLimit {
                    window_ms: 60_000,
                    max_requests: 30,
                },
            )]),
            admin: Some(DEFAULT_ADMIN_LIMIT),
            trusted_proxies: Vec::new(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            on_store_error: OnStoreError::Allow,
            buckets: 10,
            redis_url: None,
        }
    }
}

/// Parses a trusted-proxy entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub fn parse_cidr(raw: &str) -> Option<IpNet> {
    raw.parse::<IpNet>()
        .ok()
        .or_else(|| raw.parse::<IpAddr>().ok().map(IpNet::from))
}

impl RateLimitConfig {
    /// Checks every value; returns the bad key (relative to `rateLimit`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let tier = |key: String, t: &TierLimit| -> Result<(), (String, String)> {
            if !(1..=86_400_000).contains(&t.window_ms) {
                return Err((
                    format!("{key}.windowMs"),
                    "must be between 1 and 86400000".to_owned(),
                ));
            }
            if t.max_requests == 0 {
                return Err((
                    format!("{key}.maxRequests"),
                    "must be at least 1".to_owned(),
                ));
            }
            Ok(())
        };
        for (name, t) in [
            ("global", &self.global),
            ("perIp", &self.per_ip),
            ("perUser", &self.per_user),
            ("admin", &self.admin),
        ] {
            if let Some(t) = t {
                tier(name.to_owned(), t)?;
            }
        }
        for (route, t) in &self.per_endpoint {
            let key = format!("perEndpoint.{route}");
            let path = match route.split_once(' ') {
                Some((method, path)) if METHODS.contains(&method) => path,
                Some(_) => {
                    return Err((
                        key,
                        format!("must be `/path` or `METHOD /path` with METHOD one of {METHODS:?}"),
                    ));
                }
                None => route.as_str(),
            };
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err((
                    key,
                    "the route must be a template starting with `/`".to_owned(),
                ));
            }
            tier(key, t)?;
        }
        for (i, cidr) in self.trusted_proxies.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                return Err((
                    format!("trustedProxies[{i}]"),
                    format!("{cidr:?} is not a CIDR or an IP address"),
                ));
            }
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err((
                "ipv6Prefix".to_owned(),
                format!(
                    "must be between 1 and 128 (bits of an IPv6 address), not {}",
                    self.ipv6_prefix
                ),
            ));
        }
        if !(1..=MAX_BUCKETS).contains(&self.buckets) {
            return Err((
                "buckets".to_owned(),
                format!("must be between 1 and {MAX_BUCKETS}"),
            ));
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err((
                "redisUrl".to_owned(),
                "must start with redis:// or rediss://".to_owned(),
            ));
        }
        Ok(())
    }

    /// The parsed trusted proxies (valid after [`RateLimitConfig::validate`]).
    pub fn trusted_cidrs(&self) -> Vec<IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|c| parse_cidr(c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_defaults_validate() {
        let config = RateLimitConfig::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.per_endpoint["POST /v2/orders"].max_requests, 30);
    }

    #[test]
    fn invalid_limits_name_their_key() {
        let bad_key = |c: RateLimitConfig| c.validate().map_err(|e| e.0);
        let zero_window = RateLimitConfig {
            per_ip: Some(TierLimit {
                window_ms: 0,
                max_requests: 1,
            }),
            ..RateLimitConfig::default()
        };
        assert_eq!(bad_key(zero_window), Err("perIp.windowMs".to_owned()));
        let mut bad_method = RateLimitConfig::default();
        bad_method.per_endpoint.insert(
            "FETCH /v2/orders".into(),
            TierLimit {
                window_ms: 1,
                max_requests: 1,
            },
        );
        assert_eq!(
            bad_key(bad_method),
            Err("perEndpoint.FETCH /v2/orders".to_owned())
        );
        let bad_cidr = RateLimitConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
            ..RateLimitConfig::default()
        };
        assert_eq!(bad_key(bad_cidr), Err("trustedProxies[1]".to_owned()));
        let zero_requests = RateLimitConfig {
            global: Some(TierLimit {
                window_ms: 1000,
                max_requests: 0,
            }),
            ..RateLimitConfig::default()
        };
        assert_eq!(bad_key(zero_requests), Err("global.maxRequests".to_owned()));
        let no_buckets = RateLimitConfig {
            buckets: 0,
            ..RateLimitConfig::default()
        };
        assert_eq!(bad_key(no_buckets), Err("buckets".to_owned()));
        for ipv6_prefix in [0, 129, 255] {
            let bad_prefix = RateLimitConfig {
                ipv6_prefix,
                ..RateLimitConfig::default()
            };
            assert_eq!(bad_key(bad_prefix), Err("ipv6Prefix".to_owned()));
        }
        for ipv6_prefix in [1, 48, 64, 128] {
            let prefix = RateLimitConfig {
                ipv6_prefix,
                ..RateLimitConfig::default()
            };
            assert_eq!(prefix.validate(), Ok(()), "ipv6Prefix {ipv6_prefix}");
        }
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        let net = parse_cidr("10.0.0.0/8").expect("cidr");
        assert!(net.contains(&"10.1.2.3".parse::<IpAddr>().expect("ip")));
        assert!(!net.contains(&"11.0.0.1".parse::<IpAddr>().expect("ip")));
        let host = parse_cidr("127.0.0.1").expect("host");
        assert!(host.contains(&"127.0.0.1".parse::<IpAddr>().expect("ip")));
        assert!(!host.contains(&"127.0.0.2".parse::<IpAddr>().expect("ip")));
        assert!(parse_cidr("fd00::/8").is_some());
        assert!(parse_cidr("10.0.0.0/33").is_none());
    }
}
