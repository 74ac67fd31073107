//! The reconcile of a valid RelayerDeployment: the blue-green cutover around the pure
//! [`crate::rollout`] machine, in four steps.
//!
//! 1. **Observe**: a quorum read of the object while a cutover is in flight, the Deployments
//!    and HPA from the caches, the running gate's tally, and (only when a decision asks for
//!    it) the drain evidence of the colour being left.
//! 2. **Decide** ([`decide::decide`], pure): input events (restart, command, pause, spec,
//!    tick) and derived events (preview ready, gate outcome, drain) through the machine, the
//!    status of the state reached, the gate that should run and when to look again.
//! 3. **Record status first**, fenced by `resourceVersion`, so a stale reconcile or a deposed
//!    leader cannot overwrite newer progress.
//! 4. **Act**: start or stop the gate, publish Events, realise the layout of the new state with
//!    server-side apply, drop the command annotation. A crash between 3 and 4 leaves a status
//!    whose layout the next reconcile applies; nothing is decided twice.
//!
//! Manual commands, all reachable with plain kubectl:
//! - `kubectl annotate rd NAME relayer.foresight.dev/command=promote|abort|retry`
//! - `kubectl annotate rd NAME relayer.foresight.dev/rollback-to=previous|<revision>|<number>`
//!   (the operator writes that revision's image, pod overrides, config and autoscaling back
//!   into the spec, which then rolls out like any change)
//! - `kubectl patch rd NAME --type merge -p '{"spec":{"strategy":{"blueGreen":{"paused":true}}}}'`
//!
//! May use: [`super`] ([`Context`], [`super::plan`], the apply helpers, [`super::GateRuns`]),
//! [`crate::rollout`], [`crate::gates`] (the runner; its pod targets live in the private
//! `pods` module), [`crate::notify`] (the outbox it sends), [`crate::resources`],
//! [`crate::crd`], [`crate::metrics`].

pub mod decide;
mod pods;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::apply::{Owned, ensure, prune, publish, remove, write_status_returning};
use super::{Context, plan};
use crate::crd::{Color, GateVerdict, RelayerDeployment, RolloutStep};
use crate::gates::runner;
use crate::notify;
use crate::resources::{self, Bundle, LABEL_REVISION, Plan};
use crate::rollout::{self, Action, State};
use crate::{Error, Result};
use decide::{Decision, Observation};
use pods::{PodTargets, drain_evidence};
use tracing::Instrument as _;

pub use decide::{settings, state_from_status};

/// Annotation carrying a command: `promote`, `abort` or `retry`.
pub const ANNOTATION_COMMAND: &str = "relayer.foresight.dev/command";
/// Annotation asking for a rollback: `previous`, a revision hash or a revision number.
pub const ANNOTATION_ROLLBACK_TO: &str = "relayer.foresight.dev/rollback-to";

/// Decisions per reconcile: a decision may ask for the drain evidence of a colour, and the
/// next one, with it, may reach a step that asks for another colour's; bounded so a reconcile
/// always ends (a decision still asking then treats the colour as not drained yet).
const MAX_DECISIONS: usize = 3;

