//! Delivery status notifications (RFC 3464, RFC 3461): bounces, delay warnings and
//! "relayed"/"delivered" success notices, built as multipart/report with mail-builder.
//!
//! Which notices are owed follows RFC 3461: NOTIFY=NEVER suppresses all; an explicit NOTIFY
//! list is honoured as written; without NOTIFY, failures and delays are reported. The null
//! sender never gets a notice (no bounce loops); the caller routes such would-be bounces to
//! the double-bounce address or drops them.

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;

use crate::queue::{DsnRet, Envelope, Recipient};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Relayed,
    Delivered,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
            Action::Delivered => "delivered",
        }
    }

    fn notify_keyword(self) -> &'static str {
        match self {
            Action::Failed => "FAILURE",
            Action::Delayed => "DELAY",
            Action::Relayed | Action::Delivered => "SUCCESS",
        }
    }
}

/// Whether `recipient` asked for a notice of this kind.
pub fn wanted(recipient: &Recipient, action: Action) -> bool {
    match recipient.notify.as_deref() {
        None => matches!(action, Action::Failed | Action::Delayed),
        Some(list) => list
            .split(',')
            .any(|k| k.trim().eq_ignore_ascii_case(action.notify_keyword())),
    }
}

/// One recipient's line in the report.
#[derive(Debug, Clone)]
pub struct Reported {
    pub recipient: Recipient,
    pub action: Action,
    pub status: String,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
}

pub struct Report<'a> {
    pub reporting_mta: &'a str,
    pub queue_id: &'a str,
    pub envelope: &'a Envelope,
    pub recipients: &'a [Reported],
    /// The original content (headers and body).
    pub original: &'a [u8],
    pub now: i64,
}

/// Builds the whole notice message (header and body), CRLF line ends.
pub fn build(report: &Report<'_>) -> Vec<u8> {
    let action = report
        .recipients
        .first()
        .map_or(Action::Failed, |r| r.action);
    let subject = match action {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        Action::Relayed | Action::Delivered => "Successful Mail Delivery Report",
    };
    let human = MimePart::new(
        ContentType::new("text/plain").attribute("charset", "us-ascii"),
        BodyPart::Text(explanation(report, action).into()),
    );
    let status = MimePart::new(
        ContentType::new("message/delivery-status"),
        BodyPart::Text(delivery_status(report).into()),
    )
    .transfer_encoding("7bit");
    // RFC 8689 5: a notice is not a REQUIRETLS message and may travel in clear, so the body
    // of a REQUIRETLS message never goes back in one (headers only, RET=FULL or not).
    let full = action == Action::Failed
        && report.envelope.dsn_ret == Some(DsnRet::Full)
        && !report.envelope.require_tls;
    let returned = if full {
        MimePart::new(
            ContentType::new("message/rfc822"),
            BodyPart::Binary(report.original.to_vec().into()),
        )
        .transfer_encoding("8bit")
    } else {
        MimePart::new(
            ContentType::new("text/rfc822-headers"),
            BodyPart::Binary(header_section(report.original).to_vec().into()),
        )
        .transfer_encoding("8bit")
    };
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(vec![human, status, returned]),
    );
    let from = format!("MAILER-DAEMON@{}", report.reporting_mta);
    MessageBuilder::new()
        .from(("Mail Delivery System", from.as_str()))
        .to(report.envelope.sender.as_str())
        .subject(subject)
        .date(report.now)
        .message_id(format!("{}.dsn@{}", report.queue_id, report.reporting_mta))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(body)
        .write_to_vec()
        .unwrap_or_default()
}

fn header_section(content: &[u8]) -> &[u8] {
    match memchr::memmem::find(content, b"\r\n\r\n") {
        Some(end) => &content[..end + 2],
        None => content,
    }
}

fn explanation(report: &Report<'_>, action: Action) -> String {
    let mut text = format!(
        "This is the mail system at host {}.\r\n\r\n",
        report.reporting_mta
    );
    text.push_str(match action {
        Action::Failed => {
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients.\r\n"
        }
        Action::Delayed => {
            "Your message could not be delivered yet to one or more recipients.\r\n\
             It will be retried until it is too old; you do not need to resend it.\r\n"
        }
        _ => "Your message was successfully delivered to the destination(s) listed below.\r\n",
    });
    text.push_str("\r\n");
    for r in report.recipients {
        text.push_str(&format!(
            "<{}>: {}\r\n",
            r.recipient.address,
            r.diagnostic.as_deref().unwrap_or(&r.status)
        ));
    }
    text
}

/// An address for a 7-bit delivery-status field: `rfc822; addr` when ASCII, else RFC 6533's
/// `utf-8` type with each non-ASCII character written as `\x{HEX}`.
fn address_field(address: &str) -> String {
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let encoded: String = address
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\x{{{:X}}}", c as u32)
            }
        })
        .collect();
    format!("utf-8; {encoded}")
}

