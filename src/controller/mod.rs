//! The controller: kube-runtime wiring ([`run`]), the caches of the children ([`Stores`]; what
//! they keep of each kind is in [`cache`]), the per-controller [`Context`] with its per-object
//! state ([`Failures`], [`Seen`], [`GateRuns`]), and [`reconcile`] / [`error_policy`].
//!
//! Reconcile is level-triggered and idempotent: it plans ([`plan`], [`crate::resources`]),
//! decides the cutover step ([`cutover`], around the pure [`crate::rollout`] machine), and
//! server-side applies only the children that differ from the cached ones (the private
//! `apply` module: apply, SSA helpers, prune, the status write, Events). A resync of a
//! converged RelayerDeployment therefore sends no request at all.
//! Lease-based leader election lives in [`leader`].
//!
//! With traces on (`relayer::otel`), each reconcile is a span (the RelayerDeployment and its
//! revision as attributes) and each cutover step it acts on a span below it.
//!
//! May use: every room of the crate ([`crate::crd`], [`crate::resources`], [`crate::rollout`],
//! [`crate::gates`], [`crate::metrics`]), `relayer::resilience::backoff` and `relayer::otel`;
//! nothing uses it but
//! `main.rs` and the integration tests.

mod apply;
pub mod cache;
pub mod cutover;
mod gate_runs;
pub mod leader;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt, future};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use relayer::resilience::backoff::RetryPolicy;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

pub use apply::is_subset;
pub use cache::Trim;
pub use gate_runs::{GateRuns, RunningGate};

use crate::crd::{Color, RelayerDeployment};
use crate::metrics::Metrics;
use crate::resources::{self, LABEL_INSTANCE, MANAGER, Plan};
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
    /// Networks of addresses a gate's webhooks may be at (`--webhook-networks`). NB: empty by
    /// default, so a library user calls no webhook unless told to.
    pub webhook_networks: Vec<Network>,
    /// Exchanges with pods (scrapes, drain evidence; probes have a pool of their own) in
    /// flight at once, across every gate of the process (`--max-pod-requests`).
    pub max_pod_requests: usize,
    /// Hosts an RD's Ingress may use (`--ingress-host-pattern`); empty: any host.
    pub ingress_host_patterns: Vec<resources::HostPattern>,
    /// Types `spec.service.type` may take (`--allowed-service-types`); by default ClusterIP
    /// and NodePort ([`resources::DEFAULT_SERVICE_TYPES`]).
    pub allowed_service_types: Vec<crate::crd::ServiceType>,
}

/// An IP network (`10.244.0.0/16`, `fd00::/64`), for [`Config::pod_networks`]. Host bits may
/// be set (`10.244.1.5/16` is `10.244.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(ipnet::IpNet);

impl Network {
    /// Whether `ip` is inside this network (never for an address of the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    // NB: the address and the prefix are read apart so that each mistake gets its own message;
    // ipnet's own error is a bare "invalid IP address syntax".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or(format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let net = ipnet::IpNet::new(addr, prefix)
            .map_err(|_| format!("{s:?}: prefix longer than {max}"))?;
        Ok(Self(net))
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
            webhook_networks: Vec::new(),
            max_pod_requests: crate::gates::runner::DEFAULT_MAX_REQUESTS,
            ingress_host_patterns: Vec::new(),
            allowed_service_types: resources::DEFAULT_SERVICE_TYPES.to_vec(),
        }
    }
}

/// The requeue schedule after failed reconciles: 1 s doubling per consecutive failure, capped
/// at 5 min (no jitter: one object's retries need no spreading).
const REQUEUE_BACKOFF: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    initial_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(300),
    backoff_multiplier: 2.0,
    jitter: false,
};

/// Backoff after a failed reconcile: 1 s doubling per consecutive failure, capped at 5 min.
pub fn backoff_delay(failures: u32) -> Duration {
    REQUEUE_BACKOFF.bound(failures.saturating_sub(1))
}

