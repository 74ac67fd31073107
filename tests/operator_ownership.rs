//! The operator never adopts what it does not control, and writes only what it admits, against
//! a real API server: a Service that exists before a RelayerDeployment of the same name stays
//! exactly as it was (and survives the RelayerDeployment's deletion), a LoadBalancer Service and
//! an Ingress host outside `--ingress-host-pattern` are refused. Each refusal is a `Degraded`
//! condition naming the cause, a Warning Event, and no child written.
//!
//! Run with `cargo test --test operator_ownership` (the harness builds or reuses the control
//! plane binaries; see tests/support).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use relayer_operator::controller;
use relayer_operator::crd::RelayerDeployment;
use relayer_operator::resources::MANAGED_SELECTOR;
use serde_json::json;
use support::fixtures::rd;
use support::operator::InProcessOperator;
use support::{TestEnv, from_yaml, wait_for};

/// Upper bound for anything the control plane and the operator do; seconds when warm.
const SETTLE: Duration = Duration::from_secs(90);

fn crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds")
}

/// The operator in this process for the test's namespace, with `config`'s admission settings.
async fn operator(env: &TestEnv, config: controller::Config) -> InProcessOperator {
    env.install_crds(&crds()).await;
    InProcessOperator::start(
        env.client.clone(),
        controller::Config {
            namespace: Some(env.namespace.clone()),
            ..config
        },
    )
}

/// The Service a team created by hand before anyone wrote a RelayerDeployment named `name`.
async fn foreign_service(env: &TestEnv, name: &str) -> Service {
    let service: Service = from_yaml(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels: {{ team: billing }}
spec:
  selector: {{ app: billing }}
  ports: [{{ name: web, port: 8080, targetPort: 8080 }}]
"#
    ));
    env.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("create the foreign Service")
}

/// Waits until `name`'s `Degraded` condition is True with `reason`; returns it.
async fn degraded_by(env: &TestEnv, name: &str, reason: &str) -> Condition {
    let api = env.api::<RelayerDeployment>();
    wait_for(
        &format!("{name} to be Degraded by {reason}"),
        SETTLE,
        || {
            let api = api.clone();
            async move {
                let rd = api.get(name).await?;
                let condition = rd.status.and_then(|s| {
                    s.conditions
                        .into_iter()
                        .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == reason)
                });
                Ok(condition)
            }
        },
    )
    .await
}

/// Waits for a Warning Event with `reason` about the RelayerDeployment `name`; returns its note.
async fn warning_about(env: &TestEnv, name: &str, reason: &str) -> String {
    let api = env.api::<Event>();
    wait_for(
        &format!("a Warning {reason} Event about {name}"),
        SETTLE,
        || {
            let api = api.clone();
            async move {
                let events = api.list(&ListParams::default()).await?;
                Ok(events.items.into_iter().find_map(|e| {
                    let about = e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some("RelayerDeployment")
                            && r.name.as_deref() == Some(name)
                    });
                    (about
                        && e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some(reason))
                    .then(|| e.note.unwrap_or_default())
                }))
            }
        },
    )
    .await
}

/// The parts of a Service that adoption would change, and its resourceVersion.
fn fingerprint(
    s: &Service,
) -> (
    Option<String>,
    String,
    Option<BTreeMap<String, String>>,
    String,
) {
    (
        s.resource_version(),
        serde_json::to_string(&s.spec).expect("spec"),
        s.metadata.labels.clone(),
        serde_json::to_string(&s.metadata.owner_references).expect("owner references"),
    )
}

/// Objects of kind `K` in the namespace that carry the operator's labels.
async fn managed<K>(env: &TestEnv) -> Vec<String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    env.api::<K>()
        .list(&ListParams::default().labels(MANAGED_SELECTOR))
        .await
        .expect("list")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

#[tokio::test]
async fn a_service_that_exists_before_its_namesake_rd_is_never_adopted_nor_collected() {
    let env = TestEnv::new("own-collide").await;
    let operator = operator(&env, controller::Config::default()).await;
    let before = foreign_service(&env, "payments").await;
    rd("payments").apply(&env, "ownership-test").await;

    let rds = env.api::<RelayerDeployment>();
    wait_for(
        "the operator to have seen the RelayerDeployment",
        SETTLE,
        || {
            let rds = rds.clone();
            async move {
                let rd = rds.get("payments").await?;
                let seen = rd
                    .status
                    .is_some_and(|s| s.observed_generation == rd.metadata.generation);
                Ok(seen.then_some(()))
            }
        },
    )
    .await;
    // NB: the operator requeues a blocked object with backoff; let it look a few more times.
    let seen = operator.metrics.reconciles.get();
    wait_for(
        "two more reconciles of the RelayerDeployment",
        SETTLE,
        || {
            let done = operator.metrics.reconciles.get() >= seen + 2;
            async move { Ok(done.then_some(())) }
        },
    )
    .await;

    let services = env.api::<Service>();
    let after = services.get("payments").await.expect("the Service");
    assert_eq!(
        fingerprint(&after),
        fingerprint(&before),
        "the foreign Service is untouched (resourceVersion, spec, labels, owners)"
    );
    assert!(after.metadata.owner_references.is_none());
    for (kind, names) in [
        ("Service", managed::<Service>(&env).await),
        ("Deployment", managed::<Deployment>(&env).await),
        ("ConfigMap", managed::<ConfigMap>(&env).await),
    ] {
        assert!(
            names.is_empty(),
            "no {kind} written while blocked: {names:?}"
        );
    }

    let condition = degraded_by(&env, "payments", "NameCollision").await;
    assert!(
        condition
            .message
            .contains("Service payments exists and has no controller"),
        "the condition names the object and who controls it: {}",
        condition.message
    );
    let note = warning_about(&env, "payments", "NameCollision").await;
    assert!(note.contains("Service payments"), "{note}");

    // NB: foreground deletion returns only once the garbage collector is done with dependents.
    rds.delete("payments", &DeleteParams::foreground())
        .await
        .expect("delete the RelayerDeployment");
    wait_for("the RelayerDeployment to be gone", SETTLE, || {
        let rds = rds.clone();
        async move { Ok(rds.get_opt("payments").await?.is_none().then_some(())) }
    })
    .await;
    let kept = services
        .get_opt("payments")
        .await
        .expect("get the Service")
        .expect("the foreign Service survives the RelayerDeployment's deletion");
    assert_eq!(fingerprint(&kept), fingerprint(&before));
}

