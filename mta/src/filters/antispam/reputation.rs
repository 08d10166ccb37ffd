//! Reputation: DNS blocklists for the client address, URI blocklists for link domains, the
//! administrator's allow and block lists, and greylisting.
//!
//! # Contract
//! - DNSBL query: the client's address reversed (IPv4 octets, IPv6 nibbles) under the zone;
//!   any A record in 127.0.0.0/8 means listed. URIBL query: the link's registrable domain
//!   under the zone. No answer, NXDOMAIN or a DNS failure mean "not listed" (a blocklist that
//!   is down must not stop mail), and every lookup goes through the configured resolver.
//! - Greylisting keys on (client /24 or /64, sender, recipient). A triplet seen for the first
//!   time is deferred (451 4.7.1); retried after `delay` it passes, and then the client
//!   network passes instantly for [`PASSED_TTL`]. Memory is bounded ([`GREYLIST_MAX`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::config::{domain_listed, ListEntry};
use crate::route::Resolver;

/// Entries kept per table; the oldest half is dropped when full.
pub const GREYLIST_MAX: usize = 100_000;
/// How long a network that passed greylisting once passes without delay.
pub const PASSED_TTL: Duration = Duration::from_secs(36 * 24 * 3600);
/// A triplet that is not retried within this time starts over.
const TRIPLET_TTL: Duration = Duration::from_secs(24 * 3600);

/// The name to query for `ip` in a DNSBL `zone`.
pub fn dnsbl_name(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str(zone);
            name
        }
    }
}

/// Listed when any answer is in 127.0.0.0/8 (other answers are errors of the list).
pub async fn listed(resolver: &dyn Resolver, name: &str) -> bool {
    match resolver.addresses(name).await {
        Ok(addresses) => addresses
            .iter()
            .any(|a| matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 127)),
        Err(_) => false,
    }
}

/// An allow or block list.
#[derive(Debug, Clone, Default)]
pub struct SenderList {
    entries: Vec<ListEntry>,
}

impl SenderList {
    pub fn new(entries: Vec<ListEntry>) -> SenderList {
        SenderList { entries }
    }

    /// The entry that matches the client address or the sender (envelope or From:).
    pub fn matches(&self, client: IpAddr, senders: &[&str]) -> bool {
        self.entries.iter().any(|entry| match entry {
            ListEntry::Network(net) => net.contains(&client),
            ListEntry::Address(address) => senders.iter().any(|s| s.eq_ignore_ascii_case(address)),
            ListEntry::Domain(domain) => senders.iter().any(|s| {
                let d = s
                    .rsplit_once('@')
                    .map_or("", |(_, d)| d)
                    .to_ascii_lowercase();
                !d.is_empty() && domain_listed(std::slice::from_ref(domain), &d)
            }),
        })
    }
}

/// Whether a triplet may pass now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greylisted {
    Pass,
    Defer,
}

pub struct Greylist {
    delay: Duration,
    triplets: Mutex<HashMap<(IpNet, String, String), Instant>>,
    passed: Mutex<HashMap<IpNet, Instant>>,
}

/// The client's /24 (IPv4) or /64 (IPv6).
pub fn client_network(ip: IpAddr) -> IpNet {
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

impl Greylist {
    pub fn new(delay: Duration) -> Greylist {
        Greylist {
            delay,
            triplets: Mutex::new(HashMap::new()),
            passed: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, client: IpAddr, sender: &str, recipient: &str, now: Instant) -> Greylisted {
        let network = client_network(client);
        {
            let passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
            if passed
                .get(&network)
                .is_some_and(|at| now.duration_since(*at) < PASSED_TTL)
            {
                return Greylisted::Pass;
            }
        }
        let key = (
            network,
            sender.to_ascii_lowercase(),
            recipient.to_ascii_lowercase(),
        );
        let mut triplets = self.triplets.lock().unwrap_or_else(|p| p.into_inner());
        let first = match triplets.get(&key) {
            Some(first) if now.duration_since(*first) < TRIPLET_TTL => *first,
            _ => {
                bound(&mut triplets, now);
                triplets.insert(key, now);
                return Greylisted::Defer;
            }
        };
        if now.duration_since(first) < self.delay {
            return Greylisted::Defer;
        }
        triplets.remove(&key);
        drop(triplets);
        let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
        bound(&mut passed, now);
        passed.insert(network, now);
        Greylisted::Pass
    }
}

fn bound<K: Eq + std::hash::Hash + Clone>(table: &mut HashMap<K, Instant>, now: Instant) {
    if table.len() < GREYLIST_MAX {
        return;
    }
    let mut ages: Vec<Duration> = table.values().map(|at| now.duration_since(*at)).collect();
    ages.sort_unstable();
    let cut = ages[ages.len() / 2];
    table.retain(|_, at| now.duration_since(*at) < cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsbl_names() {
        assert_eq!(
            dnsbl_name("192.0.2.1".parse().expect("literal"), "bl.example"),
            "1.2.0.192.bl.example"
        );
        let v6 = dnsbl_name("2001:db8::1".parse().expect("literal"), "bl.example");
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"));
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.bl.example"));
    }

    #[test]
    fn greylist_defers_then_passes_the_network() {
        let grey = Greylist::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().expect("literal");
        assert_eq!(grey.check(ip, "a@x", "b@y", t0), Greylisted::Defer);
        assert_eq!(
            grey.check(ip, "a@x", "b@y", t0 + Duration::from_secs(10)),
            Greylisted::Defer
        );
        assert_eq!(
            grey.check(ip, "a@x", "b@y", t0 + Duration::from_secs(61)),
            Greylisted::Pass
        );
        // Same /24, another triplet: the network passed before, so it passes at once.
        let neighbour: IpAddr = "198.51.100.200".parse().expect("literal");
        assert_eq!(
            grey.check(neighbour, "c@x", "d@y", t0 + Duration::from_secs(62)),
            Greylisted::Pass
        );
        let other: IpAddr = "203.0.113.1".parse().expect("literal");
        assert_eq!(grey.check(other, "a@x", "b@y", t0), Greylisted::Defer);
    }

    #[test]
    fn sender_lists() {
        let list = SenderList::new(vec![
            ListEntry::Network("10.0.0.0/8".parse().expect("literal")),
            ListEntry::Address("boss@partner.example".into()),
            ListEntry::Domain(".friends.example".into()),
        ]);
        let outside: IpAddr = "192.0.2.1".parse().expect("literal");
        assert!(list.matches("10.1.2.3".parse().expect("literal"), &[]));
        assert!(list.matches(outside, &["Boss@Partner.example"]));
        assert!(list.matches(outside, &["x@mail.friends.example"]));
        assert!(!list.matches(outside, &["x@other.example"]));
    }
}
