//! What the receiving side does with a message once the pipeline has spoken and the client is
//! to get 250: one queued copy per accepted group of recipients (rewritten where a stage
//! changed it), quarantine copies, journaling copies, and a notice for rejected recipients.
//!
//! # Invariants
//! - Nothing here replies: the caller sends 250 only after `take` returned `Ok`, that is once
//!   every queued copy and every quarantine copy is durable.
//! - A message no stage changed, with one group, is committed from its own draft (the journal
//!   fast path); other copies are written to fresh drafts from a snapshot of it.
//! - The first group to be queued keeps the message's queue id (the one in our Received:
//!   header and in the 250 reply); other groups and copies get ids of their own.

use std::sync::Arc;

use crate::config::Direction;
use crate::deliver::dsn;
use crate::filters::{archive, dkim::Sealer};
use crate::gateway::{Gateway, Origin};
use crate::pipeline::{
    apply_to_envelope, rewrite_header, ArchiveRequest, ContentError, ContentReader, CopyRequest,
    Group, GroupVerdict, Modification, Step,
};
use crate::policy::SessionInfo;
use crate::quarantine::{QuarantineError, Why};
use crate::queue::{
    unix_now, Draft, DraftSnapshot, Envelope, QueueId, Recipient, RecipientOutcome, SpoolError,
};
use crate::smtp::address::quoted;
use crate::track::{self, Event, EventKind, Tracker};

