//! CGI (RFC 3875): which file a request runs and how its process is started. The worker's
//! side of a run (pipes in its event loop, timeouts, the response) is src/worker/cgi.rs; the
//! environment and the response head are FastCGI's (`fastcgi::params`, `fastcgi::cgi_head`).

pub mod script;
pub mod spawn;
