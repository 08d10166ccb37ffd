//! The store's contract: durability order, index repair, filters, release once, purge.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::deliver::DeliveryHandle;
use crate::queue::{QueueIndex, Spool, SyncMode};

fn envelope(sender: &str, recipients: &[&str], subject: &str) -> Envelope {
    let mut envelope = Envelope::for_test(sender, recipients);
    envelope.message_id = Some("<m@test>".into());
    envelope.subject = Some(subject.into());
    envelope
}

fn why(reason: &str, direction: Direction) -> Why {
    Why {
        stage: "rule:invoices".into(),
        reason: reason.into(),
        score: Some(7.5),
        direction,
    }
}

fn config(dir: &Path) -> QuarantineConfig {
    QuarantineConfig {
        dir: dir.to_path_buf(),
        retention: Duration::from_secs(3600),
    }
}

fn content(bytes: &'static [u8]) -> WriteContent {
    Box::new(move |file: &mut std::fs::File| file.write_all(bytes))
}

const MESSAGE: &[u8] = b"Subject: invoice\r\n\r\nplease pay\r\n";

async fn store_one(q: &Quarantine, id: u64, sender: &str, rcpts: &[&str], subject: &str) {
    q.store(
        QueueId(id),
        &envelope(sender, rcpts, subject),
        why("macro invoice", Direction::Inbound),
        content(MESSAGE),
    )
    .await
    .expect("store");
}

#[tokio::test]
async fn a_stored_message_is_on_disk_whole_before_store_returns_and_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    store_one(
        &q,
        0x10,
        "a@partner.example",
        &["b@example.com"],
        "Invoice 7",
    )
    .await;
    let messages = dir.path().join("messages");
    assert_eq!(
        fs::read(messages.join("0000000000000010.eml")).expect("eml"),
        MESSAGE
    );
    assert!(messages.join("0000000000000010.json").exists());
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
        0,
        "a tmp file was left behind"
    );
    drop(q);
    let q = Quarantine::open(&config(dir.path())).expect("reopen");
    let record = q.get(QueueId(0x10)).expect("get").expect("present");
    assert_eq!(record.size, MESSAGE.len() as u64);
    assert_eq!(record.why.reason, "macro invoice");
    assert_eq!(record.envelope.sender, "a@partner.example");
    assert_eq!(record.state(), State::Quarantined);
    assert_eq!(q.raw(QueueId(0x10)).expect("raw"), MESSAGE);
    assert!(matches!(
        q.store(
            QueueId(0x10),
            &record.envelope,
            record.why.clone(),
            content(b"x")
        )
        .await,
        Err(QuarantineError::Exists(_))
    ));
}

#[tokio::test]
async fn a_failed_content_write_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    let failing: WriteContent = Box::new(|file: &mut std::fs::File| {
        file.write_all(b"half")?;
        Err(std::io::Error::other("client went away"))
    });
    let outcome = q
        .store(
            QueueId(0x11),
            &envelope("a@x", &["b@example.com"], "s"),
            why("r", Direction::Inbound),
            failing,
        )
        .await;
    assert!(outcome.is_err());
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
        0
    );
    assert_eq!(
        fs::read_dir(dir.path().join("messages"))
            .expect("dir")
            .count(),
        0
    );
    assert!(q.list(&Filter::default()).expect("list").is_empty());
}

#[tokio::test]
async fn crash_leftovers_are_cleaned_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    store_one(&q, 0x20, "a@x", &["b@example.com"], "kept").await;
    drop(q);
    // A store cut short after the message's rename (no record: never acknowledged), and one
    // cut short while writing its temporary file.
    let messages = dir.path().join("messages");
    fs::write(messages.join("0000000000000021.eml"), b"partial").expect("write");
    fs::write(dir.path().join("tmp/0000000000000022.eml"), b"torn").expect("write");
    let q = Quarantine::open(&config(dir.path())).expect("reopen");
    assert!(!messages.join("0000000000000021.eml").exists());
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
        0
    );
    let ids: Vec<String> = q
        .list(&Filter::default())
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["0000000000000020"]);
}

#[tokio::test]
async fn the_index_is_rebuilt_when_missing_and_repaired_when_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    store_one(&q, 0x30, "a@x", &["b@example.com"], "one").await;
    store_one(&q, 0x31, "c@x", &["d@example.com"], "two").await;
    drop(q);
    fs::remove_file(dir.path().join("index.sqlite")).expect("remove index");
    let q = Quarantine::open(&config(dir.path())).expect("reopen");
    assert_eq!(q.list(&Filter::default()).expect("list").len(), 2);
    drop(q);

    // Behind the index's back: one record deleted, one rewritten (as a crash after the
    // record write and before the index write leaves them), garbage for an index.
    let messages = dir.path().join("messages");
    fs::remove_file(messages.join("0000000000000031.json")).expect("remove");
    let path = messages.join("0000000000000030.json");
    let mut record: Record = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    record.why.reason = "rewritten".into();
    record.generation += 1;
    fs::write(&path, serde_json::to_vec(&record).expect("json")).expect("write");
    let q = Quarantine::open(&config(dir.path())).expect("reopen");
    let listed = q.list(&Filter::default()).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, "rewritten");
    assert_eq!(q.lock_index().generation(QueueId(0x30)), Some(1));
    drop(q);

    fs::write(dir.path().join("index.sqlite"), b"not a database at all").expect("garble");
    let q = Quarantine::open(&config(dir.path())).expect("reopen over garbage");
    assert_eq!(q.list(&Filter::default()).expect("list").len(), 1);
}

