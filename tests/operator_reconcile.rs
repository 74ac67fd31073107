//! The RelayerDeployment API and the stable-state reconcile against a real API server: CRDs and
//! the sample applied with kubectl, schema validation, scale, drift repair, garbage collection
//! and idle resyncs.
//!
//! Run with `cargo test --test operator_reconcile` (the harness builds or reuses the control
//! plane binaries; see tests/support).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use relayer_operator::controller;
use relayer_operator::crd::{Phase, RelayerDeployment};
use relayer_operator::resources::MANAGED_SELECTOR;
use serde::de::DeserializeOwned;
use serde_json::json;
use support::metrics::Exposition;
use support::operator::InProcessOperator;
use support::{TestEnv, wait_for};

/// Upper bound for anything the control plane and the operator do; seconds when warm.
const SETTLE: Duration = Duration::from_secs(90);
const SAMPLE: &str = "market-relayer";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample_path() -> PathBuf {
    repo().join("crds/samples/relayerdeployment.yaml")
}

/// The operator's controller running in this test process, watching only the test namespace.
struct Operator(InProcessOperator);

impl Operator {
    fn start(env: &TestEnv, resync: Duration) -> Self {
        Self(InProcessOperator::start(
            env.client.clone(),
            controller::Config {
                namespace: Some(env.namespace.clone()),
                resync,
                ..controller::Config::default()
            },
        ))
    }

    fn reconciles(&self) -> u64 {
        self.0.metrics.reconciles.get()
    }

    /// Child applies and deletes plus status writes: every write the operator made.
    fn writes(&self) -> u64 {
        let text = self.0.metrics.encode().expect("metrics encode");
        let children = Exposition::parse(&text)
            .expect("the operator's metrics")
            .value("relayer_operator_child_writes_total");
        // NB: counts of writes, exact in an f64.
        children as u64 + self.0.metrics.status_writes.get()
    }
}

async fn apply_sample(env: &TestEnv) -> Operator {
    env.install_crds(&repo().join("crds")).await;
    let operator = Operator::start(env, Duration::from_secs(300));
    env.kubectl(&["apply", "-f", &sample_path().display().to_string()])
        .expect("kubectl apply the sample");
    operator
}

async fn wait_phase(env: &TestEnv, name: &str, phase: Phase) -> RelayerDeployment {
    let api = env.api::<RelayerDeployment>();
    wait_for(&format!("{name} to be {phase:?}"), SETTLE, || {
        let api = api.clone();
        async move {
            let rd = api.get(name).await?;
            let done = rd.status.as_ref().is_some_and(|s| {
                s.phase == phase && s.observed_generation == rd.metadata.generation
            });
            Ok(done.then_some(rd))
        }
    })
    .await
}

fn assert_owned(meta: &kube::api::ObjectMeta, rd: &RelayerDeployment, what: &str) {
    let owners = meta.owner_references.as_ref().expect("owner references");
    assert_eq!(owners.len(), 1, "{what}: one owner");
    let owner = &owners[0];
    assert_eq!(owner.kind, "RelayerDeployment", "{what}");
    assert_eq!(owner.name, rd.name_any(), "{what}");
    assert_eq!(owner.uid, rd.uid().expect("uid"), "{what}");
    assert_eq!(owner.controller, Some(true), "{what}");
    let labels = meta.labels.as_ref().expect("labels");
    assert_eq!(labels["app.kubernetes.io/name"], "relayer", "{what}");
    assert_eq!(
        labels["app.kubernetes.io/instance"],
        rd.name_any(),
        "{what}"
    );
    assert_eq!(
        labels["app.kubernetes.io/managed-by"], "relayer-operator",
        "{what}"
    );
}

