//! Health gates: the relayer's own metrics, scraped from the pods under test.
//!
//! Pure core: [`parse`] reads the Prometheus/OpenMetrics text a relayer serves on `/metrics`
//! into a [`Scrape`], with the relayer's own line parser ([`parse_line`], re-exported from
//! [`relayer::exposition`] with [`Exposition`], which keeps every line for readers of one
//! series by name and labels); [`Scrape::delta`] turns two scrapes of one pod into a
//! [`Window`] (counter resets handled); [`judge`] gives a sample's [`Sample`] verdict against a
//! [`GateSpec`], optionally relative to the active colour's window; a [`Tally`] folds samples,
//! inconclusive samples and scrape errors into the gate's verdict.
//!
//! Thin shell ([`runner`]): a task per running gate scrapes every pod under test at the
//! gate's interval, optionally drives a bounded probe load at them, and reports each new tally;
//! [`runner::drain_evidence`] reads the in-flight and saga gauges of the pods of a colour being
//! left. The only network client is [`runner::get`] (hyper's HTTP/1.1 client), bounded by a
//! timeout and a body cap.
//!
//! Beside the thresholds: [`stats`], the statistical judge of the pods under test against the
//! other colour, and [`webhook`], what a gate's webhooks' answers mean; both pure.
//!
//! May use: [`crate::crd`] and [`relayer::exposition`] only; [`runner`] uses the pure core here
//! and nothing else.

use std::collections::BTreeMap;

pub use relayer::exposition::{Exposition, ParseError, SampleLine, SeriesError, parse_line};

use crate::crd::{GateSpec, GateStatus, GateVerdict, InconclusivePolicy};

/// Routes that are not traffic: probes and the scrape itself.
const OPS_ROUTES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// The series of one `/metrics` text a gate needs (absent families count as zero).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Requests answered, excluding the ops routes (`/health`, `/ready`, `/metrics`).
    pub requests: f64,
    /// Of those, answered 5xx.
    pub errors: f64,
    /// Of those, answered 429 (refused by the rate limiter).
    pub rate_limited: f64,
    /// Cumulative latency histogram over all non-ops routes: (upper bound in s, count).
    pub latency_buckets: Vec<(f64, f64)>,
    /// The histogram's sum over all non-ops routes, in s.
    pub latency_sum: f64,
    /// `foresight_http_requests_in_flight` (business requests; probes and scrapes excluded).
    pub in_flight: f64,
    /// Sum of `foresight_saga_active`.
    pub sagas_active: f64,
    /// `foresight_saga_executions_total` by outcome.
    pub sagas: BTreeMap<String, f64>,
    /// Breakers whose `foresight_circuit_breaker_state` is 1 (open).
    pub open_breakers: f64,
}

/// Reads the series a gate needs from a `/metrics` text.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut s = Scrape::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some(sample) = parse_line(line, i + 1)? else {
            continue;
        };
        let ops = sample
            .label("route")
            .is_some_and(|r| OPS_ROUTES.contains(&r));
        match sample.name.as_str() {
            "foresight_http_requests_total" if !ops => {
                s.requests += sample.value;
                let status = sample.label("status").unwrap_or("");
                if status.starts_with('5') {
                    s.errors += sample.value;
                } else if status == "429" {
                    s.rate_limited += sample.value;
                }
            }
            "foresight_http_request_duration_seconds_bucket" if !ops => {
                let le = match sample.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().map_err(|_| ParseError {
                        line: i + 1,
                        what: format!("bucket bound {le:?} is not a number"),
                    })?,
                    None => continue,
                };
                let entry = buckets.entry(le.to_bits()).or_insert((le, 0.0));
                entry.1 += sample.value;
            }
            "foresight_http_request_duration_seconds_sum" if !ops => {
                s.latency_sum += sample.value;
            }
            "foresight_http_requests_in_flight" => s.in_flight += sample.value,
            "foresight_saga_active" => s.sagas_active += sample.value,
            "foresight_saga_executions_total" => {
                let outcome = sample.label("outcome").unwrap_or("unknown").to_owned();
                *s.sagas.entry(outcome).or_insert(0.0) += sample.value;
            }
            "foresight_circuit_breaker_state" if sample.value == 1.0 => s.open_breakers += 1.0,
            _ => {}
        }
    }
    let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    s.latency_buckets = buckets;
    Ok(s)
}

