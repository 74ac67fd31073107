//! The decision of one cutover reconcile, pure: what was observed ([`Observation`]) and the
//! time give the machine's next state, the status to record and what to do ([`Decision`]).
//! No client, no cache, no clock of its own: unit-tested without a cluster like
//! [`crate::rollout::transition`], which it drives.
//!
//! May use: [`crate::rollout`], [`crate::resources`] (pure builders and status),
//! [`crate::gates::Tally`], [`crate::crd`], and [`crate::controller::RunningGate`] (the
//! snapshot of a running gate, plain data). The refusal of a cutover that would lose state
//! is in `refusal`, which uses none of this module.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::super::RunningGate;
use super::ANNOTATION_COMMAND;
use crate::crd::{
    Color, GateSpec, GateStatus, GateVerdict, RelayerDeployment, RelayerDeploymentStatus,
    RolloutStatus, RolloutStep,
};
use crate::gates::Tally;
use crate::resources::{self, LABEL_REVISION, Plan, status};
use crate::rollout::{self, Action, Command, Event, Facts, GateKind, GateOutcome, Settings, State};
use refusal::{REFUSED, refusal};

/// How often a colour being left is asked for drain evidence once the minimum delay passed.
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// Longest sleep of a reconcile while a cutover is in flight (watches wake it sooner).
const IN_FLIGHT_RESYNC: Duration = Duration::from_secs(5);
/// Rounds of derived events per reconcile: enough for Deploying → PrePromotion → ... when
/// several facts are already true, bounded so a reconcile always ends.
const MAX_ROUNDS: usize = 4;

/// What one reconcile read before deciding.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The object (a quorum read while a cutover is in flight).
    pub rd: &'a RelayerDeployment,
    /// The spec's revision and its number.
    pub plan: &'a Plan,
    /// The object's ControllerRevisions.
    pub revisions: &'a [Arc<ControllerRevision>],
    /// First reconcile of the object since this process started.
    pub restarted: bool,
    /// The blue Deployment, as cached.
    pub blue: Option<Arc<Deployment>>,
    /// The green Deployment, as cached.
    pub green: Option<Arc<Deployment>>,
    /// What the object's HPA asks for, when autoscaling is on.
    pub hpa_desired: Option<i32>,
    /// The gate running for the object, if one does.
    pub gate: Option<RunningGate>,
    /// Drain evidence of a colour being left, once a decision asked for it.
    pub drain: Option<DrainEvidence>,
    /// Period of the resync of an object with no cutover in flight.
    pub resync: Duration,
}

impl Observation<'_> {
    fn deployment(&self, color: Color) -> Option<&Deployment> {
        match color {
            Color::Blue => self.blue.as_deref(),
            Color::Green => self.green.as_deref(),
        }
    }
}

/// What the pods of a colour being left said about their drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainEvidence {
    /// The colour asked.
    pub color: Color,
    /// Whether it is drained.
    pub drained: bool,
    /// What status says about it.
    pub note: String,
}

/// The gate that should run for the object after this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedGate {
    /// Which gate, for which revision, and its tally (recorded in status).
    pub gate: RunningGate,
    /// `Some` when it is not the gate running now and must be started.
    pub start: Option<GateStart>,
}

/// How to start a gate.
#[derive(Debug, Clone, PartialEq)]
pub struct GateStart {
    /// The gate's spec.
    pub spec: GateSpec,
    /// The colour whose pods are judged.
    pub under_test: Color,
    /// The colour relative gates compare with.
    pub compare_with: Color,
}

/// What the reconcile records and does.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The machine's next state.
    pub state: State,
    /// The status to write (before anything else is done).
    pub status: RelayerDeploymentStatus,
    /// The machine's actions (Events to publish among them).
    pub actions: Vec<Action>,
    /// The gate that should run; `None` stops the one running.
    pub gate: Option<WantedGate>,
    /// Gate verdicts to count (`passed` or `failed`).
    pub gate_verdicts: Vec<(GateKind, GateVerdict)>,
    /// Drain evidence of this colour is needed and was not observed: observe it and decide
    /// again.
    pub drain_wanted: Option<Color>,
    /// The command annotation as found (it is removed once acted on).
    pub command: Option<String>,
    /// A command annotation that is none of the known ones.
    pub unknown_command: Option<String>,
    /// When to reconcile again at the latest.
    pub requeue: Duration,
}

