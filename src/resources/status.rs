//! The status the controller reports, pure: [`status`] of the RelayerDeployment, the observed
//! active Deployment and the plan; [`cutover`] of the same plus the blue-green machine's
//! [`State`]. Every condition goes through one transition rule ([`Conditions::make`]): its
//! `lastTransitionTime` is kept unless its status flipped, so an idle resync computes the very
//! status already stored and writes nothing.
//!
//! May use: [`super`] (selectors, [`Plan`]), [`crate::crd`], [`crate::rollout::State`].

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{Plan, color_selector, selector_string};
use crate::crd::{Phase, RelayerDeployment, RelayerDeploymentStatus, RevisionRecord, RolloutStep};
use crate::rollout::State;

/// Condition type: the active colour serves the desired number of available pods.
pub const AVAILABLE: &str = "Available";
/// Condition type: the active colour is rolling out or scaling.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the spec cannot be realised or the active colour is failing.
pub const DEGRADED: &str = "Degraded";

/// Reason of the conditions while a child's name is taken by an object this RelayerDeployment
/// does not control (nothing is written until the name is free).
pub const NAME_COLLISION: &str = "NameCollision";
/// Reason of the conditions while the spec asks for what the operator does not admit (an
/// Ingress host outside `--ingress-host-pattern`, a Service type outside
/// `--allowed-service-types`); nothing is written.
pub const NOT_ALLOWED: &str = "NotAllowed";
/// Reason of the conditions while the spec cannot be realised.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// What the controller observed, as input to [`status`].
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The active colour's Deployment as the API server last reported it.
    pub deployment: Option<&'a Deployment>,
    /// Why the spec cannot be realised, if it cannot.
    pub invalid: Option<&'a str>,
}

/// The status of `rd` for `plan` given what was observed, at `now`.
pub fn status(
    rd: &RelayerDeployment,
    plan: Option<&Plan>,
    observed: Observed<'_>,
    history: Vec<RevisionRecord>,
    now: &Time,
) -> RelayerDeploymentStatus {
    let previous = rd.status.clone().unwrap_or_default();
    let generation = rd.metadata.generation;
    let desired = rd.spec.replicas;
    let conditions = Conditions::of(rd, now);
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        conditions.make(type_, ok, reason, message)
    };

    let Some(plan) = plan else {
        let message = observed.invalid.unwrap_or("invalid spec");
        return blocked(rd, INVALID_SPEC, message, now);
    };

    let d_status = observed
        .deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let d_current = observed.deployment.is_some_and(|d| {
        d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
    });
    let ready = d_status.ready_replicas.unwrap_or(0);
    let updated = d_status.updated_replicas.unwrap_or(0);
    let replicas = d_status.replicas.unwrap_or(0);
    let d_condition = |type_: &str| {
        d_status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some(type_))
            .cloned()
    };
    let deadline_exceeded = d_condition("Progressing")
        .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let replica_failure =
        d_condition("ReplicaFailure").is_some_and(|c| c.status.as_deref() == Some("True"));
    let converged = d_current && updated == desired && ready == desired && replicas == desired;
    let available =
        observed.deployment.is_some() && (desired == 0 || (ready >= desired && d_current));

    let pods = format!("{ready}/{desired} pods of {} ready", plan.active);
    let available_c = if available {
        cond(AVAILABLE, true, "MinimumReplicasAvailable", pods.clone())
    } else {
        cond(AVAILABLE, false, "MinimumReplicasUnavailable", pods.clone())
    };
    let progressing_c = if converged {
        cond(
            PROGRESSING,
            false,
            "Stable",
            format!("revision {} is rolled out", plan.revision),
        )
    } else {
        cond(
            PROGRESSING,
            true,
            "RollingOut",
            format!("revision {}: {pods}", plan.revision),
        )
    };
    let degraded_c = if deadline_exceeded {
        cond(
            DEGRADED,
            true,
            "ProgressDeadlineExceeded",
            "the active Deployment did not progress in time".into(),
        )
    } else if replica_failure {
        cond(
            DEGRADED,
            true,
            "ReplicaFailure",
            "the active Deployment cannot create pods".into(),
        )
    } else {
        cond(DEGRADED, false, "AsExpected", "no failure observed".into())
    };
    let phase = if deadline_exceeded || replica_failure {
        Phase::Degraded
    } else if converged && available {
        Phase::Stable
    } else if observed.deployment.is_none() || (ready == 0 && desired > 0) {
        Phase::Pending
    } else {
        Phase::Progressing
    };
    let stable_revision = if phase == Phase::Stable {
        Some(plan.revision.clone())
    } else {
        previous.stable_revision.clone()
    };

    RelayerDeploymentStatus {
        observed_generation: generation,
        phase,
        active_color: Some(plan.active),
        preview_color: None,
        current_revision: Some(plan.revision.clone()),
        stable_revision,
        revision_history: history,
        replicas,
        ready_replicas: ready,
        desired_replicas: desired,
        selector: Some(selector_string(&color_selector(rd, plan.active))),
        conditions: vec![available_c, progressing_c, degraded_c],
        rollout: previous.rollout.clone(),
        notifications: previous.notifications.clone(),
    }
}

