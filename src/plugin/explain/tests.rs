//! The `explain` view from cutover fixtures: each verdict of a gate and of a statistical
//! metric, the waits of `AwaitingPromotion`, and objects without (parts of) a cutover record.

use serde_json::{Value, json};

use super::*;

const NEW: &str = "bbbbbbbbbbbbbbbb";
const OLD: &str = "aaaaaaaaaaaaaaaa";

/// A RelayerDeployment with `blue_green` as its strategy and `rollout` as its cutover record
/// (`Value::Null`: none), blue active on revision #1 and #2 coming in.
fn rd(blue_green: Value, rollout: Value) -> RelayerDeployment {
    let mut status = json!({
        "observedGeneration": 2, "phase": "Progressing", "activeColor": "blue",
        "revisionHistory": [
            { "revision": NEW, "number": 2, "image": "relayer:2" },
            { "revision": OLD, "number": 1, "image": "relayer:1" },
        ],
    });
    if !rollout.is_null() {
        status["rollout"] = rollout;
    }
    serde_json::from_value(json!({
        "apiVersion": "relayer.foresight.dev/v1alpha1", "kind": "RelayerDeployment",
        "metadata": { "name": "market", "namespace": "trading", "generation": 2 },
        "spec": { "image": "relayer:2", "strategy": { "blueGreen": blue_green } },
        "status": status,
    }))
    .expect("fixture")
}

/// A pre-promotion gate of 12 samples with a p99 limit and the statistical judge at its
/// defaults (0.98, ±25 %, 10 samples) on three metrics.
fn statistical_gate() -> Value {
    json!({
        "samples": 12, "maxP99LatencyMs": 1000,
        "statistical": { "metrics": [
            { "name": "MeanLatency" }, { "name": "ErrorRate" },
            { "name": "SagaCompensationRate" },
        ] },
    })
}

fn has(text: &str, expected: &[&str]) {
    for e in expected {
        assert!(text.contains(e), "{e:?} missing in:\n{text}");
    }
}

#[test]
fn a_failed_statistical_gate_names_the_worse_metric_with_its_numbers() {
    let reason = "statistical judge: meanLatency worse than the other colour: median 131.700 \
                  vs 101.700, shift +30.000 (+29.5%) beyond ±25%, p=0.0000 < 0.0200";
    let object = rd(
        json!({ "prePromotion": statistical_gate() }),
        json!({
            "step": "Aborted", "activeRevision": OLD, "targetRevision": NEW,
            "stepStartedMs": 100_000,
            "abortReason": format!("prePromotion failed: {reason}"),
            "failedGate": "prePromotion",
            "gates": [{
                "name": "prePromotion", "revision": NEW, "verdict": "Failed",
                "samples": 12, "passed": 12, "failed": 0, "inconclusive": 0, "scrapeErrors": 0,
                "reason": reason, "lastValues": "requests=400 errorRate=0.00% p99=240.0ms",
                "statistics": [
                    { "metric": "meanLatency", "verdict": "Failed",
                      "underTestSamples": 12, "baselineSamples": 12,
                      "underTestMedian": 131.7, "baselineMedian": 101.7,
                      "pValue": 0.0000213, "shift": 30.0, "shiftPercent": 29.5 },
                    { "metric": "errorRate", "verdict": "Passed",
                      "underTestSamples": 12, "baselineSamples": 12,
                      "underTestMedian": 0.0, "baselineMedian": 0.0,
                      "pValue": 1.0, "shift": 0.0 },
                    { "metric": "sagaCompensationRate", "verdict": "NoData",
                      "underTestSamples": 0, "baselineSamples": 0 },
                ],
            }],
        }),
    );
    let text = explain(&object, 130_000);
    has(
        &text,
        &[
            "RelayerDeployment trading/market",
            "Step:         Aborted for 30s",
            "Under test:   revision bbbbbbbbbb (#2), aborted",
            "(gate prePromotion)",
            "Waiting for:  nothing: traffic stays on the last good colour; kubectl relayer retry \
             market starts this cutover again",
            "Gate prePromotion: Failed, revision bbbbbbbbbb (#2)",
            &format!("why:          {reason}"),
            "12 samples: 12 passed, 0 failed (failureLimit 0)",
            "thresholds:   maxP99LatencyMs 1000",
            "statistical:  confidenceBasisPoints 9800 (fails below p 0.02), tolerancePercent 25",
            "last values:  requests=400 errorRate=0.00% p99=240.0ms",
            "meanLatency: FAILED — under test median 131.7 ms vs 101.7 ms, shift +30.0 ms \
             (+29.5 %), p=0.000021 < 0.02 and shift outside ±25 %",
            "errorRate: passed — p=1.0000 ≥ 0.02",
            "sagaCompensationRate: no data (policy Pass) — 0 of minSamples 10 samples",
        ],
    );
    assert!(!text.contains("judged under other"), "{text}");
}

