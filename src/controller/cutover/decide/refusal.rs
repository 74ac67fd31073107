//! The refusal of a cutover that would lose state: where a revision keeps its orders,
//! balances and keys ([`StateHome`]), compared between the active revision and the spec.
//! Pure, like the rest of [`super`].
//!
//! May use: [`crate::rollout`] (the machine's state), [`crate::crd`], [`crate::resources`]
//! (the bundle of a ControllerRevision) and the relayer's config type; not [`super`].

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::ResourceExt;
use relayer::config::RelayerConfig;

use crate::crd::{RelayerDeployment, RolloutStep, StoreSpec};
use crate::resources::{self, LABEL_REVISION};
use crate::rollout::State;

/// Reason of the condition and Event of a cutover the operator will not start.
pub(super) const REFUSED: &str = "CutoverRefused";

/// Where a revision keeps its orders, balances and keys: which Redis and the key prefix there;
/// `None` for memory in each pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StateHome {
    /// What identifies it: host, port and database of the URL (scheme and credentials left
    /// out), or the Secret that holds the URL, with the key prefix.
    at: String,
    /// The URL is in a Secret the operator cannot read: another one may hold the same URL.
    opaque: bool,
    /// How a message names it (never a credential).
    shown: String,
}

impl StateHome {
    /// Whether the two are known to be other state (an opaque one is given the benefit of the
    /// doubt unless both are the same Secret).
    fn differs(&self, other: &StateHome) -> bool {
        self.at != other.at && !self.opaque && !other.opaque
    }
}

/// `redis://user:pw@Host:6379/0?x` → `host:6379/0`: what names one Redis database, with the
/// defaults filled in (port 6379, database 0).
fn redis_identity(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host_port.ends_with(']') => (host, port),
        _ => (host_port, "6379"),
    };
    let db = path.split(['?', '#']).next().unwrap_or_default();
    let db = if db.is_empty() { "0" } else { db };
    format!("{}:{port}/{db}", host.to_ascii_lowercase())
}

fn state_home(store: Option<&StoreSpec>, config: &RelayerConfig) -> Option<StateHome> {
    let prefix = &config.redis.key_prefix;
    let redis = store.and_then(|s| s.redis.as_ref());
    let (at, opaque, shown) = match (redis, &config.redis_url) {
        (Some(r), _) => match (&r.url, &r.url_secret_ref) {
            (Some(url), _) => (redis_identity(url), false, redis_identity(url)),
            (None, Some(s)) => (
                format!("secret:{}/{}", s.name, s.key),
                true,
                format!("the Redis URL in Secret {} (key {})", s.name, s.key),
            ),
            (None, None) => return None,
        },
        // NB: an object written before `spec.store` existed names its Redis in the config
        // (possibly with credentials: only its identity is kept).
        (None, Some(url)) if store.is_none_or(|s| s.memory.is_none()) => {
            (redis_identity(url), false, redis_identity(url))
        }
        _ => return None,
    };
    Some(StateHome {
        at: format!("{at} {prefix}"),
        opaque,
        shown: format!("{shown} (key prefix {prefix:?})"),
    })
}

/// Why the spec's revision is not cut over to, when the cutover would start the new colour on
/// other state than the active colour serves (an in-memory store, or another Redis) and then
/// scale the active colour, and so its state, away, and the spec does not accept that.
pub(super) fn refusal(
    rd: &RelayerDeployment,
    revisions: &[Arc<ControllerRevision>],
    revision: &str,
    state: &State,
) -> Option<String> {
    let r = &state.rollout;
    let would_start = matches!(r.step, RolloutStep::Stable | RolloutStep::Aborted)
        && r.active_revision != revision
        && r.target_revision.as_deref() != Some(revision);
    let spec = &rd.spec;
    if !would_start || spec.accepts_state_loss() {
        return None;
    }
    let new = state_home(spec.store.as_ref(), &spec.config);
    // NB: the active revision's bundle says where the running colour keeps its state; without
    // it (not kept) the spec is all there is to go by.
    let active = revisions
        .iter()
        .find(|cr| cr.labels().get(LABEL_REVISION) == Some(&r.active_revision))
        .and_then(|cr| resources::Bundle::from_revision(cr));
    let old = match &active {
        Some(bundle) => state_home(bundle.store.as_ref(), &bundle.config),
        None => new.clone(),
    };
    let active_colour = state.active;
    let why = match (&old, &new) {
        (Some(old), Some(new)) if !old.differs(new) => return None,
        (_, None) => format!(
            "the store is in memory, so the new colour would start with no orders, balances or \
             API keys and the {active_colour} colour's would be scaled away"
        ),
        (None, Some(new)) => format!(
            "the {active_colour} colour keeps its state in memory: the new colour on {} would \
             start without its orders, balances and API keys, which would be scaled away",
            new.shown
        ),
        (Some(old), Some(new)) => format!(
            "the store moves from {} to {}: the new colour would not see the {active_colour} \
             colour's orders, balances and API keys",
            old.shown, new.shown
        ),
    };
    Some(format!(
        "revision {revision} is not rolled out: {why}; keep spec.store on the state the active \
         colour serves, or set spec.store.acceptStateLoss: true (development installs)"
    ))
}

#[cfg(test)]
mod tests {
    use super::redis_identity;

    #[test]
    fn one_redis_database_has_one_identity_however_its_url_is_written() {
        for (a, b) in [
            ("redis://redis:6379/0", "redis://redis"),
            ("redis://:pw@redis:6379/0", "rediss://Redis:6379/0"),
            ("redis://user:p@ss@redis/0?timeout=1", "redis://redis:6379"),
            ("redis://[::1]", "redis://[::1]:6379/0"),
        ] {
            assert_eq!(redis_identity(a), redis_identity(b), "{a} vs {b}");
        }
        for (a, b) in [
            ("redis://redis:6379/0", "redis://redis:6379/1"),
            ("redis://redis:6379/0", "redis://redis:6380/0"),
            ("redis://a:6379/0", "redis://b:6379/0"),
        ] {
            assert_ne!(redis_identity(a), redis_identity(b), "{a} vs {b}");
        }
        assert!(!redis_identity("redis://:hunter2@redis").contains("hunter2"));
    }
}
