//! Administration: the shared scoreboard, the admin socket (watcher side), and the REPL client.

pub mod client;
pub mod format;
pub mod protocol;
pub mod scoreboard;
pub mod server;