#[tokio::test]
async fn applying_the_sample_creates_every_child_and_reports_available() {
    let env = TestEnv::new("rd-sample").await;
    let _operator = apply_sample(&env).await;
    let rd = wait_phase(&env, SAMPLE, Phase::Stable).await;

    let status = rd.status.clone().expect("status");
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .expect("Available condition");
    assert_eq!(available.status, "True");
    assert_eq!(status.active_color.map(|c| c.as_str()), Some("blue"));
    assert_eq!((status.ready_replicas, status.desired_replicas), (3, 3));
    assert_eq!(
        status.selector.as_deref(),
        Some(
            "app.kubernetes.io/instance=market-relayer,app.kubernetes.io/name=relayer,relayer.foresight.dev/color=blue"
        )
    );

    let deployment = env
        .api::<Deployment>()
        .get("market-relayer-blue")
        .await
        .expect("blue");
    assert_owned(&deployment.metadata, &rd, "deployment");
    assert_eq!(deployment.spec.replicas, Some(3));
    let pod = deployment.spec.template.spec.clone().expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/foresight/relayer:0.1.0")
    );
    let security = container
        .security_context
        .clone()
        .expect("container security");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let readiness = container.readiness_probe.clone().and_then(|p| p.http_get);
    assert_eq!(readiness.and_then(|h| h.path).as_deref(), Some("/ready"));
    let requests = container
        .resources
        .clone()
        .and_then(|r| r.requests)
        .expect("requests");
    assert_eq!(requests["cpu"].0, "250m");

    let services = env.api::<Service>();
    for (name, colour) in [
        ("market-relayer", "blue"),
        ("market-relayer-preview", "green"),
    ] {
        let svc = services.get(name).await.expect("service");
        assert_owned(&svc.metadata, &rd, name);
        let selector = svc.spec.and_then(|s| s.selector).expect("selector");
        assert_eq!(selector["relayer.foresight.dev/color"], colour, "{name}");
    }

    let config_maps = env
        .api::<ConfigMap>()
        .list(&ListParams::default().labels(MANAGED_SELECTOR))
        .await
        .expect("config maps");
    assert_eq!(config_maps.items.len(), 1);
    let cm = &config_maps.items[0];
    assert_owned(&cm.metadata, &rd, "config map");
    let rendered = &cm.data.as_ref().expect("data")["config.yaml"];
    assert!(rendered.contains("listen: 0.0.0.0:3000"), "{rendered}");
    let volumes = deployment
        .spec
        .template
        .spec
        .and_then(|s| s.volumes)
        .expect("volumes");
    assert_eq!(
        volumes[0].config_map.as_ref().map(|c| c.name.clone()),
        Some(cm.name_any())
    );

    let hpa = env
        .api::<HorizontalPodAutoscaler>()
        .get(SAMPLE)
        .await
        .expect("hpa");
    assert_owned(&hpa.metadata, &rd, "hpa");
    let target = &hpa.spec.scale_target_ref;
    assert_eq!(
        (
            target.kind.as_str(),
            target.name.as_str(),
            target.api_version.as_deref()
        ),
        (
            "RelayerDeployment",
            SAMPLE,
            Some("relayer.foresight.dev/v1alpha1")
        )
    );
    assert_eq!(hpa.spec.metrics.map(|m| m.len()), Some(3));

    let ingress = env.api::<Ingress>().get(SAMPLE).await.expect("ingress");
    assert_owned(&ingress.metadata, &rd, "ingress");
    let spec = ingress.spec.expect("ingress spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(spec.rules.map(|r| r.len()), Some(2));

    let pdb = env
        .api::<PodDisruptionBudget>()
        .get(SAMPLE)
        .await
        .expect("pdb");
    assert_owned(&pdb.metadata, &rd, "pdb");

    let revisions = env
        .api::<ControllerRevision>()
        .list(&ListParams::default().labels(MANAGED_SELECTOR))
        .await
        .expect("revisions");
    assert_eq!(revisions.items.len(), 1);
    assert_owned(&revisions.items[0].metadata, &rd, "controller revision");
    assert_eq!(
        status.current_revision.as_deref(),
        revisions.items[0]
            .labels()
            .get("relayer.foresight.dev/revision")
            .map(String::as_str)
    );

    let printed = env
        .kubectl(&["get", "rd", SAMPLE, "--no-headers"])
        .expect("kubectl get rd");
    for column in ["blue", "Stable", "ghcr.io/foresight/relayer:0.1.0"] {
        assert!(
            printed.contains(column),
            "kubectl get shows {column}: {printed}"
        );
    }
    let explained = env
        .kubectl(&["explain", "relayerdeployment.spec.image"])
        .expect("kubectl explain");
    assert!(
        explained.contains("Container image of the relayer"),
        "{explained}"
    );
}

