//! The sd_notify(3) protocol towards systemd (`Type=notify`).
//!
//! Contract: `READY=1` is sent only once the spool is recovered and every listener and the
//! control socket are bound; a reload is bracketed by `RELOADING=1` … `READY=1` whether it
//! succeeds or is refused; `STOPPING=1` goes out as soon as the drain begins. `STATUS=` carries
//! live counters. `WATCHDOG=1` is sent by a task on the daemon's own async runtime, so a hung
//! runtime stops the pings and systemd restarts the service (`WatchdogSec=`).
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. A failed send is logged, never fatal: the
//! mail keeps flowing even if the service manager went away.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::gateway::Gateway;

/// How often `STATUS=` is refreshed when no watchdog asks for something faster.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify: {e}");
    }
}

/// Listeners bound and spool recovered: the service is up.
pub fn ready(gateway: &Gateway) {
    let status = status_line(gateway);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A reload starts (`systemctl reload` waits for the following `READY=1`).
pub fn reloading() {
    // MONOTONIC_USEC lets newer systemd (Type=notify-reload) match this to its request.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The reload is over (applied or refused: either way a configuration is running).
pub fn reloaded(outcome: &Result<(), String>) {
    let status = match outcome {
        Ok(()) => "configuration reloaded".to_string(),
        Err(e) => format!("reload refused, old configuration in force: {e}"),
    };
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The drain begins: systemd shows "deactivating" instead of waiting for a silent process.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: sessions finish or get 421"),
    ]);
}

/// One line of live counters for `systemctl status`.
pub fn status_line(gateway: &Gateway) -> String {
    let c = &gateway.counters;
    format!(
        "sessions {} active, {} total; messages {} accepted, {} rejected; queue {}",
        c.sessions_active.load(Ordering::Relaxed),
        c.sessions_total.load(Ordering::Relaxed),
        c.messages_accepted.load(Ordering::Relaxed),
        c.messages_rejected.load(Ordering::Relaxed),
        gateway.queue.len(),
    )
}

/// The interval between heartbeats: half the watchdog timeout (as sd_watchdog_enabled(3)
/// advises), never slower than the status refresh.
pub fn heartbeat_interval(watchdog: Option<Duration>) -> Duration {
    match watchdog {
        Some(timeout) => (timeout / 2).clamp(Duration::from_millis(100), STATUS_INTERVAL),
        None => STATUS_INTERVAL,
    }
}

/// Spawns the heartbeat on the current runtime: `STATUS=` (and `WATCHDOG=1` when systemd
/// asked for it with `WATCHDOG_USEC`) at a fixed rate until the process ends.
pub fn spawn_heartbeat(gateway: Arc<Gateway>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let mut ticks = tokio::time::interval(heartbeat_interval(watchdog));
    tokio::spawn(async move {
        loop {
            ticks.tick().await;
            let status = status_line(&gateway);
            if watchdog.is_some() {
                send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            } else {
                send(&[NotifyState::Status(&status)]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_half_the_watchdog_and_bounded() {
        assert_eq!(heartbeat_interval(None), STATUS_INTERVAL);
        assert_eq!(
            heartbeat_interval(Some(Duration::from_secs(4))),
            Duration::from_secs(2)
        );
        assert_eq!(
            heartbeat_interval(Some(Duration::from_secs(600))),
            STATUS_INTERVAL
        );
        assert_eq!(
            heartbeat_interval(Some(Duration::from_millis(10))),
            Duration::from_millis(100)
        );
    }
}
