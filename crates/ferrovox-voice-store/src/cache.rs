use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::ObjectMeta;

/// What the backend said about a payload object when it was read: if a later HEAD answers
/// differently, the object was replaced in place and the cached bytes no longer stand for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectVersion {
    size: u64,
    e_tag: Option<String>,
    last_modified: DateTime<Utc>,
}

impl ObjectVersion {
    pub(crate) fn of(meta: &ObjectMeta) -> Self {
        ObjectVersion {
            size: meta.size,
            e_tag: meta.e_tag.clone(),
            last_modified: meta.last_modified,
        }
    }
}

/// A verified payload held in memory.
#[derive(Debug, Clone)]
pub(crate) struct CachedPayload {
    pub sha256: String,
    pub version: ObjectVersion,
    pub bytes: Bytes,
}

/// Counters and sizes of the in-memory cache, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub entries: usize,
    /// `get` calls served from memory.
    pub hits: u64,
    /// `get` calls that read the payload from the backend.
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
}

/// Least-recently-used cache bounded by the payloads' total length. Each use stamps the entry
/// with a fresh tick; `order` maps ticks back to ids, so its first entry is the coldest.
#[derive(Debug)]
pub(crate) struct ByteLru {
    capacity: u64,
    used: u64,
    clock: u64,
    entries: HashMap<String, (CachedPayload, u64)>,
    order: BTreeMap<u64, String>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl ByteLru {
    pub(crate) fn new(capacity: u64) -> Self {
        ByteLru {
            capacity,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The entry for `id`, marked as the most recently used.
    pub(crate) fn get(&mut self, id: &str) -> Option<CachedPayload> {
        let tick = self.tick();
        let (payload, stamp) = self.entries.get_mut(id)?;
        self.order.remove(stamp);
        *stamp = tick;
        self.order.insert(tick, id.to_string());
        Some(payload.clone())
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Caches `payload` under `id`, evicting the coldest entries until it fits. A payload larger
    /// than the whole capacity is not cached (and displaces nothing).
    pub(crate) fn insert(&mut self, id: &str, payload: CachedPayload) {
        self.remove(id);
        let size = payload.bytes.len() as u64;
        if size > self.capacity {
            return;
        }
        while self.used + size > self.capacity {
            let Some((_, coldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&coldest) {
                self.used -= old.bytes.len() as u64;
                self.evictions += 1;
            }
        }
        let tick = self.tick();
        self.used += size;
        self.order.insert(tick, id.to_string());
        self.entries.insert(id.to_string(), (payload, tick));
    }

    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self.entries.remove(id) {
            Some((old, stamp)) => {
                self.order.remove(&stamp);
                self.used -= old.bytes.len() as u64;
                true
            }
            None => false,
        }
    }

    pub(crate) fn record_hit(&mut self) {
        self.hits += 1;
    }

    pub(crate) fn record_miss(&mut self) {
        self.misses += 1;
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            capacity_bytes: self.capacity,
            used_bytes: self.used,
            entries: self.entries.len(),
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize) -> CachedPayload {
        CachedPayload {
            sha256: String::new(),
            version: ObjectVersion {
                size: len as u64,
                e_tag: None,
                last_modified: DateTime::<Utc>::MIN_UTC,
            },
            bytes: Bytes::from(vec![0u8; len]),
        }
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut lru = ByteLru::new(250);
        lru.insert("a", payload(100));
        lru.insert("b", payload(100));
        assert!(lru.get("a").is_some());
        lru.insert("c", payload(100));
        assert!(lru.contains("a") && lru.contains("c") && !lru.contains("b"));
        assert_eq!(lru.stats().used_bytes, 200);
        assert_eq!(lru.stats().evictions, 1);
        lru.insert("big", payload(251));
        assert!(!lru.contains("big"));
        assert_eq!(lru.stats().entries, 2);
        lru.insert("d", payload(250));
        assert_eq!(lru.stats().entries, 1);
        assert_eq!(lru.stats().used_bytes, 250);
    }
}