/// Why the message could not be taken (the client gets 451 or 452 and retries).
#[derive(Debug, thiserror::Error)]
pub enum DisposalError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    #[error("archive {dir}: {source}")]
    Archive {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl DisposalError {
    pub fn is_disk_full(&self) -> bool {
        match self {
            DisposalError::Spool(e) => e.is_disk_full(),
            DisposalError::Quarantine(e) => e.is_disk_full(),
            DisposalError::Archive { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
        }
    }
}

/// The message as received, for every copy made of it.
pub struct Received<'a> {
    pub draft: Draft,
    /// Our header section (Received: first), without the empty line.
    pub header: &'a [u8],
    pub envelope: Envelope,
}

/// Where each part of the message went, for the log, the tracking timeline and the reply.
#[derive(Debug, Default)]
pub struct Taken {
    /// (queue id, recipients) of each queued copy; the first keeps the message's id.
    pub queued: Vec<(QueueId, Vec<String>)>,
    pub quarantined: Vec<Vec<String>>,
    pub discarded: Vec<Vec<String>>,
    pub rejected: Vec<Vec<String>>,
    /// Journaling copies: (queue id, recipients, who asked).
    pub copies: Vec<(QueueId, Vec<String>, String)>,
}

/// Commits what the groups' verdicts say; see the module contract. Outbound mail whose
/// From: domain has a key is DKIM-signed last, on each group's final form.
pub async fn take(
    gateway: &Gateway,
    session: &SessionInfo,
    hostname: &str,
    sealer: &Sealer,
    message: Received<'_>,
    mut groups: Vec<Group>,
) -> Result<Taken, DisposalError> {
    let id = message.draft.id();
    let size = message.draft.content_len();
    record_received(&gateway.tracker, id, &message.envelope, size, &groups);
    let mut taken = Taken::default();
    let sealing = session.direction() == Direction::Outbound && sealer.signs(message.header);
    let fast_path = !sealing
        && groups.len() == 1
        && groups
            .iter()
            .all(|g| !g.changes_content() && g.copies.is_empty() && g.archives.is_empty())
        && groups[0].hold_original.is_none()
        && groups[0].final_verdict() == GroupVerdict::Accept;
    if fast_path {
        let mut envelope = message.envelope;
        apply_to_envelope(&mut envelope, &groups[0].modifications);
        let recipients = addresses(&envelope);
        if !envelope.recipients.is_empty() {
            gateway
                .enqueue(message.draft, envelope, Origin::Filtered)
                .await?;
            taken.queued.push((id, recipients));
        }
        return Ok(taken);
    }
    let snapshot = Arc::new(message.draft.snapshot());
    let source = Source {
        id,
        snapshot,
        header: message.header,
    };
    if sealing {
        for group in groups
            .iter_mut()
            .filter(|g| g.final_verdict() == GroupVerdict::Accept)
        {
            seal(sealer, &source, group).await?;
        }
    }
    // Copies and quarantine first: a failure there still lets the client retry the whole
    // message before any of it is queued.
    take_archives(&source, &message.envelope, &groups).await?;
    take_copies(
        gateway,
        hostname,
        &source,
        &message.envelope,
        &groups,
        &mut taken,
    )
    .await?;
    for group in groups
        .iter()
        .filter(|g| g.final_verdict() == GroupVerdict::Quarantine)
    {
        let keeps_id = taken.quarantined.is_empty();
        quarantine(
            gateway,
            session,
            &source,
            &message.envelope,
            group,
            keeps_id,
        )
        .await?;
        taken
            .quarantined
            .push(group_addresses(&message.envelope, group));
    }
    for group in groups
        .iter()
        .filter(|g| g.final_verdict() == GroupVerdict::Accept && g.hold_original.is_some())
    {
        keep_original(gateway, session, &source, &message.envelope, group).await?;
    }
    let mut original = Some(message.draft);
    for group in &groups {
        let recipients = group_addresses(&message.envelope, group);
        match group.final_verdict() {
            GroupVerdict::Accept => {
                let draft = original.take();
                if let Some(queued) = queue_group(
                    gateway,
                    &source,
                    &message.envelope,
                    group,
                    draft,
                    taken.queued.is_empty(),
                )
                .await?
                {
                    taken.queued.push(queued);
                }
            }
            GroupVerdict::Discard => {
                record_end(&gateway.tracker, id, &message.envelope, group);
                taken.discarded.push(recipients)
            }
            GroupVerdict::Reject(_) => {
                record_end(&gateway.tracker, id, &message.envelope, group);
                taken.rejected.push(recipients)
            }
            GroupVerdict::Quarantine | GroupVerdict::Tempfail(_) => {}
        }
    }
    notify_rejected(gateway, hostname, &source, &message.envelope, &groups).await;
    Ok(taken)
}

/// The message's first events: what the client sent and what each stage said (a stage that
/// answered before a split is recorded once).
pub fn record_received(
    tracker: &Tracker,
    id: QueueId,
    envelope: &Envelope,
    size: u64,
    groups: &[Group],
) {
    let mid = envelope.message_id.as_deref();
    tracker.record(track::received_event(id, envelope, size));
    let mut seen: Vec<&Step> = Vec::new();
    for step in groups.iter().flat_map(|g| g.steps.iter()) {
        if seen.contains(&step) {
            continue;
        }
        seen.push(step);
        let verdict = EventKind::Verdict {
            stage: step.stage.clone(),
            verdict: step.verdict.to_string(),
            reason: step.reason.clone(),
            score: step.score,
        };
        tracker.record(Event::new(id, mid, verdict));
    }
}

/// A group's end that is not a queued copy: rejected, discarded (quarantine records its own).
pub fn record_end(tracker: &Tracker, id: QueueId, envelope: &Envelope, group: &Group) {
    let mid = envelope.message_id.as_deref();
    let stage = group
        .decided_by
        .clone()
        .unwrap_or_else(|| "pipeline".to_string());
    let kind = match group.final_verdict() {
        GroupVerdict::Discard => EventKind::Discarded {
            stage,
            reason: group.reason.clone(),
        },
        GroupVerdict::Reject(reply) | GroupVerdict::Tempfail(reply) => EventKind::Rejected {
            stage,
            reply: format!("{} {}", reply.code, reply.text),
        },
        GroupVerdict::Accept | GroupVerdict::Quarantine => return,
    };
    let recipients = group_addresses(envelope, group);
    tracker.record(
        Event::new(id, mid, kind)
            .with_envelope(&envelope.sender, recipients.iter().map(String::as_str)),
    );
}

/// The received message, readable as many times as copies need.
struct Source<'a> {
    id: QueueId,
    snapshot: Arc<DraftSnapshot>,
    header: &'a [u8],
}

impl Source<'_> {
    fn body_offset(&self) -> u64 {
        (self.header.len() as u64 + 2).min(self.snapshot.len())
    }
}

fn addresses(envelope: &Envelope) -> Vec<String> {
    envelope
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect()
}

fn group_addresses(envelope: &Envelope, group: &Group) -> Vec<String> {
    group
        .recipients
        .iter()
        .filter_map(|&i| envelope.recipients.get(i))
        .map(|r| r.address.clone())
        .collect()
}

/// The envelope as received, with the group's recipients only.
fn group_original_envelope(envelope: &Envelope, group: &Group) -> Envelope {
    let mut own = envelope.clone();
    own.recipients = group
        .recipients
        .iter()
        .filter_map(|&i| envelope.recipients.get(i).cloned())
        .collect();
    own
}

/// The envelope of one group: its recipients only, with the stages' envelope changes.
fn group_envelope(envelope: &Envelope, group: &Group) -> Envelope {
    let mut own = group_original_envelope(envelope, group);
    apply_to_envelope(&mut own, &group.modifications);
    own
}

