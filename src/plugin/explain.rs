//! The `explain` view: why each gate of the current or last cutover passed, failed or is
//! waiting, in words and in the numbers the object holds.
//!
//! Pure: [`explanation`] reads a RelayerDeployment and a clock into an [`Explanation`] (the
//! `-o json|yaml` document); [`explain`] renders it as text. Nothing is measured or estimated
//! here: counts, verdicts, medians, p-values and shifts are the operator's (from status), set
//! beside the limits of the spec as it is now. Status written by an older operator may lack
//! any optional field; an absent one is left out of the explanation, never guessed.
//!
//! May use: [`crate::crd`] and the parent module's small rendering helpers.

use std::fmt::Write as _;

use serde::Serialize;

use super::{before_promotion, short};
use crate::crd::{
    Color, GateSpec, GateStatus, GateVerdict, InconclusivePolicy, MetricJudgement, MetricVerdict,
    NoDataPolicy, RelayerDeployment, RolloutStatus, RolloutStep, StatisticalGate, WebhookStatus,
    WebhookVerdict,
};

/// The gates a cutover runs, in the order they run.
const GATES: [&str; 2] = ["prePromotion", "postPromotion"];

/// Why the cutover of a RelayerDeployment is where it is, gate by gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// Object name.
    pub name: String,
    /// Object namespace.
    pub namespace: String,
    /// Step of the cutover record; absent before the operator wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<RolloutStep>,
    /// Seconds spent in that step so far (absent when its start is not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_seconds: Option<i64>,
    /// The revision the cutover brings in (kept after an abort); absent when none is in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub under_test: Option<UnderTest>,
    /// `spec.strategy.blueGreen.paused`: the rollout is asked to hold.
    pub paused: bool,
    /// `status.rollout.paused`: it was held when the step was last evaluated.
    pub paused_when_evaluated: bool,
    /// Why the cutover was aborted or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// The gate that failed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_gate: Option<String>,
    /// What the current step waits for before it goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// What else a reader should know (no status yet, status older than the spec, no gates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Every gate status records, then every configured gate that has not run.
    pub gates: Vec<GateExplanation>,
}

/// The revision a cutover brings in and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnderTest {
    /// Revision hash.
    pub revision: String,
    /// Its number in the revision history, when kept there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    /// The colour running it, when status says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    /// `preview`, `active`, `other colour` (after the promotion) or `aborted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// One gate: its verdict, why, and the limits it is held to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateExplanation {
    /// `prePromotion` or `postPromotion`.
    pub name: String,
    /// Revision the gate judged; absent for a configured gate that has not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Its number in the revision history, when kept there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_number: Option<i64>,
    /// Verdict status records; absent for a configured gate that has not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<GateVerdict>,
    /// One line per reason.
    pub why: Vec<String>,
    /// The thresholds of the spec now; absent when the spec has no such gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<String>,
    /// Samples, limits, inconclusive policy and interval of the spec now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// The statistical judge's settings, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistical: Option<String>,
    /// The last sample's measured values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_values: Option<String>,
    /// The statistical judgement, per metric.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<MetricExplanation>,
    /// The configured webhooks (name, URL, timeout, retries), when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_settings: Option<String>,
    /// What each webhook answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookExplanation>,
}

/// One webhook of a gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookExplanation {
    /// The webhook's name.
    pub name: String,
    /// Verdict status records.
    pub verdict: WebhookVerdict,
    /// The verdict and the last answer, in words.
    pub why: String,
}

/// One metric of a statistical judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricExplanation {
    /// `p99Latency`, `meanLatency`, `errorRate` or `sagaCompensationRate`.
    pub metric: String,
    /// Verdict status records.
    pub verdict: MetricVerdict,
    /// The verdict and its numbers, in words.
    pub why: String,
}

/// The `explain` view of `rd` at `now_ms` (Unix milliseconds), as text.
pub fn explain(rd: &RelayerDeployment, now_ms: i64) -> String {
    render(&explanation(rd, now_ms))
}

