//! Anti-virus scanning: clamd and a built-in engine behind one [`Antivirus::scan`], signature
//! updates that verify themselves, and the status `bulwarkctl av status` shows.
//!
//! # Contract
//! - Engines run in the configured order; the first detection decides and later engines are
//!   not asked. An engine that cannot answer (clamd down, slow, refusing) makes the whole scan
//!   an error, so the caller applies `on_error`: a message is never called clean because a
//!   scanner was missing.
//! - A message larger than `max_scan_size` is not scanned ([`Outcome::TooLarge`]); below it,
//!   clamd gets the raw message streamed in chunks and the built-in engine gets it whole (at
//!   most `max_scan_size` bytes in memory), decoded on a blocking thread when large.
//! - Signature sets change only through [`Antivirus::install_bundle`] (manual or automatic
//!   update: verified against `update_public_key` first) or [`Antivirus::reload_signatures`];
//!   either swaps the whole set or leaves the old one.
//! - Counters count since this instance was built (daemon start or configuration reload).

pub mod builtin;
pub mod bundle;
pub mod clamd;
mod health;
mod http;
pub mod stage;
pub mod update;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::config::{AntivirusConfig, AvEngine};
pub use builtin::{BuiltinEngine, Detection, SignatureError};
pub use bundle::{BundleError, UpdateKey};
pub use clamd::{ChunkSource, Clamd, ClamdAddress, ClamdError, ConnectionMode, ScanReply};
pub use health::{spawn_monitor, ClamdHealth};

/// The message a scan reads.
#[async_trait]
pub trait ScanInput: Sync {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Streams the whole raw message.
    fn reader(&self) -> Box<dyn ChunkSource + '_>;
    /// The whole raw message in memory (asked only when `len()` <= max_scan_size).
    async fn bytes(&self) -> Result<Arc<[u8]>, String>;
}

/// A message held in memory (small messages, tests).
pub struct InMemory(pub Arc<[u8]>);

#[async_trait]
impl ScanInput for InMemory {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn reader(&self) -> Box<dyn ChunkSource + '_> {
        Box::new(clamd::SliceSource(&self.0))
    }
    async fn bytes(&self) -> Result<Arc<[u8]>, String> {
        Ok(self.0.clone())
    }
}

/// What a scan concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Infected {
        engine: AvEngine,
        name: String,
    },
    /// Over `max_scan_size`: not looked at.
    TooLarge,
}

