//! The built-in configuration used when no file is given and none exists at the default path:
//! it must work unprivileged on a laptop (loopback, a high port, state under the user's home).

use std::path::PathBuf;

use super::{
    Config, LimitsConfig, ListenerConfig, ListenerRole, QuarantineConfig, RelayConfig, RouteConfig,
    ServerConfig, SmtpConfig,
};

/// Where packages install the configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bulwark/bulwark.toml";

/// The laptop default: 127.0.0.1:2525, accepts mail for `localhost`, relays for loopback
/// clients, spools (and quarantines) under `$XDG_STATE_HOME/bulwark` (or `~/.local/state/bulwark`).
pub fn builtin_default() -> Config {
    let state = state_dir();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|dir| PathBuf::from(dir).join("bulwark"))
        .unwrap_or_else(|| state.clone());
    Config {
        server: ServerConfig {
            hostname: local_hostname(),
            spool_dir: state.join("spool"),
            control_socket: runtime.join("control.sock"),
            spool_sync: Default::default(),
            user: None,
            group: None,
            min_free_space: 100 << 20,
        },
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:2525".parse().expect("literal address"),
            role: ListenerRole::Mx,
            max_sessions: 1000,
        }],
        tls: None,
        auth: None,
        antivirus: None,
        relay: RelayConfig {
            domains: vec!["localhost".to_string()],
            trusted_networks: vec![
                "127.0.0.0/8".parse().expect("literal network"),
                "::1/128".parse().expect("literal network"),
            ],
        },
        recipient_checks: Vec::new(),
        limits: LimitsConfig::default(),
        smtp: SmtpConfig::default(),
        routes: vec![local_maildir(&state)],
        delivery: Default::default(),
        dns: Default::default(),
        flow: Default::default(),
        pipeline: Default::default(),
        rules: Vec::new(),
        control: None,
        metrics: None,
        console: None,
        antispam: Some(Default::default()),
        dkim: Vec::new(),
        outbound_limit: None,
        tracking: super::TrackingConfig {
            dir: state.join("tracking"),
            ..Default::default()
        },
        quarantine: QuarantineConfig {
            dir: state.join("quarantine"),
            ..Default::default()
        },
        milters: Vec::new(),
        tls_policy: super::TlsPolicyConfig {
            state_dir: state.join("tls"),
            ..Default::default()
        },
    }
}

/// Mail to `localhost` lands in a Maildir under the state directory (nothing listens on
/// port 25 on a laptop, so relaying it would defer it forever).
fn local_maildir(state: &std::path::Path) -> RouteConfig {
    RouteConfig {
        domains: vec!["localhost".to_string()],
        next_hops: Vec::new(),
        smart_host: None,
        maildir: Some(state.join("Maildir")),
        tls: None,
        ca_file: None,
        max_connections: 1,
        max_messages_per_connection: 100,
    }
}

fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("bulwark");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/bulwark");
    }
    std::env::temp_dir().join("bulwark")
}

/// The machine's host name, as the greeting should show it.
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
