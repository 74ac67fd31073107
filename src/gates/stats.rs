//! The statistical judge, pure: the pods under test against the colour they are compared
//! with, over samples of the same time.
//!
//! Every scrape interval gives, per [`StatMetric`], one value from the pods under test and one
//! from the other colour ([`metric_value`] of each [`Window`]); a [`Judge`] collects them and,
//! once the gate's thresholds have their samples, compares every metric once
//! ([`Judge::decide`]): [`mann_whitney_greater`] (a one-sided Mann-Whitney U test, normal
//! approximation with tie and continuity corrections) says how likely values at least this
//! much higher would be if both colours were alike, and [`hodges_lehmann`] estimates by how
//! much the pods under test are higher. A metric fails only when both say worse: the p-value is
//! below 1 − confidence and the shift is outside the tolerance band around the other colour's
//! median. Comparing once, not after every sample, keeps the false-failure rate at the
//! confidence asked for.
//!
//! May use: [`super::Window`] and [`crate::crd`] only.

use std::collections::BTreeMap;

use super::Window;
use crate::crd::{
    MetricJudgement, MetricVerdict, NoDataPolicy, StatMetric, StatisticalGate, StatisticalMetric,
};

/// Samples kept per metric and colour (the first ones): far more than a fair comparison
/// needs, and it bounds the O(n·m) shift estimate (250,000 differences at most, computed once
/// per gate).
pub const MAX_SAMPLES: usize = 500;

/// The least band of a rate metric (error or compensation rate), as a share: 0.1 percentage
/// point, so that a baseline without errors does not make a single error a regression.
pub const RATE_BAND_FLOOR: f64 = 0.001;

/// The median of `values`; `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        Some(f64::midpoint(v[mid - 1], v[mid]))
    } else {
        Some(v[mid])
    }
}

/// Hodges-Lehmann estimate of the shift of `x` over `y`: the median of every difference
/// `x_i − y_j`. `None` when either is empty.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Option<f64> {
    let diffs: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    median(&diffs)
}

/// The standard normal distribution's upper tail, P(Z > z).
fn normal_upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// One-sided Mann-Whitney U test: the p-value of "`x` tends to be greater than `y`", with
/// mid-ranks for ties, the tie-corrected variance and a continuity correction. `None` when
/// either sample is empty; 1 when every value is the same (no evidence either way).
#[allow(clippy::cast_precision_loss)]
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (*v, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let n = nx + ny;
    let mut rank_sum_x = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0.total_cmp(&all[i].0).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let (first, last, t) = ((i + 1) as f64, j as f64, (j - i) as f64);
        let mid_rank = f64::midpoint(first, last);
        rank_sum_x += mid_rank * all[i..j].iter().filter(|(_, from_x)| *from_x).count() as f64;
        ties += t * t * t - t;
        i = j;
    }
    let u = rank_sum_x - nx * (nx + 1.0) / 2.0;
    let mean = nx * ny / 2.0;
    let variance = nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        return Some(1.0);
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    Some(normal_upper_tail(z).clamp(0.0, 1.0))
}

/// How the size of a difference is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// The Hodges-Lehmann shift, relative to the baseline median (latencies).
    MedianShift,
    /// The difference of the means, relative to the baseline mean, with a band of at least
    /// `floor` (rates, mostly zero, where medians say nothing).
    MeanDifference {
        /// Least band, in the metric's unit.
        floor: f64,
    },
}

impl StatMetric {
    /// How this metric's difference is measured.
    pub fn effect(self) -> Effect {
        match self {
            StatMetric::P99Latency | StatMetric::MeanLatency => Effect::MedianShift,
            StatMetric::ErrorRate | StatMetric::SagaCompensationRate => Effect::MeanDifference {
                floor: RATE_BAND_FLOOR,
            },
        }
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    let n = values.len() as f64;
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / n)
}

/// The result of comparing one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// One-sided p-value that the pods under test are worse (higher).
    pub p_value: f64,
    /// The difference, under test minus baseline ([`Effect`]).
    pub shift: f64,
    /// Median of the samples under test.
    pub under_test_median: f64,
    /// Median of the baseline samples.
    pub baseline_median: f64,
    /// What the shift is measured against (the baseline's median or mean).
    pub reference: f64,
    /// The band: a shift up to this passes.
    pub band: f64,
    /// Whether the pods under test are worse: significant and outside the band.
    pub worse: bool,
}

