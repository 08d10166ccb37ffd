//! One message told to one milter, step by step, and the milter's answer as a typed outcome.
//!
//! Contract: `converse` walks CONNECT, HELO, MAIL, RCPT…, DATA, headers, EOH, body and
//! end-of-message, leaving out every step the milter negotiated away (SMFIP_NO*) and waiting
//! for no reply where it negotiated NR_*; body chunks are at most 65,535 bytes and stop at
//! SMFIR_SKIP. The result is a verdict plus the modifications the milter asked for at end of
//! message, in the order it asked, each checked against the actions it negotiated. A reject at
//! RCPT refuses that recipient only. A milter error is returned as `Err`, never guessed into a
//! verdict: the stage applies `default_action`. `reusable` says whether the connection may be
//! reused: only after a whole message that ended in *continue*, reset with SMFIC_QUIT_NC.

use std::collections::HashMap;

use async_trait::async_trait;

use super::client::{unexpected, Connection, MilterError};
use super::protocol::{self, action, command, step, ConnectFamily, MacroStage, Response};
use crate::pipeline::Modification;
use crate::smtp::reply::Reply;

/// The body, streamed in chunks of at most `max` bytes; `None` at the end.
#[async_trait]
pub trait BodySource: Send {
    async fn next_chunk(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error + Send + Sync>>;
}

/// What the milter is told about one message.
pub struct MessageFacts<'a> {
    /// The client's name (reverse DNS, or `[address]`).
    pub client_name: &'a str,
    pub client: ConnectFamily,
    pub helo: &'a str,
    /// The envelope sender without angle brackets (empty for the null sender).
    pub sender: &'a str,
    pub sender_args: Vec<String>,
    pub recipients: Vec<String>,
    /// `(name, value)` header fields in order; folded lines joined by `\n` as Postfix sends them.
    pub headers: Vec<(String, String)>,
    /// Every macro value we know (`j`, `i`, `{client_addr}`, …); `{rcpt_addr}`/`{rcpt_host}` are
    /// set per recipient by the conversation.
    pub macros: HashMap<String, String>,
    /// The macros sent per stage unless the milter asked for its own list.
    pub macro_lists: &'a [Vec<String>; 7],
    /// Bytes of replies the milter may send about this message (a replaced body and added
    /// headers included); more is an error, so a hostile milter cannot exhaust memory.
    pub reply_budget: usize,
}

/// The milter's decision about the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterVerdict {
    Continue,
    /// Accept without further milter processing (modifications asked so far still apply).
    Accept,
    Reject(Reply),
    Tempfail(Reply),
    Discard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterOutcome {
    pub verdict: MilterVerdict,
    /// In the milter's order, one per SMFIR_* request (a replaced body, sent in chunks, is one
    /// [`Modification::ReplaceBody`] with CRLF line ends, after the others).
    pub modifications: Vec<Modification>,
    /// SMFIR_QUARANTINE's reason, when the milter asked to hold the message.
    pub quarantine: Option<String>,
    /// Recipients the milter refused at RCPT, with its reply.
    pub refused_recipients: Vec<(String, Reply)>,
    /// True when the whole message was exchanged and the connection was reset for reuse.
    pub reusable: bool,
}

pub const REJECTED: Reply = Reply::new(550, "5.7.1 Command rejected");
pub const TEMPFAILED: Reply = Reply::new(451, "4.7.1 Service unavailable - try again later");

/// A step's answer: go on, or the message's fate is decided.
enum StepResult {
    Next,
    Final(MilterVerdict),
}

fn judge(response: Response, step: &'static str) -> Result<StepResult, MilterError> {
    Ok(StepResult::Final(match response {
        Response::Continue => return Ok(StepResult::Next),
        Response::Accept => MilterVerdict::Accept,
        Response::Reject => MilterVerdict::Reject(REJECTED),
        Response::Tempfail => MilterVerdict::Tempfail(TEMPFAILED),
        Response::Discard => MilterVerdict::Discard,
        Response::ReplyCode(reply) if reply.code >= 500 => MilterVerdict::Reject(reply),
        Response::ReplyCode(reply) => MilterVerdict::Tempfail(reply),
        other => return Err(unexpected(&other, step)),
    }))
}

struct Talk<'c, 'f> {
    connection: &'c mut Connection,
    facts: &'f MessageFacts<'f>,
}