/// Why the cutover of `rd` is where it is at `now_ms` (Unix milliseconds), gate by gate.
pub fn explanation(rd: &RelayerDeployment, now_ms: i64) -> Explanation {
    let name = rd.metadata.name.clone().unwrap_or_default();
    let bg = &rd.spec.strategy.blue_green;
    let status = rd.status.as_ref();
    let rollout = status.and_then(|s| s.rollout.as_ref());
    let mut out = Explanation {
        name: name.clone(),
        namespace: rd.metadata.namespace.clone().unwrap_or_default(),
        step: rollout.map(|r| r.step),
        step_seconds: rollout
            .filter(|r| r.step_started_ms > 0)
            .map(|r| now_ms.saturating_sub(r.step_started_ms).max(0) / 1000),
        under_test: rollout.and_then(|r| under_test(rd, r)),
        paused: bg.paused,
        paused_when_evaluated: rollout.is_some_and(|r| r.paused),
        abort_reason: rollout.and_then(|r| r.abort_reason.clone()),
        failed_gate: rollout.and_then(|r| r.failed_gate.clone()),
        waiting_for: rollout.and_then(|r| waiting_for(rd, r, now_ms)),
        notes: Vec::new(),
        gates: Vec::new(),
    };
    let Some(status) = status else {
        out.notes
            .push("no status yet: is the operator running?".to_owned());
        out.notes.push(no_gates(rd));
        return out;
    };
    if status.observed_generation != rd.metadata.generation {
        out.notes.push(format!(
            "status describes generation {} and the spec is at generation {}: the operator has \
             not seen the latest spec yet (the limits shown are the spec's now)",
            optional(status.observed_generation),
            optional(rd.metadata.generation)
        ));
    }
    let Some(r) = rollout else {
        out.notes.push(no_gates(rd));
        return out;
    };
    if r.gates.is_empty() {
        out.notes.push(no_gates(rd));
        return out;
    }
    for g in &r.gates {
        out.gates.push(gate(rd, r, g));
    }
    for name in GATES {
        if let Some(spec) = gate_spec(rd, name)
            && !r.gates.iter().any(|g| g.name == name)
        {
            out.gates.push(GateExplanation {
                name: name.to_owned(),
                revision: None,
                revision_number: None,
                verdict: None,
                why: vec!["configured; has not run in this cutover".to_owned()],
                thresholds: Some(thresholds(spec)),
                settings: Some(settings(spec)),
                statistical: spec.statistical.as_ref().map(statistical),
                last_values: None,
                statistics: Vec::new(),
                webhook_settings: webhook_settings(spec),
                webhooks: Vec::new(),
            });
        }
    }
    out
}

/// The text of an [`Explanation`].
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "RelayerDeployment {}/{}", e.namespace, e.name);
    let line = |out: &mut String, label: &str, text: &str| {
        let _ = writeln!(out, "  {:<13} {text}", format!("{label}:"));
    };
    match e.step {
        Some(step) => {
            let since = e
                .step_seconds
                .map(|s| format!(" for {}", span(s)))
                .unwrap_or_default();
            line(&mut out, "Step", &format!("{step:?}{since}"));
        }
        None => line(&mut out, "Step", "no cutover record yet"),
    }
    if e.step.is_some() {
        let under_test = match &e.under_test {
            Some(u) => {
                let number = u.number.map(|n| format!(" (#{n})")).unwrap_or_default();
                let place = match (u.color, u.role.as_deref()) {
                    (Some(color), Some(role)) => format!(" on {color} ({role})"),
                    (Some(color), None) => format!(" on {color}"),
                    (None, Some(role)) => format!(", {role}"),
                    _ => String::new(),
                };
                format!("revision {}{number}{place}", short(&u.revision))
            }
            None => "none: no cutover in flight".to_owned(),
        };
        line(&mut out, "Under test", &under_test);
    }
    let paused = match (e.paused, e.paused_when_evaluated) {
        (true, true) => "yes (spec.strategy.blueGreen.paused)",
        (true, false) => "asked (spec.strategy.blueGreen.paused), not yet seen by the operator",
        (false, true) => "when last evaluated; the spec no longer asks for it",
        (false, false) => "no",
    };
    line(&mut out, "Paused", paused);
    if let Some(reason) = e.abort_reason.as_deref() {
        let gate = e
            .failed_gate
            .as_deref()
            .map(|g| format!(" (gate {g})"))
            .unwrap_or_default();
        line(&mut out, "Reason", &format!("{reason}{gate}"));
    } else if let Some(gate) = e.failed_gate.as_deref() {
        line(&mut out, "Failed gate", gate);
    }
    if let Some(waiting) = e.waiting_for.as_deref() {
        line(&mut out, "Waiting for", waiting);
    }
    for note in &e.notes {
        line(&mut out, "Note", note);
    }
    for g in &e.gates {
        let verdict = match g.verdict {
            Some(GateVerdict::Running) => "Running",
            Some(GateVerdict::Passed) => "Passed",
            Some(GateVerdict::Failed) => "Failed",
            None => "not run",
        };
        let revision = g
            .revision
            .as_deref()
            .map(|rev| {
                let number = g
                    .revision_number
                    .map(|n| format!(" (#{n})"))
                    .unwrap_or_default();
                format!(", revision {}{number}", short(rev))
            })
            .unwrap_or_default();
        let _ = writeln!(out, "Gate {}: {verdict}{revision}", g.name);
        for why in &g.why {
            line(&mut out, "why", why);
        }
        for (label, value) in [
            ("thresholds", &g.thresholds),
            ("settings", &g.settings),
            ("statistical", &g.statistical),
            ("webhooks", &g.webhook_settings),
            ("last values", &g.last_values),
        ] {
            if let Some(value) = value {
                line(&mut out, label, value);
            }
        }
        if !g.statistics.is_empty() {
            let _ = writeln!(out, "  statistics:");
            for m in &g.statistics {
                let _ = writeln!(out, "    {}: {}", m.metric, m.why);
            }
        }
        if !g.webhooks.is_empty() {
            let _ = writeln!(out, "  webhook answers:");
            for w in &g.webhooks {
                let _ = writeln!(out, "    {}: {}", w.name, w.why);
            }
        }
    }
    out
}

