//! Webhooks of a gate, pure: what an answer means ([`classify`]), how long to wait before the
//! next call ([`backoff`]), and the gate's decision from every webhook's record ([`decide`]).
//! The calls themselves are [`super::runner`]'s.
//!
//! May use: [`crate::crd`] only.

use std::time::Duration;

use crate::crd::{WebhookSpec, WebhookStatus, WebhookVerdict};

/// The status that holds a gate: `423 Locked`.
pub const HOLD_STATUS: u16 = 423;

/// First pause between two calls of one webhook; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause between two calls.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// What one call's outcome means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: the webhook agrees.
    Pass,
    /// `423 Locked`: wait and ask again next interval.
    Hold,
    /// Anything else (another status, a timeout, a refused connection): call again, or fail
    /// after the last retry. The text says what happened.
    Retry(String),
}

/// The meaning of a call that got `status` (or, as `Err`, no answer).
pub fn classify(outcome: &Result<u16, String>) -> Answer {
    match outcome {
        Ok(status) if (200..300).contains(status) => Answer::Pass,
        Ok(status) if *status == HOLD_STATUS => Answer::Hold,
        Ok(status) => Answer::Retry(format!("HTTP {status}")),
        Err(what) => Answer::Retry(what.clone()),
    }
}

/// The pause before retry number `retry` (1 for the first retry): 0.5 s, doubling, at most
/// 8 s.
pub fn backoff(retry: u32) -> Duration {
    let factor = 1u32 << retry.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The record of every webhook of `specs`: the one `kept` (status, after a restart) where it
/// names the same webhook, otherwise a fresh one.
pub fn records(specs: &[WebhookSpec], kept: &[WebhookStatus]) -> Vec<WebhookStatus> {
    specs
        .iter()
        .map(|spec| {
            kept.iter()
                .find(|k| k.name == spec.name)
                .cloned()
                .unwrap_or_else(|| WebhookStatus {
                    name: spec.name.clone(),
                    ..WebhookStatus::default()
                })
        })
        .collect()
}

/// Folds a call's answer into its webhook's record; `last_try` says whether a `Retry` is the
/// last one allowed (it then fails).
pub fn record(status: &mut WebhookStatus, answer: &Answer, last_try: bool) {
    status.calls = status.calls.saturating_add(1);
    match answer {
        Answer::Pass => {
            status.verdict = WebhookVerdict::Passed;
            status.last_answer = Some("2xx".to_owned());
        }
        Answer::Hold => {
            status.verdict = WebhookVerdict::Held;
            status.last_answer = Some(format!("HTTP {HOLD_STATUS} (hold)"));
        }
        Answer::Retry(what) => {
            status.last_answer = Some(what.clone());
            if last_try {
                status.verdict = WebhookVerdict::Failed;
            }
        }
    }
}

/// What the webhooks say together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every webhook answered 2xx.
    Pass,
    /// Some webhook holds (or was not asked yet): ask again next interval.
    Wait,
    /// A webhook failed every call.
    Fail(String),
}

/// The decision of the records `hooks` (with the specs for their retry counts).
pub fn decide(specs: &[WebhookSpec], hooks: &[WebhookStatus]) -> Decision {
    if let Some(failed) = hooks.iter().find(|h| h.verdict == WebhookVerdict::Failed) {
        let retries = specs
            .iter()
            .find(|s| s.name == failed.name)
            .map_or(0, |s| s.retries);
        return Decision::Fail(format!(
            "webhook {} failed {} calls ({} retries): {}",
            failed.name,
            failed.calls,
            retries,
            failed.last_answer.as_deref().unwrap_or("no answer")
        ));
    }
    if hooks.iter().all(|h| h.verdict == WebhookVerdict::Passed) {
        Decision::Pass
    } else {
        Decision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, retries: i32) -> WebhookSpec {
        WebhookSpec {
            name: name.to_owned(),
            url: "http://approver/confirm".to_owned(),
            timeout_seconds: 1,
            retries,
        }
    }

    #[test]
    fn answers_mean_pass_hold_or_retry() {
        assert_eq!(classify(&Ok(200)), Answer::Pass);
        assert_eq!(classify(&Ok(204)), Answer::Pass);
        assert_eq!(classify(&Ok(423)), Answer::Hold);
        assert_eq!(classify(&Ok(500)), Answer::Retry("HTTP 500".into()));
        assert_eq!(classify(&Ok(302)), Answer::Retry("HTTP 302".into()));
        assert_eq!(
            classify(&Err("connect: refused".into())),
            Answer::Retry("connect: refused".into())
        );
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_eight() {
        let pauses: Vec<u128> = (1..=7).map(|r| backoff(r).as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn records_survive_a_restart_by_name() {
        let kept = vec![WebhookStatus {
            name: "b".into(),
            verdict: WebhookVerdict::Passed,
            calls: 1,
            last_answer: Some("2xx".into()),
        }];
        let specs = [spec("a", 1), spec("b", 1)];
        let hooks = records(&specs, &kept);
        assert_eq!(hooks[0].verdict, WebhookVerdict::Pending);
        assert_eq!(hooks[1], kept[0]);
    }

    #[test]
    fn the_gate_passes_when_all_pass_waits_on_a_hold_and_fails_on_a_failure() {
        let specs = [spec("a", 2), spec("b", 2)];
        let mut hooks = records(&specs, &[]);
        assert_eq!(decide(&specs, &hooks), Decision::Wait, "not asked yet");
        record(&mut hooks[0], &Answer::Pass, false);
        record(&mut hooks[1], &Answer::Hold, false);
        assert_eq!(decide(&specs, &hooks), Decision::Wait);
        record(&mut hooks[1], &Answer::Pass, false);
        assert_eq!(decide(&specs, &hooks), Decision::Pass);
        assert_eq!(hooks[1].calls, 2);

        let mut failing = records(&specs, &[]);
        record(&mut failing[0], &Answer::Retry("HTTP 500".into()), false);
        assert_eq!(failing[0].verdict, WebhookVerdict::Pending);
        record(&mut failing[0], &Answer::Retry("HTTP 500".into()), true);
        let Decision::Fail(reason) = decide(&specs, &failing) else {
            panic!("a failed webhook fails the gate");
        };
        assert_eq!(reason, "webhook a failed 2 calls (2 retries): HTTP 500");
    }
}
