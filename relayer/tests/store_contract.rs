//! The store contract: the same tests against the in-memory and the Redis backend.
//!
//! Each test is an `async fn(Store)` below; `contract!` turns it into `memory::<name>` and
//! `redis::<name>` and `cluster::<name>` (each Redis test starts its own `redis-server`, each
//! cluster test its own cluster of six). The expected values are the
//! book rules of `book.rs`; a backend that differs fails here.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use relayer::book::{
    CancelError, Level, MAX_FILLS_PER_ORDER, MAX_SELF_TRADE_CANCELS_PER_ORDER, PageRequest,
};
use relayer::domain::{
    Account, Asset, Balance, BalanceError, MarketKey, Move, OrderStatus, Side, UserId,
};
use relayer::exchange::Exchange;
use relayer::store::{
    ApiKeyRecord, Claim, ClaimOutcome, FailedPlacement, FailureKind, Fence, PlacementRecord,
    RedisSettings, Store, StoreError,
};
use support::cluster::RedisCluster;
use support::fixtures::Order;
use support::redis::RedisServer;

/// A store and, for Redis, the server or cluster behind it (killed on drop).
struct Backend {
    store: Store,
    _server: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl Backend {
    fn memory() -> Self {
        Self {
            store: Store::memory(),
            _server: None,
            _cluster: None,
        }
    }

    fn redis() -> Self {
        let server = RedisServer::start();
        let store = Store::redis(&RedisSettings {
            url: server.url(),
            key_prefix: "contract:".to_owned(),
            command_timeout: std::time::Duration::from_secs(5),
            order_retention: std::time::Duration::from_secs(3600),
            mode: relayer::store::RedisMode::Standalone,
            cluster_nodes: Vec::new(),
            replica_acks: 0,
        })
        .expect("redis store");
        Self {
            store,
            _server: Some(server),
            _cluster: None,
        }
    }

    /// A Redis Cluster of 3 masters and 3 replicas; every write waits for its replica.
    fn cluster() -> Self {
        let cluster = RedisCluster::start();
        let store = Store::redis(&RedisSettings {
            url: cluster.seed_url(),
            key_prefix: "contract:".to_owned(),
            command_timeout: std::time::Duration::from_secs(5),
            order_retention: std::time::Duration::from_secs(3600),
            mode: relayer::store::RedisMode::Cluster,
            cluster_nodes: cluster.other_nodes(),
            replica_acks: 1,
        })
        .expect("redis cluster store");
        Self {
            store,
            _server: None,
            _cluster: Some(cluster),
        }
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::memory();
                    super::$name(backend.store.clone()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::redis();
                    super::$name(backend.store.clone()).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::cluster();
                    super::$name(backend.store.clone()).await;
                }
            )*
        }
    };
}

contract!(
    ping_answers,
    an_unknown_account_is_empty,
    moves_apply_all_or_none,
    a_refusal_names_the_bucket_and_changes_nothing,
    deposits_are_capped_at_u64_max_exactly,
    empty_share_balances_disappear,
    moves_with_an_operation_id_apply_once,
    a_refused_operation_id_is_not_remembered,
    claims_are_first_come_per_user_and_keep_their_result,
    a_failed_placement_keeps_its_failure_on_the_claim,
    finishing_a_missing_claim_changes_nothing,
    best_price_fills_first_then_earliest_at_that_price,
    trades_execute_at_the_maker_price_and_refund_the_improvement,
    a_sell_taker_hits_the_highest_bid_at_its_price,
    a_partial_fill_rests_the_remainder,
    orders_that_do_not_cross_rest,
    self_trade_cancels_the_resting_order_and_continues,
    rounding_is_cumulative_per_buy_order,
    quantities_beyond_two_to_the_53_stay_exact,
    cancel_is_owner_only_and_once,
    a_filled_order_cannot_be_cancelled,
    cancel_in_an_unknown_market_finds_nothing,
    orders_are_found_by_market_and_id,
    depth_aggregates_levels_best_first_and_limits_them,
    depth_follows_every_change_of_the_book,
    open_orders_list_in_arrival_order_optionally_by_user,
    open_order_pages_cover_every_order_once_in_arrival_order,
    a_page_cursor_survives_orders_added_and_cancelled_between_pages,
    one_placement_makes_at_most_the_capped_fills_and_rests_the_remainder,
    one_placement_cancels_at_most_the_capped_own_resting_orders,
    the_caps_keep_collateral_and_shares_conserved,
    api_keys_are_found_by_hash_and_revoked_by_id,
    concurrent_reserves_never_overspend,
    concurrent_claims_have_one_winner,
    concurrent_crossing_orders_never_overfill,
    the_exchange_keeps_collateral_and_shares_conserved,
    matching_the_same_order_id_again_replays_the_first_outcome,
    undoing_a_match_restores_the_book_and_the_makers_priority,
    undo_is_idempotent_and_refuses_a_later_match,
    undoing_a_placement_that_never_matched_refuses_a_late_match,
    undo_releases_what_makers_that_left_the_book_since_still_reserve,
    undo_reopens_a_buy_maker_it_filled_with_its_paid_collateral_reverted,
    self_trade_cancellations_are_not_undone,
    an_undo_after_the_taker_left_the_book_releases_only_its_own_fills,
    a_buy_that_paid_ahead_after_an_undo_pays_only_what_exceeds_it,
    an_undone_fill_that_completed_a_resting_buy_gives_back_its_refund,
    a_repeated_cancellation_answers_the_release_it_recorded,
    saga_entries_are_fenced_by_their_lease_and_epoch,
    a_stale_fence_changes_nothing_once_a_newer_epoch_wrote,
);

fn user(n: u8) -> UserId {
    UserId::parse("userId", &format!("0x{}", format!("{n:02x}").repeat(20))).expect("valid")
}

fn market(raw: &str) -> MarketKey {
    MarketKey::parse("marketKey", raw).expect("valid")
}

fn m1() -> MarketKey {
    market("80002:1")
}

fn bal(available: u128, reserved: u128) -> Balance {
    Balance {
        available,
        reserved,
    }
}

async fn apply(store: &Store, u: u8, moves: &[Move]) -> Result<Account, BalanceError> {
    store
        .apply_moves(&user(u), moves)
        .await
        .expect("store answers")
}

async fn place(store: &Store, o: Order) -> relayer::book::MatchOutcome {
    store.match_order(o.book()).await.expect("store answers")
}

async fn ping_answers(store: Store) {
    store.ping().await.expect("ping");
}

async fn an_unknown_account_is_empty(store: Store) {
    assert_eq!(
        store.account(&user(9)).await.expect("account"),
        Account::default()
    );
}

async fn moves_apply_all_or_none(store: Store) {
    let shares = Asset::Shares(m1());
    let after = apply(
        &store,
        1,
        &[
            Move::credit(Asset::Collateral, 100),
            Move::credit(shares.clone(), 7),
            Move::reserve(Asset::Collateral, 30),
        ],
    )
    .await
    .expect("deposit and reserve");
    assert_eq!(after.collateral, bal(70, 30));
    assert_eq!(after.balance(&shares), bal(7, 0));
    let after = apply(
        &store,
        1,
        &[
            Move::release(Asset::Collateral, 10),
            Move::debit_reserved(Asset::Collateral, 20),
            Move::reserve(shares.clone(), 7),
        ],
    )
    .await
    .expect("release, debit, reserve");
    assert_eq!(after.collateral, bal(80, 0));
    assert_eq!(after.balance(&shares), bal(0, 7));
    assert_eq!(store.account(&user(1)).await.expect("account"), after);
}

async fn a_refusal_names_the_bucket_and_changes_nothing(store: Store) {
    apply(&store, 1, &[Move::credit(Asset::Collateral, 100)])
        .await
        .expect("deposit");
    let err = apply(
        &store,
        1,
        &[
            Move::reserve(Asset::Collateral, 60),
            Move::reserve(Asset::Collateral, 60),
        ],
    )
    .await
    .expect_err("second reserve lacks funds");
    assert_eq!(
        err,
        BalanceError::Insufficient {
            asset: Asset::Collateral,
            bucket: "available",
            has: 40,
            needs: 60
        }
    );
    let err = apply(&store, 1, &[Move::release(Asset::Collateral, 1)])
        .await
        .expect_err("nothing reserved");
    assert!(matches!(
        err,
        BalanceError::Insufficient {
            bucket: "reserved",
            has: 0,
            needs: 1,
            ..
        }
    ));
    let err = apply(&store, 1, &[Move::reserve(Asset::Shares(m1()), 1)])
        .await
        .expect_err("no shares");
    assert!(matches!(
        err,
        BalanceError::Insufficient {
            asset: Asset::Shares(_),
            ..
        }
    ));
    assert_eq!(
        store.account(&user(1)).await.expect("account").collateral,
        bal(100, 0)
    );
}