impl Talk<'_, '_> {
    fn macros(&mut self, stage: MacroStage, extra: &[(&str, &str)]) {
        let lists = &self.connection.negotiated.macros;
        let names = lists[stage.index()]
            .as_ref()
            .unwrap_or(&self.facts.macro_lists[stage.index()]);
        let mut values: Vec<(&str, &str)> = Vec::new();
        for name in names {
            let bare = name.trim_start_matches('{').trim_end_matches('}');
            let value = extra
                .iter()
                .find(|(n, _)| *n == name || *n == bare)
                .map(|(_, v)| *v)
                .or_else(|| self.facts.macros.get(name.as_str()).map(String::as_str))
                .or_else(|| self.facts.macros.get(bare).map(String::as_str));
            if let Some(value) = value {
                values.push((name.as_str(), value));
            }
        }
        let mut packet = Vec::new();
        protocol::encode_macros(stage, values, &mut packet);
        self.connection.buffer().extend_from_slice(&packet);
    }

    /// Sends one command (unless skipped) and judges its reply (unless NR_*).
    async fn step(
        &mut self,
        skip_flag: u32,
        no_reply_flag: u32,
        encode: impl FnOnce(&mut Vec<u8>),
        name: &'static str,
    ) -> Result<StepResult, MilterError> {
        if self.connection.negotiated.skips(skip_flag) {
            return Ok(StepResult::Next);
        }
        encode(self.connection.buffer());
        if self.connection.negotiated.skips(no_reply_flag) {
            return Ok(StepResult::Next);
        }
        let response = self.connection.exchange(name).await?;
        judge(response, name)
    }
}

/// Runs the whole conversation about one message on `connection`.
pub async fn converse(
    connection: &mut Connection,
    facts: &MessageFacts<'_>,
    body: &mut dyn BodySource,
) -> Result<MilterOutcome, MilterError> {
    let mut talk = Talk { connection, facts };
    let mut outcome = MilterOutcome {
        verdict: MilterVerdict::Continue,
        modifications: Vec::new(),
        quarantine: None,
        refused_recipients: Vec::new(),
        reusable: false,
    };
    if let StepResult::Final(verdict) = envelope_steps(&mut talk, &mut outcome).await? {
        outcome.verdict = verdict;
        return Ok(outcome);
    }
    if let StepResult::Final(verdict) = content_steps(&mut talk, body).await? {
        outcome.verdict = verdict;
        return Ok(outcome);
    }
    end_of_message(&mut talk, &mut outcome).await?;
    // libmilter accepts QUIT_NC only after *continue* at end of message: after accept,
    // reject, tempfail or discard it is back in its HELO state, where QUIT_NC and the next
    // CONNECT are silently ignored (engine.c's state table) and the next message would hang.
    if outcome.verdict == MilterVerdict::Continue {
        protocol::encode(command::QUIT_NC, &[], talk.connection.buffer());
        talk.connection.flush().await?;
        outcome.reusable = true;
    }
    Ok(outcome)
}

async fn envelope_steps(
    talk: &mut Talk<'_, '_>,
    outcome: &mut MilterOutcome,
) -> Result<StepResult, MilterError> {
    let facts = talk.facts;
    talk.macros(MacroStage::Connect, &[]);
    let connect =
        |out: &mut Vec<u8>| protocol::encode_connect(facts.client_name, &facts.client, out);
    if let StepResult::Final(v) = talk
        .step(step::NOCONNECT, step::NR_CONN, connect, "connect")
        .await?
    {
        return Ok(StepResult::Final(v));
    }
    talk.macros(MacroStage::Helo, &[]);
    let helo = |out: &mut Vec<u8>| protocol::encode_strings(command::HELO, [facts.helo], out);
    if let StepResult::Final(v) = talk.step(step::NOHELO, step::NR_HELO, helo, "helo").await? {
        return Ok(StepResult::Final(v));
    }
    let sender = format!("<{}>", facts.sender);
    talk.macros(MacroStage::Mail, &[]);
    let args = std::iter::once(sender.as_str()).chain(facts.sender_args.iter().map(String::as_str));
    let mail = |out: &mut Vec<u8>| protocol::encode_strings(command::MAIL, args, out);
    if let StepResult::Final(v) = talk.step(step::NOMAIL, step::NR_MAIL, mail, "mail").await? {
        return Ok(StepResult::Final(v));
    }
    recipient_steps(talk, outcome).await
}

