use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::crd::StatisticalGate;

/// A log-normal sample around `median` with spread `sigma` (Box-Muller), like per-interval
/// latencies.
fn lognormal(rng: &mut StdRng, n: usize, median: f64, sigma: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            median * (sigma * z).exp()
        })
        .collect()
}

const CONFIDENCE: f64 = 0.98;
const TOLERANCE: f64 = 0.25;

#[test]
fn median_and_hodges_lehmann_of_small_samples() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    // Differences 10-1, 10-2, 20-1, 20-2 = 9, 8, 19, 18: median 13.5.
    assert_eq!(hodges_lehmann(&[10.0, 20.0], &[1.0, 2.0]), Some(13.5));
    assert_eq!(hodges_lehmann(&[], &[1.0]), None);
}

#[test]
fn mann_whitney_matches_the_normal_approximation_worked_by_hand() {
    // U = 9 of 9, mean 4.5, variance 3·3·7/12 = 5.25, z = (9 − 4.5 − 0.5)/√5.25 = 1.7457,
    // P(Z > z) = 0.04043 (scipy's mannwhitneyu, asymptotic, greater, with continuity).
    let p = mann_whitney_greater(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]).expect("p");
    assert!((p - 0.04043).abs() < 2e-4, "{p}");
    let reverse = mann_whitney_greater(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).expect("p");
    assert!(reverse > 0.98, "{reverse}");
    // Ties: every value equal gives no evidence.
    assert_eq!(mann_whitney_greater(&[1.0; 10], &[1.0; 10]), Some(1.0));
    assert_eq!(mann_whitney_greater(&[], &[1.0]), None);
}

#[test]
fn mann_whitney_handles_ties_with_mid_ranks() {
    // x = [2, 2, 3], y = [1, 2, 2]: ranks 1 (y), 3.5 for each of the four 2s, 6 (x).
    // R_x = 3.5 + 3.5 + 6 = 13, U = 13 − 6 = 7, ties 4³ − 4 = 60,
    // variance = 9/12 · (7 − 60/30) = 3.75, z = (7 − 4.5 − 0.5)/√3.75 = 1.0328,
    // P(Z > z) = 0.15085 (without the tie correction it would be 0.1914).
    let p = mann_whitney_greater(&[2.0, 2.0, 3.0], &[1.0, 2.0, 2.0]).expect("p");
    assert!((p - 0.15085).abs() < 2e-4, "{p}");
}

/// Identical distributions: over many seeded runs the test alone rejects at about its level,
/// and the judge (test and band) fails at most 2 % of them at 0.98.
#[test]
fn identical_distributions_fail_at_most_two_percent_of_seeded_runs() {
    let runs = 2_000;
    let (mut rejected, mut failed) = (0, 0);
    for seed in 0..runs {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = lognormal(&mut rng, 10, 50.0, 0.3);
        let b = lognormal(&mut rng, 10, 50.0, 0.3);
        let c = compare(&a, &b, CONFIDENCE, TOLERANCE, Effect::MedianShift).expect("comparison");
        rejected += u32::from(c.p_value < 1.0 - CONFIDENCE);
        failed += u32::from(c.worse);
    }
    let rejected = f64::from(rejected) / f64::from(u32::try_from(runs).unwrap_or(1));
    let failed = f64::from(failed) / f64::from(u32::try_from(runs).unwrap_or(1));
    println!("identical: test rejects {rejected:.4}, judge fails {failed:.4} of {runs} runs");
    // The test is calibrated: near its 2 % level (binomial sd ≈ 0.3 % over 2000 runs).
    assert!((0.005..=0.03).contains(&rejected), "{rejected}");
    assert!(failed <= 0.02, "{failed}");
}

/// `runs` seeded comparisons of 20 per-interval latencies with a 5 % spread: a baseline around
/// 50 ms against a release around `slower_ms`.
fn seeded_runs(first_seed: u64, runs: u64, slower_ms: f64) -> Vec<Comparison> {
    (first_seed..first_seed + runs)
        .map(|seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let baseline = lognormal(&mut rng, 20, 50.0, 0.05);
            let slower = lognormal(&mut rng, 20, slower_ms, 0.05);
            compare(
                &slower,
                &baseline,
                CONFIDENCE,
                TOLERANCE,
                Effect::MedianShift,
            )
            .expect("comparison")
        })
        .collect()
}

/// A 30 % regression of per-interval latency fails nearly always.
#[test]
fn a_thirty_percent_latency_regression_fails() {
    let runs = seeded_runs(10_000, 500, 65.0);
    let failed = runs.iter().filter(|c| c.worse).count();
    println!(
        "30 % regression: judge fails {failed} of {} runs",
        runs.len()
    );
    assert!(failed >= 490, "{failed} of {}", runs.len());
}

