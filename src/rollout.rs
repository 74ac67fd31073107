//! The blue-green state machine, pure: a [`State`] (what status records) and an [`Event`]
//! give the next state and the [`Action`]s to take, at a time passed in by the caller.
//!
//! ```text
//! Stable ─spec change─▶ Deploying ─pods ready─▶ PrePromotion ─gates pass─▶ (AwaitingPromotion
//!   ▲                      │ deadline               │ gate fails         ─promote─▶)
//!   │                      ▼                        ▼                          │
//!   │                   Aborted ◀──────────────── Aborted          switch the active Service
//!   │                      ▲                                                   ▼
//!   │                      └──drained── ScalingDown(aborting) ◀─gate fails── PostPromotion
//!   └──────────drained────────────── ScalingDown ◀───────────gates pass────────┘
//! ```
//!
//! Rules the machine keeps, and the tests check:
//! - the active colour changes only through [`Action::SwitchActive`], and only to a colour the
//!   caller reported available at that moment ([`Facts`]);
//! - the colour being left is never scaled down here: it goes through `ScalingDown`, which
//!   ends only on drain evidence after the minimum delay, or after the maximum wait;
//! - a spec change during a cutover supersedes the preview (before promotion) and never
//!   touches the active colour; after promotion it waits for `Stable`, except a change back to
//!   the previous revision, which switches back to the still-warm colour at once;
//! - a restart changes nothing: the state comes from status, so no promotion is repeated and
//!   no abort lost;
//! - with `auto_promotion_ms`, `AwaitingPromotion` promotes by itself once the pause is over
//!   (still only to an available colour); with `abort_scale_down_delay_ms`, a preview aborted
//!   before promotion keeps its revision (and pods) in `Aborted` until the delay is over.
//!
//! May use: [`crate::crd`] only.

use std::collections::BTreeMap;

use crate::crd::{Color, RolloutStatus, RolloutStep};

/// The machine's state: the colour the active Service selects and the cutover record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    /// Colour the active Service selects.
    pub active: Color,
    /// The cutover record (kept in `status.rollout`).
    pub rollout: RolloutStatus,
}

impl State {
    /// A new object: blue runs `revision`, nothing is in flight.
    pub fn new(revision: &str) -> Self {
        Self {
            active: Color::Blue,
            rollout: RolloutStatus {
                active_revision: revision.to_owned(),
                ..RolloutStatus::default()
            },
        }
    }

    /// The other colour: the preview before promotion, the previous colour after it.
    pub fn other(&self) -> Color {
        self.active.other()
    }

    /// Whether a cutover is in flight (the HPA's scale-down is held meanwhile).
    pub fn in_flight(&self) -> bool {
        !matches!(
            self.rollout.step,
            RolloutStep::Stable | RolloutStep::Aborted
        )
    }

    /// The gate the current step runs, if any.
    pub fn gate(&self) -> Option<GateKind> {
        match self.rollout.step {
            RolloutStep::PrePromotion => Some(GateKind::PrePromotion),
            RolloutStep::PostPromotion => Some(GateKind::PostPromotion),
            _ => None,
        }
    }
}

/// The rollout settings of the spec the machine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Promote without a command once the preview is available and its gates passed.
    pub auto_promote: bool,
    /// Switch back after a post-promotion gate failure.
    pub auto_rollback: bool,
    /// Whether pre-promotion gates are configured.
    pub pre_gate: bool,
    /// Whether post-promotion gates are configured.
    pub post_gate: bool,
    /// Time the preview has to become available.
    pub progress_deadline_ms: i64,
    /// Least time the previous colour stays warm after a switch.
    pub scale_down_delay_ms: i64,
    /// Most time the previous colour waits for drain evidence.
    pub max_scale_down_wait_ms: i64,
    /// With `auto_promote`: the pause in `AwaitingPromotion` before promoting; `None`:
    /// promote at once.
    pub auto_promotion_ms: Option<i64>,
    /// How long a preview aborted before promotion stays up; 0: scaled to zero at once.
    pub abort_scale_down_delay_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            auto_promote: true,
            auto_rollback: true,
            pre_gate: false,
            post_gate: false,
            progress_deadline_ms: 600_000,
            scale_down_delay_ms: 30_000,
            max_scale_down_wait_ms: 300_000,
            auto_promotion_ms: None,
            abort_scale_down_delay_ms: 0,
        }
    }
}

