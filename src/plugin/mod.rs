//! The `kubectl relayer` plugin, pure: what each command asks of the operator, whether the
//! object's state allows it, and how a RelayerDeployment is shown to a person.
//!
//! The binary (`src/bin/kubectl-relayer.rs`) does the I/O around these functions. Every
//! command goes through the operator's documented interface, so anything the plugin does can
//! be done with plain kubectl too:
//!
//! | plugin                          | plain kubectl                                                                   |
//! |---------------------------------|---------------------------------------------------------------------------------|
//! | `set-image NAME IMAGE`          | `kubectl patch rd NAME --type merge -p '{"spec":{"image":"IMAGE"}}'`             |
//! | `promote` / `abort` / `retry`   | `kubectl annotate rd NAME relayer.foresight.dev/command=promote` (abort, retry)  |
//! | `pause` / `resume`              | `kubectl patch rd NAME --type merge -p '{"spec":{"strategy":{"blueGreen":{"paused":true}}}}'` |
//! | `rollback [--to-revision N]`    | `kubectl annotate rd NAME relayer.foresight.dev/rollback-to=previous` (or `=N`)  |
//! | `explain NAME`                  | `kubectl get rd NAME -o jsonpath='{.status.rollout}'` (the numbers, without the words) |
//!
//! [`explain()`] (its own room, [`mod@explain`]) says why each gate of the current or last cutover
//! passed, failed or is waiting, from the object alone.
//!
//! May use: [`crate::crd`] and the annotation names of [`crate::controller::cutover`].

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::controller::cutover::{ANNOTATION_COMMAND, ANNOTATION_ROLLBACK_TO};
use crate::crd::{GateVerdict, RelayerDeployment, RolloutStatus, RolloutStep};

pub mod explain;

pub use explain::{Explanation, explain, explanation};

/// Something the plugin asks the operator to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Roll out a new image.
    SetImage(String),
    /// Promote the preview now (or keep a failed new colour).
    Promote,
    /// Return to (or stay on) the last good colour.
    Abort,
    /// Start an aborted cutover again.
    Retry,
    /// Hold the rollout where it is.
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Roll back to the previous revision (`None`) or to revision number `N`.
    Rollback(Option<i64>),
}

/// Why a command was refused before anything was written, or by the API server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    /// The RelayerDeployment does not exist.
    #[error("relayerdeployment {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// Object name.
        name: String,
        /// Namespace looked in.
        namespace: String,
    },
    /// The command needs a cutover (or an aborted one) that is not there.
    #[error("{0}")]
    NoCutover(String),
    /// The caller's identity may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The command cannot be carried out as asked (e.g. an unknown revision).
    #[error("{0}")]
    Invalid(String),
    /// Anything else the API server or the connection reported.
    #[error("{0}")]
    Api(String),
}

impl PluginError {
    /// Process exit code: 1 other errors, 3 no such object, 4 no cutover in progress (or not
    /// in a state the command applies to), 5 forbidden, 6 invalid request. (2 is clap's usage
    /// error.)
    pub fn exit_code(&self) -> i32 {
        match self {
            PluginError::Api(_) => 1,
            PluginError::NotFound { .. } => 3,
            PluginError::NoCutover(_) => 4,
            PluginError::Forbidden(_) => 5,
            PluginError::Invalid(_) => 6,
        }
    }

    /// Maps a client error for object `name` in `namespace`.
    pub fn from_kube(error: kube::Error, name: &str, namespace: &str) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 404 => PluginError::NotFound {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            },
            kube::Error::Api(status) if status.code == 403 => {
                PluginError::Forbidden(status.message.clone())
            }
            kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                PluginError::Invalid(status.message.clone())
            }
            other => PluginError::Api(other.to_string()),
        }
    }
}

fn rollout(rd: &RelayerDeployment) -> RolloutStatus {
    rd.status
        .as_ref()
        .and_then(|s| s.rollout.clone())
        .unwrap_or_default()
}