fn optional(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `7s`, `3m 5s`, `2h 10m`.
fn span(seconds: i64) -> String {
    match seconds {
        ..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn revision_number(rd: &RelayerDeployment, revision: &str) -> Option<i64> {
    rd.status
        .as_ref()?
        .revision_history
        .iter()
        .find(|h| h.revision == revision)
        .map(|h| h.number)
}

fn gate_spec<'a>(rd: &'a RelayerDeployment, name: &str) -> Option<&'a GateSpec> {
    let bg = &rd.spec.strategy.blue_green;
    match name {
        "prePromotion" => bg.pre_promotion.as_ref(),
        "postPromotion" => bg.post_promotion.as_ref(),
        _ => None,
    }
}

fn under_test(rd: &RelayerDeployment, r: &RolloutStatus) -> Option<UnderTest> {
    let revision = r.target_revision.clone()?;
    let active = rd.status.as_ref().and_then(|s| s.active_color);
    let (color, role) = if r.step == RolloutStep::Aborted {
        let kept = r.other_revision.as_deref() == Some(revision.as_str());
        (
            kept.then(|| active.map(Color::other)).flatten(),
            Some("aborted"),
        )
    } else if revision == r.active_revision {
        (active, Some("active"))
    } else if r.other_revision.as_deref() == Some(revision.as_str()) {
        let role = if before_promotion(r.step) {
            "preview"
        } else {
            "other colour"
        };
        (active.map(Color::other), Some(role))
    } else {
        (None, None)
    };
    Some(UnderTest {
        number: revision_number(rd, &revision),
        revision,
        color,
        role: role.map(str::to_owned),
    })
}

/// What the current step waits for, from the spec's settings and the step's start.
fn waiting_for(rd: &RelayerDeployment, r: &RolloutStatus, now_ms: i64) -> Option<String> {
    use RolloutStep as S;
    let bg = &rd.spec.strategy.blue_green;
    let name = rd.metadata.name.as_deref().unwrap_or("NAME");
    let elapsed_ms =
        (r.step_started_ms > 0).then(|| now_ms.saturating_sub(r.step_started_ms).max(0));
    let left_s = |seconds: i32| {
        elapsed_ms.map(|e| {
            let left = i64::from(seconds).saturating_mul(1000).saturating_sub(e);
            // NB: rounded up, so "0 s left" means the time is over.
            (left.max(0) + 999) / 1000
        })
    };
    let step = match r.step {
        S::AwaitingPromotion if r.promote_requested => Some(
            "the preview to be available at full size: the promotion is decided and happens then"
                .to_owned(),
        ),
        S::AwaitingPromotion if !bg.auto_promote => Some(format!(
            "a promote command (autoPromote false): kubectl relayer promote {name} (or abort)"
        )),
        S::AwaitingPromotion => Some(match bg.auto_promotion_seconds {
            Some(seconds) => match left_s(seconds) {
                Some(left) if left > 0 => format!(
                    "the automatic pause: {left} s of autoPromotionSeconds {seconds} left, then \
                     it promotes (kubectl relayer promote {name} ends the pause early)"
                ),
                Some(_) => format!(
                    "nothing: the automatic pause of autoPromotionSeconds {seconds} is over; it \
                     promotes at the next reconcile"
                ),
                None => format!(
                    "the automatic pause of autoPromotionSeconds {seconds} (its start is not \
                     recorded)"
                ),
            },
            None => "nothing: autoPromote without autoPromotionSeconds promotes at the next \
                     reconcile"
                .to_owned(),
        }),
        S::Deploying => Some(match left_s(bg.progress_deadline_seconds) {
            Some(left) => format!(
                "the preview to be available: {left} s of progressDeadlineSeconds {} left, then \
                 the cutover aborts",
                bg.progress_deadline_seconds
            ),
            None => format!(
                "the preview to be available (progressDeadlineSeconds {})",
                bg.progress_deadline_seconds
            ),
        }),
        S::PrePromotion => Some("the prePromotion gate (below)".to_owned()),
        S::PostPromotion => Some("the postPromotion gate (below)".to_owned()),
        S::Failed => Some(format!(
            "a command: kubectl relayer abort {name} (traffic back to the previous colour) or \
             kubectl relayer promote {name} (keep the new one)"
        )),
        S::ScalingDown => r.scale_down.clone().map(|s| format!("the scale-down: {s}")),
        S::Aborted if r.target_revision.is_some() => Some(format!(
            "nothing: traffic stays on the last good colour; kubectl relayer retry {name} starts \
             this cutover again, a spec change starts another"
        )),
        S::Stable | S::Aborted => None,
    };
    let in_flight = !matches!(r.step, S::Stable | S::Aborted);
    match step {
        Some(step) if in_flight && (bg.paused || r.paused) => Some(format!(
            "a resume (paused; nothing progresses until kubectl relayer resume {name}), then {step}"
        )),
        step => step,
    }
}

fn no_gates(rd: &RelayerDeployment) -> String {
    let configured: Vec<String> = GATES
        .iter()
        .map(|name| match gate_spec(rd, name) {
            Some(spec) => {
                let judge = spec
                    .statistical
                    .as_ref()
                    .map(|s| format!("; statistical judge on {}", metric_names(s)))
                    .unwrap_or_default();
                let hooks: Vec<&str> = spec.webhooks.iter().map(|w| w.name.as_str()).collect();
                let hooks = if hooks.is_empty() {
                    String::new()
                } else {
                    format!("; webhooks {}", hooks.join(", "))
                };
                format!(
                    "{name} ({} samples every {} ms; {}{judge}{hooks})",
                    spec.samples,
                    spec.interval_ms,
                    thresholds(spec)
                )
            }
            None => format!("{name} none"),
        })
        .collect();
    format!(
        "no cutover has run gates yet; configured gates: {}",
        configured.join(", ")
    )
}

fn metric_names(s: &StatisticalGate) -> String {
    s.metrics
        .iter()
        .map(|m| m.name.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `100` basis points as `1.00 %`.
fn basis_points(bp: i32) -> String {
    format!("{:.2} %", f64::from(bp) / 100.0)
}

fn thresholds(spec: &GateSpec) -> String {
    let mut t = Vec::new();
    let mut rate = |field: &str, value: Option<i32>| {
        if let Some(bp) = value {
            t.push(format!("{field} {bp} ({})", basis_points(bp)));
        }
    };
    rate("maxErrorRateBasisPoints", spec.max_error_rate_basis_points);
    rate(
        "maxSagaCompensationRateBasisPoints",
        spec.max_saga_compensation_rate_basis_points,
    );
    rate(
        "maxSagaManualRateBasisPoints",
        spec.max_saga_manual_rate_basis_points,
    );
    rate(
        "maxRateLimitRejectionRateBasisPoints",
        spec.max_rate_limit_rejection_rate_basis_points,
    );
    if let Some(ms) = spec.max_p99_latency_ms {
        t.push(format!("maxP99LatencyMs {ms}"));
    }
    if let Some(n) = spec.max_open_breakers {
        t.push(format!("maxOpenBreakers {n}"));
    }
    if let Some(relative) = &spec.relative_to_active {
        if let Some(bp) = relative.error_rate_margin_basis_points {
            t.push(format!(
                "relativeToActive.errorRateMarginBasisPoints {bp} (active + {})",
                basis_points(bp)
            ));
        }
        if let Some(p) = relative.p99_latency_margin_percent {
            t.push(format!(
                "relativeToActive.p99LatencyMarginPercent {p} (active + {p} %)"
            ));
        }
    }
    if t.is_empty() {
        "none (every conclusive sample passes)".to_owned()
    } else {
        t.join(", ")
    }
}

fn settings(spec: &GateSpec) -> String {
    let inconclusive = match spec.inconclusive {
        InconclusivePolicy::Wait => {
            format!("Wait (inconclusiveLimit {})", spec.inconclusive_limit)
        }
        InconclusivePolicy::Pass => "Pass".to_owned(),
        InconclusivePolicy::Fail => "Fail".to_owned(),
    };
    let probe = spec
        .probe
        .as_ref()
        .map(|p| format!(", probe {}/s on {}", p.requests_per_second, p.path))
        .unwrap_or_default();
    format!(
        "samples {}, failureLimit {}, minRequests {}, inconclusive {inconclusive}, \
         scrapeErrorLimit {}, intervalMs {}{probe}",
        spec.samples,
        spec.failure_limit,
        spec.min_requests,
        spec.scrape_error_limit,
        spec.interval_ms
    )
}

fn webhook_settings(spec: &GateSpec) -> Option<String> {
    if spec.webhooks.is_empty() {
        return None;
    }
    let hooks: Vec<String> = spec
        .webhooks
        .iter()
        .map(|w| {
            format!(
                "{} ({}, timeoutSeconds {}, retries {})",
                w.name, w.url, w.timeout_seconds, w.retries
            )
        })
        .collect();
    Some(hooks.join(", "))
}

fn statistical(s: &StatisticalGate) -> String {
    let metrics: Vec<String> = s
        .metrics
        .iter()
        .map(|m| format!("{} (noData {:?})", m.name.name(), m.no_data))
        .collect();
    format!(
        "confidenceBasisPoints {} (fails below p {}), tolerancePercent {} (±{} %), minSamples {}, \
         metrics {}",
        s.confidence_basis_points,
        alpha_text(s),
        s.tolerance_percent,
        s.tolerance_percent,
        s.min_samples,
        metrics.join(", ")
    )
}

/// The p-value below which a metric is significantly worse, as the judge computes it.
fn alpha(s: &StatisticalGate) -> f64 {
    1.0 - f64::from(s.confidence_basis_points) / 10_000.0
}

fn alpha_text(s: &StatisticalGate) -> String {
    trim_zeros(format!("{:.4}", alpha(s)))
}

/// `0.020000` as `0.02`.
fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// A p-value: four decimals, or (below 0.001) enough to show two significant digits.
fn p_value(p: f64) -> String {
    if !p.is_finite() || p >= 0.001 || p <= 0.0 {
        return format!("{p:.4}");
    }
    if p < 1e-10 {
        return format!("{p:.1e}");
    }
    // NB: 1e-10 <= p < 0.001, so this is between 4 and 11.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let decimals = (-p.log10()).ceil() as usize + 1;
    trim_zeros(format!("{p:.decimals$}"))
}

/// How status gives a metric's values: ms for latencies, a share for rates.
#[derive(Clone, Copy)]
enum Unit {
    Ms,
    Share,
    Plain,
}

fn unit(metric: &str) -> Unit {
    match metric {
        "p99Latency" | "meanLatency" => Unit::Ms,
        "errorRate" | "sagaCompensationRate" => Unit::Share,
        _ => Unit::Plain,
    }
}

fn value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ms => format!("{v:.1} ms"),
        Unit::Share => format!("{:.2} %", v * 100.0),
        Unit::Plain => format!("{v}"),
    }
}

fn shift(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ms => format!("{v:+.1} ms"),
        Unit::Share => format!("{:+.2} percentage points", v * 100.0),
        Unit::Plain => format!("{v:+}"),
    }
}

