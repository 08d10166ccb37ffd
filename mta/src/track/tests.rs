//! The store and the tracker against a real SQLite file in a temporary directory.

use std::time::Duration;

use super::*;

const T0: i64 = 1_800_000_000_000;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

fn received(id: u64, message_id: &str, sender: &str, recipients: &[&str], at: i64) -> Event {
    let kind = EventKind::Received {
        client: "192.0.2.1".into(),
        helo: "client.example".into(),
        tls: None,
        auth_user: None,
        size: 100,
    };
    Event::new(QueueId(id), Some(message_id), kind)
        .with_envelope(sender, recipients.iter().copied())
        .at(at)
}

fn delivered(id: u64, recipient: &str, at: i64) -> Event {
    let kind = EventKind::Delivered {
        recipient: recipient.into(),
        relay: Some("mx.example[192.0.2.9]:25".into()),
        dsn_status: "2.0.0".into(),
    };
    Event::new(QueueId(id), None, kind).at(at)
}

fn names(timeline: &Timeline) -> Vec<(String, &'static str)> {
    timeline
        .events
        .iter()
        .map(|e| (e.queue_id.clone(), e.kind.name()))
        .collect()
}

fn ask(store: &Store, query: Query) -> Timeline {
    let filter = query.filter(T0 + 10_000).expect("valid query");
    store.timeline(&filter, MAX_EVENTS).expect("timeline")
}

fn by_id(id: u64) -> Query {
    Query {
        id: Some(QueueId(id).to_string()),
        ..Default::default()
    }
}

#[test]
fn a_timeline_by_id_is_in_order_with_its_message_id() {
    let (_dir, mut store) = store();
    let queued = Event::new(
        QueueId(1),
        Some("<a@x>"),
        EventKind::Queued { recipients: 1 },
    );
    store
        .insert(&[
            received(1, "<a@x>", "Bob@Example.com", &["Ann@Example.org"], T0),
            queued.at(T0),
            received(2, "<b@x>", "other@example.com", &["c@example.org"], T0 + 1),
            delivered(1, "ann@example.org", T0 + 5),
        ])
        .expect("insert");
    let timeline = ask(&store, by_id(1));
    let id = QueueId(1).to_string();
    assert_eq!(
        names(&timeline),
        [
            (id.clone(), "received"),
            (id.clone(), "queued"),
            (id, "delivered")
        ]
    );
    assert!(timeline
        .events
        .iter()
        .all(|e| e.message_id.as_deref() == Some("a@x")));
    assert!(!timeline.truncated);
}

#[test]
fn message_id_sender_and_recipient_filters_match_however_written() {
    let (_dir, mut store) = store();
    store
        .insert(&[
            received(1, "a@x", "Bob@Example.com", &["ann@example.org"], T0),
            received(
                2,
                "b@x",
                "carl@example.com",
                &["Ann@Example.org", "d@e"],
                T0 + 1,
            ),
            delivered(2, "d@e", T0 + 2),
        ])
        .expect("insert");
    for written in ["<b@x>", "b@x", " <b@x> "] {
        let query = Query {
            message_id: Some(written.into()),
            ..Default::default()
        };
        assert_eq!(ask(&store, query).events.len(), 2, "{written}");
    }
    let query = Query {
        sender: Some("<BOB@example.com>".into()),
        ..Default::default()
    };
    let id1 = QueueId(1).to_string();
    assert_eq!(names(&ask(&store, query)), [(id1, "received")]);
    let query = Query {
        recipient: Some("ann@example.org".into()),
        ..Default::default()
    };
    assert_eq!(
        ask(&store, query).events.len(),
        3,
        "both messages, all events"
    );
    let query = Query {
        recipient: Some("ann@example.org".into()),
        sender: Some("carl@example.com".into()),
        ..Default::default()
    };
    assert_eq!(ask(&store, query).events.len(), 2, "filters combine");
    let query = Query {
        sender: Some("nobody@example.com".into()),
        ..Default::default()
    };
    assert!(ask(&store, query).events.is_empty());
}

#[test]
fn since_keeps_only_recent_events() {
    let (_dir, mut store) = store();
    store
        .insert(&[
            received(1, "a@x", "s@x", &["r@x"], T0 - 3_600_000),
            delivered(1, "r@x", T0 + 5_000),
        ])
        .expect("insert");
    let query = Query {
        since_seconds: Some(60),
        ..Default::default()
    };
    assert_eq!(
        names(&ask(&store, query)),
        [(QueueId(1).to_string(), "delivered")]
    );
    let query = Query {
        id: Some(QueueId(1).to_string()),
        since_seconds: Some(2 * 3600),
        ..Default::default()
    };
    assert_eq!(ask(&store, query).events.len(), 2);
}

