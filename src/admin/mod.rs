//! Administration: the shared scoreboard, the admin socket (watcher side), and the REPL client.

pub mod scoreboard;
