//! Cutover notifications, pure: which of the machine's Events are notified ([`event_of`]),
//! the outbox entries a decision adds ([`enqueue`]), with their dedupe keys, the bodies
//! ([`body`]), what is due ([`due`]), and how an attempt's result changes the outbox
//! ([`record`], [`settle`]).
//!
//! The outbox lives in `status.notifications`: an entry is written in the same (fenced) status
//! write as the transition that caused it, sent by a later reconcile, and moved to `delivered`
//! in the status write after the send. So an event is sent at least once (a crash between a
//! send and the write re-sends it, with the same key) and never again once recorded, whatever
//! the operator restarts.
//!
//! May use: [`crate::crd`] and [`crate::rollout::Action`] only.

use std::time::Duration;

use serde_json::{Value, json};

use crate::crd::{
    DeliveredNotification, Notification, NotificationEvent, NotificationFormat, NotificationSpec,
    NotificationsStatus,
};
use crate::rollout::Action;

/// Attempts per entry before the receivers still pending are given up.
pub const MAX_ATTEMPTS: i32 = 10;
/// Delivered keys kept in status.
pub const DELIVERED_KEPT: usize = 50;
/// Entries an outbox holds at most; a new one beyond it drops the oldest (given up).
pub const OUTBOX_MAX: usize = 50;
/// Calls one reconcile makes at most.
pub const CALLS_PER_RECONCILE: usize = 8;

/// The notified event of an Event reason, if it is one.
pub fn event_of(reason: &str) -> Option<NotificationEvent> {
    Some(match reason {
        "CutoverStarted" => NotificationEvent::CutoverStarted,
        "GateFailed" => NotificationEvent::GateFailed,
        "Promoted" => NotificationEvent::Promoted,
        "Aborted" => NotificationEvent::Aborted,
        "RolledBack" | "Reverted" => NotificationEvent::RolledBack,
        "CutoverComplete" | "CutoverCancelled" | "Stable" => NotificationEvent::Stable,
        _ => return None,
    })
}

/// What identifies a cutover in keys: the object's uid and the cutover's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutover<'a> {
    /// The object's uid.
    pub uid: &'a str,
    /// `status.rollout.startedMs` of the cutover the events belong to.
    pub started_ms: i64,
    /// Its target revision.
    pub revision: Option<&'a str>,
}

/// Adds an entry for every notified Event among `actions` that some receiver of `specs`
/// wants (one per event per decision: a failed gate is published by the gate and by the
/// step it fails), keyed `<uid>/<started ms>/<event>/<n>` (`n` counts earlier entries of that
/// event of the cutover, so the key of one transition is the same however often it is
/// decided).
pub fn enqueue(
    outbox: &mut NotificationsStatus,
    specs: &[NotificationSpec],
    actions: &[Action],
    cutover: &Cutover<'_>,
    now_ms: i64,
) {
    let mut seen = Vec::new();
    for action in actions {
        let Action::Emit {
            reason, message, ..
        } = action
        else {
            continue;
        };
        let Some(event) = event_of(reason) else {
            continue;
        };
        if seen.contains(&event) {
            continue;
        }
        seen.push(event);
        let pending: Vec<String> = specs
            .iter()
            .filter(|s| s.events.contains(&event))
            .map(|s| s.name.clone())
            .collect();
        if pending.is_empty() {
            continue;
        }
        let prefix = format!("{}/{}/{}/", cutover.uid, cutover.started_ms, event.name());
        let n = outbox
            .outbox
            .iter()
            .map(|e| &e.key)
            .chain(outbox.delivered.iter().map(|d| &d.key))
            .filter(|k| k.starts_with(&prefix))
            .count();
        if outbox.outbox.len() >= OUTBOX_MAX {
            let oldest = outbox.outbox.remove(0);
            give_up(outbox, oldest);
        }
        outbox.outbox.push(Notification {
            key: format!("{prefix}{n}"),
            event,
            message: message.clone(),
            revision: cutover.revision.map(str::to_owned),
            at_ms: now_ms,
            pending,
            failed: Vec::new(),
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        });
    }
}

