//! The controller: kube-runtime wiring, the shared [`State`], the per-reconcile [`Context`],
//! reconcile and error policy, and Lease-based leader election ([`leader`]).
//!
//! Reconcile is level-triggered and idempotent: it plans (pure, [`crate::resources`]), compares
//! each desired child with the cached observed one, and server-side applies only what differs.
//! A resync of a converged RelayerDeployment therefore sends no request at all. The rollout
//! state machine of the next issue replaces [`plan`]'s fixed active colour.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::crd::{Color, RelayerDeployment, RevisionRecord};
use crate::metrics::Metrics;
use crate::resources::status::{self, Observed};
use crate::resources::{self, LABEL_CONFIG_HASH, LABEL_INSTANCE, LABEL_REVISION, MANAGER, Plan};
use crate::{Error, Result};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespace to watch; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Period of the resync of a converged object (a safety net: watches carry every change).
    pub resync: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Networks of pod addresses the operator may contact (gate scrapes, probe load, drain
    /// evidence). NB: empty by default, so that a library user contacts no pod unless told
    /// to; the binary's `--pod-networks` defaults to every address.
    pub pod_networks: Vec<Network>,
}

/// An IP network (`10.244.0.0/16`), for [`Config::pod_networks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or(format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Self { addr, prefix })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            // NB: five minutes, like controller-runtime's default; drift arrives by watch anyway.
            resync: Duration::from_secs(300),
            concurrency: 4,
            pod_networks: Vec::new(),
        }
    }
}

/// Backoff after a failed reconcile: 1 s doubling per consecutive failure, capped at 5 min.
pub fn backoff_delay(failures: u32) -> Duration {
    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(300);
    BASE.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(CAP)
}

/// Caches of the children, filled by the same watches that trigger reconciles.
#[derive(Clone)]
pub struct Stores {
    /// Deployments managed by the operator.
    pub deployments: Store<Deployment>,
    /// Services.
    pub services: Store<Service>,
    /// ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// HorizontalPodAutoscalers.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// Ingresses.
    pub ingresses: Store<Ingress>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
    /// ControllerRevisions.
    pub revisions: Store<ControllerRevision>,
    /// Relayer pods (for gate targets and drain evidence).
    pub pods: Store<Pod>,
    /// EndpointSlices of the Services (for drain evidence).
    pub slices: Store<EndpointSlice>,
}

impl Stores {
    async fn wait_until_ready(&self) -> bool {
        let all = future::join_all([
            boxed_ready(&self.deployments),
            boxed_ready(&self.services),
            boxed_ready(&self.config_maps),
            boxed_ready(&self.hpas),
            boxed_ready(&self.ingresses),
            boxed_ready(&self.pdbs),
            boxed_ready(&self.revisions),
            boxed_ready(&self.pods),
            boxed_ready(&self.slices),
        ]);
        tokio::time::timeout(CACHE_SYNC_TIMEOUT, all)
            .await
            .is_ok_and(|results| results.into_iter().all(|ok| ok))
    }
}

/// Upper bound for the first list of every child kind.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

fn boxed_ready<K>(store: &Store<K>) -> futures::future::BoxFuture<'static, bool>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let store = store.clone();
    Box::pin(async move { store.wait_until_ready().await.is_ok() })
}

/// Everything a reconcile needs. Built once per controller run; shared by all reconciles.
pub struct Context {
    /// Client with the operator's identity.
    pub client: Client,
    /// Caches of the children.
    pub stores: Stores,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for the error backoff.
    pub failures: Mutex<HashMap<ObjectRef<RelayerDeployment>, u32>>,
    /// How the controller runs.
    pub config: Config,
    /// The gate running per object (at most one: a cutover has one step at a time).
    pub gates: Mutex<HashMap<ObjectRef<RelayerDeployment>, cutover::ActiveGate>>,
    /// Objects reconciled since this process started (the first reconcile is a restart).
    pub seen: Mutex<HashSet<ObjectRef<RelayerDeployment>>>,
    /// Wakes the reconcile of an object (a gate took a sample).
    pub wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<RelayerDeployment>>,
}

