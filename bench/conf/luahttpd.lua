-- luahttpd config of compare.sh (rendered by render() there: each placeholder between @ signs is replaced).
-- PHP is luahttpd-php.lua or nothing, ROUTE luahttpd-route.lua or nothing.
-- LISTEN is "127.0.0.1:PORT", or a { { "127.0.0.1:PORT", tls = true } } table with
-- TLS the tls = {...} field for the tls_* scenarios (else empty).
server {
  listen = @LISTEN@,
  @TLS@
  workers = @WORKERS@,
  root = "@WWW@",
  index = { "index.html" },
  access_log = false,
  error_log = "@DIR@/error.log",
  limits = { keepalive_requests = @KEEPALIVE_REQUESTS@, connections = @MAX_CONNECTIONS@ },
  timeouts = { keepalive_idle = @IDLE_TIMEOUT@ },
  -- js_gzip: gzip only (as nginx's gzip), at the level the others use.
  compress = { encodings = { "gzip" }, level = @GZIP_LEVEL@, min_size = 256,
               types = { "text/javascript" } },
}
@PHP@
@ROUTE@
