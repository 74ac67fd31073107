//! Writing to the cluster: the top-level [`apply`] of one RelayerDeployment, the server-side
//! apply helpers ([`ensure`], [`remove`], [`delete`], [`prune`] and the pure comparisons
//! [`is_subset`] and [`revisions_to_keep`] behind them), the fenced status write
//! ([`write_status`]) and Kubernetes Events ([`publish`]).
//!
//! Nothing is ever adopted: before a child is written, the existing object of that name (from
//! the cache, else a GET of its metadata) must be absent or controlled by this
//! RelayerDeployment ([`claim`], pure). A name taken by anything else is a
//! [`Error::NameCollision`]: [`apply`] checks every child's name before writing any
//! ([`first_collision`]), [`ensure`] checks again right before its write, and either way the
//! RelayerDeployment is blocked (a `NameCollision` condition, a Warning Event, a requeue with
//! backoff) and no child of it is written. What the operator does not admit (Ingress hosts,
//! Service types: [`Config`](super::Config)) blocks it the same way, as `NotAllowed`.
//!
//! May use: [`super`] (the [`Context`] and [`super::plan`]), [`super::cutover`] (which the
//! valid-spec path hands over to), [`crate::resources`], [`crate::crd`], [`crate::metrics`].

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Context, Trim, cutover};
use crate::crd::{Color, RelayerDeployment};
use crate::resources::status;
use crate::resources::{self, LABEL_CONFIG_HASH, LABEL_INSTANCE, MANAGER, Plan};
use crate::{Error, Result};

/// Whether the spec can be realised; the reason names the field when it cannot.
fn check(rd: &RelayerDeployment) -> Result<(), String> {
    // NB: what the pods run, so a value derived from spec.store or spec.secrets that the
    // relayer would refuse stops here rather than crash-looping a new colour.
    resources::effective_config(rd)
        .validate()
        .map_err(|e| format!("spec.config: {e}"))?;
    resources::container_port(rd).map_err(|e| e.to_string())?;
    resources::check_pod_env(rd)?;
    rd.spec.check_probe_paths()?;
    Ok(())
}

/// Whether the operator admits what the spec asks for (`--ingress-host-pattern`,
/// `--allowed-service-types`); the reason names the field, the value and the allowed set.
fn admitted(rd: &RelayerDeployment, config: &super::Config) -> Result<(), String> {
    resources::check_service_type(rd, &config.allowed_service_types)?;
    resources::check_hosts(rd, &config.ingress_host_patterns)?;
    Ok(())
}

/// Realises one RelayerDeployment: nothing while it is being deleted; a blocked status (and
/// nothing written) when it cannot be realised, asks for what the operator does not admit, or
/// names a child after an object it does not control; otherwise the cutover reconcile
/// ([`super::cutover`]).
pub(crate) async fn apply(rd: &RelayerDeployment, ctx: &Context) -> Result<Action> {
    if rd.metadata.deletion_timestamp.is_some() {
        // NB: the garbage collector is removing the children (foreground deletion waits for
        // it); applying them again would fight it.
        return Ok(Action::await_change());
    }
    let ns = rd.namespace().ok_or(Error::Missing("metadata.namespace"))?;
    let owned = |o: &dyn Owned| o.controlled_by(rd);
    let revisions: Vec<Arc<ControllerRevision>> = ctx
        .stores
        .revisions
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(&ns) && owned(&**r))
        .collect();
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    if let Err(reason) = check(rd) {
        block(ctx, rd, status::INVALID_SPEC, &reason, &now).await?;
        return Ok(Action::await_change());
    }
    if let Err(reason) = admitted(rd, &ctx.config) {
        // NB: a spec change or a restart with other flags is what lifts this; both reconcile.
        block(ctx, rd, status::NOT_ALLOWED, &reason, &now).await?;
        return Ok(Action::await_change());
    }
    let result = match first_collision(ctx, rd, &ns).await? {
        Some(collision) => Err(collision),
        None => cutover::reconcile(rd, ctx, &ns, &revisions, &now).await,
    };
    match result {
        Err(collision @ Error::NameCollision { .. }) => {
            let message = collision.to_string();
            tracing::warn!(name = %rd.name_any(), namespace = %ns, "{message}");
            // NB: the foreign object is not watched (it lacks our labels), so only a requeue
            // notices that its name became free.
            match block(ctx, rd, status::NAME_COLLISION, &message, &now).await? {
                Some(since) => Ok(Action::requeue(blocked_backoff(&since, &now))),
                None => Ok(Action::requeue(Duration::from_millis(50))),
            }
        }
        other => other,
    }
}