async fn deposits_are_capped_at_u64_max_exactly(store: Store) {
    let max = u64::MAX;
    let a = apply(
        &store,
        1,
        &[
            Move::credit(Asset::Collateral, max - 1),
            Move::reserve(Asset::Collateral, max - 2),
        ],
    )
    .await
    .expect("deposit just below the cap");
    assert_eq!(a.collateral, bal(1, u128::from(max - 2)));
    let a = apply(&store, 1, &[Move::credit(Asset::Collateral, 1)])
        .await
        .expect("deposit up to the cap");
    assert_eq!(a.collateral, bal(2, u128::from(max - 2)));
    assert_eq!(
        apply(&store, 1, &[Move::credit(Asset::Collateral, 1)]).await,
        Err(BalanceError::Overflow {
            asset: Asset::Collateral
        })
    );
    // Fills credit from outside too; the cap holds for them as for deposits.
    let a = apply(
        &store,
        1,
        &[
            Move::debit_reserved(Asset::Collateral, max - 3),
            Move::release(Asset::Collateral, 1),
        ],
    )
    .await
    .expect("debit and release");
    assert_eq!(a.collateral, bal(3, 0));
}

async fn empty_share_balances_disappear(store: Store) {
    let shares = Asset::Shares(m1());
    apply(&store, 1, &[Move::credit(shares.clone(), 5)])
        .await
        .expect("deposit");
    let a = apply(
        &store,
        1,
        &[
            Move::reserve(shares.clone(), 5),
            Move::debit_reserved(shares.clone(), 5),
        ],
    )
    .await
    .expect("spend all");
    assert!(a.shares.is_empty(), "{a:?}");
    assert_eq!(
        store.account(&user(1)).await.expect("account"),
        Account::default()
    );
}

async fn moves_with_an_operation_id_apply_once(store: Store) {
    let first = store
        .apply_moves_once(
            &user(1),
            "fill:t#0:buyer",
            &[Move::credit(Asset::Collateral, 5)],
        )
        .await
        .expect("store")
        .expect("applied");
    assert_eq!(first.collateral, bal(5, 0));
    let again = store
        .apply_moves_once(
            &user(1),
            "fill:t#0:buyer",
            &[Move::credit(Asset::Collateral, 5)],
        )
        .await
        .expect("store")
        .expect("replayed");
    assert_eq!(again.collateral, bal(5, 0));
    // Ids are per account: the same id on another account is another operation.
    let other = store
        .apply_moves_once(
            &user(2),
            "fill:t#0:buyer",
            &[Move::credit(Asset::Collateral, 5)],
        )
        .await
        .expect("store")
        .expect("applied");
    assert_eq!(other.collateral, bal(5, 0));
}

async fn a_refused_operation_id_is_not_remembered(store: Store) {
    let reserve = [Move::reserve(Asset::Collateral, 5)];
    assert!(
        store
            .apply_moves_once(&user(1), "op", &reserve)
            .await
            .expect("store")
            .is_err()
    );
    apply(&store, 1, &[Move::credit(Asset::Collateral, 5)])
        .await
        .expect("deposit");
    let a = store
        .apply_moves_once(&user(1), "op", &reserve)
        .await
        .expect("store")
        .expect("applies now");
    assert_eq!(a.collateral, bal(0, 5));
}

fn claim(u: u8, fingerprint: &str) -> Claim {
    Claim {
        fingerprint: fingerprint.to_owned(),
        market_key: m1(),
        user_id: user(u),
        placement_id: format!("p-{fingerprint}"),
        result: None,
        failed: None,
    }
}

async fn claims_are_first_come_per_user_and_keep_their_result(store: Store) {
    assert_eq!(
        store
            .claim_order_id("o1", claim(1, "f1"))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store
            .claim_order_id(
                "o1",
                Claim {
                    user_id: user(1),
                    ..claim(2, "f2")
                }
            )
            .await
            .expect("claim"),
        ClaimOutcome::Existing(claim(1, "f1"))
    );
    // Another user's "o1" is another order id.
    assert_eq!(
        store
            .claim_order_id("o1", claim(2, "f2"))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed
    );
    // The same placement claiming again (a retried step) holds it.
    assert_eq!(
        store
            .claim_order_id("o1", claim(1, "f1"))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed
    );
    let outcome = place(
        &store,
        Order::buy()
            .id("p-f1")
            .user(user(1))
            .price(500_000)
            .amount(3),
    )
    .await;
    let record = PlacementRecord {
        order: outcome.order,
        fills: outcome.fills,
    };
    // Only the placement holding the claim records on it.
    store
        .finish_claim(&user(1), "o1", "p-other", record.clone(), None)
        .await
        .expect("finish");
    assert_eq!(
        store.claim(&user(1), "o1").await.expect("claim"),
        Some(claim(1, "f1"))
    );
    store
        .finish_claim(&user(1), "o1", "p-f1", record.clone(), None)
        .await
        .expect("finish");
    let expected = Claim {
        result: Some(record),
        ..claim(1, "f1")
    };
    assert_eq!(
        store.claim(&user(1), "o1").await.expect("claim"),
        Some(expected.clone())
    );
    assert_eq!(
        store
            .claim_order_id(
                "o1",
                Claim {
                    placement_id: "p-retry".to_owned(),
                    ..claim(1, "f1")
                }
            )
            .await
            .expect("claim"),
        ClaimOutcome::Existing(expected)
    );
    assert_eq!(
        store.claim(&user(2), "o1").await.expect("claim"),
        Some(claim(2, "f2"))
    );
    assert_eq!(store.claim(&user(3), "o1").await.expect("claim"), None);
}

async fn a_failed_placement_keeps_its_failure_on_the_claim(store: Store) {
    store
        .claim_order_id("o1", claim(1, "f1"))
        .await
        .expect("claim");
    let failed = FailedPlacement {
        kind: FailureKind::NotSettled,
        message: "settlement failed: 503".to_owned(),
    };
    store
        .fail_claim(&user(1), "o1", "p-f1", failed.clone(), None)
        .await
        .expect("fail");
    let held = Claim {
        failed: Some(failed),
        ..claim(1, "f1")
    };
    assert_eq!(
        store.claim(&user(1), "o1").await.expect("claim"),
        Some(held.clone())
    );
    // The id stays spent: a retry is answered the failure, never placed again.
    assert_eq!(
        store
            .claim_order_id(
                "o1",
                Claim {
                    placement_id: "p-retry".to_owned(),
                    ..claim(1, "f1")
                }
            )
            .await
            .expect("claim"),
        ClaimOutcome::Existing(held)
    );
}

async fn finishing_a_missing_claim_changes_nothing(store: Store) {
    let o = Order::buy()
        .id("ghost")
        .user(user(1))
        .price(1)
        .amount(1)
        .book();
    store
        .finish_claim(
            &user(1),
            "ghost",
            "ghost",
            PlacementRecord {
                order: o,
                fills: vec![],
            },
            None,
        )
        .await
        .expect("finish");
    assert_eq!(store.claim(&user(1), "ghost").await.expect("claim"), None);
}

async fn best_price_fills_first_then_earliest_at_that_price(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(600_000)
            .amount(10),
    )
    .await;
    place(
        &store,
        Order::sell()
            .id("a2")
            .user(user(2))
            .price(550_000)
            .amount(10),
    )
    .await;
    place(
        &store,
        Order::sell()
            .id("a3")
            .user(user(3))
            .price(550_000)
            .amount(10),
    )
    .await;
    let out = place(
        &store,
        Order::buy().id("b").user(user(4)).price(600_000).amount(25),
    )
    .await;
    let makers: Vec<_> = out
        .fills
        .iter()
        .map(|f| (f.maker_order_id.as_str(), f.amount, f.price, f.collateral))
        .collect();
    assert_eq!(
        makers,
        vec![
            ("a2", 10, 550_000, 6),
            ("a3", 10, 550_000, 5),
            ("a1", 5, 600_000, 3)
        ]
    );
    let ids: Vec<_> = out.fills.iter().map(|f| f.trade_id.as_str()).collect();
    assert_eq!(ids, vec!["b#0", "b#1", "b#2"]);
    assert_eq!(out.order.status, OrderStatus::Filled);
    assert_eq!(out.order.seq, 3);
    assert_eq!(out.order.paid, 14);
    assert_eq!(out.order.notional, 14_000_000);
    // reserved ceil(0.6 * 25) = 15, paid 14: the completing fill refunds 1.
    assert_eq!(out.fills[2].buyer_refund, 1);
    assert_eq!(out.fills[0].buyer_refund, 0);
    let a1 = store.order(&m1(), "a1").await.expect("order").expect("a1");
    assert_eq!(
        (a1.status, a1.filled, a1.paid),
        (OrderStatus::PartiallyFilled, 5, 3)
    );
    let a2 = store.order(&m1(), "a2").await.expect("order").expect("a2");
    assert_eq!(
        (a2.status, a2.paid, a2.notional),
        (OrderStatus::Filled, 6, 5_500_000)
    );
}

async fn trades_execute_at_the_maker_price_and_refund_the_improvement(store: Store) {
    place(
        &store,
        Order::sell()
            .id("ask")
            .user(user(1))
            .price(400_000)
            .amount(10),
    )
    .await;
    let out = place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(2))
            .price(700_000)
            .amount(10),
    )
    .await;
    assert_eq!(out.fills.len(), 1);
    let fill = &out.fills[0];
    assert_eq!(
        (fill.price, fill.collateral, fill.buyer_refund),
        (400_000, 4, 3)
    );
    assert_eq!(
        (fill.buyer.clone(), fill.seller.clone()),
        (user(2), user(1))
    );
    assert_eq!(
        (fill.buy_order_id.as_str(), fill.sell_order_id.as_str()),
        ("bid", "ask")
    );
    assert_eq!(
        (fill.maker_order_id.as_str(), fill.taker_order_id.as_str()),
        ("ask", "bid")
    );
    assert_eq!(fill.market_key, m1());
    assert_eq!(out.order.paid, 4);
}