/// Queues one accepted group; `original` is the received draft when still unused.
async fn queue_group(
    gateway: &Gateway,
    source: &Source<'_>,
    envelope: &Envelope,
    group: &Group,
    original: Option<Draft>,
    keeps_id: bool,
) -> Result<Option<(QueueId, Vec<String>)>, DisposalError> {
    let mut own = group_envelope(envelope, group);
    if own.recipients.is_empty() {
        return Ok(None);
    }
    let draft = match original {
        Some(draft) if !group.changes_content() => draft,
        _ => {
            let draft = if keeps_id {
                gateway.spool.begin_rewrite(source.id)
            } else {
                gateway.spool.begin()
            };
            let (draft, eight_bit) = write_edited(draft, source, &group.modifications).await?;
            own.eight_bit |= eight_bit;
            draft
        }
    };
    let recipients = addresses(&own);
    let origin = if keeps_id {
        Origin::Filtered
    } else {
        Origin::Split { from: source.id }
    };
    let id = gateway.enqueue(draft, own, origin).await?;
    Ok(Some((id, recipients)))
}

/// Writes the message with `modifications` applied into `draft`; also says whether a
/// replaced body has 8-bit bytes.
async fn write_edited(
    mut draft: Draft,
    source: &Source<'_>,
    modifications: &[Modification],
) -> Result<(Draft, bool), SpoolError> {
    let edit = rewrite_header(source.header, modifications);
    draft.write(&edit.header).await?;
    draft.write(b"\r\n").await?;
    let replaced = modifications.iter().rev().find_map(|m| match m {
        Modification::ReplaceBody(body) => Some(body),
        _ => None,
    });
    if let Some(body) = replaced {
        draft.write(body).await?;
        return Ok((draft, !body.is_ascii()));
    }
    copy_body(&mut draft, source, source.body_offset()).await?;
    Ok((draft, false))
}

/// Streams the received content from `offset` into `draft`, a megabyte at a time.
async fn copy_body(draft: &mut Draft, source: &Source<'_>, offset: u64) -> Result<(), SpoolError> {
    let mut reader = ContentReader::from_snapshot(source.snapshot.clone(), offset);
    while let Some(piece) = reader.next(1 << 20).await.map_err(read_error)? {
        draft.write(&piece).await?;
    }
    Ok(())
}

fn read_error(error: ContentError) -> SpoolError {
    let source = match error {
        ContentError::Read(e) => e,
        ContentError::Task(e) => std::io::Error::other(e),
    };
    SpoolError::Io {
        path: "draft".into(),
        source,
    }
}