#[tokio::test]
async fn filters_match_sender_recipient_subject_reason_date_and_direction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    store_one(
        &q,
        0x40,
        "Bills@Partner.example",
        &["alice@example.com"],
        "Invoice 7",
    )
    .await;
    store_one(
        &q,
        0x41,
        "news@list.example",
        &["bob@example.com"],
        "Weekly",
    )
    .await;
    q.store(
        QueueId(0x42),
        &envelope("alice@example.com", &["x@far.example"], "Report"),
        why("outbound secret", Direction::Outbound),
        content(MESSAGE),
    )
    .await
    .expect("store");
    let ids = |filter: Filter| -> Vec<String> {
        q.list(&filter)
            .expect("list")
            .into_iter()
            .map(|e| e.id[14..].to_string())
            .collect()
    };
    assert_eq!(ids(Filter::default()), ["42", "41", "40"], "newest first");
    let by = |f: fn(&mut Filter)| {
        let mut filter = Filter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(
        ids(by(|f| f.sender = Some("partner.EXAMPLE".into()))),
        ["40"]
    );
    assert_eq!(ids(by(|f| f.recipient = Some("bob@".into()))), ["41"]);
    assert_eq!(ids(by(|f| f.subject = Some("invoice".into()))), ["40"]);
    assert_eq!(ids(by(|f| f.reason = Some("secret".into()))), ["42"]);
    assert_eq!(ids(by(|f| f.direction = Some(Direction::Outbound))), ["42"]);
    assert_eq!(
        ids(by(|f| {
            f.direction = Some(Direction::Inbound);
            f.reason = Some("macro".into());
        })),
        ["41", "40"]
    );
    let now = crate::queue::unix_now();
    assert_eq!(ids(by(|f| f.since = Some(0))).len(), 3);
    assert!(ids(Filter {
        since: Some(now + 10),
        ..Default::default()
    })
    .is_empty());
    assert!(ids(Filter {
        until: Some(now.saturating_sub(10)),
        ..Default::default()
    })
    .is_empty());
    assert_eq!(ids(by(|f| f.limit = Some(1))), ["42"]);
    let entry = &q
        .list(&by(|f| f.subject = Some("Invoice".into())))
        .expect("list")[0];
    assert_eq!(entry.recipients, ["alice@example.com"]);
    assert_eq!(entry.score, Some(7.5));
    assert_eq!(entry.stage, "rule:invoices");
    assert_eq!(entry.size, MESSAGE.len() as u64);
}

struct Queue {
    spool: Spool,
    queue: QueueIndex,
    delivery: DeliveryHandle,
    _inbox: crate::deliver::DeliveryInbox,
    tracker: crate::track::Tracker,
}

fn spool_at(dir: &Path) -> Queue {
    let (spool, recovered) = Spool::open(dir, SyncMode::Syncfs).expect("spool");
    let (delivery, inbox) = DeliveryHandle::channel();
    let track_dir = dir.join("tracking");
    Queue {
        spool,
        queue: QueueIndex::from_recovered(recovered),
        delivery,
        _inbox: inbox,
        tracker: crate::track::Tracker::open_with(
            &track_dir,
            std::time::Duration::from_secs(3600),
            1024,
        )
        .expect("tracker"),
    }
}

impl Queue {
    fn requeue(&self) -> Requeue<'_> {
        Requeue {
            spool: &self.spool,
            queue: &self.queue,
            delivery: &self.delivery,
            tracker: &self.tracker,
            by: "test",
        }
    }
}

#[tokio::test]
async fn release_queues_one_copy_and_a_second_release_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    let queue = spool_at(spool.path());
    store_one(&q, 0x50, "a@x", &["b@example.com", "c@example.com"], "s").await;
    let released = q
        .release(QueueId(0x50), None, &queue.requeue())
        .await
        .expect("release");
    assert_eq!(released.recipients, ["b@example.com", "c@example.com"]);
    let copy: QueueId = released.queue_id.parse().expect("id");
    assert_eq!(queue.spool.read_content(copy).await.expect("copy"), MESSAGE);
    let entry = queue.queue.get(copy).expect("queued");
    assert_eq!(entry.recipients, ["b@example.com", "c@example.com"]);
    assert!(matches!(
        q.release(QueueId(0x50), None, &queue.requeue()).await,
        Err(QuarantineError::AlreadyReleased(_))
    ));
    assert_eq!(queue.queue.len(), 1, "a second copy was queued");
    let record = q.get(QueueId(0x50)).expect("get").expect("present");
    assert_eq!(record.state(), State::Released);
    assert_eq!(record.releases.len(), 1);
    assert_eq!(
        q.list(&Filter::default()).expect("list")[0].state,
        State::Released
    );
    // The refusal survives a restart: it is read from the record, not from memory.
    drop(q);
    let q = Quarantine::open(&config(dir.path())).expect("reopen");
    assert!(matches!(
        q.release(QueueId(0x50), None, &queue.requeue()).await,
        Err(QuarantineError::AlreadyReleased(_))
    ));
    assert!(matches!(
        q.release(QueueId(0x99), None, &queue.requeue()).await,
        Err(QuarantineError::NotFound(_))
    ));
}