/// Checks that `request` applies to `rd` as it is now, and returns the JSON merge patch that
/// asks the operator for it.
pub fn plan(request: &Request, rd: &RelayerDeployment) -> Result<Value, PluginError> {
    use RolloutStep as S;
    let r = rollout(rd);
    let name = rd.metadata.name.clone().unwrap_or_default();
    let command = |c: &str| json!({ "metadata": { "annotations": { ANNOTATION_COMMAND: c } } });
    let in_flight = !matches!(r.step, S::Stable | S::Aborted);
    match request {
        Request::SetImage(image) => {
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(PluginError::Invalid(format!(
                    "{image:?} is not an image reference"
                )));
            }
            Ok(json!({ "spec": { "image": image } }))
        }
        Request::Promote => match r.step {
            S::Deploying | S::PrePromotion | S::AwaitingPromotion | S::Failed => {
                Ok(command("promote"))
            }
            _ if !in_flight => Err(PluginError::NoCutover(format!(
                "no cutover in progress on {name} (step {:?}); nothing to promote",
                r.step
            ))),
            step => Err(PluginError::NoCutover(format!(
                "{name} is already promoted (step {step:?}); nothing to promote"
            ))),
        },
        Request::Abort => match r.step {
            S::ScalingDown if r.aborting => Err(PluginError::NoCutover(format!(
                "{name} is already aborting: traffic is back on {}",
                rd.status
                    .as_ref()
                    .and_then(|s| s.active_color)
                    .map(|c| c.as_str())
                    .unwrap_or("the last good colour")
            ))),
            _ if in_flight => Ok(command("abort")),
            step => Err(PluginError::NoCutover(format!(
                "no cutover in progress on {name} (step {step:?}); nothing to abort"
            ))),
        },
        Request::Retry => match (r.step, r.target_revision.as_deref()) {
            (S::Aborted, Some(_)) => Ok(command("retry")),
            (step, _) => Err(PluginError::NoCutover(format!(
                "no aborted cutover on {name} to retry (step {step:?})"
            ))),
        },
        Request::Pause => Ok(paused(true)),
        Request::Resume => Ok(paused(false)),
        Request::Rollback(number) => {
            let history = rd
                .status
                .as_ref()
                .map(|s| s.revision_history.clone())
                .unwrap_or_default();
            let current = rd.status.as_ref().and_then(|s| s.current_revision.clone());
            let target = match number {
                Some(n) => {
                    let found = history.iter().find(|h| h.number == *n).ok_or_else(|| {
                        PluginError::Invalid(format!(
                            "{name} has no revision {n}; kept revisions: {}",
                            numbers(&history)
                        ))
                    })?;
                    if current.as_deref() == Some(found.revision.as_str()) {
                        return Err(PluginError::Invalid(format!(
                            "revision {n} is the current revision of {name}"
                        )));
                    }
                    n.to_string()
                }
                None => {
                    if !history
                        .iter()
                        .any(|h| Some(h.revision.as_str()) != current.as_deref())
                    {
                        return Err(PluginError::Invalid(format!(
                            "{name} has no previous revision to roll back to"
                        )));
                    }
                    "previous".to_owned()
                }
            };
            Ok(json!({ "metadata": { "annotations": { ANNOTATION_ROLLBACK_TO: target } } }))
        }
    }
}

fn paused(value: bool) -> Value {
    json!({ "spec": { "strategy": { "blueGreen": { "paused": value } } } })
}

