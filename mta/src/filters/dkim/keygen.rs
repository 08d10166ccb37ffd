//! `bulwarkctl dkim keygen DOMAIN SELECTOR`: a new signing key (RSA 2048 by default, or
//! Ed25519) written as PKCS#8 PEM, mode 0600, and the DNS TXT record to publish.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa(usize),
    Ed25519,
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{0}")]
    Generate(String),
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A generated key: its PEM and the `p=`/`k=` of its DNS record.
pub struct Generated {
    pub pem: String,
    pub record: String,
}

pub fn generate(algorithm: Algorithm) -> Result<Generated, KeygenError> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match algorithm {
        Algorithm::Rsa(bits) => {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            Ok(Generated {
                pem: pem.to_string(),
                record: format!("v=DKIM1; k=rsa; p={}", b64(public.as_bytes())),
            })
        }
        Algorithm::Ed25519 => {
            let pkcs8 = mail_auth::common::crypto::Ed25519Key::generate_pkcs8()
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            let key = mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(&pkcs8)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            let body = b64(&pkcs8);
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for line in body.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            Ok(Generated {
                pem,
                record: format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key())),
            })
        }
    }
}

/// Writes `pem` to a new file (never over an existing key), readable by its owner only.
pub fn write_new(path: &Path, pem: &str) -> Result<(), KeygenError> {
    let failed = |source| KeygenError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(pem.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// The record as a zone file line, split in strings of at most 255 bytes (RFC 7208 3.3).
pub fn zone_line(domain: &str, selector: &str, record: &str) -> String {
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join(" ")
    )
}