#[test]
fn by_id_follows_splits_copies_and_shared_message_ids() {
    let (_dir, mut store) = store();
    let split = EventKind::Split {
        from: QueueId(1),
        recipients: vec!["b@y".into()],
    };
    let copy = EventKind::Copied {
        from: QueueId(2),
        reason: Some("copy rule".into()),
    };
    store
        .insert(&[
            received(1, "m@x", "s@x", &["a@y", "b@y"], T0),
            Event::new(QueueId(2), None, split).at(T0 + 1),
            Event::new(QueueId(3), None, copy).at(T0 + 2),
            // The same message on a second node (or a resend): linked by Message-ID.
            received(4, "<m@x>", "s@x", &["a@y"], T0 + 3),
            received(5, "other@x", "s@x", &["a@y"], T0 + 4),
        ])
        .expect("insert");
    let ids: Vec<String> = ask(&store, by_id(1))
        .events
        .iter()
        .map(|e| e.queue_id.clone())
        .collect();
    let expected: Vec<String> = [1u64, 2, 3, 4]
        .iter()
        .map(|&i| QueueId(i).to_string())
        .collect();
    assert_eq!(ids, expected, "transitive: 3 is a copy of the split 2");
    let from_split = ask(&store, by_id(2));
    assert_eq!(
        from_split.events.len(),
        2,
        "a split's own copy, not its parent"
    );
}

#[test]
fn retention_purge_removes_old_events_and_their_keys() {
    let (_dir, mut store) = store();
    store
        .insert(&[
            received(1, "old@x", "s@x", &["r@x"], T0 - 1000),
            received(2, "new@x", "s@x", &["r@x"], T0),
        ])
        .expect("insert");
    assert_eq!(store.purge(T0).expect("purge"), 1);
    let query = Query {
        message_id: Some("old@x".into()),
        ..Default::default()
    };
    assert!(ask(&store, query).events.is_empty());
    let query = Query {
        recipient: Some("r@x".into()),
        ..Default::default()
    };
    assert_eq!(
        names(&ask(&store, query)),
        [(QueueId(2).to_string(), "received")]
    );
    assert_eq!(store.purge(T0).expect("purge"), 0);
}

#[test]
fn answers_are_capped_and_say_so() {
    let (_dir, mut store) = store();
    let events: Vec<Event> = (0..10).map(|i| delivered(7, "r@x", T0 + i)).collect();
    store.insert(&events).expect("insert");
    let filter = by_id(7).filter(T0).expect("valid");
    let timeline = store.timeline(&filter, 4).expect("timeline");
    assert_eq!(timeline.events.len(), 4);
    assert!(timeline.truncated);
    assert_eq!(timeline.events[0].at_ms, T0, "oldest first");
}

#[test]
fn the_tracker_writes_through_its_thread_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let tracker = Tracker::open_with(dir.path(), Duration::from_secs(3600), 16).expect("open");
        tracker.record(received(9, "t@x", "s@x", &["r@x"], now_ms()));
        tracker.record(delivered(9, "r@x", now_ms()));
        assert!(tracker.flush(Duration::from_secs(10)));
        let timeline = tracker.timeline(&by_id(9)).expect("timeline");
        assert_eq!(timeline.events.len(), 2);
        let status = tracker.status();
        assert_eq!((status.recorded, status.written, status.dropped), (2, 2, 0));
    }
    let tracker = Tracker::open_with(dir.path(), Duration::from_secs(3600), 16).expect("reopen");
    assert_eq!(
        tracker.timeline(&by_id(9)).expect("timeline").events.len(),
        2
    );
}

#[test]
fn opening_purges_what_is_past_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = now_ms() - 2 * 3_600_000;
    Store::open(dir.path())
        .expect("open")
        .insert(&[received(1, "a@x", "s@x", &["r@x"], old)])
        .expect("insert");
    let tracker = Tracker::open_with(dir.path(), Duration::from_secs(3600), 16).expect("open");
    // The purge runs in pieces between batches: wait (bounded) until it is through.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !tracker
        .timeline(&by_id(1))
        .expect("timeline")
        .events
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "old event never purged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_purge_goes_in_bounded_pieces() {
    let (_dir, mut store) = store();
    let chunk = super::store::PURGE_CHUNK;
    let old: Vec<Event> = (0..chunk as i64 + 10)
        .map(|i| delivered(1, "r@x", T0 - 10_000 + i % 1000))
        .collect();
    store.insert(&old).expect("insert");
    let first = store.purge_step(T0).expect("purge");
    assert_eq!((first.deleted, first.done), (chunk as u64, false));
    let second = store.purge_step(T0).expect("purge");
    assert_eq!((second.deleted, second.done), (10, true));
}

#[test]
fn a_full_channel_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No writer runs: the channel fills after 2 events.
    let (tracker, _store, _commands) = Tracker::unstarted(dir.path(), 2).expect("open");
    for i in 0..5 {
        tracker.record(delivered(1, "r@x", T0 + i));
    }
    let status = tracker.status();
    assert_eq!((status.recorded, status.dropped), (5, 3));
    assert!(!tracker.flush(Duration::from_millis(20)), "nobody writes");
}