impl Comparison {
    /// The shift in percent of its reference; `None` when that is 0.
    pub fn shift_percent(&self) -> Option<f64> {
        (self.reference != 0.0).then(|| self.shift / self.reference.abs() * 100.0)
    }
}

/// Compares `under_test` with `baseline` (higher is worse): worse when the one-sided p-value
/// is below `1 − confidence` and the shift ([`Effect`]) exceeds `tolerance` (a share, 0.25 =
/// ±25 %) of its reference (and the effect's floor). `None` when either sample is empty.
pub fn compare(
    under_test: &[f64],
    baseline: &[f64],
    confidence: f64,
    tolerance: f64,
    effect: Effect,
) -> Option<Comparison> {
    let p_value = mann_whitney_greater(under_test, baseline)?;
    let under_test_median = median(under_test)?;
    let baseline_median = median(baseline)?;
    let (shift, reference, floor) = match effect {
        Effect::MedianShift => (hodges_lehmann(under_test, baseline)?, baseline_median, 0.0),
        Effect::MeanDifference { floor } => {
            let base = mean(baseline)?;
            (mean(under_test)? - base, base, floor)
        }
    };
    let band = (tolerance * reference.abs()).max(floor);
    Some(Comparison {
        p_value,
        shift,
        under_test_median,
        baseline_median,
        reference,
        band,
        worse: p_value < 1.0 - confidence && shift > band,
    })
}

/// The value of `metric` in one window; `None` when the window has no data for it (fewer than
/// `min_requests` requests, or no finished saga for the compensation rate).
pub fn metric_value(metric: StatMetric, window: &Window, min_requests: f64) -> Option<f64> {
    let enough = window.requests >= min_requests.max(1.0);
    match metric {
        StatMetric::P99Latency if enough => window.quantile_ms(0.99),
        StatMetric::MeanLatency if enough => window.mean_ms(),
        StatMetric::ErrorRate if enough => Some(window.error_rate()),
        StatMetric::SagaCompensationRate if window.sagas_finished() > 0.0 => {
            Some(window.compensation_rate())
        }
        _ => None,
    }
    .filter(|v| v.is_finite())
}

/// What the judge says once asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep sampling (a metric with `noData: Wait` is short of samples).
    Wait,
    /// No metric is worse.
    Pass,
    /// These metrics are worse, or short of samples under `noData: Fail`.
    Fail(String),
}

/// The samples of a statistical judgement and, once decided, its per-metric results.
#[derive(Debug, Clone, PartialEq)]
pub struct Judge {
    spec: StatisticalGate,
    samples: BTreeMap<StatMetric, (Vec<f64>, Vec<f64>)>,
    results: BTreeMap<StatMetric, (MetricVerdict, Option<Comparison>)>,
    rounds: i32,
    waited: i32,
    decision: Option<Decision>,
}

impl Judge {
    /// A judge of `spec` without samples.
    pub fn new(spec: StatisticalGate) -> Self {
        Self {
            samples: spec
                .metrics
                .iter()
                .map(|m| (m.name, (Vec::new(), Vec::new())))
                .collect(),
            spec,
            results: BTreeMap::new(),
            rounds: 0,
            waited: 0,
            decision: None,
        }
    }

    /// Counts an interval in which the colour compared with gave no window (its pods not
    /// ready, or not answering): no samples, but the interval counts, so the metrics' `noData`
    /// policies decide rather than the judge waiting for ever.
    pub fn missed(&mut self) {
        if self.decision.is_none() {
            self.rounds = self.rounds.saturating_add(1);
        }
    }

    /// Adds one interval: a sample per metric that both windows have data for.
    pub fn add(&mut self, under_test: &Window, baseline: &Window, min_requests: f64) {
        if self.decision.is_some() {
            return;
        }
        self.rounds = self.rounds.saturating_add(1);
        for (metric, (mine, theirs)) in &mut self.samples {
            if let (Some(a), Some(b)) = (
                metric_value(*metric, under_test, min_requests),
                metric_value(*metric, baseline, min_requests),
            ) && mine.len() < MAX_SAMPLES
            {
                mine.push(a);
                theirs.push(b);
            }
        }
    }

    fn metric(&self, name: StatMetric) -> Option<&StatisticalMetric> {
        self.spec.metrics.iter().find(|m| m.name == name)
    }

    /// Intervals added (both colours scraped).
    pub fn rounds(&self) -> i32 {
        self.rounds
    }

