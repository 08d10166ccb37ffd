//! Routing: which destination a recipient's mail goes to, and how to reach it.
//!
//! The first `[[route]]` whose domains match the recipient domain wins (`*` matches any,
//! `.example.com` subdomains). A route names its next hops (tried in order: failover) or one
//! smart host; a route with neither, or no route at all, delivers by MX lookup (RFC 5321 5.1).
//! A destination is the unit of queueing, connection limits and dead-destination tracking:
//! all recipients of a next-hop route share one; MX delivery has one per recipient domain.

mod resolver;

use std::fmt;
use std::path::PathBuf;

pub use resolver::{
    tokio_resolver, DnsError, HickoryResolver, MxAnswer, Resolver, ResolverSetupError,
};

use crate::config::{domain_listed, Config, OutboundTls, PolicySource, RouteConfig};

/// A host and port to connect to; the host is a name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not host, host:port or [ipv6]:port")]
pub struct NextHopError(pub String);

impl NextHop {
    /// Parses `host`, `host:port`, `1.2.3.4:25`, `[::1]:25` (port 25 when absent).
    pub fn parse(text: &str) -> Result<NextHop, NextHopError> {
        let bad = || NextHopError(text.to_string());
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().map_err(|_| bad())?,
                None if after.is_empty() => 25,
                None => return Err(bad()),
            };
            (host.to_string(), port)
        } else if let Some((host, port)) = text.rsplit_once(':') {
            (host.to_string(), port.parse().map_err(|_| bad())?)
        } else {
            (text.to_string(), 25)
        };
        let valid_host = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid_host || port == 0 {
            return Err(bad());
        }
        Ok(NextHop {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
        })
    }
}

/// How to reach a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Explicit next hops (or one smart host), tried in order.
    Hops(Vec<NextHop>),
    /// MX lookup for this domain.
    Mx(String),
    /// Local delivery into this Maildir (no SMTP).
    Maildir(PathBuf),
}

/// The destination a recipient belongs to, with the route's delivery settings.
#[derive(Debug, Clone)]
pub struct Destination {
    pub target: Target,
    /// The fixed TLS mode, used when `tls_order` is empty.
    pub tls: OutboundTls,
    /// Policy sources tried in order for each next hop (DANE, MTA-STS, opportunistic);
    /// empty: `tls` alone decides.
    pub tls_order: Vec<PolicySource>,
    pub ca_file: Option<PathBuf>,
    pub max_connections: usize,
    pub max_messages_per_connection: usize,
}

impl Destination {
    /// The name operators see (`queue destinations`, logs).
    pub fn name(&self) -> String {
        match &self.target {
            Target::Hops(hops) => hops
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(","),
            Target::Mx(domain) => domain.clone(),
            Target::Maildir(dir) => format!("maildir:{}", dir.display()),
        }
    }
}

pub struct Router {
    routes: Vec<(RouteConfig, Option<Vec<NextHop>>)>,
    default_connections: usize,
    mx_order: Vec<PolicySource>,
}

/// The policy order for a route's `tls` (see `RouteConfig::tls`): `dane` and `mta-sts` fall
/// back to opportunistic, an absent `tls` on MX delivery follows `[tls_policy] mx_order`.
fn tls_order(
    tls: Option<OutboundTls>,
    by_mx: bool,
    mx_order: &[PolicySource],
) -> Vec<PolicySource> {
    match tls {
        Some(OutboundTls::Dane) => vec![PolicySource::Dane, PolicySource::Opportunistic],
        Some(OutboundTls::MtaSts) => vec![PolicySource::MtaSts, PolicySource::Opportunistic],
        None if by_mx => mx_order.to_vec(),
        _ => Vec::new(),
    }
}

impl Router {
    /// Builds the router; next hops were validated with the config, so parse errors here are
    /// skipped (the config loader already reported them).
    pub fn new(config: &Config) -> Router {
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let hops: Vec<NextHop> = route
                    .smart_host
                    .iter()
                    .chain(route.next_hops.iter())
                    .filter_map(|h| NextHop::parse(h).ok())
                    .collect();
                (route.clone(), (!hops.is_empty()).then_some(hops))
            })
            .collect();
        Router {
            routes,
            default_connections: 20,
            mx_order: config.tls_policy.mx_order.clone(),
        }
    }

    /// The destination for a recipient domain (lower-case, no trailing dot).
    pub fn destination(&self, domain: &str) -> Destination {
        let matched = self.routes.iter().find(|(route, _)| {
            route.domains.iter().any(|d| d == "*") || domain_listed(&route.domains, domain)
        });
        match matched {
            Some((route, hops)) => {
                let target = match (hops, &route.maildir) {
                    (_, Some(dir)) => Target::Maildir(dir.clone()),
                    (Some(hops), None) => Target::Hops(hops.clone()),
                    (None, None) => Target::Mx(domain.to_string()),
                };
                let by_mx = matches!(target, Target::Mx(_));
                Destination {
                    tls_order: tls_order(route.tls, by_mx, &self.mx_order),
                    target,
                    tls: route.tls.unwrap_or_default(),
                    ca_file: route.ca_file.clone(),
                    max_connections: route.max_connections.max(1),
                    max_messages_per_connection: route.max_messages_per_connection.max(1),
                }
            }
            None => Destination {
                target: Target::Mx(domain.to_string()),
                tls: OutboundTls::Opportunistic,
                tls_order: self.mx_order.clone(),
                ca_file: None,
                max_connections: self.default_connections,
                max_messages_per_connection: 100,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hop_forms() {
        assert_eq!(
            NextHop::parse("10.1.0.5:2525"),
            Ok(NextHop {
                host: "10.1.0.5".into(),
                port: 2525
            })
        );
        assert_eq!(NextHop::parse("Mail.Example.COM").map(|h| h.port), Ok(25));
        assert_eq!(NextHop::parse("[::1]:26").map(|h| h.host), Ok("::1".into()));
        assert!(NextHop::parse("bad host:25").is_err());
        assert!(NextHop::parse("host:0").is_err());
        assert!(NextHop::parse("[::1]x").is_err());
    }

    #[test]
    fn first_matching_route_wins() {
        let text = r#"
[server]
hostname = "mx.test"
spool_dir = "/tmp/s"
control_socket = "/tmp/c"
[[listener]]
address = "127.0.0.1:25"
role = "mx"
[relay]
domains = ["example.com"]
[[route]]
domains = ["example.com"]
next_hops = ["10.1.0.5:25", "10.1.0.6"]
[[route]]
domains = ["*"]
smart_host = "relay.isp.example:587"
"#;
        let config = crate::config::load_str(text, "t", std::path::Path::new("/")).expect("valid");
        let router = Router::new(&config);
        let inbound = router.destination("example.com");
        assert_eq!(inbound.name(), "10.1.0.5:25,10.1.0.6:25");
        let outbound = router.destination("other.net");
        assert_eq!(outbound.name(), "relay.isp.example:587");
        config_without_routes_uses_mx();
    }

    fn config_without_routes_uses_mx() {
        let router = Router::new(&crate::config::builtin_default());
        assert_eq!(
            router.destination("other.net").target,
            Target::Mx("other.net".into())
        );
    }
}