#[test]
fn received_and_queued_record_the_envelope_for_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = Tracker::open_with(dir.path(), Duration::from_secs(3600), 16).expect("open");
    let envelope = Envelope {
        sender: "Alice@Example.com".into(),
        recipients: vec![crate::queue::Recipient {
            address: "bob@example.org".into(),
            notify: None,
            orcpt: None,
            outcome: Default::default(),
        }],
        received_at: 0,
        client_addr: "192.0.2.7".parse().expect("literal"),
        helo: "c.example".into(),
        auth_user: Some("alice".into()),
        tls: Some("TLSv1.3".into()),
        body: Default::default(),
        smtputf8: false,
        eight_bit: false,
        dsn_ret: None,
        dsn_envid: None,
        message_id: Some("<q@x>".into()),
        subject: None,
        require_tls: false,
    };
    received_and_queued(&tracker, QueueId(3), &envelope, 42);
    let query = Query {
        sender: Some("alice@example.com".into()),
        ..Default::default()
    };
    let timeline = tracker.timeline(&query).expect("timeline");
    let kinds: Vec<&str> = timeline.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["received", "queued"]);
    assert_eq!(timeline.events[0].message_id.as_deref(), Some("q@x"));
    let EventKind::Received {
        client,
        size,
        auth_user,
        ..
    } = &timeline.events[0].kind
    else {
        panic!("not received: {:?}", timeline.events[0]);
    };
    assert_eq!(
        (client.as_str(), *size, auth_user.as_deref()),
        ("192.0.2.7", 42, Some("alice"))
    );
}

#[test]
fn a_flush_commits_at_once_instead_of_waiting_out_the_linger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tracker = Tracker::open_with(dir.path(), Duration::from_secs(3600), 16).expect("open");
    assert!(
        tracker.flush(Duration::from_secs(10)),
        "start-up purge done"
    );
    tracker.record(delivered(3, "r@x", now_ms()));
    let started = std::time::Instant::now();
    assert!(tracker.flush(Duration::from_secs(10)));
    assert!(
        started.elapsed() < super::writer::LINGER,
        "the flush waited {:?}",
        started.elapsed()
    );
    assert_eq!(tracker.status().written, 1);
}

#[test]
fn a_purge_that_finds_nothing_still_leaves_later_orphans_to_the_next() {
    let (_dir, mut store) = store();
    assert_eq!(store.purge(T0).expect("empty purge"), 0);
    store
        .insert(&[received(4, "o@x", "s@x", &["r@x"], T0 - 10)])
        .expect("insert");
    assert_eq!(store.purge(T0).expect("purge"), 1);
    let sender = Query {
        sender: Some("s@x".into()),
        ..Default::default()
    };
    assert!(ask(&store, sender).events.is_empty());
    let orphans: i64 = store
        .connection_for_tests()
        .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
        .expect("count");
    assert_eq!(orphans, 0, "the message row went with its last event");
}

#[test]
fn a_summary_counts_volumes_stops_and_tops_inside_its_window() {
    let (_dir, mut store) = store();
    let verdict = |id: u64, stage: &str, verdict: &str| {
        let kind = EventKind::Verdict {
            stage: stage.into(),
            verdict: verdict.into(),
            reason: None,
            score: None,
        };
        Event::new(QueueId(id), None, kind).at(T0 + 5)
    };
    let rejected = EventKind::Rejected {
        stage: "antivirus".into(),
        reply: "554 5.7.1 virus".into(),
    };
    store
        .insert(&[
            received(1, "a@x", "Bob@Other.org", &["alice@example.com"], T0),
            received(
                2,
                "b@x",
                "bob@other.org",
                &["alice@example.com", "carol@example.net"],
                T0 + 1,
            ),
            received(3, "c@x", "eve@spam.test", &["alice@example.com"], T0 + 2),
            received(
                9,
                "z@x",
                "late@other.org",
                &["alice@example.com"],
                T0 + 100_000,
            ),
            delivered(1, "alice@example.com", T0 + 3),
            delivered(2, "alice@example.com", T0 + 3),
            delivered(2, "carol@Example.NET", T0 + 3),
            verdict(3, "antispam", "quarantine"),
            verdict(2, "antispam", "accept"),
            verdict(3, "antivirus", "reject"),
            Event::new(QueueId(3), None, rejected).at(T0 + 6),
        ])
        .expect("insert");
    let summary = summary::summarise(&store, T0, T0 + 50_000, 2).expect("summary");
    assert_eq!((summary.received, summary.delivered), (3, 3));
    assert_eq!((summary.spam, summary.viruses, summary.rejected), (1, 1, 1));
    let top = |list: &[Count]| {
        list.iter()
            .map(|c| (c.key.clone(), c.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        top(&summary.top_senders),
        [("bob@other.org".into(), 2), ("eve@spam.test".into(), 1)]
    );
    assert_eq!(
        top(&summary.top_recipients)[0],
        ("alice@example.com".into(), 3)
    );
    assert_eq!(
        top(&summary.top_destinations),
        [("example.com".into(), 2), ("example.net".into(), 1)]
    );
    assert_eq!(
        top(&summary.rejections),
        [("antivirus: 554 5.7.1 virus".into(), 1)]
    );
}
