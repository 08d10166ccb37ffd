//! Applying one attempt's per-recipient results: log each, record it in the state log,
//! turn expired deferrals into bounces (4.4.7), send the notices that are owed (bounce, one
//! delay warning, "relayed" when the next hop could not take our DSN request), and remove the
//! message once no recipient is pending.

use std::time::{Duration, Instant};

use super::attempt::Outcome;
use super::dsn::{self, Action, Reported};
use super::engine::{backoff, Job};
use super::Context;
use crate::queue::{unix_now, QueueEntry, QueueId, Recipient, RecipientOutcome, StateRecord};
use crate::telemetry::{telemetry, DeliveryStatus};
use crate::track::{Event, EventKind, Tracker};

/// What is left to retry, and when.
pub struct Applied {
    pub deferred: Vec<usize>,
    pub retry_at: Instant,
}

pub async fn apply(
    context: &Context,
    entry: &QueueEntry,
    content: &[u8],
    job: &Job,
    results: Vec<(usize, Outcome)>,
    relay: Option<String>,
    dsn_passed_on: bool,
) -> Applied {
    let gateway = &context.gateway;
    let delivery = gateway.runtime().config.delivery.clone();
    let now = unix_now();
    let age = Duration::from_secs(now.saturating_sub(entry.arrival));
    let expired = age >= delivery.max_queue_lifetime;
    let retry_in = backoff(delivery.retry_initial, delivery.retry_max, job.attempts);
    let tracked = Tracked {
        tracker: &gateway.tracker,
        id: job.id,
        message_id: entry.envelope.message_id.as_deref(),
        relay: relay.as_deref(),
        expired,
        retry_in,
    };
    let mut ledger = Ledger::new(&relay, dsn_passed_on, expired);
    for (index, outcome) in results {
        let Some(recipient) = entry.envelope.recipients.get(index) else {
            continue;
        };
        log_outcome(job.id, recipient, &outcome, relay.as_deref(), age);
        tracked.record(recipient, &outcome);
        ledger.note(job.id, index, recipient, outcome);
    }
    if !ledger.deferred.is_empty() {
        let warn_due =
            !delivery.delay_warning.is_zero() && age >= delivery.delay_warning && !entry.warned;
        if warn_due {
            ledger.warn_of_delay(entry);
        }
        ledger.schedule(now, retry_in);
    }
    send_notices(context, job.id, entry, content, ledger.notices).await;
    settle(context, job.id, &ledger.records).await;
    Applied {
        deferred: ledger.deferred,
        retry_at: Instant::now() + retry_in,
    }
}

/// What one attempt's results come to: the state records to append, the notices owed, and
/// the recipients left to retry.
struct Ledger<'a> {
    relay: &'a Option<String>,
    /// The next hop took our DSN request, so it reports success itself (no "relayed").
    dsn_passed_on: bool,
    /// The queue lifetime is over: a deferral is a bounce now (4.4.7).
    expired: bool,
    records: Vec<StateRecord>,
    notices: Vec<Reported>,
    deferred: Vec<usize>,
    last_error: Option<String>,
}

impl<'a> Ledger<'a> {
    fn new(relay: &'a Option<String>, dsn_passed_on: bool, expired: bool) -> Self {
        Ledger {
            relay,
            dsn_passed_on,
            expired,
            records: Vec::new(),
            notices: Vec::new(),
            deferred: Vec::new(),
            last_error: None,
        }
    }

    fn note(&mut self, id: QueueId, index: usize, recipient: &Recipient, outcome: Outcome) {
        telemetry().delivery(match &outcome {
            Outcome::Delivered { .. } => DeliveryStatus::Sent,
            Outcome::Deferred { .. } if !self.expired => DeliveryStatus::Deferred,
            Outcome::Deferred { .. } | Outcome::Bounced { .. } => DeliveryStatus::Bounced,
        });
        match outcome {
            Outcome::Delivered { reply } => {
                self.settle(index, RecipientOutcome::Delivered);
                if !self.dsn_passed_on {
                    self.owe(recipient, Action::Relayed, "2.0.0".into(), Some(reply));
                }
            }
            Outcome::Bounced { status, diagnostic } => {
                self.settle(index, RecipientOutcome::Bounced);
                self.owe(recipient, Action::Failed, status, Some(diagnostic));
            }
            Outcome::Deferred { diagnostic } if self.expired => {
                log::info!(
                    queue_id:% = id, recipient = recipient.address.as_str(), dsn_status = "4.4.7";
                    "delivery: id={} to=<{}> status=bounced (queue lifetime expired)",
                    id,
                    recipient.address
                );
                self.settle(index, RecipientOutcome::Bounced);
                let text = format!("delivery time expired; last error: {diagnostic}");
                self.owe(recipient, Action::Failed, "4.4.7".into(), Some(text));
            }
            Outcome::Deferred { diagnostic } => {
                self.last_error = Some(diagnostic);
                self.deferred.push(index);
            }
        }
    }