/// Caches of the children, filled by the same watches that trigger reconciles, each object
/// trimmed as [`Trim`] says for its kind (no managed fields anywhere; pods, ReplicaSets and
/// ControllerRevisions keep only what the controller reads of them).
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
    /// ControllerRevisions, without `data.template`.
    pub revisions: Store<ControllerRevision>,
    /// Relayer pods (for gate targets and drain evidence): metadata, `status.podIP` and
    /// `status.conditions` only.
    pub pods: Store<Pod>,
    /// The colours' ReplicaSets (a pod is a target only when its ReplicaSet is a colour's):
    /// without their pod template and status.
    pub replica_sets: Store<ReplicaSet>,
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
            boxed_ready(&self.replica_sets),
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
    pub failures: Failures,
    /// How the controller runs.
    pub config: Config,
    /// The gate running per object (at most one: a cutover has one step at a time).
    pub gates: GateRuns,
    /// Objects reconciled since this process started (the first reconcile is a restart).
    pub seen: Seen,
    /// Wakes the reconcile of an object (a gate took a sample).
    pub wake: tokio::sync::mpsc::UnboundedSender<ObjectRef<RelayerDeployment>>,
    /// The process-wide budget of exchanges with pods, shared by every gate and drain.
    pub pod_requests: crate::gates::runner::Budget,
}

/// Consecutive failed reconciles per object, for [`backoff_delay`].
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<ObjectRef<RelayerDeployment>, u32>>);

impl Failures {
    /// Counts one more failure of `obj`; returns how many in a row it has now.
    pub fn record(&self, obj: ObjectRef<RelayerDeployment>) -> u32 {
        let mut failures = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(obj).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// `obj` reconciled: its next failure is the first again.
    pub fn clear(&self, obj: &ObjectRef<RelayerDeployment>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(obj);
    }
}

/// Objects reconciled since this process started.
#[derive(Debug, Default)]
pub struct Seen(Mutex<HashSet<ObjectRef<RelayerDeployment>>>);

impl Seen {
    /// Marks `obj` as seen; `true` the first time (its first reconcile after a restart).
    pub fn first_time(&self, obj: ObjectRef<RelayerDeployment>) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(obj)
    }
}

/// A label-selected watch of one child kind, reflected into a store of objects trimmed as
/// [`Trim`] says for that kind.
fn child_stream<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Trim
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
    .modify(K::trim)
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
    let (replica_sets, replica_set_stream) = child_stream::<ReplicaSet>(&client, ns);
    let (slices, slice_stream) = child_stream::<EndpointSlice>(&client, ns);
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let metrics_gauge = metrics.gates_running.clone();
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
            replica_sets,
            slices,
        },
        metrics,
        failures: Failures::default(),
        config: config.clone(),
        gates: GateRuns::new(metrics_gauge),
        seen: Seen::default(),
        wake,
        pod_requests: crate::gates::runner::Budget::new(config.max_pod_requests),
    });
    let controller_config =
        kube::runtime::controller::Config::default().concurrency(config.concurrency);
    let (rd_store, rd_writer) = reflector::store();
    let rd_stream = watcher(rds, watcher::Config::default().any_semantic())
        .modify(RelayerDeployment::trim)
        .reflect(rd_writer)
        .applied_objects();
    // NB: what `Controller::new` builds, but with the cached objects trimmed ([`Trim`]); the
    // controller's own trigger backoff covers this watch as it does there.
    Controller::for_stream(rd_stream, rd_store)
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
        // NB: only to fill the cache; the pods' own events wake the reconciles.
        .watches_stream(replica_set_stream, |_| None::<ObjectRef<RelayerDeployment>>)
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

/// Reconciles one RelayerDeployment, in a span of its own when traces are on (its
/// `relayerdeployment` is `namespace/name`; `revision` is recorded once planned).
pub async fn reconcile(rd: Arc<RelayerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let span = relayer::otel::span_if_enabled(|| {
        let span = tracing::info_span!(
            "reconcile",
            otel.name = "reconcile RelayerDeployment",
            relayerdeployment = %format!("{}/{}", rd.namespace().unwrap_or_default(), rd.name_any()),
            k8s.namespace.name = rd.namespace().unwrap_or_default(),
            revision = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        relayer::otel::record_trace_id(&span);
        span
    });
    let name = rd.name_any();
    let result = caught(&name, reconcile_in_span(rd, ctx).instrument(span.clone())).await;
    if let Err(error) = &result {
        span.record("otel.status_code", "error");
        span.record("error", error.to_string());
    }
    result
}

async fn reconcile_in_span(rd: Arc<RelayerDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    if !ctx.stores.wait_until_ready().await {
        tracing::warn!("child caches are not synced yet; retrying");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let action = apply::apply(&rd, &ctx).await?;
    ctx.failures.clear(&ObjectRef::from_obj(&*rd));
    Ok(action)
}

/// Runs one reconcile; a panic in it becomes [`Error::Panicked`] (logged here, counted and
/// backed off by [`error_policy`] like any failure) instead of unwinding into kube-runtime,
/// which would re-raise it and end the process for every object.
pub async fn caught(name: &str, reconcile: impl Future<Output = Result<Action>>) -> Result<Action> {
    match std::panic::AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!(%name, panic = %message, "reconcile panicked; backing off");
            Err(Error::Panicked(message))
        }
    }
}

