//! The operator against hostile pods: pods that answer `/metrics` with a chunk size of
//! `ffffffffffffffff` or with a body that never ends, and a pod that carries a
//! RelayerDeployment's labels without belonging to its Deployments. The operator binary must
//! stay up (same process, no restart), record scrape errors in the gate, never contact the
//! stray pod, and go on reconciling other objects meanwhile.
//!
//! Pods are simulated ([`support::pod_sim`]) with a backend of this file that gives each pod
//! of the test's namespace an address of 127.0.0.64/26 and a hostile HTTP server there; the
//! operator may contact that network only. Run with `cargo test --test operator_hostile_pods`.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use relayer_operator::crd::{GateVerdict, RelayerDeployment, RolloutStep};
use serde_json::{Value, json};
use support::fixtures::rd;
use support::operator::OperatorProcess;
use support::pod_sim::{BoxFuture, PodBackend, Started};
use support::{TestEnv, from_yaml, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SETTLE: Duration = Duration::from_secs(90);
/// The relayer port of these tests' RelayerDeployments (an unusual one, so no other
/// loopback listener of the machine is in the way).
const PORT: u16 = 39_087;
/// The only addresses the operator may contact here: the pods of [`HostileBackend`].
const NETWORK: &str = "127.0.0.64/26";
/// The pod with the labels of `endless`'s green pods that no Deployment owns.
const STRAY: &str = "stray";

/// What a pod's server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A chunked body whose first chunk size is `ffffffffffffffff`.
    HugeChunk,
    /// A chunked body of 1 KiB chunks without end.
    Endless,
    /// A small valid exposition.
    Metrics,
}

/// Runs every pod of one namespace as a local server that answers as [`HostileBackend::answer`]
/// says, and counts the connections each pod got.
struct HostileBackend {
    namespace: String,
    next: AtomicU32,
    /// Connections accepted, by pod name.
    hits: Arc<Mutex<HashMap<String, u32>>>,
}

impl HostileBackend {
    /// By the instance label: `huge-*` and `endless-*` pods are hostile, the rest (and the
    /// stray pod, whatever its labels) answer well.
    fn answer(pod: &Pod) -> Answer {
        if pod.name_any() == STRAY {
            return Answer::Metrics;
        }
        let instance = pod
            .labels()
            .get("app.kubernetes.io/instance")
            .cloned()
            .unwrap_or_default();
        if instance.starts_with("huge") {
            Answer::HugeChunk
        } else if instance.starts_with("endless") {
            Answer::Endless
        } else {
            Answer::Metrics
        }
    }

    fn hits(&self, pod: &str) -> u32 {
        self.hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pod)
            .copied()
            .unwrap_or(0)
    }
}

impl PodBackend for HostileBackend {
    fn claims(&self, pod: &Pod) -> bool {
        pod.namespace().as_deref() == Some(self.namespace.as_str())
    }

    fn start(&self, pod: &Pod) -> BoxFuture<anyhow::Result<Started>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % 62 + 1;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 64 + n as u8));
        let answer = Self::answer(pod);
        let name = pod.name_any();
        let hits = self.hits.clone();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, PORT)).await?;
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    *hits
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(name.clone())
                        .or_insert(0) += 1;
                    tokio::spawn(serve(stream, answer));
                }
            });
            let (_tx, ready) = tokio::sync::watch::channel(true);
            // NB: the sender may go: the receiver keeps the last value, ready.
            Ok(Started { ip, ready })
        })
    }

    fn stop(&self, _pod: &Pod, _grace: Duration) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// Answers one connection as `answer` says, bounded (at most a minute of streaming).
