//! A slot of a Redis Cluster moved to another master under the store's feet, the way
//! `redis-cli --cluster reshard` moves it: while it migrates, the old master answers ASK for
//! the keys it no longer holds, and once it moved, MOVED. The store follows both (`ASKING` on
//! the new master) without an error, a write applies once, and a deposit sent while the slot
//! migrates is neither lost nor doubled; one whose keys are split over the two nodes is
//! refused before it runs (503, nothing written).

mod support;

use std::time::Duration;

use relayer::domain::{Asset, Move, UserId};
use relayer::store::{RedisMode, RedisSettings, Store};
use support::cluster::RedisCluster;

fn user() -> UserId {
    UserId::parse("userId", &format!("0x{}", "5a".repeat(20))).expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_migrates_and_moves_is_followed_with_ask_and_moved() {
    let cluster = RedisCluster::start();
    let store = Store::redis(&RedisSettings {
        url: cluster.seed_url(),
        key_prefix: "mv:".to_owned(),
        command_timeout: Duration::from_secs(3),
        order_retention: Duration::from_secs(3600),
        mode: RedisMode::Cluster,
        cluster_nodes: Vec::new(),
        replica_acks: 1,
    })
    .expect("store");
    let collateral = |n| [Move::credit(Asset::Collateral, n)];
    store
        .apply_moves(&user(), &collateral(10))
        .await
        .expect("store answers")
        .expect("deposit");

    let key = format!("mv:{{u:{}}}", user());
    let slot: u16 = cluster
        .cli_any(&["CLUSTER", "KEYSLOT", &key])
        .and_then(|s| s.trim().parse().ok())
        .expect("CLUSTER KEYSLOT");
    let source = cluster.owner_of(slot).expect("the slot's master");
    let target = cluster
        .nodes_info()
        .into_iter()
        .find(|n| n.master && n.id != source.id)
        .expect("another master");
    let on = |port: u16, args: &[&str]| {
        cluster
            .cli(port, args)
            .unwrap_or_else(|| panic!("redis-cli -p {port} {args:?}"))
    };
    let slot_arg = slot.to_string();
    let sync = format!("{key}:w");
    // NB: as a write of the last 10 s leaves it (the deposit above did).
    on(source.port, &["SET", &sync, "1", "PX", "60000"]);
    on(
        target.port,
        &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source.id],
    );
    on(
        source.port,
        &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target.id],
    );
    let migrate = |k: &str| {
        let moved = on(
            source.port,
            &[
                "MIGRATE",
                "127.0.0.1",
                &target.port.to_string(),
                k,
                "0",
                "5000",
            ],
        );
        assert_eq!(moved.trim(), "OK", "MIGRATE {k}");
    };

    // A write whose keys are split over the two nodes (the account still on the source, its
    // slot's sync key moved already) is refused before it runs (TRYAGAIN, waited for a
    // little): 503, nothing written.
    migrate(&sync);
    let refused = store.apply_moves(&user(), &collateral(100)).await;
    assert!(
        matches!(refused, Err(relayer::store::StoreError::Unavailable(_))),
        "a write to a slot half migrated: {refused:?}"
    );
    let account = store.account(&user()).await.expect("a read on the source");
    assert_eq!(
        account.collateral.available, 10,
        "the refused write wrote nothing"
    );

    // The rest of the slot goes over; the source then answers ASK for its keys.
    let keys = on(source.port, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(
        keys.contains(&key.as_str()),
        "the account is in its slot: {keys:?}"
    );
    for k in &keys {
        migrate(k);
    }

    // While the slot migrates: a read and a write (a deposit: no operation id, so it must run
    // exactly once) follow ASK to the target.
    let account = store.account(&user()).await.expect("a read follows ASK");
    assert_eq!(account.collateral.available, 10);
    let account = store
        .apply_moves(&user(), &collateral(5))
        .await
        .expect("a write follows ASK")
        .expect("deposit");
    assert_eq!(account.collateral.available, 15, "applied once");

    // The slot moves for good: the client's slot map is stale, the source answers MOVED.
    for port in [target.port, source.port] {
        on(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target.id]);
    }
    let account = store
        .apply_moves(&user(), &collateral(1))
        .await
        .expect("a write follows MOVED")
        .expect("deposit");
    assert_eq!(account.collateral.available, 16, "applied once");
    let account = store.account(&user()).await.expect("a read after the move");
    assert_eq!(account.collateral.available, 16);
    assert!(
        on(target.port, &["EXISTS", &key]).trim() == "1",
        "the account lives on the target now"
    );
}
