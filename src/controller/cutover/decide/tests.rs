//! The decision of a cutover reconcile from plain data: no cluster, no gate task, no clock.

use serde_json::json;

use super::*;
use crate::crd::{Phase, RelayerDeploymentStatus};
use crate::resources::fixtures::rd;

/// Now, in milliseconds since the epoch.
const T0: i64 = 1_700_000_000_000;

fn at(ms: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms).expect("timestamp"))
}

fn plan(revision: &str) -> Plan {
    Plan {
        active: Color::Blue,
        revision: revision.to_owned(),
        revision_number: 2,
    }
}

fn gate_spec() -> GateSpec {
    serde_json::from_value(json!({ "samples": 3, "minRequests": 10 })).expect("gate spec")
}

/// The fixture object with a pre-promotion gate, its status recording `rollout` with `active`
/// serving.
fn rd_in(active: Color, rollout: RolloutStatus) -> RelayerDeployment {
    let mut rd = rd();
    rd.spec.strategy.blue_green.pre_promotion = Some(gate_spec());
    rd.status = Some(RelayerDeploymentStatus {
        active_color: Some(active),
        current_revision: Some(rollout.active_revision.clone()),
        rollout: Some(rollout),
        ..RelayerDeploymentStatus::default()
    });
    rd
}

/// A cutover record in `step`: r1 served by blue, r2 previewed on green (or, after the
/// promotion, r2 served by green and r1 kept warm on blue), the step entered at `since`.
fn rollout_in(step: RolloutStep, since: i64, replicas: i32) -> (Color, RolloutStatus) {
    let mut r = RolloutStatus {
        active_revision: "r1".into(),
        step,
        step_started_ms: since,
        started_ms: since,
        ..RolloutStatus::default()
    };
    let mut active = Color::Blue;
    match step {
        RolloutStep::Stable => {}
        RolloutStep::Deploying | RolloutStep::PrePromotion | RolloutStep::AwaitingPromotion => {
            r.other_revision = Some("r2".into());
            r.target_revision = Some("r2".into());
            r.hold_replicas = replicas;
        }
        RolloutStep::PostPromotion | RolloutStep::Failed | RolloutStep::ScalingDown => {
            active = Color::Green;
            r.active_revision = "r2".into();
            r.other_revision = Some("r1".into());
            r.target_revision = Some("r2".into());
            r.hold_replicas = replicas;
        }
        RolloutStep::Aborted => {
            r.target_revision = Some("r2".into());
        }
    }
    (active, r)
}

/// A Deployment running `revision` with `replicas` pods, all updated and available.
fn available_deployment(revision: &str, replicas: i32) -> Arc<Deployment> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": { "name": "market-x", "generation": 1 },
            "spec": {
                "replicas": replicas,
                "selector": {},
                "template": { "metadata": { "labels": { LABEL_REVISION: revision } } },
            },
            "status": {
                "observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
                "updatedReplicas": replicas, "availableReplicas": replicas,
            },
        }))
        .expect("deployment fixture"),
    )
}

fn observation<'a>(rd: &'a RelayerDeployment, plan: &'a Plan) -> Observation<'a> {
    Observation {
        rd,
        plan,
        revisions: &[],
        restarted: false,
        blue: None,
        green: None,
        hpa_desired: None,
        gate: None,
        drain: None,
        resync: Duration::from_secs(300),
    }
}

fn tally(verdict: GateVerdict, samples: i32) -> Tally {
    let mut tally = Tally::new("prePromotion", "r2");
    tally.0.verdict = verdict;
    tally.0.samples = samples;
    if verdict == GateVerdict::Failed {
        tally.0.reason = Some("2 failed samples > failureLimit 1".into());
        tally.0.last_values = Some("requests=12 errorRate=50.00%".into());
    }
    tally
}

fn running(verdict: GateVerdict, samples: i32) -> RunningGate {
    RunningGate {
        kind: GateKind::PrePromotion,
        revision: "r2".into(),
        tally: tally(verdict, samples),
    }
}

