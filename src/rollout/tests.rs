//! Every step × every event, and a property test (proptest) over random event sequences.

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

use super::*;

const T0: i64 = 1_000_000;

fn settings() -> Settings {
    Settings {
        auto_promote: true,
        auto_rollback: true,
        pre_gate: true,
        post_gate: true,
        progress_deadline_ms: 60_000,
        scale_down_delay_ms: 5_000,
        max_scale_down_wait_ms: 30_000,
        auto_promotion_ms: None,
        abort_scale_down_delay_ms: 0,
    }
}

fn facts(now_ms: i64) -> Facts {
    Facts {
        now_ms,
        other_available: true,
        desired_replicas: 3,
    }
}

/// A state in `step`, consistent with how the machine gets there: r1 was stable on blue and
/// r2 is the new revision.
fn in_step(step: RolloutStep) -> State {
    use RolloutStep as S;
    let mut s = State::new("r1");
    let r = &mut s.rollout;
    r.step = step;
    r.step_started_ms = T0;
    r.started_ms = T0;
    match step {
        S::Stable => {}
        S::Deploying | S::PrePromotion | S::AwaitingPromotion => {
            r.other_revision = Some("r2".into());
            r.target_revision = Some("r2".into());
            r.hold_replicas = 3;
        }
        S::PostPromotion | S::Failed | S::ScalingDown => {
            s.active = Color::Green;
            r.active_revision = "r2".into();
            r.other_revision = Some("r1".into());
            r.target_revision = Some("r2".into());
            r.hold_replicas = 3;
        }
        S::Aborted => {
            r.target_revision = Some("r2".into());
            r.abort_reason = Some("prePromotion failed".into());
        }
    }
    s
}

const STEPS: [RolloutStep; 8] = [
    RolloutStep::Stable,
    RolloutStep::Deploying,
    RolloutStep::PrePromotion,
    RolloutStep::AwaitingPromotion,
    RolloutStep::PostPromotion,
    RolloutStep::Failed,
    RolloutStep::ScalingDown,
    RolloutStep::Aborted,
];

/// The events of the table, with the time they happen at.
fn events() -> Vec<(&'static str, Event, i64)> {
    let spec = |r: &str| Event::SpecChanged {
        revision: r.to_owned(),
    };
    let failed = Event::Gate(GateOutcome::Failed {
        gate: "prePromotion".into(),
        reason: "error rate 50.00% > 1.00%".into(),
    });
    let early = T0 + 1;
    let late = T0 + 10 * 60_000;
    vec![
        ("spec r3", spec("r3"), early),
        ("spec r1", spec("r1"), early),
        ("spec r2", spec("r2"), early),
        ("pods ready", Event::PodsReady, early),
        ("tick early", Event::Tick, early),
        ("tick late", Event::Tick, late),
        ("gate passed", Event::Gate(GateOutcome::Passed), early),
        ("gate failed", failed, early),
        (
            "gate inconclusive",
            Event::Gate(GateOutcome::Inconclusive),
            early,
        ),
        ("promote", Event::Command(Command::Promote), early),
        ("abort", Event::Command(Command::Abort), early),
        ("retry", Event::Command(Command::Retry), early),
        ("pause", Event::Command(Command::Pause), early),
        ("resume", Event::Command(Command::Resume), early),
        ("drained early", Event::Drained, early),
        ("drained late", Event::Drained, late),
        ("restart", Event::Restart, early),
    ]
}

