use super::*;

fn receiver(name: &str, events: &[NotificationEvent]) -> NotificationSpec {
    NotificationSpec {
        name: name.to_owned(),
        url: format!("http://{name}.ns.svc/hook"),
        format: NotificationFormat::Generic,
        events: events.to_vec(),
        timeout_seconds: 5,
    }
}

fn emit(reason: &'static str, message: &str) -> Action {
    Action::Emit {
        warning: false,
        reason,
        message: message.to_owned(),
    }
}

const CUTOVER: Cutover<'static> = Cutover {
    uid: "uid-1",
    started_ms: 1_000,
    revision: Some("r2"),
};

#[test]
fn notified_events_enter_the_outbox_with_stable_keys_for_the_receivers_that_want_them() {
    let specs = [
        receiver("all", &NotificationEvent::ALL),
        receiver("promotions", &[NotificationEvent::Promoted]),
    ];
    let mut outbox = NotificationsStatus::default();
    let actions = [
        emit("CutoverStarted", "revision r2 starts on green"),
        emit("PreviewAvailable", "green is available"),
        Action::StopGates,
        emit("Promoted", "the active Service now selects green"),
    ];
    enqueue(&mut outbox, &specs, &actions, &CUTOVER, 5_000);
    let keys: Vec<&str> = outbox.outbox.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["uid-1/1000/CutoverStarted/0", "uid-1/1000/Promoted/0"]
    );
    assert_eq!(outbox.outbox[0].pending, ["all"]);
    assert_eq!(outbox.outbox[1].pending, ["all", "promotions"]);
    assert_eq!(outbox.outbox[1].revision.as_deref(), Some("r2"));
    // The same decision taken again from the same status gives the same keys.
    let mut again = NotificationsStatus::default();
    enqueue(&mut again, &specs, &actions, &CUTOVER, 6_000);
    assert_eq!(
        again.outbox.iter().map(|e| &e.key).collect::<Vec<_>>(),
        outbox.outbox.iter().map(|e| &e.key).collect::<Vec<_>>()
    );
    // One event per decision: a failed gate is published twice, notified once.
    let mut once = NotificationsStatus::default();
    enqueue(
        &mut once,
        &specs,
        &[
            emit("GateFailed", "by the gate"),
            emit("GateFailed", "by the step"),
        ],
        &CUTOVER,
        0,
    );
    assert_eq!(once.outbox.len(), 1);
    // A second event of a kind in one cutover gets the next number.
    enqueue(
        &mut outbox,
        &specs,
        &[emit("Promoted", "kept the new colour by command")],
        &CUTOVER,
        7_000,
    );
    assert_eq!(outbox.outbox[2].key, "uid-1/1000/Promoted/1");
    // Nobody wants it: nothing enters.
    let mut none = NotificationsStatus::default();
    enqueue(
        &mut none,
        &[receiver("promotions", &[NotificationEvent::Promoted])],
        &[emit("Aborted", "x")],
        &CUTOVER,
        0,
    );
    assert!(none.outbox.is_empty());
}

#[test]
fn reasons_map_to_the_six_events() {
    assert_eq!(event_of("CutoverComplete"), Some(NotificationEvent::Stable));
    assert_eq!(event_of("RolledBack"), Some(NotificationEvent::RolledBack));
    assert_eq!(event_of("GateFailed"), Some(NotificationEvent::GateFailed));
    assert_eq!(
        event_of("CutoverCancelled"),
        Some(NotificationEvent::Stable)
    );
    assert_eq!(event_of("Reverted"), Some(NotificationEvent::RolledBack));
    assert_eq!(event_of("PreviewAvailable"), None);
    assert_eq!(event_of("ScaledDown"), None);
}