fn emitted(decision: &Decision) -> Vec<&'static str> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn a_spec_change_on_a_stable_object_starts_a_cutover_on_the_other_colour() {
    let (active, r) = rollout_in(RolloutStep::Stable, T0 - 60_000, 0);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.blue = Some(available_deployment("r1", rd.spec.replicas));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.state.rollout.step, RolloutStep::Deploying);
    assert_eq!(d.state.active, Color::Blue, "traffic stays where it was");
    assert_eq!(d.state.rollout.other_revision.as_deref(), Some("r2"));
    assert!(emitted(&d).contains(&"CutoverStarted"));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.preview_color, Some(Color::Green));
    assert_eq!(d.status.current_revision.as_deref(), Some("r2"));
    assert_eq!(d.status.rollout.as_ref(), Some(&d.state.rollout));
    assert_eq!(d.gate, None);
    assert_eq!(d.drain_wanted, None);
    assert!(d.requeue <= Duration::from_secs(5));
}

#[test]
fn a_spec_change_of_an_in_memory_store_is_refused_once_with_a_warning_unless_accepted() {
    let (active, r) = rollout_in(RolloutStep::Stable, T0 - 60_000, 0);
    let mut rd = rd_in(active, r.clone());
    rd.spec.replicas = 1;
    rd.spec.store = None;
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.blue = Some(available_deployment("r1", 1));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.state.rollout, r, "no cutover starts");
    assert_eq!(d.state.active, Color::Blue);
    let warned: Vec<&Action> = d
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Emit {
                    warning: true,
                    reason: "CutoverRefused",
                    ..
                }
            )
        })
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", d.actions);
    let progressing = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == status::PROGRESSING)
        .expect("Progressing condition");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "CutoverRefused")
    );
    assert!(
        progressing.message.contains("spec.store.acceptStateLoss"),
        "{}",
        progressing.message
    );

    // The next reconcile sees its own condition: the same refusal, but no second Event.
    rd.status = Some(d.status.clone());
    let again = decide(&observation(&rd, &plan), &at(T0 + 1_000));
    assert!(
        !again.actions.iter().any(|a| matches!(
            a,
            Action::Emit {
                reason: "CutoverRefused",
                ..
            }
        )),
        "{:?}",
        again.actions
    );
    assert_eq!(again.state.rollout, r);

    // Accepting the loss lets it start, and so does a shared store.
    for store in [
        Some(crate::crd::StoreSpec {
            redis: None,
            memory: Some(crate::crd::MemoryStoreSpec {}),
            accept_state_loss: true,
        }),
        crate::resources::fixtures::rd().spec.store,
    ] {
        rd.spec.store = store;
        let mut obs = observation(&rd, &plan);
        obs.blue = Some(available_deployment("r1", 1));
        let d = decide(&obs, &at(T0 + 2_000));
        assert_eq!(
            d.state.rollout.step,
            RolloutStep::Deploying,
            "{:?}",
            rd.spec.store
        );
    }
}

