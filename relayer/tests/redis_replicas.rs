//! Two relayer processes on one Redis, hammered concurrently with crossing orders in the same
//! markets: afterwards every order's filled amount is what the trades say, no order is
//! over-filled, and collateral and shares equal the deposits. Once on one Redis node, once on
//! a Redis Cluster.

mod support;

use std::collections::BTreeMap;

use support::api::{Api, check_invariants, check_reservations, num};
use support::cluster::RedisCluster;
use support::fixtures::{ADMIN_TOKEN, MARKETS, address, crossing_order};
use support::process::RelayerProcess;
use support::redis::RedisServer;

const CLIENTS: usize = 8;
const ORDERS_PER_CLIENT: usize = 260;
const COLLATERAL: u64 = 10_000_000;
const SHARES: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_redis_keep_every_invariant() {
    let redis = RedisServer::start();
    two_replicas_keep_every_invariant(&[
        ("RELAYER_REDIS_URL", redis.url()),
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ])
    .await;
}

/// The same on a Redis Cluster (3 masters, 3 replicas), reached through one seed node; the
/// keys of the markets and users land on every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_a_redis_cluster_keep_every_invariant() {
    let cluster = RedisCluster::start();
    two_replicas_keep_every_invariant(&[
        ("RELAYER_REDIS_URL", cluster.seed_url()),
        ("RELAYER_REDIS__MODE", "cluster".to_owned()),
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ])
    .await;
    let keys = cluster.keys_per_master();
    assert_eq!(keys.len(), 3, "three masters: {keys:?}");
    assert!(
        keys.values().all(|&n| n >= 3),
        "every master holds keys of the markets, users and sagas: {keys:?}"
    );
}

async fn two_replicas_keep_every_invariant(env: &[(&str, String)]) {
    let replicas = [
        RelayerProcess::start_ready(env),
        RelayerProcess::start_ready(env),
    ];
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let api = Api::default();

    // Keys issued and funds deposited on one replica are seen by the other.
    let mut traders = Vec::new();
    for c in 0..CLIENTS {
        let base = &bases[c % 2];
        let user = address(c);
        traders.push(api.trader(base, &user).await);
        api.deposit(base, &user, "collateral", COLLATERAL).await;
        for m in MARKETS {
            api.deposit(&bases[(c + 1) % 2], &user, m, SHARES).await;
        }
    }

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let api = api.clone();
            let bases = bases.clone();
            let trader = traders[c].clone();
            tokio::spawn(async move {
                let mut placed = Vec::new();
                let mut fills = Vec::new();
                let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 * 0x1000_0001);
                for i in 0..ORDERS_PER_CLIENT {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let id = format!("c{c}-{i}");
                    let order = crossing_order(seed, &id, &trader.user_id).json();
                    let base = &bases[(c + i) % 2];
                    let (status, body) = api
                        .place(base, &trader, &order)
                        .await
                        .expect("placement answered");
                    *statuses.entry(status).or_default() += 1;
                    if status == 201 {
                        placed.push((id, c));
                        for f in body["fills"].as_array().cloned().unwrap_or_default() {
                            fills.push((
                                body["order"]["orderId"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned(),
                                f["makerOrderId"].as_str().unwrap_or_default().to_owned(),
                                num(&f["amount"]),
                            ));
                        }
                    }
                }
                (placed, fills, statuses)
            })
        })
        .collect();

    let mut orders = Vec::new();
    let mut traded: BTreeMap<String, u128> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        let (placed, fills, s) = t.await.expect("client task");
        orders.extend(placed);
        for (taker, maker, amount) in fills {
            *traded.entry(taker).or_default() += amount;
            *traded.entry(maker).or_default() += amount;
        }
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(201, CLIENTS * ORDERS_PER_CLIENT)]),
        "every placement succeeds"
    );
    assert!(
        traded.len() > 500,
        "the orders crossed: {} traded",
        traded.len()
    );

    // Every order's filled amount is the sum of the trades it took part in, read from either
    // replica.
    for (n, (id, owner)) in orders.iter().enumerate() {
        let (status, o) = api
            .get(
                &format!("{}/v2/orders/{id}", bases[n % 2]),
                &traders[*owner],
            )
            .await;
        assert_eq!(status, 200, "order {id}");
        assert_eq!(
            num(&o["filled"]),
            traded.get(id).copied().unwrap_or_default(),
            "order {id}: filled vs its trades"
        );
    }
    check_invariants(
        &api,
        &bases[1],
        &traders,
        &orders,
        &MARKETS,
        u128::from(COLLATERAL) * CLIENTS as u128,
        u128::from(SHARES) * CLIENTS as u128,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // What each trader has reserved is what their open orders still need.
    check_reservations(&api, &bases[0], &traders, &MARKETS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // NB: keeps the replicas alive until here.
    drop(replicas);
}
