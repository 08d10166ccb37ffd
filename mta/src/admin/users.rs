//! The console's users file (`[console] users_file`): one JSON object per line, written only by
//! `bulwarkctl console user ...` (atomically: a temporary file renamed over it, mode 0600, or
//! the replaced file's owner and group-readable mode), read by `bulwark-console`, which
//! re-reads it when its modification time changes. Lines starting with `#` are comments.
//!
//! Invariants: passwords are stored only as Argon2id PHC strings; a TOTP secret is 20 random
//! bytes (RFC 4226's recommended length), checked as RFC 6238 (SHA-1, 30 s steps, 6 digits,
//! one step of clock skew either way); a `quarantine` user has at least one domain.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, configuration and nodes included.
    Admin,
    /// Queue, quarantine and flow control.
    Operator,
    /// Read-only.
    Auditor,
    /// The quarantine of its own domains only.
    Quarantine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string.
    pub password: String,
    /// Base32 TOTP secret; none: no second factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// For `quarantine` users: the recipient domains they manage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("{0:?} is not a valid user name (letters, digits, . _ - @; at most 64)")]
    BadName(String),
    #[error("a quarantine manager needs at least one --domain")]
    NoDomains,
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// The first line of every users file (the packaged one too): lines starting with `#` are
/// comments.
pub const USERS_FILE_HEADER: &str =
    "# Bulwark console users, one JSON object per line: written by `bulwarkctl console user`, never by hand";

pub fn load(path: &Path) -> Result<Vec<User>, UsersError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(UsersError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| UsersError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

pub fn save(path: &Path, users: &[User]) -> Result<(), UsersError> {
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut staged = path.as_os_str().to_owned();
    staged.push(".new");
    let staged = PathBuf::from(staged);
    let _ = std::fs::remove_file(&staged);
    // A replaced file keeps its owner, group and mode: the packaged one is root:bulwark-console
    // 0640 so that the console, running as its own user, can read what root's bulwarkctl wrote.
    let kept = std::fs::metadata(path).ok();
    let mode = kept.as_ref().map_or(0o600, |m| m.mode() & 0o640);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&staged)
        .map_err(io)?;
    if let Some(kept) = &kept {
        // Only root may give a file away; anyone else keeps their own (the usual case in tests).
        let _ = std::os::unix::fs::fchown(&file, Some(kept.uid()), Some(kept.gid()));
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    writeln!(file, "{USERS_FILE_HEADER}").map_err(io)?;
    for user in users {
        let line = serde_json::to_string(user).map_err(|e| UsersError::Hash(e.to_string()))?;
        writeln!(file, "{line}").map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(&staged, path).map_err(io)
}

pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| UsersError::Hash("no randomness".into()))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| UsersError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

pub fn verify_password(user: &User, password: &str) -> bool {
    PasswordHash::new(&user.password).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A fresh base32 TOTP secret.
pub fn new_totp_secret() -> Result<String, UsersError> {
    let mut secret = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| UsersError::Hash("no randomness".into()))?;
    Ok(base32_encode(&secret))
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut buffer = [0u8; 5];
        buffer[..chunk.len()].copy_from_slice(chunk);
        let bits = buffer
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let symbols = (chunk.len() * 8).div_ceil(5);
        for i in 0..symbols {
            out.push(BASE32[((bits >> (35 - i * 5)) & 31) as usize] as char);
        }
    }
    out
}

pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let (mut bits, mut count, mut out) = (0u64, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let value = BASE32.iter().position(|b| *b == c.to_ascii_uppercase())? as u64;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// RFC 6238 code for `step` (unix time / 30).
pub fn totp_code(secret: &[u8], step: u64) -> u32 {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, &step.to_be_bytes());
    let digest = tag.as_ref();
    let offset = usize::from(digest[19] & 0x0f);
    let word = u32::from_be_bytes([
        digest[offset],
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    (word & 0x7fff_ffff) % 1_000_000
}

/// True when `code` is the user's TOTP code at `unix_time`, one step of skew allowed.
pub fn verify_totp(secret_base32: &str, code: &str, unix_time: u64) -> bool {
    let (Some(secret), Ok(code)) = (base32_decode(secret_base32), code.trim().parse::<u32>())
    else {
        return false;
    };
    let step = unix_time / 30;
    [step.saturating_sub(1), step, step + 1]
        .iter()
        .any(|s| totp_code(&secret, *s) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        // RFC 6238 Appendix B, SHA-1, last 6 digits.
        assert_eq!(totp_code(secret, 59 / 30), 287082);
        assert_eq!(totp_code(secret, 1111111109 / 30), 81804);
        assert_eq!(totp_code(secret, 2000000000 / 30), 279037);
        let encoded = base32_encode(secret);
        assert_eq!(encoded, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert!(verify_totp(&encoded, "081804", 1111111109 + 30));
        assert!(!verify_totp(&encoded, "081804", 1111111109 + 90));
    }

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let user = User {
            name: "a".into(),
            role: Role::Admin,
            password: hash,
            totp: None,
            domains: vec![],
        };
        assert!(verify_password(&user, "s3cret"));
        assert!(!verify_password(&user, "S3cret"));
    }

    #[test]
    fn a_rewrite_keeps_the_files_group_mode_but_never_makes_it_world_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        save(&path, &[]).expect("first save");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "a new users file is private");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        save(&path, &[]).expect("second save");
        assert_eq!(
            mode(&path),
            0o640,
            "the packaged group-readable mode is kept"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        save(&path, &[]).expect("third save");
        assert_eq!(
            mode(&path),
            0o640,
            "password hashes are never world-readable"
        );
    }

    #[test]
    fn users_file_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        assert!(load(&path).expect("load").is_empty());
        let user = User {
            name: "q".into(),
            role: Role::Quarantine,
            password: "x".into(),
            totp: None,
            domains: vec!["example.org".into()],
        };
        save(&path, &[user]).expect("save");
        let loaded = load(&path).expect("load");
        assert_eq!(loaded[0].domains, vec!["example.org".to_string()]);
        assert_eq!(loaded[0].role, Role::Quarantine);
    }
}