#[test]
fn a_cutover_to_other_state_than_the_active_revision_serves_is_refused() {
    use crate::crd::{MemoryStoreSpec, RedisStoreSpec, StoreSpec};
    let redis = |url: &str| {
        Some(StoreSpec {
            redis: Some(RedisStoreSpec {
                url: Some(url.into()),
                url_secret_ref: None,
                password_secret_ref: None,
                tls: None,
                mode: None,
                cluster_nodes: Vec::new(),
            }),
            ..StoreSpec::default()
        })
    };
    let memory = Some(StoreSpec {
        memory: Some(MemoryStoreSpec {}),
        ..StoreSpec::default()
    });
    let cases = [
        (
            memory.clone(),
            redis("redis://r:6379/0"),
            Some("keeps its state in memory"),
        ),
        (
            redis("redis://a:6379/0"),
            redis("redis://b:6379/0"),
            Some("moves from a:6379/0"),
        ),
        (
            redis("redis://a:6379/0"),
            memory.clone(),
            Some("the store is in memory"),
        ),
        (redis("redis://a:6379/0"), redis("redis://a:6379/0"), None),
    ];
    for (old_store, new_store, refused) in cases {
        let (active, r) = rollout_in(RolloutStep::Stable, T0 - 60_000, 0);
        let mut old = rd_in(active, r);
        old.spec.replicas = 1;
        old.spec.store = old_store.clone();
        let cr = crate::resources::controller_revision(&old, &plan("r1")).expect("revision");
        let revisions = [Arc::new(cr)];
        let mut rd = old.clone();
        rd.spec.store = new_store.clone();
        rd.spec.image = "ghcr.io/foresight/relayer:2".into();
        let plan = plan("r2");
        let mut obs = observation(&rd, &plan);
        obs.revisions = &revisions;
        obs.blue = Some(available_deployment("r1", 1));
        let d = decide(&obs, &at(T0));
        let refusal = d
            .status
            .conditions
            .iter()
            .find(|c| c.reason == "CutoverRefused")
            .map(|c| c.message.clone());
        match refused {
            Some(why) => {
                let message = refusal.unwrap_or_else(|| panic!("{old_store:?} -> {new_store:?}"));
                assert!(message.contains(why), "{message}");
                assert_eq!(d.state.rollout.step, RolloutStep::Stable);
                // Accepting the loss lets it start.
                let mut accepting = rd.clone();
                if let Some(store) = accepting.spec.store.as_mut() {
                    store.accept_state_loss = true;
                }
                let obs = Observation {
                    rd: &accepting,
                    ..obs
                };
                assert_eq!(
                    decide(&obs, &at(T0)).state.rollout.step,
                    RolloutStep::Deploying
                );
            }
            None => {
                assert_eq!(refusal, None);
                assert_eq!(d.state.rollout.step, RolloutStep::Deploying);
            }
        }
    }
}

#[test]
fn a_converged_object_decides_nothing_and_sleeps_until_the_resync() {
    let (active, r) = rollout_in(RolloutStep::Stable, T0 - 60_000, 0);
    let rd = rd_in(active, r.clone());
    let plan = plan("r1");
    let mut obs = observation(&rd, &plan);
    obs.blue = Some(available_deployment("r1", rd.spec.replicas));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.state.rollout, r);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, Phase::Stable);
    assert_eq!(d.requeue, Duration::from_secs(300));
    assert_eq!((d.command, d.unknown_command), (None, None));
}

#[test]
fn an_available_preview_starts_the_pre_promotion_gate_fresh_on_the_preview() {
    let replicas = rd().spec.replicas;
    let (active, r) = rollout_in(RolloutStep::Deploying, T0 - 1_000, replicas);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.green = Some(available_deployment("r2", replicas));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.state.rollout.step, RolloutStep::PrePromotion);
    let wanted = d.gate.as_ref().expect("a gate runs");
    assert_eq!(wanted.gate.kind, GateKind::PrePromotion);
    assert_eq!(wanted.gate.revision, "r2");
    assert_eq!(wanted.gate.tally, Tally::new("prePromotion", "r2"));
    let start = wanted.start.as_ref().expect("started by this reconcile");
    assert_eq!(start.under_test, Color::Green);
    assert_eq!(
        start.compare_with,
        Color::Blue,
        "a relative gate judges the preview against the active colour, not itself"
    );
    assert_eq!(start.spec, gate_spec());
    let recorded = &d.state.rollout.gates;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].verdict, GateVerdict::Running);
    assert!(d.gate_verdicts.is_empty());
}

#[test]
fn a_gate_running_for_the_current_step_is_kept_not_restarted() {
    let replicas = rd().spec.replicas;
    let (active, r) = rollout_in(RolloutStep::PrePromotion, T0 - 1_000, replicas);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.green = Some(available_deployment("r2", replicas));
    obs.gate = Some(running(GateVerdict::Running, 1));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.state.rollout.step, RolloutStep::PrePromotion);
    let wanted = d.gate.as_ref().expect("a gate runs");
    assert_eq!(wanted.start, None);
    assert_eq!(wanted.gate, running(GateVerdict::Running, 1));
    assert_eq!(
        d.state.rollout.gates[0].samples, 1,
        "its tally goes to status"
    );
}

