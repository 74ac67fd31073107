//! A Redis Cluster master killed (SIGKILL) while 8 clients place crossing orders through two
//! relayers: its replica is promoted, the relayers follow the new slot map by themselves (no
//! restart of their own), clients in between get only 503s (or 202 for a placement the
//! failover caught midway: never a 500, never a request hung past its bound), and afterwards
//! every invariant holds and no saga is left unfinished.
//!
//! Every write waits for its replica (`redis.replicaAcks`, 1 by default in cluster mode), so
//! the promoted replica holds every write a client was told about; the second test makes that
//! matter: the replica hangs for a second before the master dies, so it is promoted without
//! that second's writes. The killed node is started
//! again once its replica took over (as its StatefulSet or managed service would do): it
//! rejoins as the new master's replica, so writes to those slots are confirmed again.

mod support;

use std::time::{Duration, Instant};

use support::api::{Api, check_invariants, check_reservations, wait_no_sagas};
use support::cluster::RedisCluster;
use support::fixtures::{ADMIN_TOKEN, MARKETS, Order, address};
use support::load::{Load, LoadOutcome};
use support::process::RelayerProcess;
use support::wait::{wait_for, wait_for_ok};

const CLIENTS: usize = 8;
const COLLATERAL: u64 = 10_000_000;
const SHARES: u64 = 1_000_000;
/// `redis.commandTimeoutMs` of the relayers under test.
const COMMAND_TIMEOUT_MS: u64 = 500;
/// No request may take longer: a placement makes a handful of store calls, each bounded.
const REQUEST_BOUND: Duration = Duration::from_secs(5);
/// Placements answered 201 that show traffic flowing, before the failover and after it.
const TRAFFIC: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_under_load_fails_over_with_only_503s_and_every_invariant_intact() {
    failover_under_load(false).await;
}

/// The failover that loses data with asynchronous replication: the master's replica loses its
/// link and hangs (SIGSTOP) for a second of traffic, so it lacks that second's writes, then the
/// master dies and the stale replica is promoted. Writes its replica did not confirm were answered 503 or
/// 202 (their sagas finish or undo them from the log), never 201: nothing a client was told
/// about is lost, and nothing stays reserved without an order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_while_its_replica_lags_loses_nothing_acknowledged() {
    failover_under_load(true).await;
}

