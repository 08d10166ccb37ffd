//! In XDP mode: which accepted connections the kernel program did not judge.
//!
//! The program counts, per source (IPv4 /32, IPv6 /64), the SYNs it passed. A connection
//! whose SYN it judged shows up as one more passed SYN than the connections from that source
//! already accounted for; a connection whose SYN it never saw (an interface it is not
//! attached to, a header stack deeper than it parses, a fragmented TCP header) does not, and
//! is held to the userspace bucket instead. A retransmitted SYN counts twice in the kernel,
//! so a source may get one unjudged connection uncharged per retransmission: slack in the
//! source's favour, never a refusal of a judged connection. Memory is bounded (oldest
//! sources forgotten; a forgotten source starts from the kernel's current count).

use std::net::IpAddr;

use ipnet::IpNet;

use super::limiter::source_network;
use crate::bounded::BoundedMap;

const MAX_SOURCES: usize = 262_144;

pub struct Judged {
    /// Per source: the connections accepted so far whose SYN the kernel had passed.
    accounted: BoundedMap<IpNet, u64>,
}

impl Judged {
    pub fn new() -> Self {
        Self {
            accounted: BoundedMap::new(MAX_SOURCES),
        }
    }

    /// Whether the connection from `ip` just accepted was judged by the kernel, given the
    /// program's passed count for its source now. A count below what was accounted means the
    /// program's entry was evicted and started again: its count is taken as the new base.
    pub fn by_kernel(&mut self, ip: IpAddr, kernel_passed: u64) -> bool {
        let accounted = self.accounted.touch(source_network(ip), || 0);
        if kernel_passed > *accounted {
            *accounted += 1;
            return true;
        }
        if kernel_passed < *accounted {
            *accounted = kernel_passed;
            return kernel_passed > 0;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn judged_connections_match_passed_syns_one_to_one() {
        let mut judged = Judged::new();
        let a = ip("192.0.2.1");
        // Never seen by the kernel: unjudged.
        assert!(!judged.by_kernel(a, 0));
        // Two SYNs passed before either connection was accepted: both judged.
        assert!(judged.by_kernel(a, 2));
        assert!(judged.by_kernel(a, 2));
        // A third connection the kernel did not count.
        assert!(!judged.by_kernel(a, 2));
        assert!(judged.by_kernel(a, 3));
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_apart() {
        let mut judged = Judged::new();
        assert!(judged.by_kernel(ip("2001:db8::1"), 1));
        assert!(
            !judged.by_kernel(ip("2001:db8::2"), 1),
            "same /64, count already used"
        );
        assert!(judged.by_kernel(ip("2001:db8:0:1::1"), 1));
    }

    #[test]
    fn an_evicted_kernel_entry_restarts_the_base() {
        let mut judged = Judged::new();
        let a = ip("198.51.100.7");
        for passed in 1..=5 {
            assert!(judged.by_kernel(a, passed));
        }
        assert!(judged.by_kernel(a, 1), "the kernel's entry was recreated");
        assert!(!judged.by_kernel(a, 1));
        assert!(judged.by_kernel(a, 2));
    }
}