/// Applies `spec_patch` merged over a valid spec with kubectl; returns kubectl's error text.
fn apply_invalid(env: &TestEnv, dir: &Path, name: &str, rd: serde_json::Value) -> String {
    let path = dir.join(format!("{}.json", name.replace(['/', ' '], "_")));
    std::fs::write(&path, rd.to_string()).expect("write fixture");
    match env.kubectl(&["apply", "-f", &path.display().to_string()]) {
        Ok(out) => panic!("{name}: kubectl accepted an invalid RelayerDeployment: {out}"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn invalid_relayer_deployments_are_rejected_naming_the_field() {
    let env = TestEnv::new("rd-invalid").await;
    env.install_crds(&repo().join("crds")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let base = |name: &str, spec: serde_json::Value| {
        let mut full = json!({
            "image": "relayer:1",
            "store": { "redis": { "url": "redis://redis.invalid:6379/0" } },
        });
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    full.remove(k);
                } else {
                    full.insert(k.clone(), v.clone());
                }
            }
        }
        json!({
            "apiVersion": "relayer.foresight.dev/v1alpha1",
            "kind": "RelayerDeployment",
            "metadata": { "name": name },
            "spec": full,
        })
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "negative-replicas",
            base("r1", json!({"replicas": -1})),
            "spec.replicas",
        ),
        (
            "empty-image",
            base("r2", json!({"image": ""})),
            "spec.image",
        ),
        (
            "missing-image",
            json!({"apiVersion": "relayer.foresight.dev/v1alpha1", "kind": "RelayerDeployment",
                   "metadata": {"name": "r3"}, "spec": {"replicas": 1}}),
            "spec.image",
        ),
        (
            "min-above-max",
            base(
                "r4",
                json!({"autoscaling": {"minReplicas": 10, "maxReplicas": 5}}),
            ),
            "minReplicas",
        ),
        (
            "cpu-percent-out-of-range",
            base(
                "r5",
                json!({"autoscaling": {"targetCpuUtilizationPercentage": 150}}),
            ),
            "spec.autoscaling.targetCpuUtilizationPercentage",
        ),
        (
            "port-out-of-range",
            base("r6", json!({"service": {"port": 70000}})),
            "spec.service.port",
        ),
        (
            "unknown-service-type",
            base("r7", json!({"service": {"type": "Magic"}})),
            "spec.service.type",
        ),
        (
            "bad-ingress-host",
            base("r8", json!({"ingress": {"host": "Not_A_Host"}})),
            "spec.ingress.host",
        ),
        (
            "preview-host-equals-host",
            base(
                "r9",
                json!({"ingress": {"host": "a.example.com", "previewHost": "a.example.com"}}),
            ),
            "previewHost",
        ),
        (
            "bad-listen",
            base("r10", json!({"config": {"listen": "nope"}})),
            "config.listen",
        ),
        (
            "bad-redis-url",
            base("r11", json!({"config": {"redisUrl": "http://redis"}})),
            "redisUrl",
        ),
        (
            "body-limit-too-small",
            base("r12", json!({"config": {"limits": {"maxBodyBytes": 1}}})),
            "spec.config.limits.maxBodyBytes",
        ),
        (
            "progress-deadline-too-short",
            base(
                "r13",
                json!({"strategy": {"blueGreen": {"progressDeadlineSeconds": 1}}}),
            ),
            "spec.strategy.blueGreen.progressDeadlineSeconds",
        ),
        (
            "gate-failure-limit-not-below-samples",
            base(
                "r14",
                json!({"strategy": {"blueGreen": {"prePromotion": {"samples": 3, "failureLimit": 3}}}}),
            ),
            "failureLimit",
        ),
        (
            "operator-owned-pod-label",
            base(
                "r15",
                json!({"pod": {"labels": {"app.kubernetes.io/name": "x"}}}),
            ),
            "pod.labels",
        ),
        (
            "zero-history",
            base("r16", json!({"revisionHistoryLimit": 0})),
            "spec.revisionHistoryLimit",
        ),
        (
            "unknown-field",
            base("r17", json!({"replicaz": 3})),
            "replicaz",
        ),
        (
            "name-too-long-for-the-preview-service",
            base(&"x".repeat(56), json!({})),
            "metadata.name",
        ),
        // State and secrets: a store every pod shares, secrets only from Secrets.
        (
            "in-memory-with-three-replicas",
            base("s1", json!({"store": null, "replicas": 3})),
            "spec.replicas must be at most 1",
        ),
        (
            "memory-store-with-two-replicas",
            base("s2", json!({"store": {"memory": {}}, "replicas": 2})),
            "spec.replicas must be at most 1",
        ),
        (
            "in-memory-with-autoscaling",
            base(
                "s3",
                json!({"store": {"memory": {}, "acceptStateLoss": true}, "replicas": 1,
                       "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}),
            ),
            "spec.autoscaling needs a shared store",
        ),
        (
            "literal-admin-token",
            base(
                "s4",
                json!({"config": {"adminToken": "0123456789abcdef0123"}}),
            ),
            "config.adminToken must not be written",
        ),
        (
            "store-url-with-a-password",
            base(
                "s5",
                json!({"store": {"redis": {"url": "redis://:hunter2hunter2@redis:6379/0"}}}),
            ),
            "spec.store.redis.url must not hold credentials",
        ),
        (
            "store-url-not-redis",
            base(
                "s6",
                json!({"store": {"redis": {"url": "http://redis:6379"}}}),
            ),
            "spec.store.redis.url",
        ),
        (
            "rate-limit-url-with-a-password",
            base(
                "s7",
                json!({"config": {"rateLimit": {"redisUrl": "redis://user:pw@counters:6379"}}}),
            ),
            "config.rateLimit.redisUrl must not hold credentials",
        ),
        (
            "settlement-url-with-a-token",
            base(
                "s8",
                json!({"config": {"settlement": {"url": "https://token@settle.example/settle"}}}),
            ),
            "config.settlement.url must not hold credentials",
        ),
        (
            "both-redis-and-memory",
            base(
                "s9",
                json!({"store": {"redis": {"url": "redis://r:6379"}, "memory": {}}}),
            ),
            "exactly one of redis and memory",
        ),
        (
            "url-and-url-secret",
            base(
                "s10",
                json!({"store": {"redis": {"url": "redis://r:6379",
                                            "urlSecretRef": {"name": "r", "key": "url"}}}}),
            ),
            "exactly one of url and urlSecretRef",
        ),
        (
            "tls-without-rediss",
            base(
                "s11",
                json!({"store": {"redis": {"url": "redis://r:6379", "tls": {}}}}),
            ),
            "spec.store.redis.tls needs a rediss:// url",
        ),
        (
            "cluster-nodes-without-cluster-mode",
            base(
                "s12",
                json!({"store": {"redis": {"url": "redis://r:6379",
                                            "clusterNodes": ["r2:6379"]}}}),
            ),
            "spec.store.redis.clusterNodes needs mode: cluster",
        ),
        (
            "cluster-node-with-credentials",
            base(
                "s13",
                json!({"store": {"redis": {"url": "redis://r:6379", "mode": "cluster",
                                            "clusterNodes": ["redis://:pw@r2:6379"]}}}),
            ),
            "spec.store.redis.clusterNodes[0]",
        ),
        (
            "cluster-mode-in-the-config",
            base(
                "s14",
                json!({"store": {"redis": {"url": "redis://r:6379"}},
                       "config": {"redis": {"mode": "cluster"}}}),
            ),
            "config.redis.mode is set by the operator from spec.store.redis.mode",
        ),
        (
            "cluster-nodes-with-a-url-secret",
            base(
                "s16",
                json!({"store": {"redis": {"urlSecretRef": {"name": "r", "key": "url"},
                                            "mode": "cluster", "clusterNodes": ["evil.example:6379"]}}}),
            ),
            "spec.store.redis.clusterNodes cannot be used with urlSecretRef",
        ),
        (
            "cluster-with-a-database",
            base(
                "s17",
                json!({"store": {"redis": {"url": "redis://r:6379/2", "mode": "cluster"}}}),
            ),
            "must not name a database other than 0 in cluster mode",
        ),
        (
            "unknown-redis-mode",
            base(
                "s15",
                json!({"store": {"redis": {"url": "redis://r:6379", "mode": "sentinel"}}}),
            ),
            "spec.store.redis.mode",
        ),
        (
            "ca-from-both",
            base(
                "s12",
                json!({"store": {"redis": {"url": "rediss://r:6379", "tls": {"ca": {
                    "secretKeyRef": {"name": "ca", "key": "ca.crt"},
                    "configMapKeyRef": {"name": "ca", "key": "ca.crt"}}}}}}),
            ),
            "exactly one of secretKeyRef and configMapKeyRef",
        ),
        (
            "admin-token-in-pod-env",
            base(
                "s13",
                json!({"pod": {"env": [{"name": "RELAYER_ADMIN_TOKEN", "value": "0123456789abcdef"}]}}),
            ),
            "pod.env must not set RELAYER_ADMIN_TOKEN",
        ),
        (
            "literal-redis-password",
            base(
                "s15",
                json!({"config": {"redis": {"password": "hunter2hunter2"}}}),
            ),
            "config.redis.password must not be written",
        ),
        (
            "literal-settlement-credential",
            base(
                "s16",
                json!({"config": {"settlement": {"url": "https://settle.example/s",
                                                 "credential": "Bearer abc"}}}),
            ),
            "config.settlement.credential must not be written",
        ),
        (
            "ca-file-in-config",
            base(
                "s17",
                json!({"config": {"redis": {"caFile": "/etc/ca.pem"}}}),
            ),
            "config.redis.caFile is set by the operator",
        ),
        (
            "settlement-credential-without-a-settlement-url",
            base(
                "s18",
                json!({"secrets": {"settlementCredential": {
                    "secretKeyRef": {"name": "settle", "key": "key"}}}}),
            ),
            "needs config.settlement.url",
        ),
        (
            "settlement-url-with-extra-slashes-and-a-password",
            base(
                "s19",
                json!({"config": {"settlement": {"url": "https:///settler:s3cret@settle.example/v1"}}}),
            ),
            "config.settlement.url must not hold credentials",
        ),
        (
            "store-url-with-a-fragment",
            base(
                "s22",
                json!({"store": {"redis": {"url": "rediss://redis:6380/0#insecure"}}}),
            ),
            "must not have a #fragment",
        ),
        (
            "reserved-credential-header",
            base(
                "s23",
                json!({"config": {"settlement": {"url": "https://settle.example/s"}},
                       "secrets": {"settlementCredential": {"header": "Host",
                           "secretKeyRef": {"name": "settle", "key": "key"}}}}),
            ),
            "must not be a header the settlement client sets itself",
        ),
        (
            "config-redis-url-of-any-kind",
            base(
                "s24",
                json!({"config": {"redisUrl": "redis://redis:6379/0"}}),
            ),
            "config.redisUrl is not used in a RelayerDeployment",
        ),
        (
            "secret-ref-without-key",
            base("s14", json!({"secrets": {"adminToken": {"name": "admin"}}})),
            "spec.secrets.adminToken.key",
        ),
    ];
    for (name, rd, field) in cases {
        let error = apply_invalid(&env, dir.path(), name, rd);
        assert!(
            error.contains(field),
            "{name}: the rejection should name {field}: {error}"
        );
    }
    let left = env
        .api::<RelayerDeployment>()
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(left.items.is_empty(), "nothing invalid was stored");

    // The same rules let the intended shapes through: a shared Redis with every secret from a
    // Secret, and a single in-memory pod.
    let valid = [
        base(
            "v1",
            json!({"store": {"redis": {"url": "rediss://redis:6380/0",
                                       "passwordSecretRef": {"name": "redis", "key": "password"},
                                       "tls": {"ca": {"configMapKeyRef": {"name": "ca", "key": "ca.crt"}}}}},
                   "secrets": {"adminToken": {"name": "admin", "key": "token"},
                               "settlementCredential": {"header": "X-Api-Key",
                                   "secretKeyRef": {"name": "settle", "key": "key"}}},
                   "config": {"settlement": {"url": "https://settle.example/settle"}},
                   "autoscaling": {"minReplicas": 3, "maxReplicas": 20}}),
        ),
        base(
            "v2",
            json!({"store": {"memory": {}, "acceptStateLoss": true}, "replicas": 1}),
        ),
        base(
            "v3",
            json!({"store": {"redis": {"urlSecretRef": {"name": "r", "key": "url"}}}}),
        ),
        base(
            "v4",
            json!({"store": {"redis": {"url": "redis://redis-cluster-0.redis:6379", "mode": "cluster",
                                       "clusterNodes": ["redis-cluster-1.redis:6379", "10.0.0.7:6379", "[fd00::7]:6379"]}},
                   "config": {"redis": {"replicaAcks": 1}}}),
        ),
    ];
    for (i, rd) in valid.into_iter().enumerate() {
        let path = dir.path().join(format!("valid-{i}.json"));
        std::fs::write(&path, rd.to_string()).expect("write fixture");
        env.kubectl(&["apply", "-f", &path.display().to_string()])
            .unwrap_or_else(|e| panic!("valid RelayerDeployment {i} refused: {e:#}"));
    }
}

#[tokio::test]
async fn kubectl_scale_resizes_the_active_deployment_through_the_scale_subresource() {
    let env = TestEnv::new("rd-scale").await;
    let _operator = apply_sample(&env).await;
    wait_phase(&env, SAMPLE, Phase::Stable).await;
    env.kubectl(&[
        "scale",
        &format!("relayerdeployment/{SAMPLE}"),
        "--replicas=5",
    ])
    .expect("kubectl scale");
    let deployments = env.api::<Deployment>();
    wait_for("the blue Deployment to have 5 replicas", SETTLE, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("market-relayer-blue").await?;
            Ok((d.spec.replicas == Some(5)).then_some(()))
        }
    })
    .await;
    let rd = wait_phase(&env, SAMPLE, Phase::Stable).await;
    let status = rd.status.expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (5, 5));
    let scale = env
        .kubectl(&["get", "--subresource=scale", "rd", SAMPLE, "-o", "json"])
        .expect("get scale");
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale json");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["replicas"], 5);
    assert!(
        scale["status"]["selector"]
            .as_str()
            .is_some_and(|s| s.contains("relayer.foresight.dev/color=blue")),
        "{scale}"
    );
}