/// Logs, counts and backs off per object.
pub fn error_policy(rd: Arc<RelayerDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let failures = ctx.failures.record(ObjectRef::from_obj(&*rd));
    let delay = backoff_delay(failures);
    tracing::warn!(%error, name = %rd.name_any(), failures, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The spec's revision and its ordinal (the colours and sizes come from the rollout state; see
/// [`cutover`]). `active` is the colour status says is active (blue for a new object).
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

    #[tokio::test]
    async fn a_panicking_reconcile_becomes_an_error_that_is_counted_and_backed_off() {
        let panicking = async {
            let size = usize::MAX;
            if size > 1 {
                panic!("chunk size {size:x} overflows");
            }
            Ok(Action::await_change())
        };
        let result = caught("market", panicking).await;
        let Err(error) = result else {
            panic!("a panic must become an error: {result:?}");
        };
        assert!(
            matches!(&error, Error::Panicked(m) if m.contains("ffffffffffffffff overflows")),
            "{error}"
        );
        assert_eq!(error.metric_label(), "panic");
        let metrics = Metrics::default();
        assert!(
            metrics
                .encode()
                .expect("encode")
                .contains("relayer_operator_reconcile_errors_total{error=\"panic\"} 0"),
            "the series exists before the first panic"
        );
        metrics.reconcile_failed(&error);
        assert!(
            metrics
                .encode()
                .expect("encode")
                .contains("relayer_operator_reconcile_errors_total{error=\"panic\"} 1")
        );
        let failures = Failures::default();
        let key = ObjectRef::new("market").within("ns");
        assert_eq!(
            backoff_delay(failures.record(key.clone())),
            Duration::from_secs(1)
        );
        assert_eq!(backoff_delay(failures.record(key)), Duration::from_secs(2));
        let fine = caught("market", async { Ok(Action::await_change()) }).await;
        assert!(fine.is_ok());
    }

    #[test]
    fn failures_count_in_a_row_per_object_until_cleared() {
        let failures = Failures::default();
        let a = ObjectRef::new("a").within("ns");
        let b = ObjectRef::new("b").within("ns");
        assert_eq!(failures.record(a.clone()), 1);
        assert_eq!(failures.record(a.clone()), 2);
        assert_eq!(failures.record(b.clone()), 1);
        failures.clear(&a);
        assert_eq!(failures.record(a), 1);
        let seen = Seen::default();
        assert!(seen.first_time(b.clone()));
        assert!(!seen.first_time(b));
    }

    #[test]
    fn networks_parse_as_before_and_contain_only_their_own_family() {
        let net: Network = "10.244.1.5/16".parse().expect("network");
        assert!(net.contains("10.244.200.1".parse().expect("ip")));
        assert!(!net.contains("10.245.0.1".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        let all: Network = "::/0".parse().expect("network");
        assert!(all.contains("fd00::1".parse().expect("ip")));
        assert!(!all.contains("10.0.0.1".parse().expect("ip")));
        let any: Network = "0.0.0.0/0".parse().expect("network");
        assert!(any.contains("192.168.1.1".parse().expect("ip")));
        let exact: Network = "10.0.0.7/32".parse().expect("network");
        assert!(exact.contains("10.0.0.7".parse().expect("ip")));
        assert!(!exact.contains("10.0.0.8".parse().expect("ip")));
        assert_eq!(
            "10.0.0.0".parse::<Network>(),
            Err("\"10.0.0.0\" is not ADDRESS/PREFIX".to_owned())
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Network>(),
            Err("\"10.0.0.0/33\": prefix longer than 32".to_owned())
        );
        assert!("fd00::/129".parse::<Network>().is_err());
        assert!("10.0.0/8".parse::<Network>().is_err());
        assert!("10.0.0.0/x".parse::<Network>().is_err());
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