#[test]
fn a_restart_resumes_the_gate_from_the_counts_status_kept() {
    let replicas = rd().spec.replicas;
    let (active, mut r) = rollout_in(RolloutStep::PrePromotion, T0 - 1_000, replicas);
    r.gates = vec![tally(GateVerdict::Running, 2).0];
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.restarted = true;
    obs.green = Some(available_deployment("r2", replicas));
    let d = decide(&obs, &at(T0));
    let wanted = d.gate.as_ref().expect("a gate runs");
    assert!(wanted.start.is_some(), "nothing ran in this process yet");
    assert_eq!(wanted.gate.tally.0.samples, 2, "resumed, not fresh");
}

#[test]
fn a_passed_gate_is_counted_promotes_and_is_stopped() {
    let replicas = rd().spec.replicas;
    let (active, r) = rollout_in(RolloutStep::PrePromotion, T0 - 1_000, replicas);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.blue = Some(available_deployment("r1", replicas));
    obs.green = Some(available_deployment("r2", replicas));
    obs.gate = Some(running(GateVerdict::Passed, 3));
    let d = decide(&obs, &at(T0));
    assert_eq!(
        d.gate_verdicts,
        vec![(GateKind::PrePromotion, GateVerdict::Passed)]
    );
    assert!(d.actions.contains(&Action::SwitchActive(Color::Green)));
    assert_eq!(d.state.active, Color::Green);
    assert_eq!(d.state.rollout.step, RolloutStep::ScalingDown);
    assert_eq!(d.gate, None, "a decided gate of a past step is stopped");
    assert_eq!(d.state.rollout.gates[0].verdict, GateVerdict::Passed);
    assert_eq!(d.drain_wanted, None, "the scale-down delay has not passed");
}

#[test]
fn a_failed_gate_aborts_with_a_warning_and_its_last_values() {
    let replicas = rd().spec.replicas;
    let (active, r) = rollout_in(RolloutStep::PrePromotion, T0 - 1_000, replicas);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.green = Some(available_deployment("r2", replicas));
    obs.gate = Some(running(GateVerdict::Failed, 2));
    let d = decide(&obs, &at(T0));
    assert_eq!(
        d.gate_verdicts,
        vec![(GateKind::PrePromotion, GateVerdict::Failed)]
    );
    let warning = d.actions.iter().find_map(|a| match a {
        Action::Emit {
            warning: true,
            reason: "GateFailed",
            message,
        } => Some(message.clone()),
        _ => None,
    });
    let warning = warning.expect("a GateFailed warning");
    assert!(warning.contains("errorRate=50.00%"), "{warning}");
    assert_eq!(d.state.rollout.step, RolloutStep::Aborted);
    assert_eq!(d.state.active, Color::Blue);
    assert_eq!(d.gate, None);
    assert_eq!(d.status.phase, Phase::Degraded);
    assert_eq!(d.requeue, Duration::from_secs(300));
}

