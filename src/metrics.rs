//! Prometheus metrics of the operator: reconcile counts, durations and errors, API requests,
//! child writes, cutover Events, gate decisions and leadership. One [`Metrics`] lives in the
//! controller's `Context` (and the telemetry server's `Health`); nothing is global.
//!
//! May use: [`crate::Error`] (for its metric labels), [`crate::rollout::GateKind`] (gate
//! names) and [`crate::crd`] (a statistical judgement's figures, metric and event names) only.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Error;
use crate::crd::{MetricJudgement, MetricVerdict, NotificationEvent, StatMetric};
use crate::rollout::GateKind;

/// Cutover Event reasons whose series exist from the start: the ones the chart's alerts and
/// dashboards count (`src/rollout.rs` emits them).
const ZEROED_ROLLOUT_REASONS: [&str; 6] = [
    "CutoverStarted",
    "Promoted",
    "CutoverComplete",
    "Aborted",
    "RolledBack",
    "RollbackRequested",
];

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`Error::metric_label`].
    pub error: String,
}

/// Labels of a request to the Kubernetes API.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method (`GET`, `PATCH`, …); watches are `GET`.
    pub method: String,
}

/// Labels of a write to a child object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Kind of the child.
    pub kind: String,
    /// `apply` or `delete`.
    pub action: String,
}

/// Labels of a cutover Event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// Event reason (`CutoverStarted`, `Promoted`, `Aborted`, `RolledBack`, ...).
    pub reason: String,
}

/// Labels of a gate decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// `prePromotion` or `postPromotion`.
    pub gate: String,
    /// `passed` or `failed`.
    pub verdict: String,
}

/// Labels of one metric of a statistical judgement of one object's gate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatLabels {
    /// `namespace/name` of the RelayerDeployment. NB: not `namespace`, which Prometheus sets
    /// to the scraped target's (the operator's) namespace.
    pub relayerdeployment: String,
    /// `prePromotion` or `postPromotion`.
    pub gate: String,
    /// `p99Latency`, `meanLatency`, `errorRate` or `sagaCompensationRate`.
    pub metric: String,
}

/// Labels of the sample count of one side of a statistical judgement.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatSampleLabels {
    /// `namespace/name` of the RelayerDeployment.
    pub relayerdeployment: String,
    /// `prePromotion` or `postPromotion`.
    pub gate: String,
    /// The metric compared.
    pub metric: String,
    /// `underTest` or `baseline`.
    pub side: String,
}

/// Labels of a statistical verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatVerdictLabels {
    /// `prePromotion` or `postPromotion`.
    pub gate: String,
    /// The metric compared.
    pub metric: String,
    /// `passed`, `failed` or `noData`.
    pub verdict: String,
}

/// Labels of a notification attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `CutoverStarted`, `GateFailed`, `Promoted`, `Aborted`, `RolledBack` or `Stable`.
    pub event: String,
    /// `delivered` or `failed`.
    pub result: String,
}

/// A gauge of a float.
type FloatGauge = Gauge<f64, AtomicU64>;

