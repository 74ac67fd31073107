//! The Redis backend: the state every relayer replica shares.
//!
//! Each store operation is one Redis round trip, and each one that changes state is a Lua script
//! (`redis::Script`: EVALSHA, reloaded automatically after a Redis restart) that touches the keys
//! of exactly one hash slot, so it runs unchanged on Redis Cluster:
//!
//! | slot (hash tag)          | keys                                   | scripts                      |
//! |--------------------------|----------------------------------------|------------------------------|
//! | `{u:<userId>}`           | the account hash, operation-id markers | `apply_moves`                |
//! | `{m:<marketKey>}`        | book queues, price levels, orders      | `match_order`, `cancel_order`, `depth`, `open_orders` |
//! | `{c:<userId>:<orderId>}` | a user's order id's claim              | `claim`\*, `finish_claim`    |
//! | `{apikeys}`              | API-key records by hash and by id      | `delete_api_key`             |
//! | `{sagas:<n>}`, n < 16    | saga log entries of one shard (hash)   | `saga_write`, `saga_claim`, `saga_delete` |
//!
//! \* `claim` also reads the claim an older build kept for the same order id (`{c:<orderId>}`,
//! not scoped to its user), so an order id placed before an upgrade stays claimed: the one
//! script with a second slot, fine on a single node; in cluster mode (`redis.mode: cluster`,
//! which those builds never ran in) the second key is left out.
//!
//! A market slot also records each placement's match reply under `:x:<orderId>` (for the
//! order retention), which makes `match_order` idempotent and lets `undo_match` revert it.
//! A saga's entry (fields `<id>:meta` and `<id>:rec`) lives in one of [`SAGA_SHARDS`] hashes
//! chosen by a hash of its id: one slot per saga, one script per log write, and recovery and
//! `/admin/sagas` read the log with one `HGETALL` per shard (no keyspace scan).
//!
//! Saga-owned writes are fenced (`lua/fence.lua`, [`Fence`]): each carries the saga's lease
//! epoch and lease end, refused once the lease ended by Redis's clock (`TIME`; the relayers'
//! clocks are assumed synchronised to well under the lease) or once a newer epoch wrote the
//! same slot.
//!
//! Every key starts with the configured prefix (`redis.keyPrefix`). Quantities are canonical
//! decimal strings and the scripts compute on them exactly (`lua/num.lua`), so the limits are
//! the same as the in-memory backend's: u64 per order field and per deposit, u128 notionals.
//!
//! Every call is bounded by `redis.commandTimeoutMs`; an error or a late answer becomes
//! [`StoreError::Unavailable`] (HTTP 503). The connection (one node's, or the cluster client's
//! with one connection per node) reconnects in the background.
//!
//! Topologies: `redis.mode: standalone` (one node) or `cluster` (Redis Cluster, `redisUrl` one
//! seed). With `redis.replicaAcks` (1 by default in cluster mode) each state-changing script
//! and API-key write is sent with `WAIT` in the same pipeline and fails with `Unavailable`
//! unless that many replicas confirmed it (with a write of the slot's sync key first, so the
//! `WAIT` covers everything the node wrote before, a replay's first run included): a failover
//! to the replica that confirmed it then loses no write a caller was told about. Those writes
//! take turns on [`WRITE_CONNECTIONS`] connections, since a `WAIT` holds up its connection's
//! later commands. The read-only scripts (`depth`, `open_orders`)
//! and the claims' expiry do not wait.
//!
//! Connections (`connect`): `rediss://` is TLS (rustls; `redis.caFile` for a private CA, else
//! the web PKI roots) and `redis.password` is the AUTH password of each. They open lazily, so
//! a Redis that is down at start does not stop the relayer, and neither does one whose
//! certificate does not verify or that refuses the password: in every such case the relayer
//! starts but never reports ready (`/ready` pings the store), and each change between
//! answering and failing is logged once, naming the keys to check (`redisUrl`,
//! `redis.caFile`, `redis.password`). NB: chosen over failing at start because startup does
//! not ping Redis today (a Redis that is down at start is waited for), and one rule for every
//! "cannot talk to Redis" keeps a rotated server certificate or password from crash-looping
//! the pods that were serving. The config errors found without a connection (a CA file that is
//! missing or not PEM, a CA with `redis://`, two passwords) do stop the start.
//!
//! Retention: an order that is filled or cancelled expires `redis.orderRetentionSeconds` later,
//! and so does its claim. The claim of a maker order finished by someone else's placement lives
//! in another slot; its expiry is set after the match by a best-effort follow-up. Known limit:
//! a claim whose follow-up was lost keeps no TTL, and nothing collects it yet.
//!
//! # Layout
//! - this module: [`RedisStore`] and one method per store operation;
//! - `connect`: opening connections ([`RedisAccess`]: password and CA), shared with the rate
//!   limiter;
//! - `scripts`: the Lua scripts (their text in `lua/`) and how one is run;
//! - `keys`: the key layout above and the sharding of the saga log;
//! - `snapshots`: the last depth read of each market, served again while the book's depth
//!   version (moved on by every script that changes its price levels) has not moved;
//! - `wire`: reading replies into domain types, and Redis errors into [`StoreError`]s.
//!
//! May use: `config` (the `redis` keys), `domain`, `book`, and the store's own types.

