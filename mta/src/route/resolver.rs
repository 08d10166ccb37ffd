//! DNS for delivery, behind a trait so tests can point the real resolver at a server on
//! 127.0.0.1 (the `[dns] servers` option) and never at the Internet.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use crate::config::DnsConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (permanent: the recipient bounces).
    #[error("{0}: no such domain")]
    NoSuchDomain(String),
    /// The name exists but has no usable address (permanent).
    #[error("{0}: no address records")]
    NoAddress(String),
    /// Timeouts, SERVFAIL, unreachable resolvers: try again later.
    #[error("{0}: temporary DNS failure: {1}")]
    Temporary(String, String),
}

impl DnsError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(..))
    }
}

/// The answer to an MX query, already interpreted (RFC 5321 5.1, RFC 7505).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// Exchange hosts, most preferred first (ties keep the order the server gave).
    Hosts(Vec<String>),
    /// `MX 0 .`: the domain accepts no mail.
    NullMx,
    /// No MX records: the domain itself is the implicit MX.
    Implicit,
}

#[async_trait]
pub trait Resolver: Send + Sync {
    async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsError>;
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

pub struct HickoryResolver {
    inner: TokioResolver,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverSetupError(String);

impl HickoryResolver {
    /// The configured servers, or the system's resolv.conf when none are configured.
    pub fn new(config: &DnsConfig) -> Result<Self, ResolverSetupError> {
        Ok(Self {
            inner: tokio_resolver(config, None)?,
        })
    }
}

/// A hickory resolver for `config`'s servers; with a trust anchor it validates DNSSEC and
/// marks each record's proof (`tls_policy` uses that one for TLSA and MX lookups).
pub fn tokio_resolver(
    config: &DnsConfig,
    trust_anchor: Option<std::sync::Arc<TrustAnchors>>,
) -> Result<TokioResolver, ResolverSetupError> {
    let setup = |e: &dyn std::fmt::Display| ResolverSetupError(e.to_string());
    let mut builder = if config.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| setup(&e))?
    } else {
        let mut servers = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for server in &config.servers {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            servers.add_name_server(name_server);
        }
        TokioResolver::builder_with_config(servers, TokioRuntimeProvider::default())
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = config.timeout.max(Duration::from_millis(100));
    options.attempts = 2;
    options.ndots = 0;
    if let Some(anchor) = trust_anchor {
        builder = builder.with_trust_anchor(anchor);
    }
    builder.build().map_err(|e| setup(&e))
}

fn classify(name: &str, error: &hickory_resolver::net::NetError) -> DnsError {
    if error.is_nx_domain() {
        DnsError::NoSuchDomain(name.to_string())
    } else if error.is_no_records_found() {
        DnsError::NoAddress(name.to_string())
    } else {
        DnsError::Temporary(name.to_string(), error.to_string())
    }
}

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

#[async_trait]
impl Resolver for HickoryResolver {
    async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        let lookup = match self.inner.mx_lookup(absolute(domain)).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() && !e.is_nx_domain() => {
                return Ok(MxAnswer::Implicit)
            }
            Err(e) => return Err(classify(domain, &e)),
        };
        let mut records: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(MxAnswer::Implicit);
        }
        if records.len() == 1 && records[0].1 == "." {
            return Ok(MxAnswer::NullMx);
        }
        records.sort_by_key(|(preference, _)| *preference);
        let hosts = records
            .into_iter()
            .filter(|(_, host)| host != ".")
            .map(|(_, host)| host.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        Ok(MxAnswer::Hosts(hosts))
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = self
            .inner
            .lookup_ip(absolute(host))
            .await
            .map_err(|e| classify(host, &e))?;
        let addresses: Vec<IpAddr> = lookup.iter().collect();
        if addresses.is_empty() {
            return Err(DnsError::NoAddress(host.to_string()));
        }
        Ok(addresses)
    }
}
