//! clamd's health as Bulwark last saw it: `PING` answered, `VERSION` and its database date.
//!
//! A monitor task (see [`spawn_monitor`]) checks every [`CHECK_INTERVAL`]; each change of state
//! (up → down, down → up, fresh → stale) is one log event, so a stale or dead scanner is
//! noticed before mail starts to wait. An unknown database date (custom signatures only) is
//! reported as such, never as fresh or stale.

use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::clamd::{Clamd, ClamdAddress, ClamdError, ClamdVersion};
use super::Antivirus;

pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    up: Option<bool>,
    last_error: Option<String>,
    version: Option<ClamdVersion>,
    checked_at: Option<SystemTime>,
    stale: bool,
}

#[derive(Default)]
pub struct ClamdHealth {
    state: Mutex<State>,
}

impl ClamdHealth {
    /// Pings clamd, asks its version and records (and logs changes of) the result.
    pub async fn check(&self, clamd: &Clamd, max_age: Duration) {
        let result = match clamd.ping().await {
            Ok(()) => clamd.version().await,
            Err(e) => Err(e),
        };
        self.record(clamd.address(), result, max_age);
    }

    fn record(
        &self,
        address: &ClamdAddress,
        result: Result<ClamdVersion, ClamdError>,
        max_age: Duration,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.checked_at = Some(SystemTime::now());
        match result {
            Ok(version) => {
                if state.up != Some(true) {
                    log::info!(clamd:% = address, engine:% = version.engine; "antivirus: clamd is up");
                }
                state.up = Some(true);
                state.last_error = None;
                let stale = age_of(&version).is_some_and(|age| age > max_age);
                if stale && !state.stale {
                    log::warn!(clamd:% = address, database:? = version.database,
                        age_seconds:? = age_of(&version).map(|a| a.as_secs());
                        "antivirus: clamd signatures are older than max_signature_age");
                }
                state.stale = stale;
                state.version = Some(version);
            }
            Err(error) => {
                if state.up != Some(false) {
                    log::warn!(clamd:% = address, error:% = error; "antivirus: clamd is down");
                }
                state.up = Some(false);
                state.last_error = Some(error.to_string());
            }
        }
    }

    pub fn json(&self, max_age: Duration) -> Value {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let age = state.version.as_ref().and_then(age_of).map(|a| a.as_secs());
        json!({
            "up": state.up,
            "last_error": state.last_error,
            "version": state.version,
            "database_age_seconds": age,
            "stale": age.is_some_and(|a| a > max_age.as_secs()),
            "checked_at": state.checked_at.map(super::unix_time),
        })
    }
}

fn age_of(version: &ClamdVersion) -> Option<Duration> {
    let built = SystemTime::UNIX_EPOCH + Duration::from_secs(version.database_time?);
    Some(SystemTime::now().duration_since(built).unwrap_or_default())
}

/// Checks clamd (and the built-in set's age) every [`CHECK_INTERVAL`] until the antivirus
/// instance is dropped (a reload built a new one, which starts its own monitor).
pub fn spawn_monitor(antivirus: Weak<Antivirus>) {
    tokio::spawn(async move {
        loop {
            let Some(av) = antivirus.upgrade() else {
                return;
            };
            if let Some(clamd) = av.clamd() {
                av.health.check(clamd, av.config.max_signature_age).await;
            }
            av.check_builtin_age();
            drop(av);
            tokio::time::sleep(CHECK_INTERVAL).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_databases_are_stale_and_unknown_dates_are_not() {
        let health = ClamdHealth::default();
        let address = ClamdAddress::Unix("/run/clamd.sock".into());
        let day = Duration::from_secs(86_400);
        let old = ClamdVersion::parse("ClamAV 1.4.6/27000/Tue Dec  1 09:28:02 2020").expect("v");
        health.record(&address, Ok(old), 7 * day);
        let status = health.json(7 * day);
        assert_eq!(status["stale"], true);
        assert_eq!(status["up"], true);
        assert!(status["database_age_seconds"].as_u64().expect("age") > 365 * 86_400);
        let custom = ClamdVersion::parse("ClamAV 1.4.6").expect("v");
        health.record(&address, Ok(custom), 7 * day);
        assert_eq!(health.json(7 * day)["stale"], false);
        let down = Err(ClamdError::Timeout(Duration::from_secs(1)));
        health.record(&address, down, 7 * day);
        assert_eq!(health.json(7 * day)["up"], false);
    }
}
