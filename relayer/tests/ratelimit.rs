//! The rate limiter end to end: 429s with their headers, exactness under concurrency for both
//! counter stores, one budget across two relayer processes on one Redis, client identity behind
//! proxies (an IPv6 client keyed by its network of `ipv6Prefix` bits), and the store-failure
//! policies.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relayer::clock::SystemClock;
use relayer::config::RelayerConfig;
use relayer::ratelimit::config::{OnStoreError, TierLimit};
use relayer::ratelimit::counters::{
    Check, Client, CounterStore, Key, MemoryCounters, RedisCounters,
};
use relayer::ratelimit::window::Spec;
use relayer::store::RedisTarget;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::cluster::RedisCluster;
use support::metrics::Metrics;
use support::process::RelayerProcess;
use support::redis::RedisServer;
use support::server::Server;
use support::wait::wait_for;

const DEPTH: &str = "/v2/depth?marketKey=80002:1";

fn tier(max_requests: u64) -> Option<TierLimit> {
    Some(TierLimit {
        window_ms: 60_000,
        max_requests,
    })
}

/// Only a per-IP tier of `n` per minute.
fn per_ip_only(config: &mut RelayerConfig, n: u64) {
    config.rate_limit.global = None;
    config.rate_limit.per_user = None;
    config.rate_limit.per_endpoint.clear();
    config.rate_limit.per_ip = tier(n);
}