#[test]
fn a_passed_threshold_gate_says_how_many_samples_passed_within_the_failure_limit() {
    let gate = json!({
        "samples": 12, "failureLimit": 1, "maxErrorRateBasisPoints": 100, "maxP99LatencyMs": 500,
    });
    let object = rd(
        json!({ "prePromotion": { "samples": 6 }, "postPromotion": gate }),
        json!({
            "step": "ScalingDown", "activeRevision": NEW, "otherRevision": OLD,
            "targetRevision": NEW, "stepStartedMs": 100_000,
            "scaleDown": "waiting for blue to drain",
            "gates": [
                { "name": "prePromotion", "revision": NEW, "verdict": "Passed",
                  "samples": 6, "passed": 6, "failed": 0, "inconclusive": 0, "scrapeErrors": 0 },
                { "name": "postPromotion", "revision": NEW, "verdict": "Passed",
                  "samples": 12, "passed": 11, "failed": 1, "inconclusive": 0,
                  "scrapeErrors": 1, "lastValues": "requests=120 errorRate=0.00% p99=4.0ms" },
            ],
        }),
    );
    let text = explain(&object, 105_000);
    has(
        &text,
        &[
            "Under test:   revision bbbbbbbbbb (#2) on blue (active)",
            "Waiting for:  the scale-down: waiting for blue to drain",
            "Gate prePromotion: Passed",
            "6 of 6 samples passed (failureLimit 0)",
            "Gate postPromotion: Passed",
            "11 of 12 samples passed (failureLimit 1); 1 scrape errors of scrapeErrorLimit 3",
            "thresholds:   maxErrorRateBasisPoints 100 (1.00 %), maxP99LatencyMs 500",
            "settings:     samples 12, failureLimit 1, minRequests 100, inconclusive Wait \
             (inconclusiveLimit 30), scrapeErrorLimit 3, intervalMs 10000",
            "last values:  requests=120 errorRate=0.00% p99=4.0ms",
        ],
    );
    assert!(
        !text.contains("statistics:"),
        "no judge, no metrics: {text}"
    );
}

#[test]
fn a_running_gate_says_how_many_more_samples_it_needs_and_how_close_each_limit_is() {
    let object = rd(
        json!({ "prePromotion": { "samples": 12, "failureLimit": 2 } }),
        json!({
            "step": "PrePromotion", "activeRevision": OLD, "otherRevision": NEW,
            "targetRevision": NEW, "stepStartedMs": 100_000,
            "gates": [{ "name": "prePromotion", "revision": NEW, "verdict": "Running",
                        "samples": 11, "passed": 8, "failed": 1, "inconclusive": 2,
                        "scrapeErrors": 0, "lastValues": "requests=40" }],
        }),
    );
    let text = explain(&object, 100_000 + 200_000);
    has(
        &text,
        &[
            "Step:         PrePromotion for 3m 20s",
            "Under test:   revision bbbbbbbbbb (#2) on green (preview)",
            "Paused:       no",
            "Waiting for:  the prePromotion gate (below)",
            "Gate prePromotion: Running",
            "3 more samples of 12; 2 inconclusive of inconclusiveLimit 30; 1 failed of \
             failureLimit 2; 0 scrape errors of scrapeErrorLimit 3",
            "a sample is conclusive with at least minRequests 100 requests (policy Wait)",
        ],
    );
}

