//! Queue ids: 16 hex digits of a strictly increasing microsecond clock.
//!
//! Unique across restarts because the generator starts above both the wall clock and the
//! largest id already in the spool, so even a clock stepped backwards cannot repeat a live id.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl FromStr for QueueId {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        if text.len() != 16 {
            return Err(());
        }
        u64::from_str_radix(text, 16).map(QueueId).map_err(|_| ())
    }
}

impl QueueId {
    /// Arrival time encoded in the id, in seconds since the epoch.
    pub fn unix_seconds(self) -> u64 {
        self.0 / 1_000_000
    }
}

pub(crate) struct IdGenerator {
    last: AtomicU64,
}

impl IdGenerator {
    pub fn starting_above(highest_existing: u64) -> Self {
        Self {
            last: AtomicU64::new(highest_existing),
        }
    }

    pub fn next(&self) -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut current = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = now.max(current + 1);
            match self.last.compare_exchange_weak(
                current,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return QueueId(candidate),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_round_trip() {
        let generator = IdGenerator::starting_above(u64::MAX / 2);
        let a = generator.next();
        let b = generator.next();
        assert!(b > a);
        assert_eq!(a.to_string().parse::<QueueId>(), Ok(a));
        assert!("xyz".parse::<QueueId>().is_err());
    }
}