/// One gate of status, against the spec's gate of that name.
fn gate(rd: &RelayerDeployment, r: &RolloutStatus, g: &GateStatus) -> GateExplanation {
    let spec = gate_spec(rd, &g.name);
    let stat = spec.and_then(|s| s.statistical.as_ref());
    let conclusive = g.passed.saturating_add(g.failed);
    let mut why = Vec::new();
    match r.target_revision.as_deref() {
        Some(target) if target != g.revision => why.push(format!(
            "from an earlier cutover (revision {}): this cutover has not run it yet",
            short(&g.revision)
        )),
        None => why.push("from the last cutover".to_owned()),
        Some(_) => {}
    }
    if spec.is_none() {
        why.push(format!(
            "spec.strategy.blueGreen.{} is not configured now",
            g.name
        ));
    }
    match g.verdict {
        GateVerdict::Passed => {
            let limit = spec
                .map(|s| format!(" (failureLimit {})", s.failure_limit))
                .unwrap_or_default();
            why.push(format!(
                "{} of {conclusive} samples passed{limit}{}",
                g.passed,
                extras(g, spec)
            ));
            if !g.statistics.is_empty() {
                why.push("the statistical judge found no metric worse".to_owned());
            }
        }
        GateVerdict::Failed => {
            why.push(
                g.reason
                    .clone()
                    .unwrap_or_else(|| "failed (no reason recorded)".to_owned()),
            );
            why.push(counts(g, spec));
        }
        GateVerdict::Running => running(g, spec, stat, conclusive, &mut why),
    }
    GateExplanation {
        name: g.name.clone(),
        revision: Some(g.revision.clone()),
        revision_number: revision_number(rd, &g.revision),
        verdict: Some(g.verdict),
        why,
        thresholds: spec.map(thresholds),
        settings: spec.map(settings),
        statistical: stat.map(statistical),
        last_values: g.last_values.clone(),
        statistics: g.statistics.iter().map(|m| metric(m, stat)).collect(),
        webhook_settings: spec.and_then(webhook_settings),
        webhooks: g.webhooks.iter().map(|w| webhook(w, spec)).collect(),
    }
}