/// Writes the blocked status of `rd` for `reason` (a Warning Event the first time it is
/// blocked with that message). Returns since when the status says it is blocked, or `None`
/// when the object changed meanwhile and nothing was written.
async fn block(
    ctx: &Context,
    rd: &RelayerDeployment,
    reason: &str,
    message: &str,
    now: &Time,
) -> Result<Option<Time>> {
    if !status::is_blocked_by(rd, reason, message) {
        publish(ctx, rd, EventType::Warning, reason, message).await;
    }
    let next = status::blocked(rd, reason, message, now);
    let since = next
        .conditions
        .iter()
        .find(|c| c.type_ == status::DEGRADED)
        .map(|c| c.last_transition_time.clone());
    Ok(write_status(ctx, rd, next)
        .await?
        .then_some(since)
        .flatten())
}

/// When to look again at an object blocked since `since`: as long as it has been blocked
/// (so 1 s, 2 s, 4 s, ... like the error backoff), from 1 s up to 5 min. Derived from the
/// condition's `lastTransitionTime`, so it needs no state and survives a restart.
fn blocked_backoff(since: &Time, now: &Time) -> Duration {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);
    let elapsed = now.0.duration_since(since.0);
    Duration::try_from(elapsed)
        .unwrap_or(Duration::ZERO)
        .clamp(MIN, MAX)
}

/// Who holds the name of a child, as far as `rd` (uid `uid`) may write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// No object has the name.
    Free,
    /// The object is controlled by `rd`: it may be written.
    Ours,
    /// Anything else: never written. The phrase says who controls it.
    Foreign(String),
}

/// The claim on a name whose existing object has `existing` metadata, for the RelayerDeployment
/// with `uid`. Only a controller owner reference with that uid makes it ours: neither labels,
/// nor a non-controller reference, nor a name.
pub(crate) fn claim(existing: Option<&ObjectMeta>, uid: Option<&str>) -> Claim {
    let Some(meta) = existing else {
        return Claim::Free;
    };
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(o) if uid.is_some_and(|uid| uid == o.uid) => Claim::Ours,
        Some(o) => Claim::Foreign(format!(
            "is controlled by {} {} (uid {})",
            o.kind, o.name, o.uid
        )),
        None => Claim::Foreign("has no controller".to_owned()),
    }
}

/// The metadata of `ns`/`name` of kind `K`: the cached object's, else (the caches hold only
/// what carries the operator's labels) the API server's; `None` when there is none.
async fn existing_meta<K>(
    ctx: &Context,
    store: &Store<K>,
    ns: &str,
    name: &str,
) -> Result<Option<ObjectMeta>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    if let Some(cached) = store.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(cached.meta().clone()));
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_metadata_opt(name).await?.map(|p| p.metadata))
}

/// [`Error::NameCollision`] when `ns`/`name` of kind `K` exists and is not controlled by the
/// RelayerDeployment with `uid`.
async fn check_claim<K>(
    ctx: &Context,
    store: &Store<K>,
    ns: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let existing = existing_meta(ctx, store, ns, name).await?;
    match claim(existing.as_ref(), uid) {
        Claim::Free | Claim::Ours => Ok(()),
        Claim::Foreign(holder) => Err(Error::NameCollision {
            kind: K::kind(&()).into_owned(),
            name: name.to_owned(),
            holder,
        }),
    }
}