#[tokio::test]
async fn a_collision_lifts_once_the_name_is_free() {
    let env = TestEnv::new("own-lift").await;
    let _operator = operator(&env, controller::Config::default()).await;
    foreign_service(&env, "ledger").await;
    rd("ledger").apply(&env, "ownership-test").await;
    degraded_by(&env, "ledger", "NameCollision").await;

    let services = env.api::<Service>();
    services
        .delete("ledger", &DeleteParams::default())
        .await
        .expect("delete the foreign Service");
    let rd = env
        .api::<RelayerDeployment>()
        .get("ledger")
        .await
        .expect("rd");
    let uid = rd.uid().expect("uid");
    wait_for("the RelayerDeployment's own Service", SETTLE, || {
        let (services, uid) = (services.clone(), uid.clone());
        async move {
            let owned = services.get_opt("ledger").await?.is_some_and(|s| {
                s.owner_references()
                    .iter()
                    .any(|o| o.uid == uid && o.controller == Some(true))
            });
            Ok(owned.then_some(()))
        }
    })
    .await;
}

#[tokio::test]
async fn a_load_balancer_is_refused_unless_allowed_and_nothing_is_written() {
    let env = TestEnv::new("own-lb").await;
    let _operator = operator(&env, controller::Config::default()).await;
    let edge = rd("edge");
    let mut json = edge.json();
    json["spec"]["service"] = json!({ "type": "LoadBalancer" });
    let rds = env.api::<RelayerDeployment>();
    rds.patch(
        "edge",
        &PatchParams::apply("ownership-test").force(),
        &Patch::Apply(&json),
    )
    .await
    .expect("apply the RelayerDeployment");

    let condition = degraded_by(&env, "edge", "NotAllowed").await;
    assert!(
        condition
            .message
            .contains("spec.service.type LoadBalancer is not allowed")
            && condition.message.contains("ClusterIP, NodePort"),
        "the condition names the value and the allowed set: {}",
        condition.message
    );
    let note = warning_about(&env, "edge", "NotAllowed").await;
    assert!(note.contains("LoadBalancer"), "{note}");
    assert!(
        env.api::<Service>()
            .get_opt("edge")
            .await
            .expect("get")
            .is_none()
    );
    assert!(managed::<Deployment>(&env).await.is_empty());

    // The same object with an admitted type is realised.
    json["spec"]["service"] = json!({ "type": "ClusterIP" });
    rds.patch(
        "edge",
        &PatchParams::apply("ownership-test").force(),
        &Patch::Apply(&json),
    )
    .await
    .expect("apply the RelayerDeployment");
    let services = env.api::<Service>();
    let service = wait_for("the ClusterIP Service", SETTLE, || {
        let services = services.clone();
        async move { Ok(services.get_opt("edge").await?) }
    })
    .await;
    assert_eq!(
        service.spec.and_then(|s| s.type_).as_deref(),
        Some("ClusterIP")
    );
}

#[tokio::test]
async fn an_ingress_host_outside_the_patterns_is_refused_while_an_admitted_one_is_realised() {
    let env = TestEnv::new("own-host").await;
    let config = controller::Config {
        ingress_host_patterns: vec!["*.apps.example.com".parse().expect("pattern")],
        ..controller::Config::default()
    };
    let _operator = operator(&env, config).await;
    rd("web")
        .ingress("bank.example.org")
        .apply(&env, "ownership-test")
        .await;
    rd("shop")
        .ingress("shop.apps.example.com")
        .apply(&env, "ownership-test")
        .await;

    let condition = degraded_by(&env, "web", "NotAllowed").await;
    assert!(
        condition
            .message
            .contains("spec.ingress.host \"bank.example.org\" is not allowed")
            && condition.message.contains("*.apps.example.com"),
        "{}",
        condition.message
    );
    warning_about(&env, "web", "NotAllowed").await;
    let ingresses = env.api::<Ingress>();
    let shop = wait_for("the admitted Ingress", SETTLE, || {
        let ingresses = ingresses.clone();
        async move { Ok(ingresses.get_opt("shop").await?) }
    })
    .await;
    let hosts: Vec<String> = shop
        .spec
        .and_then(|s| s.rules)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.host)
        .collect();
    assert_eq!(hosts, ["shop.apps.example.com"]);
    assert!(ingresses.get_opt("web").await.expect("get").is_none());
    assert!(
        env.api::<Service>()
            .get_opt("web")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        env.api::<Deployment>()
            .get_opt("web-blue")
            .await
            .expect("get")
            .is_none()
    );
}