/// The machine's settings from the spec.
pub fn settings(rd: &RelayerDeployment) -> Settings {
    let bg = &rd.spec.strategy.blue_green;
    let ms = |seconds: i32| i64::from(seconds) * 1000;
    Settings {
        auto_promote: bg.auto_promote,
        auto_rollback: bg.auto_rollback,
        pre_gate: bg.pre_promotion.is_some(),
        post_gate: bg.post_promotion.is_some(),
        progress_deadline_ms: ms(bg.progress_deadline_seconds),
        scale_down_delay_ms: ms(bg.scale_down_delay_seconds),
        max_scale_down_wait_ms: ms(bg.max_scale_down_wait_seconds),
        auto_promotion_ms: bg.auto_promotion_seconds.map(ms),
        abort_scale_down_delay_ms: bg.abort_scale_down_delay_seconds.map_or(0, ms),
    }
}

/// The machine's state as status recorded it; an object without one (new, or written by an
/// operator before cutovers existed) runs what its status or spec says on its active colour.
pub fn state_from_status(rd: &RelayerDeployment, plan: &Plan) -> State {
    let status = rd.status.clone().unwrap_or_default();
    let active = status.active_color.unwrap_or(Color::Blue);
    match status.rollout {
        Some(rollout) if !rollout.active_revision.is_empty() => State { active, rollout },
        _ => State {
            active,
            rollout: RolloutStatus {
                active_revision: status
                    .current_revision
                    .unwrap_or_else(|| plan.revision.clone()),
                ..RolloutStatus::default()
            },
        },
    }
}

/// The decision for what `obs` saw at `now`: the input events (restart, command, pause, spec,
/// tick), then a bounded number of rounds of derived events (preview ready, gate outcome,
/// drain), the status of the state reached, and when to look again.
pub fn decide(obs: &Observation<'_>, now: &Time) -> Decision {
    let rd = obs.rd;
    let settings = settings(rd);
    let mut state = state_from_status(rd, obs.plan);
    let now_ms = now.0.as_millisecond();
    let desired_replicas = rd.spec.replicas.max(obs.hpa_desired.unwrap_or(0));
    let preview_replicas = rd.spec.strategy.blue_green.preview_replicas;
    let facts_for = |state: &State| {
        let layout = rollout::layout(state, rd.spec.replicas, preview_replicas);
        let held = rd.spec.replicas.max(state.rollout.hold_replicas);
        let other = obs.deployment(state.other());
        let revision = state.rollout.other_revision.as_deref().unwrap_or("");
        let facts = Facts {
            now_ms,
            other_available: available(other, revision, held),
            desired_replicas,
        };
        let ready = available(other, revision, layout.other_plan.replicas);
        (facts, ready)
    };

    let command = rd.annotations().get(ANNOTATION_COMMAND).cloned();
    let refused = refusal(rd, obs.revisions, &obs.plan.revision, &state);
    let (inputs, unknown_command) = inputs(obs, command.as_deref(), &state, refused.is_none());
    let mut actions = Vec::new();
    for event in &inputs {
        let (facts, _) = facts_for(&state);
        let (next, mut acts) = rollout::transition(&state, event, &settings, &facts);
        state = next;
        actions.append(&mut acts);
    }

    // Derived events: what the caches and the gates say about the state reached so far.
    let mut gate = obs
        .gate
        .clone()
        .map(|gate| WantedGate { gate, start: None });
    let mut gate_verdicts = Vec::new();
    let mut drain_note = None;
    let mut drain_wanted = None;
    for _ in 0..MAX_ROUNDS {
        let before = state.clone();
        let (facts, preview_ready) = facts_for(&state);
        let mut derived = Vec::new();
        if preview_ready {
            derived.push(Event::PodsReady);
        }
        if let Some(tally) = ensure_gate(rd, &state, &mut gate) {
            record_gate(&mut state.rollout, tally.0.clone());
            let kind = gate.as_ref().map(|g| g.gate.kind);
            // NB: a paused machine ignores a gate's outcome; it is taken (counted, published
            // and notified once) when the rollout resumes.
            if let Some(kind) = kind
                && !state.rollout.paused
                && let Some(outcome) = gate_outcome(kind, &tally, &mut actions, &mut gate_verdicts)
            {
                derived.push(Event::Gate(outcome));
            }
        }
        if state.rollout.step == RolloutStep::ScalingDown
            && now_ms.saturating_sub(state.rollout.step_started_ms) >= settings.scale_down_delay_ms
        {
            let left = state.other();
            match obs.drain.as_ref().filter(|d| d.color == left) {
                Some(drain) => {
                    drain_note = Some(drain.note.clone());
                    if drain.drained {
                        derived.push(Event::Drained);
                    }
                }
                None => drain_wanted = Some(left),
            }
        }
        for event in &derived {
            let (next, mut acts) = rollout::transition(&state, event, &settings, &facts);
            state = next;
            actions.append(&mut acts);
        }
        if state == before {
            break;
        }
    }
    if state.rollout.step == RolloutStep::ScalingDown
        && let Some(note) = drain_note
    {
        state.rollout.scale_down = Some(note);
    }
    // NB: the tally goes to status before a finished gate is dropped.
    if let Some(wanted) = &gate {
        record_gate(&mut state.rollout, wanted.gate.tally.0.clone());
    }
    if actions.iter().any(|a| matches!(a, Action::StopGates)) || state.gate().is_none() {
        gate = gate.filter(|wanted| is_current(&wanted.gate, &state));
    }

    let mut status = status::cutover(
        rd,
        obs.plan,
        &state,
        obs.deployment(state.active),
        resources::history(obs.revisions),
        now,
    );
    if let Some(why) = refused {
        let said_before = rd
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::PROGRESSING))
            .is_some_and(|c| c.reason == REFUSED && c.message == why);
        if !said_before {
            actions.push(Action::Emit {
                warning: true,
                reason: REFUSED,
                message: why.clone(),
            });
        }
        status::Conditions::of(rd, now).set(
            &mut status.conditions,
            status::PROGRESSING,
            false,
            REFUSED,
            why,
        );
    }
    let requeue = next_wakeup(&state, &settings, now_ms, obs.resync);
    Decision {
        state,
        status,
        actions,
        gate,
        gate_verdicts,
        drain_wanted,
        command,
        unknown_command,
        requeue,
    }
}

