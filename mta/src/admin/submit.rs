//! `submit`: a message the console wrote (an alert, a report, a quarantine digest) queued
//! through this node's own spool and delivery, so console mail takes the same routes, retries
//! and tracking as any other mail.
//!
//! Contract: the answer names the queue id only once the message is durable and scheduled
//! (`Gateway::enqueue`); recipients must be addresses (`local@domain`); no content filter runs
//! (the console is authenticated by its client certificate, or local on the unix socket).

use serde_json::json;

use super::protocol::Response;
use crate::gateway::{Gateway, Origin};
use crate::queue::Envelope;

/// The HELO name the submitted messages' tracking and Received: lines show.
const SUBMITTER: &str = "bulwark-console";

/// Largest message the console may submit (a weekly report with its PDF stays far below).
const MAX_SUBMIT: usize = 8 << 20;

pub async fn submit(
    gateway: &Gateway,
    sender: &str,
    recipients: &[String],
    message: &str,
) -> Response {
    if recipients.is_empty() {
        return Response::error("submit: no recipient");
    }
    if let Some(bad) = recipients.iter().find(|r| !is_address(r)) {
        return Response::error(format!("submit: {bad:?} is not an address"));
    }
    if !sender.is_empty() && !is_address(sender) {
        return Response::error(format!("submit: sender {sender:?} is not an address"));
    }
    if message.len() > MAX_SUBMIT {
        return Response::error("submit: message larger than 8 MiB");
    }
    let mut draft = gateway.spool.begin();
    if let Err(e) = draft.write(message.as_bytes()).await {
        return Response::error(format!("submit: {e}"));
    }
    let envelope = envelope(sender, recipients, message.as_bytes());
    match gateway.enqueue(draft, envelope, Origin::Client).await {
        Ok(id) => {
            log::info!(queue_id:% = id, recipients = recipients.len(); "console message queued");
            Response::ok(json!({ "queued": id.to_string() }))
        }
        Err(e) => Response::error(format!("submit: {e}")),
    }
}

fn is_address(text: &str) -> bool {
    text.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !text.contains(['<', '>', ' ', '\r', '\n'])
    })
}

fn envelope(sender: &str, recipients: &[String], message: &[u8]) -> Envelope {
    let submitter = Some(SUBMITTER.to_string());
    Envelope::written_here(sender, recipients, SUBMITTER, submitter, message)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_addresses_are_accepted() {
        assert!(super::is_address("ops@example.com"));
        assert!(!super::is_address("ops"));
        assert!(!super::is_address("@example.com"));
        assert!(!super::is_address("<ops@example.com>"));
        assert!(!super::is_address("ops@example.com\r\nRCPT TO:<x@y>"));
    }
}