#[test]
fn a_gate_whose_thresholds_passed_is_held_for_the_statistical_judge() {
    let mut gate = statistical_gate();
    gate["samples"] = json!(6);
    gate["statistical"]["metrics"][1]["noData"] = json!("Wait");
    let object = rd(
        json!({ "prePromotion": gate }),
        json!({
            "step": "PrePromotion", "activeRevision": OLD, "otherRevision": NEW,
            "targetRevision": NEW, "stepStartedMs": 100_000,
            "gates": [{
                "name": "prePromotion", "revision": NEW, "verdict": "Running",
                "samples": 7, "passed": 7, "failed": 0, "inconclusive": 0, "scrapeErrors": 0,
                "statistics": [
                    { "metric": "meanLatency", "verdict": "Pending",
                      "underTestSamples": 7, "baselineSamples": 7,
                      "underTestMedian": 101.2, "baselineMedian": 99.0 },
                    { "metric": "errorRate", "verdict": "Pending",
                      "underTestSamples": 3, "baselineSamples": 3 },
                    { "metric": "sagaCompensationRate", "verdict": "Pending",
                      "underTestSamples": 0, "baselineSamples": 0 },
                ],
            }],
        }),
    );
    let text = explain(&object, 170_000);
    has(
        &text,
        &[
            "Gate prePromotion: Running",
            "thresholds passed (7 of 7 samples passed, failureLimit 0); waiting for the \
             statistical judge",
            "after 10 intervals of both colours (max of samples 6 and minSamples 10)",
            "errorRate short of minSamples 10 with noData Wait: the judge waits for them at most \
             inconclusiveLimit 30 more intervals",
            "meanLatency: pending — 7 of minSamples 10 samples; so far under test median \
             101.2 ms vs 99.0 ms",
            "errorRate: pending — 3 of minSamples 10 samples",
        ],
    );
    assert!(!text.contains("more samples of"), "{text}");
}

#[test]
fn a_gate_held_by_a_webhook_names_it_and_its_last_answer() {
    let object = rd(
        json!({ "prePromotion": { "samples": 6, "webhooks": [
            { "name": "approve", "url": "http://10.0.0.5:8080/approve" },
            { "name": "smoke", "url": "http://10.0.0.6/smoke", "retries": 4 },
        ] } }),
        json!({
            "step": "PrePromotion", "activeRevision": OLD, "otherRevision": NEW,
            "targetRevision": NEW, "stepStartedMs": 100_000,
            "gates": [{
                "name": "prePromotion", "revision": NEW, "verdict": "Running",
                "samples": 9, "passed": 9, "failed": 0, "inconclusive": 0, "scrapeErrors": 0,
                "webhooks": [
                    { "name": "approve", "verdict": "Held", "calls": 3,
                      "lastAnswer": "HTTP 423 (hold)" },
                    { "name": "smoke", "verdict": "Passed", "calls": 1, "lastAnswer": "2xx" },
                ],
            }],
        }),
    );
    has(
        &explain(&object, 190_000),
        &[
            "thresholds passed (9 of 9 samples passed, failureLimit 0); waiting for the \
             webhooks: approve (asked every 10000 ms)",
            "webhooks:     approve (http://10.0.0.5:8080/approve, timeoutSeconds 5, retries 2), \
             smoke (http://10.0.0.6/smoke, timeoutSeconds 5, retries 4)",
            "approve: held — HTTP 423 (hold) after 3 calls: the gate and the cutover wait, \
             asked again every 10000 ms (an abort command ends the wait)",
            "smoke: passed — 2xx after 1 call",
        ],
    );
}

#[test]
fn awaiting_promotion_counts_down_the_automatic_pause() {
    let object = rd(
        json!({ "autoPromotionSeconds": 60, "prePromotion": { "samples": 6 } }),
        json!({
            "step": "AwaitingPromotion", "activeRevision": OLD, "otherRevision": NEW,
            "targetRevision": NEW, "stepStartedMs": 100_000,
            "gates": [{ "name": "prePromotion", "revision": NEW, "verdict": "Passed",
                        "samples": 6, "passed": 6, "failed": 0, "inconclusive": 0,
                        "scrapeErrors": 0 }],
        }),
    );
    let text = explain(&object, 118_500);
    has(
        &text,
        &[
            "Step:         AwaitingPromotion for 18s",
            "Waiting for:  the automatic pause: 42 s of autoPromotionSeconds 60 left, then it \
             promotes (kubectl relayer promote market ends the pause early)",
        ],
    );
    let over = explain(&object, 160_000);
    has(
        &over,
        &["the automatic pause of autoPromotionSeconds 60 is over"],
    );
}

