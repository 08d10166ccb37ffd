//! Online learning: `bulwarkctl spam learn --spam|--ham FILE`, `bulwarkctl quarantine release
//! --not-spam` and `bulwarkctl quarantine delete --spam` move the model file towards the
//! administrator's verdict on one message.
//!
//! # Safeguards against poisoning
//! The daemon never learns from mail on its own: a sender cannot teach the model by sending,
//! however much or however well-authenticated. Only an administrator's act does (this verb,
//! or a quarantine release marked "not spam", or a quarantined message deleted as "spam",
//! which call [`learn_bytes`]).
//! Each act moves the model by at most 200 bounded gradient steps on that one message, just
//! far enough to put it 4 log-odds on the right side, so a single mistake is cheap to undo
//! with the opposite verdict. The file is replaced atomically; the daemon reads it at start
//! and on reload.

use std::path::Path;
use std::sync::Mutex;

use super::model::{Model, ModelError};
use super::train::features_of;

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a parsable message")]
    Unparsable(String),
}

/// What one learning act did.
#[derive(Debug, Clone, Copy)]
pub struct Learned {
    pub before: f64,
    pub after: f64,
    pub steps: usize,
}

/// One learning act at a time per process: each reads, updates and replaces the file, and
/// two at once would lose one of them.
static LEARNING: Mutex<()> = Mutex::new(());

/// Learns the message in file `message` as spam or ham into `model` (created from the
/// built-in model if the file does not exist yet), and writes it back.
pub fn learn_message(model_path: &Path, message: &Path, spam: bool) -> Result<Learned, LearnError> {
    let raw = std::fs::read(message).map_err(|source| LearnError::Read {
        path: message.display().to_string(),
        source,
    })?;
    learn_bytes(model_path, &raw, spam).map_err(|e| match e {
        LearnError::Unparsable(_) => LearnError::Unparsable(message.display().to_string()),
        other => other,
    })
}

/// Learns a raw message (as stored; mbox `From ` line allowed) into the model file.
pub fn learn_bytes(model_path: &Path, raw: &[u8], spam: bool) -> Result<Learned, LearnError> {
    let features = features_of(raw).ok_or_else(|| LearnError::Unparsable("message".into()))?;
    let _one_at_a_time = LEARNING.lock().unwrap_or_else(|p| p.into_inner());
    let mut model = if model_path.exists() {
        Model::load(model_path)?
    } else {
        Model::builtin()?
    };
    let example = model.example(&features, spam);
    let before = model.logit(&example);
    let steps = model.learn(&example);
    let after = model.logit(&example);
    model.save(model_path)?;
    Ok(Learned {
        before,
        after,
        steps,
    })
}