    /// Compares every metric, once: called when the gate's thresholds have their samples.
    /// Waits until the judge itself has seen `rounds` intervals and `minSamples` (so after an
    /// operator restart, which starts a judge afresh, it never decides on fewer), then while
    /// a metric with `noData: Wait` is short, at most `wait_limit` more times (the gate's
    /// `inconclusiveLimit`). After a `Pass` or `Fail`, asking again gives the same answer.
    pub fn decide(&mut self, rounds: i32, wait_limit: i32) -> Decision {
        if let Some(done) = &self.decision {
            return done.clone();
        }
        if self.rounds < rounds.max(self.spec.min_samples) {
            return Decision::Wait;
        }
        let min = usize::try_from(self.spec.min_samples.max(1)).unwrap_or(1);
        let short: Vec<StatMetric> = self
            .samples
            .iter()
            .filter(|(_, (mine, _))| mine.len() < min)
            .map(|(m, _)| *m)
            .collect();
        let waiting = short.iter().any(|m| {
            self.metric(*m)
                .is_some_and(|s| s.no_data == NoDataPolicy::Wait)
        });
        if waiting && self.waited < wait_limit {
            self.waited += 1;
            return Decision::Wait;
        }
        let confidence = f64::from(self.spec.confidence_basis_points) / 10_000.0;
        let tolerance = f64::from(self.spec.tolerance_percent) / 100.0;
        let mut failures = Vec::new();
        for (metric, (mine, theirs)) in &self.samples {
            let name = metric.name();
            if mine.len() < min {
                let policy = self
                    .metric(*metric)
                    .map_or(NoDataPolicy::Pass, |m| m.no_data);
                if policy != NoDataPolicy::Pass {
                    failures.push(format!(
                        "{name} has {} of minSamples {min} samples (noData: {policy:?})",
                        mine.len()
                    ));
                }
                self.results.insert(*metric, (MetricVerdict::NoData, None));
                continue;
            }
            let Some(c) = compare(mine, theirs, confidence, tolerance, metric.effect()) else {
                continue;
            };
            let verdict = if c.worse {
                failures.push(format!(
                    "{name} worse than the other colour: median {:.4} vs {:.4}, shift {:+.4}{} beyond the band {:.4} (±{}%), p={:.4} < {:.4}",
                    c.under_test_median,
                    c.baseline_median,
                    c.shift,
                    c.shift_percent()
                        .map_or(String::new(), |p| format!(" ({p:+.1}%)")),
                    c.band,
                    self.spec.tolerance_percent,
                    c.p_value,
                    1.0 - confidence
                ));
                MetricVerdict::Failed
            } else {
                MetricVerdict::Passed
            };
            self.results.insert(*metric, (verdict, Some(c)));
        }
        let decision = if failures.is_empty() {
            Decision::Pass
        } else {
            Decision::Fail(format!("statistical judge: {}", failures.join("; ")))
        };
        self.decision = Some(decision.clone());
        decision
    }

    /// The judgement so far, as status shows it.
    pub fn status(&self) -> Vec<MetricJudgement> {
        self.samples
            .iter()
            .map(|(metric, (mine, theirs))| {
                let (verdict, comparison) = self
                    .results
                    .get(metric)
                    .cloned()
                    .unwrap_or((MetricVerdict::Pending, None));
                MetricJudgement {
                    metric: metric.name().to_owned(),
                    verdict,
                    under_test_samples: i32::try_from(mine.len()).unwrap_or(i32::MAX),
                    baseline_samples: i32::try_from(theirs.len()).unwrap_or(i32::MAX),
                    under_test_median: median(mine).map(round),
                    baseline_median: median(theirs).map(round),
                    p_value: comparison.as_ref().map(|c| round(c.p_value)),
                    shift: comparison.as_ref().map(|c| round(c.shift)),
                    band: comparison.as_ref().map(|c| round(c.band)),
                    shift_percent: comparison
                        .as_ref()
                        .and_then(Comparison::shift_percent)
                        .map(round),
                }
            })
            .collect()
    }
}

/// Six significant digits: enough for status, and stable across re-serialisation. NB: never
/// NaN or infinite (status holds neither, and a value that does not survive a round trip
/// would make every reconcile write status again); values too small to scale are 0.
fn round(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() { v } else { 0.0 };
    }
    let digits = 6.0 - v.abs().log10().ceil();
    let scale = 10f64.powf(digits);
    let rounded = (v * scale).round() / scale;
    if rounded.is_finite() { rounded } else { 0.0 }
}

#[cfg(test)]
mod tests;
