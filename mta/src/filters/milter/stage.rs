//! A milter as a pipeline [`Stage`]: the message's facts become the milter's commands and
//! macros, its replies become the stage's [`Decision`].
//!
//! Contract: one milter reply maps to one verdict (continue and accept → `Continue`, since a
//! milter's accept only ends that milter's part, as in Postfix; reject, tempfail, discard; a
//! reply code keeps the milter's code and text; SMFIR_QUARANTINE becomes
//! `Verdict::Quarantine` with the milter's reason unless the milter also refused the
//! message). The conversation already answers with pipeline
//! [`Modification`](crate::pipeline::Modification)s, one per request in the milter's order,
//! each checked against the negotiated actions; they pass through unchanged. A recipient
//! refused at RCPT gets its own group with the milter's reply, the others go on. Errors are
//! returned as [`StageError`]: the pipeline applies `default_action` (`on_error`) and logs it
//! like every other stage decision.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::protocol::ConnectFamily;
use super::{BodySource, MessageFacts, Milter, MilterOutcome, MilterVerdict};
use crate::config::{DirectionScope, MilterConfig, OnError};
use crate::pipeline::{Answer, ContentReader, Context, Decision, Stage, StageError, Verdict};

pub struct MilterStage {
    milter: Milter,
    reply_budget: usize,
}

impl MilterStage {
    /// `max_message_size` bounds what the milter may send back (a body twice that size plus
    /// headers is already refused).
    pub fn new(config: MilterConfig, max_message_size: u64) -> Self {
        let reply_budget =
            usize::try_from(max_message_size.saturating_mul(2)).unwrap_or(usize::MAX);
        MilterStage {
            milter: Milter::new(config),
            reply_budget,
        }
    }
}

#[async_trait]
impl Stage for MilterStage {
    fn name(&self) -> &str {
        &self.milter.config.name
    }

    fn scope(&self) -> DirectionScope {
        self.milter.config.direction
    }

    fn timeout(&self) -> Duration {
        self.milter.config.message_timeout
    }

    fn on_error(&self) -> OnError {
        self.milter.config.default_action
    }

    async fn check(&self, cx: &Context<'_>) -> Result<Answer, StageError> {
        let client_name = format!("[{}]", cx.session.client.ip());
        let recipients: Vec<String> = cx.recipient_addresses().map(str::to_string).collect();
        let facts = MessageFacts {
            client_name: &client_name,
            client: ConnectFamily::Inet(cx.session.client),
            helo: cx.session.helo.as_deref().unwrap_or(&cx.envelope.helo),
            sender: &cx.envelope.sender,
            sender_args: Vec::new(),
            recipients,
            headers: super::header_fields(cx.content.header()),
            macros: macros(cx, &client_name),
            macro_lists: self.milter.macro_lists(),
            reply_budget: self.reply_budget,
        };
        let mut body = BodyReader(cx.content.body_reader());
        let outcome = self
            .milter
            .check(&facts, &mut body)
            .await
            .map_err(|e| StageError::new(self.name(), e.to_string()))?;
        Ok(answer(cx, outcome))
    }
}

/// Every macro value this message has, by name (braces stripped; both forms are looked up).
fn macros(cx: &Context<'_>, client_name: &str) -> HashMap<String, String> {
    let session = cx.session;
    let mut values = HashMap::from([
        ("j".to_string(), cx.hostname.to_string()),
        ("i".to_string(), cx.queue_id.to_string()),
        (
            "v".to_string(),
            format!("Bulwark {}", env!("CARGO_PKG_VERSION")),
        ),
        ("daemon_name".to_string(), cx.hostname.to_string()),
        ("daemon_addr".to_string(), session.local.ip().to_string()),
        ("daemon_port".to_string(), session.local.port().to_string()),
        ("client_addr".to_string(), session.client.ip().to_string()),
        ("client_port".to_string(), session.client.port().to_string()),
        ("client_name".to_string(), client_name.to_string()),
        (
            "_".to_string(),
            format!("{client_name} [{}]", session.client.ip()),
        ),
        ("mail_addr".to_string(), cx.envelope.sender.clone()),
        ("mail_host".to_string(), domain_of(&cx.envelope.sender)),
    ]);
    if let Some(user) = &session.auth_user {
        values.insert("auth_authen".into(), user.clone());
    }
    if let Some(tls) = &session.tls {
        // "TLSv1.3 TLS13_AES_256_GCM_SHA384": version, then cipher suite.
        let (version, cipher) = tls.split_once(' ').unwrap_or((tls.as_str(), ""));
        values.insert("tls_version".into(), version.to_string());
        values.insert("cipher".into(), cipher.to_string());
    }
    values
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(String::new(), |(_, domain)| domain.to_string())
}

/// The milter's outcome as the pipeline's answer.
fn answer(cx: &Context<'_>, outcome: MilterOutcome) -> Answer {
    let MilterOutcome {
        verdict,
        modifications,
        quarantine,
        refused_recipients,
        ..
    } = outcome;
    let mut decision = Decision {
        modifications,
        ..Decision::default()
    };
    (decision.verdict, decision.reason) = match (verdict, quarantine) {
        (MilterVerdict::Reject(reply), _) => {
            (Verdict::Reject(reply.clone()), Some(reply.text.to_string()))
        }
        (MilterVerdict::Tempfail(reply), _) => (
            Verdict::Tempfail(reply.clone()),
            Some(reply.text.to_string()),
        ),
        (MilterVerdict::Discard, _) => (Verdict::Discard, None),
        (_, Some(reason)) => (Verdict::Quarantine, Some(reason)),
        // A milter's accept ends *its* say on the message (Postfix and Sendmail still ask the
        // other milters); the pipeline's Accept would skip every later stage, rules included.
        (MilterVerdict::Accept | MilterVerdict::Continue, None) => (Verdict::Continue, None),
    };
    let refuses_all = matches!(
        decision.verdict,
        Verdict::Reject(_) | Verdict::Tempfail(_) | Verdict::Discard
    );
    if refused_recipients.is_empty() || refuses_all {
        return Answer::One(decision);
    }
    let mut parts = refused_groups(cx, refused_recipients);
    let refused: Vec<usize> = parts.iter().flat_map(|(group, _)| group.clone()).collect();
    let rest = cx
        .recipients
        .iter()
        .copied()
        .filter(|i| !refused.contains(i));
    parts.push((rest.collect(), decision));
    Answer::PerRecipient(parts)
}

/// One group per recipient the milter refused at RCPT, with its reply.
fn refused_groups(
    cx: &Context<'_>,
    refused: Vec<(String, crate::smtp::reply::Reply)>,
) -> Vec<(Vec<usize>, Decision)> {
    let index_of = |address: &str| {
        cx.recipients.iter().copied().find(|&i| {
            cx.envelope
                .recipients
                .get(i)
                .is_some_and(|r| r.address == address)
        })
    };
    refused
        .into_iter()
        .filter_map(|(address, reply)| {
            let index = index_of(&address)?;
            let reason = reply.text.to_string();
            let verdict = if reply.code >= 500 {
                Verdict::Reject(reply)
            } else {
                Verdict::Tempfail(reply)
            };
            Some((vec![index], Decision::new(verdict).with_reason(reason)))
        })
        .collect()
}

struct BodyReader(ContentReader);

#[async_trait]
impl BodySource for BodyReader {
    async fn next_chunk(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.next(max).await?)
    }
}