/// Why a running gate has not decided: the samples it still needs, how close it is to each
/// limit, or the statistical judge or the webhooks it waits for.
fn running(
    g: &GateStatus,
    spec: Option<&GateSpec>,
    stat: Option<&StatisticalGate>,
    conclusive: i32,
    why: &mut Vec<String>,
) {
    let Some(spec) = spec else {
        why.push(counts(g, None));
        return;
    };
    if conclusive < spec.samples {
        let mut parts = vec![format!(
            "{} more samples of {}",
            spec.samples.saturating_sub(conclusive),
            spec.samples
        )];
        if spec.inconclusive == InconclusivePolicy::Wait {
            parts.push(format!(
                "{} inconclusive of inconclusiveLimit {}",
                g.inconclusive, spec.inconclusive_limit
            ));
        }
        parts.push(format!(
            "{} failed of failureLimit {}",
            g.failed, spec.failure_limit
        ));
        parts.push(format!(
            "{} scrape errors of scrapeErrorLimit {}",
            g.scrape_errors, spec.scrape_error_limit
        ));
        why.push(parts.join("; "));
        if g.samples == 0 {
            why.push(format!(
                "no sample yet: the first scrape is the baseline, then one sample every {} ms",
                spec.interval_ms
            ));
        } else if g.inconclusive > 0 {
            why.push(format!(
                "a sample is conclusive with at least minRequests {} requests (policy {:?})",
                spec.min_requests, spec.inconclusive
            ));
        }
        return;
    }
    let judge_pending = stat.filter(|_| {
        g.statistics.is_empty()
            || g.statistics
                .iter()
                .any(|m| m.verdict == MetricVerdict::Pending)
    });
    if let Some(stat) = judge_pending {
        why.push(format!(
            "thresholds passed ({} of {conclusive} samples passed, failureLimit {}); waiting \
             for the statistical judge",
            g.passed, spec.failure_limit
        ));
        why.push(format!(
            "the judge compares every metric once, after {} intervals of both colours \
             (max of samples {} and minSamples {})",
            spec.samples.max(stat.min_samples),
            spec.samples,
            stat.min_samples
        ));
        let waiting: Vec<String> = g
            .statistics
            .iter()
            .filter(|m| m.under_test_samples < stat.min_samples)
            .filter(|m| {
                stat.metrics
                    .iter()
                    .any(|s| s.name.name() == m.metric && s.no_data == NoDataPolicy::Wait)
            })
            .map(|m| m.metric.clone())
            .collect();
        if !waiting.is_empty() {
            why.push(format!(
                "{} short of minSamples {} with noData Wait: the judge waits for them at most \
                 inconclusiveLimit {} more intervals",
                waiting.join(", "),
                stat.min_samples,
                spec.inconclusive_limit
            ));
        }
    } else if !spec.webhooks.is_empty() {
        let judge = if stat.is_some() {
            " and the statistical judge"
        } else {
            ""
        };
        let waiting: Vec<&str> = spec
            .webhooks
            .iter()
            .filter(|w| {
                !g.webhooks
                    .iter()
                    .any(|h| h.name == w.name && h.verdict == WebhookVerdict::Passed)
            })
            .map(|w| w.name.as_str())
            .collect();
        why.push(format!(
            "thresholds{judge} passed ({} of {conclusive} samples passed, failureLimit {}); \
             waiting for the webhooks: {}",
            g.passed,
            spec.failure_limit,
            if waiting.is_empty() {
                "every one agreed, the verdict is written next".to_owned()
            } else {
                format!(
                    "{} (asked every {} ms)",
                    waiting.join(", "),
                    spec.interval_ms
                )
            }
        ));
    } else {
        why.push(format!(
            "{conclusive} conclusive samples of {}: no verdict recorded yet",
            spec.samples
        ));
    }
}

