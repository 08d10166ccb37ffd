//! `config-get`, `config-validate`, `config-put`, `config-history`, `config-version`: the
//! configuration file edited remotely, and the versions applied that way.
//!
//! Invariant: a text is written only when it validates exactly as `bulwarkd --check-config`
//! would (same loader, same base directory for relative paths); the previous file is kept as
//! `FILE.previous` and the new one replaces it atomically (write to a temporary, rename), then
//! the daemon reloads. A reload that still fails (e.g. a certificate unreadable at that moment)
//! restores the previous file, so the file on disk is always the one in force. Each text that
//! is in force after a `config-put` is recorded in `config_history` with who applied it.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::config_history;
use super::protocol::Response;
use super::server::ReloadFn;
use crate::config::{self, ConfigError};

fn no_file() -> Response {
    Response::error("bulwarkd runs on the built-in default: there is no configuration file to edit")
}

pub fn get(file: Option<&Path>) -> Response {
    let Some(file) = file else { return no_file() };
    match std::fs::read_to_string(file) {
        Ok(text) => Response::ok(json!({ "path": file.display().to_string(), "text": text })),
        Err(e) => Response::error(format!("cannot read {}: {e}", file.display())),
    }
}

/// The problems `text` has as this node's configuration file (empty: valid).
fn problems(file: &Path, text: &str) -> Result<Vec<config::Problem>, String> {
    let base = file.parent().unwrap_or(Path::new("."));
    match config::load_str(text, &file.display().to_string(), base) {
        Ok(_) => Ok(Vec::new()),
        Err(ConfigError::Invalid { problems, .. }) => Ok(problems),
        Err(e) => Err(e.to_string()),
    }
}

fn problems_json(problems: &[config::Problem]) -> serde_json::Value {
    json!(problems
        .iter()
        .map(|p| json!({ "line": p.line, "column": p.column, "key": p.key_path, "message": p.message }))
        .collect::<Vec<_>>())
}

pub fn validate(file: Option<&Path>, text: &str) -> Response {
    let Some(file) = file else { return no_file() };
    match problems(file, text) {
        Ok(found) => {
            Response::ok(json!({ "valid": found.is_empty(), "problems": problems_json(&found) }))
        }
        Err(e) => Response::error(e),
    }
}

/// Who applies a text and why, as the history records it.
pub struct Author<'a> {
    pub by: &'a str,
    pub note: &'a str,
}

pub fn put(file: Option<&Path>, text: &str, author: &Author, reload: &ReloadFn) -> Response {
    let Some(file) = file else { return no_file() };
    match problems(file, text) {
        Ok(found) if found.is_empty() => {}
        Ok(found) => {
            return Response {
                ok: false,
                error: Some(format!("the configuration has {} problem(s)", found.len())),
                result: json!({ "valid": false, "problems": problems_json(&found) }),
            }
        }
        Err(e) => return Response::error(e),
    }
    if let Err(e) = config_history::record_original(file) {
        return Response::error(format!("history: {e}"));
    }
    let previous = sibling(file, "previous");
    if let Err(e) = replace(file, &previous, text) {
        return Response::error(e);
    }
    match reload() {
        Ok(_) => {
            let version = config_history::record(file, text, author.by, author.note);
            log::info!(path:% = file.display(), by = author.by, version:? = version.as_ref().ok();
                "configuration replaced over the control protocol and reloaded");
            match version {
                Ok(version) => {
                    Response::ok(json!({ "valid": true, "reloaded": true, "version": version }))
                }
                // In force but not recorded: say so rather than pretend it is in the history.
                Err(e) => Response::ok(
                    json!({ "valid": true, "reloaded": true, "history_error": e.to_string() }),
                ),
            }
        }
        Err(e) => {
            let restored = std::fs::rename(&previous, file).is_ok();
            log::error!(path:% = file.display(), restored = restored; "new configuration did not reload: {e}");
            Response::error(format!("reload failed, previous file restored: {e}"))
        }
    }
}

pub fn history(file: Option<&Path>) -> Response {
    let Some(file) = file else { return no_file() };
    match config_history::list(file) {
        Ok(versions) => Response::ok(json!(versions)),
        Err(e) => Response::error(e.to_string()),
    }
}

pub fn version(file: Option<&Path>, version: u64) -> Response {
    let Some(file) = file else { return no_file() };
    let versions = match config_history::list(file) {
        Ok(versions) => versions,
        Err(e) => return Response::error(e.to_string()),
    };
    let Some(entry) = versions.into_iter().find(|v| v.version == version) else {
        return Response::error(config_history::HistoryError::NoVersion(version).to_string());
    };
    match config_history::text(file, version) {
        Ok(text) => Response::ok(json!({ "version": entry, "text": text })),
        Err(e) => Response::error(e.to_string()),
    }
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn replace(file: &Path, previous: &Path, text: &str) -> Result<(), String> {
    let staged = sibling(file, "new");
    let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::write(&staged, text).map_err(|e| fail(&staged.display().to_string(), e))?;
    std::fs::copy(file, previous).map_err(|e| fail(&previous.display().to_string(), e))?;
    std::fs::rename(&staged, file).map_err(|e| fail(&file.display().to_string(), e))
}
