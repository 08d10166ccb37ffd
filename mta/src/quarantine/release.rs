//! Release: a quarantined message goes back into the queue, once per recipient, past every
//! filter (see the module doc of `quarantine` for the crash window).
//!
//! "Release to" names one of the message's original recipients. An administrator who wants
//! someone else (a security analyst) to see the message downloads it (`quarantine show
//! --raw`) instead: releasing to any address would turn the quarantine into a way to forward
//! mail that a filter stopped to people it was never sent to.

use std::io::Read;

use serde::Serialize;

use super::{blocking, Quarantine, QuarantineError, Record, Release};
use crate::deliver::DeliveryHandle;
use crate::queue::{unix_now, Draft, Envelope, QueueEntry, QueueId, QueueIndex, Spool};
use crate::track::{Event, EventKind, Tracker};

/// Reads the quarantined message into the draft in pieces of this size.
const PIECE: usize = 64 * 1024;

/// Where a released copy goes: the spool and queue the SMTP sessions commit to.
pub struct Requeue<'a> {
    pub spool: &'a Spool,
    pub queue: &'a QueueIndex,
    pub delivery: &'a DeliveryHandle,
    /// The release goes on the timeline before the copy is submitted for delivery.
    pub tracker: &'a Tracker,
    /// Who released (`operator`, a console user).
    pub by: &'a str,
}

/// `released` on the quarantined message's timeline; the copy starts its own, linked back.
fn track_release(into: &Requeue<'_>, id: QueueId, copy: QueueId, envelope: &Envelope) {
    let mid = envelope.message_id.as_deref();
    let recipients = || envelope.recipients.iter().map(|r| r.address.as_str());
    let released = EventKind::Released {
        by: into.by.to_string(),
    };
    into.tracker
        .record(Event::new(id, mid, released).with_envelope(&envelope.sender, recipients()));
    let copied = EventKind::Copied {
        from: id,
        reason: Some("released from the quarantine".into()),
    };
    into.tracker
        .record(Event::new(copy, mid, copied).with_envelope(&envelope.sender, recipients()));
    let queued = EventKind::Queued {
        recipients: envelope.recipients.len(),
    };
    into.tracker.record(Event::new(copy, mid, queued));
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub id: String,
    pub queue_id: String,
    pub recipients: Vec<String>,
}

impl Quarantine {
    /// Re-queues `id` for every recipient not yet released, or only for `to`; refused when
    /// those were released already.
    pub async fn release(
        &self,
        id: QueueId,
        to: Option<&str>,
        into: &Requeue<'_>,
    ) -> Result<Released, QuarantineError> {
        let _changing = self.changing.lock().await;
        let mut record = self.get(id)?.ok_or(QuarantineError::NotFound(id))?;
        let recipients = chosen_recipients(&record, id, to)?;
        let draft = into.spool.begin();
        let queue_id = draft.id();
        record.pending = Some(Release {
            recipients: recipients.clone(),
            queue_id: queue_id.to_string(),
            at: unix_now(),
        });
        self.rewrite(&mut record).await?;
        let envelope = released_envelope(&record.envelope, &recipients);
        match self.commit_copy(id, draft, &envelope, into).await {
            Ok(size) => {
                track_release(into, id, queue_id, &envelope);
                into.queue
                    .insert(queue_id, QueueEntry::new(queue_id, envelope, size));
                into.delivery.submit(queue_id);
            }
            Err(e) => {
                // Not committed, so not released: the entry must not stay "releasing".
                record.pending = None;
                self.rewrite(&mut record).await?;
                return Err(e);
            }
        }
        finish(&mut record);
        self.rewrite(&mut record).await?;
        log::info!(
            queue_id:% = id, released_as:% = queue_id, nrcpt = recipients.len();
            "quarantine: released {id} as {queue_id} to {}", recipients.join(",")
        );
        Ok(Released {
            id: id.to_string(),
            queue_id: queue_id.to_string(),
            recipients,
        })
    }

