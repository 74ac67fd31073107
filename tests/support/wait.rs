//! Waiting for a condition with a deadline, never for a fixed time: [`wait_for`] polls any
//! check, [`wait_step`] waits for a RelayerDeployment's rollout to reach a step and
//! [`wait_available`] for its `Available` condition.
//!
//! Uses [`crate::support::TestEnv`] and the shared control plane (for the diagnosis printed
//! on a timeout).

use std::future::Future;
use std::time::{Duration, Instant};

use relayer_operator::crd::{RelayerDeployment, RolloutStep};

use super::{ControlPlane, TestEnv};

/// How often [`wait_for`] checks.
const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it yields `Some`, or fails naming `what` after `timeout`; an `Err` from
/// `check` is kept (and shown on the timeout) and polling goes on.
///
/// For conditions a watch can express, prefer `kube::runtime::wait::await_condition`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    wait_for_every(what, timeout, POLL, check).await
}

/// [`wait_for`], checking every `interval`: for states that last only a moment.
pub async fn wait_for_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(error) => last_error = Some(format!("{error:#}")),
        }
        if Instant::now() > deadline {
            let diagnosis = ControlPlane::shared().diagnose();
            panic!(
                "timed out after {timeout:?} waiting for {what}{}{diagnosis}",
                last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// Waits until RelayerDeployment `name` has observed its current spec and its rollout is at
/// `step`, with `colour` active when one is given (`"blue"`, or `None` for any), and, for
/// [`RolloutStep::Stable`], every desired replica ready; returns the object as it then was.
pub async fn wait_step<'a>(
    env: &TestEnv,
    name: &str,
    step: RolloutStep,
    colour: impl Into<Option<&'a str>>,
    timeout: Duration,
) -> RelayerDeployment {
    let colour = colour.into();
    let api = env.api::<RelayerDeployment>();
    let what = match colour {
        Some(colour) => format!("{name}: {step:?} on {colour}"),
        None => format!("{name}: step {step:?}"),
    };
    wait_for(&what, timeout, || {
        let api = api.clone();
        async move {
            let rd = api.get(name).await?;
            let done = rd.status.as_ref().is_some_and(|s| {
                s.observed_generation == rd.metadata.generation
                    && s.rollout.as_ref().is_some_and(|r| r.step == step)
                    && colour
                        .is_none_or(|colour| s.active_color.map(|c| c.as_str()) == Some(colour))
                    && (step != RolloutStep::Stable || s.ready_replicas >= s.desired_replicas)
            });
            Ok(done.then_some(rd))
        }
    })
    .await
}

/// Waits until RelayerDeployment `name` has status for its current generation with the
/// `Available` condition true; answers it.
pub async fn wait_available(env: &TestEnv, name: &str, timeout: Duration) -> RelayerDeployment {
    let api = env.api::<RelayerDeployment>();
    wait_for(&format!("{name} to become Available"), timeout, || {
        let api = api.clone();
        async move {
            let rd = api.get(name).await?;
            let available = rd.status.as_ref().is_some_and(|s| {
                s.observed_generation == rd.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Available" && c.status == "True")
            });
            Ok(available.then_some(rd))
        }
    })
    .await
}