mod connect;
mod keys;
mod scripts;
mod snapshots;
mod wire;

pub use self::connect::{RedisAccess, RedisConnection, RedisMode, RedisTarget, connect};

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use redis::RedisError;

use self::keys::SAGA_SHARDS;
use self::scripts::Scripts;
use self::snapshots::DepthSnapshots;
use self::wire::{
    WireOrder, asset_field, bucket_code, classify, corrupt, from_json, parse_account,
    parse_apply_moves, parse_claim, parse_depth, parse_match, parse_num, parse_order,
    parse_saga_claim, parse_saga_shard, parse_status, parse_undo, side_code, to_json, unavailable,
};
use super::{ApiKeyRecord, Claim, ClaimEnd, ClaimOutcome, Fence, SagaEntry, StoreError};
use crate::book::{
    CancelError, Level, MAX_FILLS_PER_ORDER, MAX_SELF_TRADE_CANCELS_PER_ORDER, MatchOutcome,
    OrdersPage, PageRequest, UndoOutcome,
};
use crate::config::RelayerConfig;
use crate::domain::{Account, BalanceError, MarketKey, Move, Order, UserId};

/// How to reach Redis and how to lay keys out in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Prepended to every key, e.g. `foresight:`.
    pub key_prefix: String,
    /// Bound on every Redis call (connecting included).
    pub command_timeout: Duration,
    /// How long filled and cancelled orders (and their claims) are kept.
    pub order_retention: Duration,
    /// Standalone or cluster (`url` is then one seed node).
    pub mode: RedisMode,
    /// More seed nodes of a cluster, `host:port`.
    pub cluster_nodes: Vec<String>,
    /// How many replicas must confirm each write (`WAIT`); 0: none.
    pub replica_acks: u32,
}

/// State kept in Redis.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Multiplexed connection that reconnects after an I/O error; cloned per call.
    conn: RedisConnection,
    prefix: String,
    timeout: Duration,
    retention_ms: u64,
    scripts: Scripts,
    /// With `replica_acks`: [`WRITE_CONNECTIONS`] more connections the writes take turns on.
    /// NB: a `WAIT` holds up every later command of its connection until the replicas confirm,
    /// so writes that wait must not all share one multiplexed connection.
    writers: Vec<RedisConnection>,
    /// The writer the next write takes.
    next_writer: AtomicUsize,
    /// How many replicas must confirm each write before it counts as done.
    replica_acks: u32,
    /// Whether the connection is TLS (`rediss://`), for the hints of failed calls.
    tls: bool,
    /// What the last [`RedisStore::ping`] found ([`UNKNOWN`], [`ANSWERS`] or [`FAILS`]), so
    /// that only a change is logged.
    health: AtomicU8,
    /// The last depth read of each market, with the book's depth version it was read at.
    depth: DepthSnapshots,
}

/// How many connections the writes that wait for replicas take turns on (each write blocks
/// its connection for one replica round trip, so this bounds the writes per round trip).
pub const WRITE_CONNECTIONS: usize = 16;

/// No ping yet.
const UNKNOWN: u8 = 0;
/// The last ping was answered.
const ANSWERS: u8 = 1;
/// The last ping failed.
const FAILS: u8 = 2;

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("retention_ms", &self.inner.retention_ms)
            .finish_non_exhaustive()
    }
}