async fn recipient_steps(
    talk: &mut Talk<'_, '_>,
    outcome: &mut MilterOutcome,
) -> Result<StepResult, MilterError> {
    for recipient in &talk.facts.recipients {
        let host = recipient.rsplit_once('@').map_or("", |(_, host)| host);
        talk.macros(
            MacroStage::Rcpt,
            &[("rcpt_addr", recipient), ("rcpt_host", host)],
        );
        let quoted = format!("<{recipient}>");
        let rcpt =
            |out: &mut Vec<u8>| protocol::encode_strings(command::RCPT, [quoted.as_str()], out);
        match talk.step(step::NORCPT, step::NR_RCPT, rcpt, "rcpt").await? {
            StepResult::Next => {}
            // Accept at RCPT accepts this recipient and ends nothing (libmilter CT_IGNO).
            StepResult::Final(MilterVerdict::Accept | MilterVerdict::Continue) => {}
            StepResult::Final(MilterVerdict::Reject(reply) | MilterVerdict::Tempfail(reply)) => {
                outcome.refused_recipients.push((recipient.clone(), reply));
            }
            StepResult::Final(MilterVerdict::Discard) => {
                return Ok(StepResult::Final(MilterVerdict::Discard))
            }
        }
    }
    if outcome.refused_recipients.len() == talk.facts.recipients.len() {
        if let Some((_, reply)) = outcome.refused_recipients.last() {
            let verdict = if reply.code >= 500 {
                MilterVerdict::Reject(reply.clone())
            } else {
                MilterVerdict::Tempfail(reply.clone())
            };
            return Ok(StepResult::Final(verdict));
        }
    }
    Ok(StepResult::Next)
}

async fn content_steps(
    talk: &mut Talk<'_, '_>,
    body: &mut dyn BodySource,
) -> Result<StepResult, MilterError> {
    talk.macros(MacroStage::Data, &[]);
    let data = |out: &mut Vec<u8>| protocol::encode(command::DATA, &[], out);
    if let StepResult::Final(v) = talk.step(step::NODATA, step::NR_DATA, data, "data").await? {
        return Ok(StepResult::Final(v));
    }
    for (name, value) in &talk.facts.headers {
        let header = |out: &mut Vec<u8>| {
            protocol::encode_strings(command::HEADER, [name.as_str(), value.as_str()], out)
        };
        if let StepResult::Final(v) = talk
            .step(step::NOHDRS, step::NR_HDR, header, "header")
            .await?
        {
            return Ok(StepResult::Final(v));
        }
    }
    talk.macros(MacroStage::EndOfHeaders, &[]);
    let eoh = |out: &mut Vec<u8>| protocol::encode(command::EOH, &[], out);
    if let StepResult::Final(v) = talk
        .step(step::NOEOH, step::NR_EOH, eoh, "end of headers")
        .await?
    {
        return Ok(StepResult::Final(v));
    }
    body_steps(talk, body).await
}

async fn body_steps(
    talk: &mut Talk<'_, '_>,
    body: &mut dyn BodySource,
) -> Result<StepResult, MilterError> {
    if talk.connection.negotiated.skips(step::NOBODY) {
        return Ok(StepResult::Next);
    }
    while let Some(chunk) = body
        .next_chunk(protocol::MAX_BODY_CHUNK)
        .await
        .map_err(MilterError::Content)?
    {
        for piece in chunk.chunks(protocol::MAX_BODY_CHUNK) {
            protocol::encode(command::BODY, piece, talk.connection.buffer());
            if talk.connection.negotiated.skips(step::NR_BODY) {
                continue;
            }
            match talk.connection.exchange("body").await? {
                Response::Skip => return Ok(StepResult::Next),
                response => {
                    if let StepResult::Final(v) = judge(response, "body")? {
                        return Ok(StepResult::Final(v));
                    }
                }
            }
        }
    }
    Ok(StepResult::Next)
}

