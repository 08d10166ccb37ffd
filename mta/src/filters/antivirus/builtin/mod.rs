//! The built-in engine: decodes the message's MIME tree and the archives in it, and checks
//! every decoded object against EICAR, the hash lists, the YARA rules and the
//! disguised-executable rule.
//!
//! # Contract
//! - Objects are the leaf parts of the MIME tree after transfer decoding (base64,
//!   quoted-printable by mail-parser; uuencoded blocks here), attached messages (recursively)
//!   and zip members (recursively). Attachment names come from mail-parser, RFC 2231 included.
//! - Limits bound the work on hostile input, and exceeding one is a verdict, not a silent
//!   skip: nesting deeper than [`MAX_DEPTH`] → `Bulwark.Archive.NestingLimit`; a zip member
//!   expanding more than [`MAX_RATIO`]× its compressed size (above [`RATIO_FLOOR`]) or all
//!   members together more than the unpack budget → `Bulwark.ZipBomb.*`. Nothing expands
//!   beyond the budget in memory: members are read through a bounded reader.
//! - A YARA rule that cannot finish on an object makes the scan an error (unless another
//!   object is a detection): a message is never called clean on a half-evaluated rule set.
//! - Encrypted or unreadable archive members cannot be looked into and are passed over (clamd,
//!   when configured, applies its own policy to them).
//! - The signature set is an `Arc` swapped whole under a lock held only for the swap: a scan
//!   uses the set it started with, a reload never drops or half-scans a message.

mod archive;
mod magic;
pub mod signatures;
mod uuencode;
pub mod yara;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mail_parser::{MessageParser, MimeHeaders, PartType};

pub use signatures::{SignatureError, Signatures};
pub use yara::YaraScanError;

/// Attached messages and archives inside each other, at most this deep.
pub const MAX_DEPTH: usize = 6;
/// A zip member may expand at most this many times its compressed size...
pub const MAX_RATIO: u64 = 100;
/// ...once it is larger than this (small, very compressible files are normal).
pub const RATIO_FLOOR: u64 = 1 << 20;
/// Members of one archive, at most.
pub const MAX_ENTRIES: usize = 10_000;

/// The EICAR anti-virus test file (every engine must detect it).
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Why the built-in engine calls an object bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    Eicar,
    /// A hash list entry, by its name.
    Hash(String),
    /// A YARA rule, by its virus name (`YARA.<rule>`).
    Yara(String),
    DisguisedExecutable {
        format: &'static str,
        claim: String,
    },
    ZipBomb(BombLimit),
    NestingLimit,
}

/// Which zip-bomb limit an archive broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BombLimit {
    Ratio,
    Size,
    Entries,
}

impl Detection {
    /// The name reported in the reply, the log and the findings.
    pub fn name(&self) -> String {
        match self {
            Detection::Eicar => "Eicar-Test-Signature".into(),
            Detection::Hash(name) | Detection::Yara(name) => name.clone(),
            Detection::DisguisedExecutable { format, .. } => {
                format!("Bulwark.Disguised.{format}")
            }
            Detection::ZipBomb(BombLimit::Ratio) => "Bulwark.ZipBomb.Ratio".into(),
            Detection::ZipBomb(BombLimit::Size) => "Bulwark.ZipBomb.Size".into(),
            Detection::ZipBomb(BombLimit::Entries) => "Bulwark.ZipBomb.Entries".into(),
            Detection::NestingLimit => "Bulwark.Archive.NestingLimit".into(),
        }
    }
}

/// One decoded thing to check.
struct Object<'a> {
    name: Option<&'a str>,
    content_type: Option<String>,
    bytes: &'a [u8],
}

/// One scan's state: the set it uses, the unpack budget left, the YARA scanner (made on the
/// first object) and the first YARA failure.
struct Walk<'s> {
    signatures: &'s Signatures,
    budget: u64,
    yara: Option<yara::YaraScanner<'s>>,
    yara_failure: Option<YaraScanError>,
}

impl<'s> Walk<'s> {
    fn new(signatures: &'s Signatures, budget: u64) -> Self {
        Self {
            signatures,
            budget,
            yara: None,
            yara_failure: None,
        }
    }

    /// The first YARA rule `bytes` matches; a failure is kept for the end of the scan.
    fn yara_match(&mut self, bytes: &[u8]) -> Option<Detection> {
        if self.yara.is_none() {
            self.yara = self.signatures.yara.scanner();
        }
        match self.yara.as_mut()?.first_match(bytes) {
            Ok(found) => found.map(Detection::Yara),
            Err(error) => {
                self.yara_failure.get_or_insert(error);
                None
            }
        }
    }

