//! The pod simulator: a kubelet and scheduler stand-in for a control plane without a container
//! runtime.
//!
//! It keeps one fake Node Ready, binds unscheduled pods whose nodeSelector it matches to it
//! (there is no kube-scheduler; affinity is not modelled, and the node has no taints), and
//! gives each bound pod a workload from a [`PodBackend`]. The pod then reports Running, and
//! Ready once its backend says so and every readiness gate condition is True, which is what
//! Deployments (available replicas) and the EndpointSlice controller read. On deletion it
//! reports the pod not Ready, lets the backend stop within the grace period, then removes the
//! pod the way a kubelet does (a delete with grace 0).
//!
//! The default [`FakeBackend`] runs nothing and hands out addresses from 198.18.0.0/15
//! (RFC 2544's benchmarking range, routed nowhere). NB: nothing may connect to them: a test
//! that scrapes, probes or proxies to a pod (`pods/proxy`, port-forward, metric gates) needs a
//! pod backed by a real process through its own [`PodBackend`], registered with
//! [`PodSimulator::register`]; the first backend that claims a pod runs it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

/// Where the simulator's notes go (set once by [`PodSimulator::start`]).
static LOG: OnceLock<PathBuf> = OnceLock::new();

/// Appends a line to the simulator's log file (stderr would land in whichever test's captured
/// output happens to own the harness thread).
fn note(message: &str) {
    let line = format!("{} {message}\n", k8s_openapi::jiff::Timestamp::now());
    let written = LOG.get().map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()))
    });
    if !matches!(written, Some(Ok(()))) {
        eprint!("[pod-sim] {line}");
    }
}

macro_rules! note {
    ($($arg:tt)*) => { note(&format!($($arg)*)) };
}

/// The fake node every simulated pod runs on.
pub const NODE_NAME: &str = "foresight-sim-node";

/// The node's only address. NB: loopback on purpose: the API server dials a node's kubelet
/// for `kubectl logs`, `exec` and `port-forward`; here that fails at once with "connection
/// refused" on 127.0.0.1:10250 instead of sending packets anywhere (the control plane also
/// runs with `--kubelet-preferred-address-types=InternalIP`, so no hostname is resolved).
const NODE_IP: &str = "127.0.0.1";

/// How often the node's Ready condition is refreshed, like a kubelet's status updates.
const NODE_HEARTBEAT: Duration = Duration::from_secs(10);

/// A boxed future, so [`PodBackend`] stays object safe.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a started workload reports back to the simulator.
pub struct Started {
    /// The pod's IP (what `status.podIP` and EndpointSlices show).
    pub ip: IpAddr,
    /// Readiness of the workload; every change is reflected in the pod's status.
    pub ready: watch::Receiver<bool>,
}

/// Runs the workload of the pods it claims.
///
/// `start` must return promptly (spawn, then report readiness later through
/// [`Started::ready`]); the simulator handles pods one event at a time.
pub trait PodBackend: Send + Sync + 'static {
    /// Whether this backend runs `pod`; asked once, when the pod is first bound to the node.
    fn claims(&self, pod: &Pod) -> bool;
    /// Starts the workload of `pod`.
    fn start(&self, pod: &Pod) -> BoxFuture<anyhow::Result<Started>>;
    /// Stops the workload of `pod` within `grace` (the pod is being deleted).
    fn stop(&self, pod: &Pod, grace: Duration) -> BoxFuture<()>;
}

/// Runs nothing: every pod gets the next address of 198.18.0.0/15 and is ready at once.
#[derive(Debug, Default)]
pub struct FakeBackend {
    next: AtomicU32,
}

impl FakeBackend {
    fn next_ip(&self) -> IpAddr {
        // NB: skips .0 and .255 of each /24 so no address looks like a network or broadcast.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let host = n % 254 + 1;
        let net = (n / 254) % 512;
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
        IpAddr::V4(Ipv4Addr::from(base + (net << 8) + host))
    }
}

impl PodBackend for FakeBackend {
    fn claims(&self, _pod: &Pod) -> bool {
        true
    }