/// The group's message as it will be queued, in memory (for signing).
async fn final_form(source: &Source<'_>, group: &Group) -> Result<Vec<u8>, SpoolError> {
    let mut message = rewrite_header(source.header, &group.modifications).header;
    message.extend_from_slice(b"\r\n");
    let replaced = group.modifications.iter().rev().find_map(|m| match m {
        Modification::ReplaceBody(body) => Some(body),
        _ => None,
    });
    if let Some(body) = replaced {
        message.extend_from_slice(body);
        return Ok(message);
    }
    let snapshot = source.snapshot.clone();
    let from = source.body_offset();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = vec![0u8; (snapshot.len() - from) as usize];
        let mut filled = 0;
        while filled < body.len() {
            let n = snapshot.read_at(from + filled as u64, &mut body[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        body.truncate(filled);
        Ok::<_, std::io::Error>(body)
    })
    .await
    .map_err(|e| read_error(ContentError::Task(e.to_string())))?
    .map_err(|e| read_error(ContentError::Read(e)))?;
    message.extend_from_slice(&body);
    Ok(message)
}

/// Adds the DKIM-Signature for the group's final form (after our Received:, before the
/// rest). A signing failure sends the message unsigned and says so: a signature is not worth
/// holding mail for.
async fn seal(sealer: &Sealer, source: &Source<'_>, group: &mut Group) -> Result<(), SpoolError> {
    let message = final_form(source, group).await?;
    match sealer.sign(&message) {
        Some(Ok(value)) => {
            log::info!(queue_id:% = source.id; "dkim: id={} signed", source.id);
            group.modifications.push(Modification::InsertHeader {
                index: 0,
                name: "DKIM-Signature".into(),
                value,
            });
        }
        Some(Err(e)) => log::error!(
            queue_id:% = source.id; "dkim: id={} sent unsigned: {e}", source.id
        ),
        None => {}
    }
    Ok(())
}

/// The original envelope, as journaling copies and archive files record it.
fn envelope_fields(envelope: &Envelope) -> [Modification; 2] {
    [
        Modification::AddHeader {
            name: "X-Bulwark-Original-Sender".into(),
            value: format!("<{}>", quoted(&envelope.sender)),
        },
        Modification::AddHeader {
            name: "X-Bulwark-Original-Recipients".into(),
            value: original_recipients(envelope),
        },
    ]
}

/// Local archive copies (`copy` rules with `archive_dir`), each directory once, durable
/// before the reply.
async fn take_archives(
    source: &Source<'_>,
    envelope: &Envelope,
    groups: &[Group],
) -> Result<(), DisposalError> {
    let mut done: Vec<&ArchiveRequest> = Vec::new();
    for group in groups {
        if matches!(
            group.final_verdict(),
            GroupVerdict::Reject(_) | GroupVerdict::Tempfail(_)
        ) {
            continue;
        }
        for request in &group.archives {
            if done.iter().any(|d| d.dir == request.dir) {
                continue;
            }
            done.push(request);
            store_archive(source, envelope, request).await?;
        }
    }
    Ok(())
}

async fn store_archive(
    source: &Source<'_>,
    envelope: &Envelope,
    request: &ArchiveRequest,
) -> Result<(), DisposalError> {
    let prefix = rewrite_header(b"", &envelope_fields(envelope)).header;
    let snapshot = source.snapshot.clone();
    let dir = request.dir.clone();
    let queue_id = source.id.to_string();
    let sender = envelope.sender.clone();
    let recipients = addresses(envelope);
    let stored = tokio::task::spawn_blocking(move || {
        let entry = archive::Entry {
            queue_id: &queue_id,
            sender: &sender,
            recipients: &recipients,
            unix_time: unix_now(),
        };
        archive::store(&dir, &entry, &prefix, &snapshot)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(|source| DisposalError::Archive {
        dir: request.dir.clone(),
        source,
    })?;
    log::info!(
        queue_id:% = source.id, by = request.by.as_str();
        "archive: id={} stored as {} by={}", source.id, stored.display(), request.by
    );
    Ok(())
}

/// Journaling copies (`copy` rules): the message as received, with the original envelope in
/// `X-Bulwark-Original-*` fields, to the copy's recipients. Each distinct request once.
async fn take_copies(
    gateway: &Gateway,
    hostname: &str,
    source: &Source<'_>,
    envelope: &Envelope,
    groups: &[Group],
    taken: &mut Taken,
) -> Result<(), DisposalError> {
    let mut done: Vec<&CopyRequest> = Vec::new();
    for group in groups {
        if matches!(
            group.final_verdict(),
            GroupVerdict::Reject(_) | GroupVerdict::Tempfail(_)
        ) {
            continue;
        }
        for request in &group.copies {
            if done.iter().any(|d| d.recipients == request.recipients) {
                continue;
            }
            done.push(request);
            let id = queue_copy(gateway, hostname, source, envelope, request).await?;
            taken
                .copies
                .push((id, request.recipients.clone(), request.by.clone()));
        }
    }
    Ok(())
}

async fn queue_copy(
    gateway: &Gateway,
    _hostname: &str,
    source: &Source<'_>,
    envelope: &Envelope,
    request: &CopyRequest,
) -> Result<QueueId, DisposalError> {
    let [sender_field, recipients_field] = envelope_fields(envelope);
    let recorded = [
        sender_field,
        recipients_field,
        Modification::AddHeader {
            name: "X-Bulwark-Copy-Of".into(),
            value: format!("{} ({})", source.id, request.by),
        },
    ];
    let (draft, _) = write_edited(gateway.spool.begin(), source, &recorded).await?;
    let mut copy = envelope.clone();
    copy.recipients = request
        .recipients
        .iter()
        .map(|address| Recipient {
            address: address.clone(),
            notify: Some("NEVER".into()),
            orcpt: None,
            outcome: RecipientOutcome::Pending,
        })
        .collect();
    let origin = Origin::Copy {
        from: source.id,
        by: &request.by,
    };
    Ok(gateway.enqueue(draft, copy, origin).await?)
}

/// The recipients as an RFC 5322 address list, folded so that no line of the field is longer
/// than 78 octets (one address longer than that gets a line of its own).
fn original_recipients(envelope: &Envelope) -> String {
    let mut value = String::new();
    let mut line = "X-Bulwark-Original-Recipients: ".len();
    for (i, recipient) in envelope.recipients.iter().enumerate() {
        let item = format!("<{}>", quoted(&recipient.address));
        if i > 0 {
            value.push(',');
            line += 1;
            if line + 1 + item.len() > 78 {
                value.push_str("\r\n\t");
                line = 1;
            } else {
                value.push(' ');
                line += 1;
            }
        }
        line += item.len();
        value.push_str(&item);
    }
    value
}

/// Stores one quarantined group durably: the message as received (our Received: first), the
/// envelope with the group's recipients, and the deciding stage's reason. The first group keeps
/// the message's id (the one in the 250 reply); a second quarantined group gets its own.
async fn quarantine(
    gateway: &Gateway,
    session: &SessionInfo,
    source: &Source<'_>,
    envelope: &Envelope,
    group: &Group,
    keeps_id: bool,
) -> Result<(), DisposalError> {
    let id = if keeps_id {
        source.id
    } else {
        gateway.spool.new_id()
    };
    let own = group_original_envelope(envelope, group);
    let why = Why {
        stage: group
            .decided_by
            .clone()
            .unwrap_or_else(|| "pipeline".into()),
        reason: group.reason.clone().unwrap_or_else(|| "quarantined".into()),
        score: group.score,
        direction: session.direction(),
    };
    let snapshot = source.snapshot.clone();
    let write = Box::new(move |file: &mut std::fs::File| snapshot.copy_to(file));
    let stage = why.stage.clone();
    gateway
        .quarantine
        .store(id, &own, why, write)
        .await
        .map_err(DisposalError::Quarantine)?;
    let quarantined = EventKind::Quarantined {
        stage,
        reason: group.reason.clone(),
    };
    let recipients = own.recipients.iter().map(|r| r.address.as_str());
    gateway.tracker.record(
        Event::new(id, own.message_id.as_deref(), quarantined)
            .with_envelope(&own.sender, recipients),
    );
    Ok(())
}

/// The original of a message delivered changed (`strip`), kept whole in the quarantine (under
/// an id of its own) so it can be released; like any quarantine copy it is durable before
/// the 250, and a failure to keep it refuses the message (451) rather than lose it.
async fn keep_original(
    gateway: &Gateway,
    session: &SessionInfo,
    source: &Source<'_>,
    envelope: &Envelope,
    group: &Group,
) -> Result<(), DisposalError> {
    let mut held = group.clone();
    held.reason = group.hold_original.clone();
    quarantine(gateway, session, source, envelope, &held, false).await?;
    log::info!(
        queue_id:% = source.id;
        "filter: id={}: original kept in quarantine ({})",
        source.id, group.hold_original.as_deref().unwrap_or("")
    );
    Ok(())
}

/// Rejected groups of a message that was otherwise accepted: their recipients are reported to
/// the sender (RFC 3464), as a next hop's 5xx would be.
async fn notify_rejected(
    gateway: &Gateway,
    hostname: &str,
    source: &Source<'_>,
    envelope: &Envelope,
    groups: &[Group],
) {
    let lines: Vec<dsn::Reported> = groups
        .iter()
        .filter_map(|g| match g.final_verdict() {
            GroupVerdict::Reject(reply) => Some((g, reply)),
            _ => None,
        })
        .flat_map(|(g, reply)| {
            g.recipients
                .iter()
                .filter_map(|&i| envelope.recipients.get(i))
                .filter(|r| dsn::wanted(r, dsn::Action::Failed))
                .map(move |r| dsn::Reported {
                    recipient: r.clone(),
                    action: dsn::Action::Failed,
                    status: reply.text.split(' ').next().unwrap_or("5.7.1").to_string(),
                    diagnostic: Some(format!("smtp; {} {}", reply.code, reply.text)),
                    remote_mta: None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if lines.is_empty() || envelope.sender.is_empty() {
        return;
    }
    let notice = dsn::build(&dsn::Report {
        reporting_mta: hostname,
        queue_id: &source.id.to_string(),
        envelope,
        recipients: &lines,
        original: source.header,
        now: unix_now() as i64,
    });
    match gateway
        .queue_notice(
            &envelope.sender,
            hostname,
            &notice,
            source.id,
            "notice for recipients refused by a filter",
        )
        .await
    {
        Ok(notice_id) => log::info!(
            queue_id:% = source.id, notice_id:% = notice_id;
            "filter: id={} rejected recipients reported in notice {notice_id}", source.id
        ),
        Err(e) => log::error!(
            queue_id:% = source.id;
            "filter: id={}: cannot queue the notice for rejected recipients: {e}", source.id
        ),
    }
}