/// A 5 % regression is significant, but inside the ±25 % band it passes.
#[test]
fn a_tiny_regression_inside_the_band_passes() {
    let runs = seeded_runs(20_000, 500, 52.5);
    let significant = runs.iter().filter(|c| c.p_value < 1.0 - CONFIDENCE).count();
    let failed = runs.iter().filter(|c| c.worse).count();
    println!(
        "5 % regression: significant in {significant}, judge fails {failed} of {}",
        runs.len()
    );
    assert!(
        significant > 250,
        "the test alone sees it in most runs: {significant}"
    );
    assert_eq!(failed, 0);
}

/// Only worse fails: a faster release passes however significant.
#[test]
fn a_faster_release_passes() {
    let mut rng = StdRng::seed_from_u64(7);
    let baseline = lognormal(&mut rng, 20, 50.0, 0.05);
    let faster = lognormal(&mut rng, 20, 25.0, 0.05);
    let c = compare(
        &faster,
        &baseline,
        CONFIDENCE,
        TOLERANCE,
        Effect::MedianShift,
    )
    .expect("comparison");
    assert!(!c.worse, "{c:?}");
    assert!(c.p_value > 0.99 && c.shift < 0.0, "{c:?}");
}

/// A window of `requests` answered in `latency_ms` each (all in one bucket of a doubling
/// histogram from 1 ms), `errors` of them 5xx.
fn window(requests: f64, errors: f64, latency_ms: f64) -> Window {
    let mut buckets = Vec::new();
    let mut le = 0.001;
    while le < 10.0 {
        buckets.push((
            le,
            if latency_ms / 1000.0 <= le {
                requests
            } else {
                0.0
            },
        ));
        le *= 2.0;
    }
    buckets.push((f64::INFINITY, requests));
    Window {
        requests,
        errors,
        latency_buckets: buckets,
        latency_sum: requests * latency_ms / 1000.0,
        ..Window::default()
    }
}

#[test]
fn metric_values_of_a_window() {
    let w = window(100.0, 2.0, 50.0);
    let mean = metric_value(StatMetric::MeanLatency, &w, 10.0).expect("mean");
    assert!((mean - 50.0).abs() < 1e-9, "{mean}");
    // 50 ms lies in (32, 64]: p99 interpolates to 32 + 32 · 0.99.
    let p99 = metric_value(StatMetric::P99Latency, &w, 10.0).expect("p99");
    assert!((p99 - (32.0 + 32.0 * 0.99)).abs() < 1e-6, "{p99}");
    assert_eq!(metric_value(StatMetric::ErrorRate, &w, 10.0), Some(0.02));
    // No data: too few requests, no finished saga.
    assert_eq!(metric_value(StatMetric::MeanLatency, &w, 200.0), None);
    assert_eq!(
        metric_value(StatMetric::SagaCompensationRate, &w, 10.0),
        None
    );
    let mut sagas = w.clone();
    sagas.sagas.insert("completed".into(), 9.0);
    sagas.sagas.insert("compensated".into(), 1.0);
    assert_eq!(
        metric_value(StatMetric::SagaCompensationRate, &sagas, 10.0),
        Some(0.1)
    );
}

fn spec(metrics: &[(StatMetric, NoDataPolicy)]) -> StatisticalGate {
    StatisticalGate {
        min_samples: 5,
        metrics: metrics
            .iter()
            .map(|(name, no_data)| StatisticalMetric {
                name: *name,
                no_data: *no_data,
            })
            .collect(),
        ..StatisticalGate::default()
    }
}

#[test]
fn the_judge_fails_a_slower_colour_and_reports_every_figure() {
    let mut judge = Judge::new(spec(&[
        (StatMetric::MeanLatency, NoDataPolicy::Pass),
        (StatMetric::ErrorRate, NoDataPolicy::Pass),
    ]));
    for i in 0..8 {
        let jitter = f64::from(i) * 0.5;
        judge.add(
            &window(100.0, 0.0, 65.0 + jitter),
            &window(100.0, 0.0, 50.0 + jitter),
            10.0,
        );
    }
    let Decision::Fail(reason) = judge.decide(8, 3) else {
        panic!("expected a failure: {:?}", judge.status());
    };
    assert!(reason.contains("meanLatency worse"), "{reason}");
    assert!(!reason.contains("errorRate"), "{reason}");
    let status = judge.status();
    let mean = status
        .iter()
        .find(|m| m.metric == "meanLatency")
        .expect("meanLatency");
    assert_eq!(mean.verdict, MetricVerdict::Failed);
    assert_eq!((mean.under_test_samples, mean.baseline_samples), (8, 8));
    assert!(mean.p_value.is_some_and(|p| p < 0.02), "{mean:?}");
    assert!(
        mean.shift.is_some_and(|s| (s - 15.0).abs() < 1e-6),
        "{mean:?}"
    );
    assert!(mean.shift_percent.is_some_and(|s| s > 25.0), "{mean:?}");
    // The band: 25 % of the baseline median (51.75 ms).
    assert!(
        mean.band.is_some_and(|b| (b - 12.9375).abs() < 1e-6),
        "{mean:?}"
    );
    let errors = status
        .iter()
        .find(|m| m.metric == "errorRate")
        .expect("errorRate");
    assert_eq!(errors.verdict, MetricVerdict::Passed);
    assert_eq!(errors.p_value, Some(1.0), "all zero: no evidence");
    // Decided once: more samples change nothing.
    judge.add(&window(100.0, 0.0, 50.0), &window(100.0, 0.0, 50.0), 10.0);
    assert!(matches!(judge.decide(8, 3), Decision::Fail(_)));
    assert_eq!(judge.status(), status);
}