/// The first child of `rd` whose name is taken by an object `rd` does not control, checked
/// before anything is written: the Services, the PDB, the HPA and Ingress when asked for, the
/// spec's ConfigMap and ControllerRevision, the active colour's Deployment, and the other
/// colour's unless `rd` is converged (only a cutover writes it; [`ensure`] checks it then).
/// A converged object's children are all cached, so this sends no request.
async fn first_collision(ctx: &Context, rd: &RelayerDeployment, ns: &str) -> Result<Option<Error>> {
    let s = &ctx.stores;
    let uid = rd.meta().uid.as_deref();
    let name = rd.name_any();
    let revision = resources::revision_hash(rd)?;
    let status = rd.status.as_ref();
    let active = status.and_then(|st| st.active_color).unwrap_or(Color::Blue);
    let converged = status.is_some_and(|st| {
        st.observed_generation == rd.metadata.generation
            && st.current_revision.as_deref() == Some(revision.as_str())
            && st.rollout.as_ref().is_none_or(|r| {
                matches!(
                    r.step,
                    crate::crd::RolloutStep::Stable | crate::crd::RolloutStep::Aborted
                )
            })
    });
    let mut colours = vec![active];
    if !converged {
        colours.push(active.other());
    }
    let checks = async {
        check_claim(ctx, &s.services, ns, &resources::service_name(rd), uid).await?;
        check_claim(
            ctx,
            &s.services,
            ns,
            &resources::preview_service_name(rd),
            uid,
        )
        .await?;
        check_claim(ctx, &s.pdbs, ns, &name, uid).await?;
        if rd.spec.autoscaling.is_some() {
            check_claim(ctx, &s.hpas, ns, &name, uid).await?;
        }
        if rd.spec.ingress.is_some() {
            check_claim(ctx, &s.ingresses, ns, &name, uid).await?;
        }
        let config_map = resources::config_map_name(rd)?;
        check_claim(ctx, &s.config_maps, ns, &config_map, uid).await?;
        let revision_name = resources::controller_revision_name(rd, &revision);
        check_claim(ctx, &s.revisions, ns, &revision_name, uid).await?;
        for colour in colours {
            let deployment = resources::deployment_name(rd, colour);
            check_claim(ctx, &s.deployments, ns, &deployment, uid).await?;
        }
        Ok(())
    };
    match checks.await {
        Ok(()) => Ok(None),
        Err(collision @ Error::NameCollision { .. }) => Ok(Some(collision)),
        Err(error) => Err(error),
    }
}

/// Objects that can say whether a RelayerDeployment controls them.
pub(crate) trait Owned {
    fn controlled_by(&self, rd: &RelayerDeployment) -> bool;
}

impl<K: Resource> Owned for K {
    fn controlled_by(&self, rd: &RelayerDeployment) -> bool {
        let uid = rd.meta().uid.as_deref();
        self.meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
    }
}

/// Server-side applies `desired` unless the cached object already matches it (`desired` as the
/// cache would hold it, [`Trim`]); an existing object of that name not controlled by
/// `desired`'s controller is [`Error::NameCollision`].
pub(crate) async fn ensure<K>(
    ctx: &Context,
    store: &Store<K>,
    desired: &K,
    changed: &mut Vec<String>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Trim
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = desired.name_any();
    let ns = desired
        .namespace()
        .ok_or(Error::Missing("child namespace"))?;
    let desired_json = to_value(desired)?;
    if let Some(observed) = store.get(&ObjectRef::new(&name).within(&ns)) {
        // NB: compared as the cache holds it: what the cache trims is not there to compare.
        let mut cached_desired = desired.clone();
        cached_desired.trim();
        if is_subset(&to_value(&cached_desired)?, &to_value(&*observed)?) {
            return Ok(());
        }
    }
    // NB: `desired` carries the controller reference to its RelayerDeployment; an object of
    // that name controlled by anything else is never written, not even patched.
    let uid = desired
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone());
    check_claim(ctx, store, &ns, &name, uid.as_deref()).await?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired_json),
    )
    .await?;
    let kind = K::kind(&());
    ctx.metrics.child_written(&kind, "apply");
    changed.push(format!("{kind} {name}"));
    Ok(())
}