async fn a_sell_taker_hits_the_highest_bid_at_its_price(store: Store) {
    place(
        &store,
        Order::buy().id("b1").user(user(1)).price(300_000).amount(5),
    )
    .await;
    place(
        &store,
        Order::buy().id("b2").user(user(2)).price(500_000).amount(5),
    )
    .await;
    let out = place(
        &store,
        Order::sell().id("s").user(user(3)).price(250_000).amount(7),
    )
    .await;
    let got: Vec<_> = out
        .fills
        .iter()
        .map(|f| (f.maker_order_id.as_str(), f.price, f.amount, f.buyer_refund))
        .collect();
    assert_eq!(got, vec![("b2", 500_000, 5, 0), ("b1", 300_000, 2, 0)]);
    assert_eq!(out.order.paid, 4);
    let b1 = store.order(&m1(), "b1").await.expect("order").expect("b1");
    assert_eq!(b1.remaining(), 3);
}

async fn a_partial_fill_rests_the_remainder(store: Store) {
    place(
        &store,
        Order::sell()
            .id("ask")
            .user(user(1))
            .price(500_000)
            .amount(4),
    )
    .await;
    let out = place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(2))
            .price(500_000)
            .amount(10),
    )
    .await;
    assert_eq!(out.order.status, OrderStatus::PartiallyFilled);
    assert_eq!(out.order.remaining(), 6);
    let (bids, asks) = store.depth(&m1(), 10).await.expect("depth");
    assert_eq!(
        bids,
        vec![Level {
            price: 500_000,
            amount: 6,
            orders: 1
        }]
    );
    assert!(asks.is_empty());
}

async fn orders_that_do_not_cross_rest(store: Store) {
    place(
        &store,
        Order::sell()
            .id("ask")
            .user(user(1))
            .price(600_000)
            .amount(4),
    )
    .await;
    let out = place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(2))
            .price(590_000)
            .amount(4),
    )
    .await;
    assert!(out.fills.is_empty());
    assert_eq!(out.order.status, OrderStatus::Open);
    assert_eq!(store.open_orders(&m1(), None).await.expect("open").len(), 2);
}

async fn self_trade_cancels_the_resting_order_and_continues(store: Store) {
    place(
        &store,
        Order::sell()
            .id("mine")
            .user(user(1))
            .price(500_000)
            .amount(5),
    )
    .await;
    place(
        &store,
        Order::sell()
            .id("theirs")
            .user(user(2))
            .price(510_000)
            .amount(5),
    )
    .await;
    let out = place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(1))
            .price(600_000)
            .amount(5),
    )
    .await;
    assert_eq!(out.self_trade_cancelled.len(), 1);
    assert_eq!(out.self_trade_cancelled[0].order_id, "mine");
    assert_eq!(out.self_trade_cancelled[0].status, OrderStatus::Cancelled);
    assert_eq!(out.self_trade_cancelled[0].still_reserved(), 5);
    assert_eq!(out.fills.len(), 1);
    assert_eq!(out.fills[0].maker_order_id, "theirs");
    let mine = store
        .order(&m1(), "mine")
        .await
        .expect("order")
        .expect("mine");
    assert_eq!(mine.status, OrderStatus::Cancelled);
    let (bids, asks) = store.depth(&m1(), 10).await.expect("depth");
    assert!(bids.is_empty() && asks.is_empty(), "{bids:?} {asks:?}");
}

async fn rounding_is_cumulative_per_buy_order(store: Store) {
    place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(1))
            .price(500_000)
            .amount(2),
    )
    .await;
    let f1 = place(
        &store,
        Order::sell()
            .id("s1")
            .user(user(2))
            .price(500_000)
            .amount(1),
    )
    .await
    .fills;
    let f2 = place(
        &store,
        Order::sell()
            .id("s2")
            .user(user(3))
            .price(500_000)
            .amount(1),
    )
    .await
    .fills;
    assert_eq!((f1[0].collateral, f2[0].collateral), (1, 0));
    let bid = store
        .order(&m1(), "bid")
        .await
        .expect("order")
        .expect("bid");
    assert_eq!(
        (bid.paid, bid.notional, bid.status),
        (1, 1_000_000, OrderStatus::Filled)
    );
}

async fn quantities_beyond_two_to_the_53_stay_exact(store: Store) {
    let big = u64::MAX - 1;
    place(
        &store,
        Order::sell()
            .id("ask1")
            .user(user(1))
            .price(999_999)
            .amount(big / 2),
    )
    .await;
    place(
        &store,
        Order::sell()
            .id("ask2")
            .user(user(2))
            .price(999_999)
            .amount(big / 2),
    )
    .await;
    let bid = Order::buy()
        .id("bid")
        .user(user(3))
        .price(999_999)
        .amount(big);
    assert_eq!(bid.book().reserved, 18_446_725_626_965_477_905);
    let out = place(&store, bid).await;
    assert_eq!(out.order.status, OrderStatus::Filled);
    assert_eq!(out.order.filled, big);
    assert_eq!(out.order.notional, 999_999 * u128::from(big));
    assert_eq!(out.order.paid, 18_446_725_626_965_477_905);
    let c: Vec<_> = out.fills.iter().map(|f| f.collateral).collect();
    assert_eq!(
        c,
        vec![9_223_362_813_482_738_953, 9_223_362_813_482_738_952]
    );
    assert_eq!(out.fills[1].buyer_refund, 0);
    let (_, asks) = store.depth(&m1(), 5).await.expect("depth");
    assert!(asks.is_empty());
    // A level whose total exceeds u64.
    place(
        &store,
        Order::sell()
            .id("x1")
            .user(user(1))
            .price(5)
            .amount(u64::MAX),
    )
    .await;
    place(
        &store,
        Order::sell()
            .id("x2")
            .user(user(2))
            .price(5)
            .amount(u64::MAX),
    )
    .await;
    let (_, asks) = store.depth(&m1(), 5).await.expect("depth");
    assert_eq!(
        asks,
        vec![Level {
            price: 5,
            amount: 2 * u128::from(u64::MAX),
            orders: 2
        }]
    );
}

async fn cancel_is_owner_only_and_once(store: Store) {
    place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(1))
            .price(500_000)
            .amount(3),
    )
    .await;
    assert_eq!(
        store
            .cancel_order(&m1(), "bid", &user(2))
            .await
            .expect("store"),
        Err(CancelError::NotFound)
    );
    let cancelled = store
        .cancel_order(&m1(), "bid", &user(1))
        .await
        .expect("store")
        .expect("owner cancels");
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(cancelled.still_reserved(), 2);
    assert_eq!(
        store
            .cancel_order(&m1(), "bid", &user(1))
            .await
            .expect("store"),
        Err(CancelError::NotOpen(OrderStatus::Cancelled))
    );
    let (bids, _) = store.depth(&m1(), 10).await.expect("depth");
    assert!(bids.is_empty());
    // A cancelled order no longer matches.
    let out = place(
        &store,
        Order::sell()
            .id("ask")
            .user(user(2))
            .price(100_000)
            .amount(3),
    )
    .await;
    assert!(out.fills.is_empty());
}

async fn a_filled_order_cannot_be_cancelled(store: Store) {
    place(
        &store,
        Order::sell()
            .id("ask")
            .user(user(1))
            .price(500_000)
            .amount(3),
    )
    .await;
    place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(2))
            .price(500_000)
            .amount(3),
    )
    .await;
    assert_eq!(
        store
            .cancel_order(&m1(), "ask", &user(1))
            .await
            .expect("store"),
        Err(CancelError::NotOpen(OrderStatus::Filled))
    );
}

async fn cancel_in_an_unknown_market_finds_nothing(store: Store) {
    assert_eq!(
        store
            .cancel_order(&market("1:404"), "x", &user(1))
            .await
            .expect("store"),
        Err(CancelError::NotFound)
    );
}

async fn orders_are_found_by_market_and_id(store: Store) {
    let placed = place(
        &store,
        Order::sell()
            .id("o1")
            .user(user(1))
            .price(123_456)
            .amount(9),
    )
    .await
    .order;
    assert_eq!(
        store.order(&m1(), "o1").await.expect("order"),
        Some(placed.clone())
    );
    assert_eq!(placed.created_at_ms, 1_700_000_000_000);
    assert_eq!(placed.reserved, 9);
    assert_eq!(store.order(&m1(), "o2").await.expect("order"), None);
    assert_eq!(
        store.order(&market("80002:2"), "o1").await.expect("order"),
        None
    );
}

