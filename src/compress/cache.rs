//! A worker's cache of compressed static variants, so a hot text file is compressed once, not
//! per request. Bounded by bytes; like the file cache it starts over when full rather than
//! tracking recency per hit. An entry is valid only for the identity ETag it was made from, so
//! a changed file is compressed again.

use crate::config::static_opts::Coding;
use std::collections::HashMap;
use std::rc::Rc;

/// What the cache knows of one (path, coding).
#[derive(Debug, Clone)]
pub enum Variant {
    /// The coded bytes.
    Coded(Rc<[u8]>),
    /// Coding does not make this file smaller: send it as it is.
    NoGain,
}

#[derive(Debug)]
struct Entry {
    coding: Coding,
    identity_etag: String,
    variant: Variant,
}

impl Entry {
    fn size(&self) -> usize {
        (match &self.variant {
            Variant::Coded(b) => b.len(),
            Variant::NoGain => 0,
        }) + self.identity_etag.len()
    }
}

/// The cache of one worker: per path, one entry per coding.
#[derive(Debug, Default)]
pub struct VariantCache {
    entries: HashMap<String, Vec<Entry>>,
    bytes: usize,
}

impl VariantCache {
    /// The variant of `path` in `coding` made from the representation tagged `identity_etag`.
    pub fn get(&self, path: &str, coding: Coding, identity_etag: &str) -> Option<Variant> {
        let e = self
            .entries
            .get(path)?
            .iter()
            .find(|e| e.coding == coding)?;
        (e.identity_etag == identity_etag).then(|| e.variant.clone())
    }

    /// Stores a variant, within `limit` bytes in all (a variant larger than `limit` is not kept).
    pub fn put(
        &mut self,
        path: &str,
        coding: Coding,
        identity_etag: &str,
        variant: Variant,
        limit: usize,
    ) {
        let e = Entry {
            coding,
            identity_etag: identity_etag.to_string(),
            variant,
        };
        let size = e.size() + path.len();
        if size > limit {
            return;
        }
        if let Some(list) = self.entries.get_mut(path) {
            if let Some(i) = list.iter().position(|old| old.coding == coding) {
                let old = list.swap_remove(i);
                self.bytes -= old.size() + path.len();
            }
        }
        if self.bytes + size > limit {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.entry(path.to_string()).or_default().push(e);
    }

    /// Bytes held (coded bytes plus keys).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_identity_etag_and_bounded() {
        let mut c = VariantCache::default();
        let b: Rc<[u8]> = vec![1u8; 100].into();
        c.put("/a", Coding::Gzip, "\"1\"", Variant::Coded(b.clone()), 1000);
        assert!(matches!(
            c.get("/a", Coding::Gzip, "\"1\""),
            Some(Variant::Coded(_))
        ));
        assert!(c.get("/a", Coding::Gzip, "\"2\"").is_none());
        assert!(c.get("/a", Coding::Zstd, "\"1\"").is_none());
        // Replacing does not double count.
        c.put("/a", Coding::Gzip, "\"2\"", Variant::Coded(b.clone()), 1000);
        assert_eq!(c.bytes(), 100 + 2 + 3);
        for i in 0..20 {
            c.put(
                &format!("/f{i}"),
                Coding::Gzip,
                "\"1\"",
                Variant::Coded(b.clone()),
                1000,
            );
            assert!(c.bytes() <= 1000);
        }
        // Too big for the limit: not kept.
        c.put(
            "/big",
            Coding::Gzip,
            "\"1\"",
            Variant::Coded(vec![0u8; 2000].into()),
            1000,
        );
        assert!(c.get("/big", Coding::Gzip, "\"1\"").is_none());
    }
}