/// Deletes the child `name` of kind `K` if `rd` controls it.
pub(crate) async fn remove<K>(
    ctx: &Context,
    rd: &RelayerDeployment,
    store: &Store<K>,
    name: &str,
    changed: &mut Vec<String>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let ns = rd.namespace().ok_or(Error::Missing("metadata.namespace"))?;
    let Some(observed) = store.get(&ObjectRef::new(name).within(&ns)) else {
        return Ok(());
    };
    if !observed.controlled_by(rd) {
        return Ok(());
    }
    delete::<K>(ctx, &ns, name).await?;
    changed.push(format!("deleted {} {name}", K::kind(&())));
    Ok(())
}

/// Deletes `ns`/`name` of kind `K` (in the background; an absent object is not an error).
pub(crate) async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    ctx.metrics.child_written(&K::kind(&()), "delete");
    Ok(())
}

/// Which revisions (name, number) to keep: `limit` in all, counting the current one; the
/// current revision and every revision a colour runs are always kept, the newest others fill
/// the remaining places.
fn revisions_to_keep(
    revisions: &[(String, i64)],
    current: &str,
    used: &[String],
    limit: usize,
) -> Vec<String> {
    let mut keep: Vec<String> = revisions
        .iter()
        .filter(|(name, _)| name == current || used.contains(name))
        .map(|(name, _)| name.clone())
        .collect();
    let mut others: Vec<&(String, i64)> = revisions
        .iter()
        .filter(|(name, _)| !keep.contains(name))
        .collect();
    others.sort_by_key(|(_, number)| std::cmp::Reverse(*number));
    for (name, _) in others {
        if keep.len() >= limit {
            break;
        }
        keep.push(name.clone());
    }
    keep
}

/// Keeps the newest `revisionHistoryLimit` ControllerRevisions (always the planned one) and
/// the ConfigMaps they name; deletes the rest.
pub(crate) async fn prune(
    ctx: &Context,
    rd: &RelayerDeployment,
    plan: &Plan,
    revisions: &[Arc<ControllerRevision>],
    in_use: &[String],
    changed: &mut Vec<String>,
) -> Result<()> {
    let ns = rd.namespace().ok_or(Error::Missing("metadata.namespace"))?;
    let current = resources::controller_revision_name(rd, &plan.revision);
    let used: Vec<String> = in_use
        .iter()
        .map(|r| resources::controller_revision_name(rd, r))
        .collect();
    let limit = usize::try_from(rd.spec.revision_history_limit.max(1)).unwrap_or(1);
    let listed: Vec<(String, i64)> = revisions
        .iter()
        .map(|r| (r.name_any(), r.revision.unwrap_or(0)))
        .collect();
    let kept_names = revisions_to_keep(&listed, &current, &used, limit);
    let (keep, drop_): (Vec<&Arc<ControllerRevision>>, Vec<&Arc<ControllerRevision>>) = revisions
        .iter()
        .partition(|r| kept_names.contains(&r.name_any()));
    for r in drop_ {
        delete::<ControllerRevision>(ctx, &ns, &r.name_any()).await?;
        changed.push(format!("pruned ControllerRevision {}", r.name_any()));
    }
    let mut kept_maps: Vec<String> = keep
        .iter()
        .filter_map(|r| r.data.0.get("configMap")?.as_str().map(str::to_owned))
        .collect();
    kept_maps.push(resources::config_map_name(rd)?);
    let instance = rd.name_any();
    let stale: Vec<String> = ctx
        .stores
        .config_maps
        .state()
        .into_iter()
        .filter(|cm| {
            cm.namespace().as_deref() == Some(&ns)
                && cm.labels().get(LABEL_INSTANCE) == Some(&instance)
                && cm.labels().contains_key(LABEL_CONFIG_HASH)
                && cm.controlled_by(rd)
                && !kept_maps.contains(&cm.name_any())
        })
        .map(|cm| cm.name_any())
        .collect();
    for name in stale {
        delete::<ConfigMap>(ctx, &ns, &name).await?;
        changed.push(format!("pruned ConfigMap {name}"));
    }
    Ok(())
}

