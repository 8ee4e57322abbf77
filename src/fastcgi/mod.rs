//! FastCGI: the record codec, CGI params, the CGI response head, spawning backends the
//! lighttpd way, and the worker-side client.

pub mod cgi_head;
pub mod params;
pub mod pool;
pub mod record;
pub mod rules;
pub mod spawn;
pub mod spawn_backends;
#[cfg(test)]
mod spawn_tests;