impl Context {
    fn record_failure(&self, obj: ObjectRef<RelayerDeployment>) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(obj).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn clear_failures(&self, obj: &ObjectRef<RelayerDeployment>) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(obj);
    }
}

/// A label-selected, managed-fields-free watch of one child kind, reflected into a store.
fn child_stream<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(
        api,
        watcher::Config::default().labels(resources::MANAGED_SELECTOR),
    )
    .default_backoff()
    // NB: managed fields are never compared and are most of an object's bytes.
    .modify(|o: &mut K| o.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects();
    (reader, stream)
}

/// Runs the controller until `shutdown` completes. Call it only while leading.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = config.namespace.as_deref();
    let rds: Api<RelayerDeployment> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (deployments, deployment_stream) = child_stream::<Deployment>(&client, ns);
    let (services, service_stream) = child_stream::<Service>(&client, ns);
    let (config_maps, config_map_stream) = child_stream::<ConfigMap>(&client, ns);
    let (hpas, hpa_stream) = child_stream::<HorizontalPodAutoscaler>(&client, ns);
    let (ingresses, ingress_stream) = child_stream::<Ingress>(&client, ns);
    let (pdbs, pdb_stream) = child_stream::<PodDisruptionBudget>(&client, ns);
    let (revisions, revision_stream) = child_stream::<ControllerRevision>(&client, ns);
    let (pods, pod_stream) = child_stream::<Pod>(&client, ns);
    let (slices, slice_stream) = child_stream::<EndpointSlice>(&client, ns);
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), Reporter::from(MANAGER)),
        client,
        stores: Stores {
            deployments,
            services,
            config_maps,
            hpas,
            ingresses,
            pdbs,
            revisions,
            pods,
            slices,
        },
        metrics,
        failures: Mutex::new(HashMap::new()),
        config: config.clone(),
        gates: Mutex::new(HashMap::new()),
        seen: Mutex::new(HashSet::new()),
        wake,
    });
    let controller_config =
        kube::runtime::controller::Config::default().concurrency(config.concurrency);
    Controller::new(rds, watcher::Config::default().any_semantic())
        .with_config(controller_config)
        .owns_stream(deployment_stream)
        .owns_stream(service_stream)
        .owns_stream(config_map_stream)
        .owns_stream(hpa_stream)
        .owns_stream(ingress_stream)
        .owns_stream(pdb_stream)
        .owns_stream(revision_stream)
        // NB: pods and EndpointSlices are not owned by the RelayerDeployment (ReplicaSets and
        // Services own them); their instance label names it.
        .watches_stream(pod_stream, instance_of)
        .watches_stream(slice_stream, instance_of)
        .reconcile_on(tokio_stream_of(woken))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(name = %obj.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile not run"),
            }
        })
        .await;
}

