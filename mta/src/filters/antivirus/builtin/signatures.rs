//! The built-in engine's signature set, loaded from `signatures_dir`.
//!
//! # Format (ClamAV's hash formats, so one directory can serve clamd and Bulwark)
//! - `*.hdb` and `*.hsb`: lines `HASH:SIZE:Name`, HASH hex MD5 (32 digits) or SHA-256 (64), SIZE
//!   the file size in bytes or `*` (any size). `#` starts a comment line.
//! - `*.yar` / `*.yara`: YARA rules, compiled with the set (see [`super::yara`]; without the
//!   cargo feature `yara` they are counted and reported as ignored, never silently treated as
//!   matching nothing).
//! - `VERSION`: one line naming the set (e.g. `2026-12-02.1`); absent: `local`.
//! - Other files are ignored (clamd's `.ndb`, `.ldb`, ... belong to clamd).
//!
//! # Invariants
//! A set is loaded completely or not at all: one bad hash line (file and line) or one rule file
//! that does not compile (file, line and column) makes [`Signatures::load`] fail, and the caller
//! keeps its old set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::yara::{RuleError, YaraRules};

/// Size constraint of a hash signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizeRule {
    Exactly(u64),
    Any,
}

#[derive(Debug, Clone)]
struct HashSignature {
    size: SizeRule,
    name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signatures {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("YARA rules {0}")]
    Yara(#[from] RuleError),
}

/// One loaded, immutable signature set.
#[derive(Debug)]
pub struct Signatures {
    pub version: String,
    pub loaded_at: SystemTime,
    /// The newest modification time of the files in the set (its age for the stale alert).
    pub newest_file: Option<SystemTime>,
    md5: HashMap<[u8; 16], Vec<HashSignature>>,
    sha256: HashMap<[u8; 32], Vec<HashSignature>>,
    pub yara: YaraRules,
}

impl Signatures {
    /// An empty set (EICAR and the structural checks still apply).
    pub fn empty() -> Self {
        Self {
            version: "none".into(),
            loaded_at: SystemTime::now(),
            newest_file: None,
            md5: HashMap::new(),
            sha256: HashMap::new(),
            yara: YaraRules::default(),
        }
    }