/// Writes `next` as the status (server-side apply) unless it is already the status. The apply
/// carries the `resourceVersion` the decision was based on: `false` when the object changed
/// meanwhile (a newer write, or another leader), and nothing was written.
pub(crate) async fn write_status(
    ctx: &Context,
    rd: &RelayerDeployment,
    next: crate::crd::RelayerDeploymentStatus,
) -> Result<bool> {
    Ok(write_status_returning(ctx, rd, next).await?.is_some())
}

/// [`write_status`], returning the object as written (`rd` itself when nothing changed), or
/// `None` when the object changed meanwhile and nothing was written.
pub(crate) async fn write_status_returning(
    ctx: &Context,
    rd: &RelayerDeployment,
    next: crate::crd::RelayerDeploymentStatus,
) -> Result<Option<RelayerDeployment>> {
    if rd.status.as_ref() == Some(&next) {
        return Ok(Some(rd.clone()));
    }
    let ns = rd.namespace().ok_or(Error::Missing("metadata.namespace"))?;
    let api: Api<RelayerDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": RelayerDeployment::api_version(&()),
        "kind": RelayerDeployment::kind(&()),
        "metadata": { "resourceVersion": rd.resource_version() },
        "status": next,
    });
    let written = match api
        .patch_status(
            &rd.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(written) => written,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::debug!(name = %rd.name_any(), "status changed meanwhile; reconciling again");
            return Ok(None);
        }
        Err(error) => return Err(error.into()),
    };
    ctx.metrics.status_writes.inc();
    Ok(Some(written))
}

/// Publishes a Kubernetes Event about `rd` (best effort; the note is cut to 1024 characters).
pub(crate) async fn publish(
    ctx: &Context,
    rd: &RelayerDeployment,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let reference: ObjectReference = rd.object_ref(&());
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    // NB: an Event is best effort; failing to record one must not fail the reconcile.
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(%error, name = %rd.name_any(), "publishing an event");
    }
}

fn to_value<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|source| Error::Render {
        what: "child object",
        source,
    })
}