/// The RelayerDeployment an object belongs to, by its instance label.
fn instance_of<K: Resource>(obj: K) -> Option<ObjectRef<RelayerDeployment>> {
    let name = obj.labels().get(LABEL_INSTANCE)?.clone();
    let ns = obj.namespace()?;
    Some(ObjectRef::new(&name).within(&ns))
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Reconciles one RelayerDeployment.
pub async fn reconcile(rd: Arc<RelayerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    if !ctx.stores.wait_until_ready().await {
        tracing::warn!("child caches are not synced yet; retrying");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let action = apply(&rd, &ctx).await?;
    ctx.clear_failures(&ObjectRef::from_obj(&*rd));
    Ok(action)
}

/// Logs, counts and backs off per object.
pub fn error_policy(rd: Arc<RelayerDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let failures = ctx.record_failure(ObjectRef::from_obj(&*rd));
    let delay = backoff_delay(failures);
    tracing::warn!(%error, name = %rd.name_any(), failures, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The spec's revision and its ordinal (the colours and sizes come from the rollout state; see
/// [`crate::cutover`]). `active` is the colour status says is active (blue for a new object).
pub fn plan(rd: &RelayerDeployment, known: &[Arc<ControllerRevision>]) -> Result<Plan> {
    let active = rd
        .status
        .as_ref()
        .and_then(|s| s.active_color)
        .unwrap_or(Color::Blue);
    let revision = resources::revision_hash(rd)?;
    let name = resources::controller_revision_name(rd, &revision);
    let revision_number = match known.iter().find(|r| r.name_any() == name) {
        Some(existing) => existing.revision.unwrap_or(1),
        None => known.iter().filter_map(|r| r.revision).max().unwrap_or(0) + 1,
    };
    Ok(Plan {
        active,
        revision,
        revision_number,
    })
}

/// Whether the spec can be realised; the reason names the field when it cannot.
fn check(rd: &RelayerDeployment) -> Result<(), String> {
    rd.spec
        .config
        .validate()
        .map_err(|e| format!("spec.config: {e}"))?;
    resources::container_port(rd).map_err(|e| e.to_string())?;
    Ok(())
}

async fn apply(rd: &RelayerDeployment, ctx: &Context) -> Result<Action> {
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
        let observed = Observed {
            deployment: None,
            invalid: Some(&reason),
        };
        let history = history(&revisions);
        let next = status::status(rd, None, observed, history, &now);
        let was_invalid = rd.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == status::DEGRADED && c.reason == "InvalidSpec")
        });
        if !was_invalid {
            publish(ctx, rd, EventType::Warning, "InvalidSpec", &reason).await;
        }
        write_status(ctx, rd, next).await?;
        return Ok(Action::await_change());
    }

    cutover::reconcile(rd, ctx, &ns, &revisions, &now).await
}

/// Revision records of the known ControllerRevisions, newest first.
pub(crate) fn history(revisions: &[Arc<ControllerRevision>]) -> Vec<RevisionRecord> {
    let mut records: Vec<RevisionRecord> = revisions
        .iter()
        .filter_map(|r| {
            Some(RevisionRecord {
                revision: r.labels().get(LABEL_REVISION)?.clone(),
                number: r.revision.unwrap_or(0),
                image: r.data.0.get("image")?.as_str()?.to_owned(),
            })
        })
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.number));
    records
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

/// Server-side applies `desired` unless the cached object already matches it.
pub(crate) async fn ensure<K>(
    ctx: &Context,
    store: &Store<K>,
    desired: &K,
    changed: &mut Vec<String>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
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
    if let Some(observed) = store.get(&ObjectRef::new(&name).within(&ns))
        && is_subset(&desired_json, &to_value(&*observed)?)
    {
        return Ok(());
    }
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
    if rd.status.as_ref() == Some(&next) {
        return Ok(true);
    }
    let ns = rd.namespace().ok_or(Error::Missing("metadata.namespace"))?;
    let api: Api<RelayerDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": RelayerDeployment::api_version(&()),
        "kind": RelayerDeployment::kind(&()),
        "metadata": { "resourceVersion": rd.resource_version() },
        "status": next,
    });
    match api
        .patch_status(
            &rd.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::debug!(name = %rd.name_any(), "status changed meanwhile; reconciling again");
            return Ok(false);
        }
        Err(error) => return Err(error.into()),
    }
    ctx.metrics.status_writes.inc();
    Ok(true)
}

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

pub mod cutover;

pub mod leader {
    //! Lease-based leader election (`coordination.k8s.io/v1`), after client-go's: a candidate
    //! takes the Lease when its holder has not renewed it for `leaseDurationSeconds` of the
    //! candidate's own clock (never comparing clocks across machines), and every write is a
    //! `replace` with the observed `resourceVersion`, so two candidates cannot both win.
    //! kube 5 has no leader election of its own.

    use std::time::{Duration, Instant};

    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::{Api, ObjectMeta, PostParams};
    use tokio::sync::watch;

    use crate::Result;