    fn start(&self, _pod: &Pod) -> BoxFuture<anyhow::Result<Started>> {
        let ip = self.next_ip();
        Box::pin(async move {
            let (_tx, ready) = watch::channel(true);
            Ok(Started { ip, ready })
        })
    }

    fn stop(&self, _pod: &Pod, _grace: Duration) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// Handle to a running simulator; cheap to clone.
#[derive(Clone)]
pub struct PodSimulator {
    backends: Arc<RwLock<Vec<Arc<dyn PodBackend>>>>,
}

impl std::fmt::Debug for PodSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSimulator").finish_non_exhaustive()
    }
}

impl PodSimulator {
    /// Adds a backend that is asked before the ones registered earlier and the fake one.
    pub fn register(&self, backend: Arc<dyn PodBackend>) {
        match self.backends.write() {
            Ok(mut backends) => backends.insert(0, backend),
            Err(poisoned) => poisoned.into_inner().insert(0, backend),
        }
    }

    fn backend_for(&self, pod: &Pod) -> Arc<dyn PodBackend> {
        let backends = match self.backends.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        backends
            .iter()
            .find(|backend| backend.claims(pod))
            .cloned()
            .unwrap_or_else(|| Arc::new(FakeBackend::default()))
    }

    /// Creates the fake node and marks it Ready, then spawns the simulator's tasks on the
    /// current runtime (which must outlive the tests: the harness keeps its own). Notes about
    /// failed API calls go to `log`.
    pub async fn start(client: Client, log: PathBuf) -> anyhow::Result<Self> {
        let _ = LOG.set(log);
        let sim = Self {
            backends: Arc::new(RwLock::new(vec![Arc::new(FakeBackend::default())])),
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": { "name": NODE_NAME, "labels": node_labels() },
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        patch_node_ready(&nodes).await?;
        tokio::spawn(heartbeat(nodes));

        let (resync_tx, resync_rx) = mpsc::unbounded_channel();
        let runner = Runner {
            sim: sim.clone(),
            pods: Api::all(client),
            running: HashMap::new(),
            listed: None,
            resync_tx,
        };
        tokio::spawn(runner.run(resync_rx));
        Ok(sim)
    }
}

async fn patch_node_ready(nodes: &Api<Node>) -> kube::Result<()> {
    let now = now();
    let status = json!({
        "status": {
            "capacity": { "cpu": "32", "memory": "128Gi", "pods": "250" },
            "allocatable": { "cpu": "32", "memory": "128Gi", "pods": "250" },
            "addresses": [
                { "type": "InternalIP", "address": NODE_IP },
            ],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "simulated by the foresight test harness",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "v1.37.2",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "simulated://1",
                "kernelVersion": "",
                "osImage": "simulated",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
    });
    nodes
        .patch_status(
            NODE_NAME,
            &PatchParams::default(),
            &Patch::Strategic(status),
        )
        .await
        .map(drop)
}

async fn heartbeat(nodes: Api<Node>) {
    loop {
        tokio::time::sleep(NODE_HEARTBEAT).await;
        if let Err(error) = patch_node_ready(&nodes).await {
            note!("node heartbeat failed: {error}");
        }
    }
}

fn now() -> serde_json::Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))
        .unwrap_or(serde_json::Value::Null)
}

/// A pod whose workload a backend runs.
struct Running {
    backend: Arc<dyn PodBackend>,
    ip: IpAddr,
    ready: watch::Receiver<bool>,
    /// The latest version of the pod seen on the watch.
    pod: Pod,
    terminating: bool,
}

struct Runner {
    sim: PodSimulator,
    pods: Api<Pod>,
    /// Keyed by pod UID.
    running: HashMap<String, Running>,
    /// UIDs seen during a (re-)list; pods missing from it were deleted while the watch was
    /// down, which no Delete event reports.
    listed: Option<HashSet<String>>,
    /// Readiness followers send a pod UID here when its backend's readiness changed.
    resync_tx: mpsc::UnboundedSender<String>,
}

