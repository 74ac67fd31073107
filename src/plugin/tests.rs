//! What each plugin command asks of the operator, from cutover fixtures; no cluster.

use serde_json::json;

use super::*;

/// A RelayerDeployment in a given cutover step, with two kept revisions (#1 on blue, #2 new).
fn rd(step: &str) -> RelayerDeployment {
    serde_json::from_value(json!({
        "apiVersion": "relayer.foresight.dev/v1alpha1", "kind": "RelayerDeployment",
        "metadata": { "name": "market", "namespace": "trading", "generation": 2 },
        "spec": { "image": "relayer:2" },
        "status": {
            "observedGeneration": 2, "phase": "Progressing", "activeColor": "blue",
            "currentRevision": "bbbbbbbbbbbbbbbb", "stableRevision": "aaaaaaaaaaaaaaaa",
            "replicas": 3, "readyReplicas": 3, "desiredReplicas": 3,
            "revisionHistory": [
                { "revision": "bbbbbbbbbbbbbbbb", "number": 2, "image": "relayer:2" },
                { "revision": "aaaaaaaaaaaaaaaa", "number": 1, "image": "relayer:1" },
            ],
            "rollout": {
                "step": step, "activeRevision": "aaaaaaaaaaaaaaaa",
                "otherRevision": "bbbbbbbbbbbbbbbb", "targetRevision": "bbbbbbbbbbbbbbbb",
                "startedMs": 1_000, "stepStartedMs": 5_000,
                "gates": [{ "name": "prePromotion", "revision": "bbbbbbbbbbbbbbbb",
                            "verdict": "Running", "samples": 2, "passed": 2, "failed": 0,
                            "inconclusive": 0, "scrapeErrors": 0,
                            "lastValues": "requests=120 errorRate=0.0% p99=4ms" }],
            },
        },
    }))
    .expect("fixture")
}

fn annotation(patch: &Value, key: &str) -> Option<String> {
    patch["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn promote_while_awaiting_promotion_annotates_the_command() {
    let patch = plan(&Request::Promote, &rd("AwaitingPromotion")).expect("allowed");
    assert_eq!(
        annotation(&patch, ANNOTATION_COMMAND).as_deref(),
        Some("promote")
    );
}

#[test]
fn promote_without_a_cutover_is_refused_as_no_cutover_in_progress() {
    let error = plan(&Request::Promote, &rd("Stable")).expect_err("refused");
    assert_eq!(error.exit_code(), 4);
    assert!(
        error.to_string().contains("no cutover in progress"),
        "{error}"
    );
    let error = plan(&Request::Promote, &rd("PostPromotion")).expect_err("refused");
    assert!(error.to_string().contains("already promoted"), "{error}");
}

#[test]
fn abort_applies_to_every_in_flight_step_but_not_to_a_settled_one() {
    for step in [
        "Deploying",
        "PrePromotion",
        "AwaitingPromotion",
        "PostPromotion",
        "Failed",
        "ScalingDown",
    ] {
        let patch = plan(&Request::Abort, &rd(step)).expect(step);
        assert_eq!(
            annotation(&patch, ANNOTATION_COMMAND).as_deref(),
            Some("abort")
        );
    }
    for step in ["Stable", "Aborted"] {
        let error = plan(&Request::Abort, &rd(step)).expect_err(step);
        assert_eq!(error.exit_code(), 4, "{step}");
    }
}

#[test]
fn retry_needs_an_aborted_cutover() {
    assert!(plan(&Request::Retry, &rd("Aborted")).is_ok());
    let error = plan(&Request::Retry, &rd("Stable")).expect_err("refused");
    assert!(error.to_string().contains("no aborted cutover"), "{error}");
}

#[test]
fn pause_and_resume_patch_the_spec() {
    let patch = plan(&Request::Pause, &rd("Stable")).expect("pause");
    assert_eq!(
        patch["spec"]["strategy"]["blueGreen"]["paused"],
        json!(true)
    );
    let patch = plan(&Request::Resume, &rd("Stable")).expect("resume");
    assert_eq!(
        patch["spec"]["strategy"]["blueGreen"]["paused"],
        json!(false)
    );
}

#[test]
fn rollback_names_a_kept_revision_or_previous() {
    let patch = plan(&Request::Rollback(Some(1)), &rd("Stable")).expect("kept");
    assert_eq!(
        annotation(&patch, ANNOTATION_ROLLBACK_TO).as_deref(),
        Some("1")
    );
    let patch = plan(&Request::Rollback(None), &rd("Stable")).expect("previous");
    assert_eq!(
        annotation(&patch, ANNOTATION_ROLLBACK_TO).as_deref(),
        Some("previous")
    );
    let error = plan(&Request::Rollback(Some(7)), &rd("Stable")).expect_err("unknown");
    assert_eq!(error.exit_code(), 6);
    assert!(
        error.to_string().contains("kept revisions: 2, 1"),
        "{error}"
    );
    let error = plan(&Request::Rollback(Some(2)), &rd("Stable")).expect_err("current");
    assert!(error.to_string().contains("current revision"), "{error}");
}

#[test]
fn rollback_without_an_older_revision_is_refused() {
    let mut only = rd("Stable");
    if let Some(status) = only.status.as_mut() {
        status.revision_history.truncate(1);
    }
    let error = plan(&Request::Rollback(None), &only).expect_err("refused");
    assert!(
        error.to_string().contains("no previous revision"),
        "{error}"
    );
}

#[test]
fn set_image_refuses_an_image_with_spaces() {
    assert!(plan(&Request::SetImage("relayer:3".into()), &rd("Stable")).is_ok());
    let error = plan(&Request::SetImage("relayer 3".into()), &rd("Stable")).expect_err("bad");
    assert_eq!(error.exit_code(), 6);
}

#[test]
fn status_view_shows_phase_colours_progress_and_gates() {
    let text = render_status(&rd("PrePromotion"), 12_000);
    for expected in [
        "RelayerDeployment trading/market",
        "Phase:      Progressing",
        "Active:     blue  revision aaaaaaaaaa (#1)  ready 3/3",
        "Other:      green revision bbbbbbbbbb (#2) (preview)",
        "Cutover:    PrePromotion (step since 7s ago)",
        "prePromotion   Running  revision bbbbbbbbbb  samples 2 (2 passed",
        "last: requests=120 errorRate=0.0% p99=4ms",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
}

#[test]
fn history_marks_the_active_and_the_new_revision() {
    let text = render_history(&rd("PrePromotion"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NUMBER"), "{text}");
    assert!(
        lines[1].starts_with("2 ") && lines[1].contains("preview") && lines[1].contains("spec"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("1 ") && lines[2].contains("active (blue)"),
        "{text}"
    );
}

#[test]
fn settled_is_stable_on_the_current_generation_or_aborted() {
    assert_eq!(settled(&rd("PrePromotion")), None);
    assert_eq!(settled(&rd("Aborted")), Some(false));
    let mut done = rd("Stable");
    assert_eq!(settled(&done), Some(true));
    done.metadata.generation = Some(3);
    assert_eq!(settled(&done), None, "status of an older spec");
    let mut pending = rd("Stable");
    pending.metadata.annotations = Some(
        [(ANNOTATION_ROLLBACK_TO.to_owned(), "previous".to_owned())]
            .into_iter()
            .collect(),
    );
    assert_eq!(settled(&pending), None, "a rollback not taken yet");
}
