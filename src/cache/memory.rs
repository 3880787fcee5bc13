//! The memory backend: moka, bounded by the answers' bytes (or their count), entries expiring
//! `ttl` after they were stored.

use std::sync::Arc;
use std::time::Duration;

use super::entry::Entry;
use super::key::Key;

/// How the memory backend is bounded.
pub enum Bound {
    Bytes(u64),
    Entries(u64),
}

pub struct Memory {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
}

impl Memory {
    pub fn new(bound: Bound, ttl: Duration) -> Memory {
        let builder = moka::sync::Cache::builder().time_to_live(ttl);
        let entries = match bound {
            Bound::Bytes(max) => builder
                .max_capacity(max)
                .weigher(|_, e: &Arc<Entry>| e.weight())
                .build(),
            Bound::Entries(max) => builder.max_capacity(max).build(),
        };
        Memory { entries }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    pub fn put(&self, key: Key, entry: Entry) {
        self.entries.insert(key, Arc::new(entry));
        // Evictions are applied now, so the bound holds as soon as the entry is in. Only a
        // miss that was answered pays this.
        self.entries.run_pending_tasks();
    }
}
