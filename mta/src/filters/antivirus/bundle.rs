//! Signature bundles: what `bulwarkctl av update FILE` and the automatic updater install.
//!
//! # Format
//! A bundle is a zip archive of signature files at its top level (names `[A-Za-z0-9._-]+`, not
//! starting with a dot; extensions `hdb`, `hsb`, `ndb`, `ldb`, `yar`, `yara`, plus an optional
//! `VERSION`), and beside it a detached signature: Ed25519 over the bundle's exact bytes,
//! written as the raw 64 bytes (`openssl pkeyutl -sign -rawin`) or their base64. Manual
//! updates read `FILE.sig`; automatic ones fetch `update_url` and `update_url.sig`.
//! The public key (`update_public_key`) is base64 of the raw 32-byte key or of the
//! SubjectPublicKeyInfo DER that `openssl pkey -pubout -outform DER` writes.
//!
//! # Invariants
//! - Nothing is written before the signature verified and every file parsed as a complete
//!   set in a staging directory; a bad, unsigned or tampered bundle leaves the installed set
//!   untouched on disk and in memory.
//! - A bundle is the whole set: installed files it does not carry are removed. Files move into
//!   place by rename (each atomic), `VERSION` last; the in-memory swap happens after all of it.

use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

use super::builtin::{SignatureError, Signatures};

/// Largest bundle accepted, and the most its files may expand to.
pub const MAX_BUNDLE: usize = 64 << 20;
const MAX_UNPACKED: u64 = 256 << 20;
const MAX_FILES: usize = 1000;
const EXTENSIONS: &[&str] = &["hdb", "hsb", "ndb", "ldb", "yar", "yara"];
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410) before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("update_public_key is not base64")]
    Base64,
    #[error("update_public_key is not an Ed25519 public key (32 bytes, or its SPKI DER)")]
    NotEd25519,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no update_public_key is configured: bundles cannot be verified")]
    NoKey,
    #[error("the bundle has no signature")]
    Unsigned,
    #[error("the signature is malformed (expected 64 bytes or their base64)")]
    MalformedSignature,
    #[error(
        "the signature does not verify: the bundle was not signed by the update key or was changed"
    )]
    BadSignature,
    #[error("the bundle is larger than {MAX_BUNDLE} bytes")]
    TooLarge,
    #[error("the bundle is not a valid zip archive: {0}")]
    NotZip(String),
    #[error("bundle member {0:?} is not a signature file name")]
    BadName(String),
    #[error("the bundle holds too many or too large files")]
    TooBig,
    #[error("the bundle's signatures do not load: {0}")]
    Signatures(#[from] SignatureError),
    #[error("installing into {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub struct UpdateKey(VerifyingKey);

impl UpdateKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::Base64)?;
        let raw = match bytes.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) => key,
            None => &bytes[..],
        };
        let raw: [u8; 32] = raw.try_into().map_err(|_| KeyError::NotEd25519)?;
        VerifyingKey::from_bytes(&raw)
            .map(UpdateKey)
            .map_err(|_| KeyError::NotEd25519)
    }

    /// Checks `signature` (raw or base64) over `bundle`.
    pub fn verify(&self, bundle: &[u8], signature: &[u8]) -> Result<(), BundleError> {
        let raw = decode_signature(signature).ok_or(BundleError::MalformedSignature)?;
        let signature = Signature::from_bytes(&raw);
        self.0
            .verify_strict(bundle, &signature)
            .map_err(|_| BundleError::BadSignature)
    }
}

fn decode_signature(signature: &[u8]) -> Option<[u8; 64]> {
    if let Ok(raw) = <[u8; 64]>::try_from(signature) {
        return Some(raw);
    }
    let text = std::str::from_utf8(signature).ok()?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    bytes.try_into().ok()
}

/// The files of a (verified) bundle, names checked.
pub fn unpack(bundle: &[u8]) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    use std::io::Read;
    if bundle.len() > MAX_BUNDLE {
        return Err(BundleError::TooLarge);
    }
    let not_zip = |e: zip::result::ZipError| BundleError::NotZip(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bundle)).map_err(not_zip)?;
    if archive.len() > MAX_FILES {
        return Err(BundleError::TooBig);
    }
    let mut files = Vec::with_capacity(archive.len());
    let mut budget = MAX_UNPACKED;
    for index in 0..archive.len() {
        let entry = archive.by_index(index).map_err(not_zip)?;
        let name = entry.name().map_err(not_zip)?.to_string();
        if !acceptable_name(&name) {
            return Err(BundleError::BadName(name));
        }
        let mut data = Vec::new();
        entry
            .take(budget + 1)
            .read_to_end(&mut data)
            .map_err(|e| BundleError::NotZip(e.to_string()))?;
        budget = budget
            .checked_sub(data.len() as u64)
            .ok_or(BundleError::TooBig)?;
        files.push((name, data));
    }
    Ok(files)
}

