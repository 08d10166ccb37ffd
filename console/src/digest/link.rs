//! Signed one-click release links of the quarantine digests.
//!
//! A link carries `payload.signature`: the payload is base64url JSON naming the node, the
//! quarantine id, the one recipient it releases to and when it expires; the signature is
//! HMAC-SHA256 over the payload text with a 32-byte key kept in the console's state
//! directory (`digest.key`, mode 0600, made on first use). Invariants: a link whose signature
//! does not verify is refused before its payload is read; an expired link is refused; a
//! link is used at most once (its digest goes into `digest-used` before the answer, kept
//! until the link would have expired anyway).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What a link allows: release `id` on `node` to `recipient`, until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "n")]
    pub node: String,
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "r")]
    pub recipient: String,
    /// Seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a link this console signed (tampered, truncated, another key).
    BadSignature,
    Expired,
    AlreadyUsed,
}

impl Refusal {
    pub fn text(self) -> &'static str {
        match self {
            Refusal::BadSignature => "This link is not valid.",
            Refusal::Expired => "This link has expired.",
            Refusal::AlreadyUsed => "This link has already been used.",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("digest key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("digest key {0} is not 32 bytes")]
    Size(PathBuf),
}

pub struct Links {
    key: hmac::Key,
    used_path: PathBuf,
    /// Used link digests and when each link expires.
    used: Mutex<HashMap<String, u64>>,
}

/// Reads the key, or makes one (random, 0600) when there is none.
fn load_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => return Ok(bytes),
        Ok(_) => return Err(KeyError::Size(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut key = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| io(std::io::Error::other("no randomness")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    Ok(key)
}

impl Links {
    pub fn open(state_dir: &Path) -> Result<Self, KeyError> {
        let key = load_key(&state_dir.join("digest.key"))?;
        let used_path = state_dir.join("digest-used");
        let used = std::fs::read_to_string(&used_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter_map(|(digest, expires)| Some((digest.to_string(), expires.parse().ok()?)))
            .collect();
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            used_path,
            used: Mutex::new(used),
        })
    }

    pub fn sign(&self, grant: &Grant) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).unwrap_or_default());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The grant of a link this console signed that has neither expired nor been used.
    pub fn check(&self, token: &str, now: u64) -> Result<Grant, Refusal> {
        let (payload, signature) = token.split_once('.').ok_or(Refusal::BadSignature)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refusal::BadSignature)?;
        hmac::verify(&self.key, payload.as_bytes(), &signature)
            .map_err(|_| Refusal::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Refusal::BadSignature)?;
        let grant: Grant = serde_json::from_slice(&bytes).map_err(|_| Refusal::BadSignature)?;
        if now >= grant.expires {
            return Err(Refusal::Expired);
        }
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.contains_key(&digest(token)) {
            return Err(Refusal::AlreadyUsed);
        }
        Ok(grant)
    }

    /// Marks the link used, durably; expired marks are dropped on the way.
    pub fn mark_used(&self, token: &str, grant: &Grant, now: u64) -> std::io::Result<()> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, expires| *expires > now);
        used.insert(digest(token), grant.expires);
        let text: String = used.iter().map(|(d, e)| format!("{d} {e}\n")).collect();
        let tmp = self.used_path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.used_path)
    }
}

/// What is remembered of a used link (not the link itself).
fn digest(token: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires: u64) -> Grant {
        Grant {
            node: "n1".into(),
            id: "00000000000000AB".into(),
            recipient: "a@example.com".into(),
            expires,
        }
    }

    #[test]
    fn links_verify_until_they_expire_are_tampered_with_or_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let links = Links::open(dir.path()).expect("open");
        let token = links.sign(&grant(1000));
        assert_eq!(links.check(&token, 999), Ok(grant(1000)));
        assert_eq!(links.check(&token, 1000), Err(Refusal::Expired));
        let forged = links.sign(&grant(1000)).replace(".", "x.");
        assert_eq!(links.check(&forged, 0), Err(Refusal::BadSignature));
        let other = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&grant(9999)).expect("json"));
        let swapped = format!("{other}.{}", token.split_once('.').expect("dot").1);
        assert_eq!(links.check(&swapped, 0), Err(Refusal::BadSignature));
        links.mark_used(&token, &grant(1000), 10).expect("mark");
        assert_eq!(links.check(&token, 11), Err(Refusal::AlreadyUsed));
        let reopened = Links::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.check(&token, 11),
            Err(Refusal::AlreadyUsed),
            "used survives a restart"
        );
        assert_eq!(
            reopened
                .check(&reopened.sign(&grant(2000)), 11)
                .map(|g| g.expires),
            Ok(2000),
            "same key"
        );
    }
}
