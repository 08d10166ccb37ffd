use super::*;
use crate::filters::mime::splice;

fn disclaimer() -> Disclaimer {
    Disclaimer {
        text: Some("Confidential: Bürgschaft applies.".into()),
        html: Some("<p>Confidential: B&uuml;rgschaft applies.</p>".into()),
    }
}

/// The message with the disclaimer's edits applied (header edits ignored).
fn added(raw: &str) -> Result<String, Skipped> {
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("parses");
    let mut edits = Edits::default();
    disclaimer().add(&message, &mut edits)?;
    let body_offset = raw.find("\r\n\r\n").expect("header end") + 4;
    let body = splice::apply(raw.as_bytes(), body_offset, &edits.splices);
    Ok(format!(
        "{}{}",
        &raw[..body_offset],
        String::from_utf8_lossy(&body)
    ))
}

fn reparsed_texts(raw: &str) -> Vec<String> {
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("reparses");
    message
        .parts
        .iter()
        .filter_map(|p| p.text_contents().map(str::to_string))
        .collect()
}

#[test]
fn alternative_gets_both_and_the_boundaries_survive() {
    let raw = "Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
        Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
        Gr=FC=DFe\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        PGh0bWw+PGJvZHk+aGk8L2JvZHk+PC9odG1sPg==\r\n--b--\r\n";
    let out = added(raw).expect("added");
    let texts = reparsed_texts(&out);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Grüße") && t.contains("Bürgschaft")),
        "{texts:?}\n{out}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("<html><body>hi<div class=\"bulwark-disclaimer\">")),
        "{texts:?}"
    );
    assert!(
        out.contains("charset=iso-8859-1"),
        "ISO-8859-1 can carry it: {out}"
    );
    assert!(out.ends_with("\r\n--b--\r\n"));
    assert_eq!(added(&out), Err(Skipped::AlreadyPresent));
}

#[test]
fn ascii_part_is_re_encoded_as_utf8() {
    let raw = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n";
    let out = added(raw).expect("added");
    assert!(out.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"), "{out}");
    assert!(reparsed_texts(&out)[0].contains("Bürgschaft"));
}

#[test]
fn signed_messages_are_left_alone() {
    let raw = "Content-Type: multipart/signed; boundary=b; protocol=\"application/pgp-signature\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nsigned\r\n--b\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--b--\r\n";
    assert_eq!(added(raw), Err(Skipped::Signed));
}

#[test]
fn quoted_printable_lines_stay_short() {
    let long = "é".repeat(100);
    let qp = encode::quoted_printable(long.as_bytes());
    assert!(qp.split(|&b| b == b'\n').all(|l| l.len() <= 77));
}