    fn settle(&mut self, index: usize, outcome: RecipientOutcome) {
        self.records.push(StateRecord::Recipient { index, outcome });
    }

    /// A notice line for `recipient`, when its NOTIFY asks for `action`.
    fn owe(
        &mut self,
        recipient: &Recipient,
        action: Action,
        status: String,
        diagnostic: Option<String>,
    ) {
        if dsn::wanted(recipient, action) {
            let line = report_line(recipient, action, status, diagnostic, self.relay);
            self.notices.push(line);
        }
    }

    /// The one delay notice of a message, for its deferred recipients.
    fn warn_of_delay(&mut self, entry: &QueueEntry) {
        self.records.push(StateRecord::Warned);
        for index in self.deferred.clone() {
            let recipient = &entry.envelope.recipients[index];
            let last_error = self.last_error.clone();
            self.owe(recipient, Action::Delayed, "4.0.0".into(), last_error);
        }
    }

    /// The attempt record of a deferral: when it was, what failed, when the next try is.
    fn schedule(&mut self, now: u64, retry_in: Duration) {
        self.records.push(StateRecord::Attempt {
            at: now,
            next_at: Some(now + retry_in.as_secs()),
            error: self.last_error.clone(),
        });
    }
}

fn report_line(
    recipient: &Recipient,
    action: Action,
    status: String,
    diagnostic: Option<String>,
    relay: &Option<String>,
) -> Reported {
    Reported {
        recipient: recipient.clone(),
        action,
        status,
        diagnostic,
        remote_mta: relay
            .as_ref()
            .map(|r| r.split('[').next().unwrap_or(r).to_string()),
    }
}

fn log_outcome(
    id: QueueId,
    recipient: &Recipient,
    outcome: &Outcome,
    relay: Option<&str>,
    age: Duration,
) {
    let (status, reply) = match outcome {
        Outcome::Delivered { reply } => ("sent", reply.as_str()),
        Outcome::Bounced { diagnostic, .. } => ("bounced", diagnostic.as_str()),
        Outcome::Deferred { diagnostic } => ("deferred", diagnostic.as_str()),
    };
    let dsn = dsn_status(outcome);
    log::info!(
        queue_id:% = id, recipient = recipient.address.as_str(), relay = relay.unwrap_or("none"), dsn_status = dsn.as_str(), status:% = status;
        "delivery: id={id} to=<{}> relay={} delay={}s dsn={dsn} status={status} ({})",
        recipient.address,
        relay.unwrap_or("none"),
        age.as_secs(),
        reply
            .chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
    );
}

/// The RFC 3463 status of an outcome: the bounce's, else the one in the next hop's reply
/// (`250 2.0.0 Ok`), else the class default.
fn dsn_status(outcome: &Outcome) -> String {
    let (reply, class, default) = match outcome {
        Outcome::Bounced { status, .. } => return status.clone(),
        Outcome::Delivered { reply } => (reply, '2', "2.0.0"),
        Outcome::Deferred { diagnostic } => (diagnostic, '4', "4.0.0"),
    };
    reply
        .split_whitespace()
        .nth(1)
        .filter(|w| w.starts_with(class) && w.contains('.'))
        .unwrap_or(default)
        .to_string()
}

/// One attempt's tracking events: per recipient the attempt, then what became of it.
struct Tracked<'a> {
    tracker: &'a Tracker,
    id: QueueId,
    message_id: Option<&'a str>,
    relay: Option<&'a str>,
    /// Deferrals are bounces now (queue lifetime over).
    expired: bool,
    retry_in: Duration,
}