#[tokio::test]
async fn release_to_one_original_recipient_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    let queue = spool_at(spool.path());
    store_one(&q, 0x60, "a@x", &["b@example.com", "c@example.com"], "s").await;
    assert!(matches!(
        q.release(QueueId(0x60), Some("analyst@example.com"), &queue.requeue())
            .await,
        Err(QuarantineError::NotARecipient { .. })
    ));
    let first = q
        .release(QueueId(0x60), Some("C@example.com"), &queue.requeue())
        .await
        .expect("release to c");
    assert_eq!(first.recipients, ["c@example.com"]);
    assert_eq!(
        q.get(QueueId(0x60)).expect("get").expect("present").state(),
        State::PartlyReleased
    );
    assert!(matches!(
        q.release(QueueId(0x60), Some("c@example.com"), &queue.requeue())
            .await,
        Err(QuarantineError::AlreadyReleased(_))
    ));
    let rest = q
        .release(QueueId(0x60), None, &queue.requeue())
        .await
        .expect("release the rest");
    assert_eq!(rest.recipients, ["b@example.com"]);
    let copy: QueueId = rest.queue_id.parse().expect("id");
    assert_eq!(
        queue.queue.get(copy).expect("queued").recipients,
        ["b@example.com"]
    );
    assert_eq!(queue.queue.len(), 2);
}

/// A crash between the "pending" record and the "released" record, on either side of the
/// spool commit.
#[tokio::test]
async fn an_interrupted_release_is_completed_or_undone_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    let queue = spool_at(spool.path());
    store_one(&q, 0x70, "a@x", &["b@example.com"], "committed").await;
    store_one(&q, 0x71, "a@x", &["b@example.com"], "not committed").await;
    // 0x70: released, then the record rewound to "pending" as the crash would have left it.
    let done = q
        .release(QueueId(0x70), None, &queue.requeue())
        .await
        .expect("release");
    let mut record = q.get(QueueId(0x70)).expect("get").expect("present");
    record.pending = record.releases.pop();
    record.generation += 1;
    q.files.write_record(&record).expect("rewind");
    // 0x71: "pending" with a copy id the spool never saw.
    let mut record = q.get(QueueId(0x71)).expect("get").expect("present");
    record.pending = Some(Release {
        recipients: vec!["b@example.com".into()],
        queue_id: QueueId(0xdead).to_string(),
        at: 1,
    });
    record.generation += 1;
    q.files.write_record(&record).expect("pending");
    drop(q);

    let q = Quarantine::open(&config(dir.path())).expect("reopen");
    let state = |id| {
        q.list(&Filter::default())
            .expect("list")
            .into_iter()
            .find(|e: &Entry| e.id[14..] == format!("{id:02x}"))
            .map(|e| e.state)
    };
    assert_eq!(state(0x70), Some(State::Releasing));
    q.reconcile(&queue.queue).await.expect("reconcile");
    let completed = q.get(QueueId(0x70)).expect("get").expect("present");
    assert_eq!(completed.state(), State::Released);
    assert_eq!(completed.releases[0].queue_id, done.queue_id);
    let undone = q.get(QueueId(0x71)).expect("get").expect("present");
    assert_eq!(undone.state(), State::Quarantined);
    assert_eq!(state(0x71), Some(State::Quarantined));
    q.release(QueueId(0x71), None, &queue.requeue())
        .await
        .expect("released after the undo");
    assert_eq!(queue.queue.len(), 2);
}

#[tokio::test]
async fn delete_and_purge_remove_files_and_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Quarantine::open(&config(dir.path())).expect("open");
    store_one(&q, 0x80, "a@x", &["b@example.com"], "s").await;
    store_one(&q, 0x81, "a@x", &["b@example.com"], "s").await;
    q.delete(QueueId(0x80)).await.expect("delete");
    assert!(matches!(
        q.delete(QueueId(0x80)).await,
        Err(QuarantineError::NotFound(_))
    ));
    assert!(matches!(
        q.raw(QueueId(0x80)),
        Err(QuarantineError::NotFound(_))
    ));
    assert!(!dir.path().join("messages/0000000000000080.eml").exists());
    let now = crate::queue::unix_now();
    assert_eq!(
        q.purge_expired(now).await.expect("purge"),
        0,
        "purged too early"
    );
    assert_eq!(q.purge_expired(now + 3601).await.expect("purge"), 1);
    assert!(q.list(&Filter::default()).expect("list").is_empty());
    assert_eq!(
        fs::read_dir(dir.path().join("messages"))
            .expect("dir")
            .count(),
        0
    );
    assert_eq!(q.purge_interval(), Duration::from_secs(360));
}