/// Why a scan gave no outcome.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Clamd(#[from] ClamdError),
    #[error("reading the message: {0}")]
    Content(String),
    #[error("built-in engine: {0}")]
    Builtin(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AntivirusError {
    #[error(transparent)]
    Address(#[from] clamd::AddressError),
    #[error(transparent)]
    Signatures(#[from] SignatureError),
    #[error(transparent)]
    Key(#[from] bundle::KeyError),
}

/// Per-engine counters.
#[derive(Default)]
struct EngineCounters {
    scans: AtomicU64,
    detections: AtomicU64,
    errors: AtomicU64,
}

impl EngineCounters {
    fn json(&self) -> Value {
        json!({
            "scans": self.scans.load(Ordering::Relaxed),
            "detections": self.detections.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
        })
    }
}

/// The last update attempt, for `av status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpdateRecord {
    pub at: u64,
    pub source: String,
    pub result: String,
    pub installed: bool,
}

pub struct Antivirus {
    pub config: AntivirusConfig,
    clamd: Option<Clamd>,
    builtin: Option<Arc<BuiltinEngine>>,
    update_key: Option<UpdateKey>,
    clamd_counters: EngineCounters,
    builtin_counters: EngineCounters,
    too_large: AtomicU64,
    pub health: ClamdHealth,
    /// The built-in set was stale at the last check (so the alert is logged once).
    builtin_stale: std::sync::atomic::AtomicBool,
    last_update: Mutex<Option<UpdateRecord>>,
}

/// Builtin scans of messages larger than this run on a blocking thread.
const INLINE_SCAN_LIMIT: usize = 256 * 1024;

impl Antivirus {
    pub fn from_config(config: &AntivirusConfig) -> Result<Self, AntivirusError> {
        let clamd = if config.engines.contains(&AvEngine::Clamd) {
            let address = ClamdAddress::parse(&config.clamd)?;
            Some(Clamd::new(address, config.timeout, ConnectionMode::Pooled))
        } else {
            None
        };
        let builtin = if config.engines.contains(&AvEngine::Builtin) {
            let engine = BuiltinEngine::load(&config.signatures_dir, config.max_scan_size)?;
            Some(Arc::new(engine))
        } else {
            None
        };
        let update_key = match config.update_public_key.as_str() {
            "" => None,
            key => Some(UpdateKey::parse(key)?),
        };
        Ok(Self {
            config: config.clone(),
            clamd,
            builtin,
            update_key,
            clamd_counters: EngineCounters::default(),
            builtin_counters: EngineCounters::default(),
            too_large: AtomicU64::new(0),
            health: ClamdHealth::default(),
            builtin_stale: std::sync::atomic::AtomicBool::new(false),
            last_update: Mutex::new(None),
        })
    }

    /// Runs the engines in order on `input`.
    pub async fn scan(&self, input: &dyn ScanInput) -> Result<Outcome, ScanError> {
        if input.len() > self.config.max_scan_size {
            self.too_large.fetch_add(1, Ordering::Relaxed);
            return Ok(Outcome::TooLarge);
        }
        for engine in &self.config.engines {
            let found = match engine {
                AvEngine::Clamd => self.scan_clamd(input).await?,
                AvEngine::Builtin => self.scan_builtin(input).await?,
            };
            if let Some(name) = found {
                return Ok(Outcome::Infected {
                    engine: *engine,
                    name,
                });
            }
        }
        Ok(Outcome::Clean)
    }

    async fn scan_clamd(&self, input: &dyn ScanInput) -> Result<Option<String>, ScanError> {
        let Some(clamd) = &self.clamd else {
            return Ok(None);
        };
        let counters = &self.clamd_counters;
        counters.scans.fetch_add(1, Ordering::Relaxed);
        let mut result = clamd.scan(input.reader().as_mut()).await;
        if let Err(ClamdError::StaleSession(error)) = &result {
            log::debug!(error:% = error; "antivirus: clamd closed a pooled session, scanning again");
            result = clamd.scan(input.reader().as_mut()).await;
        }
        match result {
            Ok(ScanReply::Clean) => Ok(None),
            Ok(ScanReply::Infected(name)) => {
                counters.detections.fetch_add(1, Ordering::Relaxed);
                Ok(Some(name))
            }
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                clamd.drop_idle();
                Err(ScanError::Clamd(error))
            }
        }
    }

    async fn scan_builtin(&self, input: &dyn ScanInput) -> Result<Option<String>, ScanError> {
        let Some(engine) = &self.builtin else {
            return Ok(None);
        };
        let counters = &self.builtin_counters;
        counters.scans.fetch_add(1, Ordering::Relaxed);
        let result = self.run_builtin(engine, input).await;
        match &result {
            Ok(Some(_)) => counters.detections.fetch_add(1, Ordering::Relaxed),
            Ok(None) => 0,
            Err(_) => counters.errors.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn run_builtin(
        &self,
        engine: &Arc<BuiltinEngine>,
        input: &dyn ScanInput,
    ) -> Result<Option<String>, ScanError> {
        let bytes = input.bytes().await.map_err(ScanError::Content)?;
        let detection = if bytes.len() <= INLINE_SCAN_LIMIT {
            engine.scan(&bytes)
        } else {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || engine.scan(&bytes))
                .await
                .map_err(|e| ScanError::Builtin(e.to_string()))?
        };
        let detection = detection.map_err(|e| ScanError::Builtin(e.to_string()))?;
        Ok(detection.map(|d| d.name()))
    }

    /// Verifies `bundle` against `signature` and the configured key, installs it into
    /// `signatures_dir` and swaps it in; on any error the old set stays.
    pub fn install_bundle(
        &self,
        bundle: &[u8],
        signature: Option<&[u8]>,
        source: &str,
    ) -> Result<String, BundleError> {
        let result = self.try_install(bundle, signature);
        let record = UpdateRecord {
            at: unix_now(),
            source: source.to_string(),
            result: match &result {
                Ok(version) => format!("installed {version}"),
                Err(e) => e.to_string(),
            },
            installed: result.is_ok(),
        };
        *self.last_update.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
        result
    }

    fn try_install(&self, bundle: &[u8], signature: Option<&[u8]>) -> Result<String, BundleError> {
        let key = self.update_key.as_ref().ok_or(BundleError::NoKey)?;
        let signature = signature.ok_or(BundleError::Unsigned)?;
        key.verify(bundle, signature)?;
        let files = bundle::unpack(bundle)?;
        let set = bundle::install(&self.config.signatures_dir, &files)?;
        let version = set.version.clone();
        if let Some(engine) = &self.builtin {
            engine.install(set);
        }
        Ok(version)
    }

    /// Reloads `signatures_dir` (after an out-of-band change); the old set stays on error.
    pub fn reload_signatures(&self) -> Result<Option<String>, SignatureError> {
        match &self.builtin {
            Some(engine) => Ok(Some(engine.reload()?.version.clone())),
            None => Ok(None),
        }
    }

    /// Logs one warning when the built-in set becomes older than `max_signature_age`.
    pub fn check_builtin_age(&self) {
        let Some(engine) = &self.builtin else { return };
        let set = engine.signatures();
        let age = set
            .newest_file
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        let stale = age.is_some_and(|a| a > self.config.max_signature_age);
        if stale && !self.builtin_stale.swap(true, Ordering::Relaxed) {
            log::warn!(signatures_dir:? = engine.dir(), version:% = set.version,
                age_seconds:? = age.map(|a| a.as_secs());
                "antivirus: built-in signatures are older than max_signature_age");
        } else if !stale {
            self.builtin_stale.store(false, Ordering::Relaxed);
        }
    }

    pub fn clamd(&self) -> Option<&Clamd> {
        self.clamd.as_ref()
    }

    /// What `bulwarkctl av status` prints.
    pub fn status(&self) -> Value {
        let mut engines = serde_json::Map::new();
        for engine in &self.config.engines {
            let value = match engine {
                AvEngine::Clamd => self.clamd_status(),
                AvEngine::Builtin => self.builtin_status(),
            };
            let key = serde_json::to_value(engine).unwrap_or_default();
            engines.insert(key.as_str().unwrap_or("?").to_string(), value);
        }
        json!({
            "engines": engines,
            "order": self.config.engines,
            "too_large": self.too_large.load(Ordering::Relaxed),
            "max_scan_size": self.config.max_scan_size,
            "last_update": *self.last_update.lock().unwrap_or_else(|p| p.into_inner()),
            "update_url": self.config.update_url,
        })
    }

    fn clamd_status(&self) -> Value {
        let mut status = self.health.json(self.config.max_signature_age);
        status["address"] = json!(self.config.clamd);
        status["counters"] = self.clamd_counters.json();
        status
    }

    fn builtin_status(&self) -> Value {
        let Some(engine) = &self.builtin else {
            return Value::Null;
        };
        let set = engine.signatures();
        let age = set
            .newest_file
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs());
        let stale = age.is_some_and(|a| a > self.config.max_signature_age.as_secs());
        json!({
            "signatures_dir": engine.dir(),
            "version": set.version,
            "loaded_at": unix_time(set.loaded_at),
            "age_seconds": age,
            "stale": stale,
            "md5_signatures": set.md5_count(),
            "sha256_signatures": set.sha256_count(),
            "yara_compiled_in": builtin::yara::COMPILED_IN,
            "yara_files": set.yara.files_compiled(),
            "yara_rules": set.yara.rule_count(),
            "yara_files_ignored": set.yara.files_ignored(),
            "counters": self.builtin_counters.json(),
        })
    }
}

fn unix_time(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now() -> u64 {
    unix_time(SystemTime::now())
}

#[cfg(test)]
mod tests;
