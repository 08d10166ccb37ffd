//! The `disclaimer` action: a text added to the first text/plain part and an HTML fragment to
//! the first text/html part (both when the message has both), MIME-correct.
//!
//! # Invariants
//! - The part keeps its charset and transfer encoding when the charset can carry the text;
//!   otherwise it is re-encoded as UTF-8 (quoted-printable when it was 7bit). QP and base64
//!   are re-encoded whole, so the part decodes to the old text plus the disclaimer.
//! - Never added twice: a part whose decoded text already holds the disclaimer's first line
//!   (a reply quoting it) is left alone.
//! - Never added to a signed or encrypted message (multipart/signed, multipart/encrypted,
//!   application/pkcs7-mime): it would break the signature.
//! - Everything outside the changed parts stays byte-identical (`mime::splice`).

mod encode;

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::mime::splice::{Edits, Splice};
use crate::pipeline::Modification;

/// The texts to add (already read from their files by the config loader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclaimer {
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Why a message got no disclaimer, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    Signed,
    AlreadyPresent,
    NoTextPart,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Signed => "signed or encrypted",
            Skipped::AlreadyPresent => "already present",
            Skipped::NoTextPart => "no text part",
        }
    }
}

fn is_protected(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        match ct.ctype().to_ascii_lowercase().as_str() {
            "multipart" => sub == "signed" || sub == "encrypted",
            "application" => sub == "pkcs7-mime" || sub == "x-pkcs7-mime" || sub == "pgp-encrypted",
            _ => false,
        }
    })
}

/// The first inline part of this subtype, outside attachments.
fn first_text(message: &Message<'_>, html: bool) -> Option<usize> {
    message.parts.iter().position(|part| {
        let kind_matches = match (&part.body, html) {
            (PartType::Html(_), true) => true,
            (PartType::Text(_), false) => part
                .content_type()
                .is_none_or(|ct| ct.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))),
            _ => false,
        };
        let attachment = part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
        kind_matches && !attachment
    })
}

fn marker(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

impl Disclaimer {
    /// Adds the edits for `message`; Err says why nothing was added.
    pub fn add(&self, message: &Message<'_>, edits: &mut Edits) -> Result<(), Skipped> {
        if message.parts.iter().any(is_protected) {
            return Err(Skipped::Signed);
        }
        let targets = [(false, self.text.as_deref()), (true, self.html.as_deref())];
        let mut added = false;
        let mut present = false;
        for (html, addition) in targets {
            let Some(addition) = addition else { continue };
            let Some(index) = first_text(message, html) else {
                continue;
            };
            let part = &message.parts[index];
            let current = part.text_contents().unwrap_or("");
            if current.contains(marker(addition)) {
                present = true;
                continue;
            }
            let new_text = if html {
                with_html(current, addition)
            } else {
                with_text(current, addition)
            };
            rewrite_part(message, index, &new_text, edits);
            added = true;
        }
        match (added, present) {
            (true, _) => Ok(()),
            (false, true) => Err(Skipped::AlreadyPresent),
            (false, false) => Err(Skipped::NoTextPart),
        }
    }
}

fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

fn with_text(current: &str, addition: &str) -> String {
    let body = crlf(current.trim_end_matches(['\r', '\n']));
    format!("{body}\r\n\r\n{}\r\n", crlf(addition.trim_end()))
}

fn with_html(current: &str, addition: &str) -> String {
    let fragment = format!(
        "<div class=\"bulwark-disclaimer\">{}</div>",
        addition.trim()
    );
    let lower = current.to_ascii_lowercase();
    match lower.rfind("</body>") {
        Some(at) => format!("{}{fragment}\r\n{}", &current[..at], &current[at..]),
        None => format!("{}\r\n{fragment}\r\n", current.trim_end()),
    }
}

/// Splices the part at `index` to hold `text`, encoded as `encode` decides.
fn rewrite_part(message: &Message<'_>, index: usize, text: &str, edits: &mut Edits) {
    let part = &message.parts[index];
    let raw = message.raw_message();
    let header = &raw[part.offset_header as usize..part.offset_body as usize];
    let mut encoded = encode::encode(part, text);
    let mut body = std::mem::take(&mut encoded.body);
    if index == 0 {
        if let Some(content_type) = &encoded.content_type {
            edits.header.push(change("Content-Type", content_type));
        }
        if let Some(cte) = &encoded.transfer_encoding {
            edits.header.push(change("Content-Transfer-Encoding", cte));
        }
        edits.splices.push(Splice {
            start: part.offset_body as usize,
            end: part.offset_end as usize,
            with: body,
        });
        return;
    }
    let mut with = encode::part_header(header, &encoded);
    with.append(&mut body);
    // The line end before the next boundary belongs to the boundary.
    while with.ends_with(b"\r\n") {
        with.truncate(with.len() - 2);
    }
    edits.splices.push(Splice {
        start: part.offset_header as usize,
        end: part.offset_end as usize,
        with,
    });
}

fn change(name: &str, value: &str) -> Modification {
    Modification::ChangeHeader {
        name: name.into(),
        index: 1,
        value: Some(value.into()),
    }
}

#[cfg(test)]
mod tests;