#[test]
fn awaiting_promotion_says_whether_it_waits_for_a_command_or_for_the_preview() {
    let waiting = |blue_green: Value, promote_requested: bool| {
        let object = rd(
            blue_green,
            json!({
                "step": "AwaitingPromotion", "activeRevision": OLD, "otherRevision": NEW,
                "targetRevision": NEW, "stepStartedMs": 100_000,
                "promoteRequested": promote_requested,
            }),
        );
        explanation(&object, 110_000)
            .waiting_for
            .unwrap_or_default()
    };
    assert!(
        waiting(json!({ "autoPromote": false }), false)
            .starts_with("a promote command (autoPromote false): kubectl relayer promote market"),
    );
    assert!(
        waiting(json!({ "autoPromote": false }), true)
            .starts_with("the preview to be available at full size"),
    );
    let paused = waiting(json!({ "autoPromote": false, "paused": true }), false);
    assert!(
        paused.starts_with("a resume (paused; nothing progresses until kubectl relayer resume"),
        "{paused}"
    );
}

#[test]
fn without_a_cutover_record_it_says_no_gate_has_run_and_lists_the_configured_ones() {
    let blue_green = json!({ "prePromotion": { "maxP99LatencyMs": 1000 } });
    let configured = "no cutover has run gates yet; configured gates: prePromotion (6 samples \
                      every 10000 ms; maxP99LatencyMs 1000), postPromotion none";
    let mut object = rd(blue_green.clone(), Value::Null);
    let text = explain(&object, 0);
    has(&text, &["Step:         no cutover record yet", configured]);
    assert!(!text.contains("Gate "), "{text}");
    object.status = None;
    has(
        &explain(&object, 0),
        &["no status yet: is the operator running?", configured],
    );
    let stable = rd(
        blue_green,
        json!({ "step": "Stable", "activeRevision": OLD }),
    );
    has(
        &explain(&stable, 0),
        &["Under test:   none: no cutover in flight", configured],
    );
}

#[test]
fn an_object_from_an_older_operator_is_explained_without_the_fields_it_lacks() {
    // No stepStartedMs, no reason, no statistics' numbers, a gate the spec no longer has.
    let object = rd(
        json!({}),
        json!({
            "step": "Aborted", "activeRevision": OLD,
            "gates": [
                { "name": "prePromotion", "revision": NEW, "verdict": "Failed",
                  "samples": 3, "passed": 0, "failed": 3, "inconclusive": 0, "scrapeErrors": 0,
                  "statistics": [{ "metric": "p99Latency", "verdict": "Failed",
                                   "underTestSamples": 3, "baselineSamples": 2 }] },
            ],
        }),
    );
    let text = explain(&object, 1_000);
    has(
        &text,
        &[
            "Step:         Aborted\n",
            "Under test:   none: no cutover in flight",
            "from the last cutover",
            "spec.strategy.blueGreen.prePromotion is not configured now",
            "failed (no reason recorded)",
            "3 samples: 0 passed, 3 failed, 0 inconclusive, 0 scrape errors\n",
            "p99Latency: FAILED (no numbers recorded)",
        ],
    );
    let document = serde_json::to_value(explanation(&object, 1_000)).expect("serializes");
    assert_eq!(document["gates"][0]["verdict"], "Failed");
    assert_eq!(document["gates"][0]["statistics"][0]["verdict"], "Failed");
}

