//! The userspace side of the same policy the XDP program enforces: a per-source bucket
//! (IPv4 /32, IPv6 /64) over new connections, checked at accept, and a blocklist with expiry.
//!
//! The bucket is GCRA, exactly as in the kernel program, so the two modes admit the same
//! connections: `burst` at once, then one per `1/rate` seconds. Memory is bounded: at
//! `MAX_SOURCES` the source seen longest ago is forgotten (a forgotten source starts a full
//! bucket), so a flood of distinct sources cannot reset the bucket of an active one.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::bounded::BoundedMap;

const MAX_SOURCES: usize = 262_144;

/// One source's bucket state and counts, as the kernel keeps them.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tat_ns: u64,
    passed: u64,
    dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Pass,
    RateLimited,
    Blocked,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockedSource {
    pub network: String,
    /// Seconds left; None = until unblocked.
    pub expires_in: Option<u64>,
    pub hits: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceCount {
    pub source: String,
    pub passed: u64,
    pub dropped: u64,
}

/// The source key: the /64 of an IPv6 address, the IPv4 address itself.
pub fn source_network(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::from(ip),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 64)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(ip)),
    }
}

pub struct Limiter {
    interval_ns: u64,
    burst_ns: u64,
    buckets: BoundedMap<IpNet, Bucket>,
    /// Blocked network -> (expiry in monotonic ns or 0 = never, hits).
    blocks: HashMap<IpNet, (u64, u64)>,
}

impl Limiter {
    pub fn new(rate: u32, burst: u32) -> Self {
        let mut limiter = Self {
            interval_ns: 0,
            burst_ns: 0,
            buckets: BoundedMap::new(MAX_SOURCES),
            blocks: HashMap::new(),
        };
        limiter.set_rate(rate, burst);
        limiter
    }

    /// New rate and burst (a reload); the sources' buckets and the blocks are kept.
    pub fn set_rate(&mut self, rate: u32, burst: u32) {
        self.interval_ns = if rate == 0 {
            0
        } else {
            1_000_000_000 / u64::from(rate)
        };
        self.burst_ns = self.interval_ns * u64::from(burst.max(1));
    }

    /// Decides about one new connection from `ip` at `now_ns`.
    pub fn admit(&mut self, ip: IpAddr, now_ns: u64) -> Admission {
        if let Some(hits) = self.blocking_entry(ip, now_ns) {
            *hits += 1;
            return Admission::Blocked;
        }
        if self.interval_ns == 0 {
            return Admission::Pass;
        }
        let bucket = self.buckets.touch(source_network(ip), Bucket::default);
        let next = bucket.tat_ns.max(now_ns) + self.interval_ns;
        if next - now_ns > self.burst_ns {
            bucket.dropped += 1;
            return Admission::RateLimited;
        }
        bucket.tat_ns = next;
        bucket.passed += 1;
        Admission::Pass
    }

    fn blocking_entry(&mut self, ip: IpAddr, now_ns: u64) -> Option<&mut u64> {
        self.blocks
            .iter_mut()
            .filter(|(net, (expires, _))| net.contains(&ip) && (*expires == 0 || *expires > now_ns))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, (_, hits))| hits)
    }

    pub fn block(&mut self, network: IpNet, expires_ns: u64) {
        self.blocks.insert(network, (expires_ns, 0));
    }

    pub fn unblock(&mut self, network: &IpNet) -> bool {
        self.blocks.remove(network).is_some()
    }

    /// Live blocks; expired ones are dropped on the way.
    pub fn blocked(&mut self, now_ns: u64) -> Vec<BlockedSource> {
        self.blocks
            .retain(|_, (expires, _)| *expires == 0 || *expires > now_ns);
        self.blocks
            .iter()
            .map(|(net, (expires, hits))| BlockedSource {
                network: net.to_string(),
                expires_in: (*expires != 0).then(|| (expires - now_ns).div_ceil(1_000_000_000)),
                hits: *hits,
            })
            .collect()
    }

    pub fn top(&self, limit: usize) -> Vec<SourceCount> {
        let mut all: Vec<SourceCount> = self
            .buckets
            .iter()
            .map(|(net, b)| SourceCount {
                source: net.to_string(),
                passed: b.passed,
                dropped: b.dropped,
            })
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse((s.dropped, s.passed)));
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn burst_then_rate() {
        let mut limiter = Limiter::new(2, 5);
        let a = ip("192.0.2.7");
        let passed = (0..20)
            .filter(|_| limiter.admit(a, 10 * SECOND) == Admission::Pass)
            .count();
        assert_eq!(passed, 5);
        // One second later two more tokens have arrived.
        let later = (0..20)
            .filter(|_| limiter.admit(a, 11 * SECOND) == Admission::Pass)
            .count();
        assert_eq!(later, 2);
        // Another source has its own bucket.
        assert_eq!(limiter.admit(ip("192.0.2.8"), 11 * SECOND), Admission::Pass);
    }

    #[test]
    fn ipv6_shares_a_bucket_per_64() {
        let mut limiter = Limiter::new(1, 1);
        assert_eq!(limiter.admit(ip("2001:db8::1"), SECOND), Admission::Pass);
        assert_eq!(
            limiter.admit(ip("2001:db8::2"), SECOND),
            Admission::RateLimited
        );
        assert_eq!(
            limiter.admit(ip("2001:db8:0:1::1"), SECOND),
            Admission::Pass
        );
    }

    #[test]
    fn blocks_expire() {
        let mut limiter = Limiter::new(0, 0);
        let net: IpNet = "198.51.100.0/24".parse().expect("net");
        limiter.block(net, 5 * SECOND);
        assert_eq!(
            limiter.admit(ip("198.51.100.9"), SECOND),
            Admission::Blocked
        );
        assert_eq!(limiter.blocked(SECOND)[0].expires_in, Some(4));
        assert_eq!(
            limiter.admit(ip("198.51.100.9"), 6 * SECOND),
            Admission::Pass
        );
        assert!(limiter.blocked(6 * SECOND).is_empty());
    }
}