/// The status of `rd` while the operator writes none of its children, for `reason`
/// ([`INVALID_SPEC`], [`NOT_ALLOWED`], [`NAME_COLLISION`]) explained by `message`: Degraded,
/// not progressing, available as it was; everything else as it was.
pub fn blocked(
    rd: &RelayerDeployment,
    reason: &str,
    message: &str,
    now: &Time,
) -> RelayerDeploymentStatus {
    let previous = rd.status.clone().unwrap_or_default();
    let conditions = Conditions::of(rd, now);
    let was_available = previous_is(&previous, AVAILABLE);
    RelayerDeploymentStatus {
        observed_generation: rd.metadata.generation,
        phase: Phase::Degraded,
        desired_replicas: rd.spec.replicas,
        conditions: vec![
            conditions.make(AVAILABLE, was_available, reason, message.to_owned()),
            conditions.make(PROGRESSING, false, reason, message.to_owned()),
            conditions.make(DEGRADED, true, reason, message.to_owned()),
        ],
        ..previous
    }
}

/// Whether `rd`'s status already says it is blocked for `reason` with `message` (so the
/// Warning Event about it was published already).
pub fn is_blocked_by(rd: &RelayerDeployment, reason: &str, message: &str) -> bool {
    rd.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == DEGRADED && c.status == "True" && c.reason == reason && c.message == message
        })
    })
}

fn previous_is(previous: &RelayerDeploymentStatus, type_: &str) -> bool {
    previous
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The transition rule of every condition the operator writes: the conditions the object had
/// before, its generation, and now.
#[derive(Debug, Clone)]
pub struct Conditions<'a> {
    previous: Vec<Condition>,
    generation: Option<i64>,
    now: &'a Time,
}

impl<'a> Conditions<'a> {
    /// The rule for conditions of `rd` computed at `now`.
    pub fn of(rd: &RelayerDeployment, now: &'a Time) -> Self {
        Self {
            previous: rd
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default(),
            generation: rd.metadata.generation,
            now,
        }
    }

    /// A condition; its `lastTransitionTime` is kept from the previous condition of that type
    /// with the same status, and is now when the status flipped.
    pub fn make(&self, type_: &str, ok: bool, reason: &str, message: String) -> Condition {
        let status = if ok { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        }
    }

    /// Replaces the condition of `type_` in `conditions` (if there is one) by [`Self::make`].
    pub fn set(
        &self,
        conditions: &mut [Condition],
        type_: &str,
        ok: bool,
        reason: &str,
        message: String,
    ) {
        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
            *c = self.make(type_, ok, reason, message);
        }
    }
}

