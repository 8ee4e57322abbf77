//! Content-Type from the file name's suffix.

use std::collections::{BTreeMap, HashMap};

/// Suffix → Content-Type, the built-in table with the config's overrides merged over it.
#[derive(Debug, Clone)]
pub struct MimeTable {
    map: HashMap<String, String>,
}

impl MimeTable {
    /// The built-in table with `overrides` (lowercased ".ext" → type) merged over it.
    pub fn new(overrides: &BTreeMap<String, String>) -> Self {
        let _ = overrides;
        todo!()
    }

    /// The full Content-Type for `name` (case-insensitive suffix match; `; charset=utf-8`
    /// added for text types), or `application/octet-stream`.
    pub fn lookup(&self, name: &str) -> &str {
        let _ = (name, &self.map);
        todo!()
    }
}