async fn failover_under_load(lagging_replica: bool) {
    let mut cluster = RedisCluster::start();
    let env = [
        ("RELAYER_REDIS_URL", cluster.seed_url()),
        ("RELAYER_REDIS__MODE", "cluster".to_owned()),
        ("RELAYER_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        (
            "RELAYER_REDIS__COMMAND_TIMEOUT_MS",
            COMMAND_TIMEOUT_MS.to_string(),
        ),
        // NB: a placement caught by the failover is answered 202 and carried on, rather than
        // waited for through the whole failover.
        ("RELAYER_LIMITS__PLACEMENT_WAIT_MS", "1000".to_owned()),
    ];
    let relayers = [
        RelayerProcess::start_ready(&env),
        RelayerProcess::start_ready(&env),
    ];
    let bases: Vec<String> = relayers.iter().map(|r| r.base.clone()).collect();
    let api = Api::default();
    let mut traders = Vec::new();
    for c in 0..CLIENTS {
        let base = &bases[c % 2];
        let user = address(200 + c);
        traders.push(api.trader(base, &user).await);
        api.deposit(base, &user, "collateral", COLLATERAL).await;
        for m in MARKETS {
            api.deposit(base, &user, m, SHARES).await;
        }
    }

    let load = Load::start(&api, &bases, &traders, "f", 0x6a09_e667_f3bc_c908);

    wait_for("traffic to flow", Duration::from_secs(20), async || {
        load.placed() >= TRAFFIC
    })
    .await;
    let victim = cluster.master_ports()[0];
    let victim_id = cluster
        .nodes_info()
        .into_iter()
        .find(|n| n.port == victim)
        .map(|n| n.id)
        .expect("the victim's id");
    let frozen = lagging_replica.then(|| {
        let replica = cluster.replica_of(victim).expect("the victim's replica");
        // NB: its link to the master is cut, then it hangs, so it cannot reconnect: what the
        // master writes from now on is nowhere else (a replica that only hangs would still get
        // it from the socket buffers once it resumes).
        cluster
            .cli(replica, &["CLIENT", "KILL", "TYPE", "master"])
            .expect("cut the replica's link");
        cluster.signal(replica, "STOP");
        replica
    });
    if frozen.is_some() {
        // NB: this sleep is the scenario: a second of traffic the replica does not get.
        let before = load.placed();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        eprintln!(
            "{} placements answered 201 while the replica hung",
            load.placed() - before
        );
    }
    let killed_at = Instant::now();
    cluster.kill(victim);
    if let Some(replica) = frozen {
        cluster.signal(replica, "CONT");
    }
    // Its replica takes over: a master that replicated the victim before.
    wait_for(
        "the victim's replica to be promoted",
        Duration::from_secs(20),
        async || {
            let nodes = cluster.nodes_info();
            nodes.iter().any(|n| n.id == victim_id && n.failed) && cluster.master_ports().len() == 3
        },
    )
    .await;
    let promoted_after = killed_at.elapsed();
    cluster.restart(victim);
    cluster.wait_healthy(Duration::from_secs(30));
    let before = load.placed();
    wait_for(
        "traffic to flow after the failover",
        Duration::from_secs(30),
        async || load.placed() >= before + TRAFFIC,
    )
    .await;
    let serving_again_after = killed_at.elapsed();
    let LoadOutcome {
        mut orders,
        acknowledged,
        statuses,
        slowest,
    } = load.finish().await;
    let unexpected: Vec<_> = statuses
        .keys()
        .filter(|s| !matches!(s, 201 | 202 | 503))
        .collect();
    assert!(unexpected.is_empty(), "only 201, 202 and 503: {statuses:?}");
    assert!(
        statuses.get(&503).copied().unwrap_or(0) + statuses.get(&202).copied().unwrap_or(0) > 0,
        "the failover was seen by clients: {statuses:?}"
    );
    assert!(slowest < REQUEST_BOUND, "a request took {slowest:?}");
    eprintln!(
        "statuses {statuses:?}, slowest request {slowest:?}, replica promoted \
         {promoted_after:?} and traffic flowing again {serving_again_after:?} after the kill"
    );

    // Both processes serve again, untouched: a fresh placement on each succeeds.
    for (n, base) in bases.iter().enumerate() {
        let id = format!("after-{n}");
        let fresh = Order::buy()
            .id(&id)
            .market(MARKETS[0])
            .user(&traders[n].user_id)
            .price(100_000)
            .amount(1)
            .json();
        let (status, _) = api
            .place(base, &traders[n], &fresh)
            .await
            .expect("answered");
        assert_eq!(status, 201, "a placement on {base} after the failover");
        orders.push((id, n));
    }

    // Sagas the failover interrupted finish in the background; then nothing is lost or created.
    for base in &bases {
        wait_no_sagas(&api, base, Duration::from_secs(30)).await;
    }
    wait_for_ok(
        "the invariants to hold",
        Duration::from_secs(20),
        async || {
            check_invariants(
                &api,
                &bases[0],
                &traders,
                &orders,
                &MARKETS,
                u128::from(COLLATERAL) * CLIENTS as u128,
                u128::from(SHARES) * CLIENTS as u128,
            )
            .await
        },
    )
    .await;
    // Nothing a client was told about is gone: every order answered 201 or 202 exists, and
    // what each trader has reserved is what their open orders need (no reservation lost with
    // the master, none locked).
    for (id, c) in &acknowledged {
        let (status, body) = api
            .get(&format!("{}/v2/orders/{id}", bases[0]), &traders[*c])
            .await;
        assert_eq!(
            status, 200,
            "order {id}, acknowledged before, after the failover: {body}"
        );
    }
    check_reservations(&api, &bases[0], &traders, &MARKETS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{} acknowledged orders all found", acknowledged.len());
    for r in &relayers {
        let log = r.log_text();
        assert!(!log.contains("panicked"), "a relayer panicked:\n{log}");
    }
}