/// Expected next step, active colour after the event, and whether it switched.
fn expected(step: RolloutStep, event: &str) -> (RolloutStep, Color) {
    use Color::{Blue, Green};
    use RolloutStep as S;
    match (step, event) {
        (S::Stable, "spec r3" | "spec r2") => (S::Deploying, Blue),
        (S::Stable, _) => (S::Stable, Blue),

        (S::Deploying, "spec r3") => (S::Deploying, Blue),
        (S::Deploying, "spec r1") => (S::Stable, Blue),
        (S::Deploying, "pods ready") => (S::PrePromotion, Blue),
        (S::Deploying, "tick late" | "abort") => (S::Aborted, Blue),
        (S::Deploying, "promote") => (S::PostPromotion, Green),
        (S::Deploying, _) => (S::Deploying, Blue),

        (S::PrePromotion, "spec r3") => (S::Deploying, Blue),
        (S::PrePromotion, "spec r1") => (S::Stable, Blue),
        (S::PrePromotion, "gate passed" | "promote") => (S::PostPromotion, Green),
        (S::PrePromotion, "gate failed" | "abort") => (S::Aborted, Blue),
        (S::PrePromotion, _) => (S::PrePromotion, Blue),

        (S::AwaitingPromotion, "spec r3") => (S::Deploying, Blue),
        (S::AwaitingPromotion, "spec r1") => (S::Stable, Blue),
        (S::AwaitingPromotion, "promote") => (S::PostPromotion, Green),
        (S::AwaitingPromotion, "abort") => (S::Aborted, Blue),
        (S::AwaitingPromotion, _) => (S::AwaitingPromotion, Blue),

        (S::PostPromotion, "spec r1" | "gate failed" | "abort") => (S::ScalingDown, Blue),
        (S::PostPromotion, "gate passed") => (S::ScalingDown, Green),
        (S::PostPromotion, _) => (S::PostPromotion, Green),

        (S::Failed, "spec r1" | "abort") => (S::ScalingDown, Blue),
        (S::Failed, "promote") => (S::ScalingDown, Green),
        (S::Failed, _) => (S::Failed, Green),

        (S::ScalingDown, "spec r1" | "abort") => (S::ScalingDown, Blue),
        (S::ScalingDown, "tick late" | "drained late") => (S::Stable, Green),
        (S::ScalingDown, _) => (S::ScalingDown, Green),

        (S::Aborted, "spec r3" | "retry") => (S::Deploying, Blue),
        (S::Aborted, "spec r1") => (S::Stable, Blue),
        (S::Aborted, _) => (S::Aborted, Blue),
    }
}

