//! The Lua scripts of the Redis backend, one per state-changing operation (each touches one
//! hash slot), loaded as `redis::Script`s (EVALSHA, reloaded after a Redis restart). The
//! scripts' text lives in `lua/`; `num.lua` (exact decimal arithmetic), `fence.lua` (saga
//! fencing) and `book.lua` (the order book) are prepended to those that need them. [`RedisStore::script`] runs one.
//!
//! May use: the store's own types (its error, the parent's bounded call).

use redis::Script;

use super::RedisStore;
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
    /// Runs `script` on `key` (the one key, so one slot) with `args`, under the command
    /// timeout; the reply is a list of strings.
    pub(super) async fn script(
        &self,
        what: &'static str,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.script_keys(what, script, &[key], args).await
    }

    /// [`RedisStore::script`] on several keys (only `claim`, see `lua/claim.lua`).
    pub(super) async fn script_keys(
        &self,
        what: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a);
        }
        let mut conn = self.inner.conn.clone();
        self.call(
            what,
            async move { invocation.invoke_async(&mut conn).await },
        )
        .await
    }
}
