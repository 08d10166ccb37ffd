//! The message as stages see it: the raw bytes (our Received: header first, CRLF line ends),
//! read from memory or from the spool draft's file, and its MIME tree parsed once, on demand.
//!
//! # Invariants
//! - A message larger than the draft buffer is never read into memory whole unless a stage
//!   asks for the MIME tree or the bytes, and then only up to `max_parse_size`; a stage that
//!   only reads the header (or streams with a [`ContentReader`]) costs no copy of the body.
//! - The MIME tree is parsed at most once per message, whichever stages ask.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use tokio::sync::OnceCell;

use crate::queue::{Draft, DraftSnapshot};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading the message draft: {0}")]
    Read(#[from] std::io::Error),
    #[error("reading the message draft: {0}")]
    Task(String),
}

/// The message at end of data.
pub struct MessageContent<'a> {
    draft: &'a Draft,
    header: &'a [u8],
    max_parse_size: u64,
    snapshot: OnceLock<Arc<DraftSnapshot>>,
    /// The whole message (or its first `max_parse_size` bytes) when it spilled to a file.
    loaded: OnceCell<Option<Arc<[u8]>>>,
    mime: OnceCell<Option<mail_parser::Message<'static>>>,
    // 'static (owned) keeps the type covariant in 'a, so contexts can be reborrowed.
    header_parsed: OnceLock<Option<mail_parser::Message<'static>>>,
    fields: OnceLock<Vec<(String, String)>>,
}

impl<'a> MessageContent<'a> {
    /// `header` is the header section the session collected (our Received: first).
    pub fn new(draft: &'a Draft, header: &'a [u8], max_parse_size: u64) -> Self {
        MessageContent {
            draft,
            header,
            max_parse_size,
            snapshot: OnceLock::new(),
            loaded: OnceCell::new(),
            mime: OnceCell::new(),
            header_parsed: OnceLock::new(),
            fields: OnceLock::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.draft.content_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw header section, CRLF line ends, without the empty line that ends it.
    pub fn header(&self) -> &'a [u8] {
        self.header
    }

    /// Where the body starts in the raw message (after the empty line).
    pub fn body_offset(&self) -> u64 {
        (self.header.len() as u64 + 2).min(self.len())
    }

    /// The header section parsed (decoded values: Subject, From, ...); cheap and shared.
    pub fn parsed_header(&self) -> Option<&mail_parser::Message<'static>> {
        self.header_parsed
            .get_or_init(|| {
                mail_parser::MessageParser::default()
                    .parse_headers(self.header)
                    .map(mail_parser::Message::into_owned)
            })
            .as_ref()
    }

    /// The header fields in order as (name, raw value without the line end, unfolded);
    /// split once, shared.
    pub fn header_fields(&self) -> &[(String, String)] {
        self.fields.get_or_init(|| header_fields(self.header))
    }

