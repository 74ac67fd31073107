//! The status the controller reports: a pure function of the RelayerDeployment, the observed
//! active Deployment and the plan, with condition transition times kept when nothing changed
//! (so an idle resync computes the very status already stored and writes nothing).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{Plan, color_selector, selector_string};
use crate::crd::{Phase, RelayerDeployment, RelayerDeploymentStatus, RevisionRecord};

/// Condition type: the active colour serves the desired number of available pods.
pub const AVAILABLE: &str = "Available";
/// Condition type: the active colour is rolling out or scaling.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the spec cannot be realised or the active colour is failing.
pub const DEGRADED: &str = "Degraded";

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
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(
            &previous.conditions,
            generation,
            now,
            type_,
            ok,
            reason,
            message,
        )
    };

    let Some(plan) = plan else {
        let message = observed.invalid.unwrap_or("invalid spec").to_owned();
        return RelayerDeploymentStatus {
            observed_generation: generation,
            phase: Phase::Degraded,
            desired_replicas: desired,
            conditions: vec![
                cond(
                    AVAILABLE,
                    previous_is(&previous, AVAILABLE),
                    "InvalidSpec",
                    message.clone(),
                ),
                cond(PROGRESSING, false, "InvalidSpec", message.clone()),
                cond(DEGRADED, true, "InvalidSpec", message),
            ],
            ..previous
        };
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
    }
}

fn previous_is(previous: &RelayerDeploymentStatus, type_: &str) -> bool {
    previous
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// A condition; its `lastTransitionTime` is kept from `previous` unless the status flipped.
fn condition(
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
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
}
