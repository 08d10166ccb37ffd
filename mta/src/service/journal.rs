//! Where the daemon's log goes: journald with structured fields, or stderr.
//!
//! Log call sites attach key-values (`log::info!(queue_id = ..., client_addr = ...; "...")`);
//! in the journal each becomes an upper-case field (`QUEUE_ID=`, `CLIENT_ADDR=`, `RECIPIENT=`,
//! `DSN_STATUS=`), so `journalctl -u bulwark QUEUE_ID=...` follows one message end to end.
//! On stderr the message text alone is printed: it already names the same facts.
//!
//! `auto` picks journald when stderr is already connected to it (`JOURNAL_STREAM`, as systemd
//! sets for a service), so a daemon run by hand keeps logging to the terminal.
//!
//! Journal events go through `log_queue`, so a slowly read journal socket never blocks a
//! session. Stderr (a terminal or a file: a daemon run by hand, the tests) is written at the
//! call, so its lines are there, in order, the moment the event happened.

use std::str::FromStr;

use log::LevelFilter;

use super::log_queue::QueuedLog;

/// The environment variable holding the log level (`error` … `trace`, env_logger syntax on stderr).
pub const LEVEL_ENV: &str = "BULWARK_LOG";

/// Where to log, as chosen with `bulwarkd --log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// journald if stderr is connected to it, else stderr.
    Auto,
    /// The native journal protocol (`/run/systemd/journal/socket`).
    Journal,
    Stderr,
}

impl FromStr for LogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(LogTarget::Auto),
            "journal" => Ok(LogTarget::Journal),
            "stderr" => Ok(LogTarget::Stderr),
            other => Err(format!(
                "unknown log target {other:?} (auto, journal, stderr)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogSetupError {
    #[error("journald: {0}")]
    Journal(std::io::Error),
    #[error("a logger is already installed")]
    AlreadyInstalled,
    #[error("cannot start the log writer thread: {0}")]
    Writer(std::io::Error),
}

/// The target `auto` resolves to in this process.
pub fn resolve(target: LogTarget) -> LogTarget {
    match target {
        LogTarget::Auto if systemd_journal_logger::connected_to_journal() => LogTarget::Journal,
        LogTarget::Auto => LogTarget::Stderr,
        chosen => chosen,
    }
}

/// Installs the global logger; returns the target actually used.
pub fn init(target: LogTarget) -> Result<LogTarget, LogSetupError> {
    let target = resolve(target);
    match target {
        LogTarget::Journal => {
            let journal = systemd_journal_logger::JournalLog::new()
                .map_err(LogSetupError::Journal)?
                .with_syslog_identifier("bulwarkd".to_string());
            install(Box::new(journal))?;
            log::set_max_level(journal_level(std::env::var(LEVEL_ENV).ok().as_deref()));
        }
        _ => {
            let setting = std::env::var(LEVEL_ENV).ok();
            let plain = setting.as_deref().map_or(Some(LevelFilter::Info), |s| {
                LevelFilter::from_str(s.trim()).ok()
            });
            let mut builder =
                env_logger::Builder::from_env(env_logger::Env::new().filter_or(LEVEL_ENV, "info"));
            builder.format_target(false);
            if plain.is_some() {
                // A plain level: the logger passes everything and the global maximum filters,
                // so `bulwarkctl log-level` can raise it as well as lower it at run time.
                builder.filter_level(LevelFilter::Trace);
            }
            let logger = builder.build();
            let filter = logger.filter();
            log::set_boxed_logger(Box::new(logger)).map_err(|_| LogSetupError::AlreadyInstalled)?;
            log::set_max_level(plain.unwrap_or(filter));
        }
    }
    Ok(target)
}

/// The journal logger behind the bounded queue.
fn install(inner: Box<dyn log::Log>) -> Result<(), LogSetupError> {
    let queued = QueuedLog::start(inner).map_err(LogSetupError::Writer)?;
    log::set_boxed_logger(Box::new(queued)).map_err(|_| LogSetupError::AlreadyInstalled)
}

/// Changes the log level at run time (`bulwarkctl log-level`); the level now in force.
pub fn set_level(level: &str) -> Result<LevelFilter, String> {
    let level = LevelFilter::from_str(level.trim())
        .map_err(|_| format!("{level:?} is not a level (off, error, warn, info, debug, trace)"))?;
    log::set_max_level(level);
    Ok(level)
}

/// The journal has no per-module filter: a plain level, `info` when unset or unreadable
/// (journald itself filters further with `MaxLevelStore=`).
fn journal_level(setting: Option<&str>) -> LevelFilter {
    setting
        .and_then(|s| LevelFilter::from_str(s.trim()).ok())
        .unwrap_or(LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_explicit_ones_stay() {
        assert_eq!("journal".parse::<LogTarget>(), Ok(LogTarget::Journal));
        assert!("syslog".parse::<LogTarget>().is_err());
        assert_eq!(resolve(LogTarget::Stderr), LogTarget::Stderr);
        assert_eq!(resolve(LogTarget::Journal), LogTarget::Journal);
    }

    #[test]
    fn journal_level_defaults_to_info() {
        assert_eq!(journal_level(None), LevelFilter::Info);
        assert_eq!(journal_level(Some("debug")), LevelFilter::Debug);
        assert_eq!(journal_level(Some("bulwark=debug")), LevelFilter::Info);
    }
}
