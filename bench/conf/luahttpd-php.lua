-- luahttpd spawns and supervises the php-cgi processes itself; proc i
-- listens on php.sock-i.
fastcgi "php" {
  spawn = "@PHP_CGI@",
  procs = @PHP_PROCS@,
  socket = "unix:@DIR@/php.sock",
  env = { PHP_FCGI_CHILDREN = "0", PHP_FCGI_MAX_REQUESTS = "@PHP_MAX_REQUESTS@" },
  extensions = { ".php" },
  keepalive = @PHP_KEEPALIVE@,
}