fn acceptable_name(name: &str) -> bool {
    let charset = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let extension_ok = name == "VERSION"
        || name
            .rsplit_once('.')
            .is_some_and(|(_, ext)| EXTENSIONS.contains(&ext));
    !name.is_empty() && charset && !name.starts_with('.') && extension_ok
}

/// Writes `files` as the whole signature set of `dir` and returns the loaded set.
pub fn install(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Signatures, BundleError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| BundleError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let staging = dir.join(".staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir(&staging).map_err(io(&staging))?;
    for (name, data) in files {
        let path = staging.join(name);
        std::fs::write(&path, data).map_err(io(&path))?;
    }
    if let Err(e) = Signatures::load(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.into());
    }
    remove_stale(dir, files).map_err(io(dir))?;
    let mut names: Vec<&String> = files.iter().map(|(n, _)| n).collect();
    names.sort_by_key(|n| *n == "VERSION");
    for name in names {
        let target = dir.join(name);
        std::fs::rename(staging.join(name), &target).map_err(io(&target))?;
    }
    std::fs::remove_dir(&staging).map_err(io(&staging))?;
    Ok(Signatures::load(dir)?)
}

/// Removes installed signature files the new set does not carry.
fn remove_stale(dir: &Path, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let carried = files.iter().any(|(n, _)| *n == name);
        if acceptable_name(&name) && !carried && entry.path().is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use std::io::Write;

    pub(crate) fn bundle_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        for (name, text) in files {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("test step");
            writer.write_all(text.as_bytes()).expect("test step");
        }
        writer.finish().expect("test step");
        out.into_inner()
    }

    fn key() -> (SigningKey, UpdateKey) {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let public = base64::engine::general_purpose::STANDARD.encode(signing.verifying_key());
        (signing, UpdateKey::parse(&public).expect("test step"))
    }

    #[test]
    fn keys_raw_and_spki() {
        let signing = SigningKey::from_bytes(&[9u8; 32]);
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(signing.verifying_key().as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD;
        assert!(UpdateKey::parse(&b64.encode(&spki)).is_ok());
        assert!(UpdateKey::parse(&b64.encode([1u8; 31])).is_err());
        assert!(UpdateKey::parse("not base64!").is_err());
    }

    #[test]
    fn signatures_verify_raw_and_base64_and_tampering_fails() {
        let (signing, key) = key();
        let bundle = bundle_of(&[("VERSION", "1\n")]);
        let signature = signing.sign(&bundle).to_bytes();
        key.verify(&bundle, &signature).expect("test step");
        let b64 = base64::engine::general_purpose::STANDARD.encode(signature);
        key.verify(&bundle, format!("{b64}\n").as_bytes())
            .expect("test step");
        let mut tampered = bundle.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            key.verify(&tampered, &signature),
            Err(BundleError::BadSignature)
        ));
        let other = SigningKey::from_bytes(&[8u8; 32]).sign(&bundle).to_bytes();
        assert!(matches!(
            key.verify(&bundle, &other),
            Err(BundleError::BadSignature)
        ));
        assert!(matches!(
            key.verify(&bundle, b"short"),
            Err(BundleError::MalformedSignature)
        ));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["../evil.hdb", "sub/dir.hdb", ".hidden.hdb", "run.sh", ""] {
            assert!(!acceptable_name(bad), "{bad}");
        }
        let bundle = bundle_of(&[("../x.hdb", "")]);
        assert!(matches!(unpack(&bundle), Err(BundleError::BadName(_))));
    }

    #[test]
    fn install_replaces_the_set_and_a_bad_set_changes_nothing() {
        let dir = tempfile::tempdir().expect("test step");
        std::fs::write(dir.path().join("old.hdb"), "# old set\n").expect("test step");
        std::fs::write(dir.path().join("keep.txt"), "not ours").expect("test step");
        let md5 = "44d88612fea8a8f36de82e1278abb02f";
        let files = unpack(&bundle_of(&[
            ("VERSION", "2026-12-02.1\n"),
            ("new.hdb", &format!("{md5}:68:Eicar.Hash\n")),
        ]))
        .expect("test step");
        let set = install(dir.path(), &files).expect("test step");
        assert_eq!(set.version, "2026-12-02.1");
        assert_eq!(set.md5_count(), 1);
        assert!(!dir.path().join("old.hdb").exists());
        assert!(dir.path().join("keep.txt").exists());
        let broken =
            unpack(&bundle_of(&[("VERSION", "3\n"), ("bad.hdb", "zz:1:X\n")])).expect("test step");
        assert!(install(dir.path(), &broken).is_err());
        assert_eq!(
            Signatures::load(dir.path()).expect("test step").version,
            "2026-12-02.1"
        );
        assert!(!dir.path().join(".staging").exists());
    }
}
