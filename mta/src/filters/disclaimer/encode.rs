//! Encoding a text part's new text: to its charset (or UTF-8 when the charset cannot carry
//! it) and its transfer encoding (or quoted-printable when 7bit cannot carry it).

use base64::Engine;
use mail_parser::{MessagePart, MimeHeaders};

/// A part's new body and the header values that must change for it.
pub struct Encoded {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub transfer_encoding: Option<String>,
}

/// The text in `charset`; None when the charset is unknown or cannot carry every character.
fn to_charset(charset: &str, text: &str) -> Option<Vec<u8>> {
    let label = charset.trim().to_ascii_lowercase();
    if matches!(label.as_str(), "us-ascii" | "ascii" | "") {
        return text.is_ascii().then(|| text.as_bytes().to_vec());
    }
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())?;
    let (bytes, used, had_errors) = encoding.encode(text);
    (!had_errors && used == encoding).then(|| bytes.into_owned())
}

pub fn encode(part: &MessagePart<'_>, text: &str) -> Encoded {
    let charset = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .unwrap_or("us-ascii");
    let (bytes, content_type) = match to_charset(charset, text) {
        Some(bytes) => (bytes, None),
        None => (text.as_bytes().to_vec(), Some(content_type_in_utf8(part))),
    };
    let declared = part
        .content_transfer_encoding()
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let (body, transfer_encoding) = match declared.as_str() {
        "base64" => (base64_lines(&bytes), None),
        "quoted-printable" => (quoted_printable(&bytes), None),
        "8bit" | "binary" => (bytes, None),
        _ if bytes.is_ascii() => (bytes, None),
        _ => (
            quoted_printable(&bytes),
            Some("quoted-printable".to_string()),
        ),
    };
    Encoded {
        body,
        content_type,
        transfer_encoding,
    }
}

/// The part's Content-Type with `charset=utf-8` (its other parameters kept).
fn content_type_in_utf8(part: &MessagePart<'_>) -> String {
    let (kind, sub) = part
        .content_type()
        .map(|ct| {
            (
                ct.ctype().to_string(),
                ct.subtype().unwrap_or("plain").to_string(),
            )
        })
        .unwrap_or_else(|| ("text".into(), "plain".into()));
    let mut value = format!("{kind}/{sub}; charset=utf-8");
    let others = part
        .content_type()
        .and_then(|ct| ct.attributes())
        .unwrap_or(&[]);
    for attribute in others {
        if !attribute.name.eq_ignore_ascii_case("charset") {
            let quoted = attribute.value.replace(['"', '\\', '\r', '\n'], "");
            value.push_str(&format!("; {}=\"{quoted}\"", attribute.name));
        }
    }
    value
}

fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// RFC 2045 6.7: lines of at most 76 characters, CRLF kept as line breaks.
pub fn quoted_printable(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3 / 2);
    let text = bytes.strip_suffix(b"\r\n").unwrap_or(bytes);
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (j, &b) in line.iter().enumerate() {
            let last = j + 1 == line.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece: Vec<u8> = if literal {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if width + piece.len() > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            width += piece.len();
            out.extend_from_slice(&piece);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The part's raw header with Content-Type / Content-Transfer-Encoding replaced as needed;
/// other fields byte-identical; ends with the empty line.
pub fn part_header(raw: &[u8], encoded: &Encoded) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut seen_cte = false;
    let mut skipping = false;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if !skipping {
                out.extend_from_slice(line);
            }
            continue;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
        let replacement = match name.as_str() {
            "content-type" => encoded.content_type.as_ref(),
            "content-transfer-encoding" => {
                seen_cte = true;
                encoded.transfer_encoding.as_ref()
            }
            _ => None,
        };
        skipping = replacement.is_some();
        match replacement {
            Some(value) if name == "content-type" => {
                out.extend_from_slice(format!("Content-Type: {value}\r\n").as_bytes())
            }
            Some(value) => {
                out.extend_from_slice(format!("Content-Transfer-Encoding: {value}\r\n").as_bytes())
            }
            None => out.extend_from_slice(line),
        }
    }
    if let (false, Some(cte)) = (seen_cte, &encoded.transfer_encoding) {
        out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}
