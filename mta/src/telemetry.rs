//! What the daemon counts for `/metrics` beyond the state it keeps anyway: every content
//! stage's latency (a histogram per stage), its verdicts (by stage, verdict and the rule or
//! filter that decided), and deliveries by status.
//!
//! One registry per process, recorded on the mail path: a histogram sample is a few atomic
//! adds, a verdict or delivery one short lock. Label sets come from configuration (stage and
//! rule names) and fixed words, never from message text, and are capped anyway: past
//! `MAX_SERIES` a new label set is counted under `other`, so a misbehaving milter that names
//! a new "rule" per message cannot grow the daemon's memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: a built-in check takes microseconds, a
/// clamd or milter round trip milliseconds, a timeout seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// Distinct label sets per family at most (then `other`).
const MAX_SERIES: usize = 512;

/// A delivery attempt's result for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryStatus {
    Sent,
    Deferred,
    Bounced,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Deferred => "deferred",
            DeliveryStatus::Bounced => "bounced",
        }
    }
}

/// Cumulative latency buckets, their sum and count (Prometheus histogram semantics).
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A histogram as read for one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations at or below it), cumulative.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(slot) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, slot)| {
                running += slot.load(Ordering::Relaxed);
                (bound, running)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Counters keyed by a label tuple, capped at `MAX_SERIES` tuples.
struct Labelled<K: Ord> {
    series: Mutex<BTreeMap<K, u64>>,
}

impl<K: Ord + Clone> Labelled<K> {
    const fn new() -> Self {
        Labelled {
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn bump(&self, key: K, overflow: impl FnOnce() -> K) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let key = if series.len() >= MAX_SERIES && !series.contains_key(&key) {
            overflow()
        } else {
            key
        };
        *series.entry(key).or_insert(0) += 1;
    }

    fn snapshot(&self) -> Vec<(K, u64)> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// (stage, verdict, decided by).
pub type VerdictKey = (String, &'static str, String);

pub struct Telemetry {
    latency: Mutex<BTreeMap<String, Arc<Histogram>>>,
    verdicts: Labelled<VerdictKey>,
    deliveries: Labelled<DeliveryStatus>,
}

static TELEMETRY: Telemetry = Telemetry {
    latency: Mutex::new(BTreeMap::new()),
    verdicts: Labelled::new(),
    deliveries: Labelled::new(),
};

/// The process's registry.
pub fn telemetry() -> &'static Telemetry {
    &TELEMETRY
}

impl Telemetry {
    /// How long one stage took to answer (or to fail, or to time out).
    pub fn stage_latency(&self, stage: &str, took: Duration) {
        self.histogram(stage).observe(took);
    }

    fn histogram(&self, stage: &str) -> Arc<Histogram> {
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = latency.get(stage) {
            return found.clone();
        }
        let name = if latency.len() >= MAX_SERIES {
            "other"
        } else {
            stage
        };
        latency
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Histogram::new()))
            .clone()
    }

    /// A stage's verdict on a group of recipients (`error` when it failed).
    pub fn verdict(&self, stage: &str, verdict: &'static str, decided_by: &str) {
        let key = (stage.to_string(), verdict, decided_by.to_string());
        self.verdicts
            .bump(key, || ("other".into(), verdict, "other".into()));
    }

    pub fn delivery(&self, status: DeliveryStatus) {
        self.deliveries.bump(status, || status);
    }

    pub fn latencies(&self) -> Vec<(String, HistogramSnapshot)> {
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        latency
            .iter()
            .map(|(stage, h)| (stage.clone(), h.snapshot()))
            .collect()
    }

    pub fn verdicts(&self) -> Vec<(VerdictKey, u64)> {
        self.verdicts.snapshot()
    }

    pub fn deliveries(&self) -> Vec<(DeliveryStatus, u64)> {
        self.deliveries.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_with_sum_and_count() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        let five_ms = s.buckets.iter().find(|(b, _)| *b == 0.005).map(|(_, n)| *n);
        assert_eq!(five_ms, Some(2));
        // Above the last bound: only in +Inf (count), not in any bucket.
        assert_eq!(s.buckets.last().map(|(_, n)| *n), Some(2));
        assert!((s.sum_seconds - 60.00305).abs() < 1e-6, "{}", s.sum_seconds);
    }

    #[test]
    fn label_sets_are_capped_under_other() {
        let counters: Labelled<VerdictKey> = Labelled::new();
        for n in 0..MAX_SERIES + 10 {
            counters.bump(("rules".into(), "reject", format!("rule:{n}")), || {
                ("other".into(), "reject", "other".into())
            });
        }
        let series = counters.snapshot();
        assert_eq!(series.len(), MAX_SERIES + 1);
        let other = series.iter().find(|(k, _)| k.0 == "other").map(|(_, n)| *n);
        assert_eq!(other, Some(10));
    }
}