impl Runner {
    async fn run(mut self, mut resync_rx: mpsc::UnboundedReceiver<String>) {
        let stream = watcher(self.pods.clone(), watcher::Config::default());
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(watcher::Event::Apply(pod))) => self.on_pod(pod).await,
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        if let (Some(listed), Some(uid)) = (self.listed.as_mut(), pod.uid()) {
                            listed.insert(uid);
                        }
                        self.on_pod(pod).await;
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => self.on_gone(pod).await,
                    Some(Ok(watcher::Event::Init)) => self.listed = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitDone)) => self.forget_unlisted().await,
                    Some(Err(error)) => {
                        note!("pod watch error (retrying): {error}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => return,
                },
                Some(uid) = resync_rx.recv() => {
                    if let Some(pod) = self.running.get(&uid).map(|r| r.pod.clone()) {
                        self.on_pod(pod).await;
                    }
                }
            }
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        let name = pod.name_any();
        let ns = pod.namespace().unwrap_or_default();
        let result = self.reconcile(pod).await;
        if let Err(error) = result {
            note!("pod {ns}/{name}: {error:#}");
        }
    }

    async fn reconcile(&mut self, pod: Pod) -> anyhow::Result<()> {
        let uid = pod.uid().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(
            self.pods.clone().into_client(),
            &pod.namespace().unwrap_or_default(),
        );
        let deleting = pod.metadata.deletion_timestamp.is_some();

        match spec.node_name.as_deref() {
            // Like a scheduler, leave pods Pending whose nodeSelector the node does not match.
            None | Some("") if !deleting && fits_node(&pod) => return bind(&api, &pod).await,
            None | Some("") => return Ok(()),
            Some(NODE_NAME) => {}
            _ => return Ok(()),
        }

        if deleting {
            return self.terminate(&api, pod).await;
        }

        if !self.running.contains_key(&uid) {
            let backend = self.sim.backend_for(&pod);
            let started = backend.start(&pod).await?;
            let mut follower = started.ready.clone();
            let tx = self.resync_tx.clone();
            let follower_uid = uid.clone();
            tokio::spawn(async move {
                while follower.changed().await.is_ok() {
                    if tx.send(follower_uid.clone()).is_err() {
                        return;
                    }
                }
            });
            self.running.insert(
                uid.clone(),
                Running {
                    backend,
                    ip: started.ip,
                    ready: started.ready,
                    pod: pod.clone(),
                    terminating: false,
                },
            );
        }
        let Some(running) = self.running.get_mut(&uid) else {
            return Ok(());
        };
        running.pod = pod.clone();
        let workload_ready = *running.ready.borrow();
        let patch = desired_status(&pod, running.ip, workload_ready);
        if let Some(patch) = patch {
            api.patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
        }
        Ok(())
    }

    /// A kubelet's side of deletion: not ready, stop the workload, then the final delete.
    async fn terminate(&mut self, api: &Api<Pod>, pod: Pod) -> anyhow::Result<()> {
        let uid = pod.uid().unwrap_or_default();
        let Some(running) = self.running.get_mut(&uid) else {
            // Never started here (deleted before it ran): nothing to stop.
            return final_delete(api, &pod).await;
        };
        if running.terminating {
            return Ok(());
        }
        running.terminating = true;
        let backend = running.backend.clone();
        let not_ready = json!({ "status": { "conditions": [
            condition("ContainersReady", false),
            condition("Ready", false),
        ]}});
        if let Err(error) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(not_ready),
            )
            .await
        {
            note!("marking {} not ready: {error}", pod.name_any());
        }
        let grace = Duration::from_secs(
            pod.metadata
                .deletion_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(30),
        );
        let api = api.clone();
        // NB: stopping a real workload may take the whole grace period; do not hold up the
        // other pods' events meanwhile.
        tokio::spawn(async move {
            backend.stop(&pod, grace).await;
            if let Err(error) = final_delete(&api, &pod).await {
                note!("final delete of {}: {error:#}", pod.name_any());
            }
        });
        Ok(())
    }

    async fn forget_unlisted(&mut self) {
        let Some(listed) = self.listed.take() else {
            return;
        };
        let gone: Vec<Pod> = self
            .running
            .iter()
            .filter(|(uid, _)| !listed.contains(*uid))
            .map(|(_, running)| running.pod.clone())
            .collect();
        for pod in gone {
            self.on_gone(pod).await;
        }
    }

    async fn on_gone(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        // Force-deleted without a grace period: stop the workload anyway.
        if let Some(running) = self.running.remove(&uid)
            && !running.terminating
        {
            running.backend.stop(&pod, Duration::ZERO).await;
        }
    }
}