/// What the caller observed when the event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// Now, in milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// The other colour has every pod it is asked for at full size available (before
    /// promotion: the preview is ready to take all traffic; after it: the previous colour is
    /// still warm).
    pub other_available: bool,
    /// Pods the active colour should have now (the spec's replicas, which the HPA sets, and
    /// never less than the active colour runs).
    pub desired_replicas: i32,
}

/// The gates of a cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateKind {
    /// On the preview pods, before the switch.
    PrePromotion,
    /// On the new active pods, after the switch.
    PostPromotion,
}

impl GateKind {
    /// The name used in status, Events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            GateKind::PrePromotion => "prePromotion",
            GateKind::PostPromotion => "postPromotion",
        }
    }
}

/// A manual command (annotation `relayer.foresight.dev/command`, or the spec's `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Promote now (skips the remaining pre-promotion gate), or keep a failed new colour.
    Promote,
    /// Return to (or stay on) the last good colour.
    Abort,
    /// Start an aborted cutover again.
    Retry,
    /// Hold the rollout where it is.
    Pause,
    /// Continue a paused rollout.
    Resume,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The spec asks for `revision` (sent on every reconcile; the machine decides whether it
    /// is news).
    SpecChanged {
        /// Revision hash of the spec.
        revision: String,
    },
    /// The other colour is available at the size it is asked for.
    PodsReady,
    /// Time passed (deadlines, delays).
    Tick,
    /// The gate of the current step decided, or saw too little traffic.
    Gate(GateOutcome),
    /// A manual command.
    Command(Command),
    /// The previous colour is drained: the active Service's EndpointSlices no longer list
    /// its pods and they report no request in flight and no active saga.
    Drained,
    /// The operator (re)started and read the state from status.
    Restart,
}

/// What a gate reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// Enough good samples.
    Passed,
    /// Too many bad samples, inconclusive samples or scrape errors.
    Failed {
        /// Which gate.
        gate: String,
        /// Which check, its threshold and the measured value.
        reason: String,
    },
    /// A sample with too little traffic; no decision.
    Inconclusive,
}

/// What the caller does besides realising the next state's [`layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Point the active Service at this colour.
    SwitchActive(Color),
    /// Start (or resume after a restart) the gate of the current step.
    StartGate(GateKind),
    /// Stop any gate of this object.
    StopGates,
    /// Publish an Event and count it.
    Emit {
        /// Warning rather than Normal.
        warning: bool,
        /// Event reason (`CutoverStarted`, `Promoted`, `Aborted`, ...).
        reason: &'static str,
        /// Human-readable note.
        message: String,
    },
}

fn emit(reason: &'static str, message: impl Into<String>) -> Action {
    Action::Emit {
        warning: false,
        reason,
        message: message.into(),
    }
}

fn warn(reason: &'static str, message: impl Into<String>) -> Action {
    Action::Emit {
        warning: true,
        reason,
        message: message.into(),
    }
}

/// The next state and the actions for `event`.
pub fn transition(
    state: &State,
    event: &Event,
    settings: &Settings,
    facts: &Facts,
) -> (State, Vec<Action>) {
    let mut m = Machine {
        s: state.clone(),
        actions: Vec::new(),
        settings,
        facts,
    };
    m.on(event);
    if m.s.in_flight() {
        m.s.rollout.hold_replicas = m.s.rollout.hold_replicas.max(facts.desired_replicas);
    } else {
        m.s.rollout.hold_replicas = 0;
    }
    (m.s, m.actions)
}

struct Machine<'a> {
    s: State,
    actions: Vec<Action>,
    settings: &'a Settings,
    facts: &'a Facts,
}