/// Reconciles a valid RelayerDeployment: observe, decide, record status, act.
pub(crate) async fn reconcile(
    cached: &RelayerDeployment,
    ctx: &Context,
    ns: &str,
    revisions: &[Arc<ControllerRevision>],
    now: &Time,
) -> Result<Requeue> {
    let key = ObjectRef::from_obj(cached);
    let restarted = ctx.seen.first_time(key.clone());
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
    tracing::Span::current().record("revision", plan.revision.as_str());
    if let Some(target) = rd.annotations().get(ANNOTATION_ROLLBACK_TO) {
        let state = state_from_status(rd, &plan);
        restore_revision(ctx, rd, &api, revisions, &state, target).await?;
        return Ok(Requeue::requeue(Duration::from_millis(100)));
    }

    // Observe, and decide (again, with drain evidence, when a decision asks for it).
    let mut observed = observe(ctx, rd, ns, &key, &plan, revisions, restarted);
    let mut decision = decide::decide(&observed, now);
    for _ in 1..MAX_DECISIONS {
        let Some(left) = decision.drain_wanted else {
            break;
        };
        observed.drain = Some(drain_evidence(ctx, rd, ns, left).await);
        decision = decide::decide(&observed, now);
    }

    // This decision's notified Events join the outbox, in the status write that records the
    // transitions that caused them.
    enqueue_notifications(rd, &mut decision, now.0.as_millisecond());

    // Status first: it is the record every later reconcile (and a new leader) acts on.
    let phase_before = rd.status.as_ref().map(|st| st.phase);
    let Some(written) = write_status_returning(ctx, rd, decision.status.clone()).await? else {
        return Ok(Requeue::requeue(Duration::from_millis(50)));
    };

    let step_before = rd
        .status
        .as_ref()
        .and_then(|st| st.rollout.as_ref())
        .map_or(RolloutStep::Stable, |r| r.step);
    let rollout = &decision.state.rollout;
    // NB: a span per step the cutover acts on; a converged object's reconciles have none.
    let span = if decision.state.in_flight() || step_before != rollout.step {
        relayer::otel::span_if_enabled(|| {
            tracing::info_span!(
                "cutover step",
                otel.name = format!("cutover {:?}", rollout.step),
                relayerdeployment = %format!("{ns}/{}", rd.name_any()),
                step = ?rollout.step,
                step_before = ?step_before,
                revision = %plan.revision,
                target_revision = rollout.target_revision.as_deref().unwrap_or_default(),
                active_revision = %rollout.active_revision,
                active_color = decision.state.active.as_str(),
                preview_color = decision.state.other().as_str(),
            )
        })
    } else {
        tracing::Span::none()
    };
    async {
        act(ctx, rd, ns, &key, &decision, phase_before).await;
        realise(ctx, rd, ns, &plan, &decision.state, revisions).await
    }
    .instrument(span)
    .await?;
    // Last, within a time budget of its own: nothing the cutover does waits for a receiver.
    if let Some(wait) = send_notifications(ctx, &written, ns, now.0.as_millisecond()).await? {
        decision.requeue = decision.requeue.min(wait);
    }
    if decision.command.is_some() {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_COMMAND: null } } });
        api.patch(
            &rd.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(Requeue::requeue(decision.requeue))
}

/// Everything [`decide::decide`] needs, read from the caches and the running gate.
fn observe<'a>(
    ctx: &Context,
    rd: &'a RelayerDeployment,
    ns: &str,
    key: &ObjectRef<RelayerDeployment>,
    plan: &'a Plan,
    revisions: &'a [Arc<ControllerRevision>],
    restarted: bool,
) -> Observation<'a> {
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
    Observation {
        rd,
        plan,
        revisions,
        restarted,
        blue: deployment_of(Color::Blue),
        green: deployment_of(Color::Green),
        hpa_desired,
        gate: ctx.gates.observe(key),
        drain: None,
        resync: ctx.config.resync,
    }
}

