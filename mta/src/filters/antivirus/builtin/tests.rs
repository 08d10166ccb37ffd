use std::io::Write;

use base64::Engine as _;

use super::magic::tests::fake_pe;
use super::signatures::Signatures;
use super::*;

impl BuiltinEngine {
    /// A scan that must not fail (no YARA rule can time out in these tests).
    fn scan_ok(&self, message: &[u8]) -> Option<Detection> {
        self.scan(message).expect("scan")
    }
}

fn engine() -> BuiltinEngine {
    BuiltinEngine::load(Path::new("/nonexistent/bulwark-signatures"), 25_000_000)
        .expect("test step")
}

pub(crate) fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in files {
            writer.start_file(*name, options).expect("test step");
            writer.write_all(bytes).expect("test step");
        }
        writer.finish().expect("test step");
    }
    out.into_inner()
}

use std::io::Cursor;

pub(crate) fn with_attachment(name: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("test step"))
        .collect();
    format!(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n\
         Content-Type: text/plain\r\n\r\nsee attachment\r\n--XX\r\n\
         Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}\r\n--XX--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

#[test]
fn eicar_in_a_plain_body() {
    let mut message = b"From: a@example.com\r\nSubject: t\r\n\r\n".to_vec();
    message.extend_from_slice(EICAR);
    message.extend_from_slice(b"\r\n");
    assert_eq!(engine().scan_ok(&message), Some(Detection::Eicar));
}

#[test]
fn eicar_as_base64_attachment_and_in_nested_zips() {
    let engine = engine();
    let plain = with_attachment("eicar.com", "application/octet-stream", EICAR);
    assert_eq!(engine.scan_ok(&plain), Some(Detection::Eicar));
    let zipped = zip_of(&[("readme.txt", b"hello"), ("eicar.com", EICAR)]);
    let message = with_attachment("files.zip", "application/zip", &zipped);
    assert_eq!(engine.scan_ok(&message), Some(Detection::Eicar));
    let twice = zip_of(&[("inner.zip", &zipped)]);
    let message = with_attachment("files.zip", "application/zip", &twice);
    assert_eq!(engine.scan_ok(&message), Some(Detection::Eicar));
}

#[test]
fn quoted_printable_is_decoded() {
    // "=3D" hides the '=' nowhere in EICAR, but soft line breaks split it in two.
    let (head, tail) = EICAR.split_at(40);
    let mut message = b"From: a@example.com\r\nContent-Type: text/plain\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        .to_vec();
    message.extend_from_slice(head);
    message.extend_from_slice(b"=\r\n");
    message.extend_from_slice(tail);
    message.extend_from_slice(b"\r\n");
    assert_eq!(engine().scan_ok(&message), Some(Detection::Eicar));
}

#[test]
fn uuencoded_block_is_decoded() {
    let sample = fake_pe();
    let mut text = b"From: a@example.com\r\n\r\nhere:\r\nbegin 644 report.pdf\r\n".to_vec();
    for chunk in sample.chunks(45) {
        text.push(b' ' + chunk.len() as u8);
        for group in chunk.chunks(3) {
            let mut g = [0u8; 3];
            g[..group.len()].copy_from_slice(group);
            let n = [
                g[0] >> 2,
                (g[0] << 4 | g[1] >> 4) & 63,
                (g[1] << 2 | g[2] >> 6) & 63,
                g[2] & 63,
            ];
            text.extend(n.map(|v| if v == 0 { b'`' } else { v + b' ' }));
        }
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b"`\r\nend\r\n");
    assert!(matches!(
        engine().scan_ok(&text),
        Some(Detection::DisguisedExecutable { format: "PE", .. })
    ));
}

#[test]
fn clean_mail_with_attachments_passes() {
    let zipped = zip_of(&[
        ("notes.txt", b"quarterly numbers"),
        ("logo.png", b"\x89PNG\r\n"),
    ]);
    let message = with_attachment("files.zip", "application/zip", &zipped);
    assert_eq!(engine().scan_ok(&message), None);
    let pdf = with_attachment("a.pdf", "application/pdf", b"%PDF-1.7 plain document");
    assert_eq!(engine().scan_ok(&pdf), None);
}

#[test]
fn hash_lists_match_attachments_and_members() {
    use md5::Digest as _;
    let sample = b"a sample the hash list knows";
    let dir = tempfile::tempdir().expect("test step");
    let md5: String = md5::Md5::digest(sample)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        dir.path().join("t.hdb"),
        format!("{md5}:{}:Test.Sample.Md5\n", sample.len()),
    )
    .expect("test step");
    let engine = BuiltinEngine::load(dir.path(), 25_000_000).expect("test step");
    let found = Some(Detection::Hash("Test.Sample.Md5".into()));
    assert_eq!(
        engine.scan_ok(&with_attachment(
            "x.bin",
            "application/octet-stream",
            sample
        )),
        found
    );
    let zipped = zip_of(&[("x.bin", sample)]);
    assert_eq!(
        engine.scan_ok(&with_attachment("x.zip", "application/zip", &zipped)),
        found
    );
}

#[test]
fn disguised_executables_are_caught_by_name_or_type() {
    let engine = engine();
    let by_name = with_attachment("invoice.pdf", "application/octet-stream", &fake_pe());
    assert!(matches!(
        engine.scan_ok(&by_name),
        Some(Detection::DisguisedExecutable { format: "PE", .. })
    ));
    let by_type = with_attachment("scan", "image/jpeg", &fake_pe());
    assert!(engine.scan_ok(&by_type).is_some());
    let honest = with_attachment("setup.exe", "application/x-msdownload", &fake_pe());
    assert_eq!(engine.scan_ok(&honest), None);
    let in_zip = zip_of(&[("cv.docx", &fake_pe())]);
    assert!(engine
        .scan_ok(&with_attachment("cv.zip", "application/zip", &in_zip))
        .is_some());
}

