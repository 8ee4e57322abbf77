//! Watcher.
