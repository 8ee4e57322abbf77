-- PHP through an external php-fpm pool (or any FastCGI server) that luahttpd does not start.
--   apt-get install php-fpm, and in the pool config: listen = 127.0.0.1:9000
--   luahttpd -c examples/php-fpm.lua
-- Several addresses are balanced by least active requests; one that refuses connections is
-- left out for disable_time seconds while the others serve.

server {
  listen = "127.0.0.1:" .. (os.getenv("PORT") or "8080"),
  workers = 2,
  root = "php-www",
  index = { "index.php", "index.html" },
}

fastcgi "php" {
  address = { os.getenv("PHP_FPM") or "127.0.0.1:9000" },  -- or "unix:/run/php/php-fpm.sock"
  extensions = { ".php" },
  -- php-fpm runs scripts by SCRIPT_FILENAME: the root must be the same path for php-fpm.
  check_local = true,
  keepalive = true,
  connect_timeout = 2, read_timeout = 30, disable_time = 1,
}