#[test]
fn rfc2231_names_are_decoded() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(fake_pe());
    let message = format!(
        "From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
         --B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment;\r\n filename*0*=utf-8''Rechnung%20M;\r\n filename*1*=%C3%A4rz.pdf\r\n\r\n\
         {encoded}\r\n--B--\r\n"
    );
    match engine().scan_ok(message.as_bytes()) {
        Some(Detection::DisguisedExecutable { claim, .. }) => {
            assert!(claim.contains("Rechnung März.pdf"), "{claim}")
        }
        other => panic!("expected a disguised executable, got {other:?}"),
    }
}

#[test]
fn zip_bombs_are_stopped_by_ratio_and_budget() {
    let zeros = vec![0u8; 50 << 20];
    let bomb = zip_of(&[("zeros.txt", &zeros)]);
    assert!(bomb.len() < 200_000);
    let message = with_attachment("bomb.zip", "application/zip", &bomb);
    assert_eq!(
        engine().scan_ok(&message),
        Some(Detection::ZipBomb(BombLimit::Ratio))
    );
    // Within the ratio but over a small budget: the size limit.
    let small_budget = BuiltinEngine::load(Path::new("/nonexistent"), 1 << 20).expect("test step");
    let random: Vec<u8> = (0..(2u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big = zip_of(&[("noise.bin", &random)]);
    let message = with_attachment("big.zip", "application/zip", &big);
    assert_eq!(
        small_budget.scan_ok(&message),
        Some(Detection::ZipBomb(BombLimit::Size))
    );
}

#[test]
fn nesting_beyond_the_limit_is_a_verdict() {
    let mut archive = zip_of(&[("clean.txt", b"nothing here")]);
    for _ in 0..=MAX_DEPTH {
        archive = zip_of(&[("deeper.zip", &archive)]);
    }
    let message = with_attachment("deep.zip", "application/zip", &archive);
    assert_eq!(engine().scan_ok(&message), Some(Detection::NestingLimit));
}

#[test]
fn reload_swaps_the_set_and_keeps_it_on_error() {
    let dir = tempfile::tempdir().expect("test step");
    let engine = BuiltinEngine::load(dir.path(), 1 << 20).expect("test step");
    let sample = b"second wave sample";
    let message = with_attachment("s.bin", "application/octet-stream", sample);
    assert_eq!(engine.scan_ok(&message), None);
    let held = engine.signatures();
    use md5::Digest as _;
    let md5: String = md5::Md5::digest(sample)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.path().join("new.hdb"), format!("{md5}:*:Second.Wave\n"))
        .expect("test step");
    engine.reload().expect("test step");
    assert_eq!(
        engine.scan_ok(&message),
        Some(Detection::Hash("Second.Wave".into()))
    );
    // A scan that took the old set before the swap still has it, unchanged.
    assert_eq!(held.md5_count(), 0);
    std::fs::write(dir.path().join("broken.hdb"), "zz:1:Broken\n").expect("test step");
    assert!(engine.reload().is_err());
    assert_eq!(
        engine.scan_ok(&message),
        Some(Detection::Hash("Second.Wave".into()))
    );
    let _: &Signatures = &engine.signatures();
}

#[cfg(feature = "yara")]
mod yara_rules {
    use super::*;

    const RULE: &str =
        "rule Marker_In_Member {\n  strings: $m = \"yara-marker-in-a-member\"\n  condition: $m\n}\n";

    fn engine_with_rule(dir: &Path) -> BuiltinEngine {
        std::fs::write(dir.join("mail.yar"), RULE).expect("test step");
        BuiltinEngine::load(dir, 1 << 20).expect("test step")
    }

    #[test]
    fn a_rule_matches_decoded_attachments_and_nested_zip_members() {
        let dir = tempfile::tempdir().expect("test step");
        let engine = engine_with_rule(dir.path());
        let found = Some(Detection::Yara("YARA.Marker_In_Member".into()));
        let payload: &[u8] = b"text with yara-marker-in-a-member inside";
        let attached = with_attachment("a.txt", "text/plain", payload);
        assert_eq!(engine.scan_ok(&attached), found);
        let inner = zip_of(&[("deep/a.txt", payload)]);
        let outer = zip_of(&[("inner.zip", &inner)]);
        let zipped = with_attachment("a.zip", "application/zip", &outer);
        assert_eq!(engine.scan_ok(&zipped), found);
        assert_eq!(
            found.map(|d| d.name()).as_deref(),
            Some("YARA.Marker_In_Member")
        );
        let clean = with_attachment("a.txt", "text/plain", b"nothing here");
        assert_eq!(engine.scan_ok(&clean), None);
    }

    #[test]
    fn a_rule_file_with_a_syntax_error_keeps_the_old_rules() {
        let dir = tempfile::tempdir().expect("test step");
        let engine = engine_with_rule(dir.path());
        let message = with_attachment("a.txt", "text/plain", b"yara-marker-in-a-member");
        std::fs::write(
            dir.path().join("new.yar"),
            "rule New {\n  condition: nosuchthing\n}\n",
        )
        .expect("test step");
        match engine.reload() {
            Err(SignatureError::Yara(error)) => {
                assert!(error.path.ends_with("new.yar"), "{error}");
                assert_eq!((error.line, error.column), (2, 14), "{error}");
            }
            other => panic!("expected a YARA error, got {other:?}"),
        }
        assert_eq!(engine.signatures().yara.rule_count(), 1);
        assert!(engine.scan_ok(&message).is_some());
    }
}
