//! Prints what mail-parser (the MIME parser bulwarkd uses) reads in a message file: every
//! part's type, charset, transfer encoding and decoded text, and which parts it takes as the
//! message's text and HTML bodies, as one JSON object. The black-box tests parse the mail
//! Bulwark delivered with it, beside Python's `email` package (tests/test_policy.py).
//!
//! `cargo run --example mime_texts -- FILE`

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde_json::{json, Value};

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: mime_texts FILE");
        return std::process::ExitCode::from(2);
    };
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("{path}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let Some(message) = MessageParser::default().parse(&raw) else {
        eprintln!("{path}: not a message");
        return std::process::ExitCode::from(1);
    };
    let parts: Vec<Value> = message
        .parts
        .iter()
        .map(|part| {
            let content_type = part.content_type().map(|ct| {
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase()
            });
            let text = match &part.body {
                PartType::Text(text) | PartType::Html(text) => Some(text.to_string()),
                _ => None,
            };
            json!({
                "content_type": content_type,
                "charset": part.content_type().and_then(|ct| ct.attribute("charset")),
                "transfer_encoding": part.content_transfer_encoding(),
                "text": text,
            })
        })
        .collect();
    let report = json!({
        "parts": parts,
        "text_body": message.text_body,
        "html_body": message.html_body,
    });
    println!("{report}");
    std::process::ExitCode::SUCCESS
}