async fn depth_aggregates_levels_best_first_and_limits_them(store: Store) {
    for (i, (side, price, amount)) in [
        (Side::Buy, 400_000, 1),
        (Side::Buy, 450_000, 2),
        (Side::Buy, 450_000, 3),
        (Side::Buy, 300_000, 4),
        (Side::Sell, 600_000, 5),
        (Side::Sell, 550_000, 6),
        (Side::Sell, 700_000, 7),
    ]
    .into_iter()
    .enumerate()
    {
        place(
            &store,
            Order::side(side)
                .id(format!("o{i}"))
                .user(user(1 + i as u8))
                .price(price)
                .amount(amount),
        )
        .await;
    }
    let lvl = |price, amount, orders| Level {
        price,
        amount,
        orders,
    };
    let (bids, asks) = store.depth(&m1(), 2).await.expect("depth");
    assert_eq!(bids, vec![lvl(450_000, 5, 2), lvl(400_000, 1, 1)]);
    assert_eq!(asks, vec![lvl(550_000, 6, 1), lvl(600_000, 5, 1)]);
    // A partial fill lowers its level; a complete one removes the order from it.
    place(
        &store,
        Order::sell()
            .id("t")
            .user(user(20))
            .price(450_000)
            .amount(3),
    )
    .await;
    let (bids, _) = store.depth(&m1(), 10).await.expect("depth");
    assert_eq!(
        bids,
        vec![lvl(450_000, 2, 1), lvl(400_000, 1, 1), lvl(300_000, 4, 1)]
    );
    let (bids, asks) = store.depth(&market("80002:9"), 10).await.expect("depth");
    assert!(bids.is_empty() && asks.is_empty());
}

/// Depth read again after each kind of change of the levels (a resting order, a partial and
/// a complete fill, a cancellation, undoing a fill of an open maker and of one it completed)
/// answers the book as it is now: the Redis store serves a depth read again only while the
/// book's depth version says nothing changed, so this fails if a change leaves it unmoved.
async fn depth_follows_every_change_of_the_book(store: Store) {
    let lvl = |price, amount, orders| Level {
        price,
        amount,
        orders,
    };
    let bids = |store: Store| async move { store.depth(&m1(), 10).await.expect("depth").0 };
    assert_eq!(bids(store.clone()).await, vec![]);
    place(
        &store,
        Order::buy().id("o1").user(user(1)).price(400_000).amount(5),
    )
    .await;
    assert_eq!(bids(store.clone()).await, vec![lvl(400_000, 5, 1)]);
    assert_eq!(
        bids(store.clone()).await,
        vec![lvl(400_000, 5, 1)],
        "read twice"
    );
    place(
        &store,
        Order::sell()
            .id("t1")
            .user(user(2))
            .price(400_000)
            .amount(2),
    )
    .await;
    assert_eq!(
        bids(store.clone()).await,
        vec![lvl(400_000, 3, 1)],
        "partial fill"
    );
    store
        .cancel_order(&m1(), "o1", &user(1))
        .await
        .expect("store")
        .expect("cancelled");
    assert_eq!(bids(store.clone()).await, vec![], "cancelled");
    place(
        &store,
        Order::buy().id("o2").user(user(3)).price(300_000).amount(4),
    )
    .await;
    assert_eq!(bids(store.clone()).await, vec![lvl(300_000, 4, 1)]);
    place(
        &store,
        Order::sell()
            .id("t2")
            .user(user(4))
            .price(300_000)
            .amount(1),
    )
    .await;
    assert_eq!(
        bids(store.clone()).await,
        vec![lvl(300_000, 3, 1)],
        "partial fill"
    );
    store.undo_match(&m1(), "t2").await.expect("undo");
    assert_eq!(
        bids(store.clone()).await,
        vec![lvl(300_000, 4, 1)],
        "undo into an open maker"
    );
    place(
        &store,
        Order::sell()
            .id("t3")
            .user(user(5))
            .price(300_000)
            .amount(4),
    )
    .await;
    assert_eq!(bids(store.clone()).await, vec![], "complete fill");
    store.undo_match(&m1(), "t3").await.expect("undo");
    assert_eq!(
        bids(store.clone()).await,
        vec![lvl(300_000, 4, 1)],
        "the maker is back"
    );
}

async fn open_orders_list_in_arrival_order_optionally_by_user(store: Store) {
    place(
        &store,
        Order::sell().id("a").user(user(1)).price(600_000).amount(5),
    )
    .await;
    place(
        &store,
        Order::buy().id("b").user(user(2)).price(400_000).amount(5),
    )
    .await;
    place(
        &store,
        Order::buy().id("c").user(user(1)).price(300_000).amount(5),
    )
    .await;
    place(
        &store,
        Order::sell().id("d").user(user(3)).price(700_000).amount(5),
    )
    .await;
    place(
        &store,
        Order::buy().id("e").user(user(2)).price(600_000).amount(2),
    )
    .await; // partly fills "a"
    store
        .cancel_order(&m1(), "d", &user(3))
        .await
        .expect("store")
        .expect("cancel");
    let ids = |orders: Vec<relayer::domain::Order>| {
        orders.into_iter().map(|o| o.order_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.open_orders(&m1(), None).await.expect("open")),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        ids(store
            .open_orders(&m1(), Some(&user(1)))
            .await
            .expect("open")),
        vec!["a", "c"]
    );
    let open = store
        .open_orders(&m1(), Some(&user(1)))
        .await
        .expect("open");
    assert_eq!(open[0].status, OrderStatus::PartiallyFilled);
    assert!(
        store
            .open_orders(&market("80002:9"), None)
            .await
            .expect("open")
            .is_empty()
    );
}

/// The ids of a page's orders.
fn page_ids(orders: &[relayer::domain::Order]) -> Vec<String> {
    orders.iter().map(|o| o.order_id.clone()).collect()
}

/// Reads every page of `limit` from `after` on (bounded): each page's ids.
async fn all_pages(
    store: &Store,
    user: Option<&UserId>,
    limit: usize,
    mut after: Option<u64>,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    for _ in 0..100 {
        let page = store
            .open_orders_page(&m1(), user, PageRequest { after, limit })
            .await
            .expect("page");
        assert!(page.orders.len() <= limit, "a page holds at most its limit");
        pages.push(page_ids(&page.orders));
        match page.next {
            Some(next) => after = Some(next),
            None => return pages,
        }
    }
    panic!("pages never ended: {pages:?}");
}

/// Rests `n` orders that do not cross, alternating users 1 and 2: `o0` .. `o<n-1>`.
async fn rest_orders(store: &Store, n: usize) {
    for i in 0..n {
        let (order, price) = if i % 2 == 0 {
            (Order::buy(), 100_000 + i as u64)
        } else {
            (Order::sell(), 900_000 + i as u64)
        };
        let u = if i % 3 == 0 { 1 } else { 2 };
        let placed = place(
            store,
            order
                .id(format!("o{i}"))
                .user(user(u))
                .price(price)
                .amount(3),
        )
        .await;
        assert!(placed.fills.is_empty(), "o{i} rests");
    }
}

async fn open_order_pages_cover_every_order_once_in_arrival_order(store: Store) {
    rest_orders(&store, 7).await;
    let every: Vec<String> = (0..7).map(|i| format!("o{i}")).collect();
    let pages = all_pages(&store, None, 3, None).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 1],
        "{pages:?}"
    );
    assert_eq!(pages.concat(), every, "every order once, in arrival order");

    let exact = store
        .open_orders_page(&m1(), None, PageRequest::first(7))
        .await
        .expect("page");
    assert_eq!(page_ids(&exact.orders), every);
    assert_eq!(
        exact.next, None,
        "a page that holds the rest says there is no more"
    );
    let short = store
        .open_orders_page(&m1(), None, PageRequest::first(6))
        .await
        .expect("page");
    assert_eq!(page_ids(&short.orders), every[..6]);
    let next = short.next.expect("one order follows");
    let last = store
        .open_orders_page(
            &m1(),
            None,
            PageRequest {
                after: Some(next),
                limit: 6,
            },
        )
        .await
        .expect("page");
    assert_eq!(page_ids(&last.orders), ["o6"]);
    assert_eq!(last.next, None);
    let past = store
        .open_orders_page(
            &m1(),
            None,
            PageRequest {
                after: Some(next + 1_000),
                limit: 6,
            },
        )
        .await
        .expect("page");
    assert!(past.orders.is_empty() && past.next.is_none(), "{past:?}");

    let mine = all_pages(&store, Some(&user(1)), 2, None).await;
    assert_eq!(mine, [vec!["o0", "o3"], vec!["o6"]]);
    let theirs = all_pages(&store, Some(&user(2)), 500, None).await;
    assert_eq!(theirs, [vec!["o1", "o2", "o4", "o5"]]);
    let nobody = all_pages(&store, Some(&user(9)), 10, None).await;
    assert_eq!(nobody, [Vec::<String>::new()]);
    let elsewhere = store
        .open_orders_page(&market("80002:9"), None, PageRequest::first(10))
        .await
        .expect("page");
    assert!(elsewhere.orders.is_empty() && elsewhere.next.is_none());
}

async fn a_page_cursor_survives_orders_added_and_cancelled_between_pages(store: Store) {
    rest_orders(&store, 6).await;
    let first = store
        .open_orders_page(&m1(), None, PageRequest::first(3))
        .await
        .expect("page");
    assert_eq!(page_ids(&first.orders), ["o0", "o1", "o2"]);
    store
        .cancel_order(&m1(), "o4", &user(2))
        .await
        .expect("store")
        .expect("cancel");
    store
        .cancel_order(&m1(), "o1", &user(2))
        .await
        .expect("store")
        .expect("cancel");
    place(
        &store,
        Order::buy()
            .id("late")
            .user(user(3))
            .price(200_000)
            .amount(1),
    )
    .await;
    place(
        &store,
        Order::buy()
            .id("later")
            .user(user(3))
            .price(150_000)
            .amount(1),
    )
    .await;
    // A maker filled between pages leaves too: this takes `late`, the best bid.
    let taker = place(
        &store,
        Order::sell()
            .id("taker")
            .user(user(4))
            .price(150_000)
            .amount(1),
    )
    .await;
    assert_eq!(taker.fills.len(), 1);
    assert_eq!(taker.fills[0].maker_order_id, "late");
    let rest = all_pages(&store, None, 3, first.next).await;
    assert_eq!(
        rest.concat(),
        ["o3", "o5", "later"],
        "cancelled and filled orders are gone, one added since follows (pages {rest:?})"
    );
}