#[test]
fn identical_colours_pass() {
    let mut judge = Judge::new(StatisticalGate {
        min_samples: 5,
        ..StatisticalGate::default()
    });
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..10 {
        let a = 50.0 * (1.0 + 0.05 * (rng.random::<f64>() - 0.5));
        let b = 50.0 * (1.0 + 0.05 * (rng.random::<f64>() - 0.5));
        judge.add(&window(100.0, 0.0, a), &window(100.0, 0.0, b), 10.0);
    }
    assert_eq!(
        judge.decide(11, 0),
        Decision::Wait,
        "fewer intervals than asked for"
    );
    assert_eq!(judge.decide(10, 0), Decision::Pass);
    let saga = judge
        .status()
        .into_iter()
        .find(|m| m.metric == "sagaCompensationRate")
        .expect("saga metric");
    assert_eq!(saga.verdict, MetricVerdict::NoData, "no saga finished");
}

#[test]
fn no_data_policies_pass_fail_or_wait_a_bounded_time() {
    let quiet = window(1.0, 0.0, 50.0);
    let policy = |no_data| {
        let mut judge = Judge::new(spec(&[(StatMetric::MeanLatency, no_data)]));
        for _ in 0..10 {
            judge.add(&quiet, &quiet, 10.0);
        }
        judge
    };
    assert_eq!(policy(NoDataPolicy::Pass).decide(10, 5), Decision::Pass);
    let Decision::Fail(reason) = policy(NoDataPolicy::Fail).decide(10, 5) else {
        panic!("noData: Fail fails");
    };
    assert!(
        reason.contains("meanLatency has 0 of minSamples 5"),
        "{reason}"
    );
    let mut waiting = policy(NoDataPolicy::Wait);
    for _ in 0..2 {
        assert_eq!(waiting.decide(10, 2), Decision::Wait);
    }
    assert!(matches!(waiting.decide(10, 2), Decision::Fail(_)));
    // Samples that arrive while waiting let the metric be compared.
    let mut recovering = policy(NoDataPolicy::Wait);
    assert_eq!(recovering.decide(10, 10), Decision::Wait);
    for _ in 0..5 {
        recovering.add(&window(100.0, 0.0, 50.0), &window(100.0, 0.0, 50.0), 10.0);
    }
    assert_eq!(recovering.decide(10, 10), Decision::Pass);
}

/// Rates: a mostly-zero error rate that rises in some intervals fails (medians would say 0
/// and 0), and one stray error over a clean baseline passes (the band's floor).
#[test]
fn rates_compare_their_means_with_a_floor_under_the_band() {
    let baseline = vec![0.0; 20];
    let mut bursty = vec![0.0; 20];
    for v in bursty.iter_mut().take(8) {
        *v = 0.5;
    }
    let effect = StatMetric::ErrorRate.effect();
    let c = compare(&bursty, &baseline, CONFIDENCE, TOLERANCE, effect).expect("comparison");
    assert!(c.worse, "{c:?}");
    assert!((c.shift - 0.2).abs() < 1e-12, "{c:?}");
    let mut stray = vec![0.0; 20];
    stray[3] = 0.0005;
    stray[9] = 0.0004;
    stray[15] = 0.0006;
    let c = compare(&stray, &baseline, CONFIDENCE, TOLERANCE, effect).expect("comparison");
    assert!(!c.worse, "within the 0.1 point floor: {c:?}");
    assert_eq!(c.band, RATE_BAND_FLOOR);
    assert_eq!(c.shift_percent(), None, "no percent of a zero baseline");
}

#[test]
fn a_judge_without_the_other_colours_windows_decides_by_its_no_data_policies() {
    let mut passing = Judge::new(spec(&[(StatMetric::MeanLatency, NoDataPolicy::Pass)]));
    let mut failing = Judge::new(spec(&[(StatMetric::MeanLatency, NoDataPolicy::Fail)]));
    for _ in 0..10 {
        passing.missed();
        failing.missed();
    }
    assert_eq!(passing.decide(10, 0), Decision::Pass);
    assert!(matches!(failing.decide(10, 0), Decision::Fail(_)));
}

#[test]
fn rounding_keeps_six_significant_digits() {
    assert!(round(1e-310).is_finite() && round(f64::NAN) == 0.0 && round(f64::INFINITY) == 0.0);
    assert_eq!(round(0.0), 0.0);
    assert_eq!(round(123.456_789_1), 123.457);
    assert_eq!(round(0.000_123_456_78), 0.000_123_457);
}