    /// The decoded Subject ("" when there is none). A plain one is read from the raw field;
    /// only one with encoded words (RFC 2047) costs a header parse.
    pub fn subject(&self) -> Cow<'a, str> {
        match self.field_values("subject").next() {
            Some(raw) if raw.contains("=?") || !raw.is_ascii() => match self.parsed_header() {
                Some(parsed) => parsed
                    .subject()
                    .map_or(raw, |decoded| Cow::Owned(decoded.to_string())),
                None => raw,
            },
            Some(raw) => raw,
            None => Cow::Borrowed(""),
        }
    }

    /// The values of the fields named `name` (ASCII case-insensitive), in order and unfolded
    /// as [`header_fields`] does, borrowed from the header unless folded or not UTF-8: what
    /// a condition on one field reads without splitting the whole header.
    pub fn field_values<'n>(&self, name: &'n str) -> FieldValues<'a, 'n> {
        FieldValues {
            rest: self.header,
            name,
        }
    }

    /// What the draft holds, for streaming it (copied once, shared).
    pub fn snapshot(&self) -> Arc<DraftSnapshot> {
        self.snapshot
            .get_or_init(|| Arc::new(self.draft.snapshot()))
            .clone()
    }

    /// Streams the whole raw message.
    pub fn reader(&self) -> ContentReader {
        ContentReader::new(self.snapshot(), 0)
    }

    /// Streams the body only.
    pub fn body_reader(&self) -> ContentReader {
        ContentReader::new(self.snapshot(), self.body_offset())
    }

    /// The raw message in memory when it is at most `limit` bytes (and at most
    /// `max_parse_size`); None when it is larger.
    pub async fn bytes(&self, limit: u64) -> Result<Option<Arc<[u8]>>, ContentError> {
        if self.len() > limit.min(self.max_parse_size) {
            return Ok(None);
        }
        if let Some(bytes) = self.draft.buffered() {
            return Ok(Some(Arc::from(bytes)));
        }
        Ok(self.loaded().await?.clone())
    }

    async fn loaded(&self) -> Result<&Option<Arc<[u8]>>, ContentError> {
        self.loaded
            .get_or_try_init(|| async {
                let snapshot = self.snapshot();
                let want = snapshot.len().min(self.max_parse_size);
                let bytes = tokio::task::spawn_blocking(move || read_prefix(&snapshot, want))
                    .await
                    .map_err(|e| ContentError::Task(e.to_string()))??;
                Ok::<_, ContentError>(Some(Arc::from(bytes)))
            })
            .await
    }

    /// The MIME tree (parsed once); a message over `max_parse_size` is parsed from its first
    /// `max_parse_size` bytes. None only when the content cannot be read.
    pub async fn mime(&self) -> Option<&mail_parser::Message<'static>> {
        self.mime
            .get_or_init(|| async {
                let bytes: Arc<[u8]> = match self.draft.buffered() {
                    Some(bytes) => Arc::from(bytes),
                    None => match self.loaded().await {
                        Ok(Some(bytes)) => bytes.clone(),
                        Ok(None) => return None,
                        Err(e) => {
                            log::warn!("pipeline: cannot read the message to parse it: {e}");
                            return None;
                        }
                    },
                };
                mail_parser::MessageParser::default()
                    .parse(&bytes[..])
                    .map(mail_parser::Message::into_owned)
            })
            .await
            .as_ref()
    }

    /// The decoded text of the text parts (text/plain as is, text/html stripped to text),
    /// joined by newlines: what body rules match.
    pub async fn text(&self) -> String {
        let Some(message) = self.mime().await else {
            return String::new();
        };
        let mut text = String::new();
        for index in 0..message.text_body.len().max(message.html_body.len()) {
            if let Some(part) = message.body_text(index) {
                text.push_str(&part);
                text.push('\n');
            }
        }
        text
    }
}

