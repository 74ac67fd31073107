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

/// A script and its text: the text is sent with `EVAL` to a node that lacks the script (a
/// restarted or promoted node), which caches it there, without `SCRIPT LOAD` (which a cluster
/// client sends to every node, so one unreachable node would fail it). A state-changing script
/// also has a variant that first sets its slot's sync key, for writes that wait for replicas
/// (see [`eval_then_wait`]).
pub(super) struct Lua {
    pub(super) script: Script,
    synced: Option<(Script, String)>,
}

/// Prepended to a write script that waits for replicas: sets its slot's sync key, passed as the
/// last key (declared, so that a node whose slot is migrating refuses the call before it runs,
/// with TRYAGAIN or ASK, instead of failing it inside) and taken off `KEYS`, so the script's
/// own keys are as without it.
const SYNC_LUA: &str = "redis.call('SET', table.remove(KEYS), '1', 'PX', 10000)\n";

impl Lua {
    /// A script that changes state.
    fn new(code: String) -> Self {
        let synced = format!("{SYNC_LUA}{code}");
        Self {
            script: Script::new(&code),
            synced: Some((Script::new(&synced), synced)),
        }
    }

    /// A script that only reads: never waits, so no sync variant.
    fn read_only(code: String) -> Self {
        Self {
            script: Script::new(&code),
            synced: None,
        }
    }
}

pub(super) struct Scripts {
    pub(super) apply_moves: Lua,
    pub(super) match_order: Lua,
    pub(super) cancel_order: Lua,
    pub(super) depth: Lua,
    pub(super) open_orders: Lua,
    pub(super) claim: Lua,
    pub(super) finish_claim: Lua,
    pub(super) delete_api_key: Lua,
    pub(super) undo_match: Lua,
    pub(super) saga_write: Lua,
    pub(super) saga_claim: Lua,
    pub(super) saga_delete: Lua,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let book = |body: &str| Lua::new(format!("{NUM_LUA}{FENCE_LUA}{BOOK_LUA}{body}"));
        let fenced = |body: &str| Lua::new(format!("{FENCE_LUA}{body}"));
        Self {
            apply_moves: Lua::new(format!(
                "{NUM_LUA}{FENCE_LUA}{}",
                include_str!("lua/apply_moves.lua")
            )),
            match_order: book(include_str!("lua/match_order.lua")),
            cancel_order: book(include_str!("lua/cancel_order.lua")),
            depth: Lua::read_only(format!(
                "{NUM_LUA}{FENCE_LUA}{BOOK_LUA}{}",
                include_str!("lua/depth.lua")
            )),
            open_orders: Lua::read_only(format!(
                "{NUM_LUA}{FENCE_LUA}{BOOK_LUA}{}",
                include_str!("lua/open_orders.lua")
            )),
            claim: fenced(include_str!("lua/claim.lua")),
            finish_claim: fenced(include_str!("lua/finish_claim.lua")),
            delete_api_key: Lua::new(include_str!("lua/delete_api_key.lua").to_owned()),
            undo_match: book(include_str!("lua/undo_match.lua")),
            saga_write: Lua::new(include_str!("lua/saga_write.lua").to_owned()),
            saga_claim: Lua::new(include_str!("lua/saga_claim.lua").to_owned()),
            saga_delete: Lua::new(include_str!("lua/saga_delete.lua").to_owned()),
        }
    }
}

impl RedisStore {
    /// Runs `script` on `key` (the one key, so one slot) with `args`, under the command
    /// timeout; the reply is a list of strings. With `replicaAcks` set, a state-changing
    /// script counts only once that many replicas confirmed it (`WAIT`, same round trip); a
    /// read-only one (`depth`, `open_orders`) never waits.
    pub(super) async fn script(
        &self,
        what: &'static str,
        script: &Lua,
        key: &str,
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.script_keys(what, script, &[key], args).await
    }