/// The three fence arguments of a script (see `lua/fence.lua`): empty without a fence.
fn fence_args(fence: Option<&Fence>) -> [String; 3] {
    match fence {
        Some(f) => [
            f.saga_id.clone(),
            f.epoch.to_string(),
            f.lease_until_ms.to_string(),
        ],
        None => [String::new(), "0".to_owned(), "0".to_owned()],
    }
}

impl RedisStore {
    /// The connection a write that waits for replicas takes: the writers in turn.
    fn writer(&self) -> RedisConnection {
        let n = self.inner.next_writer.fetch_add(1, Ordering::Relaxed);
        match self.inner.writers.get(n % self.inner.writers.len().max(1)) {
            Some(c) => c.clone(),
            None => self.inner.conn.clone(),
        }
    }

    /// The multiplexed connection, for other users of the same Redis (the rate limiter).
    pub fn connection(&self) -> RedisConnection {
        self.inner.conn.clone()
    }

    /// A store over the Redis at `settings.url`, with what the URL says only (no
    /// `redis.password`, no `redis.caFile`): [`RedisStore::with_access`].
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        Self::with_access(settings, &RedisAccess::default())
    }

    /// The store `config` selects when `redisUrl` is `url`: its `redis` keys, password and CA
    /// included.
    pub fn from_config(url: &str, config: &RelayerConfig) -> Result<Self, StoreError> {
        let r = &config.redis;
        Self::with_access(
            &RedisSettings {
                url: url.to_owned(),
                key_prefix: r.key_prefix.clone(),
                command_timeout: Duration::from_millis(r.command_timeout_ms),
                order_retention: Duration::from_secs(r.order_retention_seconds),
                mode: r.mode,
                cluster_nodes: r.cluster_nodes.clone(),
                replica_acks: r.effective_replica_acks(),
            },
            &RedisAccess::from_config(config),
        )
    }

    /// A store over the Redis at `settings.url` with `access` (password, CA). Connects lazily:
    /// a Redis that is down at start, or that refuses the TLS handshake or the password, makes
    /// calls fail with [`StoreError::Unavailable`] (and `/ready` false) until that changes.
    pub fn with_access(settings: &RedisSettings, access: &RedisAccess) -> Result<Self, StoreError> {
        let target = RedisTarget {
            url: settings.url.clone(),
            mode: settings.mode,
            cluster_nodes: settings.cluster_nodes.clone(),
        };
        let conn = connect(&target, access, "redisUrl", settings.command_timeout)?;
        let writers = if settings.replica_acks == 0 {
            Vec::new()
        } else {
            (0..WRITE_CONNECTIONS)
                .map(|_| connect(&target, access, "redisUrl", settings.command_timeout))
                .collect::<Result<_, _>>()?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                prefix: settings.key_prefix.clone(),
                timeout: settings.command_timeout,
                retention_ms: u64::try_from(settings.order_retention.as_millis())
                    .unwrap_or(u64::MAX),
                scripts: Scripts::new(),
                writers,
                next_writer: AtomicUsize::new(0),
                replica_acks: settings.replica_acks,
                tls: settings.url.starts_with("rediss://"),
                health: AtomicU8::new(UNKNOWN),
                depth: DepthSnapshots::default(),
            }),
        })
    }

    /// Runs one Redis call under the command timeout.
    async fn call<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // NB: a hint names the keys to check (TLS, password); never a secret.
                let hint = connect::hint(&e, self.inner.tls);
                Err(match classify(what, e) {
                    StoreError::Unavailable(message) => StoreError::Unavailable(message + hint),
                    other => other,
                })
            }
            Err(_) => Err(unavailable(
                what,
                format_args!(
                    "no answer within {} ms{}",
                    self.inner.timeout.as_millis(),
                    connect::timeout_hint(self.inner.tls)
                ),
            )),
        }
    }

    /// Whether Redis answers on every connection the store uses: the main one and, with
    /// `redis.replicaAcks`, each of the [`WRITE_CONNECTIONS`] (opened lazily too, so a relayer
    /// whose write connections are still opening is not ready yet: a write would fail with
    /// 503). A change from the last ping is logged (a failure at warn, with what to check).
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let main = self.ping_on(self.inner.conn.clone(), "PING");
        let writers = futures::future::join_all(
            self.inner
                .writers
                .iter()
                .map(|c| self.ping_on(c.clone(), "PING on a write connection")),
        );
        let (main, writers) = futures::join!(main, writers);
        let result = main.and_then(|()| writers.into_iter().collect::<Result<(), _>>());
        let now = if result.is_ok() { ANSWERS } else { FAILS };
        let before = self.inner.health.swap(now, Ordering::Relaxed);
        match &result {
            Err(error) if before != FAILS => {
                tracing::warn!(%error, "redis does not answer: not ready");
            }
            Ok(()) if before == FAILS => tracing::info!("redis answers again"),
            _ => {}
        }
        result
    }

    /// One `PING` on `conn`.
    async fn ping_on(
        &self,
        mut conn: RedisConnection,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let pong = self
            .call(what, async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(corrupt(what, format!("answered {pong:?}")))
        }
    }

    pub(super) async fn apply_moves(
        &self,
        user: &UserId,
        op_id: Option<&str>,
        moves: &[Move],
        fence: Option<&Fence>,
    ) -> Result<Result<Account, BalanceError>, StoreError> {
        let mut args = Vec::with_capacity(6 + 4 * moves.len());
        args.push(u64::MAX.to_string());
        args.push(self.inner.retention_ms.to_string());
        args.push(op_id.unwrap_or_default().to_owned());
        args.extend(fence_args(fence));
        for m in moves {
            args.push(asset_field(&m.asset));
            args.push(bucket_code(m.from).to_owned());
            args.push(bucket_code(m.to).to_owned());
            args.push(m.amount.to_string());
        }
        let reply = self
            .script(
                "apply_moves",
                &self.inner.scripts.apply_moves,
                &self.account_key(user),
                &args,
            )
            .await?;
        parse_apply_moves(&reply, moves)
    }

    pub(super) async fn account(&self, user: &UserId) -> Result<Account, StoreError> {
        let key = self.account_key(user);
        let mut conn = self.inner.conn.clone();
        let flat: Vec<String> = self
            .call("HGETALL account", async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await
            })
            .await?;
        parse_account(&flat)
    }

    pub(super) async fn claim_order_id(
        &self,
        order_id: &str,
        claim: Claim,
        fence: Option<&Fence>,
    ) -> Result<ClaimOutcome, StoreError> {
        let key = self.claim_key(&claim.user_id, order_id);
        let legacy = self.legacy_claim_key(order_id);
        let mut args = vec![
            to_json(&claim)?,
            claim.placement_id.clone(),
            claim.user_id.to_string(),
        ];
        args.extend(fence_args(fence));
        // NB: a cluster never held claims of the older builds (they predate cluster support),
        // and the second key would be in another slot.
        let keys: &[&str] = if self.inner.conn.is_cluster() {
            &[&key]
        } else {
            &[&key, &legacy]
        };
        let reply = self
            .script_keys("claim", &self.inner.scripts.claim, keys, &args)
            .await?;
        match reply.first().map(String::as_str) {
            Some("claimed") => Ok(ClaimOutcome::Claimed),
            Some("fenced") => Err(StoreError::Fenced),
            Some("existing") => Ok(ClaimOutcome::Existing(parse_claim(
                reply.get(1),
                reply.get(2),
                reply.get(3),
            )?)),
            _ => Err(corrupt("claim", format!("unexpected reply {reply:?}"))),
        }
    }

    pub(super) async fn finish_claim(
        &self,
        user: &UserId,
        order_id: &str,
        placement: &str,
        end: ClaimEnd,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let (field, json, finished) = match &end {
            ClaimEnd::Placed(record) => {
                ("result", to_json(record)?, !record.order.status.is_open())
            }
            ClaimEnd::Failed(failed) => ("failed", to_json(failed)?, true),
        };
        let mut args = vec![
            field.to_owned(),
            json,
            if finished { "1" } else { "0" }.to_owned(),
            self.inner.retention_ms.to_string(),
            placement.to_owned(),
        ];
        args.extend(fence_args(fence));
        let reply = self
            .script(
                "finish_claim",
                &self.inner.scripts.finish_claim,
                &self.claim_key(user, order_id),
                &args,
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("fenced") => Err(StoreError::Fenced),
            _ => Ok(()),
        }
    }

    pub(super) async fn claim(
        &self,
        user: &UserId,
        order_id: &str,
    ) -> Result<Option<Claim>, StoreError> {
        if let Some(claim) = self.read_claim(self.claim_key(user, order_id)).await? {
            return Ok(Some(claim));
        }
        if self.inner.conn.is_cluster() {
            return Ok(None);
        }
        // NB: claims of older builds were keyed by the order id alone.
        Ok(self
            .read_claim(self.legacy_claim_key(order_id))
            .await?
            .filter(|c| &c.user_id == user))
    }

    async fn read_claim(&self, key: String) -> Result<Option<Claim>, StoreError> {
        let mut conn = self.inner.conn.clone();
        let fields: Vec<Option<String>> = self
            .call("HMGET claim", async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("claim")
                    .arg("result")
                    .arg("failed")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        match fields.as_slice() {
            [None, ..] | [] => Ok(None),
            [Some(claim), result, failed] => {
                parse_claim(Some(claim), result.as_ref(), failed.as_ref()).map(Some)
            }
            _ => Err(corrupt("claim", format!("unexpected reply {fields:?}"))),
        }
    }

    pub(super) async fn match_order(
        &self,
        order: Order,
        fence: Option<&Fence>,
    ) -> Result<MatchOutcome, StoreError> {
        let market = order.market_key.clone();
        let [saga, epoch, lease] = fence_args(fence);
        let args = [
            order.order_id.clone(),
            order.user_id.to_string(),
            side_code(order.side).to_owned(),
            order.price.to_string(),
            order.amount.to_string(),
            order.reserved.to_string(),
            order.created_at_ms.to_string(),
            self.inner.retention_ms.to_string(),
            order.client_order_id.clone(),
            saga,
            epoch,
            lease,
            MAX_FILLS_PER_ORDER.to_string(),
            MAX_SELF_TRADE_CANCELS_PER_ORDER.to_string(),
        ];
        let reply = self
            .script(
                "match_order",
                &self.inner.scripts.match_order,
                &self.market_key(&market),
                &args,
            )
            .await?;
        let (outcome, finished) = parse_match(&market, &order.order_id, &reply)?;
        self.expire_claims(finished);
        Ok(outcome)
    }

    /// Sets the retention on the claims of orders that another slot's script finished. Runs in
    /// the background: the match has happened, and the caller must go on to move balances.
    fn expire_claims(&self, order_ids: Vec<(UserId, String)>) {
        let retention = self.inner.retention_ms.to_string();
        self.claims_in_background(
            "PEXPIRE claims",
            &["PEXPIRE", retention.as_str()],
            order_ids,
            "claims of finished orders keep no expiry",
        );
    }

    /// Sends `command` (a name and the arguments after the key) for every claim in one
    /// pipeline, in the background; a failure is logged with `on_error`.
    fn claims_in_background(
        &self,
        what: &'static str,
        command: &[&str],
        order_ids: Vec<(UserId, String)>,
        on_error: &'static str,
    ) {
        let Some((name, args)) = command.split_first() else {
            return;
        };
        if order_ids.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (user, id) in &order_ids {
            pipe.cmd(name)
                .arg(self.claim_key(user, id))
                .arg(args)
                .ignore();
        }
        let this = self.clone();
        tokio::spawn(async move {
            let conn = this.inner.conn.clone();
            let cluster = this.inner.conn.is_cluster();
            let result = this
                .call(what, async move {
                    if !cluster {
                        let mut conn = conn;
                        return pipe.query_async::<()>(&mut conn).await;
                    }
                    // NB: each claim is a slot of its own: one command each, all at once.
                    let calls = pipe.cmd_iter().map(|cmd| {
                        let mut conn = conn.clone();
                        async move { cmd.query_async::<()>(&mut conn).await }
                    });
                    futures::future::try_join_all(calls).await.map(drop)
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, ?order_ids, "{on_error}");
            }
        });
    }

    pub(super) async fn undo_match(
        &self,
        market: &MarketKey,
        taker_id: &str,
        fence: Option<&Fence>,
    ) -> Result<UndoOutcome, StoreError> {
        let [saga, epoch, lease] = fence_args(fence);
        let args = [
            taker_id.to_owned(),
            self.inner.retention_ms.to_string(),
            saga,
            epoch,
            lease,
        ];
        let reply = self
            .script(
                "undo_match",
                &self.inner.scripts.undo_match,
                &self.market_key(market),
                &args,
            )
            .await?;
        let undo = parse_undo(market, &reply)?;
        // NB: makers back in the book had their claims set to expire; best effort, like
        // `expire_claims`, since the claims live in other slots.
        // NB: only the makers back in the book; one that stays out (it had left the book
        // since: its release is in `maker_releases`) keeps its claim's expiry.
        self.persist_claims(
            undo.fills
                .iter()
                .filter(|f| {
                    !undo
                        .maker_releases
                        .iter()
                        .any(|r| r.order_id == f.maker_order_id)
                })
                .map(|f| (f.maker_user().clone(), f.maker_client_id().to_owned()))
                .collect::<Vec<_>>(),
        );
        Ok(undo)
    }

    fn persist_claims(&self, order_ids: Vec<(UserId, String)>) {
        self.claims_in_background(
            "PERSIST claims",
            &["PERSIST"],
            order_ids,
            "claims of reopened orders keep their expiry",
        );
    }

    pub(super) async fn saga_write(
        &self,
        entry: &SagaEntry,
        create: bool,
    ) -> Result<bool, StoreError> {
        let args = [
            entry.id.clone(),
            entry.owner.clone(),
            entry.lease_until_ms.to_string(),
            entry.state.clone(),
            entry.record.clone(),
            if create { "1" } else { "0" }.to_owned(),
            entry.epoch.to_string(),
        ];
        let reply = self
            .script(
                "saga_write",
                &self.inner.scripts.saga_write,
                &self.saga_key(&entry.id),
                &args,
            )
            .await?;
        Ok(reply.first().map(String::as_str) == Some("1"))
    }

    pub(super) async fn saga_claim(
        &self,
        id: &str,
        owner: &str,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<Option<SagaEntry>, StoreError> {
        let args = [
            id.to_owned(),
            owner.to_owned(),
            lease_until_ms.to_string(),
            now_ms.to_string(),
        ];
        let reply = self
            .script(
                "saga_claim",
                &self.inner.scripts.saga_claim,
                &self.saga_key(id),
                &args,
            )
            .await?;
        parse_saga_claim(id, &reply)
    }

    pub(super) async fn saga_delete(
        &self,
        id: &str,
        owner: &str,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let reply = self
            .script(
                "saga_delete",
                &self.inner.scripts.saga_delete,
                &self.saga_key(id),
                &[id.to_owned(), owner.to_owned(), epoch.to_string()],
            )
            .await?;
        Ok(reply.first().map(String::as_str) == Some("1"))
    }

    pub(super) async fn saga_list(&self) -> Result<Vec<SagaEntry>, StoreError> {
        let mut entries = Vec::new();
        for shard in 0..SAGA_SHARDS {
            let key = self.saga_shard_key(shard);
            let mut conn = self.inner.conn.clone();
            let fields: HashMap<String, String> = self
                .call("HGETALL sagas", async move {
                    redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await
                })
                .await?;
            entries.extend(parse_saga_shard(&fields)?);
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(entries)
    }

    pub(super) async fn cancel_order(
        &self,
        market: &MarketKey,
        order_id: &str,
        user: &UserId,
        fence: Option<&Fence>,
        again: bool,
    ) -> Result<Result<(Order, u64), CancelError>, StoreError> {
        let [saga, epoch, lease] = fence_args(fence);
        let args = [
            order_id.to_owned(),
            user.to_string(),
            self.inner.retention_ms.to_string(),
            saga,
            epoch,
            lease,
            if again { "1" } else { "0" }.to_owned(),
        ];
        let reply = self
            .script(
                "cancel_order",
                &self.inner.scripts.cancel_order,
                &self.market_key(market),
                &args,
            )
            .await?;
        match reply.as_slice() {
            [tag, json, release] if tag == "ok" => {
                let order = parse_order(market, json)?;
                let release = parse_num("cancel release", Some(release))?;
                self.expire_claims(vec![(order.user_id.clone(), order.client_id().to_owned())]);
                Ok(Ok((order, release)))
            }
            [tag] if tag == "fenced" => Err(StoreError::Fenced),
            [tag] if tag == "not_found" => Ok(Err(CancelError::NotFound)),
            [tag, status] if tag == "not_open" => {
                Ok(Err(CancelError::NotOpen(parse_status(status)?)))
            }
            _ => Err(corrupt(
                "cancel_order",
                format!("unexpected reply {reply:?}"),
            )),
        }
    }

    pub(super) async fn order(
        &self,
        market: &MarketKey,
        order_id: &str,
    ) -> Result<Option<Order>, StoreError> {
        let key = format!("{}:o:{order_id}", self.market_key(market));
        let mut conn = self.inner.conn.clone();
        let fields: HashMap<String, String> = self
            .call("HGETALL order", async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await
            })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let wire = WireOrder::from_fields(fields)?;
        wire.into_order(market).map(Some)
    }

    /// Depth (`lua/depth.lua`, one script), or, when the last depth read of this market and
    /// level count is fresh (`snapshots`) and the book's depth version is still the one it was
    /// read at, that read, after one `HGET` of the version.
    pub(super) async fn depth(
        &self,
        market: &MarketKey,
        max_levels: usize,
    ) -> Result<(Vec<Level>, Vec<Level>), StoreError> {
        let key = self.market_key(market);
        let started = std::time::Instant::now();
        if let Some((version, sides)) = self.inner.depth.fresh(&key, max_levels, started) {
            let mut conn = self.inner.conn.clone();
            let meta = format!("{key}:meta");
            let now: Option<String> = self
                .call("depth", async move {
                    redis::cmd("HGET")
                        .arg(meta)
                        .arg("dv")
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            if now.as_deref().unwrap_or("0") == version {
                return Ok((sides.0.clone(), sides.1.clone()));
            }
        }
        let reply = self
            .script(
                "depth",
                &self.inner.scripts.depth,
                &key,
                &[max_levels.to_string()],
            )
            .await?;
        let (version, bids, asks) = parse_depth(&reply)?;
        self.inner.depth.put(
            &key,
            max_levels,
            version,
            started,
            Arc::new((bids.clone(), asks.clone())),
        );
        Ok((bids, asks))
    }

    /// A page of open orders from the market's arrival index (`lua/open_orders.lua`): one
    /// range read of `limit + 1` entries and one read per order answered.
    pub(super) async fn open_orders_page(
        &self,
        market: &MarketKey,
        user: Option<&UserId>,
        page: PageRequest,
    ) -> Result<OrdersPage, StoreError> {
        let user = user.map(ToString::to_string).unwrap_or_default();
        let after = page.after.map(|a| a.to_string()).unwrap_or_default();
        let reply = self
            .script(
                "open_orders",
                &self.inner.scripts.open_orders,
                &self.market_key(market),
                &[user, after, page.bounded_limit().to_string()],
            )
            .await?;
        let Some((next, orders)) = reply.split_first() else {
            return Err(StoreError::Corrupt("open_orders: empty reply".to_owned()));
        };
        let next =
            if next.is_empty() {
                None
            } else {
                Some(next.parse::<u64>().map_err(|_| {
                    StoreError::Corrupt(format!("open_orders: next cursor {next:?}"))
                })?)
            };
        let orders = orders
            .iter()
            .map(|raw| parse_order(market, raw))
            .collect::<Result<_, _>>()?;
        Ok(OrdersPage { orders, next })
    }

    pub(super) async fn put_api_key(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        let key = self.api_keys_key();
        let json = to_json(&record)?;
        // One HSET of both fields: atomic without a script.
        let mut hset = redis::cmd("HSET");
        hset.arg(&key)
            .arg(format!("h:{}", record.hash))
            .arg(json)
            .arg(format!("i:{}", record.key_id))
            .arg(&record.hash);
        let acks = self.inner.replica_acks;
        if acks == 0 {
            let mut conn = self.inner.conn.clone();
            return self
                .call("HSET api key", async move {
                    hset.query_async::<i64>(&mut conn).await
                })
                .await
                .map(drop);
        }
        let (wait_ms, mut conn) = (self.wait_ms(), self.writer());
        let mut pipe = redis::pipe();
        pipe.add_command(hset);
        let acked = self
            .call("HSET api key", async move {
                let (written, acked) = scripts::then_wait(&mut conn, pipe, acks, wait_ms).await?;
                written?;
                Ok(acked)
            })
            .await?;
        self.confirmed("HSET api key", acked)
    }

    pub(super) async fn api_key_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let key = self.api_keys_key();
        let field = format!("h:{hash}");
        let mut conn = self.inner.conn.clone();
        let raw: Option<String> = self
            .call("HGET api key", async move {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(&field)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        raw.map(|r| from_json("api key", &r)).transpose()
    }

    pub(super) async fn delete_api_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let reply = self
            .script(
                "delete_api_key",
                &self.inner.scripts.delete_api_key,
                &self.api_keys_key(),
                &[key_id.to_owned()],
            )
            .await?;
        Ok(reply.first().map(String::as_str) == Some("1"))
    }
}
