//! Unknown-recipient counts per client address: the directory-harvest signal.
//!
//! Each 550 5.1.1 is recorded; `record` answers how many the address produced within the
//! window. Flow control turns that into a kernel block; `status` shows the busiest addresses.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bounds memory under a flood of distinct addresses: the oldest entries are dropped first.
const MAX_TRACKED: usize = 100_000;

pub struct HarvestTracker {
    window: Duration,
    hits: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl HarvestTracker {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Records one unknown recipient from `client`; returns the count within the window.
    pub fn record(&self, client: IpAddr) -> usize {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        if hits.len() >= MAX_TRACKED && !hits.contains_key(&client) {
            let window = self.window;
            hits.retain(|_, times| times.back().is_some_and(|t| now - *t < window));
        }
        let times = hits.entry(client).or_default();
        while times.front().is_some_and(|t| now - *t >= self.window) {
            times.pop_front();
        }
        times.push_back(now);
        times.len()
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
}