#[test]
fn scaling_down_asks_for_drain_evidence_once_the_delay_passed_and_ends_on_it() {
    let replicas = rd().spec.replicas;
    let delay = settings(&rd()).scale_down_delay_ms;
    let (active, r) = rollout_in(RolloutStep::ScalingDown, T0 - delay - 1, replicas);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.green = Some(available_deployment("r2", replicas));
    obs.blue = Some(available_deployment("r1", replicas));

    let asking = decide(&obs, &at(T0));
    assert_eq!(asking.drain_wanted, Some(Color::Blue));
    assert_eq!(asking.state.rollout.step, RolloutStep::ScalingDown);
    assert!(asking.requeue <= DRAIN_POLL);

    obs.drain = Some(DrainEvidence {
        color: Color::Blue,
        drained: false,
        note: "waiting: blue-0 has 1 requests in flight".into(),
    });
    let busy = decide(&obs, &at(T0));
    assert_eq!(busy.drain_wanted, None);
    assert_eq!(busy.state.rollout.step, RolloutStep::ScalingDown);
    assert_eq!(
        busy.state.rollout.scale_down.as_deref(),
        Some("waiting: blue-0 has 1 requests in flight")
    );

    obs.drain = Some(DrainEvidence {
        color: Color::Blue,
        drained: true,
        note: "blue drained".into(),
    });
    let drained = decide(&obs, &at(T0));
    assert_eq!(drained.drain_wanted, None);
    assert_eq!(drained.state.rollout.step, RolloutStep::Stable);
    assert_eq!(drained.state.active, Color::Green);
}

#[test]
fn before_the_scale_down_delay_no_drain_evidence_is_asked_for() {
    let replicas = rd().spec.replicas;
    let (active, r) = rollout_in(RolloutStep::ScalingDown, T0 - 1_000, replicas);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.green = Some(available_deployment("r2", replicas));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.drain_wanted, None);
    assert_eq!(d.state.rollout.step, RolloutStep::ScalingDown);
    assert_eq!(d.requeue, IN_FLIGHT_RESYNC, "the delay is longer than 5 s");
}

#[test]
fn a_command_is_acted_on_and_an_unknown_one_reported() {
    let replicas = rd().spec.replicas;
    let (active, r) = rollout_in(RolloutStep::Deploying, T0 - 1_000, replicas);
    let plan = plan("r2");

    let mut abort = rd_in(active, r.clone());
    abort
        .annotations_mut()
        .insert(ANNOTATION_COMMAND.into(), " abort ".into());
    let d = decide(&observation(&abort, &plan), &at(T0));
    assert_eq!(d.state.rollout.step, RolloutStep::Aborted);
    assert_eq!(d.command.as_deref(), Some(" abort "));
    assert_eq!(d.unknown_command, None);

    let mut bogus = rd_in(active, r);
    bogus
        .annotations_mut()
        .insert(ANNOTATION_COMMAND.into(), "promote-now".into());
    let d = decide(&observation(&bogus, &plan), &at(T0));
    assert_eq!(d.state.rollout.step, RolloutStep::Deploying);
    assert_eq!(d.command.as_deref(), Some("promote-now"));
    assert_eq!(d.unknown_command.as_deref(), Some("promote-now"));
}

#[test]
fn a_preview_that_misses_the_progress_deadline_is_aborted() {
    let replicas = rd().spec.replicas;
    let deadline = settings(&rd()).progress_deadline_ms;
    let (active, r) = rollout_in(RolloutStep::Deploying, T0 - deadline, replicas);
    let rd = rd_in(active, r);
    let plan = plan("r2");
    let d = decide(&observation(&rd, &plan), &at(T0));
    assert_eq!(d.state.rollout.step, RolloutStep::Aborted);
    let why = d.state.rollout.abort_reason.clone().unwrap_or_default();
    assert!(why.starts_with("ProgressDeadlineExceeded"), "{why}");
}

fn revision(hash: &str, number: i64) -> Arc<ControllerRevision> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": { "name": format!("market-{hash}"), "labels": { LABEL_REVISION: hash } },
            "data": {},
            "revision": number,
        }))
        .expect("revision fixture"),
    )
}

fn number_of(found: Option<&Arc<ControllerRevision>>) -> Option<i64> {
    found.and_then(|r| r.revision)
}