#[tokio::test]
async fn hand_edited_and_deleted_children_are_restored_and_deleting_the_rd_collects_them() {
    let env = TestEnv::new("rd-drift").await;
    let _operator = apply_sample(&env).await;
    let rd = wait_phase(&env, SAMPLE, Phase::Stable).await;

    let deployments = env.api::<Deployment>();
    deployments
        .patch(
            "market-relayer-blue",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("hand-edit replicas");
    let services = env.api::<Service>();
    services
        .patch(
            SAMPLE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"relayer.foresight.dev/color": "green"}}})),
        )
        .await
        .expect("hand-edit the active selector");
    services
        .delete("market-relayer-preview", &DeleteParams::default())
        .await
        .expect("hand-delete the preview Service");
    let cm_name = env
        .api::<ConfigMap>()
        .list(&ListParams::default().labels(MANAGED_SELECTOR))
        .await
        .expect("config maps")
        .items[0]
        .name_any();
    env.api::<ConfigMap>()
        .delete(&cm_name, &DeleteParams::default())
        .await
        .expect("hand-delete the ConfigMap");
    env.api::<PodDisruptionBudget>()
        .delete(SAMPLE, &DeleteParams::default())
        .await
        .expect("hand-delete the PDB");

    wait_for("every child to be restored", SETTLE, || {
        let (deployments, services, env) = (deployments.clone(), services.clone(), &env);
        let cm_name = cm_name.clone();
        async move {
            let d = deployments.get("market-relayer-blue").await?;
            let active = services.get(SAMPLE).await?;
            let colour = active
                .spec
                .and_then(|s| s.selector)
                .and_then(|s| s.get("relayer.foresight.dev/color").cloned());
            let preview = services.get_opt("market-relayer-preview").await?;
            let cm = env.api::<ConfigMap>().get_opt(&cm_name).await?;
            let pdb = env.api::<PodDisruptionBudget>().get_opt(SAMPLE).await?;
            Ok((d.spec.replicas == Some(3)
                && colour.as_deref() == Some("blue")
                && preview.is_some()
                && cm.is_some()
                && pdb.is_some())
            .then_some(()))
        }
    })
    .await;
    let events = env
        .kubectl(&["get", "events", "-o", "json"])
        .expect("events");
    assert!(
        events.contains("DriftRepaired"),
        "a DriftRepaired event: {events}"
    );

    env.api::<RelayerDeployment>()
        .delete(SAMPLE, &DeleteParams::foreground())
        .await
        .expect("delete the RelayerDeployment");
    let uid = rd.uid().expect("uid");
    wait_for("garbage collection of every child", SETTLE, || {
        let env = &env;
        let uid = uid.clone();
        async move {
            let left = owned_by::<Deployment>(env, &uid).await?
                + owned_by::<Service>(env, &uid).await?
                + owned_by::<ConfigMap>(env, &uid).await?
                + owned_by::<HorizontalPodAutoscaler>(env, &uid).await?
                + owned_by::<Ingress>(env, &uid).await?
                + owned_by::<PodDisruptionBudget>(env, &uid).await?
                + owned_by::<ControllerRevision>(env, &uid).await?;
            let rd_gone = env
                .api::<RelayerDeployment>()
                .get_opt(SAMPLE)
                .await?
                .is_none();
            Ok((left == 0 && rd_gone).then_some(()))
        }
    })
    .await;
}

