//! SMTP AUTH (RFC 4954) with PLAIN and LOGIN, offered only inside TLS, against a file of
//! password hashes (`user:$6$...` as made by `openssl passwd -6`, or `$5$`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha_crypt::{PasswordVerifier, ShaCrypt};

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected user:hash with a $5$ or $6$ hash")]
    Syntax { path: PathBuf, line: usize },
}

/// The users allowed to authenticate, by name.
#[derive(Debug, Default, Clone)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// A real hash (the first user's by name) that unknown names are checked against, so an
    /// unknown user costs the same time as a wrong password and timing reveals no names.
    decoy: Option<String>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = || UsersError::Syntax {
                path: path.to_path_buf(),
                line: number + 1,
            };
            let (user, hash) = line.split_once(':').ok_or_else(syntax)?;
            if !(hash.starts_with("$6$") || hash.starts_with("$5$")) {
                return Err(syntax());
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        let decoy = hashes
            .iter()
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, hash)| hash.clone());
        Ok(Users { hashes, decoy })
    }

    /// Checks a password; deliberately slow (the hash's rounds), so call it off the reactor.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let known = self.hashes.get(user);
        let Some(hash) = known.or(self.decoy.as_ref()) else {
            return false;
        };
        let matches = ShaCrypt::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok();
        known.is_some() && matches
    }
}

/// Decodes a base64 SASL response; `None` when it is not valid base64 or UTF-8.
pub fn decode_b64(text: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

pub fn encode_b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Splits a PLAIN response `authzid\0authcid\0password` into (authcid, password).
pub fn parse_plain(decoded: &str) -> Option<(String, String)> {
    let mut parts = decoded.split('\0');
    let _authzid = parts.next()?;
    let user = parts.next()?;
    let password = parts.next()?;
    if parts.next().is_some() || user.is_empty() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_openssl_sha512_crypt() {
        // `openssl passwd -6 -salt abcdefgh secret`
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        std::fs::write(
            &path,
            "# comment\nalice:$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.\n",
        )
        .expect("write");
        let users = Users::load(&path).expect("load");
        assert!(users.verify("alice", "secret"));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("bob", "secret"));
    }

    #[test]
    fn an_unknown_user_costs_as_much_as_a_wrong_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        // `openssl passwd -6 -salt abcdefgh secret`
        std::fs::write(
            &path,
            "alice:$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.\n",
        )
        .expect("write");
        let users = Users::load(&path).expect("load");
        // Interleaved and compared by their fastest run, so a busy machine's noise (other
        // builds on the same cores) cannot decide; without the decoy an unknown user costs
        // microseconds against the hash's milliseconds.
        let once = |user: &str| {
            let start = std::time::Instant::now();
            assert!(!users.verify(user, "wrong"));
            start.elapsed()
        };
        let (mut wrong_password, mut unknown_user) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            wrong_password.push(once("alice"));
            unknown_user.push(once("nobody"));
        }
        let (wrong, unknown) = (
            wrong_password.into_iter().min().expect("runs"),
            unknown_user.into_iter().min().expect("runs"),
        );
        assert!(
            unknown * 4 >= wrong,
            "unknown user {unknown:?} vs wrong password {wrong:?}"
        );
    }

    #[test]
    fn plain_response() {
        assert_eq!(
            parse_plain("\0alice\0pw"),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(parse_plain("alice"), None);
    }
}
