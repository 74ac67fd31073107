//! The chart's RBAC is exact: the operator binary, run with the chart's arguments under the
//! chart's ServiceAccount (not admin), completes full blue-green cutovers with real relayer
//! processes behind the pods (gates, promotion by command, drain evidence, rollback, pruning,
//! the HPA and Ingress dropped), is never refused anything, and uses every verb the chart
//! grants.
//!
//! What the operator uses is recorded as the API server would audit it: the operator talks to
//! a recording proxy on loopback, which forwards each request with the ServiceAccount's token
//! and notes method, path, query and response status. (The test control plane has no audit
//! policy flag; with one, the same comparison could read the audit log.) A server-side apply
//! answered 201 Created counts as `create` as well as `patch`: the API server authorizes
//! both for it.
//!
//! Run as root (network namespaces) with `cargo build -p relayer && cargo test --test
//! chart_rbac`.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use relayer_operator::crd::{RelayerDeployment, RolloutStep};
use serde_json::{Value, json};
use support::cutover::{NetnsBackend, RedisStore, host_address};
use support::fixtures::{Gate, blue_green, gate, rd};
use support::operator::OperatorProcess;
use support::{TestEnv, wait_for};

const SETTLE: Duration = Duration::from_secs(120);
const NAME: &str = "market";
const RELEASE: &str = "ops";

/// Granted only for an admission plugin, never a request of the operator's own (see the note
/// in the chart's `_helpers.tpl`).
const ADMISSION_ONLY: [(&str, &str, &str); 1] = [(
    "relayer.foresight.dev",
    "relayerdeployments/finalizers",
    "update",
)];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/relayer-operator")
}

/// One request as the API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    status: u16,
}

/// (API group, resource[/subresource], verb): the unit of an RBAC rule.
type Permission = (String, String, String);

impl Seen {
    /// What the authorizer checked for this request; empty for non-resource paths.
    fn permissions(&self) -> Vec<Permission> {
        let parts: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return Vec::new(),
        };
        let rest = match rest {
            ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
            other => other,
        };
        let (resource, named) = match rest {
            [resource] => (resource.to_string(), false),
            [resource, _name] => (resource.to_string(), true),
            [resource, _name, sub] => (format!("{resource}/{sub}"), true),
            _ => return Vec::new(),
        };
        let watch = self
            .query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (self.method.as_str(), named) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return Vec::new(),
        };
        let mut out = vec![(group.to_owned(), resource.clone(), verb.to_owned())];
        if verb == "patch" && self.status == 201 {
            out.push((group.to_owned(), resource, "create".to_owned()));
        }
        out
    }

    fn refused(&self) -> bool {
        self.status == 401 || self.status == 403
    }
}

#[derive(Clone)]
struct ProxyState {
    client: kube::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Forwards one request with the ServiceAccount's client and records it.
async fn forward(
    State(state): State<ProxyState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return (http::StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(&path_and_query);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "authorization" | "content-length" | "connection" | "transfer-encoding"
        ) {
            builder = builder.header(name, value);
        }
    }
    let Ok(upstream) = builder.body(kube::client::Body::from(bytes.to_vec())) else {
        return (http::StatusCode::BAD_REQUEST, "unforwardable request").into_response();
    };
    match state.client.send(upstream).await {
        Ok(response) => {
            state
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or("").to_owned(),
                    status: response.status().as_u16(),
                });
            let (head, body) = response.into_parts();
            axum::response::Response::from_parts(head, axum::body::Body::new(body))
        }
        Err(error) => (http::StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// The recording proxy: a plain-HTTP listener on loopback in front of the API server.
struct RecordingProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    async fn start(client: kube::Client) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(ProxyState {
                client,
                seen: seen.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A kubeconfig that reaches the API server through the proxy (no credentials of its own).
    fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{ "name": "proxy", "cluster": { "server": format!("http://{}", self.addr) } }],
            "users": [{ "name": "proxy", "user": {} }],
            "contexts": [{ "name": "proxy", "context": { "cluster": "proxy", "user": "proxy", "namespace": namespace } }],
            "current-context": "proxy",
        });
        let path = dir.join(format!("kubeconfig-proxy-{namespace}"));
        std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("kubeconfig");
        path
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn helm_values(env: &TestEnv) -> Vec<String> {
    vec![
        format!("operator.watchNamespace={}", env.namespace),
        "operator.podNetworks={10.244.0.0/16}".to_owned(),
        "operator.leaderElection.leaseDurationSeconds=4".to_owned(),
        "operator.logJson=false".to_owned(),
        r"operator.logLevel=info\,relayer_operator=debug".to_owned(),
    ]
}

