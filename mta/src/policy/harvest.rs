//! Unknown-recipient counts per client address: the directory-harvest signal.
//!
//! Each 550 5.1.1 is recorded; `record` answers how many the address produced within the
//! window. Flow control turns that into a kernel block; `status` shows the busiest addresses.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bounded::BoundedMap;

/// A hard bound on the addresses tracked: a flood of distinct addresses evicts the one quiet
/// longest, so memory stays bounded whatever the attacker does.
const MAX_TRACKED: usize = 100_000;
/// Events remembered per address: thresholds are far below, so the count stays exact where
/// it matters, and one address cannot grow its own list without end.
const MAX_EVENTS_PER_ADDRESS: usize = 10_000;

pub struct HarvestTracker {
    window: Duration,
    hits: Mutex<BoundedMap<IpAddr, VecDeque<Instant>>>,
}

impl HarvestTracker {
    pub fn new(window: Duration) -> Self {
        Self::with_capacity(window, MAX_TRACKED)
    }

    pub fn with_capacity(window: Duration, addresses: usize) -> Self {
        Self {
            window,
            hits: Mutex::new(BoundedMap::new(addresses)),
        }
    }

    /// Records one unknown recipient from `client`; returns the count within the window.
    pub fn record(&self, client: IpAddr) -> usize {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let times = hits.touch(client, VecDeque::new);
        while times.front().is_some_and(|t| now - *t >= self.window) {
            times.pop_front();
        }
        if times.len() >= MAX_EVENTS_PER_ADDRESS {
            times.pop_front();
        }
        times.push_back(now);
        times.len()
    }

    /// Addresses tracked now (at most the capacity).
    pub fn tracked(&self) -> usize {
        self.hits.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Addresses with unknown recipients within the window, busiest first.
    pub fn top(&self, limit: usize) -> Vec<(IpAddr, usize)> {
        let now = Instant::now();
        let hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: Vec<(IpAddr, usize)> = hits
            .iter()
            .map(|(ip, times)| {
                let recent = times.iter().filter(|t| now - **t < self.window).count();
                (*ip, recent)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        counts.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        counts.truncate(limit);
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_window() {
        let tracker = HarvestTracker::new(Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(tracker.record(a), 1);
        assert_eq!(tracker.record(a), 2);
        assert_eq!(tracker.record(b), 1);
        assert_eq!(tracker.top(1), vec![(a, 2)]);
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_bound() {
        let tracker = HarvestTracker::with_capacity(Duration::from_secs(60), 1000);
        let busy: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..5 {
            tracker.record(busy);
        }
        for i in 0..50_000u32 {
            tracker.record(IpAddr::from(i.to_be_bytes()));
            if i % 100 == 0 {
                tracker.record(busy); // recently active: survives the flood
            }
        }
        assert_eq!(tracker.tracked(), 1000);
        assert!(
            tracker.top(1)[0].0 == busy,
            "the active address was evicted"
        );
    }
}
