//! Unit tests of the saga executor: steps, compensations, retries, timeouts and events.

use std::sync::Mutex;

use super::*;

/// The context records what ran; `fail_at` makes that step (or compensation) fail.
#[derive(Debug, Default)]
struct Ctx {
    log: Vec<String>,
    fail_step: Option<&'static str>,
    fail_compensation: Option<&'static str>,
    transient_failures_left: u32,
}

fn step(name: &'static str) -> Step<Ctx> {
    Step {
        name,
        execute: Arc::new(move |ctx: &mut Ctx| {
            Box::pin(async move {
                if ctx.fail_step == Some(name) {
                    if ctx.transient_failures_left > 0 {
                        ctx.transient_failures_left -= 1;
                        ctx.log.push(format!("{name} failed (transient)"));
                        return Err(StepError::transient("flaky"));
                    }
                    if ctx.transient_failures_left == 0
                        && ctx.log.iter().any(|l| l.starts_with(name))
                    {
                        ctx.log.push(format!("{name} done"));
                        return Ok(());
                    }
                    return Err(StepError::permanent(format!("{name} broke")));
                }
                ctx.log.push(format!("{name} done"));
                Ok(())
            })
        }),
        compensate: Some(Arc::new(move |ctx: &mut Ctx| {
            Box::pin(async move {
                if ctx.fail_compensation == Some(name) {
                    return Err(StepError::transient(format!("undo {name} broke")));
                }
                ctx.log.push(format!("{name} undone"));
                Ok(())
            })
        })),
        retryable: true,
        max_retries: 2,
        timeout: None,
    }
}

const STEPS: [&str; 5] = ["validate", "reserve", "match", "settle", "update"];

fn saga() -> SagaExecutor<Ctx> {
    let mut def = SagaDefinition::new("order");
    for name in STEPS {
        def = def.step(step(name));
    }
    SagaExecutor::new(def).with_retry_delay(Duration::ZERO)
}

#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl SagaObserver<Ctx> for Events {
    fn on_event<'a>(
        &'a self,
        _: &'static str,
        event: &'a SagaEvent,
        _: &'a Ctx,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event.name().to_owned());
        })
    }
}

use std::sync::PoisonError;

#[tokio::test]
async fn a_failure_at_each_step_compensates_exactly_the_completed_steps_in_reverse() {
    for (i, failing) in STEPS.iter().enumerate() {
        let mut ctx = Ctx {
            fail_step: Some(failing),
            ..Ctx::default()
        };
        let outcome = saga().execute(&mut ctx).await;
        assert_eq!(
            outcome,
            SagaOutcome::Compensated {
                failed_step: failing,
                error: format!("{failing} broke")
            }
        );
        let mut expected: Vec<String> = STEPS[..i].iter().map(|s| format!("{s} done")).collect();
        expected.extend(STEPS[..i].iter().rev().map(|s| format!("{s} undone")));
        assert_eq!(ctx.log, expected, "failing at {failing}");
    }
}

#[tokio::test]
async fn a_failing_compensation_parks_the_saga_as_manual() {
    let events = Arc::new(Events::default());
    let executor = saga().observe(events.clone());
    let mut ctx = Ctx {
        fail_step: Some("settle"),
        fail_compensation: Some("reserve"),
        ..Ctx::default()
    };
    let outcome = executor.execute(&mut ctx).await;
    assert_eq!(
        outcome,
        SagaOutcome::Manual {
            failed_step: "settle",
            compensation: "reserve",
            error: "undo reserve broke".to_owned()
        }
    );
    // "match" was undone, "reserve" could not be, so "validate" was not touched.
    assert_eq!(
        ctx.log,
        vec![
            "validate done",
            "reserve done",
            "match done",
            "match undone"
        ]
    );
    let names = events
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(
        names,
        vec![
            "started",
            "step_started",
            "step_completed",
            "step_started",
            "step_completed",
            "step_started",
            "step_completed",
            "step_started",
            "step_failed",
            "compensating",
            "step_compensated",
            "manual"
        ]
    );
}

#[tokio::test]
async fn transient_failures_are_retried_up_to_max_retries() {
    let mut ctx = Ctx {
        fail_step: Some("match"),
        transient_failures_left: 2,
        ..Ctx::default()
    };
    assert_eq!(saga().execute(&mut ctx).await, SagaOutcome::Completed);
    assert_eq!(
        ctx.log.iter().filter(|l| l.contains("transient")).count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_over_its_timeout_fails_and_compensates() {
    let mut def = SagaDefinition::new("slow").step(step("validate"));
    def = def.step(Step {
        name: "hang",
        execute: Arc::new(|_: &mut Ctx| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
        }),
        compensate: None,
        retryable: false,
        max_retries: 0,
        timeout: Some(Duration::from_millis(100)),
    });
    let mut ctx = Ctx::default();
    let outcome = SagaExecutor::new(def).execute(&mut ctx).await;
    assert!(
        matches!(
            outcome,
            SagaOutcome::Compensated {
                failed_step: "hang",
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(ctx.log, vec!["validate done", "validate undone"]);
}

#[tokio::test]
async fn a_step_in_doubt_stops_the_saga_pending_without_compensating() {
    let def = SagaDefinition::new("pivot")
        .step(step("validate"))
        .step(step("reserve"))
        .step(Step {
            name: "settle",
            execute: Arc::new(|_: &mut Ctx| {
                Box::pin(async { Err(StepError::in_doubt("answer lost")) })
            }),
            compensate: None,
            retryable: true,
            max_retries: 3,
            timeout: None,
        })
        .step(step("update"));
    let mut ctx = Ctx::default();
    let outcome = SagaExecutor::new(def).execute(&mut ctx).await;
    assert_eq!(
        outcome,
        SagaOutcome::Pending {
            step: "settle",
            error: "answer lost".to_owned()
        }
    );
    assert_eq!(ctx.log, vec!["validate done", "reserve done"]);
}