impl Machine<'_> {
    fn step(&self) -> RolloutStep {
        self.s.rollout.step
    }

    fn on(&mut self, event: &Event) {
        use RolloutStep as S;
        let paused = self.s.rollout.paused;
        match event {
            Event::Command(Command::Pause) => {
                if !paused {
                    self.s.rollout.paused = true;
                    self.actions.push(emit("Paused", "rollout paused"));
                }
            }
            Event::Command(Command::Resume) => {
                if paused {
                    self.s.rollout.paused = false;
                    // NB: like a Deployment's progress deadline, the clocks of the waiting
                    // steps (deadline, drain, automatic promotion, kept preview) start again
                    // on resume.
                    if matches!(
                        self.step(),
                        S::Deploying | S::ScalingDown | S::AwaitingPromotion | S::Aborted
                    ) {
                        self.s.rollout.step_started_ms = self.facts.now_ms;
                    }
                    self.actions.push(emit("Resumed", "rollout resumed"));
                }
            }
            Event::Command(Command::Abort) => self.abort("aborted by command", None),
            // While paused nothing progresses: not the spec, not time, not gates.
            _ if paused => {}
            Event::SpecChanged { revision } => self.spec_changed(revision),
            Event::PodsReady => self.pods_ready(),
            Event::Tick => self.tick(),
            Event::Gate(outcome) => self.gate(outcome),
            Event::Command(Command::Promote) => match self.step() {
                S::Deploying | S::PrePromotion | S::AwaitingPromotion => self.promote(),
                S::Failed => {
                    self.actions
                        .push(emit("Promoted", "kept the new colour by command"));
                    self.enter(S::ScalingDown);
                }
                _ => {}
            },
            Event::Command(Command::Retry) => {
                if self.step() == S::Aborted
                    && let Some(target) = self.s.rollout.target_revision.clone()
                {
                    self.start(&target, "retried by command");
                }
            }
            Event::Drained => {
                if self.step() == S::ScalingDown
                    && self.elapsed() >= self.settings.scale_down_delay_ms
                {
                    self.s.rollout.scale_down = Some(format!(
                        "{} drained: no endpoints, requests or sagas left",
                        self.s.other()
                    ));
                    self.finish_scale_down();
                }
            }
            Event::Restart => {
                if let Some(kind) = self.s.gate() {
                    self.actions.push(Action::StartGate(kind));
                }
            }
        }
    }

    fn elapsed(&self) -> i64 {
        self.facts
            .now_ms
            .saturating_sub(self.s.rollout.step_started_ms)
    }

    fn enter(&mut self, step: RolloutStep) {
        let r = &mut self.s.rollout;
        let name = format!("{:?}", r.step);
        let spent = self.facts.now_ms.saturating_sub(r.step_started_ms).max(0);
        if r.step != RolloutStep::Stable && r.step != RolloutStep::Aborted {
            *r.step_durations_ms.entry(name).or_insert(0) += spent;
        }
        r.step = step;
        r.step_started_ms = self.facts.now_ms;
        if let Some(kind) = self.s.gate() {
            self.actions.push(Action::StartGate(kind));
        }
    }

    fn start(&mut self, revision: &str, why: &str) {
        let r = &mut self.s.rollout;
        r.target_revision = Some(revision.to_owned());
        r.other_revision = Some(revision.to_owned());
        r.started_ms = self.facts.now_ms;
        r.step_durations_ms = BTreeMap::new();
        r.abort_reason = None;
        r.failed_gate = None;
        r.scale_down = None;
        r.aborting = false;
        r.promote_requested = false;
        r.hold_replicas = self.facts.desired_replicas;
        self.actions.push(Action::StopGates);
        self.actions.push(emit(
            "CutoverStarted",
            format!(
                "revision {revision} starts on {} ({why}); {} keeps serving {}",
                self.s.other(),
                self.s.active,
                self.s.rollout.active_revision
            ),
        ));
        // NB: set after the bookkeeping so a superseded Deploying restarts its deadline.
        self.s.rollout.step = RolloutStep::Deploying;
        self.s.rollout.step_started_ms = self.facts.now_ms;
    }

    fn spec_changed(&mut self, revision: &str) {
        use RolloutStep as S;
        let r = &self.s.rollout;
        let is_active = r.active_revision == revision;
        let is_target = r.target_revision.as_deref() == Some(revision);
        let is_other = r.other_revision.as_deref() == Some(revision);
        match self.step() {
            S::Stable => {
                if !is_active {
                    self.start(revision, "the spec changed");
                }
            }
            S::Aborted => {
                if is_active {
                    self.s.rollout.target_revision = None;
                    self.s.rollout.other_revision = None;
                    self.s.rollout.abort_reason = None;
                    self.s.rollout.failed_gate = None;
                    self.s.rollout.step = S::Stable;
                    self.actions.push(emit(
                        "Stable",
                        format!("the spec is back at the running revision {revision}"),
                    ));
                } else if !is_target {
                    self.start(revision, "the spec changed after an abort");
                }
            }
            S::Deploying | S::PrePromotion | S::AwaitingPromotion => {
                if is_active {
                    self.s.rollout.other_revision = None;
                    self.s.rollout.target_revision = None;
                    self.actions.push(Action::StopGates);
                    self.actions.push(emit(
                        "CutoverCancelled",
                        format!("the spec is back at the running revision {revision}"),
                    ));
                    self.enter(S::Stable);
                } else if !is_target {
                    self.actions.push(emit(
                        "CutoverSuperseded",
                        format!("revision {revision} replaces the preview"),
                    ));
                    self.start(revision, "superseded the preview");
                }
            }
            S::PostPromotion | S::Failed | S::ScalingDown => {
                if is_other && !self.s.rollout.aborting {
                    // A rollback to the previous revision while its colour is still warm.
                    self.switch_back(None, "rolled back to the previous revision by the spec");
                } else if is_active && self.s.rollout.aborting {
                    // The spec now asks for what runs: the drain ends in Stable.
                    self.s.rollout.aborting = false;
                }
                // NB: any other revision waits until the cutover is over (documented).
            }
        }
    }

    fn pods_ready(&mut self) {
        use RolloutStep as S;
        match self.step() {
            S::Deploying => {
                self.actions.push(emit(
                    "PreviewAvailable",
                    format!("{} is available", self.s.other()),
                ));
                if self.settings.pre_gate {
                    self.enter(S::PrePromotion);
                } else {
                    self.promote_or_wait();
                }
            }
            S::AwaitingPromotion if self.s.rollout.promote_requested => self.promote(),
            _ => {}
        }
    }

    fn tick(&mut self) {
        use RolloutStep as S;
        match self.step() {
            S::Deploying if self.elapsed() >= self.settings.progress_deadline_ms => {
                let reason = format!(
                    "ProgressDeadlineExceeded: {} was not available within {} s",
                    self.s.other(),
                    self.settings.progress_deadline_ms / 1000
                );
                self.abort(&reason, None);
            }
            S::AwaitingPromotion
                if self.settings.auto_promote
                    && !self.s.rollout.promote_requested
                    && self
                        .settings
                        .auto_promotion_ms
                        .is_some_and(|ms| self.elapsed() >= ms) =>
            {
                self.actions.push(emit(
                    "AutoPromotion",
                    format!(
                        "the pause of {} s before promotion is over",
                        self.settings.auto_promotion_ms.unwrap_or(0) / 1000
                    ),
                ));
                self.promote();
            }
            S::Aborted
                if self.s.rollout.other_revision.is_some()
                    && self.elapsed() >= self.settings.abort_scale_down_delay_ms =>
            {
                self.s.rollout.other_revision = None;
                self.actions.push(emit(
                    "ScaledDown",
                    format!(
                        "the aborted preview {} scaled to zero after {} s",
                        self.s.other(),
                        self.settings.abort_scale_down_delay_ms / 1000
                    ),
                ));
            }
            S::ScalingDown if self.elapsed() >= self.settings.max_scale_down_wait_ms => {
                let note = format!(
                    "{} scaled to zero after the maximum wait of {} s without drain evidence",
                    self.s.other(),
                    self.settings.max_scale_down_wait_ms / 1000
                );
                self.actions.push(warn("ScaleDownForced", note.clone()));
                self.s.rollout.scale_down = Some(note);
                self.finish_scale_down();
            }
            _ => {}
        }
    }

    fn gate(&mut self, outcome: &GateOutcome) {
        use RolloutStep as S;
        match (self.step(), outcome) {
            (S::PrePromotion, GateOutcome::Passed) => {
                self.actions
                    .push(emit("GatePassed", "prePromotion gates passed"));
                self.promote_or_wait();
            }
            (S::PrePromotion, GateOutcome::Failed { gate, reason }) => {
                self.abort(&format!("{gate} failed: {reason}"), Some(gate));
            }
            (S::PostPromotion, GateOutcome::Passed) => {
                self.actions
                    .push(emit("GatePassed", "postPromotion gates passed"));
                self.enter(S::ScalingDown);
            }
            (S::PostPromotion, GateOutcome::Failed { gate, reason }) => {
                let why = format!("{gate} failed: {reason}");
                if self.settings.auto_rollback && self.facts.other_available {
                    self.switch_back(Some(gate), &why);
                } else {
                    self.s.rollout.abort_reason = Some(why.clone());
                    self.s.rollout.failed_gate = Some(gate.clone());
                    self.actions.push(warn(
                        "GateFailed",
                        format!("{why}; waiting for a command (abort or promote)"),
                    ));
                    self.actions.push(Action::StopGates);
                    self.enter(S::Failed);
                }
            }
            _ => {}
        }
    }

    /// After the preview is ready (and its gates passed): promote now, or wait in
    /// `AwaitingPromotion` for a command or the end of the automatic pause.
    fn promote_or_wait(&mut self) {
        if self.settings.auto_promote && self.settings.auto_promotion_ms.is_none() {
            self.promote();
        } else {
            self.enter(RolloutStep::AwaitingPromotion);
        }
    }

    /// Switches the active Service to the preview colour, if it is available at full size;
    /// otherwise remembers the decision until it is.
    fn promote(&mut self) {
        use RolloutStep as S;
        if !self.facts.other_available {
            if !self.s.rollout.promote_requested {
                self.actions.push(emit(
                    "PromotionWaiting",
                    format!(
                        "waiting for {} to be available at full size",
                        self.s.other()
                    ),
                ));
            }
            self.s.rollout.promote_requested = true;
            if self.step() != S::AwaitingPromotion {
                self.actions.push(Action::StopGates);
                self.enter(S::AwaitingPromotion);
            }
            return;
        }
        let preview = self.s.other();
        let r = &mut self.s.rollout;
        let Some(new_revision) = r.other_revision.take() else {
            return;
        };
        r.other_revision = Some(std::mem::replace(&mut r.active_revision, new_revision));
        r.promote_requested = false;
        self.s.active = preview;
        self.actions.push(Action::StopGates);
        self.actions.push(Action::SwitchActive(preview));
        self.actions.push(emit(
            "Promoted",
            format!(
                "the active Service now selects {preview} (revision {})",
                self.s.rollout.active_revision
            ),
        ));
        if self.settings.post_gate {
            self.enter(S::PostPromotion);
        } else {
            self.enter(S::ScalingDown);
        }
    }

    /// Returns traffic to the still-warm previous colour; it then drains the colour left.
    fn switch_back(&mut self, gate: Option<&String>, why: &str) {
        if !self.facts.other_available {
            self.actions.push(warn(
                "RollbackRefused",
                format!("{why}, but {} is not available", self.s.other()),
            ));
            return;
        }
        let back = self.s.other();
        let r = &mut self.s.rollout;
        let Some(previous) = r.other_revision.take() else {
            return;
        };
        r.other_revision = Some(std::mem::replace(&mut r.active_revision, previous));
        let aborting = gate.is_some() || why.starts_with("aborted");
        r.aborting = aborting;
        if aborting {
            r.abort_reason = Some(why.to_owned());
            r.failed_gate = gate.cloned();
        }
        self.s.active = back;
        self.actions.push(Action::StopGates);
        self.actions.push(Action::SwitchActive(back));
        self.actions.push(Action::Emit {
            warning: aborting,
            reason: if aborting { "RolledBack" } else { "Reverted" },
            message: format!("{why}; the active Service selects {back} again"),
        });
        self.enter(RolloutStep::ScalingDown);
    }

    fn abort(&mut self, why: &str, gate: Option<&String>) {
        use RolloutStep as S;
        match self.step() {
            S::Deploying | S::PrePromotion | S::AwaitingPromotion => {
                let r = &mut self.s.rollout;
                // NB: the preview never had production traffic; it goes to zero at once, or
                // after the abort's scale-down delay (`tick`).
                if self.settings.abort_scale_down_delay_ms <= 0 {
                    r.other_revision = None;
                }
                r.promote_requested = false;
                r.abort_reason = Some(why.to_owned());
                r.failed_gate = gate.cloned();
                self.actions.push(Action::StopGates);
                self.actions.push(warn(
                    "Aborted",
                    format!("{why}; traffic stays on {}", self.s.active),
                ));
                self.enter(S::Aborted);
            }
            S::PostPromotion | S::Failed => self.switch_back(gate, why),
            S::ScalingDown if !self.s.rollout.aborting => self.switch_back(gate, why),
            // NB: an abort of an aborted cutover releases a preview kept for inspection.
            S::Aborted if self.s.rollout.other_revision.is_some() => {
                self.s.rollout.other_revision = None;
                self.actions.push(emit(
                    "ScaledDown",
                    format!(
                        "the aborted preview {} scaled to zero by command",
                        self.s.other()
                    ),
                ));
            }
            _ => {}
        }
    }

    fn finish_scale_down(&mut self) {
        use RolloutStep as S;
        self.s.rollout.other_revision = None;
        self.s.rollout.promote_requested = false;
        self.actions.push(emit(
            "ScaledDown",
            format!("{} scaled to zero", self.s.other()),
        ));
        if self.s.rollout.aborting {
            self.s.rollout.aborting = false;
            self.enter(S::Aborted);
        } else {
            self.s.rollout.target_revision = None;
            self.s.rollout.abort_reason = None;
            self.s.rollout.failed_gate = None;
            self.actions
                .push(emit("CutoverComplete", "the cutover is complete"));
            self.enter(S::Stable);
        }
    }
}

