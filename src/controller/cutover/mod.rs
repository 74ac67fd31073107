//! The reconcile of a valid RelayerDeployment: the blue-green cutover around the pure
//! [`crate::rollout`] machine.
//!
//! Each reconcile reads the machine's state from status, derives events from the caches
//! (spec revision, commands, preview availability, gate tallies, drain evidence, time), runs
//! them through the machine, **writes status first** (fenced by `resourceVersion`, so a stale
//! reconcile or a deposed leader cannot overwrite newer progress), and only then realises the
//! layout of the new state with server-side apply. A crash between the two leaves a status
//! whose layout the next reconcile applies; nothing is decided twice.
//!
//! Manual commands, all reachable with plain kubectl:
//! - `kubectl annotate rd NAME relayer.foresight.dev/command=promote|abort|retry`
//! - `kubectl annotate rd NAME relayer.foresight.dev/rollback-to=previous|<revision>|<number>`
//!   (the operator writes that revision's image, pod overrides, config and autoscaling back
//!   into the spec, which then rolls out like any change)
//! - `kubectl patch rd NAME --type merge -p '{"spec":{"strategy":{"blueGreen":{"paused":true}}}}'`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{Context, Owned, ensure, history, plan, prune, publish, remove, write_status};
use crate::crd::{
    Color, GateStatus, GateVerdict, Phase, RelayerDeployment, RelayerDeploymentStatus,
    RolloutStatus, RolloutStep,
};
use crate::gates::Tally;
use crate::gates::runner::{self, Drain, GateRun, Target, Targets};
use crate::resources::status::{self, DEGRADED, Observed, PROGRESSING};
use crate::resources::{self, Bundle, LABEL_COLOR, LABEL_INSTANCE, LABEL_REVISION, Plan};
use crate::rollout::{self, Action, Command, Event, Facts, GateKind, GateOutcome, Settings, State};
use crate::{Error, Result};

/// Annotation carrying a command: `promote`, `abort` or `retry`.
pub const ANNOTATION_COMMAND: &str = "relayer.foresight.dev/command";
/// Annotation asking for a rollback: `previous`, a revision hash or a revision number.
pub const ANNOTATION_ROLLBACK_TO: &str = "relayer.foresight.dev/rollback-to";

/// How often a colour being left is asked for drain evidence once the minimum delay passed.
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// Longest sleep of a reconcile while a cutover is in flight (watches wake it sooner).
const IN_FLIGHT_RESYNC: Duration = Duration::from_secs(5);
/// Rounds of derived events per reconcile: enough for Deploying → PrePromotion → ... when
/// several facts are already true, bounded so a reconcile always ends.
const MAX_ROUNDS: usize = 4;

/// The gate running for one object.
pub struct ActiveGate {
    kind: GateKind,
    revision: String,
    run: GateRun,
}