/// A counter's increase between two scrapes; a decrease means the process restarted, and
/// then the later value is the increase since the restart.
fn increase(later: f64, earlier: f64) -> f64 {
    if later >= earlier {
        later - earlier
    } else {
        later
    }
}

/// What happened between two scrapes (of one pod, or summed over pods).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Requests answered (non-ops).
    pub requests: f64,
    /// 5xx answers.
    pub errors: f64,
    /// 429 answers.
    pub rate_limited: f64,
    /// Latency histogram of the window: (upper bound in s, cumulative count).
    pub latency_buckets: Vec<(f64, f64)>,
    /// Latency observed in the window, summed, in s.
    pub latency_sum: f64,
    /// Sagas that finished, by outcome.
    pub sagas: BTreeMap<String, f64>,
    /// Open breakers at the end of the window.
    pub open_breakers: f64,
}

impl Scrape {
    /// The window from `earlier` to `self`.
    pub fn delta(&self, earlier: &Scrape) -> Window {
        let restarted = self.requests < earlier.requests;
        let base = |v: f64| if restarted { 0.0 } else { v };
        let latency_buckets = self
            .latency_buckets
            .iter()
            .map(|(le, count)| {
                let before = earlier
                    .latency_buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, increase(*count, base(before)))
            })
            .collect();
        let sagas = self
            .sagas
            .iter()
            .map(|(k, v)| {
                let before = earlier.sagas.get(k).copied().unwrap_or(0.0);
                (k.clone(), increase(*v, before))
            })
            .collect();
        Window {
            requests: increase(self.requests, base(earlier.requests)),
            errors: increase(self.errors, base(earlier.errors)),
            rate_limited: increase(self.rate_limited, base(earlier.rate_limited)),
            latency_buckets,
            latency_sum: increase(self.latency_sum, base(earlier.latency_sum)),
            sagas,
            open_breakers: self.open_breakers,
        }
    }
}

