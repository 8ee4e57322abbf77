//! Administration: the shared scoreboard, the admin socket (watcher side), the admin evaluator
//! process that runs REPL chunks, and the REPL client.

pub mod client;
pub mod evaluator;
pub mod format;
pub mod link;
pub mod protocol;
pub mod sandbox;
pub mod scoreboard;
pub mod server;
pub mod wire;
