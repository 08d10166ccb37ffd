//! A map with a hard size bound for per-address state (abuse counters, greet passes,
//! callout answers, rate buckets): at capacity, inserting a new key evicts the entry touched
//! longest ago. However many distinct addresses an attacker uses, the table never holds more
//! than `capacity` entries; what is forgotten first is what has been quiet longest.
//!
//! Every access that should count as "recent" goes through `touch` or `insert`; `get` reads
//! without changing the order. Operations are O(log n).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub struct BoundedMap<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, u64)>,
    /// Touch sequence number -> key: the first entry is the oldest.
    order: BTreeMap<u64, K>,
    sequence: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            sequence: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.entries.get(key).map(|(value, _)| value)
    }

    /// The entry for `key`, made the most recent; created with `make` (evicting the oldest
    /// entry when full) if absent.
    pub fn touch(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.sequence += 1;
        let sequence = self.sequence;
        match self.entries.get_mut(&key) {
            Some((_, touched)) => {
                self.order.remove(touched);
                *touched = sequence;
            }
            None => self.evict_for_one(),
        }
        self.order.insert(sequence, key.clone());
        let slot = self
            .entries
            .entry(key)
            .or_insert_with(|| (make(), sequence));
        &mut slot.0
    }

    /// Sets `key` to `value`, making it the most recent.
    pub fn insert(&mut self, key: K, value: V) {
        self.remove(&key);
        self.evict_for_one();
        self.sequence += 1;
        self.order.insert(self.sequence, key.clone());
        self.entries.insert(key, (value, self.sequence));
    }

    fn evict_for_one(&mut self) {
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                return;
            };
            self.entries.remove(&oldest);
        }
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let (value, sequence) = self.entries.remove(key)?;
        self.order.remove(&sequence);
        Some(value)
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let order = &mut self.order;
        self.entries.retain(|key, (value, sequence)| {
            let kept = keep(key, value);
            if !kept {
                order.remove(sequence);
            }
            kept
        });
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(key, (value, _))| (key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_exceeds_capacity_and_evicts_the_least_recently_touched() {
        let mut map = BoundedMap::new(3);
        for key in 0..3 {
            map.insert(key, key * 10);
        }
        *map.touch(0, || 0) += 1; // 0 is now the most recent; 1 the oldest
        map.insert(3, 30);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&1), None, "the oldest entry was not evicted");
        assert_eq!(map.get(&0), Some(&1));
        for key in 100..10_000 {
            map.touch(key, || 0);
            assert!(map.len() <= 3);
        }
        map.retain(|key, _| *key != 9_999);
        assert_eq!(map.len(), 2);
        map.insert(5, 5);
        map.insert(6, 6);
        assert_eq!(map.len(), 3);
        assert_eq!(map.order.len(), 3, "order and entries disagree");
    }
}