    /// Timing of the election.
    #[derive(Debug, Clone, Copy)]
    pub struct Timing {
        /// A holder that has not renewed for this long may be replaced.
        pub lease_duration: Duration,
        /// A leader that could not renew for this long steps down (less than the duration,
        /// so it stops acting before anyone may take over).
        pub renew_deadline: Duration,
        /// Pause between attempts to acquire or renew.
        pub retry_period: Duration,
    }

    impl Timing {
        /// client-go's proportions: renew deadline 2/3 and retry period 1/5 of the duration.
        pub fn from_lease_duration(lease_duration: Duration) -> Self {
            Self {
                lease_duration,
                renew_deadline: lease_duration * 2 / 3,
                retry_period: lease_duration / 5,
            }
        }
    }

    /// What a candidate does after reading the Lease.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Decision {
        /// No Lease exists: create it holding it.
        Create,
        /// Someone else holds a live Lease: wait.
        Wait,
        /// Take the Lease over (free, released or expired).
        Take,
        /// We hold it: renew.
        Renew,
    }

    /// The decision for `me`, given the Lease's holder and when this candidate last saw the
    /// Lease's record change.
    pub fn decide(
        me: &str,
        lease: Option<&LeaseSpec>,
        last_change: Instant,
        now: Instant,
        lease_duration: Duration,
    ) -> Decision {
        let Some(spec) = lease else {
            return Decision::Create;
        };
        match spec.holder_identity.as_deref() {
            Some(holder) if holder == me => Decision::Renew,
            None | Some("") => Decision::Take,
            Some(_) if now.duration_since(last_change) >= lease_duration => Decision::Take,
            Some(_) => Decision::Wait,
        }
    }

    /// A candidate for the Lease `name`.
    pub struct Elector {
        api: Api<Lease>,
        name: String,
        identity: String,
        timing: Timing,
        /// The Lease's record as last seen, and when this candidate first saw it that way.
        observed: Option<(LeaseSpec, Instant)>,
    }

    impl Elector {
        /// A candidate called `identity` for the Lease `api`/`name`.
        pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
            Self {
                api,
                name: name.to_owned(),
                identity: identity.to_owned(),
                timing,
                observed: None,
            }
        }

        /// One attempt to acquire or renew; `true` when we hold the Lease afterwards.
        pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let duration_secs = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(15);
            let mine = |acquire: MicroTime, transitions: i32| LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(acquire),
                renew_time: Some(now.clone()),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            };
            let current = self.api.get_opt(&self.name).await?;
            let spec = current.as_ref().and_then(|l| l.spec.clone());
            let record_changed = match (&self.observed, &spec) {
                (Some((seen, _)), Some(spec)) => seen != spec,
                _ => true,
            };
            if record_changed {
                self.observed = spec.clone().map(|s| (s, Instant::now()));
            }
            let last_change = self
                .observed
                .as_ref()
                .map_or_else(Instant::now, |(_, at)| *at);
            let decision = decide(
                &self.identity,
                spec.as_ref(),
                last_change,
                Instant::now(),
                self.timing.lease_duration,
            );
            let result = match (decision, current) {
                (Decision::Wait, _) => return Ok(false),
                (Decision::Create, _) | (_, None) => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(mine(now.clone(), 0)),
                    };
                    self.api.create(&PostParams::default(), &lease).await
                }
                (decision, Some(mut lease)) => {
                    let old = lease.spec.clone().unwrap_or_default();
                    let transitions = old.lease_transitions.unwrap_or(0);
                    lease.spec = Some(if decision == Decision::Renew {
                        mine(old.acquire_time.unwrap_or(now.clone()), transitions)
                    } else {
                        mine(now.clone(), transitions.saturating_add(1))
                    });
                    // NB: `replace` carries the resourceVersion we read: a concurrent writer
                    // makes this fail with 409 instead of both of us winning.
                    self.api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await
                }
            };
            match result {
                Ok(lease) => {
                    if let Some(spec) = lease.spec {
                        self.observed = Some((spec, Instant::now()));
                    }
                    Ok(true)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error.into()),
            }
        }

        /// Waits until this candidate holds the Lease.
        pub async fn acquire(&mut self) {
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "acquiring the leader lease"),
                }
                tokio::time::sleep(self.timing.retry_period).await;
            }
        }

        /// Renews the Lease until renewal fails for `renew_deadline` (then sends `false` on
        /// `leading` and returns) or `leading` has no receivers left.
        pub async fn keep_renewing(&mut self, leading: watch::Sender<bool>) {
            let mut last_renew = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(self.timing.retry_period) => {}
                    () = leading.closed() => return,
                }
                let attempt =
                    tokio::time::timeout(self.timing.renew_deadline, self.try_acquire_or_renew())
                        .await;
                match attempt {
                    Ok(Ok(true)) => last_renew = Instant::now(),
                    Ok(Ok(false)) => {
                        tracing::warn!("the leader lease was taken by another instance");
                        let _ = leading.send(false);
                        return;
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "renewing the leader lease"),
                    Err(_) => tracing::warn!("renewing the leader lease timed out"),
                }
                if last_renew.elapsed() >= self.timing.renew_deadline {
                    tracing::warn!("could not renew the leader lease in time; stepping down");
                    let _ = leading.send(false);
                    return;
                }
            }
        }

        /// Gives the Lease up so a standby takes over at once (on graceful shutdown).
        pub async fn release(&mut self) -> Result<()> {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let held = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str());
            if !held {
                return Ok(());
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
            }
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn held_by(holder: &str) -> LeaseSpec {
            LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                ..LeaseSpec::default()
            }
        }

        #[test]
        fn a_missing_lease_is_created_and_a_free_one_taken() {
            let t = Instant::now();
            let d = Duration::from_secs(15);
            assert_eq!(decide("a", None, t, t, d), Decision::Create);
            assert_eq!(
                decide("a", Some(&LeaseSpec::default()), t, t, d),
                Decision::Take
            );
        }

        #[test]
        fn a_live_lease_of_another_is_respected_until_it_stops_changing_for_the_duration() {
            let t = Instant::now();
            let d = Duration::from_secs(15);
            let lease = held_by("b");
            assert_eq!(
                decide("a", Some(&lease), t, t + Duration::from_secs(14), d),
                Decision::Wait
            );
            assert_eq!(decide("a", Some(&lease), t, t + d, d), Decision::Take);
            assert_eq!(decide("b", Some(&lease), t, t + d * 10, d), Decision::Renew);
        }

        #[test]
        fn timing_steps_down_before_anyone_may_take_over() {
            let timing = Timing::from_lease_duration(Duration::from_secs(15));
            assert!(timing.renew_deadline < timing.lease_duration);
            assert!(timing.retry_period < timing.renew_deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_five_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(4), Duration::from_secs(8));
        assert_eq!(backoff_delay(30), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
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

    #[test]
    fn plan_keeps_the_active_colour_and_numbers_new_revisions_after_the_newest() {
        let rd = crate::resources::fixtures::rd();
        let first = plan(&rd, &[]).expect("plan");
        assert_eq!(first.active, Color::Blue);
        assert_eq!(first.revision_number, 1);
        let old: ControllerRevision = serde_json::from_value(json!({
            "metadata": {"name": "market-0000000000"}, "data": {}, "revision": 7,
        }))
        .expect("revision");
        let next = plan(&rd, &[Arc::new(old)]).expect("plan");
        assert_eq!(next.revision_number, 8);
        let same: ControllerRevision = serde_json::from_value(json!({
            "metadata": {"name": format!("market-{}", first.revision)}, "data": {}, "revision": 3,
        }))
        .expect("revision");
        assert_eq!(
            plan(&rd, &[Arc::new(same)]).expect("plan").revision_number,
            3
        );
    }
}

#[cfg(test)]
mod prune_tests {
    use super::revisions_to_keep;

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