#[test]
fn a_delivered_entry_leaves_the_outbox_and_is_never_due_again() {
    let specs = [
        receiver("a", &NotificationEvent::ALL),
        receiver("b", &NotificationEvent::ALL),
    ];
    let mut outbox = NotificationsStatus::default();
    enqueue(
        &mut outbox,
        &specs,
        &[emit("Promoted", "m")],
        &CUTOVER,
        1_000,
    );
    assert_eq!(
        due(&outbox, 1_000),
        [(0, "a".to_owned()), (0, "b".to_owned())]
    );
    record(&mut outbox, 0, "a", Ok(()));
    record(&mut outbox, 0, "b", Err("HTTP 500".into()));
    // Listed once per failed call: still one attempt of the entry.
    settle(&mut outbox, &[0, 0], 1_000);
    assert_eq!(outbox.outbox[0].pending, ["b"]);
    assert_eq!(outbox.outbox[0].attempts, 1);
    assert_eq!(outbox.outbox[0].last_error.as_deref(), Some("b: HTTP 500"));
    assert!(due(&outbox, 1_999).is_empty(), "backoff of 1 s");
    assert_eq!(due(&outbox, 2_000), [(0, "b".to_owned())], "only b again");
    record(&mut outbox, 0, "b", Ok(()));
    settle(&mut outbox, &[], 2_000);
    assert!(outbox.outbox.is_empty());
    assert_eq!(outbox.delivered.len(), 1);
    assert_eq!(outbox.delivered[0].key, "uid-1/1000/Promoted/0");
    assert!(outbox.delivered[0].failed.is_empty());
    assert!(due(&outbox, i64::MAX).is_empty());
    // Enqueued again after delivery (a replayed decision): the key counts on.
    enqueue(
        &mut outbox,
        &specs,
        &[emit("Promoted", "m")],
        &CUTOVER,
        3_000,
    );
    assert_eq!(outbox.outbox[0].key, "uid-1/1000/Promoted/1");
}

#[test]
fn a_receiver_that_keeps_failing_is_given_up_after_the_last_attempt() {
    let specs = [receiver("dead", &NotificationEvent::ALL)];
    let mut outbox = NotificationsStatus::default();
    enqueue(&mut outbox, &specs, &[emit("Aborted", "m")], &CUTOVER, 0);
    let mut now = 0;
    for _ in 0..MAX_ATTEMPTS {
        assert_eq!(due(&outbox, now).len(), 1);
        record(&mut outbox, 0, "dead", Err("connect: refused".into()));
        settle(&mut outbox, &[0], now);
        now = outbox.outbox.first().map_or(now, |e| e.next_attempt_ms);
    }
    assert!(outbox.outbox.is_empty());
    assert_eq!(outbox.delivered[0].failed, ["dead"]);
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(7), Duration::from_secs(60));
    assert_eq!(backoff(100), Duration::from_secs(60));
}

#[test]
fn the_outbox_and_the_delivered_keys_are_bounded() {
    let specs = [receiver("a", &NotificationEvent::ALL)];
    let mut outbox = NotificationsStatus::default();
    for i in 0..(OUTBOX_MAX + 5) {
        let cutover = Cutover {
            started_ms: i64::try_from(i).unwrap_or(0),
            ..CUTOVER
        };
        enqueue(
            &mut outbox,
            &specs,
            &[emit("CutoverStarted", "m")],
            &cutover,
            0,
        );
    }
    assert_eq!(outbox.outbox.len(), OUTBOX_MAX);
    assert_eq!(outbox.delivered.len(), 5, "the oldest given up");
    assert_eq!(outbox.delivered[0].failed, ["a"]);
    for i in 0..OUTBOX_MAX {
        record(&mut outbox, i, "a", Ok(()));
    }
    settle(&mut outbox, &[], 0);
    assert_eq!(outbox.delivered.len(), DELIVERED_KEPT);
}

#[test]
fn bodies_carry_the_key_in_both_formats() {
    let mut outbox = NotificationsStatus::default();
    enqueue(
        &mut outbox,
        &[receiver("a", &NotificationEvent::ALL)],
        &[emit(
            "RolledBack",
            "postPromotion failed; the active Service selects blue again",
        )],
        &CUTOVER,
        42,
    );
    let entry = &outbox.outbox[0];
    let generic = body(NotificationFormat::Generic, entry, "prod", "market");
    assert_eq!(generic["key"], "uid-1/1000/RolledBack/0");
    assert_eq!(generic["event"], "RolledBack");
    assert_eq!(generic["namespace"], "prod");
    assert_eq!(generic["revision"], "r2");
    assert_eq!(generic["atMs"], 42);
    let slack = body(NotificationFormat::Slack, entry, "prod", "market");
    let text = slack["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("*prod/market* RolledBack: postPromotion failed"),
        "{text}"
    );
    assert!(text.contains("uid-1/1000/RolledBack/0"), "{text}");
}