/// Everything the decision asks for besides the layout: the gate, the counts and the Events.
async fn act(
    ctx: &Context,
    rd: &RelayerDeployment,
    ns: &str,
    key: &ObjectRef<RelayerDeployment>,
    decision: &Decision,
    phase_before: Option<crate::crd::Phase>,
) {
    if let Some(other) = &decision.unknown_command {
        publish(
            ctx,
            rd,
            EventType::Warning,
            "UnknownCommand",
            &format!("{ANNOTATION_COMMAND}={other:?} is not promote, abort or retry"),
        )
        .await;
    }
    for (kind, verdict) in &decision.gate_verdicts {
        let verdict = match verdict {
            GateVerdict::Passed => "passed",
            GateVerdict::Failed => "failed",
            GateVerdict::Running => continue,
        };
        ctx.metrics
            .gate_decisions
            .get_or_create(&crate::metrics::GateLabels {
                gate: kind.name().to_owned(),
                verdict: verdict.to_owned(),
            })
            .inc();
        let judged = decision
            .status
            .rollout
            .as_ref()
            .and_then(|r| r.gates.iter().find(|g| g.name == kind.name()));
        if let Some(gate) = judged
            && !gate.statistics.is_empty()
        {
            ctx.metrics
                .statistics_decided(ns, &rd.name_any(), kind.name(), &gate.statistics);
        }
    }
    match &decision.gate {
        None => ctx.gates.stop(key),
        Some(wanted) => {
            if let Some(start) = &wanted.start {
                start_gate(ctx, rd, key, wanted, start, &decision.state.rollout);
            }
        }
    }
    for action in &decision.actions {
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
    if phase_before != Some(decision.status.phase) {
        publish(
            ctx,
            rd,
            EventType::Normal,
            "PhaseChanged",
            &format!("phase {:?}", decision.status.phase),
        )
        .await;
    }
}

/// Starts the gate `wanted` for `key`, replacing the one running.
fn start_gate(
    ctx: &Context,
    rd: &RelayerDeployment,
    key: &ObjectRef<RelayerDeployment>,
    wanted: &decide::WantedGate,
    start: &decide::GateStart,
    rollout: &crate::crd::RolloutStatus,
) {
    let targets = Arc::new(PodTargets::new(
        ctx,
        rd,
        start.under_test,
        start.compare_with,
    ));
    let wake = ctx.wake.clone();
    let wake_key = key.clone();
    let changed = Arc::new(move || {
        let _ = wake.send(wake_key.clone());
    });
    let gate = &wanted.gate;
    tracing::info!(name = %rd.name_any(), gate = gate.kind.name(), revision = %gate.revision, "gate started");
    let hooks = runner::HookEnv {
        context: webhook_context(rd, gate.kind, &gate.revision, start, rollout),
        namespace: rd.namespace().unwrap_or_default(),
        allowed: webhook_allowed(ctx),
    };
    let run = runner::spawn(
        start.spec.clone(),
        gate.tally.clone(),
        targets,
        ctx.pod_requests.clone(),
        hooks,
        changed,
    );
    ctx.gates
        .start(key.clone(), gate.kind, gate.revision.clone(), run);
}

/// Adds `decision`'s notified Events to the outbox `decision.status` carries (the one of
/// `rd`'s status: a status builder keeps it).
fn enqueue_notifications(rd: &RelayerDeployment, decision: &mut Decision, now_ms: i64) {
    let specs = &rd.spec.notifications;
    if specs.is_empty() {
        return;
    }
    let mut outbox = decision.status.notifications.clone().unwrap_or_default();
    let rollout = &decision.state.rollout;
    let uid = rd.uid().unwrap_or_default();
    notify::enqueue(
        &mut outbox,
        specs,
        &decision.actions,
        &notify::Cutover {
            uid: &uid,
            started_ms: rollout.started_ms,
            revision: rollout.target_revision.as_deref(),
        },
        now_ms,
    );
    decision.status.notifications = stored(outbox);
}

/// The outbox as status keeps it: absent when it holds nothing.
fn stored(outbox: crate::crd::NotificationsStatus) -> Option<crate::crd::NotificationsStatus> {
    (outbox != crate::crd::NotificationsStatus::default()).then_some(outbox)
}

/// Whether an address is one a webhook or notification receiver may be at
/// (`--webhook-networks`).
fn webhook_allowed(ctx: &Context) -> Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync> {
    let networks = ctx.config.webhook_networks.clone();
    Arc::new(move |ip| networks.iter().any(|n| n.contains(ip)))
}

/// Longest a reconcile spends sending notifications (every call's timeout is cut to what is
/// left of it), so receivers that do not answer hold up no reconcile for long.
const NOTIFY_BUDGET: Duration = Duration::from_secs(5);

/// Sends the notifications due in the outbox of `written` (the object as the last status
/// write left it), records the results with another fenced status write, and says when the
/// next one is due. NB: an entry is sent only once a status write holds it, and marked
/// delivered only by a write after the send: at least once, never again once recorded.
async fn send_notifications(
    ctx: &Context,
    written: &RelayerDeployment,
    ns: &str,
    now_ms: i64,
) -> Result<Option<Duration>> {
    let Some(mut outbox) = written
        .status
        .as_ref()
        .and_then(|s| s.notifications.clone())
    else {
        return Ok(None);
    };
    let before = outbox.clone();
    let specs = &written.spec.notifications;
    let allowed = webhook_allowed(ctx);
    let started = std::time::Instant::now();
    let mut failed_entries = Vec::new();
    for (i, receiver) in notify::due(&outbox, now_ms) {
        let left = NOTIFY_BUDGET.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let Some(entry) = outbox.outbox.get(i) else {
            continue;
        };
        let event = entry.event.name();
        let result = match specs.iter().find(|s| s.name == receiver) {
            None => Err("no longer configured".to_owned()),
            Some(spec) => {
                let body = notify::body(spec.format, entry, ns, &written.name_any());
                let timeout = Duration::from_secs(
                    u64::try_from(spec.timeout_seconds.clamp(1, 30)).unwrap_or(5),
                )
                .min(left);
                match runner::post_json(
                    &spec.url,
                    ns,
                    serde_json::to_vec(&body).unwrap_or_default().into(),
                    timeout,
                    allowed.as_ref(),
                    Some(&entry.key),
                )
                .await
                {
                    Ok(status) if (200..300).contains(&status) => Ok(()),
                    Ok(status) => Err(format!("HTTP {status}")),
                    Err(what) => Err(what),
                }
            }
        };
        ctx.metrics.notification_sent(event, result.is_ok());
        if let Err(why) = &result {
            tracing::warn!(name = %written.name_any(), namespace = %ns, receiver, event, "notification not delivered: {why}");
            failed_entries.push(i);
        }
        notify::record(&mut outbox, i, &receiver, result);
    }
    notify::settle(&mut outbox, &failed_entries, now_ms);
    let next = outbox.outbox.iter().map(|e| e.next_attempt_ms).min();
    if outbox != before {
        let mut status = written.status.clone().unwrap_or_default();
        status.notifications = stored(outbox);
        // NB: a conflict leaves the sends unrecorded; the next reconcile sends them again,
        // with the same keys.
        write_status_returning(ctx, written, status).await?;
    }
    Ok(next.map(|at| {
        Duration::from_millis(
            u64::try_from(at.saturating_sub(now_ms))
                .unwrap_or(0)
                .max(100),
        )
    }))
}

/// The body of a gate's webhook calls: which object, gate, revision and colours, and the
/// addresses of the Service under test and the active one.
fn webhook_context(
    rd: &RelayerDeployment,
    kind: crate::rollout::GateKind,
    revision: &str,
    start: &decide::GateStart,
    rollout: &crate::crd::RolloutStatus,
) -> serde_json::Value {
    let ns = rd.namespace().unwrap_or_default();
    let port = rd.spec.service.port;
    let active = match kind {
        crate::rollout::GateKind::PrePromotion => start.compare_with,
        crate::rollout::GateKind::PostPromotion => start.under_test,
    };
    serde_json::json!({
        "kind": "RelayerDeploymentGate",
        "namespace": ns,
        "name": rd.name_any(),
        "uid": rd.uid(),
        "gate": kind.name(),
        "revision": revision,
        "activeRevision": rollout.active_revision,
        "targetRevision": rollout.target_revision,
        "underTestColor": start.under_test.as_str(),
        "comparedWithColor": start.compare_with.as_str(),
        "activeColor": active.as_str(),
        "previewAddress": format!("http://{}.{ns}.svc:{port}", resources::preview_service_name(rd)),
        "activeAddress": format!("http://{}.{ns}.svc:{port}", resources::service_name(rd)),
    })
}

/// Whether the reconcile must act on a quorum read of `rd` rather than on the cached copy.
fn needs_fresh_read(rd: &RelayerDeployment) -> bool {
    // NB: with or without a status: a rollback replaces the whole object, and the cached copy
    // lacks what the cache trims (managed fields, kubectl's last-applied annotation), which
    // the replace would otherwise remove.
    let commanded = rd.annotations().contains_key(ANNOTATION_COMMAND)
        || rd.annotations().contains_key(ANNOTATION_ROLLBACK_TO);
    let Some(status) = rd.status.as_ref() else {
        return commanded;
    };
    let in_flight = status
        .rollout
        .as_ref()
        .is_some_and(|r| !matches!(r.step, RolloutStep::Stable | RolloutStep::Aborted));
    let changed = status.observed_generation != rd.metadata.generation;
    // NB: a cached copy may not show that the last write recorded a notification as
    // delivered; sending from it would send that notification again.
    let notifying = status
        .notifications
        .as_ref()
        .is_some_and(|n| !n.outbox.is_empty());
    in_flight || changed || commanded || notifying
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

/// Publishes why a rollback request is not carried out and removes the request.
async fn refuse_rollback(
    ctx: &Context,
    rd: &RelayerDeployment,
    api: &Api<RelayerDeployment>,
    why: &str,
) -> Result<()> {
    publish(ctx, rd, EventType::Warning, "RollbackRefused", why).await;
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_ROLLBACK_TO: null } } });
    api.patch(
        &rd.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Writes the bundle of revision `target` back into the spec (and drops the annotation in the
/// same request), so the rollback rolls out like any change. `rd` is a fresh read
/// ([`needs_fresh_read`]), never the trimmed cached copy.
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
    let found = decide::rollback_target(revisions, state, target);
    let Some(cr) = found else {
        let why = format!("{ANNOTATION_ROLLBACK_TO}={target:?}: no such revision is kept");
        return refuse_rollback(ctx, rd, api, &why).await;
    };
    let bundle = Bundle::from_revision(cr).ok_or(Error::Missing("ControllerRevision data"))?;
    // NB: a replace carrying the resourceVersion we read: the whole bundle is restored (absent
    // optional fields included, which a merge patch would keep) or, on a conflict, nothing.
    let mut restored = rd.clone();
    restored.spec.image = bundle.image.clone();
    restored.spec.pod = bundle.pod.clone();
    restored.spec.config = bundle.config.clone();
    restored.spec.autoscaling = bundle.autoscaling.clone();
    // NB: the acceptance of a state loss is no part of a revision: the spec's stays.
    restored.spec.store = bundle.store.clone().map(|mut store| {
        store.accept_state_loss = rd.spec.accepts_state_loss();
        store
    });
    restored.spec.secrets = bundle.secrets.clone();
    restored.spec.strategy.blue_green.anti_affinity = bundle.anti_affinity.clone();
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
        // NB: a revision kept from before a validation rule existed (a literal secret, an
        // in-memory store with several replicas) is refused by the API server: say why and
        // drop the request rather than retrying it for ever.
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let revision = revision_of(cr).unwrap_or_default();
            let why = format!(
                "revision {revision} cannot be restored, the API server refuses its spec: {}",
                status.message
            );
            return refuse_rollback(ctx, rd, api, &why).await;
        }
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
            "spec restored from revision {revision} (number {}): image, pod, config, store, secret references and autoscaling",
            cr.revision.unwrap_or(0)
        ),
    )
    .await;
    Ok(())
}
