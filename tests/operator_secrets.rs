//! State and secrets against a real API server, with the operator binary: secret values stay in
//! their Secrets through a cutover and a rollback (nothing else the operator writes, and not
//! its log, holds one), and a cutover of an in-memory store is refused with a condition and a
//! Warning Event until the spec accepts losing the state.
//!
//! Pods are simulated (no process), so the stores they reference are never contacted.
//! Run with `cargo test --test operator_secrets`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use relayer_operator::crd::{Phase, RelayerDeployment, RolloutStep};
use serde_json::{Value, json};
use support::operator::{OperatorProcess, POD_NETWORK};
use support::{TestEnv, wait_for};

/// Upper bound for anything the control plane and the operator do; seconds when warm.
const SETTLE: Duration = Duration::from_secs(120);
const NAME: &str = "market";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The operator binary for this test's namespace, logging at debug level (the most it says).
fn spawn_operator(env: &TestEnv) -> OperatorProcess {
    OperatorProcess::launch(env, "secrets")
        .env("RUST_LOG", "debug")
        .args(["--namespace", &env.namespace])
        .args(["--leader-election", "false"])
        .args(["--pod-networks", POD_NETWORK])
        .spawn()
}

async fn apply(env: &TestEnv, spec: Value) {
    let rd = json!({
        "apiVersion": "relayer.foresight.dev/v1alpha1",
        "kind": "RelayerDeployment",
        "metadata": { "name": NAME },
        "spec": spec,
    });
    env.api::<RelayerDeployment>()
        .patch(
            NAME,
            &PatchParams::apply("operator-secrets-test").force(),
            &Patch::Apply(&rd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {NAME}: {e}"));
}

async fn merge(env: &TestEnv, patch: Value) {
    env.api::<RelayerDeployment>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {NAME}: {e}"));
}

/// Waits until the operator has seen the latest spec (and any rollback annotation) and the
/// object is Stable running `image`.
async fn wait_stable(env: &TestEnv, image: &str) -> RelayerDeployment {
    let api = env.api::<RelayerDeployment>();
    wait_for(&format!("{NAME} Stable on {image}"), SETTLE, || {
        let api = api.clone();
        async move {
            let rd = api.get(NAME).await?;
            let pending = rd
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("relayer.foresight.dev/rollback-to"));
            let done = !pending
                && rd.spec.image == image
                && rd.status.as_ref().is_some_and(|s| {
                    s.phase == Phase::Stable
                        && s.observed_generation == rd.metadata.generation
                        && s.rollout.as_ref().is_some_and(|r| {
                            r.step == RolloutStep::Stable
                                && Some(&r.active_revision) == s.current_revision.as_ref()
                        })
                });
            Ok(done.then_some(rd))
        }
    })
    .await
}

/// The env of the relayer container of the active colour's Deployment.
async fn active_env(env: &TestEnv, rd: &RelayerDeployment) -> Vec<Value> {
    let color = rd
        .status
        .as_ref()
        .and_then(|s| s.active_color)
        .expect("an active colour");
    let deployment = env
        .api::<Deployment>()
        .get(&format!("{NAME}-{color}"))
        .await
        .expect("the active Deployment");
    let json = serde_json::to_value(&deployment).expect("json");
    json["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn secret_ref_of<'a>(env: &'a [Value], name: &str) -> Option<&'a Value> {
    env.iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["valueFrom"]["secretKeyRef"])
}

/// Everything in the namespace the operator (or a controller acting on its objects) wrote,
/// as JSON text.
async fn written_objects(env: &TestEnv) -> String {
    let lp = ListParams::default();
    let mut all = Vec::new();
    macro_rules! dump {
        ($kind:ty) => {
            for object in env.api::<$kind>().list(&lp).await.expect("list").items {
                all.push(serde_json::to_string(&object).expect("json"));
            }
        };
    }
    dump!(ConfigMap);
    dump!(ControllerRevision);
    dump!(Event);
    dump!(RelayerDeployment);
    dump!(Deployment);
    dump!(ReplicaSet);
    all.join("\n")
}

#[tokio::test]
async fn secret_values_stay_in_their_secrets_through_a_cutover_and_a_rollback() {
    let env = TestEnv::new("secrets").await;
    env.install_crds(&repo().join("crds")).await;
    let suffix = uuid_like();
    let admin_token = format!("admin-token-{suffix}");
    let redis_password = format!("redis-password-{suffix}");
    let redis_url = format!("redis://:url-password-{suffix}@redis.invalid:6379/0");
    let credential = format!("Bearer settle-{suffix}");
    env.create_secret("admin", "token", &admin_token).await;
    env.create_secret("redis", "redis-password", &redis_password)
        .await;
    env.create_secret("redis-url", "url", &redis_url).await;
    env.create_secret("settle", "authorization", &credential)
        .await;
    let operator = spawn_operator(&env);

    let strategy =
        json!({ "blueGreen": { "scaleDownDelaySeconds": 1, "maxScaleDownWaitSeconds": 2 } });
    apply(
        &env,
        json!({
            "image": "ghcr.io/foresight/relayer:1",
            "replicas": 2,
            "store": { "redis": {
                "url": "redis://redis.invalid:6379/0",
                "passwordSecretRef": { "name": "redis", "key": "redis-password" },
            } },
            "secrets": {
                "adminToken": { "name": "admin", "key": "token" },
                "settlementCredential": {
                    "header": "Authorization",
                    "secretKeyRef": { "name": "settle", "key": "authorization" },
                },
            },
            "config": { "settlement": { "url": "https://settle.invalid/settle" } },
            "strategy": strategy,
        }),
    )
    .await;
    let first = wait_stable(&env, "ghcr.io/foresight/relayer:1").await;
    let env_one = active_env(&env, &first).await;
    assert_eq!(
        secret_ref_of(&env_one, "RELAYER_REDIS__PASSWORD"),
        Some(&json!({ "name": "redis", "key": "redis-password" })),
        "{env_one:?}"
    );
    assert_eq!(
        secret_ref_of(&env_one, "RELAYER_ADMIN_TOKEN"),
        Some(&json!({ "name": "admin", "key": "token" }))
    );

    // Revision 2: a new image, and the whole Redis URL from a Secret instead. NB: the operator
    // cannot read the Secret, so it does not refuse the move as one to other state.
    merge(
        &env,
        json!({ "spec": {
            "image": "ghcr.io/foresight/relayer:2",
            "store": { "redis": {
                "url": null,
                "passwordSecretRef": null,
                "urlSecretRef": { "name": "redis-url", "key": "url" },
            } },
        } }),
    )
    .await;
    let second = wait_stable(&env, "ghcr.io/foresight/relayer:2").await;
    let active = |rd: &RelayerDeployment| rd.status.as_ref().and_then(|s| s.active_color);
    assert_ne!(active(&first), active(&second), "a cutover happened");
    let env_two = active_env(&env, &second).await;
    assert_eq!(
        secret_ref_of(&env_two, "RELAYER_REDIS_URL"),
        Some(&json!({ "name": "redis-url", "key": "url" })),
        "{env_two:?}"
    );
    assert_eq!(secret_ref_of(&env_two, "RELAYER_REDIS__PASSWORD"), None);

    // Roll back: revision 1's references come back with its image.
    env.kubectl(&[
        "annotate",
        &format!("rd/{NAME}"),
        "relayer.foresight.dev/rollback-to=previous",
    ])
    .expect("kubectl annotate rollback-to");
    let third = wait_stable(&env, "ghcr.io/foresight/relayer:1").await;
    let redis = third.spec.redis().expect("a Redis store");
    assert_eq!(redis.url.as_deref(), Some("redis://redis.invalid:6379/0"));
    assert_eq!(
        redis.url_secret_ref, None,
        "the rollback restored revision 1's store"
    );
    let env_three = active_env(&env, &third).await;
    assert_eq!(
        secret_ref_of(&env_three, "RELAYER_REDIS__PASSWORD"),
        Some(&json!({ "name": "redis", "key": "redis-password" }))
    );
    assert_eq!(secret_ref_of(&env_three, "RELAYER_REDIS_URL"), None);

    let written = written_objects(&env).await;
    let log = operator.log();
    assert!(
        log.contains(NAME) && written.contains("ControllerRevision"),
        "the evidence is not empty"
    );
    for secret in [&admin_token, &redis_password, &redis_url, &credential] {
        // NB: also as a Secret's data holds it (base64), in case one was copied whole.
        let encoded = serde_json::to_value(k8s_openapi::ByteString(secret.as_bytes().to_vec()))
            .expect("base64");
        let encoded = encoded.as_str().expect("a string").to_owned();
        for form in [secret.clone(), encoded] {
            assert!(
                !written.contains(&form),
                "{form:?} is in an object the operator wrote"
            );
            assert!(!log.contains(&form), "{form:?} is in the operator's log");
        }
    }
}

#[tokio::test]
async fn a_cutover_of_an_in_memory_store_is_refused_until_the_spec_accepts_losing_the_state() {
    let env = TestEnv::new("memory-cutover").await;
    env.install_crds(&repo().join("crds")).await;
    let _operator = spawn_operator(&env);
    apply(
        &env,
        json!({
            "image": "ghcr.io/foresight/relayer:1",
            "replicas": 1,
            "store": { "memory": {} },
            "strategy": { "blueGreen": { "scaleDownDelaySeconds": 1, "maxScaleDownWaitSeconds": 2 } },
        }),
    )
    .await;
    let first = wait_stable(&env, "ghcr.io/foresight/relayer:1").await;
    let color = first
        .status
        .as_ref()
        .and_then(|s| s.active_color)
        .expect("colour");
    // The scale subresource is held to the same rule as the spec.
    let scaled = env.kubectl(&["scale", &format!("rd/{NAME}"), "--replicas=3"]);
    let error = format!(
        "{:#}",
        scaled.expect_err("an in-memory store cannot scale out")
    );
    assert!(error.contains("spec.replicas must be at most 1"), "{error}");

    merge(
        &env,
        json!({ "spec": { "image": "ghcr.io/foresight/relayer:2" } }),
    )
    .await;
    let api = env.api::<RelayerDeployment>();
    let refused = wait_for("the cutover to be refused", SETTLE, || {
        let api = api.clone();
        async move {
            let rd = api.get(NAME).await?;
            let condition = rd.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Progressing" && c.reason == "CutoverRefused")
                    .cloned()
            });
            Ok(condition)
        }
    })
    .await;
    assert_eq!(refused.status, "False");
    assert!(
        refused.message.contains("in memory") && refused.message.contains("acceptStateLoss"),
        "{}",
        refused.message
    );
    let events = wait_for("a Warning Event CutoverRefused", SETTLE, || {
        let events = env.api::<Event>();
        async move {
            let found: Vec<Event> = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("CutoverRefused"))
                .collect();
            Ok((!found.is_empty()).then_some(found))
        }
    })
    .await;
    assert!(
        events.iter().all(|e| e.type_.as_deref() == Some("Warning")),
        "{events:?}"
    );
    // Nothing moved: the other colour was never created and the active one runs revision 1.
    let rd = api.get(NAME).await.expect("rd");
    let status = rd.status.as_ref().expect("status");
    assert_eq!(status.active_color, Some(color));
    assert_eq!(
        status.rollout.as_ref().map(|r| r.step),
        Some(RolloutStep::Stable)
    );
    let deployments = env.api::<Deployment>();
    let other = if color.as_str() == "blue" {
        "green"
    } else {
        "blue"
    };
    let idle = deployments
        .get_opt(&format!("{NAME}-{other}"))
        .await
        .expect("get");
    assert!(
        idle.is_none_or(|d| d.spec.replicas == Some(0)),
        "the idle colour was not started"
    );
    let active = deployments
        .get(&format!("{NAME}-{color}"))
        .await
        .expect("active Deployment");
    let image = active
        .spec
        .template
        .spec
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("ghcr.io/foresight/relayer:1"));

    // Accepting the loss lets the cutover run.
    merge(
        &env,
        json!({ "spec": { "store": { "acceptStateLoss": true } } }),
    )
    .await;
    let done = wait_stable(&env, "ghcr.io/foresight/relayer:2").await;
    assert_ne!(
        done.status.as_ref().and_then(|s| s.active_color),
        Some(color)
    );
}