/// Desired size and revision of one colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColorPlan {
    /// The colour.
    pub color: Color,
    /// Revision its pods run; `None` when it is at zero (its template is left as it is).
    pub revision: Option<String>,
    /// Pods.
    pub replicas: i32,
}

/// What the children should look like for a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Colour the active Service selects.
    pub active: Color,
    /// The active colour's plan.
    pub active_plan: ColorPlan,
    /// The other colour's plan.
    pub other_plan: ColorPlan,
    /// Whether the HPA's scale-down is held (a cutover is in flight).
    pub hold_scale_down: bool,
}

/// The layout of `state`: sizes follow `spec_replicas` (what the HPA sets), never below the
/// held size while a cutover is in flight; `preview_replicas` sizes the preview before the
/// promotion was decided.
pub fn layout(state: &State, spec_replicas: i32, preview_replicas: Option<i32>) -> Layout {
    use RolloutStep as S;
    let r = &state.rollout;
    let held = spec_replicas.max(r.hold_replicas);
    let (active_n, other_n) = match r.step {
        S::Stable => (spec_replicas, 0),
        // NB: an aborted preview kept up for inspection keeps its preview size.
        S::Aborted => (
            spec_replicas,
            preview_replicas.map_or(spec_replicas, |p| p.min(spec_replicas)),
        ),
        S::Deploying | S::PrePromotion => (held, preview_replicas.map_or(held, |p| p.min(held))),
        S::AwaitingPromotion => (
            held,
            if r.promote_requested {
                held
            } else {
                preview_replicas.map_or(held, |p| p.min(held))
            },
        ),
        S::PostPromotion | S::Failed | S::ScalingDown => (held, held),
    };
    let other_revision = r.other_revision.clone().filter(|_| other_n > 0);
    Layout {
        active: state.active,
        active_plan: ColorPlan {
            color: state.active,
            revision: Some(r.active_revision.clone()),
            replicas: active_n,
        },
        other_plan: ColorPlan {
            color: state.other(),
            replicas: if other_revision.is_some() { other_n } else { 0 },
            revision: other_revision,
        },
        hold_scale_down: state.in_flight(),
    }
}

#[cfg(test)]
mod tests;