impl Tracked<'_> {
    fn record(&self, recipient: &Recipient, outcome: &Outcome) {
        let address = recipient.address.clone();
        let reply = match outcome {
            Outcome::Delivered { reply } => reply,
            Outcome::Bounced { diagnostic, .. } | Outcome::Deferred { diagnostic } => diagnostic,
        };
        let attempt = EventKind::Attempt {
            recipient: address.clone(),
            relay: self.relay.map(str::to_string),
            reply: reply.clone(),
            dsn_status: dsn_status(outcome),
        };
        self.event(attempt);
        let result = match outcome {
            Outcome::Delivered { .. } => EventKind::Delivered {
                recipient: address,
                relay: self.relay.map(str::to_string),
                dsn_status: dsn_status(outcome),
            },
            Outcome::Bounced { status, diagnostic } => EventKind::Bounced {
                recipient: address,
                dsn_status: status.clone(),
                reason: diagnostic.clone(),
            },
            Outcome::Deferred { diagnostic } if self.expired => EventKind::Bounced {
                recipient: address,
                dsn_status: "4.4.7".into(),
                reason: format!("queue lifetime expired; last error: {diagnostic}"),
            },
            Outcome::Deferred { diagnostic } => EventKind::Deferred {
                recipient: address,
                reason: diagnostic.clone(),
                retry_in_seconds: self.retry_in.as_secs(),
            },
        };
        self.event(result);
    }

    fn event(&self, kind: EventKind) {
        self.tracker
            .record(Event::new(self.id, self.message_id, kind));
    }
}

/// Applies the records; removes the message when nothing is pending (then the records
/// need not be written: the removal supersedes them), else appends them to its state log.
async fn settle(context: &Context, id: QueueId, records: &[StateRecord]) {
    let gateway = &context.gateway;
    for record in records {
        gateway.queue.apply(id, record);
    }
    if gateway.queue.finish_if_done(id) {
        match gateway.spool.remove(id).await {
            Ok(()) => log::info!(queue_id:% = id; "removed: id={id}"),
            Err(e) => log::error!("delivery: id={id}: cannot remove the finished message: {e}"),
        }
        return;
    }
    if !gateway.queue.contains(id) {
        // Deleted by the operator while the attempt ran: nothing left to record.
        return;
    }
    for record in records {
        if let Err(e) = gateway.spool.record(id, record.clone()).await {
            log::error!("delivery: id={id}: cannot record state: {e}");
        }
    }
}

/// Sends one notice per kind (failed, delayed, relayed) to the sender.
async fn send_notices(
    context: &Context,
    id: QueueId,
    entry: &QueueEntry,
    content: &[u8],
    notices: Vec<Reported>,
) {
    for action in [Action::Failed, Action::Delayed, Action::Relayed] {
        let lines: Vec<Reported> = notices
            .iter()
            .filter(|n| n.action == action)
            .cloned()
            .collect();
        if lines.is_empty() {
            continue;
        }
        let to = if entry.envelope.sender.is_empty() {
            let double_bounce = context
                .gateway
                .runtime()
                .config
                .delivery
                .double_bounce
                .clone();
            if action != Action::Failed || double_bounce.is_empty() {
                log::info!("delivery: id={id}: no {action:?} notice for the null sender (dropped)");
                continue;
            }
            double_bounce
        } else {
            entry.envelope.sender.clone()
        };
        let hostname = context.gateway.runtime().config.server.hostname.clone();
        let message = dsn::build(&dsn::Report {
            reporting_mta: &hostname,
            queue_id: &id.to_string(),
            envelope: &entry.envelope,
            recipients: &lines,
            original: content,
            now: unix_now() as i64,
        });
        let reason = format!("delivery status notice ({})", action.as_str());
        match context
            .gateway
            .queue_notice(&to, &hostname, &message, id, &reason)
            .await
        {
            Ok(notice) => {
                log::info!("delivery: id={id}: {action:?} notice {notice} queued for <{to}>");
                track_notice(context, id, entry, action, notice);
            }
            Err(e) => log::error!("delivery: id={id}: cannot queue the {action:?} notice: {e}"),
        }
    }
}

/// The notice on the original's timeline (the notice links back by its `generated` event).
fn track_notice(
    context: &Context,
    id: QueueId,
    entry: &QueueEntry,
    action: Action,
    notice: QueueId,
) {
    let sent = EventKind::Notice {
        action: action.as_str().to_string(),
        notice_id: notice,
    };
    let message_id = entry.envelope.message_id.as_deref();
    context
        .gateway
        .tracker
        .record(Event::new(id, message_id, sent));
}
