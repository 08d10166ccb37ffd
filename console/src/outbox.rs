//! The console's outgoing mail (alerts, reports, digests): built here as MIME and queued
//! through one node's own spool and delivery (`[console.mail] node`, the control request
//! `submit`), so it takes the gateway's routes and retries and shows in its tracking.
//!
//! Contract: `send` answers the queue id only after the node said the message is durable;
//! an unreachable mail node is an error the caller records (alert history), never a panic.

use bulwark::admin::protocol::Request as NodeRequest;
use mail_builder::headers::address::Address;
use mail_builder::MessageBuilder;

use crate::app::State;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("no [console.mail] section: the console cannot send mail")]
    NotConfigured,
    #[error("building the message: {0}")]
    Build(std::io::Error),
    #[error("node {node} did not queue the message: {why}")]
    Node { node: String, why: String },
}

/// One message to send: plain text, optionally HTML, optionally one attachment.
pub struct Outgoing<'a> {
    pub to: &'a [String],
    pub subject: &'a str,
    pub text: &'a str,
    pub html: Option<&'a str>,
    /// (file name, content type, bytes)
    pub attachment: Option<(&'a str, &'a str, Vec<u8>)>,
}

fn build(from: &str, message: Outgoing<'_>, hostname: &str) -> Result<String, OutboxError> {
    let to: Vec<Address<'_>> = message
        .to
        .iter()
        .map(|a| Address::from(a.as_str()))
        .collect();
    let mut builder = MessageBuilder::new()
        .from(Address::from(from))
        .to(Address::new_list(to))
        .subject(message.subject)
        .message_id(format!("{}@{hostname}", crate::auth::random_token()))
        .text_body(message.text);
    if let Some(html) = message.html {
        builder = builder.html_body(html);
    }
    if let Some((name, content_type, bytes)) = message.attachment {
        builder = builder.attachment(content_type, name, bytes);
    }
    let bytes = builder.write_to_vec().map_err(OutboxError::Build)?;
    // The builder writes 7-bit text (quoted-printable or base64 bodies).
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Queues `message` on the mail node; the node's queue id on success.
pub async fn send(state: &State, message: Outgoing<'_>) -> Result<String, OutboxError> {
    let mail = state
        .config
        .mail
        .as_ref()
        .ok_or(OutboxError::NotConfigured)?;
    let domain = mail.from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let recipients = message.to.to_vec();
    let text = build(&mail.from, message, domain)?;
    let request = NodeRequest::Submit {
        sender: mail.from.clone(),
        recipients,
        message: text,
    };
    let response = state.nodes.ask_named(&mail.node, &request).await;
    let node = mail.node.clone();
    if !response.ok {
        let why = response.error.unwrap_or_else(|| "refused".into());
        return Err(OutboxError::Node { node, why });
    }
    Ok(response.result["queued"].as_str().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_html_and_a_pdf_is_mime() {
        let to = vec!["ops@example.com".to_string()];
        let message = Outgoing {
            to: &to,
            subject: "Daily report",
            text: "numbers",
            html: Some("<p>numbers</p>"),
            attachment: Some(("report.pdf", "application/pdf", b"%PDF-1.7".to_vec())),
        };
        let text = build("console@example.com", message, "example.com").expect("built");
        assert!(text.contains("Subject: Daily report"));
        assert!(text.contains("multipart/mixed"));
        assert!(text.contains("application/pdf"));
        assert!(text.contains("<ops@example.com>"));
    }
}