/// The body of `entry` for a receiver of `format`, about object `namespace/name`.
pub fn body(
    format: NotificationFormat,
    entry: &Notification,
    namespace: &str,
    name: &str,
) -> Value {
    match format {
        NotificationFormat::Generic => json!({
            "key": entry.key,
            "event": entry.event.name(),
            "namespace": namespace,
            "name": name,
            "revision": entry.revision,
            "message": entry.message,
            "atMs": entry.at_ms,
        }),
        NotificationFormat::Slack => json!({
            "text": format!(
                "*{namespace}/{name}* {}: {}{} (key {})",
                entry.event.name(),
                entry.message,
                entry
                    .revision
                    .as_deref()
                    .map_or(String::new(), |r| format!(" [revision {r}]")),
                entry.key
            ),
        }),
    }
}

/// The (entry, receiver) pairs due at `now_ms`, at most [`CALLS_PER_RECONCILE`], oldest
/// first.
pub fn due(outbox: &NotificationsStatus, now_ms: i64) -> Vec<(usize, String)> {
    outbox
        .outbox
        .iter()
        .enumerate()
        .filter(|(_, e)| e.next_attempt_ms <= now_ms)
        .flat_map(|(i, e)| e.pending.iter().map(move |r| (i, r.clone())))
        .take(CALLS_PER_RECONCILE)
        .collect()
}

/// The pause after `attempts` failed attempts: 1 s, doubling, at most 60 s.
pub fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 6)).unwrap_or(0);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(60))
}

/// Folds one attempt of entry `index` to `receiver` into the outbox: a success removes the
/// receiver from the entry's pending ones, a failure keeps it.
pub fn record(
    outbox: &mut NotificationsStatus,
    index: usize,
    receiver: &str,
    result: Result<(), String>,
) {
    let Some(entry) = outbox.outbox.get_mut(index) else {
        return;
    };
    match result {
        Ok(()) => entry.pending.retain(|r| r != receiver),
        Err(why) => entry.last_error = Some(format!("{receiver}: {why}")),
    }
}

/// After a reconcile's attempts: counts an attempt on every entry that had one failing
/// (`failed_entries`), schedules its next one, gives up receivers after [`MAX_ATTEMPTS`], and
/// moves entries without pending receivers to `delivered` (keeping the last
/// [`DELIVERED_KEPT`]).
pub fn settle(outbox: &mut NotificationsStatus, failed_entries: &[usize], now_ms: i64) {
    let mut failed_entries = failed_entries.to_vec();
    failed_entries.sort_unstable();
    failed_entries.dedup();
    for i in failed_entries {
        if let Some(entry) = outbox.outbox.get_mut(i)
            && !entry.pending.is_empty()
        {
            entry.attempts = entry.attempts.saturating_add(1);
            let pause = i64::try_from(backoff(entry.attempts).as_millis()).unwrap_or(60_000);
            entry.next_attempt_ms = now_ms.saturating_add(pause);
            if entry.attempts >= MAX_ATTEMPTS {
                let given_up = std::mem::take(&mut entry.pending);
                entry.failed.extend(given_up);
            }
        }
    }
    let (done, waiting): (Vec<Notification>, Vec<Notification>) =
        std::mem::take(&mut outbox.outbox)
            .into_iter()
            .partition(|e| e.pending.is_empty());
    outbox.outbox = waiting;
    for entry in done {
        give_up(outbox, entry);
    }
}

/// Moves `entry` to `delivered`, its pending receivers counted as failed.
fn give_up(outbox: &mut NotificationsStatus, mut entry: Notification) {
    entry.failed.append(&mut entry.pending);
    outbox.delivered.push(DeliveredNotification {
        key: entry.key,
        event: entry.event,
        at_ms: entry.at_ms,
        failed: entry.failed,
    });
    let extra = outbox.delivered.len().saturating_sub(DELIVERED_KEPT);
    outbox.delivered.drain(..extra);
}

#[cfg(test)]
mod tests;