async fn end_of_message(
    talk: &mut Talk<'_, '_>,
    outcome: &mut MilterOutcome,
) -> Result<(), MilterError> {
    talk.macros(MacroStage::EndOfMessage, &[]);
    protocol::encode(command::BODYEOB, &[], talk.connection.buffer());
    let mut new_body: Option<Vec<u8>> = None;
    loop {
        let response = talk.connection.exchange("end of message").await?;
        if talk.connection.bytes_this_message > talk.facts.reply_budget {
            return Err(MilterError::TooMuch(talk.facts.reply_budget));
        }
        let negotiated = &talk.connection.negotiated;
        let modification = match response {
            Response::Quarantine(reason) => {
                permitted(negotiated, action::QUARANTINE, "quarantine")?;
                outcome.quarantine = Some(reason);
                continue;
            }
            Response::ReplaceBody(chunk) => {
                permitted(negotiated, action::CHGBODY, "replace body")?;
                new_body
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(&chunk);
                continue;
            }
            Response::AddHeader { name, value } => {
                permitted(negotiated, action::ADDHDRS, "add header")?;
                Modification::AddHeader { name, value }
            }
            Response::InsertHeader { index, name, value } => {
                permitted(negotiated, action::ADDHDRS, "insert header")?;
                let index = usize::try_from(index).unwrap_or(usize::MAX);
                Modification::InsertHeader { index, name, value }
            }
            Response::ChangeHeader { index, name, value } => {
                permitted(negotiated, action::CHGHDRS, "change header")?;
                let index = usize::try_from(index.max(1)).unwrap_or(usize::MAX);
                let value = (!value.is_empty()).then_some(value);
                Modification::ChangeHeader { name, index, value }
            }
            Response::AddRecipient { address, args } => {
                let flag = if args.is_some() {
                    action::ADDRCPT_PAR
                } else {
                    action::ADDRCPT
                };
                permitted(negotiated, flag, "add recipient")?;
                Modification::AddRecipient {
                    address: unbracket(&address),
                    args,
                }
            }
            Response::DeleteRecipient(address) => {
                permitted(negotiated, action::DELRCPT, "delete recipient")?;
                Modification::DeleteRecipient {
                    address: unbracket(&address),
                }
            }
            Response::ChangeSender { address, args } => {
                permitted(negotiated, action::CHGFROM, "change sender")?;
                Modification::ChangeSender {
                    address: unbracket(&address),
                    args,
                }
            }
            response => {
                if let StepResult::Final(verdict) = judge(response, "end of message")? {
                    outcome.verdict = verdict;
                }
                break;
            }
        };
        outcome.modifications.push(modification);
    }
    if let Some(body) = new_body {
        outcome
            .modifications
            .push(Modification::ReplaceBody(crlf(&body)));
    }
    Ok(())
}

/// Bare CR or LF become CRLF: a milter may send bare LF, and none may reach the spool.
fn crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32);
    let mut bytes = body.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\r' => {
                bytes.next_if_eq(&b'\n');
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            other => out.push(other),
        }
    }
    out
}

fn permitted(
    negotiated: &protocol::Negotiated,
    flag: u32,
    what: &'static str,
) -> Result<(), MilterError> {
    if negotiated.may(flag) {
        Ok(())
    } else {
        Err(MilterError::Unexpected {
            reply: format!("{what} (not negotiated)"),
            step: "end of message",
        })
    }
}

fn unbracket(address: &str) -> String {
    let trimmed = address.trim();
    trimmed
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(trimmed)
        .to_string()
}

/// Splits a raw header section into `(name, value)` as milters expect them: the value after
/// the colon without its leading blanks, folded lines joined by `\n` (as Postfix sends them).
pub fn header_fields(header: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(header);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim_start_matches([' ', '\t']);
            fields.push((name.trim_end().to_string(), value.to_string()));
        }
    }
    fields
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn header_fields_keep_folding_as_newlines() {
        let header = b"Received: from a\r\n\tby b\r\nSubject:  hi\r\nX-Empty:\r\n";
        assert_eq!(
            header_fields(header),
            vec![
                ("Received".to_string(), "from a\n\tby b".to_string()),
                ("Subject".to_string(), "hi".to_string()),
                ("X-Empty".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn replaced_bodies_get_crlf_line_ends() {
        assert_eq!(crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(crlf(b"\r\r\n\n"), b"\r\n\r\n\r\n");
    }

    #[test]
    fn addresses_lose_their_brackets() {
        assert_eq!(unbracket("<a@b>"), "a@b");
        assert_eq!(unbracket("a@b"), "a@b");
        assert_eq!(unbracket("<>"), "");
    }
}
