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
    let mut records = Vec::new();
    let mut notices: Vec<Reported> = Vec::new();
    let mut deferred = Vec::new();
    let mut last_error = None;
    for (index, outcome) in results {
        let Some(recipient) = entry.envelope.recipients.get(index) else {
            continue;
        };
        log_outcome(job.id, recipient, &outcome, relay.as_deref(), age);
        match outcome {
            Outcome::Delivered { reply } => {
                records.push(StateRecord::Recipient {
                    index,
                    outcome: RecipientOutcome::Delivered,
                });
                if !dsn_passed_on && dsn::wanted(recipient, Action::Relayed) {
                    notices.push(report_line(
                        recipient,
                        Action::Relayed,
                        "2.0.0".into(),
                        Some(reply),
                        &relay,
                    ));
                }
            }
            Outcome::Bounced { status, diagnostic } => {
                records.push(StateRecord::Recipient {
                    index,
                    outcome: RecipientOutcome::Bounced,
                });
                if dsn::wanted(recipient, Action::Failed) {
                    notices.push(report_line(
                        recipient,
                        Action::Failed,
                        status,
                        Some(diagnostic),
                        &relay,
                    ));
                }
            }
            Outcome::Deferred { diagnostic } if expired => {
                log::info!(
                    queue_id:% = job.id, recipient = recipient.address.as_str(), dsn_status = "4.4.7";
                    "delivery: id={} to=<{}> status=bounced (queue lifetime expired)",
                    job.id,
                    recipient.address
                );
                records.push(StateRecord::Recipient {
                    index,
                    outcome: RecipientOutcome::Bounced,
                });
                if dsn::wanted(recipient, Action::Failed) {
                    let text = format!("delivery time expired; last error: {diagnostic}");
                    notices.push(report_line(
                        recipient,
                        Action::Failed,
                        "4.4.7".into(),
                        Some(text),
                        &relay,
                    ));
                }
            }
            Outcome::Deferred { diagnostic } => {
                last_error = Some(diagnostic);
                deferred.push(index);
            }
        }
    }
    let retry_in = backoff(delivery.retry_initial, delivery.retry_max, job.attempts);
    if !deferred.is_empty() {
        let warn_due =
            !delivery.delay_warning.is_zero() && age >= delivery.delay_warning && !entry.warned;
        if warn_due {
            records.push(StateRecord::Warned);
            for &index in &deferred {
                let recipient = &entry.envelope.recipients[index];
                if dsn::wanted(recipient, Action::Delayed) {
                    notices.push(report_line(
                        recipient,
                        Action::Delayed,
                        "4.0.0".into(),
                        last_error.clone(),
                        &relay,
                    ));
                }
            }
        }
        records.push(StateRecord::Attempt {
            at: now,
            next_at: Some(now + retry_in.as_secs()),
            error: last_error,
        });
    }
    send_notices(context, job.id, entry, content, notices).await;
    settle(context, job.id, &records).await;
    Applied {
        deferred,
        retry_at: Instant::now() + retry_in,
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
    let (status, dsn, reply) = match outcome {
        Outcome::Delivered { reply } => ("sent", "2.0.0".to_string(), reply.as_str()),
        Outcome::Bounced { status, diagnostic } => ("bounced", status.clone(), diagnostic.as_str()),
        Outcome::Deferred { diagnostic } => ("deferred", "4.0.0".to_string(), diagnostic.as_str()),
    };
    let dsn = match outcome {
        Outcome::Delivered { reply } => reply
            .split_whitespace()
            .nth(1)
            .filter(|w| w.starts_with('2') && w.contains('.'))
            .map_or(dsn, str::to_string),
        _ => dsn,
    };
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
        match context.gateway.queue_notice(&to, &hostname, &message).await {
            Ok(notice) => {
                log::info!("delivery: id={id}: {action:?} notice {notice} queued for <{to}>")
            }
            Err(e) => log::error!("delivery: id={id}: cannot queue the {action:?} notice: {e}"),
        }
    }
}
