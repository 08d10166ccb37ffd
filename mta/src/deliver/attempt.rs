//! One mail transaction on an established connection: MAIL, RCPT (pipelined when offered),
//! then DATA (dot-stuffed) or BDAT (when CHUNKING is offered), and a per-recipient outcome.
//!
//! Before MAIL the message is checked against what the next hop offered: a SIZE limit it
//! would refuse, 8-bit content without 8BITMIME (RFC 6152: bounced, 5.6.3), internationalised
//! addresses or headers without SMTPUTF8 (RFC 6531: bounced, 5.6.7). A message declared
//! 8BITMIME whose content is plain ASCII is sent as 7-bit.

use super::encode::ContentEncoder;
use crate::queue::{Content, DsnRet, Envelope};
use crate::smtp::address::quoted;
use crate::smtp_client::{Client, ClientError, Response};

/// Content is sent in pieces of this size.
const PIECE: usize = 64 * 1024;

/// What became of one recipient in this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered { reply: String },
    Bounced { status: String, diagnostic: String },
    Deferred { diagnostic: String },
}

/// Sends the message to `recipients` (indices into the envelope). The flag is true when the
/// connection can no longer be used.
/// `header` is the content's header section (or its start), for the SMTPUTF8 check.
pub async fn send(
    client: &mut Client,
    envelope: &Envelope,
    recipients: &[usize],
    content: &mut Content,
    header: &[u8],
) -> (Vec<(usize, Outcome)>, bool) {
    if let Some(refusal) = refuse_before_mail(client, envelope, recipients, content.len(), header) {
        return (all(recipients, refusal), false);
    }
    content.rewind();
    match transaction(client, envelope, recipients, content).await {
        Ok(results) => (results, false),
        Err(error) => {
            let diagnostic = format!("lost connection with next hop: {error}");
            (all(recipients, Outcome::Deferred { diagnostic }), true)
        }
    }
}

/// The same outcome for every recipient of a job.
pub(crate) fn all(recipients: &[usize], outcome: Outcome) -> Vec<(usize, Outcome)> {
    recipients.iter().map(|&i| (i, outcome.clone())).collect()
}

fn bounced(status: &str, diagnostic: &str) -> Outcome {
    Outcome::Bounced {
        status: status.into(),
        diagnostic: diagnostic.into(),
    }
}

fn refuse_before_mail(
    client: &Client,
    envelope: &Envelope,
    recipients: &[usize],
    size: u64,
    header: &[u8],
) -> Option<Outcome> {
    let caps = &client.capabilities;
    if caps.size.is_some_and(|max| size > max) {
        return Some(bounced(
            "5.3.4",
            "552 5.3.4 Message is larger than the next hop accepts",
        ));
    }
    if !caps.eight_bit && envelope.eight_bit {
        return Some(bounced(
            "5.6.3",
            "554 5.6.3 8-bit content and the next hop does not support 8BITMIME",
        ));
    }
    if !caps.smtputf8 && needs_smtputf8(envelope, recipients, header) {
        return Some(bounced(
            "5.6.7",
            "553 5.6.7 Internationalised addresses and the next hop does not support SMTPUTF8",
        ));
    }
    None
}

fn needs_smtputf8(envelope: &Envelope, recipients: &[usize], header: &[u8]) -> bool {
    if !envelope.smtputf8 {
        return false;
    }
    let header_end = memchr::memmem::find(header, b"\r\n\r\n").unwrap_or(header.len());
    !envelope.sender.is_ascii()
        || recipients.iter().any(|&i| {
            envelope
                .recipients
                .get(i)
                .is_some_and(|r| !r.address.is_ascii())
        })
        || !header[..header_end].is_ascii()
}