/// Rests `n` asks of one share each by user `u` at 400_000: `<prefix>0` ..
async fn rest_asks(store: &Store, prefix: &str, u: u8, n: usize) {
    for i in 0..n {
        place(
            store,
            Order::sell()
                .id(format!("{prefix}{i}"))
                .user(user(u))
                .price(400_000)
                .amount(1),
        )
        .await;
    }
}

async fn one_placement_makes_at_most_the_capped_fills_and_rests_the_remainder(store: Store) {
    let over = MAX_FILLS_PER_ORDER + 5;
    rest_asks(&store, "ask", 1, over).await;
    let taker = place(
        &store,
        Order::buy()
            .id("sweep")
            .user(user(2))
            .price(500_000)
            .amount(200),
    )
    .await;
    assert_eq!(taker.fills.len(), MAX_FILLS_PER_ORDER, "stops at the cap");
    assert_eq!(taker.order.filled, MAX_FILLS_PER_ORDER as u64);
    assert_eq!(taker.order.status, OrderStatus::PartiallyFilled);
    let makers: Vec<String> = taker
        .fills
        .iter()
        .map(|f| f.maker_order_id.clone())
        .collect();
    let first: Vec<String> = (0..MAX_FILLS_PER_ORDER)
        .map(|i| format!("ask{i}"))
        .collect();
    assert_eq!(makers, first, "the earliest makers, in priority order");
    let (bids, asks) = store.depth(&m1(), 10).await.expect("depth");
    assert_eq!(
        asks,
        vec![Level {
            price: 400_000,
            amount: 5,
            orders: 5
        }],
        "the makers past the cap keep resting"
    );
    assert_eq!(
        bids,
        vec![Level {
            price: 500_000,
            amount: 100,
            orders: 1
        }],
        "the remainder rests at its limit"
    );
    let open = store
        .open_orders(&m1(), Some(&user(2)))
        .await
        .expect("open");
    assert_eq!(page_ids(&open), ["sweep"]);
    // The rested remainder is a maker like any other: the next sell trades with it at its price.
    let next = place(
        &store,
        Order::sell()
            .id("hit")
            .user(user(3))
            .price(450_000)
            .amount(100),
    )
    .await;
    assert_eq!(next.fills.len(), 1);
    assert_eq!(next.fills[0].maker_order_id, "sweep");
    assert_eq!(next.fills[0].price, 500_000);
    assert_eq!(next.order.status, OrderStatus::Filled);
}

async fn one_placement_cancels_at_most_the_capped_own_resting_orders(store: Store) {
    let over = MAX_SELF_TRADE_CANCELS_PER_ORDER + 3;
    rest_asks(&store, "mine", 1, over).await;
    let taker = place(
        &store,
        Order::buy()
            .id("self")
            .user(user(1))
            .price(500_000)
            .amount(10),
    )
    .await;
    assert!(taker.fills.is_empty());
    assert_eq!(
        taker.self_trade_cancelled.len(),
        MAX_SELF_TRADE_CANCELS_PER_ORDER,
        "stops at the cap"
    );
    assert!(
        taker
            .self_trade_cancelled
            .iter()
            .all(|o| o.status == OrderStatus::Cancelled)
    );
    assert_eq!(
        taker.order.status,
        OrderStatus::Open,
        "the taker rests untouched"
    );
    let (bids, asks) = store.depth(&m1(), 10).await.expect("depth");
    assert_eq!(
        asks,
        vec![Level {
            price: 400_000,
            amount: 3,
            orders: 3
        }]
    );
    assert_eq!(
        bids,
        vec![Level {
            price: 500_000,
            amount: 10,
            orders: 1
        }]
    );
    let open = store
        .open_orders(&m1(), Some(&user(1)))
        .await
        .expect("open");
    let expected: Vec<String> = (MAX_SELF_TRADE_CANCELS_PER_ORDER..over)
        .map(|i| format!("mine{i}"))
        .chain(["self".to_owned()])
        .collect();
    assert_eq!(page_ids(&open), expected);
}

/// What `users` hold in all (available + reserved) and reserved, collateral and shares of m1.
async fn holdings(exchange: &Exchange, users: &[u8]) -> [u128; 4] {
    let mut sums = [0u128; 4];
    for u in users {
        let a = exchange.account(&user(*u)).await.expect("account");
        let s = a.balance(&Asset::Shares(m1()));
        sums[0] += a.collateral.available + a.collateral.reserved;
        sums[1] += a.collateral.reserved;
        sums[2] += s.available + s.reserved;
        sums[3] += s.reserved;
    }
    sums
}

/// Reserved collateral and shares equal what the open orders still need.
async fn assert_reservations_match_open_orders(exchange: &Exchange, users: &[u8]) {
    let open = exchange.open_orders(&m1(), None).await.expect("open");
    let need = |side| -> u128 {
        open.iter()
            .filter(|o| o.side == side)
            .map(|o| u128::from(o.still_reserved()))
            .sum()
    };
    let [_, reserved_c, _, reserved_s] = holdings(exchange, users).await;
    assert_eq!(reserved_c, need(Side::Buy), "reserved collateral");
    assert_eq!(reserved_s, need(Side::Sell), "reserved shares");
}

async fn the_caps_keep_collateral_and_shares_conserved(store: Store) {
    let exchange = Exchange::new(store);
    let users = [1, 2, 3];
    for u in users {
        exchange
            .deposit(&user(u), Asset::Collateral, 1_000)
            .await
            .expect("collateral");
        exchange
            .deposit(&user(u), Asset::Shares(m1()), 1_000)
            .await
            .expect("shares");
    }
    let before = holdings(&exchange, &users).await;
    let sell = |id: String, u: u8, price: u64| {
        Order::sell()
            .id(id)
            .user(user(u))
            .price(price)
            .amount(1)
            .new_order()
    };
    for i in 0..MAX_FILLS_PER_ORDER + 5 {
        exchange
            .place(sell(format!("ask{i}"), 1, 400_000), 1)
            .await
            .expect("ask rests");
    }
    let sweep = Order::buy()
        .id("sweep")
        .user(user(2))
        .price(500_000)
        .amount(200)
        .new_order();
    let Ok(relayer::exchange::Placed::Done(placed)) = exchange.place(sweep, 1).await else {
        panic!("the sweep is placed");
    };
    assert_eq!(placed.record.fills.len(), MAX_FILLS_PER_ORDER);
    assert_reservations_match_open_orders(&exchange, &users).await;
    for i in 0..MAX_SELF_TRADE_CANCELS_PER_ORDER + 3 {
        exchange
            .place(sell(format!("mine{i}"), 3, 600_000), 1)
            .await
            .expect("ask rests");
    }
    let own = Order::buy()
        .id("own")
        .user(user(3))
        .price(650_000)
        .amount(10)
        .new_order();
    // Takes the 5 asks left of user 1, then cancels user 3's own asks up to the cap.
    let Ok(relayer::exchange::Placed::Done(placed)) = exchange.place(own, 1).await else {
        panic!("the order is placed");
    };
    assert_eq!(placed.record.fills.len(), 5);
    assert_eq!(placed.record.order.filled, 5);
    let left: Vec<_> = exchange
        .open_orders(&m1(), Some(&user(3)))
        .await
        .expect("open")
        .into_iter()
        .map(|o| o.client_order_id)
        .collect();
    assert_eq!(left, ["mine100", "mine101", "mine102", "own"]);
    let after = holdings(&exchange, &users).await;
    assert_eq!(
        [before[0], before[2]],
        [after[0], after[2]],
        "collateral and shares are conserved"
    );
    assert_reservations_match_open_orders(&exchange, &users).await;
}

async fn api_keys_are_found_by_hash_and_revoked_by_id(store: Store) {
    let record = ApiKeyRecord {
        key_id: "k1".to_owned(),
        hash: "ab".repeat(32),
        user_id: user(1),
        created_at_ms: 5,
    };
    store.put_api_key(record.clone()).await.expect("put");
    assert_eq!(
        store.api_key_by_hash(&record.hash).await.expect("get"),
        Some(record.clone())
    );
    assert_eq!(
        store.api_key_by_hash(&"cd".repeat(32)).await.expect("get"),
        None
    );
    assert!(!store.delete_api_key("nope").await.expect("delete"));
    assert!(store.delete_api_key("k1").await.expect("delete"));
    assert_eq!(
        store.api_key_by_hash(&record.hash).await.expect("get"),
        None
    );
    assert!(!store.delete_api_key("k1").await.expect("delete"));
}