    /// Completes or undoes the releases a crash interrupted, from what the spool recovered.
    pub async fn reconcile(&self, queue: &QueueIndex) -> Result<(), QuarantineError> {
        let _changing = self.changing.lock().await;
        let interrupted: Vec<Record> = self
            .files
            .recover()?
            .into_iter()
            .filter(|r| r.pending.is_some())
            .collect();
        for mut record in interrupted {
            let Some(pending) = record.pending.clone() else {
                continue;
            };
            let committed = pending
                .queue_id
                .parse::<QueueId>()
                .is_ok_and(|q| queue.contains(q));
            if committed {
                log::info!(queue_id = record.id.as_str(), released_as = pending.queue_id.as_str();
                    "quarantine: completing the release of {} interrupted by a crash", record.id);
                finish(&mut record);
            } else {
                log::warn!(queue_id = record.id.as_str(), released_as = pending.queue_id.as_str();
                    "quarantine: the release of {} as {} was interrupted by a crash and its copy \
                     is not queued; it is quarantined again (if that copy was delivered just \
                     before the crash, releasing it again delivers it twice)",
                    record.id, pending.queue_id);
                record.pending = None;
            }
            self.rewrite(&mut record).await?;
        }
        Ok(())
    }

    /// Writes `record` with a new generation durably, then its index row.
    async fn rewrite(&self, record: &mut Record) -> Result<(), QuarantineError> {
        record.generation += 1;
        let files = self.files.clone();
        let copy = record.clone();
        blocking(move || files.write_record(&copy)).await?;
        self.index_upsert(record);
        Ok(())
    }

    /// Streams the quarantined message into `draft` and commits it; the content's size.
    async fn commit_copy(
        &self,
        id: QueueId,
        mut draft: Draft,
        envelope: &Envelope,
        into: &Requeue<'_>,
    ) -> Result<u64, QuarantineError> {
        let spool_error = |source| QuarantineError::Spool { id, source };
        let files = self.files.clone();
        let mut file = blocking(move || files.open_message(id)).await?;
        loop {
            let (back, piece) = blocking(move || read_piece(file, id)).await?;
            file = back;
            if piece.is_empty() {
                break;
            }
            draft.write(&piece).await.map_err(spool_error)?;
        }
        let size = draft.content_len();
        into.spool
            .commit(draft, envelope)
            .await
            .map_err(spool_error)?;
        Ok(size)
    }
}

fn read_piece(
    mut file: std::fs::File,
    id: QueueId,
) -> Result<(std::fs::File, Vec<u8>), QuarantineError> {
    let mut piece = vec![0u8; PIECE];
    let read = file
        .read(&mut piece)
        .map_err(|source| QuarantineError::Io {
            path: format!("{id}.eml").into(),
            source,
        })?;
    piece.truncate(read);
    Ok((file, piece))
}

/// The recipients this release covers; refused when there are none left.
fn chosen_recipients(
    record: &Record,
    id: QueueId,
    to: Option<&str>,
) -> Result<Vec<String>, QuarantineError> {
    let unreleased = record.unreleased();
    let Some(to) = to else {
        if unreleased.is_empty() {
            return Err(QuarantineError::AlreadyReleased(id));
        }
        return Ok(unreleased);
    };
    let original = record
        .envelope
        .recipients
        .iter()
        .any(|r| r.address.eq_ignore_ascii_case(to));
    if !original {
        return Err(QuarantineError::NotARecipient {
            id,
            address: to.to_string(),
        });
    }
    unreleased
        .into_iter()
        .find(|a| a.eq_ignore_ascii_case(to))
        .map(|a| vec![a])
        .ok_or(QuarantineError::AlreadyReleased(id))
}

/// The queued copy's envelope: the released recipients, all pending, received now.
fn released_envelope(original: &Envelope, recipients: &[String]) -> Envelope {
    let mut envelope = original.clone();
    envelope
        .recipients
        .retain(|r| recipients.iter().any(|a| a == &r.address));
    for recipient in &mut envelope.recipients {
        recipient.outcome = Default::default();
    }
    envelope.received_at = unix_now();
    envelope
}

fn finish(record: &mut Record) {
    if let Some(mut done) = record.pending.take() {
        done.at = unix_now();
        record.releases.push(done);
    }
}