/// A value unique to this run (so a match can only come from this test's Secrets).
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

#[tokio::test]
async fn a_rollback_to_a_revision_the_api_server_now_refuses_is_refused_with_a_warning() {
    let env = TestEnv::new("old-revision").await;
    env.install_crds(&repo().join("crds")).await;
    let _operator = spawn_operator(&env);
    apply(
        &env,
        json!({
            "image": "ghcr.io/foresight/relayer:1",
            "replicas": 2,
            "store": { "redis": { "url": "redis://redis.invalid:6379/0" } },
        }),
    )
    .await;
    wait_stable(&env, "ghcr.io/foresight/relayer:1").await;
    // A revision kept from before secrets were refused in spec.config: a literal admin token.
    let revisions = env.api::<ControllerRevision>();
    let current = revisions
        .list(&ListParams::default())
        .await
        .expect("list revisions")
        .items
        .into_iter()
        .next()
        .expect("the current revision");
    let mut old = serde_json::to_value(&current).expect("json");
    old["metadata"] = json!({
        "name": format!("{NAME}-old0000001"),
        "labels": old["metadata"]["labels"].clone(),
        "annotations": old["metadata"]["annotations"].clone(),
        "ownerReferences": old["metadata"]["ownerReferences"].clone(),
    });
    old["metadata"]["labels"]["relayer.foresight.dev/revision"] = json!("old0000001");
    old["revision"] = json!(0);
    old["data"]["image"] = json!("ghcr.io/foresight/relayer:0");
    old["data"]["config"]["adminToken"] = json!("literal-admin-token-0123456789");
    let old: ControllerRevision = serde_json::from_value(old).expect("revision");
    revisions
        .create(&PostParams::default(), &old)
        .await
        .expect("create the old revision");

    env.kubectl(&[
        "annotate",
        &format!("rd/{NAME}"),
        "relayer.foresight.dev/rollback-to=old0000001",
    ])
    .expect("kubectl annotate rollback-to");
    let refused = wait_for("a Warning Event RollbackRefused", SETTLE, || {
        let events = env.api::<Event>();
        async move {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("RollbackRefused"));
            Ok(found)
        }
    })
    .await;
    let note = refused.message.unwrap_or_default();
    assert!(
        note.contains("old0000001") && note.contains("config.adminToken"),
        "{note}"
    );
    assert!(
        !note.contains("literal-admin-token"),
        "the Event does not repeat the secret: {note}"
    );
    assert_eq!(refused.type_.as_deref(), Some("Warning"));
    let rd = wait_stable(&env, "ghcr.io/foresight/relayer:1").await;
    assert_eq!(rd.spec.config.admin_token, None, "the spec was not touched");
}

