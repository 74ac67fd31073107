//! The operator's OpenTelemetry traces, from the real binary against the test control plane,
//! collected by the OTLP/HTTP receiver the relayer's tests use (`relayer/tests/support/otlp.rs`,
//! decoding the protobuf with the `opentelemetry-proto` types): every reconcile is a span
//! naming the RelayerDeployment (`namespace/name`) and its revision; a cutover's steps are spans
//! below the reconciles that act on them, with the revision they bring in.

mod support;

#[path = "../relayer/tests/support/otlp.rs"]
#[allow(dead_code)]
mod otlp;

use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use otlp::OtlpReceiver;
use relayer_operator::crd::RelayerDeployment;
use support::fixtures::rd;
use support::operator::OperatorProcess;
use support::{TestEnv, wait_for};

const SETTLE: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn apply(env: &TestEnv, image: &str) {
    env.api::<RelayerDeployment>()
        .patch(
            "traced",
            &PatchParams::apply("operator-tracing-test").force(),
            &Patch::Apply(rd("traced").image(image).replicas(1).build()),
        )
        .await
        .expect("apply the RelayerDeployment");
}

/// `.status.rollout.<field>` of the RelayerDeployment, once it is there.
async fn rollout_field(env: &TestEnv, field: &'static str) -> String {
    let api = env.api::<RelayerDeployment>();
    wait_for(&format!("status.rollout.{field}"), SETTLE, || {
        let api = api.clone();
        async move {
            let rd = api.get("traced").await?;
            let value = serde_json::to_value(rd.status)?;
            Ok(value["rollout"][field].as_str().map(str::to_owned))
        }
    })
    .await
}

#[tokio::test]
async fn reconciles_and_cutover_steps_are_spans_naming_the_object_and_its_revision() {
    let env = TestEnv::new("rd-tracing").await;
    env.install_crds(&repo().join("crds")).await;
    let receiver = OtlpReceiver::start().await;
    let operator = OperatorProcess::launch(&env, "traced")
        .env("RUST_LOG", "warn")
        .env("LOG_JSON", "true")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .args(["--namespace", &env.namespace])
        .args(["--leader-election=false"])
        .spawn();
    let object = format!("{}/traced", env.namespace);

    apply(&env, "ghcr.io/foresight/relayer:0.1.0").await;
    let first = rollout_field(&env, "activeRevision").await;
    wait_for("a reconcile span with the first revision", SETTLE, || {
        let spans = receiver.spans();
        let object = object.clone();
        let first = first.clone();
        async move {
            Ok(spans
                .iter()
                .find(|s| {
                    s.name == "reconcile RelayerDeployment"
                        && s.attr("relayerdeployment") == object
                        && s.attr("revision") == first
                })
                .map(|_| ()))
        }
    })
    .await;
    let spans = receiver.spans();
    assert!(
        spans.iter().all(|s| s.service == "relayer-operator"),
        "the default service name: {spans:#?}"
    );
    assert_eq!(receiver.undecodable(), 0);

    // A new image is a cutover: its steps are spans below the reconciles acting on them.
    apply(&env, "ghcr.io/foresight/relayer:0.1.1").await;
    let target = rollout_field(&env, "targetRevision").await;
    assert_ne!(target, first);
    let (step, parent) = wait_for("a cutover step span", SETTLE, || {
        let spans = receiver.spans();
        let target = target.clone();
        async move {
            let Some(step) = spans
                .iter()
                .find(|s| s.name.starts_with("cutover ") && s.attr("target_revision") == target)
            else {
                return Ok(None);
            };
            let parent = spans
                .iter()
                .find(|p| p.span_id == step.parent_span_id && p.trace_id == step.trace_id);
            Ok(parent.map(|p| (step.clone(), p.clone())))
        }
    })
    .await;
    assert_eq!(parent.name, "reconcile RelayerDeployment");
    assert_eq!(parent.attr("relayerdeployment"), object);
    assert_eq!(parent.attr("revision"), target, "the spec's revision");
    assert_eq!(step.attr("relayerdeployment"), object);
    assert_eq!(step.attr("active_revision"), first);
    assert_eq!(step.attr("active_color"), "blue");
    assert_eq!(step.attr("preview_color"), "green");
    assert!(!step.attr("step").is_empty(), "{step:?}");
    assert!(
        parent.attr("trace_id") == parent.trace_id,
        "the span's trace_id field is its trace: {parent:?}"
    );
    drop(operator);
}