/// The operator's metrics and the registry that exposes them.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Arc<Registry>,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by error.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// Requests the operator's client sent to the API server, by method.
    pub api_requests: Family<RequestLabels, Counter>,
    /// Writes to child objects, by kind and action.
    pub child_writes: Family<WriteLabels, Counter>,
    /// Status writes.
    pub status_writes: Counter,
    /// 1 while this instance holds the leader Lease.
    pub leader: Gauge,
    /// Cutover Events, by reason (aborts and rollbacks included).
    pub rollout_events: Family<RolloutLabels, Counter>,
    /// Gate decisions, by gate and verdict.
    pub gate_decisions: Family<GateLabels, Counter>,
    /// Gates running now.
    pub gates_running: Gauge,
    /// The last statistical judgement's p-value, per object, gate and metric.
    pub stat_p_value: Family<StatLabels, FloatGauge>,
    /// The last statistical judgement's Hodges-Lehmann shift in percent of the baseline.
    pub stat_shift_percent: Family<StatLabels, FloatGauge>,
    /// The last statistical judgement's sample count, per object, gate, metric and side.
    pub stat_samples: Family<StatSampleLabels, Gauge>,
    /// Statistical verdicts, by gate, metric and verdict.
    pub stat_verdicts: Family<StatVerdictLabels, Counter>,
    /// Notification attempts, by event and result.
    pub notifications: Family<NotificationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("relayer_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        // 0.5 ms .. ~16 s in 16 doubling buckets: reconciles from the cache take about a
        // millisecond, ones that write take tens.
        let duration = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0005, 2.0, 16,
        ));
        let api_requests = Family::<RequestLabels, Counter>::default();
        let child_writes = Family::<WriteLabels, Counter>::default();
        let status_writes = Counter::default();
        let leader = Gauge::default();
        let rollout_events = Family::<RolloutLabels, Counter>::default();
        let gate_decisions = Family::<GateLabels, Counter>::default();
        let gates_running = Gauge::default();
        let stat_p_value = Family::<StatLabels, FloatGauge>::default();
        let stat_shift_percent = Family::<StatLabels, FloatGauge>::default();
        let stat_verdicts = Family::<StatVerdictLabels, Counter>::default();
        let stat_samples = Family::<StatSampleLabels, Gauge>::default();
        let notifications = Family::<NotificationLabels, Counter>::default();
        // NB: these series exist at zero from the start. `increase()` cannot see the first step
        // of a series that appears at 1, so the first failed reconcile or aborted cutover after
        // a restart would escape the chart's alerts.
        for error in Error::METRIC_LABELS {
            drop(failures.get_or_create(&ErrorLabels {
                error: error.to_owned(),
            }));
        }
        for reason in ZEROED_ROLLOUT_REASONS {
            drop(rollout_events.get_or_create(&RolloutLabels {
                reason: reason.to_owned(),
            }));
        }
        for gate in [GateKind::PrePromotion, GateKind::PostPromotion] {
            for verdict in ["passed", "failed"] {
                drop(gate_decisions.get_or_create(&GateLabels {
                    gate: gate.name().to_owned(),
                    verdict: verdict.to_owned(),
                }));
            }
            for metric in StatMetric::ALL {
                for verdict in ["passed", "failed", "noData"] {
                    drop(stat_verdicts.get_or_create(&StatVerdictLabels {
                        gate: gate.name().to_owned(),
                        metric: metric.name().to_owned(),
                        verdict: verdict.to_owned(),
                    }));
                }
            }
        }
        for event in NotificationEvent::ALL {
            for result in ["delivered", "failed"] {
                drop(notifications.get_or_create(&NotificationLabels {
                    event: event.name().to_owned(),
                    result: result.to_owned(),
                }));
            }
        }
        registry.register(
            "rollout_events",
            "Cutover Events, by reason",
            rollout_events.clone(),
        );
        registry.register(
            "gate_decisions",
            "Health gate decisions, by gate and verdict",
            gate_decisions.clone(),
        );
        registry.register(
            "gates_running",
            "Health gates running now",
            gates_running.clone(),
        );
        registry.register(
            "gate_statistic_p_value",
            "One-sided Mann-Whitney U p-value of the last statistical judgement, by object, gate and metric",
            stat_p_value.clone(),
        );
        registry.register(
            "gate_statistic_shift_percent",
            "Hodges-Lehmann shift of the last statistical judgement in percent of the baseline median",
            stat_shift_percent.clone(),
        );
        registry.register(
            "gate_statistic_samples",
            "Samples of the last statistical judgement, by object, gate, metric and side",
            stat_samples.clone(),
        );
        registry.register(
            "gate_statistic_verdicts",
            "Statistical judgements per metric, by gate, metric and verdict",
            stat_verdicts.clone(),
        );
        registry.register(
            "notifications",
            "Notification attempts, by event and result",
            notifications.clone(),
        );
        registry.register("reconcile", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server",
            api_requests.clone(),
        );
        registry.register(
            "child_writes",
            "Writes to child objects",
            child_writes.clone(),
        );
        registry.register("status_writes", "Status writes", status_writes.clone());
        registry.register(
            "leader",
            "1 while this instance holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            api_requests,
            child_writes,
            status_writes,
            leader,
            rollout_events,
            gate_decisions,
            gates_running,
            stat_p_value,
            stat_shift_percent,
            stat_samples,
            stat_verdicts,
            notifications,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }

    /// Counts a write to a child.
    pub fn child_written(&self, kind: &str, action: &str) {
        self.child_writes
            .get_or_create(&WriteLabels {
                kind: kind.to_owned(),
                action: action.to_owned(),
            })
            .inc();
    }

    /// Records a decided statistical judgement of gate `gate` of object `namespace/name`.
    pub fn statistics_decided(
        &self,
        namespace: &str,
        name: &str,
        gate: &str,
        judgements: &[MetricJudgement],
    ) {
        for j in judgements {
            let verdict = match j.verdict {
                MetricVerdict::Pending => continue,
                MetricVerdict::Passed => "passed",
                MetricVerdict::Failed => "failed",
                MetricVerdict::NoData => "noData",
            };
            self.stat_verdicts
                .get_or_create(&StatVerdictLabels {
                    gate: gate.to_owned(),
                    metric: j.metric.clone(),
                    verdict: verdict.to_owned(),
                })
                .inc();
            let labels = StatLabels {
                relayerdeployment: format!("{namespace}/{name}"),
                gate: gate.to_owned(),
                metric: j.metric.clone(),
            };
            if let Some(p) = j.p_value {
                self.stat_p_value.get_or_create(&labels).set(p);
            }
            for (side, count) in [
                ("underTest", j.under_test_samples),
                ("baseline", j.baseline_samples),
            ] {
                self.stat_samples
                    .get_or_create(&StatSampleLabels {
                        relayerdeployment: labels.relayerdeployment.clone(),
                        gate: gate.to_owned(),
                        metric: j.metric.clone(),
                        side: side.to_owned(),
                    })
                    .set(i64::from(count));
            }
            if let Some(shift) = j.shift_percent {
                self.stat_shift_percent.get_or_create(&labels).set(shift);
            }
        }
    }

    /// Counts a notification attempt of `event`.
    pub fn notification_sent(&self, event: &str, delivered: bool) {
        self.notifications
            .get_or_create(&NotificationLabels {
                event: event.to_owned(),
                result: if delivered { "delivered" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_exposed() {
        let metrics = Metrics::default();
        drop(metrics.reconcile_started());
        metrics.reconcile_failed(&Error::InvalidSpec("x".into()));
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains("relayer_operator_reconcile_total 1"),
            "{text}"
        );
        assert!(
            text.contains("relayer_operator_reconcile_errors_total{error=\"invalid_spec\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("relayer_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn a_statistical_judgement_is_exposed_per_metric() {
        let metrics = Metrics::default();
        let judged = |metric: &str, verdict, p_value, shift_percent| MetricJudgement {
            metric: metric.to_owned(),
            verdict,
            p_value,
            shift_percent,
            under_test_samples: 12,
            baseline_samples: 11,
            ..MetricJudgement::default()
        };
        metrics.statistics_decided(
            "prod",
            "market",
            "prePromotion",
            &[
                judged(
                    "meanLatency",
                    MetricVerdict::Failed,
                    Some(0.001),
                    Some(30.5),
                ),
                judged("errorRate", MetricVerdict::Passed, Some(1.0), None),
                judged("sagaCompensationRate", MetricVerdict::NoData, None, None),
            ],
        );
        let text = metrics.encode().expect("encode");
        for series in [
            "relayer_operator_gate_statistic_p_value{relayerdeployment=\"prod/market\",gate=\"prePromotion\",metric=\"meanLatency\"} 0.001",
            "relayer_operator_gate_statistic_shift_percent{relayerdeployment=\"prod/market\",gate=\"prePromotion\",metric=\"meanLatency\"} 30.5",
            "relayer_operator_gate_statistic_verdicts_total{gate=\"prePromotion\",metric=\"meanLatency\",verdict=\"failed\"} 1",
            "relayer_operator_gate_statistic_samples{relayerdeployment=\"prod/market\",gate=\"prePromotion\",metric=\"meanLatency\",side=\"underTest\"} 12",
            "relayer_operator_gate_statistic_verdicts_total{gate=\"prePromotion\",metric=\"sagaCompensationRate\",verdict=\"noData\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing in:\n{text}");
        }
        assert!(
            !text.contains("shift_percent{relayerdeployment=\"prod/market\",gate=\"prePromotion\",metric=\"errorRate\"}"),
            "no shift without a baseline median: {text}"
        );
    }

    #[test]
    fn series_that_alerts_count_exist_at_zero_before_anything_happens() {
        let text = Metrics::default().encode().expect("encode");
        for series in [
            "relayer_operator_reconcile_errors_total{error=\"kube\"} 0",
            "relayer_operator_reconcile_errors_total{error=\"missing\"} 0",
            "relayer_operator_rollout_events_total{reason=\"Aborted\"} 0",
            "relayer_operator_rollout_events_total{reason=\"RolledBack\"} 0",
            "relayer_operator_gate_decisions_total{gate=\"postPromotion\",verdict=\"failed\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing in:\n{text}");
        }
        for error in [
            Error::InvalidSpec("x".into()),
            Error::Missing("metadata.name"),
        ] {
            assert!(Error::METRIC_LABELS.contains(&error.metric_label()));
        }
    }
}
