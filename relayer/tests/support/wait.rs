//! Waiting for a condition with a deadline, instead of sleeping and hoping: [`wait_for`] (a
//! yes/no check) and [`wait_for_ok`] (a check that says why not, and hands back what it found).
//!
//! Uses only std and `tokio::time`.

use std::time::{Duration, Instant};

/// How long to wait between two checks.
const POLL: Duration = Duration::from_millis(20);

/// Checks until `check` says yes; panics naming `what` once `deadline` has passed.
pub async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    wait_for_ok(what, deadline, async || {
        if check().await {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
}

/// Checks until `check` answers `Ok`, and returns what it answered; panics naming `what` and
/// the last `Err` once `deadline` has passed. The check runs at least once.
pub async fn wait_for_ok<T>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(why) if Instant::now() >= until => {
                panic!("timed out after {deadline:?} waiting for {what}: {why}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
