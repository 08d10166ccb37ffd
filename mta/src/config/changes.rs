//! What differs between two configurations, key by key, and whether a running daemon can
//! apply it on reload or only at its next start.
//!
//! Restart-only settings decide what was set up while privileged or before anything ran:
//! the listening sockets, the spool (directory and sync mode), the service user and group,
//! the control socket, the DNS resolver and what flow control attached where. A reload
//! keeps their running values ([`keep_restart_only`]), so the running configuration always
//! says what the daemon is actually doing, and reports each one that waits for a restart.

use serde::Serialize;
use serde_json::Value;

use super::Config;

/// Key paths (or their prefixes) that only a restart applies.
const RESTART_ONLY: &[&str] = &[
    "listener",
    "server.spool_dir",
    "server.spool_sync",
    "server.user",
    "server.group",
    "server.control_socket",
    "dns",
    "tls_policy",
    "flow.mode",
    "flow.interfaces",
    "flow.pin_dir",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applies {
    /// A reload applies it.
    OnReload,
    /// Only a restart applies it; until then the running value stays.
    AtRestart,
}

/// One key whose value differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub key: String,
    pub running: Value,
    pub file: Value,
    pub applies: Applies,
}

/// Every key whose value differs between `running` and `file`, in key order. Arrays of
/// tables (`listener`, `route`, `recipients`) are compared element by element.
pub fn diff(running: &Config, file: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    let (old, new) = (as_value(running), as_value(file));
    compare(String::new(), &old, &new, &mut changes);
    changes
}

/// Copies the restart-only settings of `running` into `reloaded`.
pub fn keep_restart_only(running: &Config, reloaded: &mut Config) {
    reloaded.listeners = running.listeners.clone();
    reloaded.dns = running.dns.clone();
    // The resolvers, cache and counters are built once at start.
    reloaded.tls_policy = running.tls_policy.clone();
    let (server, old) = (&mut reloaded.server, &running.server);
    server.spool_dir = old.spool_dir.clone();
    server.spool_sync = old.spool_sync;
    server.user = old.user.clone();
    server.group = old.group.clone();
    server.control_socket = old.control_socket.clone();
    let (flow, old) = (&mut reloaded.flow, &running.flow);
    flow.mode = old.mode;
    flow.interfaces = old.interfaces.clone();
    flow.pin_dir = old.pin_dir.clone();
}

fn as_value(config: &Config) -> Value {
    serde_json::to_value(config).unwrap_or(Value::Null)
}

fn compare(key: String, old: &Value, new: &Value, changes: &mut Vec<Change>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                let missing = Value::Null;
                compare(
                    path,
                    a.get(k).unwrap_or(&missing),
                    b.get(k).unwrap_or(&missing),
                    changes,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if tables(a) && tables(b) && a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(format!("{key}[{i}]"), x, y, changes);
            }
        }
        _ if old != new => changes.push(Change {
            applies: applies(&key),
            key,
            running: old.clone(),
            file: new.clone(),
        }),
        _ => {}
    }
}

fn tables(values: &[Value]) -> bool {
    values.iter().all(Value::is_object)
}

fn applies(key: &str) -> Applies {
    let restart_only = RESTART_ONLY.iter().any(|prefix| {
        key == *prefix
            || key
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    });
    if restart_only {
        Applies::AtRestart
    } else {
        Applies::OnReload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nhostname = \"mx.example.com\"\nspool_dir = \"/tmp/s\"\n\
             control_socket = \"/tmp/c.sock\"\n{extra}\n[[listener]]\n\
             address = \"127.0.0.1:2525\"\nrole = \"mx\"\n[relay]\ndomains = [\"example.com\"]\n"
        );
        super::super::load_str(&text, "t.toml", std::path::Path::new("/")).expect("valid")
    }

    #[test]
    fn each_changed_key_is_named_with_when_it_applies() {
        let running = config("");
        let mut file = config("");
        file.server.spool_dir = "/var/spool/other".into();
        file.limits.max_errors = 7;
        file.listeners[0].address = "127.0.0.1:2526".parse().expect("address");
        let changes = diff(&running, &file);
        let named: Vec<(&str, Applies)> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.applies))
            .collect();
        assert_eq!(
            named,
            [
                ("limits.max_errors", Applies::OnReload),
                ("listener[0].address", Applies::AtRestart),
                ("server.spool_dir", Applies::AtRestart),
            ]
        );
        let mut reloaded = file.clone();
        keep_restart_only(&running, &mut reloaded);
        let left: Vec<String> = diff(&running, &reloaded)
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(left, ["limits.max_errors"]);
    }
}
