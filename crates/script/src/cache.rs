//! A tiny least-recently-used map for compiled scripts.
//!
//! Written by hand because the needs are small (a few hundred entries,
//! eviction only on insert) and it avoids another dependency.

use std::collections::HashMap;
use std::hash::Hash;

/// Bounded map that evicts the least recently used entry when full.
///
/// Lookups are O(1); eviction scans all entries, which is fine for the few
/// hundred entries an engine keeps and only happens on a cache miss, which
/// already costs a compile.
pub(crate) struct LruCache<K, V> {
    map: HashMap<K, (V, u64)>,
    capacity: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V> LruCache<K, V> {
    /// Creates an empty cache holding at most `capacity` entries (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        LruCache {
            map: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    /// Returns the entry for `key` and marks it as most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(v, used)| {
            *used = tick;
            v
        })
    }

    /// Inserts `value`, evicting the least recently used entry if needed.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.tick += 1;
        let full = !self.map.contains_key(&key) && self.map.len() >= self.capacity;
        let oldest = full
            .then(|| self.map.iter().min_by_key(|(_, (_, used))| *used))
            .flatten()
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            self.map.remove(&oldest);
        }
        self.map.insert(key, (value, self.tick));
    }

    /// Whether `key` is cached, without marking it as used.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Removes and returns the least recently used entry.
    pub(crate) fn pop_lru(&mut self) -> Option<(K, V)> {
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone())?;
        self.map.remove(&oldest).map(|(v, _)| (oldest, v))
    }

    /// Drops every entry whose key fails `keep`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.map.retain(|k, _| keep(k));
    }

    /// Number of entries currently held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops every entry.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::LruCache;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = LruCache::new(2);
        c.insert(1, "a");
        c.insert(2, "b");
        assert_eq!(c.get(&1).map(|v| *v), Some("a"));
        c.insert(3, "c");
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1).map(|v| *v), Some("a"));
        assert_eq!(c.get(&3).map(|v| *v), Some("c"));
        assert_eq!(c.len(), 2);
    }
}
