//! A bounded cache of compiled schemas, keyed by the schema text exactly as sent.
//!
//! Agents send the same few schemas with every event; compiling one costs far more than
//! validating against it. The cache holds at most [`SchemaCache::MAX_ENTRIES`] schemas and
//! [`SchemaCache::MAX_BYTES`] bytes of memory, each schema weighed by a bound of what its
//! compiled form holds ([`CompiledSchema::memory_bound`]: a compiled schema can be a thousand
//! times larger than its text, mostly for its regular expressions); schemas heavier than
//! [`SchemaCache::MAX_SCHEMA_BYTES`] are compiled every time and never kept. When full, the
//! least recently used entry goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::schema::CompiledSchema;

/// See the module doc.
pub struct SchemaCache {
    inner: Mutex<Inner>,
}

struct Inner {
    map: HashMap<String, Entry>,
    bytes: usize,
    tick: u64,
}

struct Entry {
    schema: Arc<CompiledSchema>,
    /// What it counts against [`SchemaCache::MAX_BYTES`].
    weight: usize,
    last_used: u64,
}

impl Default for SchemaCache {
    fn default() -> Self {
        SchemaCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
        }
    }
}

impl SchemaCache {
    /// The most schemas kept.
    pub const MAX_ENTRIES: usize = 1024;
    /// The most memory the kept schemas may hold, in bytes (as bounded by
    /// [`CompiledSchema::memory_bound`]).
    pub const MAX_BYTES: usize = 128 * 1024 * 1024;
    /// Schemas whose bound is larger than this are not cached.
    pub const MAX_SCHEMA_BYTES: usize = 16 * 1024 * 1024;

    /// The compiled form of the schema whose text is `text` and value is `value`, compiled at
    /// most once while it stays in the cache. Errors (INVALID_SCHEMA messages) are not cached.
    pub fn get_or_compile(&self, text: &str, value: &Value) -> Result<Arc<CompiledSchema>, String> {
        if let Some(hit) = self.lookup(text) {
            return Ok(hit);
        }
        // Compile outside the lock: a slow compile must not hold up other requests.
        let compiled = Arc::new(CompiledSchema::compile(value)?);
        let weight = compiled.memory_bound(text.len());
        if weight <= Self::MAX_SCHEMA_BYTES
            && let Ok(mut inner) = self.inner.lock()
        {
            inner.insert(text, Arc::clone(&compiled), weight);
        }
        Ok(compiled)
    }

    fn lookup(&self, text: &str) -> Option<Arc<CompiledSchema>> {
        let mut inner = self.inner.lock().ok()?;
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.map.get_mut(text)?;
        entry.last_used = tick;
        Some(Arc::clone(&entry.schema))
    }

    /// How many schemas are cached.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.map.len())
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the cached schemas count against [`SchemaCache::MAX_BYTES`].
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.bytes)
    }
}

impl Inner {
    fn insert(&mut self, text: &str, schema: Arc<CompiledSchema>, weight: usize) {
        if self.map.contains_key(text) {
            return;
        }
        while !self.map.is_empty()
            && (self.map.len() >= SchemaCache::MAX_ENTRIES
                || self.bytes + weight > SchemaCache::MAX_BYTES)
        {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(entry) = oldest.and_then(|key| self.map.remove(&key)) {
                self.bytes -= entry.weight;
            }
        }
        self.tick += 1;
        self.bytes += weight;
        self.map.insert(
            text.to_string(),
            Entry {
                schema,
                weight,
                last_used: self.tick,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_seen_before_is_not_compiled_again() {
        let cache = SchemaCache::default();
        let v = json!({"type": "object"});
        let a = cache
            .get_or_compile("{\"type\":\"object\"}", &v)
            .expect("compiles");
        let b = cache
            .get_or_compile("{\"type\":\"object\"}", &v)
            .expect("compiles");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_recently_used_entries() {
        let cache = SchemaCache::default();
        let hot = "{\"title\":\"hot\"}";
        let hot_value = json!({"title": "hot"});
        let first = cache.get_or_compile(hot, &hot_value).expect("compiles");
        for i in 0..(SchemaCache::MAX_ENTRIES * 2) {
            let v = json!({"title": format!("s{i}")});
            cache.get_or_compile(&v.to_string(), &v).expect("compiles");
            cache.get_or_compile(hot, &hot_value).expect("compiles");
        }
        assert!(cache.len() <= SchemaCache::MAX_ENTRIES);
        let again = cache.get_or_compile(hot, &hot_value).expect("compiles");
        assert!(Arc::ptr_eq(&first, &again), "the hot schema stayed cached");
    }

    #[test]
    fn invalid_schemas_are_not_cached() {
        let cache = SchemaCache::default();
        assert!(
            cache
                .get_or_compile("{\"type\":12}", &json!({"type": 12}))
                .is_err()
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn huge_schemas_are_compiled_but_not_kept() {
        let cache = SchemaCache::default();
        let text = format!(
            "{{\"title\":\"{}\"}}",
            "x".repeat(SchemaCache::MAX_SCHEMA_BYTES / 16)
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert!(cache.get_or_compile(&text, &v).is_ok());
        assert!(cache.is_empty());
    }

    /// A schema's regular expressions weigh far more than its text (`{"pattern": "\\w{300}"}`
    /// compiles to about 85 KiB, 200 KiB after use). Distinct such schemas do not pile up.
    #[test]
    fn the_cache_is_bounded_by_what_compiled_schemas_hold_not_by_their_text() {
        let cache = SchemaCache::default();
        for i in 0..20 {
            let patterns: Vec<Value> = (0..60)
                .map(|j| json!({"pattern": format!("^p{i}_{j}$")}))
                .collect();
            let v = json!({"allOf": patterns});
            let text = v.to_string();
            assert!(text.len() < 2 * 1024);
            cache.get_or_compile(&text, &v).expect("compiles");
            assert!(cache.bytes() <= SchemaCache::MAX_BYTES, "{}", cache.bytes());
        }
        assert!(cache.len() < 20, "{}", cache.len());
        assert!(!cache.is_empty());
    }
}
