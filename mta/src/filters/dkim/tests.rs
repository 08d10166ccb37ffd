use super::keygen::{generate, Algorithm};
use super::*;

const MESSAGE: &[u8] = b"Received: by mx\r\nFrom: Alice <alice@mail.example.com>\r\nTo: bob@example.org\r\n\
Subject: hi\r\nDate: Wed, 2 Dec 2026 03:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nhello\r\n";

fn sealer_for(algorithm: Algorithm, dir: &Path) -> Sealer {
    let generated = generate(algorithm).expect("generates");
    let path = dir.join("key.pem");
    std::fs::write(&path, generated.pem).expect("write");
    Sealer::load(&[DkimConfig {
        domain: "example.com".into(),
        selector: "s1".into(),
        private_key: path,
    }])
    .expect("loads")
}

#[test]
fn rsa_and_ed25519_keys_sign_with_from_over_signed() {
    for algorithm in [Algorithm::Rsa(2048), Algorithm::Ed25519] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = sealer_for(algorithm, dir.path());
        let value = sealer
            .sign(MESSAGE)
            .expect("a key covers the domain")
            .expect("signs");
        assert!(value.starts_with("v=1;"), "{value}");
        assert!(value.contains("d=example.com"), "{value}");
        assert!(value.contains("c=relaxed/relaxed"), "{value}");
        let h = value
            .split("h=")
            .nth(1)
            .expect("h=")
            .split(';')
            .next()
            .expect("list");
        let h: String = h.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(h.matches("From").count(), 2, "{h}");
        assert!(!h.contains("Received"));
    }
}

#[test]
fn other_domains_are_not_signed_and_bad_keys_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sealer = sealer_for(Algorithm::Ed25519, dir.path());
    let other = b"From: x@other.org\r\nSubject: s\r\n\r\nbody\r\n";
    assert!(sealer.sign(other).is_none());
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").expect("write");
    assert!(key_problem(&bad).is_some());
}