/// Whether every field set in `desired` has the same value in `observed`. Fields the API
/// server or other managers added are ignored; lists must match element by element. Empty
/// lists and maps equal absent ones (the API server drops them).
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(k, v)| match have.get(k) {
            Some(h) => is_subset(v, h),
            None => is_empty(v),
        }),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (Value::Number(w), Value::Number(h)) => w.as_f64() == h.as_f64(),
        (Value::Null, _) => true,
        (w, Value::Null) => is_empty(w),
        (w, h) => w == h,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::{Claim, blocked_backoff, claim, is_subset, revisions_to_keep};

    fn meta(owners: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({"name": "payments", "ownerReferences": owners}))
            .expect("metadata")
    }

    fn owner(kind: &str, uid: &str, controller: Option<bool>) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": kind, "name": "x", "uid": uid,
            "controller": controller})
    }

    #[test]
    fn only_a_controller_reference_with_the_rds_uid_makes_an_object_ours() {
        let uid = Some("rd-uid");
        assert_eq!(claim(None, uid), Claim::Free);
        let ours = meta(json!([owner("RelayerDeployment", "rd-uid", Some(true))]));
        assert_eq!(claim(Some(&ours), uid), Claim::Ours);
        let unowned = meta(json!([]));
        assert_eq!(
            claim(Some(&unowned), uid),
            Claim::Foreign("has no controller".into())
        );
        // A reference without `controller` (what `kubectl` users add by hand) adopts nothing.
        let referenced = meta(json!([owner("RelayerDeployment", "rd-uid", None)]));
        assert_eq!(
            claim(Some(&referenced), uid),
            Claim::Foreign("has no controller".into())
        );
        let other_rd = meta(json!([owner("RelayerDeployment", "old-uid", Some(true))]));
        assert_eq!(
            claim(Some(&other_rd), uid),
            Claim::Foreign("is controlled by RelayerDeployment x (uid old-uid)".into())
        );
        let both = meta(json!([
            owner("RelayerDeployment", "rd-uid", Some(false)),
            owner("Application", "app-uid", Some(true)),
        ]));
        assert!(matches!(claim(Some(&both), uid), Claim::Foreign(h) if h.contains("Application")));
        assert!(
            matches!(claim(Some(&ours), None), Claim::Foreign(_)),
            "an object without a uid owns nothing"
        );
    }

    #[test]
    fn a_blocked_object_is_looked_at_again_as_long_as_it_has_been_blocked() {
        let at = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("time"));
        assert_eq!(blocked_backoff(&at(100), &at(100)), Duration::from_secs(1));
        assert_eq!(blocked_backoff(&at(100), &at(104)), Duration::from_secs(4));
        assert_eq!(
            blocked_backoff(&at(100), &at(100_000)),
            Duration::from_secs(300)
        );
        assert_eq!(
            blocked_backoff(&at(100), &at(50)),
            Duration::from_secs(1),
            "a clock behind the condition"
        );
    }

    #[test]
    fn server_defaults_are_ignored_but_edits_are_seen() {
        let desired = json!({"spec": {"replicas": 3, "ports": [{"port": 80}], "labels": {}}});
        let observed = json!({"spec": {"replicas": 3, "ports": [{"port": 80, "protocol": "TCP"}],
            "clusterIP": "10.0.0.1"}, "status": {}});
        assert!(is_subset(&desired, &observed));
        let edited = json!({"spec": {"replicas": 5, "ports": [{"port": 80}]}});
        assert!(!is_subset(&desired, &edited));
        let extra_port = json!({"spec": {"replicas": 3, "ports": [{"port": 80}, {"port": 81}]}});
        assert!(!is_subset(&desired, &extra_port));
        assert!(!is_subset(&json!({"a": 1}), &json!({})));
        assert!(is_subset(&json!({"a": 1}), &json!({"a": 1.0})));
    }

    fn revs(n: i64) -> Vec<(String, i64)> {
        (1..=n).map(|i| (format!("r{i}"), i)).collect()
    }

    #[test]
    fn the_limit_counts_the_current_revision() {
        // Limit 2: the current one and the newest other, so a rollback to "previous" works.
        let mut kept = revisions_to_keep(&revs(4), "r4", &[], 2);
        kept.sort();
        assert_eq!(kept, vec!["r3", "r4"]);
        assert_eq!(revisions_to_keep(&revs(4), "r4", &[], 1), vec!["r4"]);
    }

    #[test]
    fn revisions_in_use_are_kept_even_beyond_the_limit() {
        // After a rollback the current revision is an old one and a colour still runs r4.
        let mut kept = revisions_to_keep(&revs(4), "r2", &["r4".to_owned()], 2);
        kept.sort();
        assert_eq!(kept, vec!["r2", "r4"]);
        let mut kept = revisions_to_keep(&revs(4), "r2", &[], 3);
        kept.sort();
        assert_eq!(kept, vec!["r2", "r3", "r4"]);
    }
}