    /// [`RedisStore::script`] on several keys (only `claim`, see `lua/claim.lua`).
    pub(super) async fn script_keys(
        &self,
        what: &'static str,
        script: &Lua,
        keys: &[&str],
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let acks = self.inner.replica_acks;
        let synced = script.synced.as_ref().filter(|_| acks > 0);
        let Some(synced) = synced else {
            let mut conn = self.inner.conn.clone();
            let mut invocation = script.script.prepare_invoke();
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
        };
        let wait_ms = self.wait_ms();
        let mut conn = self.writer();
        let (reply, acked) = self
            .call(
                what,
                eval_then_wait(&mut conn, synced, keys, args, acks, wait_ms),
            )
            .await?;
        self.confirmed(what, acked)?;
        Ok(reply)
    }

    /// How long a write waits for its replicas: a third of the command timeout, so that a
    /// replica that does not confirm gets its own message instead of the generic "no answer",
    /// also when a node that lacked the script takes a second pipeline.
    pub(super) fn wait_ms(&self) -> u64 {
        u64::try_from(self.inner.timeout.as_millis() / 3)
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

/// The script's sync variant with `EVALSHA`, then `WAIT acks wait_ms`, in one pipeline: one
/// round trip, and on a cluster both go to the node of the script's key (the pipeline is routed
/// by its one keyed command, so a MOVED or ASK can only be for the script: nothing ran). A node
/// that lacks the script gets the pipeline again with `EVAL` and the script's text. Returns the
/// script's reply and how many replicas confirmed.
///
/// NB: `WAIT` counts the replicas that have this connection's last write. A script that
/// writes nothing (the replay of a step already done, on another connection than the first
/// run) would leave that at an older write, and a `WAIT` would confirm a first run the
/// replicas may still lack. The sync variant's first command writes the slot's sync key, after
/// everything the node did before, so the `WAIT` covers all of it.
async fn eval_then_wait(
    conn: &mut RedisConnection,
    (synced, code): &(Script, String),
    keys: &[&str],
    args: &[String],
    acks: u32,
    wait_ms: u64,
) -> Result<(Vec<String>, u64), RedisError> {
    let Some(first) = keys.first() else {
        return Err(RedisError::from((
            ErrorKind::Client,
            "a script that waits for replicas needs a key",
        )));
    };
    let mut by_text = false;
    loop {
        let mut eval = if by_text {
            let mut c = redis::cmd("EVAL");
            c.arg(code);
            c
        } else {
            let mut c = redis::cmd("EVALSHA");
            c.arg(synced.get_hash());
            c
        };
        eval.arg(keys.len() + 1)
            .arg(keys)
            .arg(format!("{first}{SYNC_SUFFIX}"))
            .arg(args);
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        let (evaluated, acked) = then_wait(conn, pipe, acks, wait_ms).await?;
        match evaluated {
            Err(e) if !by_text && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                by_text = true;
            }
            evaluated => return Ok((redis::from_redis_value(evaluated?)?, acked)),
        }
    }
}

/// Appended to a script's first key: its slot's sync key (same hash tag).
const SYNC_SUFFIX: &str = ":w";

/// The commands of `pipe` then `WAIT acks wait_ms`, in one pipeline on one connection (so the
/// `WAIT` covers their writes): the reply of the first command not ignored, and how many
/// replicas confirmed. A `WAIT` that fails (a node that just became a replica, say) counts as
/// confirmed by none: the write's outcome is then unknown, never corrupt.
pub(super) async fn then_wait(
    conn: &mut RedisConnection,
    mut pipe: redis::Pipeline,
    acks: u32,
    wait_ms: u64,
) -> Result<(redis::RedisResult<Value>, u64), RedisError> {
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
    let acked = waited
        .ok()
        .and_then(|v| redis::from_redis_value::<u64>(v).ok())
        .unwrap_or(0);
    Ok((first, acked))
}
