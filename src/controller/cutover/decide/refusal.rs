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

/// Where a revision keeps its orders, balances and keys: which Redis (its address, or the
/// Secret holding it) and the key prefix there; `None` for memory in each pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StateHome {
    /// What identifies it (compared).
    at: String,
    /// How a message names it (never a credential).
    shown: String,
}

fn state_home(store: Option<&StoreSpec>, config: &RelayerConfig) -> Option<StateHome> {
    let prefix = &config.redis.key_prefix;
    let redis = store.and_then(|s| s.redis.as_ref());
    let (at, shown) = match (redis, &config.redis_url) {
        (Some(r), _) => match (&r.url, &r.url_secret_ref) {
            (Some(url), _) => (url.clone(), url.clone()),
            (None, Some(s)) => (
                format!("secret:{}/{}", s.name, s.key),
                format!("the Redis URL in Secret {} (key {})", s.name, s.key),
            ),
            (None, None) => return None,
        },
        // NB: an object written before `spec.store` existed names its Redis in the config.
        (None, Some(url)) if store.is_none_or(|s| s.memory.is_none()) => {
            (url.clone(), "config.redisUrl".to_owned())
        }
        _ => return None,
    };
    Some(StateHome {
        at: format!("{at} {prefix}"),
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
        (Some(old), Some(new)) if old == new => return None,
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