impl Window {
    /// Adds another pod's window.
    pub fn add(&mut self, other: &Window) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.rate_limited += other.rate_limited;
        self.latency_sum += other.latency_sum;
        self.open_breakers += other.open_breakers;
        for (k, v) in &other.sagas {
            *self.sagas.entry(k.clone()).or_insert(0.0) += v;
        }
        for (le, count) in &other.latency_buckets {
            match self.latency_buckets.iter_mut().find(|(l, _)| l == le) {
                Some(entry) => entry.1 += count,
                None => self.latency_buckets.push((*le, *count)),
            }
        }
        self.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// Share of 5xx answers (0 without requests).
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.requests)
    }

    /// Share of 429 answers.
    pub fn rate_limit_rate(&self) -> f64 {
        ratio(self.rate_limited, self.requests)
    }

    /// p99 latency in milliseconds: the upper bound of the first bucket holding 99 % of the
    /// window's requests (infinite when only `+Inf` does); `None` without observations.
    pub fn p99_ms(&self) -> Option<f64> {
        let total = self.latency_buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        self.latency_buckets
            .iter()
            .find(|(_, count)| *count >= 0.99 * total)
            .map(|(le, _)| le * 1000.0)
    }

    /// Latency quantile `q` in milliseconds, interpolated linearly within the bucket that
    /// holds it (as PromQL's `histogram_quantile`; the largest finite bound when only `+Inf`
    /// does); `None` without observations.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.latency_buckets.last()?.1;
        if total <= 0.0 || !q.is_finite() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, count) in &self.latency_buckets {
            if *count >= rank {
                if !le.is_finite() {
                    return Some(lower * 1000.0);
                }
                let inside = count - below;
                let share = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some((lower + (le - lower) * share) * 1000.0);
            }
            lower = *le;
            below = *count;
        }
        Some(lower * 1000.0)
    }

    /// Mean latency in milliseconds; `None` without observations.
    pub fn mean_ms(&self) -> Option<f64> {
        let count = self.latency_buckets.last()?.1;
        (count > 0.0).then(|| self.latency_sum / count * 1000.0)
    }

    /// Sagas that finished in the window (completed, compensated or parked).
    pub fn sagas_finished(&self) -> f64 {
        ["completed", "compensated", "manual"]
            .iter()
            .filter_map(|k| self.sagas.get(*k))
            .sum()
    }

    /// Share of finished sagas that were compensated.
    pub fn compensation_rate(&self) -> f64 {
        ratio(
            self.sagas.get("compensated").copied().unwrap_or(0.0),
            self.sagas_finished(),
        )
    }

    /// Share of finished sagas parked for manual handling.
    pub fn manual_rate(&self) -> f64 {
        ratio(
            self.sagas.get("manual").copied().unwrap_or(0.0),
            self.sagas_finished(),
        )
    }

    /// The measured values, as status shows them.
    pub fn describe(&self) -> String {
        let p99 = match self.p99_ms() {
            Some(p) if p.is_finite() => format!("{p:.1}ms"),
            Some(_) => "over the largest bucket".to_owned(),
            None => "n/a".to_owned(),
        };
        format!(
            "requests={} errorRate={:.2}% p99={p99} rateLimited={:.2}% openBreakers={} compensated={:.2}% manual={:.2}%",
            self.requests,
            self.error_rate() * 100.0,
            self.rate_limit_rate() * 100.0,
            self.open_breakers,
            self.compensation_rate() * 100.0,
            self.manual_rate() * 100.0,
        )
    }
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

fn bp(basis_points: i32) -> f64 {
    f64::from(basis_points) / 10_000.0
}

/// Verdict of one sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Every check passed.
    Pass,
    /// These checks failed (check, threshold and measured value each).
    Fail(String),
    /// Fewer requests than `minRequests`: no data, not bad data.
    Inconclusive(String),
}

/// Judges one window of the pods under test, optionally against the active colour's window
/// of the same time. Relative checks apply only when the active colour saw `minRequests`.
pub fn judge(spec: &GateSpec, window: &Window, active: Option<&Window>) -> Sample {
    let mut failures = Vec::new();
    if let Some(max) = spec.max_open_breakers
        && window.open_breakers > f64::from(max)
    {
        failures.push(format!("open breakers {} > {max}", window.open_breakers));
    }
    #[allow(clippy::cast_precision_loss)]
    let min_requests = spec.min_requests as f64;
    if window.requests < min_requests {
        if failures.is_empty() {
            return Sample::Inconclusive(format!(
                "{} requests < minRequests {}",
                window.requests, spec.min_requests
            ));
        }
        return Sample::Fail(failures.join("; "));
    }
    let pct = |v: f64| format!("{:.2}%", v * 100.0);
    if let Some(max) = spec.max_error_rate_basis_points
        && window.error_rate() > bp(max)
    {
        failures.push(format!(
            "error rate {} > {}",
            pct(window.error_rate()),
            pct(bp(max))
        ));
    }
    if let Some(max) = spec.max_p99_latency_ms
        && let Some(p99) = window.p99_ms()
        && p99 > f64::from(max)
    {
        failures.push(format!("p99 latency {p99:.1}ms > {max}ms"));
    }
    if let Some(max) = spec.max_rate_limit_rejection_rate_basis_points
        && window.rate_limit_rate() > bp(max)
    {
        failures.push(format!(
            "rate-limit rejections {} > {}",
            pct(window.rate_limit_rate()),
            pct(bp(max))
        ));
    }
    if let Some(max) = spec.max_saga_compensation_rate_basis_points
        && window.compensation_rate() > bp(max)
    {
        failures.push(format!(
            "saga compensations {} > {}",
            pct(window.compensation_rate()),
            pct(bp(max))
        ));
    }
    if let Some(max) = spec.max_saga_manual_rate_basis_points
        && window.manual_rate() > bp(max)
    {
        failures.push(format!(
            "sagas for manual handling {} > {}",
            pct(window.manual_rate()),
            pct(bp(max))
        ));
    }
    if let (Some(relative), Some(active)) = (&spec.relative_to_active, active)
        && active.requests >= min_requests
    {
        if let Some(margin) = relative.error_rate_margin_basis_points {
            let limit = active.error_rate() + bp(margin);
            if window.error_rate() > limit {
                failures.push(format!(
                    "error rate {} > active {} + {}",
                    pct(window.error_rate()),
                    pct(active.error_rate()),
                    pct(bp(margin))
                ));
            }
        }
        if let Some(margin) = relative.p99_latency_margin_percent
            && let (Some(mine), Some(theirs)) = (window.p99_ms(), active.p99_ms())
            && mine > theirs * (1.0 + f64::from(margin) / 100.0)
        {
            failures.push(format!(
                "p99 latency {mine:.1}ms > active {theirs:.1}ms + {margin}%"
            ));
        }
    }
    if failures.is_empty() {
        Sample::Pass
    } else {
        Sample::Fail(failures.join("; "))
    }
}