fn delivery_status(report: &Report<'_>) -> String {
    let envelope = report.envelope;
    let mut text = format!("Reporting-MTA: dns; {}\r\n", report.reporting_mta);
    text.push_str(&format!("X-Bulwark-Queue-ID: {}\r\n", report.queue_id));
    if let Some(envid) = &envelope.dsn_envid {
        text.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    let arrival = mail_builder::headers::date::Date::new(envelope.received_at as i64).to_rfc822();
    text.push_str(&format!("Arrival-Date: {arrival}\r\n"));
    for r in report.recipients {
        text.push_str("\r\n");
        if let Some(orcpt) = &r.recipient.orcpt {
            text.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        text.push_str(&format!(
            "Final-Recipient: {}\r\n",
            address_field(&r.recipient.address)
        ));
        text.push_str(&format!("Action: {}\r\n", r.action.as_str()));
        text.push_str(&format!("Status: {}\r\n", r.status));
        if let Some(remote) = &r.remote_mta {
            text.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        if let Some(diagnostic) = &r.diagnostic {
            let clean: String = diagnostic
                .chars()
                .filter(|c| !c.is_control())
                .take(900)
                .collect();
            text.push_str(&format!("Diagnostic-Code: smtp; {clean}\r\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::RecipientOutcome;

    fn envelope(ret: Option<DsnRet>) -> Envelope {
        Envelope {
            sender: "s@other.org".into(),
            recipients: Vec::new(),
            received_at: 0,
            client_addr: "127.0.0.1".parse().expect("ip"),
            helo: "h".into(),
            auth_user: None,
            tls: None,
            body: Default::default(),
            smtputf8: false,
            eight_bit: false,
            dsn_ret: ret,
            dsn_envid: Some("ENV1".into()),
            message_id: None,
            subject: None,
            require_tls: false,
        }
    }

    fn recipient(notify: Option<&str>) -> Recipient {
        Recipient {
            address: "a@example.com".into(),
            notify: notify.map(str::to_string),
            orcpt: Some("rfc822;a@example.com".into()),
            outcome: RecipientOutcome::Pending,
        }
    }

    #[test]
    fn utf8_addresses_are_encoded_for_a_7bit_report() {
        assert_eq!(address_field("a@example.com"), "rfc822; a@example.com");
        assert_eq!(
            address_field("jos\u{e9}@example.com"),
            "utf-8; jos\\x{E9}@example.com"
        );
    }

    #[test]
    fn notify_rules() {
        assert!(wanted(&recipient(None), Action::Failed));
        assert!(wanted(&recipient(None), Action::Delayed));
        assert!(!wanted(&recipient(None), Action::Relayed));
        assert!(!wanted(&recipient(Some("NEVER")), Action::Failed));
        assert!(wanted(&recipient(Some("SUCCESS,FAILURE")), Action::Relayed));
        assert!(!wanted(&recipient(Some("SUCCESS")), Action::Failed));
    }

    #[test]
    fn bounce_has_report_parts() {
        let env = envelope(Some(DsnRet::Full));
        let reported = vec![Reported {
            recipient: recipient(None),
            action: Action::Failed,
            status: "5.1.1".into(),
            diagnostic: Some("550 5.1.1 unknown".into()),
            remote_mta: Some("mx.example.com".into()),
        }];
        let message = build(&Report {
            reporting_mta: "mx.test",
            queue_id: "0000000000000001",
            envelope: &env,
            recipients: &reported,
            original: b"Subject: hi\r\n\r\nthe body\r\n",
            now: 0,
        });
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains("multipart/report"));
        assert!(text.contains("report-type"));
        assert!(text.contains("Final-Recipient: rfc822; a@example.com"));
        assert!(text.contains("Action: failed"));
        assert!(text.contains("Original-Envelope-Id: ENV1"));
        assert!(text.contains("message/rfc822"));
        assert!(text.contains("the body"));
        let parsed = mail_parser::MessageParser::default()
            .parse(&message)
            .expect("parses");
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
    }

    #[test]
    fn a_requiretls_bounce_returns_headers_only() {
        let mut env = envelope(Some(DsnRet::Full));
        env.require_tls = true;
        let reported = vec![Reported {
            recipient: recipient(None),
            action: Action::Failed,
            status: "5.7.30".into(),
            diagnostic: Some("550 5.7.30 REQUIRETLS support required".into()),
            remote_mta: None,
        }];
        let message = build(&Report {
            reporting_mta: "mx.test",
            queue_id: "0000000000000002",
            envelope: &env,
            recipients: &reported,
            original: b"Subject: secret plans\r\n\r\nthe protected body\r\n",
            now: 0,
        });
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains("text/rfc822-headers"), "{text}");
        assert!(text.contains("Subject: secret plans"), "{text}");
        assert!(!text.contains("message/rfc822"), "{text}");
        assert!(!text.contains("the protected body"), "{text}");
    }
}