fn mail_command(client: &Client, envelope: &Envelope, size: u64) -> String {
    let caps = &client.capabilities;
    let mut command = format!("MAIL FROM:<{}>", quoted(&envelope.sender));
    if caps.size.is_some() {
        command.push_str(&format!(" SIZE={size}"));
    }
    // Declared 8BITMIME but plain ASCII content goes as 7-bit (RFC 6152 needs no conversion).
    if caps.eight_bit && envelope.eight_bit {
        command.push_str(" BODY=8BITMIME");
    }
    if caps.smtputf8 && envelope.smtputf8 {
        command.push_str(" SMTPUTF8");
    }
    // Only reached on a verified session whose next hop offered it (see `secure`).
    if caps.requiretls && envelope.require_tls {
        command.push_str(" REQUIRETLS");
    }
    if caps.dsn {
        match envelope.dsn_ret {
            Some(DsnRet::Full) => command.push_str(" RET=FULL"),
            Some(DsnRet::Hdrs) => command.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &envelope.dsn_envid {
            command.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    command.push_str("\r\n");
    command
}

fn rcpt_command(client: &Client, envelope: &Envelope, index: usize) -> String {
    let recipient = &envelope.recipients[index];
    let mut command = format!("RCPT TO:<{}>", quoted(&recipient.address));
    if client.capabilities.dsn {
        if let Some(notify) = &recipient.notify {
            command.push_str(&format!(" NOTIFY={notify}"));
        }
        if let Some(orcpt) = &recipient.orcpt {
            let (kind, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            command.push_str(&format!(" ORCPT={kind};{}", xtext(address)));
        }
    }
    command.push_str("\r\n");
    command
}

/// RFC 3461 4: xtext, `+XX` for "+", "=" and anything outside printable ASCII.
fn xtext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (33..=126).contains(&byte) && byte != b'+' && byte != b'=' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("+{byte:02X}"));
        }
    }
    out
}

/// Classifies a reply for the recipients it applies to.
fn from_reply(reply: &Response) -> Outcome {
    if reply.is_positive() {
        Outcome::Delivered {
            reply: reply.to_string(),
        }
    } else if reply.is_permanent() {
        Outcome::Bounced {
            status: reply.status(),
            diagnostic: reply.to_string(),
        }
    } else {
        Outcome::Deferred {
            diagnostic: reply.to_string(),
        }
    }
}

/// One SMTP transaction: the envelope (pipelined when the next hop allows), then the content
/// to the recipients it accepted; each recipient's outcome.
async fn transaction(
    client: &mut Client,
    envelope: &Envelope,
    recipients: &[usize],
    content: &mut Content,
) -> Result<Vec<(usize, Outcome)>, ClientError> {
    let recipients: Vec<usize> = recipients
        .iter()
        .copied()
        .filter(|&i| i < envelope.recipients.len())
        .collect();
    // DATA goes in the pipelined batch too; BDAT chunks follow the replies instead.
    let data_pipelined = client.capabilities.pipelining && !client.capabilities.chunking;
    let (mail_reply, rcpt_replies) =
        send_envelope(client, envelope, &recipients, content.len(), data_pipelined).await?;
    if !mail_reply.is_positive() {
        abandon(client, data_pipelined).await?;
        let refused = recipients.iter().map(|&i| (i, from_reply(&mail_reply)));
        return Ok(refused.collect());
    }
    let mut results: Vec<(usize, Outcome)> = Vec::new();
    let mut accepted = Vec::new();
    for (&index, reply) in recipients.iter().zip(&rcpt_replies) {
        if reply.is_positive() {
            accepted.push(index);
        } else {
            results.push((index, from_reply(reply)));
        }
    }
    if accepted.is_empty() {
        abandon(client, data_pipelined).await?;
        return Ok(results);
    }
    let final_reply = send_content(client, content, data_pipelined).await?;
    results.extend(accepted.iter().map(|&i| (i, from_reply(&final_reply))));
    Ok(results)
}

/// MAIL and every RCPT: in one write with PIPELINING (and DATA after them when
/// `data_pipelined`), else one command at a time, stopping after a refused MAIL. The MAIL
/// reply and one reply per recipient (none when MAIL was refused without pipelining).
async fn send_envelope(
    client: &mut Client,
    envelope: &Envelope,
    recipients: &[usize],
    size: u64,
    data_pipelined: bool,
) -> Result<(Response, Vec<Response>), ClientError> {
    if client.capabilities.pipelining {
        let mut batch = mail_command(client, envelope, size);
        for &index in recipients {
            batch.push_str(&rcpt_command(client, envelope, index));
        }
        if data_pipelined {
            batch.push_str("DATA\r\n");
        }
        client.write(batch.as_bytes()).await?;
        let mail = client.read_response(command_timeout(client)).await?;
        let mut replies = Vec::with_capacity(recipients.len());
        for _ in recipients {
            replies.push(client.read_response(command_timeout(client)).await?);
        }
        return Ok((mail, replies));
    }
    let mail = client
        .command(mail_command(client, envelope, size).trim_end())
        .await?;
    let mut replies = Vec::new();
    if mail.is_positive() {
        for &index in recipients {
            let line = rcpt_command(client, envelope, index);
            replies.push(client.command(line.trim_end()).await?);
        }
    }
    Ok((mail, replies))
}