#[test]
fn a_rollback_finds_the_warm_colour_the_newest_other_a_hash_or_a_number() {
    let revisions = [revision("r1", 1), revision("r3", 3), revision("r2", 2)];
    let (active, r) = rollout_in(RolloutStep::ScalingDown, T0, 3);
    let after_promotion = State { active, rollout: r };
    assert_eq!(
        number_of(rollback_target(&revisions, &after_promotion, "previous")),
        Some(1),
        "the colour still warm"
    );
    let (active, r) = rollout_in(RolloutStep::Deploying, T0, 3);
    let deploying = State { active, rollout: r };
    assert_eq!(
        number_of(rollback_target(&revisions, &deploying, "previous")),
        Some(3),
        "the preview is not a previous revision: the newest that is not active"
    );
    assert_eq!(
        number_of(rollback_target(&revisions, &deploying, "r2")),
        Some(2)
    );
    assert_eq!(
        number_of(rollback_target(&revisions, &deploying, "3")),
        Some(3)
    );
    assert_eq!(
        number_of(rollback_target(&revisions, &deploying, "r9")),
        None
    );
    assert_eq!(
        number_of(rollback_target(&[], &deploying, "previous")),
        None
    );
}

#[test]
fn the_automatic_pause_and_the_abort_delay_wake_the_reconcile_when_they_end() {
    let (active, r) = rollout_in(RolloutStep::AwaitingPromotion, T0 - 2_000, 2);
    let mut rd = rd_in(active, r);
    rd.spec.strategy.blue_green.auto_promotion_seconds = Some(3);
    rd.spec.strategy.blue_green.abort_scale_down_delay_seconds = Some(20);
    let s = settings(&rd);
    assert_eq!(
        (s.auto_promotion_ms, s.abort_scale_down_delay_ms),
        (Some(3_000), 20_000)
    );
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.blue = Some(available_deployment("r1", rd.spec.replicas));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.state.rollout.step, RolloutStep::AwaitingPromotion);
    assert_eq!(d.requeue, Duration::from_secs(1), "the pause ends in 1 s");

    let (active, mut r) = rollout_in(RolloutStep::Aborted, T0 - 18_000, 2);
    r.other_revision = Some("r2".into());
    let mut rd = rd_in(active, r);
    rd.spec.strategy.blue_green.abort_scale_down_delay_seconds = Some(20);
    let mut obs = observation(&rd, &plan);
    obs.blue = Some(available_deployment("r1", rd.spec.replicas));
    let d = decide(&obs, &at(T0));
    assert_eq!(d.state.rollout.other_revision.as_deref(), Some("r2"));
    assert_eq!(
        d.requeue,
        Duration::from_secs(2),
        "the kept preview goes in 2 s"
    );
    let d = decide(&obs, &at(T0 + 2_000));
    assert_eq!(d.state.rollout.other_revision, None);
    assert!(emitted(&d).contains(&"ScaledDown"), "{:?}", emitted(&d));
}

#[test]
fn a_gate_failing_while_paused_is_taken_once_on_resume_not_on_every_reconcile() {
    let replicas = rd().spec.replicas;
    let (active, mut r) = rollout_in(RolloutStep::PrePromotion, T0 - 1_000, replicas);
    r.paused = true;
    let mut rd = rd_in(active, r);
    rd.spec.strategy.blue_green.paused = true;
    let plan = plan("r2");
    let mut obs = observation(&rd, &plan);
    obs.green = Some(available_deployment("r2", replicas));
    obs.gate = Some(running(GateVerdict::Failed, 2));
    for _ in 0..3 {
        let d = decide(&obs, &at(T0));
        assert!(d.gate_verdicts.is_empty(), "{:?}", d.gate_verdicts);
        assert!(!emitted(&d).contains(&"GateFailed"), "{:?}", emitted(&d));
        assert_eq!(d.state.rollout.step, RolloutStep::PrePromotion);
    }
    let mut resumed = rd.clone();
    resumed.spec.strategy.blue_green.paused = false;
    let mut obs = observation(&resumed, &plan);
    obs.green = Some(available_deployment("r2", replicas));
    obs.gate = Some(running(GateVerdict::Failed, 2));
    let d = decide(&obs, &at(T0));
    assert_eq!(
        d.gate_verdicts,
        vec![(GateKind::PrePromotion, GateVerdict::Failed)]
    );
    assert_eq!(d.state.rollout.step, RolloutStep::Aborted);
}