#[tokio::test]
async fn a_secret_in_pod_env_that_the_schema_cannot_see_is_refused_by_the_operator() {
    let env = TestEnv::new("pod-env-secret").await;
    env.install_crds(&repo().join("crds")).await;
    let _operator = spawn_operator(&env);
    // NB: the relayer reads RELAYER_* names in any case; the exact-name CEL rule lets this by.
    let token = "literal-admin-token-0123456789";
    apply(
        &env,
        json!({
            "image": "ghcr.io/foresight/relayer:1",
            "store": { "redis": { "url": "redis://redis.invalid:6379/0" } },
            "pod": { "env": [{ "name": "relayer_admin_token", "value": token }] },
        }),
    )
    .await;
    let api = env.api::<RelayerDeployment>();
    let degraded = wait_for("an InvalidSpec status naming pod.env", SETTLE, || {
        let api = api.clone();
        async move {
            let rd = api.get(NAME).await?;
            Ok(rd.status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Degraded" && c.reason == "InvalidSpec")
            }))
        }
    })
    .await;
    assert!(
        degraded.message.contains("spec.pod.env[0]") && !degraded.message.contains(token),
        "{}",
        degraded.message
    );
    let lp = ListParams::default();
    let revisions = env
        .api::<ControllerRevision>()
        .list(&lp)
        .await
        .expect("list");
    let config_maps = env.api::<ConfigMap>().list(&lp).await.expect("list");
    let written = format!(
        "{}{}",
        serde_json::to_string(&revisions.items).expect("json"),
        serde_json::to_string(&config_maps.items).expect("json")
    );
    assert!(
        !written.contains(token),
        "the literal reached no revision or ConfigMap"
    );
    let deployments = env
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(deployments.items.is_empty(), "no pod runs it");
}