/// Nobody to send to: the pipelined DATA's reply is read and the transaction reset, so the
/// connection stays usable for the next job.
async fn abandon(client: &mut Client, data_pipelined: bool) -> Result<(), ClientError> {
    if data_pipelined {
        let _ = client.read_response(command_timeout(client)).await?;
    }
    client.command("RSET").await?;
    Ok(())
}

/// The content by BDAT or DATA; the reply that decides for every accepted recipient (a DATA
/// refused with other than 354 decides too).
async fn send_content(
    client: &mut Client,
    content: &mut Content,
    data_pipelined: bool,
) -> Result<Response, ClientError> {
    if client.capabilities.chunking {
        return send_bdat(client, content).await;
    }
    let go_ahead = if data_pipelined {
        client.read_response(command_timeout(client)).await?
    } else {
        client.command("DATA").await?
    };
    if go_ahead.code != 354 {
        return Ok(go_ahead);
    }
    send_data(client, content).await
}

fn command_timeout(client: &Client) -> std::time::Duration {
    client.command_timeout()
}

fn spool_error(error: crate::queue::SpoolError) -> ClientError {
    log::error!("delivery: {error}");
    ClientError::Io(std::io::Error::other(error.to_string()))
}

/// Streams the dot-stuffed content in pieces and reads the final reply. A spool read error
/// aborts before the terminating dot, so the next hop never accepts a damaged message.
async fn send_data(client: &mut Client, content: &mut Content) -> Result<Response, ClientError> {
    let mut encoder = ContentEncoder::for_data();
    let mut out = Vec::with_capacity(PIECE + PIECE / 16);
    while let Some(piece) = content.next(PIECE).await.map_err(spool_error)? {
        encoder.encode(&piece, &mut out);
        if out.len() >= PIECE {
            client.write(&out).await?;
            out.clear();
        }
    }
    // The tail and the terminating dot leave together: a small message is one write.
    encoder.finish(&mut out);
    client.write(&out).await?;
    let timeout = client.data_timeout();
    client.read_response(timeout).await
}

/// BDAT chunks of CRLF-normalised content, the last one marked LAST.
async fn send_bdat(client: &mut Client, content: &mut Content) -> Result<Response, ClientError> {
    let mut encoder = ContentEncoder::for_bdat();
    let mut out = Vec::with_capacity(PIECE + PIECE / 16);
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let next = content.next(PIECE).await.map_err(spool_error)?;
        if let Some(chunk) = pending.take() {
            if next.is_some() {
                client.write(&bdat_chunk(&chunk, false)).await?;
                let reply = client.read_response(client.command_timeout()).await?;
                if !reply.is_positive() {
                    return Ok(reply);
                }
            } else {
                out = chunk;
            }
        }
        match next {
            Some(piece) => {
                let mut encoded = Vec::with_capacity(piece.len() + 16);
                encoder.encode(&piece, &mut encoded);
                pending = Some(encoded);
            }
            None => break,
        }
    }
    encoder.finish(&mut out);
    client.write(&bdat_chunk(&out, true)).await?;
    let timeout = client.data_timeout();
    client.read_response(timeout).await
}

/// A BDAT command and its chunk, in one buffer so they leave in one write.
fn bdat_chunk(chunk: &[u8], last: bool) -> Vec<u8> {
    let command = format!(
        "BDAT {}{}\r\n",
        chunk.len(),
        if last { " LAST" } else { "" }
    );
    let mut out = Vec::with_capacity(command.len() + chunk.len());
    out.extend_from_slice(command.as_bytes());
    out.extend_from_slice(chunk);
    out
}

#[cfg(test)]
mod tests {
    use super::xtext;

    #[test]
    fn xtext_encodes_plus_equals_and_space() {
        assert_eq!(xtext("a+b=c d@x"), "a+2Bb+3Dc+20d@x");
        assert_eq!(xtext("plain@example.com"), "plain@example.com");
    }
}