/// The events every reconcile starts with, and an unknown command if the annotation holds one.
/// The spec's revision is among them only when it `may_start` a cutover.
fn inputs(
    obs: &Observation<'_>,
    command: Option<&str>,
    state: &State,
    may_start: bool,
) -> (Vec<Event>, Option<String>) {
    let mut inputs = Vec::new();
    let mut unknown = None;
    if obs.restarted {
        inputs.push(Event::Restart);
    }
    match command.map(str::trim) {
        Some("promote") => inputs.push(Event::Command(Command::Promote)),
        Some("abort") => inputs.push(Event::Command(Command::Abort)),
        Some("retry") => inputs.push(Event::Command(Command::Retry)),
        Some(other) => unknown = Some(other.to_owned()),
        None => {}
    }
    let paused = obs.rd.spec.strategy.blue_green.paused;
    if paused != state.rollout.paused {
        inputs.push(Event::Command(if paused {
            Command::Pause
        } else {
            Command::Resume
        }));
    }
    if may_start {
        inputs.push(Event::SpecChanged {
            revision: obs.plan.revision.clone(),
        });
    }
    inputs.push(Event::Tick);
    (inputs, unknown)
}

/// Whether a colour's Deployment runs `revision` with `want` pods, all updated and available.
fn available(d: Option<&Deployment>, revision: &str, want: i32) -> bool {
    let Some(d) = d else {
        return false;
    };
    if want <= 0 || revision.is_empty() {
        return false;
    }
    let runs = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(LABEL_REVISION))
        .is_some_and(|r| r == revision);
    let sized = d.spec.replicas == Some(want);
    let Some(st) = d.status.as_ref() else {
        return false;
    };
    let current = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    runs && sized
        && current
        && st.updated_replicas.unwrap_or(0) >= want
        && st.available_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) == want
}

/// Makes `gate` the gate the current step runs (the one running if it is that gate, else a new
/// one resumed from the counts status kept or fresh) and returns its tally; `None` when the
/// step runs no gate.
fn ensure_gate(
    rd: &RelayerDeployment,
    state: &State,
    gate: &mut Option<WantedGate>,
) -> Option<Tally> {
    let kind = state.gate()?;
    let bg = &rd.spec.strategy.blue_green;
    let (spec, under_test, revision) = match kind {
        GateKind::PrePromotion => bg
            .pre_promotion
            .clone()
            .zip(state.rollout.other_revision.clone())
            .map(|(spec, revision)| (spec, state.other(), revision)),
        GateKind::PostPromotion => bg
            .post_promotion
            .clone()
            .map(|spec| (spec, state.active, state.rollout.active_revision.clone())),
    }?;
    let current = gate
        .as_ref()
        .is_some_and(|g| g.gate.kind == kind && g.gate.revision == revision);
    if !current {
        // A fresh gate, or one resumed from the counts status kept (after a restart).
        let restored = state
            .rollout
            .gates
            .iter()
            .find(|g| g.name == kind.name() && g.revision == revision)
            .filter(|g| g.verdict == GateVerdict::Running && g.samples > 0);
        let tally =
            restored.map_or_else(|| Tally::new(kind.name(), &revision), |g| Tally(g.clone()));
        *gate = Some(WantedGate {
            gate: RunningGate {
                kind,
                revision,
                tally,
            },
            // A relative gate judges the colour under test against the other one: before the
            // promotion the preview against the active colour, after it the new active colour
            // against the old one kept warm.
            start: Some(GateStart {
                spec,
                under_test,
                compare_with: under_test.other(),
            }),
        });
    }
    gate.as_ref().map(|g| g.gate.tally.clone())
}

