//! Sagas: a sequence of steps, each with an optional compensation, run in order; on a failure
//! the completed steps are compensated in reverse order.
//!
//! A step may be retried (`retryable`, `maxRetries`) and bounded in time (`timeout`). A
//! compensation is retried too; one that keeps failing parks the saga as `manual` for a person
//! to resolve, unless its failure is in doubt (the store did not answer): then the saga stops
//! `pending`, still compensating, to be resumed backward later. Every transition is reported to the [`SagaObserver`]s: an event stream for
//! callers, metrics, and the durable log that lets another process finish the saga.
//!
//! The context `C` carries the saga's data between steps; steps receive `&mut C`.
//!
//! Each step and compensation runs in a span of its own when traces are on
//! ([`crate::otel`]).
//!
//! Room: part of `resilience/`; uses [`crate::otel`] and nothing else of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tracing::Instrument as _;

/// A step's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may succeed (only retried when the step is `retryable`).
    pub transient: bool,
    /// Whether the step may have taken effect although it failed (an answer lost in transit).
    /// Such a step is never compensated: the saga stops as [`SagaOutcome::Pending`] and is
    /// carried forward later (from its durable log).
    pub in_doubt: bool,
}

impl StepError {
    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            in_doubt: false,
        }
    }

    /// A failure that a retry may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
            in_doubt: false,
        }
    }

    /// A failure after which the step may or may not have taken effect: the saga must go
    /// forward (retry later), never back.
    pub fn in_doubt(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            in_doubt: true,
        }
    }
}

/// The async body of a step or compensation.
pub type Action<C> =
    Arc<dyn for<'a> Fn(&'a mut C) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync>;

/// One step.
pub struct Step<C> {
    /// Name (metrics label, logs).
    pub name: &'static str,
    /// What it does.
    pub execute: Action<C>,
    /// How to undo it; `None` when there is nothing to undo.
    pub compensate: Option<Action<C>>,
    /// Whether a transient failure is retried.
    pub retryable: bool,
    /// Retries of `execute` (and of `compensate`) after the first attempt.
    pub max_retries: u32,
    /// Time limit of one attempt.
    pub timeout: Option<Duration>,
}

impl<C> fmt::Debug for Step<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A named list of steps.
pub struct SagaDefinition<C> {
    /// Name (metrics label).
    pub name: &'static str,
    /// Steps in execution order.
    pub steps: Vec<Step<C>>,
}

impl<C> SagaDefinition<C> {
    /// An empty saga.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            steps: Vec::new(),
        }
    }

    /// Appends a step.
    #[must_use]
    pub fn step(mut self, step: Step<C>) -> Self {
        self.steps.push(step);
        self
    }
}

/// What happened, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaEvent {
    /// Execution began.
    Started,
    /// A step is about to run (a durable log records this before the step's effects).
    StepStarted(&'static str),
    /// A step completed.
    StepCompleted(&'static str),
    /// A step failed for good (after its retries).
    StepFailed(&'static str, String),
    /// Every step completed.
    Completed,
    /// Compensation began, from the last completed step backwards.
    Compensating,
    /// A step's compensation completed.
    StepCompensated(&'static str),
    /// Every completed step was compensated.
    Compensated,
    /// A compensation kept failing: the saga needs a person.
    Manual(&'static str, String),
    /// A step's effect is in doubt: the saga stopped without compensating, to be carried
    /// forward later.
    Pending(&'static str, String),
}

impl SagaEvent {
    /// The seed's event name.
    pub fn name(&self) -> &'static str {
        match self {
            SagaEvent::Started => "started",
            SagaEvent::StepStarted(_) => "step_started",
            SagaEvent::StepCompleted(_) => "step_completed",
            SagaEvent::StepFailed(..) => "step_failed",
            SagaEvent::Completed => "completed",
            SagaEvent::Compensating => "compensating",
            SagaEvent::StepCompensated(_) => "step_compensated",
            SagaEvent::Compensated => "compensated",
            SagaEvent::Manual(..) => "manual",
            SagaEvent::Pending(..) => "pending",
        }
    }
}

/// How a saga ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaOutcome {
    /// Every step completed.
    Completed,
    /// A step failed; the completed ones were undone.
    Compensated {
        /// The step that failed.
        failed_step: &'static str,
        /// Its error.
        error: String,
    },
    /// A step failed and a compensation failed too.
    Manual {
        /// The step that failed.
        failed_step: &'static str,
        /// The compensation that kept failing.
        compensation: &'static str,
        /// Its last error.
        error: String,
    },
    /// A step's effect is in doubt ([`StepError::in_doubt`]): nothing was compensated; the
    /// saga is to be resumed at that step.
    Pending {
        /// The step in doubt.
        step: &'static str,
        /// Its error.
        error: String,
    },
}

impl SagaOutcome {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            SagaOutcome::Completed => "completed",
            SagaOutcome::Compensated { .. } => "compensated",
            SagaOutcome::Manual { .. } => "manual",
            SagaOutcome::Pending { .. } => "pending",
        }
    }
}

/// An execution counted in `foresight_saga_active`: the gauge goes down when this drops.
struct Active {
    gauge: Option<Gauge>,
    started: Instant,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// Told of every event of every saga an executor runs, with the context at that moment.
pub trait SagaObserver<C>: Send + Sync {
    /// Called in order; awaited before the saga goes on (a durable log writes here).
    fn on_event<'a>(
        &'a self,
        saga: &'static str,
        event: &'a SagaEvent,
        ctx: &'a C,
    ) -> BoxFuture<'a, ()>;
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SagaLabel {
    saga: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    saga: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    saga: &'static str,
    step: &'static str,
    result: &'static str,
}

/// Saga metrics (`foresight_saga_*`).
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    executions: Family<OutcomeLabels, Counter>,
    steps: Family<StepLabels, Counter>,
    duration: Family<SagaLabel, Histogram, fn() -> Histogram>,
    active: Family<SagaLabel, Gauge>,
}

fn duration_ms() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 20))
}