/// Every (group, resource, verb) the rendered chart grants.
fn granted(env: &TestEnv, release_ns: &str) -> BTreeSet<Permission> {
    let mut helm = env.control_plane.helm();
    helm.args(["get", "manifest", RELEASE, "--namespace", release_ns]);
    let out = helm.output().expect("helm get manifest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut set = BTreeSet::new();
    for doc in manifest.split("\n---") {
        let Ok(value) = serde_yaml::from_str::<Value>(doc) else {
            continue;
        };
        if !matches!(value["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for rule in value["rules"].as_array().into_iter().flatten() {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "the chart grants a wildcard: {rule}"
                        );
                        set.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    set
}

async fn wait_step(env: &TestEnv, step: RolloutStep, colour: &str) -> RelayerDeployment {
    support::wait_step(env, NAME, step, colour, SETTLE).await
}

fn rbac_gate() -> Gate {
    gate()
        .interval_ms(300)
        .samples(2)
        .failure_limit(0)
        .min_requests(5)
        .max_error_rate_basis_points(100)
        .probe(40)
}

/// Lease updates (renewals) the API server allowed.
fn lease_updates(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|s| !s.refused())
        .flat_map(Seen::permissions)
        .filter(|(group, resource, verb)| {
            group == "coordination.k8s.io" && resource == "leases" && verb == "update"
        })
        .count()
}

async fn plugin(env: &TestEnv, args: &[&str]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-relayer"));
    command
        .env("KUBECONFIG", env.control_plane.kubeconfig())
        .args(["-n", &env.namespace])
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run kubectl-relayer");
    assert!(
        out.status.success(),
        "kubectl relayer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn under_the_charts_account_the_operator_completes_cutovers_and_uses_every_granted_verb() {
    assert!(
        repo().join("target/debug/relayer").exists(),
        "build the relayer first: cargo build -p relayer"
    );
    let env = TestEnv::new("chart-rbac").await;
    // The operator in its own namespace, the relayers (backed by real processes) in the test's.
    let release_ns = support::control_plane::create_namespace(&env.client, "chart-rbac-ops")
        .await
        .expect("the operator's namespace");
    let (backend, _guard) = NetnsBackend::register(&env.namespace);
    // The relayers' shared store, its password in a Secret the pods read.
    let store = RedisStore::start(
        host_address().expect("the host's address towards the pods"),
        &env.namespace,
    );
    env.create_secret("relayer-redis", "password", &store.password)
        .await;

    let mut helm = env.control_plane.helm();
    helm.args(["install", RELEASE]).arg(chart()).args([
        "--namespace",
        &release_ns,
        "--wait",
        "--timeout",
        "120s",
    ]);
    for set in helm_values(&env) {
        helm.args(["--set", &set]);
    }
    let out = helm.output().expect("helm install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The chart's own pods are simulated; the operator that acts is the binary below.
    let (account, _) = env
        .service_account_identity(&release_ns, &format!("{RELEASE}-relayer-operator"))
        .await
        .expect("act as the chart's ServiceAccount");
    let proxy = RecordingProxy::start(account).await;
    let kubeconfig = proxy.kubeconfig(env.control_plane.work_dir(), &env.namespace);
    let operator = OperatorProcess::like_the_chart(
        &env,
        &release_ns,
        &format!("{RELEASE}-relayer-operator"),
        &kubeconfig,
        "ops-0",
    )
    .await;

    // 1. A relayer with an Ingress, an HPA, gates and manual promotion.
    rd(NAME)
        .image("ghcr.io/foresight/relayer:1")
        .redis_with_password(&store.url(), "relayer-redis", "password")
        .replicas(2)
        .revision_history_limit(3)
        .rate_limit_disabled()
        .shutdown(500, 2000)
        .ingress("relayer.example.com")
        .autoscaling(2, 4)
        .blue_green(
            blue_green()
                .auto_promote(false)
                .scale_down_delay_seconds(1)
                .max_scale_down_wait_seconds(30)
                .progress_deadline_seconds(60)
                .pre_promotion(rbac_gate())
                .post_promotion(rbac_gate()),
        )
        .apply(&env, "rbac-test")
        .await;
    wait_step(&env, RolloutStep::Stable, "blue").await;

    // 2. A new image and config, promoted by command once the gates passed.
    env.kubectl(&[
        "patch", "rd", NAME, "--type", "merge", "-p",
        r#"{"spec":{"image":"ghcr.io/foresight/relayer:2","config":{"limits":{"maxOrderAmount":2222}}}}"#,
    ])
    .expect("kubectl patch");
    wait_step(&env, RolloutStep::AwaitingPromotion, "blue").await;
    plugin(&env, &["promote", NAME]).await;
    let rd = wait_step(&env, RolloutStep::Stable, "green").await;
    let scale_down = rd
        .status
        .and_then(|s| s.rollout)
        .and_then(|r| r.scale_down)
        .unwrap_or_default();
    assert!(
        scale_down.contains("drained"),
        "drained on evidence: {scale_down}"
    );

    // 3. Roll back to the previous revision with plain kubectl, promote it.
    env.kubectl(&[
        "annotate",
        "rd",
        NAME,
        "relayer.foresight.dev/rollback-to=previous",
    ])
    .expect("kubectl annotate");
    wait_step(&env, RolloutStep::AwaitingPromotion, "green").await;
    plugin(&env, &["promote", NAME]).await;
    wait_step(&env, RolloutStep::Stable, "blue").await;

    // 4. Drop the Ingress and the HPA, change the pods and the config, promote automatically,
    //    and keep one revision only: the older revisions and their ConfigMaps are pruned.
    env.kubectl(&[
        "patch",
        "rd",
        NAME,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"ingress":null,"autoscaling":null,"revisionHistoryLimit":1,"config":{"limits":{"maxOrderAmount":3333}},"pod":{"env":[{"name":"RELEASE","value":"3"}]},"strategy":{"blueGreen":{"autoPromote":true}}}}"#,
    ])
    .expect("kubectl patch");
    wait_step(&env, RolloutStep::Stable, "green").await;
    wait_for(
        "the Ingress and the HPA to be deleted, older revisions pruned",
        SETTLE,
        || async {
            let ingress = env.kubectl(&["get", "ingress", NAME]).is_err();
            let hpa = env.kubectl(&["get", "hpa", NAME]).is_err();
            let revisions = env
                .kubectl(&["get", "controllerrevisions", "-o", "name"])?
                .lines()
                .count();
            Ok((ingress && hpa && revisions == 1).then_some(()))
        },
    )
    .await;
    // The leader renews its Lease (update) at least once more.
    let renewed = lease_updates(&proxy.seen());
    wait_for("the leader to renew its Lease once more", SETTLE, || {
        let more = lease_updates(&proxy.seen()) > renewed;
        async move { Ok(more.then_some(())) }
    })
    .await;

    let seen = proxy.seen();
    let refused: Vec<&Seen> = seen.iter().filter(|s| s.refused()).collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator: {refused:#?}"
    );
    let used: BTreeSet<Permission> = seen.iter().flat_map(Seen::permissions).collect();
    let granted = granted(&env, &release_ns);
    let admission_only: BTreeSet<Permission> = ADMISSION_ONLY
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let not_granted: Vec<&Permission> = used.difference(&granted).collect();
    let unused: Vec<&Permission> = granted
        .difference(&used)
        .filter(|p| !admission_only.contains(*p))
        .collect();
    eprintln!(
        "{} requests; used {} of {} granted (group, resource, verb); relayer pods started: {}",
        seen.len(),
        used.len(),
        granted.len(),
        backend.started().len()
    );
    assert!(
        not_granted.is_empty(),
        "used but not granted (every request was allowed, so another binding let it through?): {not_granted:?}"
    );
    assert!(
        unused.is_empty(),
        "the chart grants what the operator never used: {unused:?}\nused: {used:?}"
    );
    let log = operator.log();
    assert!(!log.contains("forbidden"), "{log}");
}