/// The fake node's labels.
fn node_labels() -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", NODE_NAME),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("foresight.dev/simulated", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Whether the pod's nodeSelector matches the fake node (affinity and taints are not
/// modelled: the node has no taints and every affinity is taken as satisfied).
fn fits_node(pod: &Pod) -> bool {
    let labels = node_labels();
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_selector.as_ref())
        .is_none_or(|selector| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

async fn bind(api: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
    let name = pod.name_any();
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": name, "uid": pod.uid() },
        "target": { "apiVersion": "v1", "kind": "Node", "name": NODE_NAME },
    });
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already bound (an older event of the same pod) or already gone.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn final_delete(api: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn condition(kind: &str, status: bool) -> serde_json::Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "lastTransitionTime": now(),
    })
}

/// Like [`condition`], but keeps the transition time of a condition whose status is unchanged.
fn kept_condition(pod: &Pod, kind: &str, status: bool) -> serde_json::Value {
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == kind));
    match existing {
        Some(c) if (c.status == "True") == status => {
            let mut value = condition(kind, status);
            if let Some(t) = &c.last_transition_time {
                value["lastTransitionTime"] = serde_json::to_value(t).unwrap_or_else(|_| now());
            }
            value
        }
        _ => condition(kind, status),
    }
}

fn condition_is_true(pod: &Pod, kind: &str) -> Option<bool> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status == "True")
}

/// Whether every readiness gate of `pod` has its condition True.
pub fn readiness_gates_pass(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.readiness_gates.as_ref())
        .map(|gates| {
            gates
                .iter()
                .all(|gate| condition_is_true(pod, &gate.condition_type) == Some(true))
        })
        .unwrap_or(true)
}

/// The status patch that makes `pod` what its workload says it is, or `None` when it already
/// is (so the simulator's own updates do not loop).
fn desired_status(pod: &Pod, ip: IpAddr, workload_ready: bool) -> Option<serde_json::Value> {
    let ready = workload_ready && readiness_gates_pass(pod);
    let status = pod.status.clone().unwrap_or_default();
    let ip = ip.to_string();
    let up_to_date = status.phase.as_deref() == Some("Running")
        && status.pod_ip.as_deref() == Some(ip.as_str())
        && condition_is_true(pod, "ContainersReady") == Some(workload_ready)
        && condition_is_true(pod, "Ready") == Some(ready);
    if up_to_date {
        return None;
    }
    let started_at = now();
    let uid = pod.uid().unwrap_or_default();
    let containers: Vec<serde_json::Value> = pod
        .spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": format!("simulated://{}", c.image.clone().unwrap_or_default()),
                "containerID": format!("simulated://{uid}/{}", c.name),
                "ready": workload_ready,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": started_at } },
            })
        })
        .collect();
    Some(json!({
        "status": {
            "phase": "Running",
            "hostIP": NODE_IP,
            "hostIPs": [{ "ip": NODE_IP }],
            "podIP": ip,
            "podIPs": [{ "ip": ip }],
            "startTime": status.start_time.map(|t| serde_json::to_value(t).unwrap_or_default())
                .unwrap_or_else(now),
            "conditions": [
                kept_condition(pod, "PodScheduled", true),
                kept_condition(pod, "PodReadyToStartContainers", true),
                kept_condition(pod, "Initialized", true),
                kept_condition(pod, "ContainersReady", workload_ready),
                kept_condition(pod, "Ready", ready),
            ],
            "containerStatuses": containers,
        }
    }))
}
