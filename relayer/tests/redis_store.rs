//! Redis-only behaviour of the store: retention of finished orders and their claims, key
//! prefix, and bounded failures while Redis is down.

mod support;

use std::time::{Duration, Instant};

use relayer::domain::{Asset, MarketKey, Move, Order, Side, UserId};
use relayer::exchange::{Exchange, NewOrder};
use relayer::store::{RedisSettings, Store, StoreError};
use support::RedisServer;

fn store(server: &RedisServer, timeout_ms: u64, retention: Duration) -> Store {
    Store::redis(&RedisSettings {
        url: server.url(),
        key_prefix: "ret:".to_owned(),
        command_timeout: Duration::from_millis(timeout_ms),
        order_retention: retention,
    })
    .expect("store")
}

fn user(n: u8) -> UserId {
    UserId::parse("userId", &format!("0x{}", format!("{n:02x}").repeat(20))).expect("valid")
}

fn market() -> MarketKey {
    MarketKey::parse("marketKey", "80002:1").expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_orders_and_their_claims_expire_and_open_ones_stay() {
    let server = RedisServer::start();
    let exchange = Exchange::new(store(&server, 2_000, Duration::from_secs(1)));
    for u in [1, 2] {
        exchange
            .deposit(&user(u), Asset::Collateral, 1_000)
            .await
            .expect("deposit");
        exchange
            .deposit(&user(u), Asset::Shares(market()), 1_000)
            .await
            .expect("deposit");
    }
    let new = |id: &str, u: u8, side, amount| NewOrder {
        order_id: id.to_owned(),
        market_key: market(),
        user_id: user(u),
        side,
        price: 500_000,
        amount,
    };
    exchange
        .place(new("maker", 1, Side::Sell, 10), 1)
        .await
        .expect("maker rests");
    exchange
        .place(new("open", 1, Side::Sell, 10), 1)
        .await
        .expect("rests");
    exchange
        .place(new("taker", 2, Side::Buy, 10), 1)
        .await
        .expect("fills maker");
    exchange
        .place(new("gone", 2, Side::Buy, 3), 1)
        .await
        .expect("partly fills open");
    exchange
        .cancel("gone", &user(2))
        .await
        .expect_err("already filled");
    exchange
        .place(new("cxl", 2, Side::Buy, 1), 1)
        .await
        .expect("fills open");
    let exists = |key: &str| {
        server
            .cli(&["EXISTS", key])
            .is_some_and(|out| out.trim() == "1")
    };
    assert!(exists("ret:{c:maker}") && exists("ret:{m:80002:1}:o:maker"));
    let until = Instant::now() + Duration::from_secs(10);
    while exists("ret:{c:maker}")
        || exists("ret:{m:80002:1}:o:maker")
        || exists("ret:{c:taker}")
        || exists("ret:{m:80002:1}:o:taker")
    {
        assert!(Instant::now() < until, "finished orders did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The partly filled order rests: it and its claim stay.
    assert!(exists("ret:{c:open}") && exists("ret:{m:80002:1}:o:open"));
    let o = exchange
        .order_of("open", &user(1))
        .await
        .expect("open order");
    assert_eq!(o.filled, 4);
    let ttl = server.cli(&["PTTL", "ret:{c:open}"]).unwrap_or_default();
    assert_eq!(ttl.trim(), "-1", "an open order's claim has no expiry");
    // Every key carries the prefix.
    let keys = server.cli(&["KEYS", "*"]).unwrap_or_default();
    assert!(
        keys.lines().all(|k| k.starts_with("ret:")),
        "unprefixed keys: {keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_as_unavailable_within_the_timeout_and_recover_after_a_restart() {
    let mut server = RedisServer::start();
    let store = store(&server, 200, Duration::from_secs(60));
    store
        .apply_moves(&user(1), &[Move::credit(Asset::Collateral, 5)])
        .await
        .expect("store")
        .expect("deposit");
    server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.ping().await.expect_err("redis is down");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = store
            .match_order(Order::new(
                "x".into(),
                market(),
                user(1),
                Side::Buy,
                1,
                1,
                0,
            ))
            .await
            .expect_err("redis is down");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "two calls took {:?}",
            started.elapsed()
        );
    }
    // Frozen rather than gone: the call times out.
    server.restart();
    server.freeze();
    let started = Instant::now();
    assert!(store.account(&user(1)).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(1_000));
    server.restart();
    let until = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < until, "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The data survived (append-only file) and the scripts reload themselves.
    let a = store
        .apply_moves(&user(1), &[Move::reserve(Asset::Collateral, 5)])
        .await
        .expect("store")
        .expect("reserve");
    assert_eq!(a.collateral.reserved, 5);
}