async fn serve(mut stream: tokio::net::TcpStream, answer: Answer) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let chunked =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    match answer {
        Answer::HugeChunk => {
            let _ = stream
                .write_all(format!("{chunked}ffffffffffffffff\r\nforesight").as_bytes())
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Answer::Endless => {
            if stream.write_all(chunked.as_bytes()).await.is_err() {
                return;
            }
            let mut chunk = b"400\r\n".to_vec();
            chunk.extend_from_slice(&[b'#'; 1024]);
            chunk.extend_from_slice(b"\r\n");
            let until = tokio::time::Instant::now() + Duration::from_secs(60);
            while tokio::time::Instant::now() < until && stream.write_all(&chunk).await.is_ok() {}
        }
        Answer::Metrics => {
            let body = "foresight_http_requests_total{method=\"GET\",route=\"/v2/depth\",status=\"200\"} 1\n";
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    }
}

/// A one-replica RelayerDeployment on [`PORT`] whose pre-promotion gate fails at the third
/// scrape error.
fn gated(name: &str) -> Value {
    let mut json = rd(name).replicas(1).json();
    json["spec"]["config"]["listen"] = json!(format!("0.0.0.0:{PORT}"));
    json["spec"]["strategy"] = json!({ "blueGreen": {
        "progressDeadlineSeconds": 120,
        "prePromotion": {
            "intervalMs": 200, "samples": 3, "failureLimit": 0, "scrapeErrorLimit": 2,
            "minRequests": 1,
        },
    } });
    json
}

async fn apply(env: &TestEnv, name: &str, rd: &Value) {
    env.api::<RelayerDeployment>()
        .patch(
            name,
            &PatchParams::apply("hostile-test").force(),
            &Patch::Apply(rd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// Whether process `pid` is running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

#[tokio::test]
async fn hostile_pods_fail_their_gate_without_stopping_the_operator_and_strays_are_never_scraped() {
    let env = TestEnv::new("hostile").await;
    let Some(simulator) = env.control_plane.simulator() else {
        eprintln!("not applicable against KUBECONFIG_TEST: kubelets run pods there");
        return;
    };
    env.install_crds(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .await;
    let backend = Arc::new(HostileBackend {
        namespace: env.namespace.clone(),
        next: AtomicU32::new(0),
        hits: Arc::new(Mutex::new(HashMap::new())),
    });
    simulator.register(backend.clone());
    let operator = OperatorProcess::launch(&env, "hostile")
        .args(["--namespace", &env.namespace])
        .args(["--leader-election", "false"])
        .args(["--pod-networks", NETWORK])
        .spawn();
    let pid = operator.pid();

    for name in ["huge", "endless"] {
        apply(&env, name, &gated(name)).await;
    }
    for name in ["huge", "endless"] {
        support::wait_step(&env, name, RolloutStep::Stable, "blue", SETTLE).await;
    }
    // A stray pod with every label of endless's green pods, owned by nobody: it answers well,
    // so it would pass for a healthy pod if it were scraped.
    let stray: Pod = from_yaml(&format!(
        "metadata:\n  name: {STRAY}\n  labels:\n    app.kubernetes.io/name: relayer\n    \
         app.kubernetes.io/instance: endless\n    app.kubernetes.io/managed-by: relayer-operator\n    \
         relayer.foresight.dev/color: green\n\
         spec: {{ containers: [{{ name: relayer, image: {} }}] }}",
        support::fixtures::IMAGE
    ));
    env.api::<Pod>()
        .create(&PostParams::default(), &stray)
        .await
        .expect("create the stray pod");
    // NB: ready with an address inside --pod-networks before the gates start, so that a
    // selection by labels alone would scrape it.
    wait_for("the stray pod ready", SETTLE, || {
        let pods = env.api::<Pod>();
        async move {
            let pod = pods.get(STRAY).await?;
            let status = pod.status.unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok((ready && status.pod_ip.is_some()).then_some(()))
        }
    })
    .await;
    // NB: a spec change starts a cutover: green's pods (hostile) are under the gate.
    for name in ["huge", "endless"] {
        let mut changed = gated(name);
        changed["spec"]["pod"] = json!({ "env": [{ "name": "RELEASE", "value": "2" }] });
        apply(&env, name, &changed).await;
    }
    // Meanwhile another RelayerDeployment is created and must become Available.
    let mut bystander = rd("bystander").replicas(1).json();
    bystander["spec"]["config"]["listen"] = json!(format!("0.0.0.0:{PORT}"));
    apply(&env, "bystander", &bystander).await;
    support::wait_available(&env, "bystander", SETTLE).await;

    for name in ["huge", "endless"] {
        let rd = support::wait_step(&env, name, RolloutStep::Aborted, "blue", SETTLE).await;
        let rollout = rd
            .status
            .as_ref()
            .and_then(|s| s.rollout.clone())
            .expect("rollout status");
        let gate = rollout
            .gates
            .iter()
            .find(|g| g.name == "prePromotion")
            .expect("the gate's status");
        assert_eq!(gate.verdict, GateVerdict::Failed, "{name}: {gate:?}");
        let reason = rollout.abort_reason.clone().unwrap_or_default();
        assert!(reason.contains("scrape errors"), "{name}: {reason}");
        // NB: the error is the pod's answer, not a pod that could not be reached at all.
        assert!(
            reason.contains("): read: ") || reason.contains("within 2s"),
            "{name}: {reason}"
        );
        eprintln!("{name}: {reason}");
    }
    let endless = support::wait_step(&env, "endless", RolloutStep::Aborted, "blue", SETTLE).await;
    let reason = endless
        .status
        .and_then(|s| s.rollout)
        .and_then(|r| r.abort_reason)
        .unwrap_or_default();
    assert!(
        reason.contains("within 2s") || reason.contains("longer than"),
        "the endless body was cut off: {reason}"
    );

    assert_eq!(
        backend.hits(STRAY),
        0,
        "a pod not owned by the Deployment was contacted"
    );
    assert!(alive(pid), "the operator process {pid} is gone");
    let metrics = wait_for("the operator's /metrics", SETTLE, || {
        let operator = &operator;
        async move { Ok(operator.metrics_text().await.ok()) }
    })
    .await;
    assert!(
        metrics.contains("relayer_operator_reconcile_errors_total{error=\"panic\"} 0"),
        "no reconcile panicked"
    );
    let log = operator.log();
    assert!(!log.contains("panicked"), "{log}");
}
