//! The Lua scripts of the Redis backend, one per state-changing operation (each touches one
//! hash slot), loaded as `redis::Script`s (EVALSHA, reloaded after a Redis restart). The
//! scripts' text lives in `lua/`; `num.lua` (exact decimal arithmetic), `fence.lua` (saga
//! fencing) and `book.lua` (the order book) are prepended to those that need them. [`RedisStore::script`] runs one.
//!
//! May use: the store's own types (its error, the parent's bounded call and connection).

use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::{RedisConnection, RedisStore};
use crate::store::StoreError;

const NUM_LUA: &str = include_str!("lua/num.lua");
const BOOK_LUA: &str = include_str!("lua/book.lua");
const FENCE_LUA: &str = include_str!("lua/fence.lua");

pub(super) struct Scripts {
    pub(super) apply_moves: Script,
    pub(super) match_order: Script,
    pub(super) cancel_order: Script,
    pub(super) depth: Script,
    pub(super) open_orders: Script,
    pub(super) claim: Script,
    pub(super) finish_claim: Script,
    pub(super) delete_api_key: Script,
    pub(super) undo_match: Script,
    pub(super) saga_write: Script,
    pub(super) saga_claim: Script,
    pub(super) saga_delete: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let book = |body: &str| Script::new(&format!("{NUM_LUA}{FENCE_LUA}{BOOK_LUA}{body}"));
        Self {
            apply_moves: Script::new(&format!(
                "{NUM_LUA}{FENCE_LUA}{}",
                include_str!("lua/apply_moves.lua")
            )),
            match_order: book(include_str!("lua/match_order.lua")),
            cancel_order: book(include_str!("lua/cancel_order.lua")),
            depth: book(include_str!("lua/depth.lua")),
            open_orders: book(include_str!("lua/open_orders.lua")),
            claim: Script::new(&format!("{FENCE_LUA}{}", include_str!("lua/claim.lua"))),
            finish_claim: Script::new(&format!(
                "{FENCE_LUA}{}",
                include_str!("lua/finish_claim.lua")
            )),
            delete_api_key: Script::new(include_str!("lua/delete_api_key.lua")),
            undo_match: book(include_str!("lua/undo_match.lua")),
            saga_write: Script::new(include_str!("lua/saga_write.lua")),
            saga_claim: Script::new(include_str!("lua/saga_claim.lua")),
            saga_delete: Script::new(include_str!("lua/saga_delete.lua")),
        }
    }
}

impl RedisStore {
    /// Runs the state-changing `script` on `key` (the one key, so one slot) with `args`, under
    /// the command timeout; the reply is a list of strings. With `replicaAcks` set, the write
    /// counts only once that many replicas confirmed it (`WAIT`, same round trip).
    pub(super) async fn script(
        &self,
        what: &'static str,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.script_keys(what, script, &[key], args).await
    }

    /// [`RedisStore::script`] of a script that only reads (`depth`, `open_orders`): no `WAIT`.
    pub(super) async fn read_script(
        &self,
        what: &'static str,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.run_script(what, script, &[key], args, 0).await
    }

    /// [`RedisStore::script`] on several keys (only `claim`, see `lua/claim.lua`).
    pub(super) async fn script_keys(
        &self,
        what: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.run_script(what, script, keys, args, self.inner.replica_acks)
            .await
    }

    async fn run_script(
        &self,
        what: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[String],
        acks: u32,
    ) -> Result<Vec<String>, StoreError> {
        if acks == 0 {
            let mut conn = self.inner.conn.clone();
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(*k);
            }
            for a in args {
                invocation.arg(a);
            }
            return self
                .call(
                    what,
                    async move { invocation.invoke_async(&mut conn).await },
                )
                .await;
        }
        let wait_ms = self.wait_ms();
        let mut conn = self.writer();
        let (reply, acked) = self
            .call(
                what,
                eval_then_wait(&mut conn, script, keys, args, acks, wait_ms),
            )
            .await?;
        self.confirmed(what, acked)?;
        Ok(reply)
    }

    /// How long a write waits for its replicas: half the command timeout, so that a replica
    /// that does not confirm gets its own message instead of the generic "no answer".
    pub(super) fn wait_ms(&self) -> u64 {
        u64::try_from(self.inner.timeout.as_millis() / 2)
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// `Ok` when `acked` replicas are enough (`redis.replicaAcks`); else the write's outcome
    /// is unknown to the caller: [`StoreError::Unavailable`].
    pub(super) fn confirmed(&self, what: &str, acked: u64) -> Result<(), StoreError> {
        let acks = self.inner.replica_acks;
        if acked >= u64::from(acks) {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "{what}: written, but confirmed by {acked} of {acks} replicas within {} ms \
             (redis.replicaAcks): its outcome counts as unknown",
            self.wait_ms()
        )))
    }
}

/// `EVALSHA` then `WAIT acks wait_ms` in one pipeline (one round trip; on a cluster both go
/// to the node of the script's key, as the pipeline is routed by its first keyed command).
/// A node that lost its scripts (a restart, a promoted replica) gets `SCRIPT LOAD` once and the
/// pipeline again. Returns the script's reply and how many replicas confirmed.
async fn eval_then_wait(
    conn: &mut RedisConnection,
    script: &Script,
    keys: &[&str],
    args: &[String],
    acks: u32,
    wait_ms: u64,
) -> Result<(Vec<String>, u64), RedisError> {
    let mut loaded = false;
    loop {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        let (evaluated, acked) = then_wait(conn, eval, acks, wait_ms).await?;
        match evaluated {
            Err(e) if !loaded && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.prepare_invoke().load_async(conn).await?;
                loaded = true;
            }
            evaluated => return Ok((redis::from_redis_value(evaluated?)?, acked)),
        }
    }
}

/// `cmd` then `WAIT acks wait_ms` in one pipeline on one connection (so the `WAIT` covers
/// `cmd`'s write): `cmd`'s reply and how many replicas confirmed.
pub(super) async fn then_wait(
    conn: &mut RedisConnection,
    cmd: redis::Cmd,
    acks: u32,
    wait_ms: u64,
) -> Result<(redis::RedisResult<Value>, u64), RedisError> {
    let mut pipe = redis::pipe();
    pipe.add_command(cmd);
    pipe.cmd("WAIT").arg(acks).arg(wait_ms);
    pipe.ignore_errors();
    let mut replies: Vec<redis::RedisResult<Value>> = pipe.query_async(conn).await?;
    let (Some(waited), Some(first), true) = (replies.pop(), replies.pop(), replies.is_empty())
    else {
        return Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "a command and WAIT: not two replies",
        )));
    };
    Ok((first, redis::from_redis_value(waited?)?))
}
