//! Applying the stages' modifications: the one place that edits a message.
//!
//! Header edits keep every untouched field byte-identical (folding and all); our own
//! Received: field stays first, whatever a stage asks. Values a stage supplies get CRLF line
//! ends, and a continuation line that does not start with white space is indented, so no edit
//! can end the header early or inject a field.

use crate::queue::{Envelope, Recipient, RecipientOutcome};

use super::Modification;

/// One header field, raw: its first line and continuation lines, CRLF-terminated.
struct Field {
    name: String,
    raw: Vec<u8>,
}

fn split_fields(header: &[u8]) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    let mut rest = header;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        match fields.last_mut() {
            Some(field) if continuation => field.raw.extend_from_slice(line),
            _ => {
                let name = line
                    .iter()
                    .position(|&b| b == b':')
                    .map_or(line, |colon| &line[..colon]);
                fields.push(Field {
                    name: String::from_utf8_lossy(name).trim().to_string(),
                    raw: line.to_vec(),
                });
            }
        }
    }
    for field in &mut fields {
        if !field.raw.ends_with(b"\r\n") {
            if field.raw.ends_with(b"\n") {
                field.raw.pop();
            }
            field.raw.extend_from_slice(b"\r\n");
        }
    }
    fields
}

/// A field from a stage's name and value: CRLF line ends, continuations indented.
fn make_field(name: &str, value: &str) -> Field {
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != ':')
        .collect();
    let mut raw = format!("{name}:").into_bytes();
    let value = value.replace("\r\n", "\n").replace('\r', "\n");
    for (i, line) in value.split('\n').enumerate() {
        if i == 0 {
            if !line.starts_with([' ', '\t']) {
                raw.push(b' ');
            }
        } else {
            raw.extend_from_slice(b"\r\n");
            if !line.starts_with([' ', '\t']) {
                raw.push(b'\t');
            }
        }
        raw.extend_from_slice(line.as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    Field { name, raw }
}

/// What the header edits amount to.
pub struct HeaderEdit {
    pub header: Vec<u8>,
    pub changed: bool,
}

/// Applies the header modifications in order to `header` (which starts with our Received:).
pub fn rewrite_header(header: &[u8], modifications: &[Modification]) -> HeaderEdit {
    let mut fields = split_fields(header);
    // Our Received: is never touched: edits work on what follows it.
    let ours = if fields.is_empty() {
        None
    } else {
        Some(fields.remove(0))
    };
    let mut changed = false;
    for modification in modifications {
        changed |= edit(&mut fields, modification);
    }
    let mut out = Vec::with_capacity(header.len() + 256);
    for field in ours.iter().chain(fields.iter()) {
        out.extend_from_slice(&field.raw);
    }
    HeaderEdit {
        header: out,
        changed,
    }
}

fn edit(fields: &mut Vec<Field>, modification: &Modification) -> bool {
    match modification {
        Modification::AddHeader { name, value } => {
            fields.push(make_field(name, value));
        }
        Modification::InsertHeader { index, name, value } => {
            let at = (*index).min(fields.len());
            fields.insert(at, make_field(name, value));
        }
        Modification::ChangeHeader { name, index, value } => {
            let position = fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name.eq_ignore_ascii_case(name))
                .nth(index.saturating_sub(1))
                .map(|(i, _)| i);
            match (position, value) {
                (Some(i), Some(value)) => fields[i] = make_field(&fields[i].name.clone(), value),
                (Some(i), None) => {
                    fields.remove(i);
                }
                (None, Some(value)) => fields.push(make_field(name, value)),
                (None, None) => return false,
            }
        }
        Modification::RemoveHeader { name } => {
            let before = fields.len();
            fields.retain(|f| !f.name.eq_ignore_ascii_case(name));
            return fields.len() != before;
        }
        _ => return false,
    }
    true
}

/// Applies the envelope modifications (recipients, sender) in order.
pub fn apply_to_envelope(envelope: &mut Envelope, modifications: &[Modification]) {
    for modification in modifications {
        match modification {
            Modification::AddRecipient { address, args } => {
                let present = envelope
                    .recipients
                    .iter()
                    .any(|r| r.address.eq_ignore_ascii_case(address));
                if !present {
                    let param = |name: &str| rcpt_parameter(args.as_deref(), name);
                    envelope.recipients.push(Recipient {
                        address: strip_brackets(address).to_string(),
                        notify: param("NOTIFY"),
                        orcpt: param("ORCPT"),
                        outcome: RecipientOutcome::Pending,
                    });
                }
            }
            Modification::DeleteRecipient { address } => {
                let address = strip_brackets(address);
                envelope
                    .recipients
                    .retain(|r| !r.address.eq_ignore_ascii_case(address));
            }
            Modification::ChangeSender { address, .. } => {
                envelope.sender = strip_brackets(address).to_string();
            }
            _ => {}
        }
    }
}

/// The value of one ESMTP RCPT parameter (`NOTIFY=NEVER ORCPT=rfc822;a@b`) of an added
/// recipient (SMFIR_ADDRCPT_PAR); other parameters are not kept.
fn rcpt_parameter(args: Option<&str>, name: &str) -> Option<String> {
    args?.split_ascii_whitespace().find_map(|arg| {
        let (key, value) = arg.split_once('=')?;
        key.eq_ignore_ascii_case(name).then(|| value.to_string())
    })
}

fn strip_brackets(address: &str) -> &str {
    let address = address.trim();
    address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] =
        b"Received: from x\r\n\tby mx\r\nSubject: hi\r\nX-A: 1\r\n\tmore\r\nX-A: 2\r\n";

    fn text(edit: HeaderEdit) -> String {
        String::from_utf8(edit.header).expect("utf-8")
    }

    #[test]
    fn untouched_fields_stay_byte_identical() {
        let edit = rewrite_header(
            HEADER,
            &[Modification::AddHeader {
                name: "X-New".into(),
                value: "v".into(),
            }],
        );
        assert!(edit.changed);
        let out = text(edit);
        assert!(out.starts_with(std::str::from_utf8(HEADER).expect("utf-8")));
        assert!(out.ends_with("X-New: v\r\n"));
    }

    #[test]
    fn insert_change_and_remove() {
        let out = text(rewrite_header(
            HEADER,
            &[
                Modification::InsertHeader {
                    index: 0,
                    name: "X-First".into(),
                    value: "1".into(),
                },
                Modification::ChangeHeader {
                    name: "x-a".into(),
                    index: 2,
                    value: Some("two".into()),
                },
                Modification::ChangeHeader {
                    name: "X-A".into(),
                    index: 1,
                    value: None,
                },
                Modification::RemoveHeader {
                    name: "subject".into(),
                },
            ],
        ));
        assert_eq!(
            out,
            "Received: from x\r\n\tby mx\r\nX-First: 1\r\nX-A: two\r\n"
        );
    }

    #[test]
    fn values_cannot_inject_fields_or_end_the_header() {
        let out = text(rewrite_header(
            HEADER,
            &[Modification::AddHeader {
                name: "X-Evil".into(),
                value: "a\r\n\r\nBcc: victim@example.com\nX: y".into(),
            }],
        ));
        assert!(!out.contains("\r\n\r\n"));
        assert!(!out.contains("\r\nBcc:"));
        assert!(out.contains("\r\n\tBcc: victim@example.com\r\n"));
    }

    #[test]
    fn our_received_stays_first() {
        let out = text(rewrite_header(
            HEADER,
            &[Modification::RemoveHeader {
                name: "Received".into(),
            }],
        ));
        assert!(out.starts_with("Received: from x\r\n\tby mx\r\n"));
    }
}
