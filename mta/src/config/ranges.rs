//! Range checks: every count, size and timeout the daemon enforces is refused at load when
//! its value would switch the control off or stop the service (`max_errors = 0` cuts every
//! session at its first command, `max_connections = 0` never delivers, a zero timeout drops
//! every client), each reported with the line:column of the key.
//!
//! A limit the administrator can set to "none" says so in its own doc (`syn_rate = 0`,
//! `delay_warning = 0`, `connection_idle_time = 0`); everything listed here must be positive.

use std::time::Duration;

use super::load::{indexed, key, Found, Segment};
use super::Config;

/// Counts and sizes that must be at least 1.
fn counts(config: &Config) -> Vec<(Vec<Segment>, u64)> {
    let limits = &config.limits;
    let delivery = &config.delivery;
    let mut counts = vec![
        (
            key(&["limits", "max_message_size"]),
            limits.max_message_size,
        ),
        (
            key(&["limits", "max_recipients"]),
            limits.max_recipients as u64,
        ),
        (
            key(&["limits", "max_sessions_per_client"]),
            limits.max_sessions_per_client as u64,
        ),
        (key(&["limits", "max_errors"]), u64::from(limits.max_errors)),
        (
            key(&["limits", "max_received_headers"]),
            limits.max_received_headers as u64,
        ),
        (
            key(&["limits", "max_header_size"]),
            limits.max_header_size as u64,
        ),
        (
            key(&["limits", "max_messages_per_session"]),
            limits.max_messages_per_session as u64,
        ),
        (
            key(&["limits", "junk_command_limit"]),
            u64::from(limits.junk_command_limit),
        ),
        (
            key(&["delivery", "dead_destination_failures"]),
            u64::from(delivery.dead_destination_failures),
        ),
        (
            key(&["delivery", "max_connections"]),
            delivery.max_connections as u64,
        ),
        (key(&["delivery", "mx_port"]), u64::from(delivery.mx_port)),
    ];
    for (i, listener) in config.listeners.iter().enumerate() {
        counts.push((
            indexed("listener", i, "max_sessions"),
            listener.max_sessions as u64,
        ));
    }
    for (i, route) in config.routes.iter().enumerate() {
        counts.push((
            indexed("route", i, "max_connections"),
            route.max_connections as u64,
        ));
        counts.push((
            indexed("route", i, "max_messages_per_connection"),
            route.max_messages_per_connection as u64,
        ));
    }
    counts
}

/// Timeouts and intervals that must not be zero.
fn durations(config: &Config) -> Vec<(Vec<Segment>, Duration)> {
    let limits = &config.limits;
    let delivery = &config.delivery;
    let mut durations = vec![
        (key(&["limits", "command_timeout"]), limits.command_timeout),
        (key(&["limits", "data_timeout"]), limits.data_timeout),
        (key(&["delivery", "retry_initial"]), delivery.retry_initial),
        (key(&["delivery", "retry_max"]), delivery.retry_max),
        (
            key(&["delivery", "max_queue_lifetime"]),
            delivery.max_queue_lifetime,
        ),
        (
            key(&["delivery", "connect_timeout"]),
            delivery.connect_timeout,
        ),
        (
            key(&["delivery", "command_timeout"]),
            delivery.command_timeout,
        ),
        (key(&["delivery", "data_timeout"]), delivery.data_timeout),
        (key(&["dns", "timeout"]), config.dns.timeout),
    ];
    for (i, check) in config.recipient_checks.iter().enumerate() {
        durations.push((indexed("recipients", i, "timeout"), check.timeout));
    }
    durations
}

pub(super) fn check(config: &Config, found: &mut Found) {
    for (path, value) in counts(config) {
        if value == 0 {
            found.push((path, "must be greater than 0".into()));
        }
    }
    for (path, value) in durations(config) {
        if value.is_zero() {
            found.push((path, "must be longer than 0 seconds".into()));
        }
    }
    let delivery = &config.delivery;
    if delivery.retry_max < delivery.retry_initial {
        found.push((
            key(&["delivery", "retry_max"]),
            format!(
                "is shorter than retry_initial ({}s)",
                delivery.retry_initial.as_secs()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const BASE: &str = r#"
[server]
hostname = "mx.example.com"
spool_dir = "/tmp/spool"
control_socket = "/tmp/ctl.sock"

[[listener]]
address = "127.0.0.1:2525"
role = "mx"
max_sessions = 0

[relay]
domains = ["example.com"]

[limits]
max_errors = 0
command_timeout = 0

[delivery]
max_connections = 0
retry_initial = "10m"
retry_max = "5m"
"#;

    #[test]
    fn zero_limits_are_refused_where_they_are_written() {
        let err = super::super::load_str(BASE, "t.toml", Path::new("/")).expect_err("zeros");
        let found: Vec<(String, usize)> = err
            .problems()
            .iter()
            .map(|p| (p.key_path.clone(), p.line))
            .collect();
        assert_eq!(
            found,
            [
                ("listener[0].max_sessions".to_string(), 10),
                ("limits.max_errors".to_string(), 16),
                ("limits.command_timeout".to_string(), 17),
                ("delivery.max_connections".to_string(), 20),
                ("delivery.retry_max".to_string(), 22),
            ],
            "{err}"
        );
    }
}