fn numbers(history: &[crate::crd::RevisionRecord]) -> String {
    if history.is_empty() {
        return "none".to_owned();
    }
    history
        .iter()
        .map(|h| h.number.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether status describes the current spec, no command is pending and no cutover is in
/// flight; `Some(true)` when it settled on the spec's revision, `Some(false)` when the cutover
/// was aborted.
pub fn settled(rd: &RelayerDeployment) -> Option<bool> {
    let status = rd.status.as_ref()?;
    if status.observed_generation != rd.metadata.generation {
        return None;
    }
    // NB: a command or rollback the operator has not taken yet is still to come.
    let annotations = rd.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| {
        a.contains_key(ANNOTATION_COMMAND) || a.contains_key(ANNOTATION_ROLLBACK_TO)
    }) {
        return None;
    }
    match status.rollout.as_ref().map(|r| r.step) {
        Some(RolloutStep::Stable) if status.ready_replicas >= status.desired_replicas => Some(true),
        Some(RolloutStep::Aborted) => Some(false),
        _ => None,
    }
}

/// A short human rendering of how long ago `ms` (Unix milliseconds) was.
fn ago(now_ms: i64, ms: i64) -> String {
    if ms <= 0 {
        return "-".to_owned();
    }
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// Whether the other colour is a preview (not yet promoted) rather than the previous colour.
fn before_promotion(step: RolloutStep) -> bool {
    matches!(
        step,
        RolloutStep::Deploying | RolloutStep::PrePromotion | RolloutStep::AwaitingPromotion
    )
}

fn short(revision: &str) -> &str {
    revision.get(..10).unwrap_or(revision)
}

fn number_of(rd: &RelayerDeployment, revision: &str) -> String {
    rd.status
        .as_ref()
        .and_then(|s| s.revision_history.iter().find(|h| h.revision == revision))
        .map(|h| format!(" (#{})", h.number))
        .unwrap_or_default()
}

/// The `status` view: phase, colours, revisions, cutover step and progress, gates, conditions.
pub fn render_status(rd: &RelayerDeployment, now_ms: i64) -> String {
    let mut out = String::new();
    let name = rd.metadata.name.as_deref().unwrap_or("");
    let ns = rd.metadata.namespace.as_deref().unwrap_or("");
    let _ = writeln!(out, "RelayerDeployment {ns}/{name}");
    let Some(status) = rd.status.as_ref() else {
        let _ = writeln!(out, "  no status yet: is the operator running?");
        return out;
    };
    let r = status.rollout.clone().unwrap_or_default();
    let stale = if status.observed_generation == rd.metadata.generation {
        ""
    } else {
        " (the operator has not seen the latest spec yet)"
    };
    let _ = writeln!(out, "  Phase:      {:?}{stale}", status.phase);
    let _ = writeln!(out, "  Image:      {}", rd.spec.image);
    let active = status.active_color.map(|c| c.as_str()).unwrap_or("-");
    let _ = writeln!(
        out,
        "  Active:     {active}  revision {}{}  ready {}/{}",
        short(&r.active_revision),
        number_of(rd, &r.active_revision),
        status.ready_replicas,
        status.desired_replicas
    );
    match r.other_revision.as_deref() {
        Some(other) => {
            let _ = writeln!(
                out,
                "  Other:      {} revision {}{}{}",
                status
                    .active_color
                    .map(|c| c.other().as_str())
                    .unwrap_or("-"),
                short(other),
                number_of(rd, other),
                if before_promotion(r.step) {
                    " (preview)"
                } else {
                    " (previous, kept warm)"
                }
            );
        }
        None => {
            let _ = writeln!(out, "  Other:      - (scaled to zero)");
        }
    }
    if let Some(stable) = status.stable_revision.as_deref() {
        let _ = writeln!(
            out,
            "  Stable:     revision {}{}",
            short(stable),
            number_of(rd, stable)
        );
    }
    let paused = if r.paused { ", PAUSED" } else { "" };
    let _ = writeln!(
        out,
        "  Cutover:    {:?}{paused} (step since {})",
        r.step,
        ago(now_ms, r.step_started_ms)
    );
    if let Some(target) = r.target_revision.as_deref() {
        let _ = writeln!(
            out,
            "  Target:     revision {}{}, started {}",
            short(target),
            number_of(rd, target),
            ago(now_ms, r.started_ms)
        );
    }
    if r.step == RolloutStep::AwaitingPromotion {
        let _ = writeln!(
            out,
            "  Next:       kubectl relayer promote {name}   (or: abort)"
        );
    }
    if r.hold_replicas > 0 {
        let _ = writeln!(out, "  Holding:    {} pods per colour", r.hold_replicas);
    }
    if let Some(reason) = r.abort_reason.as_deref() {
        let gate = r
            .failed_gate
            .as_deref()
            .map(|g| format!(" (gate {g})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  Aborted:    {reason}{gate}");
    }
    if let Some(note) = r.scale_down.as_deref() {
        let _ = writeln!(out, "  Scale-down: {note}");
    }
    if !r.step_durations_ms.is_empty() {
        let steps: Vec<String> = r
            .step_durations_ms
            .iter()
            .map(|(step, ms)| format!("{step} {:.1}s", *ms as f64 / 1000.0))
            .collect();
        let _ = writeln!(out, "  Durations:  {}", steps.join(", "));
    }
    if !r.gates.is_empty() {
        let _ = writeln!(out, "  Gates:");
        for g in &r.gates {
            let verdict = match g.verdict {
                GateVerdict::Running => "Running",
                GateVerdict::Passed => "Passed",
                GateVerdict::Failed => "Failed",
            };
            let _ = writeln!(
                out,
                "    {:<14} {verdict:<8} revision {}  samples {} ({} passed, {} failed, {} inconclusive, {} scrape errors)",
                g.name,
                short(&g.revision),
                g.samples,
                g.passed,
                g.failed,
                g.inconclusive,
                g.scrape_errors
            );
            if let Some(values) = g.last_values.as_deref() {
                let _ = writeln!(out, "    {:<14} last: {values}", "");
            }
            if let Some(reason) = g.reason.as_deref() {
                let _ = writeln!(out, "    {:<14} why: {reason}", "");
            }
        }
    }
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "  Conditions:");
        for c in &status.conditions {
            let _ = writeln!(
                out,
                "    {:<12} {:<6} {}: {}",
                c.type_, c.status, c.reason, c.message
            );
        }
    }
    out
}

/// The `history` view: kept revisions, newest first, and which colour runs each.
pub fn render_history(rd: &RelayerDeployment) -> String {
    let mut out = String::new();
    let status = rd.status.clone().unwrap_or_default();
    let r = status.rollout.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<8} {:<12} {:<24} IMAGE",
        "NUMBER", "REVISION", "STATE"
    );
    for h in &status.revision_history {
        let mut state = Vec::new();
        if h.revision == r.active_revision {
            state.push(format!(
                "active ({})",
                status.active_color.map(|c| c.as_str()).unwrap_or("-")
            ));
        } else if r.other_revision.as_deref() == Some(h.revision.as_str()) {
            state.push(
                if before_promotion(r.step) {
                    "preview"
                } else {
                    "warm"
                }
                .to_owned(),
            );
        }
        if status.current_revision.as_deref() == Some(h.revision.as_str())
            && h.revision != r.active_revision
        {
            state.push("spec".to_owned());
        }
        if status.stable_revision.as_deref() == Some(h.revision.as_str()) {
            state.push("stable".to_owned());
        }
        let state = if state.is_empty() {
            "-".to_owned()
        } else {
            state.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<8} {:<12} {:<24} {}",
            h.number,
            short(&h.revision),
            state,
            h.image
        );
    }
    out
}

/// The `history -o json|yaml` document.
pub fn history_document(rd: &RelayerDeployment) -> Value {
    let status = rd.status.clone().unwrap_or_default();
    json!({
        "name": rd.metadata.name,
        "namespace": rd.metadata.namespace,
        "currentRevision": status.current_revision,
        "stableRevision": status.stable_revision,
        "activeColor": status.active_color,
        "revisions": status.revision_history,
    })
}

#[cfg(test)]
mod tests;