async fn get(server: &Server, path: &str, xff: Option<&str>) -> reqwest::Response {
    let mut req = server.client.get(format!("{}{path}", server.base));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.expect("request reaches the server")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

/// The limiter decides in the route's `call` when the API keys and counters are in memory, and
/// in a future that waits for them when they are in Redis: both ways must answer alike.
#[tokio::test]
async fn over_the_limit_answers_429_naming_the_tier_with_headers() {
    limits_with_headers(None).await;
}

#[tokio::test]
async fn over_the_limit_answers_429_naming_the_tier_with_headers_from_redis() {
    let redis = RedisServer::start();
    limits_with_headers(Some(&redis)).await;
}

/// The Redis store (and with it the Redis counters) when `redis` is given.
fn on(redis: Option<&RedisServer>, config: &mut RelayerConfig) {
    config.redis_url = redis.map(RedisServer::url);
}

async fn limits_with_headers(redis: Option<&RedisServer>) {
    let server = Server::start(|c| {
        on(redis, c);
        per_ip_only(c, 3);
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let resp = get(&server, DEPTH, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "x-ratelimit-limit"), "3");
        assert_eq!(header(&resp, "x-ratelimit-remaining"), remaining);
        let reset: u64 = header(&resp, "x-ratelimit-reset")
            .parse()
            .expect("unix seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(
            (now..=now + 67).contains(&reset),
            "reset {reset} vs now {now}"
        );
        assert_eq!(header(&resp, "ratelimit-policy"), r#""perIp";q=3;w=60"#);
        assert!(header(&resp, "ratelimit").starts_with(&format!(r#""perIp";r={remaining};t="#)));
    }
    let denied = get(&server, DEPTH, None).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&denied, "retry-after").parse().expect("seconds");
    assert!((60..=66).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&denied, "x-ratelimit-remaining"), "0");
    let body: Value = denied.json().await.expect("json body");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["tier"], "perIp");

    // Probes and metrics are never limited, and the decisions are counted.
    let metrics = server.metrics().await;
    assert_eq!(decisions(&metrics, "allowed"), 3.0, "{metrics}");
    assert_eq!(decisions(&metrics, "denied"), 1.0, "{metrics}");
    assert_eq!(
        metrics.value("foresight_ratelimit_current_usage", &[("tier", "perIp")]),
        1.0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn per_user_and_per_endpoint_tiers_follow_the_api_key() {
    per_user_and_per_endpoint(None).await;
}

#[tokio::test]
async fn per_user_and_per_endpoint_tiers_follow_the_api_key_from_redis() {
    let redis = RedisServer::start();
    per_user_and_per_endpoint(Some(&redis)).await;
}

async fn per_user_and_per_endpoint(redis: Option<&RedisServer>) {
    let server = Server::start(|c| {
        on(redis, c);
        per_ip_only(c, 1_000);
        c.rate_limit.per_endpoint.clear();
        c.rate_limit.per_endpoint.insert(
            "GET /v2/balances/{userId}".to_owned(),
            tier(2).expect("tier"),
        );
    })
    .await;
    let alice = "0xa11ce00000000000000000000000000000000001";
    let bob = "0xb0b0000000000000000000000000000000000002";
    let (ka, kb) = (server.api_key(alice).await, server.api_key(bob).await);
    let balances = |user: &str| format!("/v2/balances/{user}");
    for _ in 0..2 {
        assert_eq!(
            server
                .call(Method::GET, &balances(alice), Some(&ka), None)
                .await
                .0,
            StatusCode::OK
        );
    }
    let (status, body) = server
        .call(Method::GET, &balances(alice), Some(&ka), None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["tier"], "perEndpoint");
    // Bob, from the same address, has his own per-endpoint budget.
    assert_eq!(
        server
            .call(Method::GET, &balances(bob), Some(&kb), None)
            .await
            .0,
        StatusCode::OK
    );
    // Other routes are not under that endpoint's limit.
    assert_eq!(
        server.call(Method::GET, DEPTH, None, None).await.0,
        StatusCode::OK
    );
    server.stop().await;
}

/// The limiter runs before injected faults: a failing route still spends its callers' quota,
/// and once that is gone they get 429, not the injected 500.
#[tokio::test]
async fn injected_faults_are_rate_limited_like_real_work() {
    let server = Server::start(|c| {
        per_ip_only(c, 2);
        c.fault_injection.error_rate = 1.0;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&server, DEPTH, None).await.status().as_u16());
    }
    assert_eq!(statuses, [500, 500, 429]);
    server.stop().await;
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let server = Server::start(|c| per_ip_only(c, 3)).await;
    let mut allowed = 0;
    for i in 0..6 {
        let resp = get(&server, DEPTH, Some(&format!("198.51.100.{i}"))).await;
        if resp.status() == StatusCode::OK {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 3,
        "the socket peer is the key, whatever the header says"
    );
    server.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_key() {
    let server = Server::start(|c| {
        per_ip_only(c, 3);
        c.rate_limit.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
    })
    .await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        let statuses: Vec<u16> = futures_statuses(&server, client, 4).await;
        assert_eq!(statuses, vec![200, 200, 200, 429], "client {client}");
    }
    // A client behind the proxy cannot forge its way out: the proxy appends the real address.
    let statuses = futures_statuses(&server, "203.0.113.50, 198.51.100.1", 1).await;
    assert_eq!(statuses, vec![429]);
    server.stop().await;
}

/// Two IPv6 clients of one /64 (one subscriber's network) share one per-IP budget; a client
/// of another /64 has its own; and an IPv4-mapped client is the IPv4 one.
///
/// Before the fix, each /128 had a budget of its own, so the second client of the /64 was
/// admitted both times (`[200, 200]`, not `[200, 429]`).
#[tokio::test]
async fn ipv6_clients_of_one_slash_64_share_one_per_ip_budget() {
    let server = Server::start(|c| {
        per_ip_only(c, 3);
        c.rate_limit.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
    })
    .await;
    let first = futures_statuses(&server, "2001:db8:1:2::1", 2).await;
    let second = futures_statuses(&server, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", 2).await;
    assert_eq!(
        (first, second),
        (vec![200, 200], vec![200, 429]),
        "one budget of 3 for the whole /64"
    );
    let other = futures_statuses(&server, "2001:db8:1:3::1", 4).await;
    assert_eq!(
        other,
        vec![200, 200, 200, 429],
        "another /64, another budget"
    );

    let v4 = futures_statuses(&server, "192.0.2.9", 3).await;
    let mapped = futures_statuses(&server, "::ffff:192.0.2.9", 1).await;
    assert_eq!(
        (v4, mapped),
        (vec![200, 200, 200], vec![429]),
        "::ffff:a.b.c.d is a.b.c.d"
    );
    server.stop().await;
}

/// `rateLimit.ipv6Prefix` sets how much of an IPv6 address is the key: with 128 every address
/// has its own budget, with 48 two /64s of one /48 share one.
#[tokio::test]
async fn the_ipv6_prefix_is_configurable() {
    let per_address = Server::start(|c| {
        per_ip_only(c, 1);
        c.rate_limit.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
        c.rate_limit.ipv6_prefix = 128;
    })
    .await;
    for client in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        let statuses = futures_statuses(&per_address, client, 2).await;
        assert_eq!(statuses, vec![200, 429], "/128: client {client} alone");
    }
    per_address.stop().await;

    let per_48 = Server::start(|c| {
        per_ip_only(c, 1);
        c.rate_limit.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
        c.rate_limit.ipv6_prefix = 48;
    })
    .await;
    let first = futures_statuses(&per_48, "2001:db8:1:2::1", 1).await;
    let second = futures_statuses(&per_48, "2001:db8:1:3::1", 1).await;
    assert_eq!((first, second), (vec![200], vec![429]), "/48: one budget");
    per_48.stop().await;
}

async fn futures_statuses(server: &Server, xff: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(server, DEPTH, Some(xff)).await.status().as_u16());
    }
    out
}

/// `requests` concurrent checks, spread over `ips` per-IP keys (limit `per_ip`) and one global
/// key (limit `global`); returns what was admitted per IP.
async fn hammer(
    store: Arc<dyn CounterStore>,
    requests: usize,
    ips: usize,
    global: u64,
    per_ip: u64,
) -> Vec<u64> {
    let spec = |limit| Spec {
        window_ms: 60_000,
        limit,
        buckets: 10,
    };
    let mut tasks = Vec::new();
    for i in 0..requests {
        let store = store.clone();
        let checks = vec![
            Check {
                key: Key::Global,
                spec: spec(global),
            },
            Check {
                key: Key::Client(Client::Ip(IpAddr::from(
                    u32::try_from(i % ips).expect("few IPs").to_be_bytes(),
                ))),
                spec: spec(per_ip),
            },
        ];
        tasks.push(tokio::spawn(async move {
            let decision = store.check(&checks).await.expect("store answers");
            (i % ips, decision.outcomes.iter().all(|o| o.allowed))
        }));
    }
    let mut admitted = vec![0; ips];
    for t in tasks {
        let (ip, ok) = t.await.expect("task");
        if ok {
            admitted[ip] += 1;
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_admit_exactly_the_limit_in_memory() {
    let store: Arc<dyn CounterStore> = Arc::new(MemoryCounters::new(10_000, Arc::new(SystemClock)));
    // Only the global tier binds: 400 requests over 8 IPs of 50 each, global 120.
    let admitted = hammer(store.clone(), 400, 8, 120, 1_000).await;
    assert_eq!(admitted.iter().sum::<u64>(), 120);
    // Only the per-IP tier binds, on fresh keys: 4 IPs × 60 requests, 25 each.
    let store: Arc<dyn CounterStore> = Arc::new(MemoryCounters::new(10_000, Arc::new(SystemClock)));
    let admitted = hammer(store, 240, 4, 10_000, 25).await;
    assert_eq!(admitted, vec![25; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_admit_exactly_the_limit_in_redis() {
    let redis = RedisServer::start();
    let counters = |prefix: &str| -> Arc<dyn CounterStore> {
        Arc::new(
            RedisCounters::connect(
                &RedisTarget::standalone(redis.url()),
                prefix,
                Duration::from_secs(2),
            )
            .expect("connect"),
        )
    };
    // Load the script once (a first EVALSHA answers NOSCRIPT), then count from zero.
    hammer(counters("warm:"), 1, 1, 1, 1).await;
    redis.cli(&["CONFIG", "RESETSTAT"]).expect("reset stats");
    let admitted = hammer(counters("a:"), 400, 8, 120, 1_000).await;
    assert_eq!(admitted.iter().sum::<u64>(), 120);
    let admitted = hammer(counters("b:"), 240, 4, 10_000, 25).await;
    assert_eq!(admitted, vec![25; 4]);
    // One round trip per decision: 640 decisions, 640 script calls.
    let calls = redis.command_calls();
    let scripts =
        calls.get("evalsha").copied().unwrap_or(0) + calls.get("eval").copied().unwrap_or(0);
    assert_eq!(scripts, 640, "{calls:?}");
}

/// On a cluster the global counter and each client's counters sit in slots of their own, all
/// checked at once; a request one slot denies is taken back from the others. Still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_admit_exactly_the_limit_in_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let counters = |prefix: &str| -> Arc<dyn CounterStore> {
        Arc::new(
            RedisCounters::connect(
                &RedisTarget::cluster(cluster.seed_url()),
                prefix,
                Duration::from_secs(2),
            )
            .expect("connect"),
        )
    };
    // Load both scripts on every master (the first EVALSHA on a node answers NOSCRIPT): the
    // global tier denies, then each IP's does.
    hammer(counters("warm:"), 64, 64, 1, 1_000).await;
    hammer(counters("warm2:"), 128, 64, 1_000, 1).await;
    cluster.reset_stats();

    // Only the global tier binds: the IPs' counts of denied requests are taken back.
    let admitted = hammer(counters("a:"), 400, 8, 120, 1_000).await;
    assert_eq!(admitted.iter().sum::<u64>(), 120);
    let count = |key: &str| -> u64 {
        let flat = cluster.cli_any(&["HGETALL", key]).expect("HGETALL answers");
        flat.lines()
            .skip(1)
            .step_by(2)
            .map(|c| c.trim().parse::<u64>().expect("a count"))
            .sum()
    };
    for (ip, &n) in admitted.iter().enumerate() {
        let ip = IpAddr::from(u32::try_from(ip).expect("few IPs").to_be_bytes());
        assert_eq!(count(&format!("{{a:rl:ip:{ip}}}")), n, "counter of {ip}");
    }
    assert_eq!(count("{a:rl:g}"), 120, "the global counter");
    // Only the per-IP tier binds: the global count of denied requests is taken back.
    let admitted = hammer(counters("b:"), 240, 4, 10_000, 25).await;
    assert_eq!(admitted, vec![25; 4]);
    assert_eq!(count("{b:rl:g}"), 100, "the global counter");

    // One script per slot a request touches (2), all at once, and one take-back per denied
    // request: 640 × 2 + 280 + 140.
    let calls = cluster.master_command_stats();
    let scripts = calls.get("evalsha").map_or(0, |c| c.0) + calls.get("eval").map_or(0, |c| c.0);
    assert_eq!(scripts, 640 * 2 + 280 + 140, "{calls:?}");
    // The counters spread over the masters.
    let keys = cluster.keys_per_master();
    assert!(
        keys.values().filter(|&&n| n > 0).count() >= 2,
        "the counters sit on more than one master: {keys:?}"
    );
}

/// Redis keeps a counter only while one of its buckets still counts: the key's lifetime is set
/// when a bucket is created and covers that bucket's last counting moment.
#[tokio::test]
async fn redis_counters_expire_when_nothing_in_them_counts_any_more() {
    let redis = RedisServer::start();
    let counters = RedisCounters::connect(
        &RedisTarget::standalone(redis.url()),
        "ttl:",
        Duration::from_secs(2),
    )
    .expect("connect");
    // Buckets of 100 ms: a bucket counts for at most 300 ms after it starts.
    let checks = [Check {
        key: Key::Global,
        spec: Spec {
            window_ms: 200,
            limit: 1_000,
            buckets: 2,
        },
    }];
    for _ in 0..5 {
        let decision = counters.check(&checks).await.expect("store answers");
        assert!(decision.outcomes[0].allowed);
    }
    let ttl: i64 = redis
        .cli(&["PTTL", "{ttl:rl}g"])
        .and_then(|s| s.trim().parse().ok())
        .expect("PTTL answers");
    assert!((1..=300).contains(&ttl), "PTTL {ttl} ms");
    // NB: the deadline is the assertion: gone within 450 ms (its PTTL and a margin).
    wait_for(
        "the key to expire (it outlived its buckets)",
        Duration::from_millis(450),
        async || {
            redis
                .cli(&["EXISTS", "{ttl:rl}g"])
                .as_deref()
                .map(str::trim)
                == Some("0")
        },
    )
    .await;
}

#[tokio::test]
async fn two_relayers_on_one_redis_share_one_global_and_one_per_ip_budget() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayer.yaml");
    std::fs::write(
        &config,
        "rateLimit:\n  enabled: true\n  global: { windowMs: 60000, maxRequests: 40 }\n  perIp: { windowMs: 60000, maxRequests: 25 }\n  trustedProxies: [127.0.0.1/32]\n",
    )
    .expect("write config");
    let env = [
        ("RELAYER_REDIS_URL", redis.url()),
        ("RELAYER_CONFIG", config.display().to_string()),
        ("RELAYER_RATE_LIMIT__ENABLED", "true".to_owned()),
    ];
    let a = RelayerProcess::start_ready(&env);
    let b = RelayerProcess::start_ready(&env);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let send = |base: &str, xff: Option<String>| {
        let mut req = client.get(format!("{base}{DEPTH}"));
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        req.send()
    };
    // One address through both replicas: the per-IP budget of 25 holds across them.
    let mut allowed = 0;
    for i in 0..40 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let resp = send(base, None).await.expect("request");
        match resp.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let body: Value = resp.json().await.expect("json");
                assert_eq!(body["error"]["tier"], "perIp");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 25);
    // Many addresses: the global budget of 40 (25 already used) holds across both.
    let mut allowed = 0;
    for i in 0..40 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let resp = send(base, Some(format!("198.51.100.{i}")))
            .await
            .expect("request");
        match resp.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let body: Value = resp.json().await.expect("json");
                assert_eq!(body["error"]["tier"], "global");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 15);
}

/// `foresight_ratelimit_requests_total` of the per-IP tier with `result`.
fn decisions(metrics: &Metrics, result: &str) -> f64 {
    metrics.value(
        "foresight_ratelimit_requests_total",
        &[("tier", "perIp"), ("result", result)],
    )
}

async fn wait_until_admitted(server: &Server) {
    wait_for(
        "a request to be admitted",
        Duration::from_secs(10),
        async || get(server, DEPTH, None).await.status() == StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn with_redis_down_fail_open_admits_and_counts_then_recovers() {
    let mut redis = RedisServer::start();
    let server = Server::start(|c| {
        per_ip_only(c, 5);
        c.rate_limit.redis_url = Some(redis.url());
        c.redis.command_timeout_ms = 300;
    })
    .await;
    assert_eq!(get(&server, DEPTH, None).await.status(), StatusCode::OK);
    redis.kill();
    for _ in 0..8 {
        let started = Instant::now();
        assert_eq!(get(&server, DEPTH, None).await.status(), StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the command timeout"
        );
    }
    let failed_open = decisions(&server.metrics().await, "error_allowed");
    assert_eq!(failed_open, 8.0);
    redis.restart();
    wait_until_admitted(&server).await;
    // Counting resumed from the data Redis kept: 1 before, 1+ after; the limit binds again.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&server, DEPTH, None).await.status().as_u16());
    }
    assert!(
        statuses.contains(&429),
        "limit enforced again after recovery: {statuses:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn with_redis_down_fail_closed_answers_503_then_recovers() {
    let mut redis = RedisServer::start();
    let server = Server::start(|c| {
        per_ip_only(c, 100);
        c.rate_limit.redis_url = Some(redis.url());
        c.rate_limit.on_store_error = OnStoreError::Deny;
        c.redis.command_timeout_ms = 300;
    })
    .await;
    assert_eq!(get(&server, DEPTH, None).await.status(), StatusCode::OK);
    redis.kill();
    let resp = get(&server, DEPTH, None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limiter_unavailable");
    let failed_closed = decisions(&server.metrics().await, "error_denied");
    assert_eq!(failed_closed, 1.0);
    redis.restart();
    wait_until_admitted(&server).await;
    server.stop().await;
}