#[test]
fn every_step_and_event_gives_the_documented_next_step() {
    let mut checked = 0;
    for step in STEPS {
        for (name, event, now) in events() {
            let state = in_step(step);
            let (next, actions) = transition(&state, &event, &settings(), &facts(now));
            let (want_step, want_active) = expected(step, name);
            assert_eq!(
                (next.rollout.step, next.active),
                (want_step, want_active),
                "{step:?} + {name}"
            );
            let switched = actions
                .iter()
                .any(|a| matches!(a, Action::SwitchActive(c) if *c == want_active));
            assert_eq!(
                switched,
                state.active != want_active,
                "{step:?} + {name}: SwitchActive exactly when the active colour changes"
            );
            if next.rollout.step == RolloutStep::Aborted && step != RolloutStep::Aborted {
                assert!(next.rollout.abort_reason.is_some(), "{step:?} + {name}");
                assert_eq!(next.rollout.other_revision, None, "{step:?} + {name}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, STEPS.len() * events().len());
}

#[test]
fn a_paused_rollout_only_hears_abort_and_resume() {
    for step in STEPS {
        for (name, event, now) in events() {
            let mut state = in_step(step);
            state.rollout.paused = true;
            let (next, _) = transition(&state, &event, &settings(), &facts(now));
            match name {
                "abort" => assert_eq!(next.rollout.step, expected(step, name).0, "{step:?}"),
                "resume" => {
                    assert!(!next.rollout.paused);
                    assert_eq!(next.rollout.step, step);
                }
                _ => assert_eq!(
                    (next.rollout.step, next.active),
                    (step, state.active),
                    "paused {step:?} + {name}"
                ),
            }
        }
    }
}

#[test]
fn resuming_restarts_the_progress_deadline() {
    let mut state = in_step(RolloutStep::Deploying);
    state.rollout.paused = true;
    let resume_at = T0 + 50_000;
    let (resumed, _) = transition(
        &state,
        &Event::Command(Command::Resume),
        &settings(),
        &facts(resume_at),
    );
    let (later, _) = transition(&resumed, &Event::Tick, &settings(), &facts(T0 + 70_000));
    assert_eq!(
        later.rollout.step,
        RolloutStep::Deploying,
        "20 s after resume"
    );
    let (expired, _) = transition(
        &resumed,
        &Event::Tick,
        &settings(),
        &facts(resume_at + 60_000),
    );
    assert_eq!(expired.rollout.step, RolloutStep::Aborted);
}

#[test]
fn an_unavailable_preview_is_never_promoted_and_the_decision_waits_for_it() {
    let state = in_step(RolloutStep::PrePromotion);
    let unavailable = Facts {
        other_available: false,
        ..facts(T0 + 1)
    };
    let (waiting, actions) = transition(
        &state,
        &Event::Gate(GateOutcome::Passed),
        &settings(),
        &unavailable,
    );
    assert_eq!(waiting.active, Color::Blue);
    assert_eq!(waiting.rollout.step, RolloutStep::AwaitingPromotion);
    assert!(waiting.rollout.promote_requested);
    assert!(!actions.iter().any(|a| matches!(a, Action::SwitchActive(_))));
    let (promoted, actions) = transition(&waiting, &Event::PodsReady, &settings(), &facts(T0 + 2));
    assert_eq!(promoted.active, Color::Green);
    assert!(actions.contains(&Action::SwitchActive(Color::Green)));
}

#[test]
fn without_gates_or_auto_promotion_the_steps_are_skipped_or_held() {
    let no_gates = Settings {
        pre_gate: false,
        post_gate: false,
        ..settings()
    };
    let (next, _) = transition(
        &in_step(RolloutStep::Deploying),
        &Event::PodsReady,
        &no_gates,
        &facts(T0 + 1),
    );
    assert_eq!(
        (next.rollout.step, next.active),
        (RolloutStep::ScalingDown, Color::Green)
    );
    let manual = Settings {
        auto_promote: false,
        ..settings()
    };
    let (next, _) = transition(
        &in_step(RolloutStep::PrePromotion),
        &Event::Gate(GateOutcome::Passed),
        &manual,
        &facts(T0 + 1),
    );
    assert_eq!(
        (next.rollout.step, next.active),
        (RolloutStep::AwaitingPromotion, Color::Blue)
    );
}

#[test]
fn a_post_promotion_failure_without_auto_rollback_holds_for_a_command() {
    let held = Settings {
        auto_rollback: false,
        ..settings()
    };
    let failed = Event::Gate(GateOutcome::Failed {
        gate: "postPromotion".into(),
        reason: "p99 900 ms > 250 ms".into(),
    });
    let (next, _) = transition(
        &in_step(RolloutStep::PostPromotion),
        &failed,
        &held,
        &facts(T0 + 1),
    );
    assert_eq!(
        (next.rollout.step, next.active),
        (RolloutStep::Failed, Color::Green)
    );
    assert_eq!(next.rollout.failed_gate.as_deref(), Some("postPromotion"));
}

#[test]
fn a_rollback_after_a_failed_gate_ends_aborted_and_a_spec_rollback_ends_stable() {
    let failed = Event::Gate(GateOutcome::Failed {
        gate: "postPromotion".into(),
        reason: "error rate".into(),
    });
    let (draining, _) = transition(
        &in_step(RolloutStep::PostPromotion),
        &failed,
        &settings(),
        &facts(T0 + 1),
    );
    assert!(draining.rollout.aborting);
    let (done, _) = transition(&draining, &Event::Drained, &settings(), &facts(T0 + 10_000));
    assert_eq!(done.rollout.step, RolloutStep::Aborted);
    assert_eq!(done.rollout.active_revision, "r1");
    assert_eq!(done.rollout.other_revision, None);
    assert_eq!(done.rollout.target_revision.as_deref(), Some("r2"));
    // The failed revision is not retried by itself; a command or a new spec does it.
    let (same, _) = transition(
        &done,
        &Event::SpecChanged {
            revision: "r2".into(),
        },
        &settings(),
        &facts(T0 + 20_000),
    );
    assert_eq!(same.rollout.step, RolloutStep::Aborted);

    let (reverted, _) = transition(
        &in_step(RolloutStep::ScalingDown),
        &Event::SpecChanged {
            revision: "r1".into(),
        },
        &settings(),
        &facts(T0 + 1),
    );
    assert!(!reverted.rollout.aborting);
    let (done, _) = transition(&reverted, &Event::Drained, &settings(), &facts(T0 + 10_000));
    assert_eq!(
        (done.rollout.step, done.active),
        (RolloutStep::Stable, Color::Blue)
    );
}

#[test]
fn restart_resumes_the_gate_of_the_step_and_changes_nothing_else() {
    for step in STEPS {
        let state = in_step(step);
        let (next, actions) = transition(&state, &Event::Restart, &settings(), &facts(T0 + 1));
        assert_eq!(next, state, "{step:?}");
        let resumed: Vec<_> = actions
            .iter()
            .filter(|a| matches!(a, Action::StartGate(_)))
            .collect();
        assert_eq!(
            resumed.len(),
            usize::from(state.gate().is_some()),
            "{step:?}"
        );
    }
}

#[test]
fn the_held_size_never_drops_mid_cutover_and_follows_the_autoscaler_up() {
    let mut state = in_step(RolloutStep::Deploying);
    state.rollout.hold_replicas = 7;
    let shrink = Facts {
        desired_replicas: 3,
        ..facts(T0 + 1)
    };
    let (next, _) = transition(&state, &Event::Tick, &settings(), &shrink);
    assert_eq!(next.rollout.hold_replicas, 7);
    let l = layout(&next, 3, None);
    assert_eq!((l.active_plan.replicas, l.other_plan.replicas), (7, 7));
    assert!(l.hold_scale_down);
    let grow = Facts {
        desired_replicas: 9,
        ..facts(T0 + 2)
    };
    let (next, _) = transition(&next, &Event::Tick, &settings(), &grow);
    assert_eq!(next.rollout.hold_replicas, 9);
    let stable = layout(&in_step(RolloutStep::Stable), 3, None);
    assert_eq!(
        (stable.active_plan.replicas, stable.other_plan.replicas),
        (3, 0)
    );
    assert!(!stable.hold_scale_down);
}

#[test]
fn a_smaller_preview_grows_to_full_size_before_the_switch() {
    let state = in_step(RolloutStep::PrePromotion);
    assert_eq!(layout(&state, 5, Some(1)).other_plan.replicas, 1);
    let small = Facts {
        other_available: false,
        desired_replicas: 5,
        ..facts(T0 + 1)
    };
    let (waiting, _) = transition(
        &state,
        &Event::Gate(GateOutcome::Passed),
        &settings(),
        &small,
    );
    assert_eq!(layout(&waiting, 5, Some(1)).other_plan.replicas, 5);
    assert_eq!(waiting.active, Color::Blue);
}

/// Any event, weighted as the controller sends them (ticks most often).
fn any_event() -> impl Strategy<Value = Event> {
    let revision = prop::sample::select(vec!["r1", "r2", "r3", "r4"]);
    let command = prop::sample::select(vec![
        Command::Promote,
        Command::Abort,
        Command::Retry,
        Command::Pause,
        Command::Resume,
    ]);
    prop_oneof![
        1 => revision.prop_map(|r| Event::SpecChanged { revision: r.to_owned() }),
        1 => Just(Event::PodsReady),
        3 => Just(Event::Tick),
        1 => Just(Event::Gate(GateOutcome::Passed)),
        1 => Just(Event::Gate(GateOutcome::Failed {
            gate: "g".into(),
            reason: "r".into(),
        })),
        1 => Just(Event::Gate(GateOutcome::Inconclusive)),
        1 => command.prop_map(Event::Command),
        1 => Just(Event::Drained),
        1 => Just(Event::Restart),
    ]
}

/// Random settings (the gates and automatic steps on or off, with or without the automatic
/// promotion's pause and the abort's scale-down delay).
fn any_settings() -> impl Strategy<Value = Settings> {
    (
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop::option::of(0i64..8_000),
        prop_oneof![Just(0i64), 1i64..8_000],
    )
        .prop_map(
            |((auto_promote, auto_rollback, pre_gate, post_gate), pause, abort_delay)| Settings {
                auto_promote,
                auto_rollback,
                pre_gate,
                post_gate,
                progress_deadline_ms: 10_000,
                scale_down_delay_ms: 1_000,
                max_scale_down_wait_ms: 20_000,
                auto_promotion_ms: pause,
                abort_scale_down_delay_ms: abort_delay,
            },
        )
}

/// One step of a random run: time passing, the facts at that moment, and an event.
fn any_step() -> impl Strategy<Value = (i64, bool, i32, Event)> {
    (
        0i64..4_000,
        prop::bool::weighted(2.0 / 3.0),
        1i32..=8,
        any_event(),
    )
}

/// Property: over random event sequences with random availability, the active colour only
/// ever changes to a colour reported available at that moment, always through one
/// `SwitchActive`, the active colour always runs a revision, and layouts never scale the
/// active colour to zero while the spec asks for pods.
#[test]
fn the_active_selector_only_ever_points_at_a_colour_that_was_available() {
    let switches = std::cell::Cell::new(0u32);
    // NB: a fixed seed, like the hand-made seeds this replaced: every run checks the same
    // 3,000 sequences, and a failure prints its shrunk sequence.
    let config = ProptestConfig {
        cases: 3_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let runs = (any_settings(), prop::collection::vec(any_step(), 80));
    let result = runner.run(&runs, |(settings, steps)| {
        let mut state = State::new("r1");
        let mut now = T0;
        for (elapsed, other_available, desired_replicas, event) in steps {
            now += elapsed;
            let facts = Facts {
                now_ms: now,
                other_available,
                desired_replicas,
            };
            let (next, actions) = transition(&state, &event, &settings, &facts);
            let switched: Vec<Color> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::SwitchActive(c) => Some(*c),
                    _ => None,
                })
                .collect();
            if next.active != state.active {
                switches.set(switches.get() + 1);
                prop_assert!(
                    facts.other_available,
                    "switched to {} which was not available ({event:?} in {:?})",
                    next.active,
                    state.rollout.step
                );
                prop_assert_eq!(&switched, &vec![next.active]);
            } else {
                prop_assert!(switched.is_empty(), "a switch without a change");
            }
            prop_assert!(!next.rollout.active_revision.is_empty());
            let l = layout(&next, facts.desired_replicas, None);
            prop_assert_eq!(l.active, next.active);
            prop_assert!(l.active_plan.replicas >= facts.desired_replicas);
            if next.rollout.other_revision.is_none() {
                prop_assert_eq!(l.other_plan.replicas, 0);
            }
            state = next;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(
        switches.get() > 1_000,
        "the sequences exercise switches ({})",
        switches.get()
    );
}

fn switched_to(actions: &[Action]) -> Option<Color> {
    actions.iter().find_map(|a| match a {
        Action::SwitchActive(c) => Some(*c),
        _ => None,
    })
}

fn emitted(actions: &[Action], reason: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Emit { reason: r, .. } if *r == reason))
}

#[test]
fn auto_promotion_pauses_after_the_gates_then_promotes() {
    let pause = Settings {
        auto_promotion_ms: Some(10_000),
        ..settings()
    };
    let (waiting, actions) = transition(
        &in_step(RolloutStep::PrePromotion),
        &Event::Gate(GateOutcome::Passed),
        &pause,
        &facts(T0 + 1_000),
    );
    assert_eq!(waiting.rollout.step, RolloutStep::AwaitingPromotion);
    assert_eq!(switched_to(&actions), None, "no switch during the pause");
    let (early, _) = transition(&waiting, &Event::Tick, &pause, &facts(T0 + 10_999));
    assert_eq!(early.rollout.step, RolloutStep::AwaitingPromotion);
    let (promoted, actions) = transition(&waiting, &Event::Tick, &pause, &facts(T0 + 11_000));
    assert_eq!(switched_to(&actions), Some(Color::Green));
    assert!(emitted(&actions, "AutoPromotion") && emitted(&actions, "Promoted"));
    assert_eq!(promoted.rollout.step, RolloutStep::PostPromotion);
    // A promote command ends the pause early.
    let (commanded, actions) = transition(
        &waiting,
        &Event::Command(Command::Promote),
        &pause,
        &facts(T0 + 2_000),
    );
    assert_eq!(switched_to(&actions), Some(Color::Green));
    assert_eq!(commanded.active, Color::Green);
    // Without the preview at full size when the pause ends, promotion waits for it.
    let mut short = facts(T0 + 11_000);
    short.other_available = false;
    let (held, actions) = transition(&waiting, &Event::Tick, &pause, &short);
    assert_eq!(switched_to(&actions), None);
    assert!(held.rollout.promote_requested);
    let (promoted, actions) = transition(&held, &Event::PodsReady, &pause, &facts(T0 + 12_000));
    assert_eq!(switched_to(&actions), Some(Color::Green));
    assert_eq!(promoted.active, Color::Green);
    // Paused, the pause does not run out; resumed, it starts again.
    let mut paused = waiting.clone();
    paused.rollout.paused = true;
    let (still, _) = transition(&paused, &Event::Tick, &pause, &facts(T0 + 60_000));
    assert_eq!(still.rollout.step, RolloutStep::AwaitingPromotion);
    let (resumed, _) = transition(
        &still,
        &Event::Command(Command::Resume),
        &pause,
        &facts(T0 + 3_600_000),
    );
    let (after, actions) = transition(&resumed, &Event::Tick, &pause, &facts(T0 + 3_605_000));
    assert_eq!(
        switched_to(&actions),
        None,
        "5 s of a 10 s pause after the resume"
    );
    assert_eq!(after.rollout.step, RolloutStep::AwaitingPromotion);
    let (_, actions) = transition(&resumed, &Event::Tick, &pause, &facts(T0 + 3_610_000));
    assert_eq!(switched_to(&actions), Some(Color::Green));
}

#[test]
fn auto_promotion_without_gates_pauses_from_the_preview_being_ready() {
    let pause = Settings {
        pre_gate: false,
        auto_promotion_ms: Some(5_000),
        ..settings()
    };
    let (waiting, actions) = transition(
        &in_step(RolloutStep::Deploying),
        &Event::PodsReady,
        &pause,
        &facts(T0 + 1_000),
    );
    assert_eq!(waiting.rollout.step, RolloutStep::AwaitingPromotion);
    assert_eq!(switched_to(&actions), None);
    let (_, actions) = transition(&waiting, &Event::Tick, &pause, &facts(T0 + 6_000));
    assert_eq!(switched_to(&actions), Some(Color::Green));
}

#[test]
fn without_auto_promote_the_pause_never_promotes() {
    let manual = Settings {
        auto_promote: false,
        auto_promotion_ms: Some(1_000),
        ..settings()
    };
    let (waiting, _) = transition(
        &in_step(RolloutStep::PrePromotion),
        &Event::Gate(GateOutcome::Passed),
        &manual,
        &facts(T0),
    );
    assert_eq!(waiting.rollout.step, RolloutStep::AwaitingPromotion);
    let (still, actions) = transition(&waiting, &Event::Tick, &manual, &facts(T0 + 3_600_000));
    assert_eq!(still.rollout.step, RolloutStep::AwaitingPromotion);
    assert_eq!(switched_to(&actions), None);
}

#[test]
fn an_aborted_preview_stays_up_for_the_abort_delay_then_goes_to_zero() {
    let keep = Settings {
        abort_scale_down_delay_ms: 20_000,
        ..settings()
    };
    let failed = Event::Gate(GateOutcome::Failed {
        gate: "prePromotion".into(),
        reason: "error rate".into(),
    });
    let (aborted, _) = transition(
        &in_step(RolloutStep::PrePromotion),
        &failed,
        &keep,
        &facts(T0 + 1_000),
    );
    assert_eq!(aborted.rollout.step, RolloutStep::Aborted);
    assert_eq!(aborted.active, Color::Blue);
    assert_eq!(aborted.rollout.other_revision.as_deref(), Some("r2"));
    let l = layout(&aborted, 3, Some(2));
    assert_eq!(l.active_plan.replicas, 3);
    assert_eq!(
        (l.other_plan.revision.as_deref(), l.other_plan.replicas),
        (Some("r2"), 2),
        "kept at its preview size"
    );
    let (kept, _) = transition(&aborted, &Event::Tick, &keep, &facts(T0 + 20_999));
    assert_eq!(kept.rollout.other_revision.as_deref(), Some("r2"));
    let (gone, actions) = transition(&aborted, &Event::Tick, &keep, &facts(T0 + 21_000));
    assert_eq!(gone.rollout.other_revision, None);
    assert!(emitted(&actions, "ScaledDown"));
    assert_eq!(layout(&gone, 3, Some(2)).other_plan.replicas, 0);
    assert_eq!(gone.rollout.step, RolloutStep::Aborted);
    // The spec back at the running revision ends it at once, preview and all.
    let (stable, _) = transition(
        &aborted,
        &Event::SpecChanged {
            revision: "r1".into(),
        },
        &keep,
        &facts(T0 + 2_000),
    );
    assert_eq!(stable.rollout.step, RolloutStep::Stable);
    assert_eq!(stable.rollout.other_revision, None);
    assert_eq!(layout(&stable, 3, Some(2)).other_plan.replicas, 0);
    // An abort command releases the kept preview at once.
    let (released, actions) = transition(
        &aborted,
        &Event::Command(Command::Abort),
        &keep,
        &facts(T0 + 2_000),
    );
    assert_eq!(released.rollout.step, RolloutStep::Aborted);
    assert_eq!(released.rollout.other_revision, None);
    assert!(emitted(&actions, "ScaledDown"));
    // Without the delay the preview goes at once.
    let (at_once, _) = transition(
        &in_step(RolloutStep::PrePromotion),
        &failed,
        &settings(),
        &facts(T0 + 1_000),
    );
    assert_eq!(at_once.rollout.other_revision, None);
}