/// How many objects of kind `K` in the test's namespace the object with `uid` owns.
async fn owned_by<K>(env: &TestEnv, uid: &str) -> kube::Result<usize>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let items = env.api::<K>().list(&ListParams::default()).await?.items;
    Ok(items
        .iter()
        .filter(|o| {
            o.meta()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid)
        })
        .count())
}

/// resourceVersions of every managed child, by kind and name.
async fn child_versions(env: &TestEnv) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels(MANAGED_SELECTOR);
    let mut versions = BTreeMap::new();
    macro_rules! collect {
        ($($kind:ty),*) => {$(
            for o in env.api::<$kind>().list(&lp).await.expect("list children").items {
                versions.insert(
                    format!("{}/{}", <$kind>::kind(&()), o.name_any()),
                    o.resource_version().expect("resourceVersion"),
                );
            }
        )*};
    }
    collect!(
        Deployment,
        Service,
        ConfigMap,
        HorizontalPodAutoscaler,
        Ingress,
        PodDisruptionBudget,
        ControllerRevision
    );
    versions
}

#[tokio::test]
async fn resyncs_of_a_converged_relayer_deployment_change_nothing() {
    const RESYNCS: u64 = 10;
    let env = TestEnv::new("rd-idle").await;
    env.install_crds(&repo().join("crds")).await;
    let operator = Operator::start(&env, Duration::from_millis(500));
    env.kubectl(&["apply", "-f", &sample_path().display().to_string()])
        .expect("apply the sample");
    wait_phase(&env, SAMPLE, Phase::Stable).await;
    // Let the Deployment controller's last status updates land before counting.
    let deadline = std::time::Instant::now() + SETTLE;
    let mut before = child_versions(&env).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = child_versions(&env).await;
        if now == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "children never settled"
        );
        before = now;
    }
    assert_eq!(before.len(), 8, "every child exists: {before:?}");
    let rd_version = env
        .api::<RelayerDeployment>()
        .get(SAMPLE)
        .await
        .expect("rd")
        .resource_version();
    let (reconciles, writes) = (operator.reconciles(), operator.writes());

    wait_for(&format!("{RESYNCS} resyncs"), SETTLE, || {
        let done = operator.reconciles() >= reconciles + RESYNCS;
        async move { Ok(done.then_some(())) }
    })
    .await;

    let after = child_versions(&env).await;
    let bumped: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        bumped.is_empty(),
        "resourceVersions bumped by idle resyncs: {bumped:?}"
    );
    assert_eq!(
        operator.writes(),
        writes,
        "idle resyncs wrote nothing: {}",
        operator.0.metrics.encode().expect("metrics")
    );
    let rd_after = env
        .api::<RelayerDeployment>()
        .get(SAMPLE)
        .await
        .expect("rd")
        .resource_version();
    assert_eq!(rd_version, rd_after, "the status was not rewritten");
    eprintln!(
        "{} resyncs, {} children, 0 resourceVersion changes, 0 writes",
        operator.reconciles() - reconciles,
        after.len()
    );
}

#[test]
fn committed_crds_match_the_rust_types() {
    let path = repo().join(relayer_operator::crd::CRD_FILE);
    let committed = std::fs::read_to_string(&path).expect("crds/ holds the generated CRD");
    let generated = relayer_operator::crd::crd_yaml().expect("render the CRD");
    assert!(
        committed == generated,
        "{} is stale: run `cargo run --bin crdgen` and commit the result",
        path.display()
    );
}