impl SagaMetrics {
    /// Registers the saga metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            executions: Family::default(),
            steps: Family::default(),
            duration: Family::new_with_constructor(duration_ms),
            active: Family::default(),
        };
        registry.register(
            "foresight_saga_executions",
            "Sagas finished, by outcome",
            m.executions.clone(),
        );
        registry.register(
            "foresight_saga_steps",
            "Saga steps by result",
            m.steps.clone(),
        );
        registry.register(
            "foresight_saga_duration_ms",
            "Time from a saga's start to its end, in ms",
            m.duration.clone(),
        );
        registry.register(
            "foresight_saga_active",
            "Sagas running now",
            m.active.clone(),
        );
        m
    }

    /// Creates the series of `saga` at zero (active, and executions by every outcome), so a
    /// reader such as a health gate finds them before the first saga ends.
    pub fn touch(&self, saga: &'static str) {
        drop(self.active.get_or_create(&SagaLabel { saga }));
        for outcome in ["completed", "compensated", "manual", "pending"] {
            drop(
                self.executions
                    .get_or_create(&OutcomeLabels { saga, outcome }),
            );
        }
    }

    fn step(&self, saga: &'static str, step: &'static str, result: &'static str) {
        self.steps
            .get_or_create(&StepLabels { saga, step, result })
            .inc();
    }
}

/// Runs sagas of one definition.
pub struct SagaExecutor<C> {
    definition: SagaDefinition<C>,
    observers: Vec<Arc<dyn SagaObserver<C>>>,
    metrics: Option<SagaMetrics>,
    /// Pause between attempts of a retried step or compensation.
    retry_delay: Duration,
}

impl<C: Send> SagaExecutor<C> {
    /// An executor for `definition`.
    pub fn new(definition: SagaDefinition<C>) -> Self {
        Self {
            definition,
            observers: Vec::new(),
            metrics: None,
            retry_delay: Duration::from_millis(50),
        }
    }

