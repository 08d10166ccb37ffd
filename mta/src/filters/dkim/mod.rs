//! DKIM signing of outbound mail (RFC 6376, RFC 8463): a sealer run by disposal on each
//! message's final form, after every other change, not a pipeline stage.
//!
//! # Contract
//! - The key is chosen by the From: domain (the domain itself, else its nearest parent that
//!   has a key), so `d=` aligns with From for DMARC.
//! - relaxed/relaxed; the signed fields are `SIGNED_FIELDS` (those absent are over-signed, so
//!   none can be added later), and From is listed twice so a second From cannot be added.
//! - Keys are loaded once (startup, reload); a key that cannot be read or parsed is a start
//!   error, never a silent unsigned message.

pub mod keygen;

use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::{pem::PemObject, PrivateKeyDer};

use crate::config::DkimConfig;

/// What is signed, From twice (over-signing).
const SIGNED_FIELDS: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
];

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dkim key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("dkim signing for {domain}: {message}")]
    Sign { domain: String, message: String },
}

struct DomainKey {
    domain: String,
    signer: DkimSigner<DkimKey, Done>,
}

/// The signing keys by domain.
#[derive(Default)]
pub struct Sealer {
    keys: Vec<DomainKey>,
}

/// Reads a PEM key: PKCS#1 RSA, or PKCS#8 RSA or Ed25519.
fn load_key(path: &Path) -> Result<DkimKey, DkimError> {
    let pem = std::fs::read(path).map_err(|source| DkimError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| DkimError::Key {
        path: path.to_path_buf(),
        message,
    };
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(e.to_string()))?;
    if let PrivateKeyDer::Pkcs8(pkcs8) = &der {
        if let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()) {
            return Ok(DkimKey::Ed25519(key));
        }
    }
    RsaKey::<Sha256>::from_key_der(der)
        .map(DkimKey::Rsa)
        .map_err(|e| bad(format!("neither an RSA nor an Ed25519 private key: {e}")))
}

/// Checks that the key at `path` loads (for `--check-config`).
pub fn key_problem(path: &Path) -> Option<String> {
    load_key(path).err().map(|e| e.to_string())
}

/// The From: header's domain, lower case.
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::default().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
}

impl Sealer {
    pub fn load(configs: &[DkimConfig]) -> Result<Sealer, DkimError> {
        let keys = configs
            .iter()
            .map(|c| {
                let domain = c.domain.trim_end_matches('.').to_ascii_lowercase();
                let signer = DkimSigner::from_key(load_key(&c.private_key)?)
                    .domain(domain.clone())
                    .selector(c.selector.clone())
                    .headers(SIGNED_FIELDS.iter().copied())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed);
                Ok(DomainKey { domain, signer })
            })
            .collect::<Result<Vec<_>, DkimError>>()?;
        Ok(Sealer { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn key_for(&self, domain: &str) -> Option<&DomainKey> {
        let mut candidate = domain;
        loop {
            if let Some(key) = self.keys.iter().find(|k| k.domain == candidate) {
                return Some(key);
            }
            candidate = candidate.split_once('.')?.1;
        }
    }

    /// Whether a message from this From: header would be signed.
    pub fn signs(&self, header: &[u8]) -> bool {
        !self.is_empty() && from_domain(header).is_some_and(|d| self.key_for(&d).is_some())
    }

    /// The DKIM-Signature field's value for the final `message`, or None when no key covers
    /// its From: domain.
    pub fn sign(&self, message: &[u8]) -> Option<Result<String, DkimError>> {
        let domain = from_domain(message)?;
        let key = self.key_for(&domain)?;
        let failed = |e: mail_auth::Error| DkimError::Sign {
            domain: key.domain.clone(),
            message: e.to_string(),
        };
        Some(
            key.signer
                .sign(message)
                .map_err(failed)
                .map(|s| field_value(&s.to_header())),
        )
    }
}

/// `DKIM-Signature: v=1; ...\r\n` → `v=1; ...` with its folding kept.
fn field_value(header: &str) -> String {
    let value = header.split_once(':').map_or(header, |(_, v)| v);
    value
        .trim_start()
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

#[cfg(test)]
mod tests;