async fn concurrent_reserves_never_overspend(store: Store) {
    apply(&store, 1, &[Move::credit(Asset::Collateral, 50)])
        .await
        .expect("deposit");
    let tasks: Vec<_> = (0..120)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply_moves(&user(1), &[Move::reserve(Asset::Collateral, 1)])
                    .await
                    .expect("store")
                    .is_ok()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.expect("task"));
    }
    assert_eq!(ok, 50);
    assert_eq!(
        store.account(&user(1)).await.expect("account").collateral,
        bal(0, 50)
    );
}

/// `value`'s debug text with every placement id (32 lower-case hex digits, random per
/// placement and so per backend) replaced by `<placement>`.
fn without_placement_ids(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() == 32 { "<placement>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.push_str(if run.len() == 32 { "<placement>" } else { &run });
    out
}

async fn concurrent_claims_have_one_winner(store: Store) {
    let tasks: Vec<_> = (0..40u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_order_id(
                        "same",
                        Claim {
                            user_id: user(1),
                            ..claim(i, &format!("f{i}"))
                        },
                    )
                    .await
                    .expect("store")
            })
        })
        .collect();
    let mut winners = 0;
    let mut seen = BTreeSet::new();
    for t in tasks {
        match t.await.expect("task") {
            ClaimOutcome::Claimed => winners += 1,
            ClaimOutcome::Existing(c) => {
                seen.insert(c.fingerprint);
            }
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(seen.len(), 1, "every loser sees the one winner: {seen:?}");
}

async fn concurrent_crossing_orders_never_overfill(store: Store) {
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8u8)
        .map(|client| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..40u64 {
                    let side = if (i + u64::from(client)) % 2 == 0 {
                        Side::Buy
                    } else {
                        Side::Sell
                    };
                    let price = 450_000 + (i * 7 + u64::from(client) * 13) % 10 * 10_000;
                    let o = Order::side(side)
                        .id(format!("c{client}-{i}"))
                        .user(user(client + 1))
                        .price(price)
                        .amount(1 + i % 5);
                    store.match_order(o.book()).await.expect("store");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let mut ids = Vec::new();
    for client in 0..8u8 {
        for i in 0..40u64 {
            ids.push(format!("c{client}-{i}"));
        }
    }
    let (mut bought, mut sold) = (0u64, 0u64);
    let (mut paid, mut received) = (0u64, 0u64);
    for id in &ids {
        let o = store
            .order(&m1(), id)
            .await
            .expect("order")
            .expect("every order is kept");
        assert!(o.filled <= o.amount, "{id} over-filled: {o:?}");
        assert_eq!(
            o.status.is_open(),
            o.filled < o.amount && o.status != OrderStatus::Cancelled
        );
        match o.side {
            Side::Buy => {
                bought += o.filled;
                paid += o.paid;
                assert!(o.paid <= o.reserved, "{id} paid beyond its reservation");
            }
            Side::Sell => {
                sold += o.filled;
                received += o.paid;
            }
        }
    }
    assert_eq!(bought, sold, "every fill has a buyer and a seller");
    assert_eq!(paid, received, "what buyers pay is what sellers get");
    assert!(bought > 0, "the orders crossed");
    // The book never rests a crossed market.
    let (bids, asks) = store.depth(&m1(), 1).await.expect("depth");
    if let (Some(b), Some(a)) = (bids.first(), asks.first()) {
        assert!(b.price < a.price, "crossed book: {b:?} {a:?}");
    }
}

/// The whole placement flow over this store: balances move with every fill and nothing is
/// created or lost.
async fn the_exchange_keeps_collateral_and_shares_conserved(store: Store) {
    let exchange = Exchange::new(store);
    for u in 1..=4 {
        exchange
            .deposit(&user(u), Asset::Collateral, 1_000)
            .await
            .expect("collateral");
        exchange
            .deposit(&user(u), Asset::Shares(m1()), 1_000)
            .await
            .expect("shares");
    }
    let mut seed = 7u64;
    let mut placed = Vec::new();
    for i in 0..120u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let u = (seed >> 33) as u8 % 4 + 1;
        let side = if (seed >> 20).is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 100_000 + (seed >> 40) % 9 * 100_000 - 1;
        let amount = 1 + (seed >> 50) % 37;
        let new = Order::side(side)
            .id(format!("x{i}"))
            .user(user(u))
            .price(price)
            .amount(amount)
            .new_order();
        if exchange.place(new, 1).await.is_ok() {
            placed.push((format!("x{i}"), user(u)));
        }
        if i % 5 == 0
            && let Some((id, owner)) = placed.get((seed % 7) as usize)
        {
            let _ = exchange.cancel(id, owner).await;
        }
    }
    let (mut collateral, mut shares, mut reserved_c, mut reserved_s) = (0u128, 0u128, 0u128, 0u128);
    for u in 1..=4 {
        let a = exchange.account(&user(u)).await.expect("account");
        collateral += a.collateral.available + a.collateral.reserved;
        reserved_c += a.collateral.reserved;
        let s = a.balance(&Asset::Shares(m1()));
        shares += s.available + s.reserved;
        reserved_s += s.reserved;
    }
    assert_eq!(collateral, 4_000, "collateral is conserved");
    assert_eq!(shares, 4_000, "shares are conserved");
    let open = exchange.open_orders(&m1(), None).await.expect("open");
    let still: u128 = open
        .iter()
        .filter(|o| o.side == Side::Buy)
        .map(|o| u128::from(o.still_reserved()))
        .sum();
    let still_s: u128 = open
        .iter()
        .filter(|o| o.side == Side::Sell)
        .map(|o| u128::from(o.still_reserved()))
        .sum();
    assert_eq!(
        reserved_c, still,
        "reserved collateral is what open buys still need"
    );
    assert_eq!(
        reserved_s, still_s,
        "reserved shares are what open sells still need"
    );
}

/// Both backends, fed the same operations through the exchange, answer the same: every
/// placement, every cancel, every balance and the final book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_answer_identically() {
    let memory = Exchange::new(Store::memory());
    let redis_backend = Backend::redis();
    let redis = Exchange::new(redis_backend.store.clone());
    let markets = [m1(), market("80002:2")];
    for ex in [&memory, &redis] {
        for u in 1..=5 {
            ex.deposit(&user(u), Asset::Collateral, 5_000)
                .await
                .expect("deposit");
            for m in &markets {
                ex.deposit(&user(u), Asset::Shares(m.clone()), 3_000)
                    .await
                    .expect("deposit");
            }
        }
    }
    let mut seed = 42u64;
    for i in 0..300u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let u = user((seed >> 33) as u8 % 5 + 1);
        let m = markets[((seed >> 13) % 2) as usize].clone();
        let id = if (seed >> 7).is_multiple_of(11) && i > 0 {
            format!("o{}", (seed >> 17) % i) // a repeat or a conflicting reuse of an id
        } else {
            format!("o{i}")
        };
        let side = if (seed >> 21).is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        };
        let new = Order::side(side)
            .id(&id)
            .market(m)
            .user(&u)
            .price(1 + (seed >> 24) % 999_999 / 50_000 * 50_000 + (seed >> 45) % 3)
            .amount(1 + (seed >> 50) % 400)
            .new_order();
        let a = memory
            .place(new.clone(), i)
            .await
            .map_err(|e| e.to_string());
        let b = redis.place(new, i).await.map_err(|e| e.to_string());
        assert_eq!(
            without_placement_ids(&a),
            without_placement_ids(&b),
            "placement {i} ({id})"
        );
        if (seed >> 3).is_multiple_of(6) {
            let victim = format!("o{}", (seed >> 9) % (i + 1));
            let a = memory.cancel(&victim, &u).await.map_err(|e| e.to_string());
            let b = redis.cancel(&victim, &u).await.map_err(|e| e.to_string());
            assert_eq!(
                without_placement_ids(&a),
                without_placement_ids(&b),
                "cancel of {victim} by {u}"
            );
        }
    }
    for u in 1..=5 {
        assert_eq!(
            memory.account(&user(u)).await.expect("account"),
            redis.account(&user(u)).await.expect("account"),
            "account of user {u}"
        );
    }
    for m in &markets {
        assert_eq!(
            memory.depth(m, 500).await.expect("depth"),
            redis.depth(m, 500).await.expect("depth")
        );
        assert_eq!(
            without_placement_ids(&memory.open_orders(m, None).await.expect("open")),
            without_placement_ids(&redis.open_orders(m, None).await.expect("open"))
        );
    }
}

async fn matching_the_same_order_id_again_replays_the_first_outcome(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(600_000)
            .amount(10),
    )
    .await;
    let first = place(
        &store,
        Order::buy().id("b1").user(user(2)).price(600_000).amount(4),
    )
    .await;
    let again = place(
        &store,
        Order::buy().id("b1").user(user(2)).price(600_000).amount(4),
    )
    .await;
    assert_eq!(first, again);
    let (_, asks) = store.depth(&m1(), 10).await.expect("depth");
    assert_eq!(
        asks,
        vec![Level {
            price: 600_000,
            amount: 6,
            orders: 1
        }],
        "the repeat traded nothing"
    );
}