/// Reconciles a valid RelayerDeployment: cutover state, status, children.
pub(crate) async fn reconcile(
    cached: &RelayerDeployment,
    ctx: &Context,
    ns: &str,
    revisions: &[Arc<ControllerRevision>],
    now: &Time,
) -> Result<Requeue> {
    let key = ObjectRef::from_obj(cached);
    let restarted = lock(&ctx.seen).insert(key.clone());
    let api: Api<RelayerDeployment> = Api::namespaced(ctx.client.clone(), ns);
    // NB: during a cutover a reconcile woken by a child event must not act on a status older
    // than its own last write; the watch cache may lag, a quorum read does not.
    let fresh;
    let rd = if needs_fresh_read(cached) {
        match api.get_opt(&cached.name_any()).await? {
            Some(rd) => {
                fresh = rd;
                &fresh
            }
            None => return Ok(Requeue::await_change()),
        }
    } else {
        cached
    };

    let plan = plan(rd, revisions)?;
    if let Some(target) = rd.annotations().get(ANNOTATION_ROLLBACK_TO) {
        let state = state_from_status(rd, &plan);
        restore_revision(ctx, rd, &api, revisions, &state, target).await?;
        return Ok(Requeue::requeue(Duration::from_millis(100)));
    }

    let settings = settings(rd);
    let mut state = state_from_status(rd, &plan);
    let now_ms = now.0.as_millisecond();
    let s = &ctx.stores;
    let deployment_of = |color: Color| {
        s.deployments
            .get(&ObjectRef::new(&resources::deployment_name(rd, color)).within(ns))
    };
    let hpa_desired = s
        .hpas
        .get(&ObjectRef::new(&rd.name_any()).within(ns))
        .filter(|h| h.controlled_by(rd) && rd.spec.autoscaling.is_some())
        .and_then(|h| h.status.as_ref().map(|st| st.desired_replicas));
    let desired_replicas = rd.spec.replicas.max(hpa_desired.unwrap_or(0));
    let preview_replicas = rd.spec.strategy.blue_green.preview_replicas;

    let facts_for = |state: &State| {
        let layout = rollout::layout(state, rd.spec.replicas, preview_replicas);
        let held = rd.spec.replicas.max(state.rollout.hold_replicas);
        let other = deployment_of(state.other());
        let revision = state.rollout.other_revision.as_deref().unwrap_or("");
        let facts = Facts {
            now_ms,
            other_available: available(other.as_deref(), revision, held),
            desired_replicas,
        };
        let ready = available(other.as_deref(), revision, layout.other_plan.replicas);
        (facts, ready)
    };

    let mut inputs = Vec::new();
    if restarted {
        inputs.push(Event::Restart);
    }
    let command = rd.annotations().get(ANNOTATION_COMMAND).cloned();
    match command.as_deref().map(str::trim) {
        Some("promote") => inputs.push(Event::Command(Command::Promote)),
        Some("abort") => inputs.push(Event::Command(Command::Abort)),
        Some("retry") => inputs.push(Event::Command(Command::Retry)),
        Some(other) => {
            publish(
                ctx,
                rd,
                EventType::Warning,
                "UnknownCommand",
                &format!("{ANNOTATION_COMMAND}={other:?} is not promote, abort or retry"),
            )
            .await;
        }
        None => {}
    }
    let paused = rd.spec.strategy.blue_green.paused;
    if paused != state.rollout.paused {
        inputs.push(Event::Command(if paused {
            Command::Pause
        } else {
            Command::Resume
        }));
    }
    inputs.push(Event::SpecChanged {
        revision: plan.revision.clone(),
    });
    inputs.push(Event::Tick);

    let mut actions = Vec::new();
    for event in &inputs {
        let (facts, _) = facts_for(&state);
        let (next, mut acts) = rollout::transition(&state, event, &settings, &facts);
        state = next;
        actions.append(&mut acts);
    }
    // Derived events: what the caches and the gates say about the state reached so far.
    let mut drain_note = None;
    for _ in 0..MAX_ROUNDS {
        let before = state.clone();
        let (facts, preview_ready) = facts_for(&state);
        let mut derived = Vec::new();
        if preview_ready {
            derived.push(Event::PodsReady);
        }
        let (outcome, tally) = gate_outcome(ctx, rd, &key, &state, &mut actions);
        if let Some(tally) = tally {
            record_gate(&mut state.rollout, tally.0);
        }
        if let Some(outcome) = outcome {
            derived.push(Event::Gate(outcome));
        }
        if state.rollout.step == RolloutStep::ScalingDown
            && now_ms.saturating_sub(state.rollout.step_started_ms) >= settings.scale_down_delay_ms
        {
            let (drained, note) = drain_evidence(ctx, rd, ns, &state).await;
            drain_note = Some(note);
            if drained {
                derived.push(Event::Drained);
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
    if let Some(tally) = current_tally(ctx, &key) {
        record_gate(&mut state.rollout, tally.0);
    }
    if actions.iter().any(|a| matches!(a, Action::StopGates)) || state.gate().is_none() {
        stop_gate_unless_current(ctx, &key, &state);
    }

    // Status first: it is the record every later reconcile (and a new leader) acts on.
    let next = build_status(
        rd,
        &plan,
        &state,
        deployment_of(state.active).as_deref(),
        revisions,
        now,
    );
    let phase_before = rd.status.as_ref().map(|st| st.phase);
    if !write_status(ctx, rd, next.clone()).await? {
        return Ok(Requeue::requeue(Duration::from_millis(50)));
    }
    for action in &actions {
        if let Action::Emit {
            warning,
            reason,
            message,
        } = action
        {
            let kind = if *warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            ctx.metrics
                .rollout_events
                .get_or_create(&crate::metrics::RolloutLabels {
                    reason: (*reason).to_owned(),
                })
                .inc();
            tracing::info!(name = %rd.name_any(), namespace = %ns, reason, "{message}");
            publish(ctx, rd, kind, reason, message).await;
        }
    }
    if phase_before != Some(next.phase) {
        publish(
            ctx,
            rd,
            EventType::Normal,
            "PhaseChanged",
            &format!("phase {:?}", next.phase),
        )
        .await;
    }

    realise(ctx, rd, ns, &plan, &state, revisions).await?;
    if command.is_some() {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_COMMAND: null } } });
        api.patch(
            &rd.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(next_wakeup(ctx, &state, &settings, now_ms))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn needs_fresh_read(rd: &RelayerDeployment) -> bool {
    let Some(status) = rd.status.as_ref() else {
        return false;
    };
    let in_flight = status
        .rollout
        .as_ref()
        .is_some_and(|r| !matches!(r.step, RolloutStep::Stable | RolloutStep::Aborted));
    let changed = status.observed_generation != rd.metadata.generation;
    let commanded = rd.annotations().contains_key(ANNOTATION_COMMAND)
        || rd.annotations().contains_key(ANNOTATION_ROLLBACK_TO);
    in_flight || changed || commanded
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

/// Pods of one colour, as gate and drain targets.
struct PodTargets {
    pods: kube::runtime::reflector::Store<Pod>,
    namespace: String,
    instance: String,
    under_test: Color,
    active: Color,
    port: u16,
    networks: Vec<super::Network>,
}

impl PodTargets {
    fn of(&self, color: Color, ready_only: bool) -> Vec<Target> {
        pods_of(&self.pods, &self.namespace, &self.instance, color)
            .into_iter()
            .filter(|p| !ready_only || is_ready(p))
            .filter_map(|p| {
                let ip: std::net::IpAddr = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
                // NB: never contact an address outside the allowed networks.
                self.networks
                    .iter()
                    .any(|n| n.contains(ip))
                    .then(|| Target {
                        key: format!("{}/{}", p.name_any(), p.uid().unwrap_or_default()),
                        addr: SocketAddr::new(ip, self.port),
                    })
            })
            .collect()
    }
}

impl Targets for PodTargets {
    fn under_test(&self) -> Vec<Target> {
        self.of(self.under_test, true)
    }

    fn active(&self) -> Vec<Target> {
        self.of(self.active, true)
    }
}

fn pods_of(
    pods: &kube::runtime::reflector::Store<Pod>,
    ns: &str,
    instance: &str,
    color: Color,
) -> Vec<Arc<Pod>> {
    pods.state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(ns)
                && p.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(instance)
                && p.labels().get(LABEL_COLOR).map(String::as_str) == Some(color.as_str())
        })
        .collect()
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ensures the gate of the current step runs and returns its decision, if any.
fn gate_outcome(
    ctx: &Context,
    rd: &RelayerDeployment,
    key: &ObjectRef<RelayerDeployment>,
    state: &State,
    actions: &mut Vec<Action>,
) -> (Option<GateOutcome>, Option<Tally>) {
    let Some(kind) = state.gate() else {
        return (None, None);
    };
    let bg = &rd.spec.strategy.blue_green;
    let gate = match kind {
        GateKind::PrePromotion => bg
            .pre_promotion
            .clone()
            .zip(state.rollout.other_revision.clone())
            .map(|(spec, revision)| (spec, state.other(), revision)),
        GateKind::PostPromotion => bg
            .post_promotion
            .clone()
            .map(|spec| (spec, state.active, state.rollout.active_revision.clone())),
    };
    let Some((spec, under_test, revision)) = gate else {
        return (None, None);
    };
    let mut gates = lock(&ctx.gates);
    let current = gates
        .get(key)
        .is_some_and(|g| g.kind == kind && g.revision == revision);
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
        let port = resources::container_port(rd)
            .ok()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(3000);
        let targets = Arc::new(PodTargets {
            pods: ctx.stores.pods.clone(),
            namespace: rd.namespace().unwrap_or_default(),
            instance: rd.name_any(),
            under_test,
            active: state.other(),
            port,
            networks: ctx.config.pod_networks.clone(),
        });
        let wake = ctx.wake.clone();
        let wake_key = key.clone();
        let changed = Arc::new(move || {
            let _ = wake.send(wake_key.clone());
        });
        tracing::info!(name = %rd.name_any(), gate = kind.name(), %revision, "gate started");
        let run = runner::spawn(spec, tally, targets, changed);
        if gates
            .insert(
                key.clone(),
                ActiveGate {
                    kind,
                    revision: revision.clone(),
                    run,
                },
            )
            .is_none()
        {
            ctx.metrics.gates_running.inc();
        }
    }
    let Some(tally) = gates.get(key).map(|g| g.run.tally()) else {
        return (None, None);
    };
    drop(gates);
    let outcome = match tally.0.verdict {
        GateVerdict::Running => {
            (tally.0.inconclusive > 0 && tally.0.samples > 0).then_some(GateOutcome::Inconclusive)
        }
        GateVerdict::Passed => {
            count_decision(ctx, kind, "passed");
            Some(GateOutcome::Passed)
        }
        GateVerdict::Failed => {
            count_decision(ctx, kind, "failed");
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
    };
    (outcome, Some(tally))
}

fn count_decision(ctx: &Context, kind: GateKind, verdict: &str) {
    ctx.metrics
        .gate_decisions
        .get_or_create(&crate::metrics::GateLabels {
            gate: kind.name().to_owned(),
            verdict: verdict.to_owned(),
        })
        .inc();
}

/// The tally of the gate that ran in this reconcile (also a finished one, for status).
fn current_tally(ctx: &Context, key: &ObjectRef<RelayerDeployment>) -> Option<Tally> {
    let gates = lock(&ctx.gates);
    Some(gates.get(key)?.run.tally())
}

/// Drops the object's gate unless it is the one the current step runs.
fn stop_gate_unless_current(ctx: &Context, key: &ObjectRef<RelayerDeployment>, state: &State) {
    let mut gates = lock(&ctx.gates);
    let keep = gates.get(key).is_some_and(|g| {
        state.gate() == Some(g.kind)
            && match g.kind {
                GateKind::PrePromotion => state.rollout.other_revision.as_deref(),
                GateKind::PostPromotion => Some(state.rollout.active_revision.as_str()),
            } == Some(g.revision.as_str())
            && !g.run.tally().decided()
    });
    if !keep && let Some(stopped) = gates.remove(key) {
        // NB: the last tally stays in status; recorded before the gate is dropped.
        drop(stopped);
        ctx.metrics.gates_running.dec();
    }
}

/// Keeps the newest result per gate name in status.
fn record_gate(rollout: &mut RolloutStatus, gate: GateStatus) {
    rollout.gates.retain(|g| g.name != gate.name);
    rollout.gates.push(gate);
    rollout.gates.sort_by(|a, b| b.name.cmp(&a.name));
}

/// Whether the colour being left is drained, and what status should say about it.
async fn drain_evidence(
    ctx: &Context,
    rd: &RelayerDeployment,
    ns: &str,
    state: &State,
) -> (bool, String) {
    let left = state.other();
    let old = pods_of(&ctx.stores.pods, ns, &rd.name_any(), left);
    let names: Vec<String> = old.iter().map(|p| p.name_any()).collect();
    let service = resources::service_name(rd);
    let listed = ctx
        .stores
        .slices
        .state()
        .into_iter()
        .filter(|sl| {
            sl.namespace().as_deref() == Some(ns)
                && sl.labels().get("kubernetes.io/service-name") == Some(&service)
        })
        .flat_map(|sl| sl.endpoints.clone().unwrap_or_default())
        .filter(|e| {
            e.target_ref
                .as_ref()
                .and_then(|t| t.name.as_ref())
                .is_some_and(|n| names.contains(n))
        })
        .count();
    if listed > 0 {
        return (
            false,
            format!(
                "waiting: the active Service's EndpointSlices still list {listed} pods of {left}"
            ),
        );
    }
    let port = resources::container_port(rd)
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(3000);
    let targets = PodTargets {
        pods: ctx.stores.pods.clone(),
        namespace: ns.to_owned(),
        instance: rd.name_any(),
        under_test: left,
        active: state.active,
        port,
        networks: ctx.config.pod_networks.clone(),
    };
    let reachable = targets.of(left, false);
    let with_ip = old
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
        .count();
    if reachable.len() < with_ip {
        return (
            false,
            format!(
                "waiting: {} pods of {left} are outside --pod-networks, so their drain cannot be read",
                with_ip - reachable.len()
            ),
        );
    }
    match runner::drain_evidence(&reachable).await {
        Drain::Idle => (
            true,
            format!("{left} drained: no endpoints, requests or sagas left"),
        ),
        Drain::Busy(why) => (false, format!("waiting: {why}")),
    }
}

/// The status for `state`.
fn build_status(
    rd: &RelayerDeployment,
    plan: &Plan,
    state: &State,
    active: Option<&Deployment>,
    revisions: &[Arc<ControllerRevision>],
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
    let mut next = status::status(rd, Some(&active_plan), observed, history(revisions), now);
    let previous = rd.status.clone().unwrap_or_default();
    next.current_revision = Some(plan.revision.clone());
    next.preview_color = state.rollout.other_revision.as_ref().map(|_| state.other());
    let step = state.rollout.step;
    let set =
        |next: &mut RelayerDeploymentStatus, type_: &str, ok: bool, reason: &str, msg: String| {
            if let Some(c) = next.conditions.iter_mut().find(|c| c.type_ == type_) {
                let status = if ok { "True" } else { "False" };
                if c.status != status {
                    c.last_transition_time = previous
                        .conditions
                        .iter()
                        .find(|p| p.type_ == type_ && p.status == status)
                        .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
                }
                c.status = status.to_owned();
                c.reason = reason.to_owned();
                c.message = msg;
            }
        };
    match step {
        RolloutStep::Stable => {
            if next.phase != Phase::Stable {
                next.stable_revision = previous.stable_revision.clone();
            }
        }
        RolloutStep::Aborted => {
            next.phase = Phase::Degraded;
            next.stable_revision = Some(state.rollout.active_revision.clone());
            let why = state.rollout.abort_reason.clone().unwrap_or_default();
            set(&mut next, DEGRADED, true, "CutoverAborted", why);
            set(
                &mut next,
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
            next.stable_revision = previous.stable_revision.clone();
            let target = state.rollout.target_revision.clone().unwrap_or_default();
            set(
                &mut next,
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

/// Applies the children of `state`'s layout.
async fn realise(
    ctx: &Context,
    rd: &RelayerDeployment,
    ns: &str,
    plan: &Plan,
    state: &State,
    revisions: &[Arc<ControllerRevision>],
) -> Result<()> {
    let s = &ctx.stores;
    let layout = rollout::layout(
        state,
        rd.spec.replicas,
        rd.spec.strategy.blue_green.preview_replicas,
    );
    let mut changed = Vec::new();
    let spec_plan = Plan {
        active: state.active,
        ..plan.clone()
    };
    // NB: ConfigMaps and the ControllerRevision first, so pods never reference a missing one.
    ensure(
        ctx,
        &s.config_maps,
        &resources::config_map(rd)?,
        &mut changed,
    )
    .await?;
    ensure(
        ctx,
        &s.revisions,
        &resources::controller_revision(rd, &spec_plan)?,
        &mut changed,
    )
    .await?;
    for color_plan in [&layout.active_plan, &layout.other_plan] {
        let color = color_plan.color;
        match &color_plan.revision {
            Some(revision) => {
                let bundle = if *revision == plan.revision {
                    Some(Bundle::of(rd))
                } else {
                    let name = resources::controller_revision_name(rd, revision);
                    revisions
                        .iter()
                        .find(|r| r.name_any() == name)
                        .and_then(|r| Bundle::from_revision(r))
                };
                let Some(bundle) = bundle else {
                    tracing::warn!(name = %rd.name_any(), %revision, %color, "no ControllerRevision for a revision in use; leaving its Deployment as it is");
                    continue;
                };
                let as_run = bundle.apply_to(rd, color_plan.replicas);
                ensure(
                    ctx,
                    &s.config_maps,
                    &resources::config_map(&as_run)?,
                    &mut changed,
                )
                .await?;
                let deployment = resources::deployment(&as_run, color, revision)?;
                ensure(ctx, &s.deployments, &deployment, &mut changed).await?;
            }
            None => scale_to_zero(ctx, rd, ns, color, &mut changed).await?,
        }
    }
    ensure(
        ctx,
        &s.services,
        &resources::service(rd, layout.active),
        &mut changed,
    )
    .await?;
    let preview = resources::preview_service(rd, layout.active.other());
    ensure(ctx, &s.services, &preview, &mut changed).await?;
    ensure(ctx, &s.pdbs, &resources::pdb(rd), &mut changed).await?;
    let name = rd.name_any();
    match resources::hpa(rd) {
        Some(hpa) => {
            let hpa = if layout.hold_scale_down {
                resources::hold_scale_down(hpa)
            } else {
                hpa
            };
            ensure(ctx, &s.hpas, &hpa, &mut changed).await?;
        }
        None => remove(ctx, rd, &s.hpas, &name, &mut changed).await?,
    }
    match resources::ingress(rd) {
        Some(ingress) => ensure(ctx, &s.ingresses, &ingress, &mut changed).await?,
        None => remove(ctx, rd, &s.ingresses, &name, &mut changed).await?,
    }
    let mut in_use = vec![state.rollout.active_revision.clone(), plan.revision.clone()];
    in_use.extend(state.rollout.other_revision.clone());
    prune(ctx, rd, &spec_plan, revisions, &in_use, &mut changed).await?;
    if !changed.is_empty() {
        let converged_before = rd.status.as_ref().is_some_and(|st| {
            st.observed_generation == rd.metadata.generation
                && st.current_revision.as_deref() == Some(plan.revision.as_str())
                && !state.in_flight()
        });
        let (reason, verb) = if converged_before {
            ("DriftRepaired", "restored")
        } else {
            ("Applied", "applied")
        };
        let note = format!("{verb} {}", changed.join(", "));
        tracing::info!(name = %name, namespace = %ns, "{note}");
        publish(ctx, rd, EventType::Normal, reason, &note).await;
    }
    Ok(())
}

/// Scales a colour's Deployment to zero, leaving its template as it is.
async fn scale_to_zero(
    ctx: &Context,
    rd: &RelayerDeployment,
    ns: &str,
    color: Color,
    changed: &mut Vec<String>,
) -> Result<()> {
    let name = resources::deployment_name(rd, color);
    let Some(d) = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(&name).within(ns))
    else {
        return Ok(());
    };
    if !d.controlled_by(rd) || d.spec.replicas == Some(0) {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    // NB: an apply without the template would drop fields we own; a merge patch keeps them.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "replicas": 0 } })),
    )
    .await?;
    ctx.metrics.child_written("Deployment", "scale");
    changed.push(format!("Deployment {name} scaled to 0"));
    Ok(())
}

/// Writes the bundle of revision `target` back into the spec (and drops the annotation in the
/// same request), so the rollback rolls out like any change.
async fn restore_revision(
    ctx: &Context,
    rd: &RelayerDeployment,
    api: &Api<RelayerDeployment>,
    revisions: &[Arc<ControllerRevision>],
    state: &State,
    target: &str,
) -> Result<()> {
    let target = target.trim();
    let revision_of = |r: &ControllerRevision| r.labels().get(LABEL_REVISION).cloned();
    let mut sorted: Vec<&Arc<ControllerRevision>> = revisions.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.revision.unwrap_or(0)));
    let found = match target {
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
            }),
        t => sorted.iter().find(|r| {
            revision_of(r).as_deref() == Some(t)
                || r.revision.map(|n| n.to_string()).as_deref() == Some(t)
        }),
    };
    let Some(cr) = found else {
        publish(
            ctx,
            rd,
            EventType::Warning,
            "RollbackRefused",
            &format!("{ANNOTATION_ROLLBACK_TO}={target:?}: no such revision is kept"),
        )
        .await;
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_ROLLBACK_TO: null } } });
        api.patch(
            &rd.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        return Ok(());
    };
    let bundle = Bundle::from_revision(cr).ok_or(Error::Missing("ControllerRevision data"))?;
    // NB: a replace carrying the resourceVersion we read: the whole bundle is restored (absent
    // optional fields included, which a merge patch would keep) or, on a conflict, nothing.
    let mut restored = rd.clone();
    restored.spec.image = bundle.image.clone();
    restored.spec.pod = bundle.pod.clone();
    restored.spec.config = bundle.config.clone();
    restored.spec.autoscaling = bundle.autoscaling.clone();
    if let Some(annotations) = restored.metadata.annotations.as_mut() {
        annotations.remove(ANNOTATION_ROLLBACK_TO);
    }
    restored.metadata.managed_fields = None;
    match api
        .replace(&rd.name_any(), &PostParams::default(), &restored)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    let revision = revision_of(cr).unwrap_or_default();
    ctx.metrics
        .rollout_events
        .get_or_create(&crate::metrics::RolloutLabels {
            reason: "RollbackRequested".to_owned(),
        })
        .inc();
    publish(
        ctx,
        rd,
        EventType::Normal,
        "RollbackRequested",
        &format!(
            "spec restored from revision {revision} (number {}): image, pod, config and autoscaling",
            cr.revision.unwrap_or(0)
        ),
    )
    .await;
    Ok(())
}

/// When to look again: at the next deadline or delay of the step, or sooner while waiting
/// for drain evidence; watches and gate samples wake it earlier.
fn next_wakeup(ctx: &Context, state: &State, settings: &Settings, now_ms: i64) -> Requeue {
    let r = &state.rollout;
    let elapsed = now_ms.saturating_sub(r.step_started_ms);
    let until = |ms: i64| {
        Duration::from_millis(u64::try_from(ms.saturating_sub(elapsed).max(1)).unwrap_or(1))
    };
    let wait = match r.step {
        RolloutStep::Stable | RolloutStep::Aborted => return Requeue::requeue(ctx.config.resync),
        _ if r.paused => IN_FLIGHT_RESYNC,
        RolloutStep::Deploying => until(settings.progress_deadline_ms),
        RolloutStep::ScalingDown if elapsed < settings.scale_down_delay_ms => {
            until(settings.scale_down_delay_ms)
        }
        RolloutStep::ScalingDown => DRAIN_POLL.min(until(settings.max_scale_down_wait_ms)),
        _ => IN_FLIGHT_RESYNC,
    };
    Requeue::requeue(wait.min(IN_FLIGHT_RESYNC))
}
