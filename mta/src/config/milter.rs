//! `[[milter]]`: external mail filters spoken to over the milter protocol (issue #18).
//!
//! The names follow Postfix where it has one (`milter_default_action`, `milter_*_macros`) so an
//! administrator can carry a Postfix setup over. `address` is validated at parse time: a
//! `MilterAddress` is always a usable TCP or unix-socket endpoint.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, DirectionScope, OnError};

/// Where a milter listens: `inet:PORT@HOST` or `unix:PATH` (Postfix's and Sendmail's syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterAddress {
    Inet { host: String, port: u16 },
    Unix(PathBuf),
}

impl MilterAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text
            .strip_prefix("unix:")
            .or_else(|| text.strip_prefix("local:"))
        {
            return if path.starts_with('/') {
                Ok(MilterAddress::Unix(PathBuf::from(path)))
            } else {
                Err(format!("{text:?}: the socket path must be absolute"))
            };
        }
        let spec = text
            .strip_prefix("inet:")
            .or_else(|| text.strip_prefix("inet6:"))
            .ok_or_else(|| format!("{text:?}: expected \"inet:PORT@HOST\" or \"unix:PATH\""))?;
        let (port, host) = spec
            .split_once('@')
            .ok_or_else(|| format!("{text:?}: expected \"inet:PORT@HOST\""))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{text:?}: the host is missing"));
        }
        Ok(MilterAddress::Inet {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for MilterAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterAddress::Inet { host, port } => write!(f, "inet:{port}@{host}"),
            MilterAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for MilterAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        MilterAddress::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Written back as the text it was read from (`inet:PORT@HOST`, `unix:PATH`).
impl Serialize for MilterAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MilterConfig {
    /// Names the stage in logs and in `X-Bulwark-Unscanned`.
    pub name: String,
    pub address: MilterAddress,
    /// Which mail it sees; outbound = the client is trusted or authenticated.
    #[serde(default)]
    pub direction: DirectionScope,
    /// What happens to the message when the milter cannot be reached, hangs or breaks the
    /// protocol (Postfix's `milter_default_action`): tempfail, accept or reject.
    #[serde(default)]
    pub default_action: OnError,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Waiting for one reply; a progress reply from the milter restarts it.
    #[serde(default = "default_command_timeout", with = "duration")]
    pub command_timeout: Duration,
    /// The whole conversation about one message (Postfix's `milter_content_timeout`).
    #[serde(default = "default_message_timeout", with = "duration")]
    pub message_timeout: Duration,
    /// Macros sent per protocol stage (Postfix's `milter_*_macros`); a milter's own request
    /// (SETSYMLIST during negotiation) replaces the list for that stage.
    #[serde(default = "default_connect_macros")]
    pub connect_macros: Vec<String>,
    #[serde(default = "default_helo_macros")]
    pub helo_macros: Vec<String>,
    #[serde(default = "default_mail_macros")]
    pub mail_macros: Vec<String>,
    #[serde(default = "default_rcpt_macros")]
    pub rcpt_macros: Vec<String>,
    #[serde(default = "default_queue_id_macro")]
    pub data_macros: Vec<String>,
    #[serde(default = "default_queue_id_macro")]
    pub end_of_header_macros: Vec<String>,
    #[serde(default = "default_queue_id_macro")]
    pub end_of_data_macros: Vec<String>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_message_timeout() -> Duration {
    Duration::from_secs(300)
}
fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}
fn default_connect_macros() -> Vec<String> {
    names(&[
        "j",
        "{daemon_name}",
        "{daemon_addr}",
        "{client_addr}",
        "{client_name}",
        "_",
    ])
}
fn default_helo_macros() -> Vec<String> {
    names(&["{tls_version}", "{cipher}", "{cipher_bits}"])
}
fn default_mail_macros() -> Vec<String> {
    names(&[
        "i",
        "{auth_type}",
        "{auth_authen}",
        "{mail_addr}",
        "{mail_host}",
    ])
}
fn default_rcpt_macros() -> Vec<String> {
    names(&["i", "{rcpt_addr}", "{rcpt_host}"])
}
fn default_queue_id_macro() -> Vec<String> {
    names(&["i"])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_postfix() {
        assert_eq!(
            MilterAddress::parse("inet:11332@127.0.0.1"),
            Ok(MilterAddress::Inet {
                host: "127.0.0.1".into(),
                port: 11332
            })
        );
        assert_eq!(
            MilterAddress::parse("inet:8891@[::1]"),
            Ok(MilterAddress::Inet {
                host: "::1".into(),
                port: 8891
            })
        );
        assert_eq!(
            MilterAddress::parse("unix:/run/rspamd/milter.sock"),
            Ok(MilterAddress::Unix("/run/rspamd/milter.sock".into()))
        );
        for bad in [
            "127.0.0.1:11332",
            "inet:x@h",
            "inet:0@h",
            "inet:25@",
            "unix:rel/path",
        ] {
            assert!(MilterAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
