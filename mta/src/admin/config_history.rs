//! The history of a node's configuration file: every version applied over the control
//! protocol (`config-put`), with who applied it, when and why, so that a console can show a
//! diff against any of them and roll back (= `config-put` of an old text, validated and
//! reloaded like any edit).
//!
//! Layout: `FILE.history/` beside the file; `versions.jsonl` holds one line per version
//! (`{"version","at","by","note","bytes"}`, oldest first), `N.toml` the text of version N.
//! Invariants: a version is recorded only after its text was validated, written and reloaded;
//! the file as it was before the first remote edit is recorded first (so the original can be
//! rolled back to); at most `MAX_VERSIONS` are kept, the oldest removed first; version numbers
//! only grow.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Versions kept per node; older ones are removed (their numbers are not reused).
pub const MAX_VERSIONS: usize = 100;

const INDEX: &str = "versions.jsonl";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    /// Unix seconds.
    pub at: u64,
    /// Who applied it (the console's user), or `file` for the text found on disk.
    pub by: String,
    #[serde(default)]
    pub note: String,
    pub bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no version {0} in the history")]
    NoVersion(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn directory(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".history");
    PathBuf::from(name)
}

/// Every kept version, oldest first (none: nothing was applied remotely yet).
pub fn list(file: &Path) -> Result<Vec<Version>, HistoryError> {
    let index = directory(file).join(INDEX);
    let text = match std::fs::read_to_string(&index) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&index)(e)),
    };
    // A line cut short by a crash mid-append is skipped, the others stay usable.
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// The text of `version`.
pub fn text(file: &Path, version: u64) -> Result<String, HistoryError> {
    if !list(file)?.iter().any(|v| v.version == version) {
        return Err(HistoryError::NoVersion(version));
    }
    let path = directory(file).join(format!("{version}.toml"));
    std::fs::read_to_string(&path).map_err(io(&path))
}

/// Records the file's current text as the first version when the history is empty.
pub fn record_original(file: &Path) -> Result<(), HistoryError> {
    if !list(file)?.is_empty() {
        return Ok(());
    }
    let original = std::fs::read_to_string(file).map_err(io(file))?;
    record(
        file,
        &original,
        "file",
        "as found on disk before the first remote edit",
    )
    .map(|_| ())
}

/// Appends `text` as the next version; answers its number.
pub fn record(file: &Path, text: &str, by: &str, note: &str) -> Result<u64, HistoryError> {
    let dir = directory(file);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut versions = list(file)?;
    let version = versions.last().map_or(1, |v| v.version + 1);
    let body = dir.join(format!("{version}.toml"));
    std::fs::write(&body, text).map_err(io(&body))?;
    let entry = Version {
        version,
        at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        by: by.to_string(),
        note: note.to_string(),
        bytes: text.len(),
    };
    versions.push(entry);
    if versions.len() > MAX_VERSIONS {
        let dropped: Vec<_> = versions.drain(..versions.len() - MAX_VERSIONS).collect();
        for old in dropped {
            let _ = std::fs::remove_file(dir.join(format!("{}.toml", old.version)));
        }
        rewrite_index(&dir, &versions)?;
    } else {
        append_index(&dir, versions.last())?;
    }
    Ok(version)
}

fn append_index(dir: &Path, entry: Option<&Version>) -> Result<(), HistoryError> {
    let Some(entry) = entry else { return Ok(()) };
    let index = dir.join(INDEX);
    let line = serde_json::to_string(entry).unwrap_or_default();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&index)
        .and_then(|mut f| writeln!(f, "{line}"))
        .map_err(io(&index))
}

fn rewrite_index(dir: &Path, versions: &[Version]) -> Result<(), HistoryError> {
    let staged = dir.join(format!("{INDEX}.new"));
    let lines: String = versions
        .iter()
        .map(|v| serde_json::to_string(v).unwrap_or_default() + "\n")
        .collect();
    std::fs::write(&staged, lines).map_err(io(&staged))?;
    let index = dir.join(INDEX);
    std::fs::rename(&staged, &index).map_err(io(&index))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn records_the_original_then_each_version_and_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("bulwark-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bulwark.toml");
        std::fs::write(&file, "# original\n").unwrap();
        record_original(&file).unwrap();
        record_original(&file).unwrap();
        assert_eq!(record(&file, "# second\n", "admin", "edit").unwrap(), 2);
        let versions = list(&file).unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].by, "file");
        assert_eq!(text(&file, 1).unwrap(), "# original\n");
        assert_eq!(text(&file, 2).unwrap(), "# second\n");
        for n in 0..MAX_VERSIONS {
            record(&file, &format!("# {n}\n"), "admin", "").unwrap();
        }
        let versions = list(&file).unwrap();
        assert_eq!(versions.len(), MAX_VERSIONS);
        assert_eq!(versions[0].version, 3);
        assert!(matches!(text(&file, 1), Err(HistoryError::NoVersion(1))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
