//! Automatic signature updates: `update_url` polled every `update_interval`.
//!
//! Each poll sends `If-Modified-Since` with the `Last-Modified` of the last bundle installed
//! (kept in memory: the first poll after a start fetches once more, which is harmless). A 304
//! changes nothing; a 200 fetches the detached signature at `update_url` + `.sig` and hands both
//! to [`Antivirus::install_bundle`], which verifies before anything is swapped. Every poll
//! that changes or fails is one log event; a failed poll keeps the old set and waits for the
//! next interval.

use std::sync::Weak;
use std::time::Duration;

use super::bundle::MAX_BUNDLE;
use super::http;
use super::Antivirus;

/// One fetch's budget.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls until the antivirus instance is dropped (a reload starts a new poller).
pub fn spawn_poller(antivirus: Weak<Antivirus>) {
    tokio::spawn(async move {
        let mut last_modified: Option<String> = None;
        loop {
            let Some(av) = antivirus.upgrade() else {
                return;
            };
            let url = av.config.update_url.clone();
            let interval = av.config.update_interval;
            if url.is_empty() {
                return;
            }
            if let Some(stamp) = poll(&av, &url, last_modified.as_deref()).await {
                last_modified = Some(stamp);
            }
            drop(av);
            tokio::time::sleep(interval).await;
        }
    });
}

/// One poll; returns the new `Last-Modified` once a bundle was installed.
pub async fn poll(av: &Antivirus, url: &str, since: Option<&str>) -> Option<String> {
    let bundle = match http::get(url, since, FETCH_TIMEOUT, MAX_BUNDLE).await {
        Ok(response) if response.status == 304 => {
            log::debug!(url:% = url; "antivirus: signatures not modified");
            return None;
        }
        Ok(response) if response.status == 200 => response,
        Ok(response) => {
            log::warn!(url:% = url, status = response.status; "antivirus: update fetch failed");
            return None;
        }
        Err(error) => {
            log::warn!(url:% = url, error:% = error; "antivirus: update fetch failed");
            return None;
        }
    };
    let signature_url = format!("{url}.sig");
    let signature = match http::get(&signature_url, None, FETCH_TIMEOUT, 4096).await {
        Ok(response) if response.status == 200 => Some(response.body),
        Ok(_) | Err(_) => None,
    };
    match av.install_bundle(&bundle.body, signature.as_deref(), url) {
        Ok(version) => {
            log::info!(url:% = url, version:% = version; "antivirus: signature bundle installed");
            Some(bundle.last_modified.unwrap_or_default())
        }
        Err(error) => {
            log::warn!(url:% = url, error:% = error; "antivirus: signature bundle refused, old set kept");
            None
        }
    }
}