/// The running count of one gate; [`GateStatus`] is its form in status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally(pub GateStatus);

impl Tally {
    /// A fresh tally of gate `name` for `revision`.
    pub fn new(name: &str, revision: &str) -> Self {
        Self(GateStatus {
            name: name.to_owned(),
            revision: revision.to_owned(),
            ..GateStatus::default()
        })
    }

    /// Whether the gate has decided.
    pub fn decided(&self) -> bool {
        self.0.verdict != GateVerdict::Running
    }

    fn fail(&mut self, reason: String) {
        self.0.verdict = GateVerdict::Failed;
        self.0.reason = Some(reason);
    }

    /// Folds in one sample, with the values measured.
    pub fn record(&mut self, spec: &GateSpec, sample: Sample, values: String) {
        if self.decided() {
            return;
        }
        let s = &mut self.0;
        s.samples += 1;
        s.last_values = Some(values);
        let failed_with = match sample {
            Sample::Pass => {
                s.passed += 1;
                None
            }
            Sample::Fail(why) => {
                s.failed += 1;
                Some(why)
            }
            Sample::Inconclusive(why) => match spec.inconclusive {
                InconclusivePolicy::Pass => {
                    s.passed += 1;
                    None
                }
                InconclusivePolicy::Fail => {
                    s.failed += 1;
                    Some(format!("inconclusive ({why}) counts as failed"))
                }
                InconclusivePolicy::Wait => {
                    s.inconclusive += 1;
                    if s.inconclusive > spec.inconclusive_limit {
                        let reason = format!(
                            "{} inconclusive samples > inconclusiveLimit {} (last: {why})",
                            s.inconclusive, spec.inconclusive_limit
                        );
                        self.fail(reason);
                    }
                    return;
                }
            },
        };
        if let Some(why) = failed_with
            && s.failed > spec.failure_limit
        {
            let reason = format!(
                "{} failed samples > failureLimit {} (last: {why})",
                s.failed, spec.failure_limit
            );
            self.fail(reason);
            return;
        }
        if s.passed + s.failed >= spec.samples {
            s.verdict = GateVerdict::Passed;
            s.reason = None;
        }
    }

    /// Counts a failed scrape.
    pub fn scrape_error(&mut self, spec: &GateSpec, what: &str) {
        if self.decided() {
            return;
        }
        self.0.scrape_errors += 1;
        if self.0.scrape_errors > spec.scrape_error_limit {
            let reason = format!(
                "{} scrape errors > scrapeErrorLimit {} (last: {what})",
                self.0.scrape_errors, spec.scrape_error_limit
            );
            self.fail(reason);
        }
    }
}

pub mod runner;
pub mod stats;
pub mod webhook;

#[cfg(test)]
mod tests;