    fn message(&mut self, raw: &[u8], depth: usize) -> Option<Detection> {
        if depth > MAX_DEPTH {
            return Some(Detection::NestingLimit);
        }
        // Also outside any part the parser recognises (a bare file, a broken header).
        if memchr::memmem::find(raw, EICAR).is_some() {
            return Some(Detection::Eicar);
        }
        let Some(message) = MessageParser::default().parse(raw) else {
            return self.object(
                &Object {
                    name: None,
                    content_type: None,
                    bytes: raw,
                },
                depth,
            );
        };
        for part in &message.parts {
            let content_type = part
                .content_type()
                .map(|t| format!("{}/{}", t.ctype(), t.subtype().unwrap_or("")));
            let bytes = match &part.body {
                PartType::Multipart(_) => continue,
                PartType::Message(inner) => {
                    if let Some(found) = self.message(inner.raw_message(), depth + 1) {
                        return Some(found);
                    }
                    continue;
                }
                _ => part.contents(),
            };
            let object = Object {
                name: part.attachment_name(),
                content_type,
                bytes,
            };
            if let Some(found) = self.object(&object, depth) {
                return Some(found);
            }
        }
        None
    }

    fn object(&mut self, object: &Object<'_>, depth: usize) -> Option<Detection> {
        let bytes = object.bytes;
        if memchr::memmem::find(bytes, EICAR).is_some() {
            return Some(Detection::Eicar);
        }
        if let Some(name) = self.signatures.match_hashes(bytes) {
            return Some(Detection::Hash(name.to_string()));
        }
        if let Some(found) = self.yara_match(bytes) {
            return Some(found);
        }
        if let Some(format) = magic::executable_format(bytes) {
            if let Some(claim) = magic::document_claim(object.name, object.content_type.as_deref())
            {
                return Some(Detection::DisguisedExecutable { format, claim });
            }
        }
        if archive::is_zip(bytes) {
            return self.zip(bytes, depth + 1);
        }
        if bytes.starts_with(b"begin ") || memchr::memmem::find(bytes, b"\nbegin ").is_some() {
            return self.uuencoded(bytes, depth);
        }
        None
    }

    fn uuencoded(&mut self, text: &[u8], depth: usize) -> Option<Detection> {
        let budget = usize::try_from(self.budget).unwrap_or(usize::MAX);
        for (name, bytes) in uuencode::files(text, budget) {
            self.budget = self.budget.saturating_sub(bytes.len() as u64);
            let object = Object {
                name: Some(&name),
                content_type: None,
                bytes: &bytes,
            };
            if let Some(found) = self.object(&object, depth + 1) {
                return Some(found);
            }
        }
        None
    }
}

/// The engine: the current signature set and where it is loaded from.
pub struct BuiltinEngine {
    dir: PathBuf,
    current: RwLock<Arc<Signatures>>,
    /// Bytes all archive members of one message may expand to.
    unpack_budget: u64,
}

impl BuiltinEngine {
    /// Loads `dir` (a missing directory is an empty set).
    pub fn load(dir: &Path, unpack_budget: u64) -> Result<Self, SignatureError> {
        let signatures = Signatures::load(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(signatures)),
            unpack_budget,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn signatures(&self) -> Arc<Signatures> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in `signatures`; scans in progress finish with the set they started with.
    pub fn install(&self, signatures: Signatures) -> Arc<Signatures> {
        let signatures = Arc::new(signatures);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = signatures.clone();
        signatures
    }

    /// Reloads the directory; on error the current set stays.
    pub fn reload(&self) -> Result<Arc<Signatures>, SignatureError> {
        Ok(self.install(Signatures::load(&self.dir)?))
    }

    /// Checks a whole raw message (header and body). Clean is `Ok(None)`; a YARA rule that
    /// could not finish and no detection elsewhere is an error.
    pub fn scan(&self, message: &[u8]) -> Result<Option<Detection>, YaraScanError> {
        let signatures = self.signatures();
        let mut walk = Walk::new(&signatures, self.unpack_budget);
        let found = walk.message(message, 0);
        match (found, walk.yara_failure) {
            (Some(detection), _) => Ok(Some(detection)),
            (None, Some(failure)) => Err(failure),
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