async fn undoing_a_match_restores_the_book_and_the_makers_priority(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(600_000)
            .amount(10),
    )
    .await;
    place(
        &store,
        Order::sell()
            .id("a2")
            .user(user(2))
            .price(600_000)
            .amount(5),
    )
    .await;
    place(
        &store,
        Order::sell()
            .id("a3")
            .user(user(3))
            .price(610_000)
            .amount(5),
    )
    .await;
    place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(6))
            .price(500_000)
            .amount(3),
    )
    .await;
    let before = store.depth(&m1(), 10).await.expect("depth");
    let a1 = store.order(&m1(), "a1").await.expect("store").expect("a1");
    let taker = place(
        &store,
        Order::buy().id("t").user(user(4)).price(610_000).amount(12),
    )
    .await;
    assert_eq!(taker.fills.len(), 2);

    let undo = store.undo_match(&m1(), "t").await.expect("undo");
    assert_eq!(undo.fills, taker.fills);
    assert!(undo.maker_releases.is_empty(), "{undo:?}");
    let t = undo.taker.expect("taker reached the book");
    assert_eq!(
        (t.status, t.filled, t.paid, t.notional),
        (OrderStatus::Cancelled, 0, 0, 0)
    );
    assert_eq!(store.depth(&m1(), 10).await.expect("depth"), before);
    assert_eq!(
        store.order(&m1(), "a1").await.expect("store").expect("a1"),
        a1,
        "the maker is exactly as before the match"
    );
    let a2 = store.order(&m1(), "a2").await.expect("store").expect("a2");
    assert_eq!((a2.status, a2.filled, a2.paid), (OrderStatus::Open, 0, 0));
    assert!(
        store
            .open_orders(&m1(), Some(&user(4)))
            .await
            .expect("open")
            .is_empty(),
        "the taker left the book"
    );
    // Priority: a1 (earliest at the best price) trades first again.
    let next = place(
        &store,
        Order::buy().id("n").user(user(5)).price(600_000).amount(11),
    )
    .await;
    let makers: Vec<&str> = next
        .fills
        .iter()
        .map(|f| f.maker_order_id.as_str())
        .collect();
    assert_eq!(makers, vec!["a1", "a2"]);
}

async fn undo_is_idempotent_and_refuses_a_later_match(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(600_000)
            .amount(10),
    )
    .await;
    place(
        &store,
        Order::buy().id("t").user(user(2)).price(600_000).amount(4),
    )
    .await;
    let first = store.undo_match(&m1(), "t").await.expect("undo");
    let depth = store.depth(&m1(), 10).await.expect("depth");
    let again = store.undo_match(&m1(), "t").await.expect("undo again");
    assert_eq!(first, again);
    assert_eq!(store.depth(&m1(), 10).await.expect("depth"), depth);
    assert!(
        store
            .match_order(
                Order::buy()
                    .id("t")
                    .user(user(2))
                    .price(600_000)
                    .amount(4)
                    .book()
            )
            .await
            .is_err(),
        "an undone placement is not matched again"
    );
    assert_eq!(store.depth(&m1(), 10).await.expect("depth"), depth);
}

async fn undoing_a_placement_that_never_matched_refuses_a_late_match(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(600_000)
            .amount(10),
    )
    .await;
    let undo = store.undo_match(&m1(), "ghost").await.expect("undo");
    assert_eq!(undo.taker, None);
    assert!(undo.fills.is_empty());
    assert!(
        store
            .match_order(
                Order::buy()
                    .id("ghost")
                    .user(user(2))
                    .price(600_000)
                    .amount(4)
                    .book()
            )
            .await
            .is_err()
    );
    let a1 = store.order(&m1(), "a1").await.expect("store").expect("a1");
    assert_eq!(a1.filled, 0, "the late match traded nothing");
}

async fn undo_releases_what_makers_that_left_the_book_since_still_reserve(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(600_000)
            .amount(10),
    )
    .await;
    place(
        &store,
        Order::buy().id("t").user(user(2)).price(600_000).amount(4),
    )
    .await;
    let cancelled = store
        .cancel_order(&m1(), "a1", &user(1))
        .await
        .expect("store")
        .expect("open");
    assert_eq!(cancelled.still_reserved(), 6);
    let undo = store.undo_match(&m1(), "t").await.expect("undo");
    assert_eq!(undo.maker_releases.len(), 1);
    let r = &undo.maker_releases[0];
    assert_eq!(
        (r.order_id.as_str(), &r.user_id, &r.asset, r.amount),
        ("a1", &user(1), &Asset::Shares(m1()), 4)
    );
    let a1 = store.order(&m1(), "a1").await.expect("store").expect("a1");
    assert_eq!((a1.status, a1.filled), (OrderStatus::Cancelled, 0));
    let (bids, asks) = store.depth(&m1(), 10).await.expect("depth");
    assert!(bids.is_empty() && asks.is_empty(), "{bids:?} {asks:?}");
}

async fn undo_reopens_a_buy_maker_it_filled_with_its_paid_collateral_reverted(store: Store) {
    place(
        &store,
        Order::buy()
            .id("bid")
            .user(user(1))
            .price(333_333)
            .amount(3),
    )
    .await;
    let before = store
        .order(&m1(), "bid")
        .await
        .expect("store")
        .expect("bid");
    let t = place(
        &store,
        Order::sell().id("t").user(user(2)).price(300_000).amount(3),
    )
    .await;
    assert_eq!(t.fills[0].collateral, 1, "ceil(0.999999)");
    store.undo_match(&m1(), "t").await.expect("undo");
    assert_eq!(
        store
            .order(&m1(), "bid")
            .await
            .expect("store")
            .expect("bid"),
        before
    );
    let (bids, _) = store.depth(&m1(), 10).await.expect("depth");
    assert_eq!(
        bids,
        vec![Level {
            price: 333_333,
            amount: 3,
            orders: 1
        }]
    );
}

async fn self_trade_cancellations_are_not_undone(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(600_000)
            .amount(5),
    )
    .await;
    let t = place(
        &store,
        Order::buy().id("t").user(user(1)).price(600_000).amount(5),
    )
    .await;
    assert_eq!(t.self_trade_cancelled.len(), 1);
    let undo = store.undo_match(&m1(), "t").await.expect("undo");
    assert_eq!(
        undo.self_trade_cancelled
            .iter()
            .map(|o| o.order_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a1"]
    );
    let a1 = store.order(&m1(), "a1").await.expect("store").expect("a1");
    assert_eq!(a1.status, OrderStatus::Cancelled);
    let (bids, asks) = store.depth(&m1(), 10).await.expect("depth");
    assert!(bids.is_empty() && asks.is_empty(), "{bids:?} {asks:?}");
}

async fn an_undo_after_the_taker_left_the_book_releases_only_its_own_fills(store: Store) {
    for (id, price) in [("a1", 400_000), ("a2", 500_000)] {
        place(
            &store,
            Order::sell().id(id).user(user(1)).price(price).amount(2),
        )
        .await;
    }
    // 10 at 0.5 reserve 5; two fills (2 at 0.4, 2 at 0.5) hold 2; 6 rest.
    let t = place(
        &store,
        Order::buy().id("t").user(user(2)).price(500_000).amount(10),
    )
    .await;
    assert_eq!(t.fills.iter().map(|f| f.collateral).sum::<u64>(), 2);
    let undo = store.undo_match(&m1(), "t").await.expect("undo");
    assert_eq!(
        undo.taker_release(),
        Some(5),
        "a taker still resting: all of it"
    );
    assert!(!undo.taker_left);

    let t = place(
        &store,
        Order::buy()
            .id("t2")
            .user(user(2))
            .price(500_000)
            .amount(10),
    )
    .await;
    assert_eq!(t.fills.len(), 2, "the makers are back: {t:?}");
    let cancelled = store
        .cancel_order(&m1(), "t2", &user(2))
        .await
        .expect("store")
        .expect("cancelled");
    assert_eq!(
        cancelled.still_reserved(),
        3,
        "the cancel releases what the rest held"
    );
    let undo = store.undo_match(&m1(), "t2").await.expect("undo");
    assert!(undo.taker_left, "{undo:?}");
    assert_eq!(
        undo.taker_release(),
        Some(2),
        "only what its own fills held is left to release"
    );
    let again = store.undo_match(&m1(), "t2").await.expect("undo");
    assert_eq!(again, undo, "a repeat answers the same");
}

async fn a_buy_that_paid_ahead_after_an_undo_pays_only_what_exceeds_it(store: Store) {
    // 6 at 0.5 reserve 3; one share at a time from five sellers pays 1, 0, 1, 0, 1 (rounded
    // up per order). With the 2nd and 4th fills undone the buy has paid 3 for 1.5 of notional.
    place(
        &store,
        Order::buy().id("b").user(user(1)).price(500_000).amount(6),
    )
    .await;
    for (i, u) in (2..=6).enumerate() {
        let sold = place(
            &store,
            Order::sell()
                .id(format!("p{}", i + 1))
                .user(user(u))
                .price(500_000)
                .amount(1),
        )
        .await;
        assert_eq!(sold.fills.len(), 1, "p{}", i + 1);
    }
    store.undo_match(&m1(), "p2").await.expect("undo p2");
    store.undo_match(&m1(), "p4").await.expect("undo p4");
    let b = store.order(&m1(), "b").await.expect("store").expect("b");
    assert_eq!((b.filled, b.paid, b.notional), (3, 3, 1_500_000));
    // The next share costs nothing more: ceil(2.0) = 2 is less than the 3 paid already.
    let sold = place(
        &store,
        Order::sell()
            .id("p6")
            .user(user(7))
            .price(500_000)
            .amount(1),
    )
    .await;
    assert_eq!(sold.fills.len(), 1, "the book still trades: {sold:?}");
    assert_eq!(sold.fills[0].collateral, 0);
    let b = store.order(&m1(), "b").await.expect("store").expect("b");
    assert_eq!((b.filled, b.paid), (4, 3));
    let cancelled = store
        .cancel_order(&m1(), "b", &user(1))
        .await
        .expect("store")
        .expect("the owner can still cancel it");
    assert_eq!(cancelled.still_reserved(), 0);
}