/// One webhook of a gate: what it answered, as status records it.
fn webhook(w: &WebhookStatus, spec: Option<&GateSpec>) -> WebhookExplanation {
    let hook = spec.and_then(|s| s.webhooks.iter().find(|h| h.name == w.name));
    let answer = w.last_answer.as_deref().unwrap_or("no answer recorded");
    let calls = match w.calls {
        1 => "1 call".to_owned(),
        n => format!("{n} calls"),
    };
    let why = match w.verdict {
        WebhookVerdict::Pending => "pending — not asked yet: asked once the gate's other checks \
                                    passed"
            .to_owned(),
        WebhookVerdict::Passed => format!("passed — {answer} after {calls}"),
        WebhookVerdict::Held => {
            let every = spec
                .map(|s| format!(" every {} ms", s.interval_ms))
                .unwrap_or_default();
            format!(
                "held — {answer} after {calls}: the gate and the cutover wait, asked again{every} \
                 (an abort command ends the wait)"
            )
        }
        WebhookVerdict::Failed => {
            let retries = hook
                .map(|h| format!(" (retries {})", h.retries))
                .unwrap_or_default();
            format!("FAILED — {answer} after {calls}{retries}")
        }
    };
    WebhookExplanation {
        name: w.name.clone(),
        verdict: w.verdict,
        why,
    }
}