/// The machine's event for a gate's tally (and the Event and count of a decided gate).
fn gate_outcome(
    kind: GateKind,
    tally: &Tally,
    actions: &mut Vec<Action>,
    verdicts: &mut Vec<(GateKind, GateVerdict)>,
) -> Option<GateOutcome> {
    match tally.0.verdict {
        GateVerdict::Running => {
            (tally.0.inconclusive > 0 && tally.0.samples > 0).then_some(GateOutcome::Inconclusive)
        }
        GateVerdict::Passed => {
            verdicts.push((kind, GateVerdict::Passed));
            Some(GateOutcome::Passed)
        }
        GateVerdict::Failed => {
            verdicts.push((kind, GateVerdict::Failed));
            let reason = tally.0.reason.clone().unwrap_or_default();
            let values = tally.0.last_values.clone().unwrap_or_default();
            actions.push(Action::Emit {
                warning: true,
                reason: "GateFailed",
                message: format!("{}: {reason}; last values: {values}", kind.name()),
            });
            Some(GateOutcome::Failed {
                gate: kind.name().to_owned(),
                reason: format!("{reason} [{values}]"),
            })
        }
    }
}

/// Whether `gate` is the undecided gate of `state`'s step, for `state`'s revision.
fn is_current(gate: &RunningGate, state: &State) -> bool {
    state.gate() == Some(gate.kind)
        && match gate.kind {
            GateKind::PrePromotion => state.rollout.other_revision.as_deref(),
            GateKind::PostPromotion => Some(state.rollout.active_revision.as_str()),
        } == Some(gate.revision.as_str())
        && !gate.tally.decided()
}

/// Keeps the newest result per gate name in status.
fn record_gate(rollout: &mut RolloutStatus, gate: GateStatus) {
    rollout.gates.retain(|g| g.name != gate.name);
    rollout.gates.push(gate);
    rollout.gates.sort_by(|a, b| b.name.cmp(&a.name));
}

/// The ControllerRevision a `rollback-to` annotation names: `previous` (the colour kept warm
/// after a promotion, else the newest revision that is not the active one), a revision hash, or
/// a revision number. `None` when no kept revision matches.
pub fn rollback_target<'a>(
    revisions: &'a [Arc<ControllerRevision>],
    state: &State,
    target: &str,
) -> Option<&'a Arc<ControllerRevision>> {
    let revision_of = |r: &ControllerRevision| r.labels().get(LABEL_REVISION).cloned();
    let mut sorted: Vec<&Arc<ControllerRevision>> = revisions.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.revision.unwrap_or(0)));
    match target {
        "previous" => state
            .rollout
            .other_revision
            .clone()
            .filter(|_| state.rollout.step != RolloutStep::Deploying)
            .and_then(|rev| {
                sorted
                    .iter()
                    .find(|r| revision_of(r).as_deref() == Some(rev.as_str()))
            })
            .or_else(|| {
                sorted.iter().find(|r| {
                    revision_of(r).is_some_and(|rev| rev != state.rollout.active_revision)
                })
            })
            .copied(),
        t => sorted
            .iter()
            .find(|r| {
                revision_of(r).as_deref() == Some(t)
                    || r.revision.map(|n| n.to_string()).as_deref() == Some(t)
            })
            .copied(),
    }
}

/// When to look again: at the next deadline or delay of the step, or sooner while waiting
/// for drain evidence; watches and gate samples wake it earlier.
fn next_wakeup(state: &State, settings: &Settings, now_ms: i64, resync: Duration) -> Duration {
    let r = &state.rollout;
    let elapsed = now_ms.saturating_sub(r.step_started_ms);
    let until = |ms: i64| {
        Duration::from_millis(u64::try_from(ms.saturating_sub(elapsed).max(1)).unwrap_or(1))
    };
    let wait = match r.step {
        RolloutStep::Aborted if r.other_revision.is_some() && !r.paused => {
            until(settings.abort_scale_down_delay_ms)
        }
        RolloutStep::Stable | RolloutStep::Aborted => return resync,
        _ if r.paused => IN_FLIGHT_RESYNC,
        RolloutStep::AwaitingPromotion if settings.auto_promote && !r.promote_requested => {
            settings.auto_promotion_ms.map_or(IN_FLIGHT_RESYNC, until)
        }
        RolloutStep::Deploying => until(settings.progress_deadline_ms),
        RolloutStep::ScalingDown if elapsed < settings.scale_down_delay_ms => {
            until(settings.scale_down_delay_ms)
        }
        RolloutStep::ScalingDown => DRAIN_POLL.min(until(settings.max_scale_down_wait_ms)),
        _ => IN_FLIGHT_RESYNC,
    };
    wait.min(IN_FLIGHT_RESYNC)
}

mod refusal;
#[cfg(test)]
mod tests;
