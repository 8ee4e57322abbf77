-- PHP through php-cgi processes that luahttpd spawns and supervises (the lighttpd way).
--   apt-get install php-cgi        (Debian; any php-cgi binary works)
--   luahttpd -t -c examples/php.lua && luahttpd -c examples/php.lua
--   curl http://127.0.0.1:8080/             (index.php)
--   curl http://127.0.0.1:8080/index.php/some/path?x=1

server {
  listen = "127.0.0.1:" .. (os.getenv("PORT") or "8080"),
  workers = 2,
  root = "php-www",
  index = { "index.php", "index.html" },
}

fastcgi "php" {
  spawn = os.getenv("PHP_CGI") or "/usr/bin/php-cgi",
  procs = 4,                          -- php-cgi processes, each serving one request at a time
  socket = "unix:/tmp/luahttpd-php.sock",  -- proc i listens on /tmp/luahttpd-php.sock-i
  env = {
    PHP_FCGI_CHILDREN = "0",          -- no PHP-side process manager: luahttpd supervises
    PHP_FCGI_MAX_REQUESTS = "500",    -- a proc exits after 500 requests; luahttpd respawns it
  },
  extensions = { ".php" },
  check_local = true,                 -- 404 without asking PHP when the script does not exist
  keepalive = true,                   -- reuse connections to the procs
}
