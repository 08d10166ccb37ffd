//! The `strip` action: attachments that match a rule are replaced by a short text/plain part
//! naming what was removed and why.
//!
//! # Invariants
//! - Every byte outside a removed part stays as it was: the new body is the raw message
//!   spliced at the part's offsets (`mime::splice`), not a re-serialised tree.
//! - A removed part keeps its place in the tree (its boundary lines are untouched), so the
//!   structure the recipient's client shows is the same minus the attachment.
//! - The original is kept whole by the disposal code (a quarantine copy), so it can be released.

use mail_parser::Message;

use super::mime::splice::{Edits, Splice};
use crate::pipeline::Modification;

/// One part to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub part: usize,
    pub name: Option<String>,
    /// Why (the rule's reason and what matched).
    pub why: String,
}

/// What the recipient reads in place of the attachment (ASCII: names are escaped, which also
/// shows a hidden direction override for what it is).
fn notice(removal: &Removal) -> String {
    let name = removal
        .name
        .as_deref()
        .map(|n| n.escape_default().to_string())
        .unwrap_or_else(|| "(unnamed)".into());
    format!(
        "The attachment \"{name}\" was removed by the mail gateway: {}.\r\n\
         The original message is kept in quarantine; ask your administrator to release it.\r\n",
        removal.why.escape_default()
    )
}

const NOTICE_HEADER: &str = "Content-Type: text/plain; charset=us-ascii\r\n\
    Content-Disposition: inline\r\nContent-Transfer-Encoding: 7bit\r\n";

/// Adds the edits that remove `removals` from `message` (parsed from `raw`).
pub fn strip(message: &Message<'_>, removals: &[Removal], edits: &mut Edits) {
    for removal in removals {
        let Some(part) = message.parts.get(removal.part) else {
            continue;
        };
        let text = notice(removal);
        if removal.part == 0 {
            edits.header.extend(root_header());
            edits.splices.push(Splice {
                start: part.offset_body as usize,
                end: part.offset_end as usize,
                with: text.into_bytes(),
            });
            continue;
        }
        let mut with = NOTICE_HEADER.as_bytes().to_vec();
        with.extend_from_slice(b"\r\n");
        with.extend_from_slice(text.trim_end().as_bytes());
        edits.splices.push(Splice {
            start: part.offset_header as usize,
            end: part.offset_end as usize,
            with,
        });
    }
}

/// A single-part message that is itself the attachment becomes a text message.
fn root_header() -> Vec<Modification> {
    let set = |name: &str, value: &str| Modification::ChangeHeader {
        name: name.into(),
        index: 1,
        value: Some(value.into()),
    };
    vec![
        set("Content-Type", "text/plain; charset=us-ascii"),
        set("Content-Transfer-Encoding", "7bit"),
        Modification::RemoveHeader {
            name: "Content-Disposition".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::mime::splice;

    const RAW: &str = "Received: x\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
        preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n\
        Content-Type: application/octet-stream; name=\"x.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        TVqQAA==\r\n--b\r\nContent-Type: text/plain; name=\"keep.txt\"\r\n\r\nkeep\r\n--b--\r\nepilogue\r\n";

    #[test]
    fn only_the_removed_part_changes() {
        let message = mail_parser::MessageParser::default()
            .parse(RAW.as_bytes())
            .expect("parses");
        let exe = message
            .parts
            .iter()
            .position(|p| p.contents().starts_with(b"MZ"))
            .expect("the exe part");
        let mut edits = Edits::default();
        strip(
            &message,
            &[Removal {
                part: exe,
                name: Some("x.exe".into()),
                why: "executables".into(),
            }],
            &mut edits,
        );
        let body_offset = RAW.find("\r\n\r\n").expect("header end") + 4;
        let body = splice::apply(RAW.as_bytes(), body_offset, &edits.splices);
        let body = String::from_utf8(body).expect("utf-8");
        let (before, after) = RAW[body_offset..]
            .split_once("Content-Type: application")
            .expect("split");
        assert!(body.starts_with(before), "{body}");
        let tail = &after[after.find("\r\n--b\r\n").expect("next boundary")..];
        assert!(body.ends_with(tail), "{body}");
        assert!(body.contains("\"x.exe\" was removed by the mail gateway: executables."));
        assert!(!body.contains("TVqQ"));
    }
}