    /// Adds an observer.
    #[must_use]
    pub fn observe(mut self, observer: Arc<dyn SagaObserver<C>>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Reports to `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: SagaMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the pause between retries.
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The definition.
    pub fn definition(&self) -> &SagaDefinition<C> {
        &self.definition
    }

    async fn emit(&self, event: SagaEvent, ctx: &C) {
        for o in &self.observers {
            o.on_event(self.definition.name, &event, ctx).await;
        }
    }

    /// One action with its retries and timeout.
    async fn attempt(
        &self,
        action: &Action<C>,
        step: &Step<C>,
        ctx: &mut C,
        retryable: bool,
        compensation: bool,
    ) -> Result<(), StepError> {
        let span = crate::otel::span_if_enabled(|| {
            let verb = if compensation { "compensate" } else { "step" };
            tracing::info_span!(
                "saga step",
                otel.name = format!("{} {verb} {}", self.definition.name, step.name),
                saga = self.definition.name,
                step = step.name,
                compensation,
                otel.status_code = tracing::field::Empty,
                error = tracing::field::Empty,
            )
        });
        let result = self
            .attempt_retrying(action, step, ctx, retryable)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            span.record("otel.status_code", "error");
            span.record("error", e.message.as_str());
        }
        result
    }

    async fn attempt_retrying(
        &self,
        action: &Action<C>,
        step: &Step<C>,
        ctx: &mut C,
        retryable: bool,
    ) -> Result<(), StepError> {
        let mut tries = 0;
        loop {
            let run = action(ctx);
            let result = match step.timeout {
                Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                    Err(StepError::transient(format!(
                        "timed out after {} ms",
                        limit.as_millis()
                    )))
                }),
                None => run.await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if retryable && e.transient && tries < step.max_retries => {
                    tries += 1;
                    tokio::time::sleep(self.retry_delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs the saga from its first step.
    pub async fn execute(&self, ctx: &mut C) -> SagaOutcome {
        self.resume(ctx, 0).await
    }

    /// Runs the saga from step `from` (the steps before it are taken as completed): how a
    /// recovered saga goes forward.
    pub async fn resume(&self, ctx: &mut C, from: usize) -> SagaOutcome {
        let saga = self.definition.name;
        let active = self.began();
        self.emit(SagaEvent::Started, ctx).await;
        let mut outcome = SagaOutcome::Completed;
        for (i, step) in self.definition.steps.iter().enumerate().skip(from) {
            self.emit(SagaEvent::StepStarted(step.name), ctx).await;
            match self
                .attempt(&step.execute, step, ctx, step.retryable, false)
                .await
            {
                Ok(()) => {
                    if let Some(m) = &self.metrics {
                        m.step(saga, step.name, "completed");
                    }
                    self.emit(SagaEvent::StepCompleted(step.name), ctx).await;
                }
                Err(e) if e.in_doubt => {
                    if let Some(m) = &self.metrics {
                        m.step(saga, step.name, "in_doubt");
                    }
                    self.emit(SagaEvent::Pending(step.name, e.message.clone()), ctx)
                        .await;
                    outcome = SagaOutcome::Pending {
                        step: step.name,
                        error: e.message,
                    };
                    break;
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.step(saga, step.name, "failed");
                    }
                    self.emit(SagaEvent::StepFailed(step.name, e.message.clone()), ctx)
                        .await;
                    outcome = self.compensate(ctx, i, step.name, e.message).await;
                    break;
                }
            }
        }
        if outcome == SagaOutcome::Completed {
            self.emit(SagaEvent::Completed, ctx).await;
        }
        self.ended(active, &outcome);
        outcome
    }

    /// Counts an execution as active until the returned guard is dropped (also when the
    /// execution's future is dropped mid-flight).
    fn began(&self) -> Active {
        let gauge = self.metrics.as_ref().map(|m| {
            let g = m
                .active
                .get_or_create(&SagaLabel {
                    saga: self.definition.name,
                })
                .clone();
            g.inc();
            g
        });
        Active {
            gauge,
            started: Instant::now(),
        }
    }

    /// Counts an execution's end: its outcome and its duration (the guard's drop ends
    /// "active").
    fn ended(&self, active: Active, outcome: &SagaOutcome) {
        let saga = self.definition.name;
        if let Some(m) = &self.metrics {
            m.executions
                .get_or_create(&OutcomeLabels {
                    saga,
                    outcome: outcome.label(),
                })
                .inc();
            m.duration
                .get_or_create(&SagaLabel { saga })
                .observe(active.started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    /// [`SagaExecutor::compensate`] as an execution of its own (counted in the metrics like
    /// [`SagaExecutor::resume`]): how a recovered saga goes backward.
    pub async fn resume_compensation(
        &self,
        ctx: &mut C,
        failed: usize,
        failed_step: &'static str,
        error: String,
    ) -> SagaOutcome {
        let active = self.began();
        let outcome = self.compensate(ctx, failed, failed_step, error).await;
        self.ended(active, &outcome);
        outcome
    }

    /// Compensates steps `failed - 1 ..= 0` in reverse order (the failed step itself did not
    /// complete, so it is not compensated).
    pub async fn compensate(
        &self,
        ctx: &mut C,
        failed: usize,
        failed_step: &'static str,
        error: String,
    ) -> SagaOutcome {
        let saga = self.definition.name;
        self.emit(SagaEvent::Compensating, ctx).await;
        for step in self.definition.steps[..failed].iter().rev() {
            let Some(compensate) = &step.compensate else {
                continue;
            };
            match self.attempt(compensate, step, ctx, true, true).await {
                Ok(()) => {
                    if let Some(m) = &self.metrics {
                        m.step(saga, step.name, "compensated");
                    }
                    self.emit(SagaEvent::StepCompensated(step.name), ctx).await;
                }
                Err(e) if e.in_doubt => {
                    if let Some(m) = &self.metrics {
                        m.step(saga, step.name, "in_doubt");
                    }
                    self.emit(SagaEvent::Pending(step.name, e.message.clone()), ctx)
                        .await;
                    return SagaOutcome::Pending {
                        step: step.name,
                        error: e.message,
                    };
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.step(saga, step.name, "compensation_failed");
                    }
                    self.emit(SagaEvent::Manual(step.name, e.message.clone()), ctx)
                        .await;
                    tracing::error!(saga, step = step.name, error = %e, "compensation failed: saga needs manual handling");
                    return SagaOutcome::Manual {
                        failed_step,
                        compensation: step.name,
                        error: e.message,
                    };
                }
            }
        }
        self.emit(SagaEvent::Compensated, ctx).await;
        SagaOutcome::Compensated { failed_step, error }
    }
}

#[cfg(test)]
mod tests;