fn read_prefix(snapshot: &DraftSnapshot, want: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; want as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        let n = snapshot.read_at(filled as u64, &mut bytes[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// Reads a message sequentially, a piece at a time (for scanners and milters).
pub struct ContentReader {
    snapshot: Arc<DraftSnapshot>,
    offset: u64,
}

impl ContentReader {
    fn new(snapshot: Arc<DraftSnapshot>, offset: u64) -> Self {
        ContentReader { snapshot, offset }
    }

    /// Reads `snapshot` from `offset` on.
    pub fn from_snapshot(snapshot: Arc<DraftSnapshot>, offset: u64) -> Self {
        ContentReader::new(snapshot, offset)
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.snapshot.len().saturating_sub(self.offset)
    }

    /// The next piece of at most `max` bytes; None at the end.
    pub async fn next(&mut self, max: usize) -> Result<Option<Vec<u8>>, ContentError> {
        let want = (max as u64).min(self.remaining()) as usize;
        if want == 0 {
            return Ok(None);
        }
        let snapshot = self.snapshot.clone();
        let offset = self.offset;
        let piece = tokio::task::spawn_blocking(move || {
            let mut piece = vec![0u8; want];
            let n = snapshot.read_at(offset, &mut piece)?;
            piece.truncate(n);
            Ok::<_, std::io::Error>(piece)
        })
        .await
        .map_err(|e| ContentError::Task(e.to_string()))??;
        if piece.is_empty() {
            return Ok(None);
        }
        self.offset += piece.len() as u64;
        Ok(Some(piece))
    }
}

/// The values of one field; see [`MessageContent::field_values`].
pub struct FieldValues<'h, 'n> {
    rest: &'h [u8],
    name: &'n str,
}

impl<'h> FieldValues<'h, '_> {
    fn take_line(&mut self) -> &'h [u8] {
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(end) => (&self.rest[..end], &self.rest[end + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        line.strip_suffix(b"\r").unwrap_or(line)
    }
}

impl<'h> Iterator for FieldValues<'h, '_> {
    type Item = Cow<'h, str>;

    fn next(&mut self) -> Option<Cow<'h, str>> {
        while !self.rest.is_empty() {
            let line = self.take_line();
            let Some(value) = value_if_named(line, self.name) else {
                continue;
            };
            let mut value = trim_start(String::from_utf8_lossy(value));
            while let Some(b' ' | b'\t') = self.rest.first() {
                let more = self.take_line();
                let unfolded = value.to_mut();
                unfolded.push(' ');
                unfolded.push_str(String::from_utf8_lossy(more).trim_start());
            }
            return Some(value);
        }
        None
    }
}

/// The raw value of a field line when its name is `name`.
fn value_if_named<'h>(line: &'h [u8], name: &str) -> Option<&'h [u8]> {
    if matches!(line.first(), None | Some(b' ' | b'\t')) {
        return None;
    }
    let colon = memchr::memchr(b':', line)?;
    line[..colon]
        .trim_ascii_end()
        .eq_ignore_ascii_case(name.as_bytes())
        .then(|| &line[colon + 1..])
}

fn trim_start(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text.trim_start()),
        Cow::Owned(text) => Cow::Owned(text.trim_start().to_string()),
    }
}

/// Splits a raw header section into (name, value) pairs, unfolding continuation lines; the
/// value keeps its leading space removed and its inner folding as single spaces.
pub fn header_fields(header: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(text.trim_start());
            }
            continue;
        }
        match text.split_once(':') {
            Some((name, value)) => {
                fields.push((name.trim_end().to_string(), value.trim_start().to_string()))
            }
            None => fields.push((text.into_owned(), String::new())),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::{header_fields, FieldValues};
    use std::borrow::Cow;

    #[test]
    fn fields_are_unfolded_in_order() {
        let fields = header_fields(b"Received: from a\r\n\tby b\r\nSubject:  hi\r\nX-A:1\r\n");
        assert_eq!(
            fields,
            vec![
                ("Received".to_string(), "from a by b".to_string()),
                ("Subject".to_string(), "hi".to_string()),
                ("X-A".to_string(), "1".to_string()),
            ]
        );
    }

    #[test]
    fn field_values_agree_with_header_fields() {
        let header: &[u8] = b"Received: from a\r\n\tby b\r\nSubject:  hi\r\n there\r\nX-A:1\r\nx-a : 2\r\nNoColon\r\n folded\r\nX-B: \xff\r\n";
        let draft_free = |name: &str| -> Vec<String> {
            header_fields(header)
                .into_iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .collect()
        };
        for name in ["received", "SUBJECT", "x-a", "X-B", "folded", "absent"] {
            let scanned: Vec<String> = FieldValues { rest: header, name }
                .map(|v| v.into_owned())
                .collect();
            assert_eq!(scanned, draft_free(name), "field {name}");
        }
        let plain: Vec<_> = FieldValues {
            rest: header,
            name: "x-a",
        }
        .collect();
        assert!(
            matches!(plain[0], Cow::Borrowed("1")),
            "one-line values are borrowed"
        );
    }
}