/// The status of `rd` while the blue-green machine is in `state`: [`status`] of the active
/// colour (running the state's active revision, observed as `active`), with the phase,
/// conditions and stable revision a cutover implies and `state.rollout` recorded.
pub fn cutover(
    rd: &RelayerDeployment,
    plan: &Plan,
    state: &State,
    active: Option<&Deployment>,
    history: Vec<RevisionRecord>,
    now: &Time,
) -> RelayerDeploymentStatus {
    let active_plan = Plan {
        active: state.active,
        revision: state.rollout.active_revision.clone(),
        revision_number: plan.revision_number,
    };
    let observed = Observed {
        deployment: active,
        invalid: None,
    };
    let mut next = status(rd, Some(&active_plan), observed, history, now);
    let previous_stable = rd.status.as_ref().and_then(|s| s.stable_revision.clone());
    let conditions = Conditions::of(rd, now);
    next.current_revision = Some(plan.revision.clone());
    next.preview_color = state.rollout.other_revision.as_ref().map(|_| state.other());
    let step = state.rollout.step;
    match step {
        RolloutStep::Stable => {
            if next.phase != Phase::Stable {
                next.stable_revision = previous_stable;
            }
        }
        RolloutStep::Aborted => {
            next.phase = Phase::Degraded;
            next.stable_revision = Some(state.rollout.active_revision.clone());
            let why = state.rollout.abort_reason.clone().unwrap_or_default();
            conditions.set(&mut next.conditions, DEGRADED, true, "CutoverAborted", why);
            conditions.set(
                &mut next.conditions,
                PROGRESSING,
                false,
                "CutoverAborted",
                format!(
                    "traffic stays on {} (revision {})",
                    state.active, state.rollout.active_revision
                ),
            );
        }
        _ => {
            next.phase = Phase::Progressing;
            next.stable_revision = previous_stable;
            let target = state.rollout.target_revision.clone().unwrap_or_default();
            conditions.set(
                &mut next.conditions,
                PROGRESSING,
                true,
                &format!("{step:?}"),
                format!(
                    "cutover to revision {target}: {step:?}; traffic on {}",
                    state.active
                ),
            );
        }
    }
    next.rollout = Some(state.rollout.clone());
    next
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixtures::rd;
    use super::*;
    use crate::crd::Color;

    fn plan() -> Plan {
        Plan {
            active: Color::Blue,
            revision: "abc".into(),
            revision_number: 1,
        }
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("timestamp"))
    }

    fn deployment(ready: i32, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "market-blue", "generation": 2 },
            "spec": { "selector": {}, "template": {} },
            "status": {
                "observedGeneration": 2, "replicas": replicas, "readyReplicas": ready,
                "updatedReplicas": replicas, "availableReplicas": ready,
            },
        }))
        .expect("deployment fixture")
    }

    fn get<'a>(s: &'a RelayerDeploymentStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn ready_pods_make_it_available_and_stable() {
        let d = deployment(3, 3);
        let observed = Observed {
            deployment: Some(&d),
            invalid: None,
        };
        let s = status(&rd(), Some(&plan()), observed, vec![], &at(10));
        assert_eq!(s.phase, Phase::Stable);
        assert_eq!(get(&s, AVAILABLE).status, "True");
        assert_eq!(get(&s, PROGRESSING).status, "False");
        assert_eq!(get(&s, DEGRADED).status, "False");
        assert_eq!(s.stable_revision.as_deref(), Some("abc"));
        assert_eq!(
            (s.replicas, s.ready_replicas, s.desired_replicas),
            (3, 3, 3)
        );
        assert_eq!(
            s.selector.as_deref(),
            Some(
                "app.kubernetes.io/instance=market,app.kubernetes.io/name=relayer,relayer.foresight.dev/color=blue"
            )
        );
    }

    #[test]
    fn a_missing_deployment_is_pending_and_unavailable() {
        let observed = Observed {
            deployment: None,
            invalid: None,
        };
        let s = status(&rd(), Some(&plan()), observed, vec![], &at(10));
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(get(&s, AVAILABLE).status, "False");
        assert_eq!(get(&s, PROGRESSING).status, "True");
    }

    #[test]
    fn an_invalid_spec_is_degraded_with_the_reason() {
        let observed = Observed {
            deployment: None,
            invalid: Some("spec.config.listen is bad"),
        };
        let s = status(&rd(), None, observed, vec![], &at(10));
        assert_eq!(s.phase, Phase::Degraded);
        let degraded = get(&s, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(degraded.message.contains("listen"));
    }

    #[test]
    fn a_name_collision_blocks_with_its_reason_and_keeps_what_was_there() {
        let d = deployment(3, 3);
        let observed = Observed {
            deployment: Some(&d),
            invalid: None,
        };
        let mut rd = rd();
        let running = status(&rd, Some(&plan()), observed, vec![], &at(10));
        rd.status = Some(running.clone());
        let why = "Service market exists and has no controller";
        assert!(!is_blocked_by(&rd, NAME_COLLISION, why));
        let s = blocked(&rd, NAME_COLLISION, why, &at(20));
        assert_eq!(s.phase, Phase::Degraded);
        for (t, status) in [
            (AVAILABLE, "True"),
            (PROGRESSING, "False"),
            (DEGRADED, "True"),
        ] {
            let c = get(&s, t);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status, NAME_COLLISION),
                "{t}"
            );
            assert_eq!(c.message, why);
        }
        assert_eq!(get(&s, DEGRADED).last_transition_time, at(20), "it flipped");
        assert_eq!(
            get(&s, AVAILABLE).last_transition_time,
            at(10),
            "it did not"
        );
        assert_eq!(s.active_color, running.active_color);
        assert_eq!(s.current_revision, running.current_revision);
        rd.status = Some(s.clone());
        assert!(is_blocked_by(&rd, NAME_COLLISION, why));
        assert!(!is_blocked_by(&rd, NAME_COLLISION, "another object"));
        assert!(!is_blocked_by(&rd, NOT_ALLOWED, why));
        assert_eq!(
            blocked(&rd, NAME_COLLISION, why, &at(99)),
            s,
            "idle: nothing to write"
        );
    }

    #[test]
    fn an_unchanged_world_recomputes_the_identical_status() {
        let d = deployment(3, 3);
        let observed = Observed {
            deployment: Some(&d),
            invalid: None,
        };
        let mut rd = rd();
        let first = status(&rd, Some(&plan()), observed, vec![], &at(10));
        rd.status = Some(first.clone());
        let again = status(&rd, Some(&plan()), observed, vec![], &at(99));
        assert_eq!(first, again, "transition times are kept when nothing flips");
        let scaled_down = deployment(1, 3);
        let observed = Observed {
            deployment: Some(&scaled_down),
            invalid: None,
        };
        let later = status(&rd, Some(&plan()), observed, vec![], &at(120));
        assert_eq!(get(&later, AVAILABLE).last_transition_time, at(120));
        assert_eq!(later.phase, Phase::Progressing);
    }

    #[test]
    fn a_cutover_in_flight_is_progressing_and_keeps_the_stable_revision() {
        let d = deployment(3, 3);
        let mut rd = rd();
        let observed = Observed {
            deployment: Some(&d),
            invalid: None,
        };
        let mut stable = status(&rd, Some(&plan()), observed, vec![], &at(10));
        stable.stable_revision = Some("old".into());
        rd.status = Some(stable);
        let mut state = State::new("abc");
        state.rollout.step = RolloutStep::PrePromotion;
        state.rollout.target_revision = Some("def".into());
        state.rollout.other_revision = Some("def".into());
        let s = cutover(&rd, &plan(), &state, Some(&d), vec![], &at(20));
        assert_eq!(s.phase, Phase::Progressing);
        assert_eq!(s.stable_revision.as_deref(), Some("old"));
        assert_eq!(s.preview_color, Some(Color::Green));
        let progressing = get(&s, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "PrePromotion")
        );
        assert_eq!(progressing.last_transition_time, at(20), "it flipped");
        assert_eq!(
            get(&s, AVAILABLE).last_transition_time,
            at(10),
            "it did not"
        );
        assert_eq!(s.rollout.as_ref(), Some(&state.rollout));
    }

    #[test]
    fn an_aborted_cutover_is_degraded_and_the_active_revision_stable() {
        let d = deployment(3, 3);
        let rd = rd();
        let mut state = State::new("abc");
        state.rollout.step = RolloutStep::Aborted;
        state.rollout.abort_reason = Some("gate failed".into());
        let s = cutover(&rd, &plan(), &state, Some(&d), vec![], &at(20));
        assert_eq!(s.phase, Phase::Degraded);
        assert_eq!(s.stable_revision.as_deref(), Some("abc"));
        assert_eq!(s.preview_color, None);
        let degraded = get(&s, DEGRADED);
        assert_eq!(
            (
                degraded.status.as_str(),
                degraded.reason.as_str(),
                degraded.message.as_str()
            ),
            ("True", "CutoverAborted", "gate failed")
        );
        let progressing = get(&s, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", "CutoverAborted")
        );
        assert!(progressing.message.contains("traffic stays on blue"));
    }
}