#[test]
fn a_verdict_the_spec_now_disagrees_with_says_so() {
    let mut gate = statistical_gate();
    gate["statistical"]["tolerancePercent"] = json!(50);
    let object = rd(
        json!({ "prePromotion": gate }),
        json!({
            "step": "Aborted", "activeRevision": OLD, "targetRevision": NEW,
            "gates": [{ "name": "prePromotion", "revision": NEW, "verdict": "Failed",
                        "samples": 12, "passed": 12, "failed": 0, "inconclusive": 0,
                        "scrapeErrors": 0,
                        "statistics": [{ "metric": "meanLatency", "verdict": "Failed",
                                         "underTestSamples": 12, "baselineSamples": 12,
                                         "underTestMedian": 131.7, "baselineMedian": 101.7,
                                         "pValue": 0.001, "shift": 30.0,
                                         "shiftPercent": 29.5 }] }],
        }),
    );
    has(
        &explain(&object, 0),
        &[
            "p=0.0010 < 0.02 and shift within ±50 % (judged under other statistical settings \
             than the spec's now)",
        ],
    );
}

#[test]
fn a_passed_metric_that_is_significant_but_within_the_band_says_both() {
    let object = rd(
        json!({ "prePromotion": statistical_gate() }),
        json!({
            "step": "AwaitingPromotion", "activeRevision": OLD, "otherRevision": NEW,
            "targetRevision": NEW,
            "gates": [{ "name": "prePromotion", "revision": NEW, "verdict": "Passed",
                        "samples": 12, "passed": 12, "failed": 0, "inconclusive": 0,
                        "scrapeErrors": 0,
                        "statistics": [
                            { "metric": "meanLatency", "verdict": "Passed",
                              "underTestSamples": 12, "baselineSamples": 12,
                              "underTestMedian": 105.0, "baselineMedian": 100.0,
                              "pValue": 0.004, "shift": 5.0, "shiftPercent": 5.0 },
                            { "metric": "errorRate", "verdict": "Passed",
                              "underTestSamples": 12, "baselineSamples": 12,
                              "underTestMedian": 0.001, "baselineMedian": 0.004,
                              "pValue": 0.9, "shift": -0.003, "shiftPercent": -75.0 },
                        ] }],
        }),
    );
    has(
        &explain(&object, 0),
        &[
            "12 of 12 samples passed (failureLimit 0)",
            "the statistical judge found no metric worse",
            "meanLatency: passed — p=0.0040 < 0.02 but shift within ±25 %; under test median \
             105.0 ms vs 100.0 ms, shift +5.0 ms (+5.0 %)",
            "errorRate: passed — p=0.9000 ≥ 0.02, shift below −25 % (better: only an increase \
             fails); under test median 0.10 % vs 0.40 %, shift -0.30 percentage points (-75.0 %)",
        ],
    );
}

#[test]
fn p_values_keep_two_significant_digits_when_small() {
    assert_eq!(p_value(1.0), "1.0000");
    assert_eq!(p_value(0.0213), "0.0213");
    assert_eq!(p_value(0.0000213), "0.000021");
    assert_eq!(p_value(0.00002), "0.00002");
    assert_eq!(p_value(0.0001), "0.0001");
    assert_eq!(p_value(3e-12), "3.0e-12");
    assert_eq!(p_value(0.0), "0.0000");
    assert_eq!(p_value(f64::NAN), "NaN");
}

#[test]
fn the_band_the_judge_recorded_decides_even_over_a_zero_baseline() {
    let object = rd(
        json!({ "prePromotion": statistical_gate() }),
        json!({
            "step": "AwaitingPromotion", "activeRevision": OLD, "otherRevision": NEW,
            "targetRevision": NEW,
            "gates": [{ "name": "prePromotion", "revision": NEW, "verdict": "Passed",
                        "samples": 12, "passed": 12, "failed": 0, "inconclusive": 0,
                        "scrapeErrors": 0,
                        "statistics": [
                            { "metric": "errorRate", "verdict": "Passed",
                              "underTestSamples": 12, "baselineSamples": 12,
                              "underTestMedian": 0.0, "baselineMedian": 0.0,
                              "pValue": 0.01, "shift": 0.0005, "band": 0.001 },
                        ] }],
        }),
    );
    let text = explain(&object, 0);
    has(
        &text,
        &["errorRate: passed — p=0.0100 < 0.02 but shift within the band 0.10 % (±25 %)"],
    );
    assert!(!text.contains("other statistical settings"), "{text}");
}
