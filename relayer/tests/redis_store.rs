//! Redis-only behaviour of the store: retention of finished orders and their claims, key
//! prefix, bounded failures while Redis is down, and scripts that refuse data they cannot
//! compute with before their first write (Redis does not roll a failed script back).

mod support;

use std::time::{Duration, Instant};

use relayer::domain::{Asset, MarketKey, Move, UserId};
use relayer::exchange::Exchange;
use relayer::store::{RedisSettings, Store, StoreError};
use support::fixtures::Order;
use support::redis::RedisServer;
use support::wait::wait_for;

fn store(server: &RedisServer, timeout_ms: u64, retention: Duration) -> Store {
    Store::redis(&RedisSettings {
        url: server.url(),
        key_prefix: "ret:".to_owned(),
        command_timeout: Duration::from_millis(timeout_ms),
        order_retention: retention,
        mode: relayer::store::RedisMode::Standalone,
        cluster_nodes: Vec::new(),
        replica_acks: 0,
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
    let at_half = |order: Order| order.market(market()).price(500_000).new_order();
    exchange
        .place(
            at_half(Order::sell().id("maker").user(user(1)).amount(10)),
            1,
        )
        .await
        .expect("maker rests");
    exchange
        .place(
            at_half(Order::sell().id("open").user(user(1)).amount(10)),
            1,
        )
        .await
        .expect("rests");
    exchange
        .place(
            at_half(Order::buy().id("taker").user(user(2)).amount(10)),
            1,
        )
        .await
        .expect("fills maker");
    exchange
        .place(at_half(Order::buy().id("gone").user(user(2)).amount(3)), 1)
        .await
        .expect("partly fills open");
    exchange
        .cancel("gone", &user(2))
        .await
        .expect_err("already filled");
    exchange
        .place(at_half(Order::buy().id("cxl").user(user(2)).amount(1)), 1)
        .await
        .expect("fills open");
    let exists = |key: &str| {
        server
            .cli(&["EXISTS", key])
            .is_some_and(|out| out.trim() == "1")
    };
    // NB: a claim is keyed by its user and order id; the book keys an order by its placement.
    let claim_key = |u: u8, id: &str| format!("ret:{{c:{}:{id}}}", user(u));
    let placement = async |u: u8, id: &str| {
        exchange
            .store()
            .claim(&user(u), id)
            .await
            .expect("store")
            .expect("claimed")
            .placement_id
    };
    let order_key = |placement: &str| format!("ret:{{m:80002:1}}:o:{placement}");
    let (maker, taker, open) = (
        placement(1, "maker").await,
        placement(2, "taker").await,
        placement(1, "open").await,
    );
    assert!(exists(&claim_key(1, "maker")) && exists(&order_key(&maker)));
    wait_for(
        "finished orders to expire",
        Duration::from_secs(10),
        async || {
            !(exists(&claim_key(1, "maker"))
                || exists(&order_key(&maker))
                || exists(&claim_key(2, "taker"))
                || exists(&order_key(&taker)))
        },
    )
    .await;
    // The partly filled order rests: it and its claim stay.
    assert!(exists(&claim_key(1, "open")) && exists(&order_key(&open)));
    let found = exchange
        .order_of("open", &user(1))
        .await
        .expect("open order");
    let relayer::exchange::Found::Order(o) = found else {
        panic!("the open order is in the book: {found:?}");
    };
    assert_eq!(o.filled, 4);
    let ttl = server
        .cli(&["PTTL", &claim_key(1, "open")])
        .unwrap_or_default();
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
            .match_order(
                Order::buy()
                    .id("x")
                    .market(market())
                    .user(user(1))
                    .price(1)
                    .amount(1)
                    .created_at_ms(0)
                    .book(),
            )
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
    wait_for(
        "the store to reconnect",
        Duration::from_secs(10),
        async || store.ping().await.is_ok(),
    )
    .await;
    // The data survived (append-only file) and the scripts reload themselves.
    let a = store
        .apply_moves(&user(1), &[Move::reserve(Asset::Collateral, 5)])
        .await
        .expect("store")
        .expect("reserve");
    assert_eq!(a.collateral.reserved, 5);
}

/// Every key of `server` with its type and content (expiries aside), to compare the whole
/// dataset before and after a call.
fn dataset(server: &RedisServer) -> std::collections::BTreeMap<String, String> {
    let keys = server.cli(&["--raw", "KEYS", "*"]).unwrap_or_default();
    keys.lines()
        .filter(|k| !k.is_empty())
        .map(|key| {
            let kind = server
                .cli(&["--raw", "TYPE", key])
                .unwrap_or_default()
                .trim()
                .to_owned();
            let content = match kind.as_str() {
                "hash" => server.cli(&["--raw", "HGETALL", key]),
                "zset" => server.cli(&["--raw", "ZRANGE", key, "0", "-1", "WITHSCORES"]),
                "string" => server.cli(&["--raw", "GET", key]),
                _ => None,
            }
            .unwrap_or_default();
            // NB: hash fields come back in no fixed order.
            let mut lines: Vec<&str> = content.lines().collect();
            if kind == "hash" {
                let mut pairs: Vec<String> = lines.chunks(2).map(|p| p.join("=")).collect();
                pairs.sort();
                return (key.to_owned(), format!("{kind}: {}", pairs.join(", ")));
            }
            lines.retain(|l| !l.is_empty());
            (key.to_owned(), format!("{kind}: {}", lines.join(", ")))
        })
        .collect()
}

fn ask(id: &str, price: u64, amount: u64) -> relayer::domain::Order {
    Order::sell()
        .id(id)
        .market(market())
        .user(user(1))
        .price(price)
        .amount(amount)
        .created_at_ms(0)
        .book()
}

fn bid(id: &str, price: u64, amount: u64) -> relayer::domain::Order {
    Order::buy()
        .id(id)
        .market(market())
        .user(user(2))
        .price(price)
        .amount(amount)
        .created_at_ms(0)
        .book()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_that_meets_a_corrupt_maker_writes_nothing() {
    let server = RedisServer::start();
    let store = store(&server, 2_000, Duration::from_secs(60));
    store
        .match_order(ask("a1", 400_000, 2))
        .await
        .expect("rests");
    store
        .match_order(ask("a2", 410_000, 2))
        .await
        .expect("rests");
    // The second maker in line is unreadable: the match would fill a1, then fail on a2.
    server
        .cli(&["HSET", "ret:{m:80002:1}:o:a2", "filled", "two"])
        .expect("corrupt a2");
    let before = dataset(&server);
    let refused = store.match_order(bid("t", 500_000, 4)).await;
    let Err(error) = refused else {
        panic!("a corrupt maker fails the match: {refused:?}");
    };
    assert_eq!(dataset(&server), before, "nothing was written ({error})");
    assert!(
        error.to_string().contains("a2"),
        "the error names it: {error}"
    );
    // Repaired, the same match goes through.
    server
        .cli(&["HSET", "ret:{m:80002:1}:o:a2", "filled", "0"])
        .expect("repair a2");
    let outcome = store
        .match_order(bid("t", 500_000, 4))
        .await
        .expect("match");
    assert_eq!(outcome.fills.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_that_meets_a_corrupt_taker_writes_nothing() {
    let server = RedisServer::start();
    let store = store(&server, 2_000, Duration::from_secs(60));
    store
        .match_order(ask("a1", 400_000, 2))
        .await
        .expect("rests");
    store
        .match_order(ask("a2", 410_000, 5))
        .await
        .expect("rests");
    let matched = store
        .match_order(bid("t", 500_000, 4))
        .await
        .expect("match");
    assert_eq!(matched.fills.len(), 2);
    // The undo reverts the makers first, then the taker, whose figures are unreadable.
    server
        .cli(&["HSET", "ret:{m:80002:1}:o:t", "paid", "-1"])
        .expect("corrupt t");
    let before = dataset(&server);
    let refused = store.undo_match(&market(), "t").await;
    let Err(error) = refused else {
        panic!("a corrupt taker fails the undo: {refused:?}");
    };
    assert_eq!(dataset(&server), before, "nothing was written ({error})");
    assert!(
        error.to_string().contains("order t"),
        "the error names it: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_id_claimed_by_an_older_build_stays_claimed_for_its_user() {
    let server = RedisServer::start();
    let store = store(&server, 2_000, Duration::from_secs(60));
    // An older build kept claims by order id alone, with the user inside.
    let legacy = serde_json::json!({
        "fingerprint": "f-old",
        "marketKey": "80002:1",
        "userId": user(1).to_string(),
        "result": null,
    });
    server
        .cli(&["HSET", "ret:{c:o-9}", "claim", &legacy.to_string()])
        .expect("legacy claim");
    let claim = |u: u8| relayer::store::Claim {
        fingerprint: "f-new".to_owned(),
        market_key: market(),
        user_id: user(u),
        placement_id: "p-new".to_owned(),
        result: None,
        failed: None,
    };
    let outcome = store.claim_order_id("o-9", claim(1)).await.expect("claim");
    let relayer::store::ClaimOutcome::Existing(held) = outcome else {
        panic!("the older build's claim holds the id: {outcome:?}");
    };
    assert_eq!(
        (held.fingerprint.as_str(), held.placement_id.as_str()),
        ("f-old", "")
    );
    assert_eq!(
        store
            .claim(&user(1), "o-9")
            .await
            .expect("claim")
            .map(|c| c.fingerprint),
        Some("f-old".to_owned())
    );
    // Another user's o-9 is theirs.
    assert_eq!(
        store.claim_order_id("o-9", claim(2)).await.expect("claim"),
        relayer::store::ClaimOutcome::Claimed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_meets_a_corrupt_level_writes_nothing() {
    let server = RedisServer::start();
    let store = store(&server, 2_000, Duration::from_secs(60));
    store
        .match_order(ask("a1", 400_000, 2))
        .await
        .expect("rests");
    // The level's order count is unreadable: the cancel would take a1 out of its queue, then
    // fail on the count.
    server
        .cli(&["HSET", "ret:{m:80002:1}:l:a", "400000:n", "many"])
        .expect("corrupt the level");
    let before = dataset(&server);
    let refused = store.cancel_order(&market(), "a1", &user(1)).await;
    let Err(error) = refused else {
        panic!("a corrupt level fails the cancel: {refused:?}");
    };
    assert_eq!(dataset(&server), before, "nothing was written ({error})");
    assert!(
        error.to_string().contains("level 400000"),
        "the error names it: {error}"
    );
}

/// A store on `primary` whose writes wait for one replica, each call bounded by 1 s.
fn acked_store(primary: &RedisServer) -> Store {
    Store::redis(&RedisSettings {
        url: primary.url(),
        key_prefix: "acks:".to_owned(),
        command_timeout: Duration::from_millis(1_000),
        order_retention: Duration::from_secs(3600),
        mode: relayer::store::RedisMode::Standalone,
        cluster_nodes: Vec::new(),
        replica_acks: 1,
    })
    .expect("store")
}

/// `replica` replicating `primary`, its link up.
fn replicate(primary: &RedisServer, replica: &RedisServer) {
    replica
        .cli(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
        .expect("REPLICAOF");
    let replica_online = || {
        primary
            .cli(&["INFO", "replication"])
            .is_some_and(|i| i.contains("connected_slaves:1") && i.contains("state=online"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica_online() {
        assert!(Instant::now() < deadline, "the replica did not come online");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `redis.replicaAcks: 1` a write counts only once a replica has it: without one it is
/// answered `Unavailable` (outcome unknown, it did happen on the primary), and so is its
/// replay with the same operation id, on another connection, while the replica still lacks
/// the first write; once the replica catches up, the replay is confirmed and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_and_its_replay_count_only_once_a_replica_has_them() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replicate(&primary, &replica);
    let store = acked_store(&primary);
    let deposit = [Move::credit(Asset::Collateral, 7)];
    store
        .apply_moves_once(&user(1), "dep-0", &deposit)
        .await
        .expect("confirmed by the replica")
        .expect("applied");

    // The replica hangs: the write happens on the primary but is not confirmed.
    replica.freeze();
    let error = store
        .apply_moves_once(&user(1), "dep-1", &deposit)
        .await
        .expect_err("no replica confirms");
    assert!(
        matches!(&error, StoreError::Unavailable(m) if m.contains("confirmed by 0 of 1")),
        "{error:?}"
    );
    // Its replay finds the operation done and writes nothing of its own; still it must not
    // count as confirmed while the replica lacks the first write.
    for _ in 0..3 {
        let replay = store.apply_moves_once(&user(1), "dep-1", &deposit).await;
        assert!(
            matches!(&replay, Err(StoreError::Unavailable(m)) if m.contains("confirmed by 0 of 1")),
            "a replay counted as confirmed while the replica lacks the write: {replay:?}"
        );
    }
    replica.thaw();
    let account = store
        .apply_moves_once(&user(1), "dep-1", &deposit)
        .await
        .expect("confirmed once the replica caught up")
        .expect("applied once");
    assert_eq!(account.collateral.available, 14, "each deposit once");
}

/// Without any replica, a write with `replicaAcks: 1` is never confirmed, and reads still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_replica_writes_are_unconfirmed_and_reads_work() {
    let primary = RedisServer::start();
    let store = acked_store(&primary);
    let error = store
        .apply_moves(&user(2), &[Move::credit(Asset::Collateral, 5)])
        .await
        .expect_err("no replica");
    assert!(
        matches!(&error, StoreError::Unavailable(m) if m.contains("redis.replicaAcks")),
        "{error:?}"
    );
    store.account(&user(2)).await.expect("reads do not wait");
    store
        .depth(&market(), 10)
        .await
        .expect("read-only scripts do not wait");
}

/// Two replicas share one Redis: a depth that one of them read is not answered again once the
/// other changed the book (the book's depth version moved), and a change the version does not
/// show (what a build without it writes during a cutover; here a raw write of a level) is seen
/// within the snapshot's age bound of one second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_read_by_one_replica_follows_the_other_replicas_changes() {
    let server = RedisServer::start();
    let a = store(&server, 5_000, Duration::from_secs(3600));
    let b = store(&server, 5_000, Duration::from_secs(3600));
    let bids = |s: &Store| {
        let s = s.clone();
        async move {
            s.depth(&market(), 10)
                .await
                .expect("depth")
                .0
                .iter()
                .map(|l| (l.price, l.amount, l.orders))
                .collect::<Vec<_>>()
        }
    };
    b.match_order(bid("o1", 400_000, 5)).await.expect("placed");
    assert_eq!(bids(&a).await, vec![(400_000, 5, 1)]);
    b.match_order(bid("o2", 400_000, 2)).await.expect("placed");
    assert_eq!(
        bids(&a).await,
        vec![(400_000, 7, 2)],
        "b's order is seen at once"
    );
    b.match_order(ask("t1", 400_000, 7)).await.expect("placed");
    assert_eq!(bids(&a).await, vec![], "b's fill is seen at once");
    b.match_order(bid("o3", 300_000, 5)).await.expect("placed");
    assert_eq!(bids(&a).await, vec![(300_000, 5, 1)]);
    // A level written without moving the depth version.
    server
        .cli(&["HSET", "ret:{m:80002:1}:l:b", "300000", "9"])
        .expect("raw write");
    let started = Instant::now();
    wait_for(
        "the raw write in a's depth",
        Duration::from_secs(5),
        async || bids(&a).await == vec![(300_000, 9, 1)],
    )
    .await;
    assert!(
        started.elapsed() <= Duration::from_millis(2_500),
        "seen after {:?}, beyond the one-second age bound",
        started.elapsed()
    );
}