    /// Loads every signature file in `dir`; a missing directory is an empty set.
    pub fn load(dir: &Path) -> Result<Self, SignatureError> {
        let read_error = |source| SignatureError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut set = Self::empty();
        set.version = "local".into();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
            Err(e) => return Err(read_error(e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        let mut yara_sources = Vec::new();
        for path in paths {
            if let Some(source) = set.load_file(&path)? {
                yara_sources.push((path, source));
            }
        }
        set.yara = YaraRules::compile(&yara_sources)?;
        Ok(set)
    }

    /// Loads one file; a YARA rule file is returned (path, text) to be compiled with the rest.
    fn load_file(&mut self, path: &Path) -> Result<Option<String>, SignatureError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let relevant = matches!(extension, "hdb" | "hsb" | "yar" | "yara") || name == "VERSION";
        if !relevant || name.starts_with('.') {
            return Ok(None);
        }
        let read_error = |source| SignatureError::Read {
            path: path.to_path_buf(),
            source,
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        self.newest_file = self.newest_file.max(modified);
        match extension {
            "yar" | "yara" => return Ok(Some(std::fs::read_to_string(path).map_err(read_error)?)),
            _ if name == "VERSION" => {
                let text = std::fs::read_to_string(path).map_err(read_error)?;
                let line = text.lines().next().unwrap_or("").trim();
                if !line.is_empty() {
                    self.version = line.to_string();
                }
            }
            _ => {
                let text = std::fs::read_to_string(path).map_err(read_error)?;
                self.add_hash_lines(path, &text)?;
            }
        }
        Ok(None)
    }

    fn add_hash_lines(&mut self, path: &Path, text: &str) -> Result<(), SignatureError> {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_hash_line(line)
                .map_err(|message| SignatureError::Syntax {
                    path: path.to_path_buf(),
                    line: index + 1,
                    message,
                })?;
        }
        Ok(())
    }

    fn add_hash_line(&mut self, line: &str) -> Result<(), String> {
        let mut fields = line.splitn(3, ':');
        let (Some(hash), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err("expected HASH:SIZE:Name".into());
        };
        let size = match size {
            "*" => SizeRule::Any,
            digits => SizeRule::Exactly(
                digits
                    .parse()
                    .map_err(|_| format!("size {digits:?} is not a number or *"))?,
            ),
        };
        let name = name.split(':').next().unwrap_or(name).trim();
        if name.is_empty() {
            return Err("empty signature name".into());
        }
        let signature = HashSignature {
            size,
            name: name.to_string(),
        };
        let bytes = decode_hex(hash).ok_or_else(|| format!("{hash:?} is not hex"))?;
        if let Ok(md5) = <[u8; 16]>::try_from(bytes.as_slice()) {
            self.md5.entry(md5).or_default().push(signature);
        } else if let Ok(sha256) = <[u8; 32]>::try_from(bytes.as_slice()) {
            self.sha256.entry(sha256).or_default().push(signature);
        } else {
            return Err("hash must be MD5 (32 hex digits) or SHA-256 (64)".into());
        }
        Ok(())
    }

    pub fn md5_count(&self) -> usize {
        self.md5.values().map(Vec::len).sum()
    }

    pub fn sha256_count(&self) -> usize {
        self.sha256.values().map(Vec::len).sum()
    }

    /// The name of the first hash signature `object` matches.
    pub fn match_hashes(&self, object: &[u8]) -> Option<&str> {
        use md5::Digest as _;
        let size = object.len() as u64;
        let fits = |list: &'_ [HashSignature]| -> Option<usize> {
            list.iter().position(|s| match s.size {
                SizeRule::Any => true,
                SizeRule::Exactly(n) => n == size,
            })
        };
        if !self.sha256.is_empty() {
            let digest: [u8; 32] = sha2::Sha256::digest(object).into();
            if let Some(list) = self.sha256.get(&digest) {
                if let Some(i) = fits(list) {
                    return Some(&list[i].name);
                }
            }
        }
        if !self.md5.is_empty() {
            let digest: [u8; 16] = md5::Md5::digest(object).into();
            if let Some(list) = self.md5.get(&digest) {
                if let Some(i) = fits(list) {
                    return Some(&list[i].name);
                }
            }
        }
        None
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_md5_and_sha256_and_version() {
        let dir = tempfile::tempdir().expect("test step");
        let sample = b"not really malware";
        use md5::Digest as _;
        let md5 = hex(&md5::Md5::digest(sample));
        let sha = hex(&sha2::Sha256::digest(sample));
        std::fs::write(
            dir.path().join("local.hdb"),
            format!("# test\n{md5}:{}:Test.Md5\n", sample.len()),
        )
        .expect("test step");
        std::fs::write(dir.path().join("local.hsb"), format!("{sha}:*:Test.Sha\n"))
            .expect("test step");
        std::fs::write(dir.path().join("VERSION"), "2026-12-02.1\n").expect("test step");
        std::fs::write(
            dir.path().join("rules.yar"),
            "rule x { strings: $a = \"x\" condition: $a }",
        )
        .expect("test step");
        std::fs::write(dir.path().join("clamd.ndb"), "garbage for clamd only").expect("test step");
        let set = Signatures::load(dir.path()).expect("test step");
        assert_eq!(set.version, "2026-12-02.1");
        assert_eq!((set.md5_count(), set.sha256_count()), (1, 1));
        let yara = &set.yara;
        let expected = if super::super::yara::COMPILED_IN {
            (1, 0, 1)
        } else {
            (0, 1, 0)
        };
        assert_eq!(
            (
                yara.files_compiled(),
                yara.files_ignored(),
                yara.rule_count()
            ),
            expected
        );
        assert_eq!(set.match_hashes(sample), Some("Test.Sha"));
        assert_eq!(set.match_hashes(b"clean"), None);
    }

    #[test]
    fn size_must_match() {
        let dir = tempfile::tempdir().expect("test step");
        use md5::Digest as _;
        let md5 = hex(&md5::Md5::digest(b"abc"));
        std::fs::write(dir.path().join("a.hdb"), format!("{md5}:4:Wrong.Size\n"))
            .expect("test step");
        let set = Signatures::load(dir.path()).expect("test step");
        assert_eq!(set.match_hashes(b"abc"), None);
    }

    #[test]
    fn a_bad_line_refuses_the_whole_set() {
        let dir = tempfile::tempdir().expect("test step");
        std::fs::write(dir.path().join("a.hdb"), "# ok\nnothex:3:X\n").expect("test step");
        match Signatures::load(dir.path()) {
            Err(SignatureError::Syntax { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn missing_directory_is_empty() {
        let set = Signatures::load(Path::new("/nonexistent/bulwark/sigs")).expect("test step");
        assert_eq!(set.md5_count() + set.sha256_count(), 0);
    }

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
