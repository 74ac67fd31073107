//! Unit tests of [`super::Limiter`]: client IPs behind proxies, verdicts, policies, keys.

use super::*;
use crate::clock::SystemClock;
use crate::ratelimit::counters::MemoryCounters;

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

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn xff(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_str(value).expect("header"),
    );
    h
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
        let Some(Verdict::Allowed(Some(t), _)) = verdict_after(&two_tiers(global, per_ip), 1)
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
        let Some(Verdict::Denied(t, _)) = verdict_after(&two_tiers(global, per_ip), 4) else {
            panic!("the fourth request is denied");
        };
        assert_eq!(t.tier, longest);
        assert!(t.outcome.retry_after_ms > 1_000, "{t:?}");
    }
    // Denied by one: that tier, though the other is listed first.
    let Some(Verdict::Denied(t, _)) = verdict_after(&two_tiers((10, 60_000), (3, 60_000)), 4)
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
    let user = UserId::parse("userId", "0x1111111111111111111111111111111111111111").expect("user");
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

#[test]
fn endpoint_keys_match_method_and_template_per_client() {
    let l = limiter(&[]);
    let user = UserId::parse("userId", "0x1111111111111111111111111111111111111111").expect("user");
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
                "ep:POST /v2/orders:u:0x1111111111111111111111111111111111111111".to_owned()
            ),
        ]
    );
    let get = l.checks(ip("127.0.0.1"), None, "GET", "/v2/orders/{id}");
    assert_eq!(get.checks().len(), 2, "no user, no endpoint limit for GET");
}