/// The non-zero inconclusive and scrape-error counts of a gate, with their limits.
fn extras(g: &GateStatus, spec: Option<&GateSpec>) -> String {
    let mut parts = Vec::new();
    if g.inconclusive > 0 {
        parts.push(format!("{} inconclusive", g.inconclusive));
    }
    if g.scrape_errors > 0 {
        let limit = spec
            .map(|s| format!(" of scrapeErrorLimit {}", s.scrape_error_limit))
            .unwrap_or_default();
        parts.push(format!("{} scrape errors{limit}", g.scrape_errors));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

/// Every count of a gate, each with its limit when the spec has the gate.
fn counts(g: &GateStatus, spec: Option<&GateSpec>) -> String {
    let limit = |text: String| spec.map(|_| format!(" ({text})")).unwrap_or_default();
    format!(
        "{} samples: {} passed, {} failed{}, {} inconclusive{}, {} scrape errors{}",
        g.samples,
        g.passed,
        g.failed,
        limit(format!(
            "failureLimit {}",
            spec.map_or(0, |s| s.failure_limit)
        )),
        g.inconclusive,
        limit(format!(
            "inconclusiveLimit {}",
            spec.map_or(0, |s| s.inconclusive_limit)
        )),
        g.scrape_errors,
        limit(format!(
            "scrapeErrorLimit {}",
            spec.map_or(0, |s| s.scrape_error_limit)
        )),
    )
}

/// One metric's verdict and numbers, compared with the spec's confidence and tolerance.
fn metric(m: &MetricJudgement, stat: Option<&StatisticalGate>) -> MetricExplanation {
    let unit = unit(&m.metric);
    let samples = {
        let baseline = if m.baseline_samples == m.under_test_samples {
            String::new()
        } else {
            format!(" ({} from the other colour)", m.baseline_samples)
        };
        match stat {
            Some(s) => format!(
                "{}{baseline} of minSamples {} samples",
                m.under_test_samples, s.min_samples
            ),
            None => format!("{}{baseline} samples", m.under_test_samples),
        }
    };
    let medians = match (m.under_test_median, m.baseline_median) {
        (Some(a), Some(b)) => Some(format!(
            "under test median {} vs {}",
            value(unit, a),
            value(unit, b)
        )),
        _ => None,
    };
    let shift_text = m.shift.map(|s| match m.shift_percent {
        Some(p) => format!("shift {} ({p:+.1} %)", shift(unit, s)),
        None => format!("shift {}", shift(unit, s)),
    });
    let numbers = [medians.clone(), shift_text]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    // What the spec's settings say of these numbers: significant, and outside the band.
    let significant = m.p_value.zip(stat).map(|(p, s)| p < alpha(s));
    let p_clause = m.p_value.map(|p| match stat {
        Some(s) => format!(
            "p={} {} {}",
            p_value(p),
            if p < alpha(s) { "<" } else { "≥" },
            alpha_text(s)
        ),
        None => format!("p={}", p_value(p)),
    });
    // NB: the band the judge used is in status (latencies: the tolerance of the median;
    // rates: of the mean, at least 0.1 point); an older status has none, then the percent
    // decides.
    let recorded = m.band.zip(m.shift).map(|(band, shift)| {
        let t = stat.map_or(String::new(), |s| format!(" (±{} %)", s.tolerance_percent));
        if shift > band {
            (
                true,
                format!("shift outside the band {}{t}", value(unit, band)),
            )
        } else {
            (
                false,
                format!("shift within the band {}{t}", value(unit, band)),
            )
        }
    });
    let band = recorded.or_else(|| {
        stat.and_then(|s| {
            let tolerance = f64::from(s.tolerance_percent);
            let percent = match (m.shift_percent, m.shift, m.baseline_median) {
                (Some(p), _, _) => p,
                // NB: with a baseline median of 0 the band is 0: any increase is outside it.
                (None, Some(shift), Some(0.0)) => {
                    if shift > 0.0 {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                }
                _ => return None,
            };
            let t = s.tolerance_percent;
            Some(if percent > tolerance {
                (true, format!("shift outside ±{t} %"))
            } else if percent < -tolerance {
                (
                    false,
                    format!("shift below −{t} % (better: only an increase fails)"),
                )
            } else {
                (false, format!("shift within ±{t} %"))
            })
        })
    });
    let worse = significant
        .zip(band.as_ref().map(|b| b.0))
        .map(|(p, b)| p && b);
    let differs = match (m.verdict, worse) {
        (MetricVerdict::Failed, Some(false)) | (MetricVerdict::Passed, Some(true)) => {
            " (judged under other statistical settings than the spec's now)"
        }
        _ => "",
    };
    let join = |parts: Vec<Option<String>>, sep: &str| {
        parts.into_iter().flatten().collect::<Vec<_>>().join(sep)
    };
    let verdict_with = |verdict: &str, text: String| {
        if text.is_empty() {
            format!("{verdict} (no numbers recorded)")
        } else {
            format!("{verdict} — {text}{differs}")
        }
    };
    let why = match m.verdict {
        MetricVerdict::Failed => {
            let clause = join(vec![p_clause, band.map(|b| b.1)], " and ");
            let parts = vec![
                Some(numbers).filter(|n| !n.is_empty()),
                Some(clause).filter(|c| !c.is_empty()),
            ];
            verdict_with("FAILED", join(parts, ", "))
        }
        MetricVerdict::Passed => {
            let clause = match (significant, p_clause, band) {
                (Some(true), Some(p), Some((_, band))) => format!("{p} but {band}"),
                (_, p, band) => join(vec![p, band.map(|b| b.1)], ", "),
            };
            let parts = vec![
                Some(clause).filter(|c| !c.is_empty()),
                Some(numbers).filter(|n| !n.is_empty()),
            ];
            verdict_with("passed", join(parts, "; "))
        }
        MetricVerdict::Pending => {
            let so_far = medians.map(|m| format!("; so far {m}")).unwrap_or_default();
            format!("pending — {samples}{so_far}")
        }
        MetricVerdict::NoData => {
            let policy = stat
                .and_then(|s| s.metrics.iter().find(|s| s.name.name() == m.metric))
                .map(|s| format!(" (policy {:?})", s.no_data))
                .unwrap_or_default();
            format!("no data{policy} — {samples}")
        }
    };
    MetricExplanation {
        metric: m.metric.clone(),
        verdict: m.verdict,
        why,
    }
}

#[cfg(test)]
mod tests;
