//! The attachments of a message: every leaf part that is not the message's own text, with
//! its decoded name (Content-Disposition `filename`, `filename*` and RFC 2231 continuations,
//! Content-Type `name`, encoded-words: mail-parser decodes them all), its declared and
//! detected types, its decoded size, and what its archive holds.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::archive::{self, Limits, Walk};
use super::magic;

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its index in the parsed message's parts (offsets for splicing come from there).
    pub part: usize,
    /// The decoded name as sent, if any.
    pub name: Option<String>,
    /// `type/subtype`, lower case; `application/octet-stream` when absent.
    pub declared_type: String,
    pub detected_type: Option<&'static str>,
    /// Decoded size in bytes.
    pub size: u64,
    /// Its members when it is a zip (nested archives included).
    pub archive: Walk,
}

/// All attachments of one message, in part order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub attachments: Vec<Attachment>,
}

/// Lists the attachments of `message`.
pub fn inventory(message: &Message<'_>, limits: Limits) -> Inventory {
    let attachments = message
        .parts
        .iter()
        .enumerate()
        .filter(|(index, part)| is_attachment(message, *index, part))
        .map(|(index, part)| describe(index, part, limits))
        .collect();
    Inventory { attachments }
}

/// A leaf that is not one of the message's text bodies shown inline.
fn is_attachment(message: &Message<'_>, index: usize, part: &MessagePart<'_>) -> bool {
    if matches!(part.body, PartType::Multipart(_)) {
        return false;
    }
    let disposition_attachment = part
        .content_disposition()
        .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
    if disposition_attachment || part.attachment_name().is_some() {
        return true;
    }
    let text_body =
        message.text_body.contains(&(index as u32)) || message.html_body.contains(&(index as u32));
    let text = matches!(part.body, PartType::Text(_) | PartType::Html(_));
    !(text_body || text && index == 0)
}

fn describe(index: usize, part: &MessagePart<'_>, limits: Limits) -> Attachment {
    let declared_type = part
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_ascii_lowercase();
    let bytes = part.contents();
    let archive = archive::walk(bytes, limits);
    let detected_type = match magic::detect(bytes) {
        Some("application/zip") => {
            magic::office_type(archive.members.iter().map(|m| m.path.as_str()))
                .or(Some("application/zip"))
        }
        other => other,
    };
    Attachment {
        part: index,
        name: part.attachment_name().map(str::to_string),
        declared_type,
        detected_type,
        size: bytes.len() as u64,
        archive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Message<'static> {
        mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .expect("parses")
            .into_owned()
    }

    #[test]
    fn names_from_rfc2231_continuations_and_encoded_words() {
        let raw = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
            Content-Type: text/plain\r\n\r\nbody\r\n--b\r\n\
            Content-Type: application/octet-stream\r\n\
            Content-Disposition: attachment; filename*0*=UTF-8''in%E2%80%AEvo; filename*1=ice.exe\r\n\
            \r\nTVqQAA==\r\n--b\r\n\
            Content-Type: application/pdf; name=\"=?UTF-8?B?cmVwb3J0LnBkZg==?=\"\r\n\r\n%PDF-1\r\n--b--\r\n";
        let inv = inventory(&parse(raw), Limits::default());
        let names: Vec<Option<&str>> = inv.attachments.iter().map(|a| a.name.as_deref()).collect();
        assert_eq!(names, [Some("in\u{202e}voice.exe"), Some("report.pdf")]);
        assert_eq!(inv.attachments[1].declared_type, "application/pdf");
    }
}