async fn an_undone_fill_that_completed_a_resting_buy_gives_back_its_refund(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(400_000)
            .amount(5),
    )
    .await;
    // 10 at 0.6 reserve 6; 5 at 0.4 pay 2; 5 rest.
    let t = place(
        &store,
        Order::buy().id("t").user(user(2)).price(600_000).amount(10),
    )
    .await;
    assert_eq!(t.fills[0].collateral, 2);
    // 5 more at 0.6: 5.0 of notional in all, 5 paid, 1 of the reservation is the refund.
    let l = place(
        &store,
        Order::sell().id("l").user(user(3)).price(600_000).amount(5),
    )
    .await;
    assert_eq!((l.fills[0].collateral, l.fills[0].buyer_refund), (3, 1));
    let undo_t = store.undo_match(&m1(), "t").await.expect("undo t");
    assert!(undo_t.taker_left, "t was filled by l since");
    assert_eq!(undo_t.taker_release(), Some(2), "t's own fill");
    let undo_l = store.undo_match(&m1(), "l").await.expect("undo l");
    let releases: Vec<(&str, u64)> = undo_l
        .maker_releases
        .iter()
        .map(|r| (r.order_id.as_str(), r.amount))
        .collect();
    assert_eq!(
        releases,
        vec![("t", 4)],
        "l's fill of t held 3, and the refund 1 was never released"
    );
}

async fn a_repeated_cancellation_answers_the_release_it_recorded(store: Store) {
    place(
        &store,
        Order::sell()
            .id("a1")
            .user(user(1))
            .price(500_000)
            .amount(4),
    )
    .await;
    // 10 at 0.5 reserve 5; the fill of 4 holds 2; 6 rest.
    place(
        &store,
        Order::buy().id("t").user(user(2)).price(500_000).amount(10),
    )
    .await;
    let fence = Fence {
        saga_id: "cancel:t".to_owned(),
        epoch: 1,
        lease_until_ms: u64::MAX / 2,
    };
    let (_, release) = store
        .cancel_order_releasing(&m1(), "t", &user(2), Some(&fence), false)
        .await
        .expect("store")
        .expect("cancelled");
    assert_eq!(release, 3);
    // The placement's own saga then undoes its match: the order's figures change.
    let undo = store.undo_match(&m1(), "t").await.expect("undo");
    assert_eq!(undo.taker_release(), Some(2));
    let (_, again) = store
        .cancel_order_releasing(&m1(), "t", &user(2), Some(&fence), true)
        .await
        .expect("store")
        .expect("the cancellation answers again");
    assert_eq!(
        again, 3,
        "the release recorded at the cancellation, not recomputed"
    );
    let fresh = store
        .cancel_order_releasing(&m1(), "t", &user(2), Some(&fence), false)
        .await
        .expect("store");
    assert!(matches!(fresh, Err(CancelError::NotOpen(_))), "{fresh:?}");
}

async fn saga_entries_are_fenced_by_their_lease_and_epoch(store: Store) {
    let entry = |owner: &str, epoch: u64, lease: u64, state: &str| relayer::store::SagaEntry {
        id: "o-1".to_owned(),
        owner: owner.to_owned(),
        epoch,
        lease_until_ms: lease,
        state: state.to_owned(),
        record: format!("{{\"by\":\"{owner}\"}}"),
    };
    assert!(
        !store
            .saga_write(&entry("a", 1, 1_000, "running"), false)
            .await
            .expect("write"),
        "no entry to update"
    );
    assert!(
        store
            .saga_write(&entry("a", 0, 1_000, "running"), true)
            .await
            .expect("write")
    );
    assert!(
        !store
            .saga_write(&entry("b", 0, 1_000, "running"), true)
            .await
            .expect("write"),
        "created once"
    );
    assert!(
        !store
            .saga_write(&entry("b", 1, 1_000, "running"), false)
            .await
            .expect("write")
    );
    assert!(
        store
            .saga_write(&entry("a", 1, 1_000, "running"), false)
            .await
            .expect("write")
    );
    assert_eq!(
        store
            .saga_claim("o-1", "b", 3_000, 999)
            .await
            .expect("claim"),
        None,
        "the lease still runs"
    );
    assert_eq!(
        store
            .saga_claim("missing", "b", 3_000, 2_000)
            .await
            .expect("claim"),
        None
    );
    let taken = store
        .saga_claim("o-1", "b", 3_000, 1_001)
        .await
        .expect("claim")
        .expect("the lease ran out");
    assert_eq!(
        (
            taken.owner.as_str(),
            taken.epoch,
            taken.lease_until_ms,
            taken.record.as_str()
        ),
        ("b", 2, 3_000, "{\"by\":\"a\"}"),
        "a new owner gets the next epoch"
    );
    let renewed = store
        .saga_claim("o-1", "b", 3_500, 1_002)
        .await
        .expect("claim")
        .expect("its own");
    assert_eq!(renewed.epoch, 2, "renewing keeps the epoch");
    assert!(
        !store
            .saga_write(&entry("a", 1, 9_000, "running"), false)
            .await
            .expect("write"),
        "the old owner is fenced off"
    );
    assert!(!store.saga_delete("o-1", "a", 1).await.expect("delete"));
    assert!(!store.saga_delete("o-1", "b", 1).await.expect("delete"));
    assert!(
        store
            .saga_write(&entry("b", 2, 4_000, "manual"), false)
            .await
            .expect("write")
    );
    assert_eq!(
        store
            .saga_claim("o-1", "c", 9_000, 5_000)
            .await
            .expect("claim"),
        None,
        "a manual saga is not claimed"
    );
    let listed = store.saga_list().await.expect("list");
    assert_eq!(listed, vec![entry("b", 2, 4_000, "manual")]);
    assert!(store.saga_delete("o-1", "b", 2).await.expect("delete"));
    assert!(store.saga_list().await.expect("list").is_empty());
    assert!(
        !store
            .saga_write(&entry("b", 2, 4_000, "running"), false)
            .await
            .expect("write"),
        "a finished saga's entry is not written again by a late writer"
    );
}

async fn a_stale_fence_changes_nothing_once_a_newer_epoch_wrote(store: Store) {
    let far = u64::MAX / 2;
    let fence = |epoch: u64| Fence {
        saga_id: "s-1".to_owned(),
        epoch,
        lease_until_ms: far,
    };
    apply(&store, 1, &[Move::credit(Asset::Collateral, 10)])
        .await
        .expect("deposit");
    let reserve = [Move::reserve(Asset::Collateral, 2)];
    store
        .apply_moves_fenced(&user(1), "a", &reserve, &fence(1))
        .await
        .expect("store")
        .expect("applies");
    store
        .apply_moves_fenced(&user(1), "b", &reserve, &fence(2))
        .await
        .expect("store")
        .expect("applies");
    let stale = store
        .apply_moves_fenced(&user(1), "c", &reserve, &fence(1))
        .await;
    assert!(matches!(stale, Err(StoreError::Fenced)), "{stale:?}");
    assert_eq!(
        store.account(&user(1)).await.expect("account").collateral,
        bal(6, 4),
        "the stale write changed nothing"
    );
    let order = Order::sell()
        .id("s-1")
        .user(user(2))
        .price(500_000)
        .amount(1)
        .book();
    let matched = store.match_order_fenced(order.clone(), &fence(3)).await;
    assert!(matched.is_ok(), "{matched:?}");
    let stale = store.undo_match_fenced(&m1(), "s-1", &fence(2)).await;
    assert!(matches!(stale, Err(StoreError::Fenced)), "{stale:?}");
    assert_eq!(
        store
            .order(&m1(), "s-1")
            .await
            .expect("order")
            .map(|o| o.status),
        Some(OrderStatus::Open),
        "the stale undo changed nothing"
    );
    // A newer owner gave a placement up before its claim was written: the old owner cannot
    // claim the id afterwards.
    let gave_up = FailedPlacement {
        kind: FailureKind::NotPlaced,
        message: "undone".to_owned(),
    };
    store
        .fail_claim(&user(3), "c1", "s-1", gave_up, Some(&fence(4)))
        .await
        .expect("fail");
    let late = store
        .claim_order_id_fenced(
            "c1",
            Claim {
                user_id: user(3),
                placement_id: "s-1".to_owned(),
                ..claim(3, "f3")
            },
            &fence(3),
        )
        .await;
    assert!(matches!(late, Err(StoreError::Fenced)), "{late:?}");
    assert_eq!(store.claim(&user(3), "c1").await.expect("claim"), None);
    let expired = Fence {
        lease_until_ms: 1,
        ..fence(4)
    };
    if matches!(store, Store::Redis(_)) {
        let late = store.undo_match_fenced(&m1(), "s-1", &expired).await;
        assert!(
            matches!(late, Err(StoreError::Fenced)),
            "a lease that ended by the store's clock is refused: {late:?}"
        );
    }
}
