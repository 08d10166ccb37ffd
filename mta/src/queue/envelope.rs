//! The envelope stored with each message: everything SMTP said that the content does not.

use std::net::IpAddr;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    #[default]
    #[serde(rename = "7bit")]
    SevenBit,
    #[serde(rename = "8bitmime")]
    EightBitMime,
}

/// RFC 3461 RET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsnRet {
    Full,
    Hdrs,
}

/// What became of one recipient; `Pending` until delivery decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecipientOutcome {
    #[default]
    Pending,
    Delivered,
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 NOTIFY as written by the client (`SUCCESS,FAILURE`, `NEVER`); None = default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// RFC 3461 ORCPT (`rfc822;user@example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    #[serde(default)]
    pub outcome: RecipientOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// Seconds since the epoch when the message was committed.
    pub received_at: u64,
    pub client_addr: IpAddr,
    pub helo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    #[serde(default)]
    pub body: BodyType,
    #[serde(default)]
    pub smtputf8: bool,
    /// The content has bytes over 127 (decides BODY=8BITMIME and RFC 6152 handling).
    #[serde(default)]
    pub eight_bit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn_ret: Option<DsnRet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn_envid: Option<String>,
    /// From the content's header, for the operator's eyes (queue list, logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 8689 REQUIRETLS: never relayed without TLS to an authenticated next hop that
    /// offers REQUIRETLS. Absent in spool files written before it existed (false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
}

impl Envelope {
    /// The envelope of a message this gateway wrote itself (a notice, console mail): from
    /// 127.0.0.1, no TLS, every recipient pending, Message-ID and Subject read from `message`.
    pub fn written_here(
        sender: &str,
        recipients: &[String],
        helo: &str,
        auth_user: Option<String>,
        message: &[u8],
    ) -> Envelope {
        let parsed = mail_parser::MessageParser::default().parse_headers(message);
        Envelope {
            sender: sender.to_string(),
            recipients: recipients
                .iter()
                .map(|address| Recipient {
                    address: address.clone(),
                    notify: None,
                    orcpt: None,
                    outcome: RecipientOutcome::Pending,
                })
                .collect(),
            received_at: super::unix_now(),
            client_addr: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            helo: helo.to_string(),
            auth_user,
            tls: None,
            body: Default::default(),
            smtputf8: false,
            // Follows the route's TLS policy.
            require_tls: false,
            eight_bit: !message.is_ascii(),
            dsn_ret: None,
            dsn_envid: None,
            message_id: parsed
                .as_ref()
                .and_then(|m| m.message_id())
                .map(str::to_string),
            subject: parsed
                .as_ref()
                .and_then(|m| m.subject())
                .map(str::to_string),
        }
    }

    /// An envelope from `sender` to `recipients` from 192.0.2.1, for tests.
    #[cfg(test)]
    pub fn for_test(sender: &str, recipients: &[&str]) -> Envelope {
        Envelope {
            sender: sender.to_string(),
            recipients: recipients
                .iter()
                .map(|r| Recipient {
                    address: r.to_string(),
                    notify: None,
                    orcpt: None,
                    outcome: RecipientOutcome::Pending,
                })
                .collect(),
            received_at: 1_700_000_000,
            client_addr: IpAddr::from([192, 0, 2, 1]),
            helo: "client.test".into(),
            auth_user: None,
            tls: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            eight_bit: false,
            dsn_ret: None,
            dsn_envid: None,
            message_id: None,
            subject: None,
            require_tls: false,
        }
    }
}

/// Seconds since the epoch, the clock of `Envelope::received_at` and the state log.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
