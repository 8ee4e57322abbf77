-- A commented luahttpd configuration. Check it with:  luahttpd -t -c examples/site.lua
-- and run it with:                                   luahttpd -c examples/site.lua
--
-- It is real Lua: values may be computed, read from the environment, or split into files
-- with include "conf.d/*.lua". Relative paths are relative to this file's folder.

local port = os.getenv("PORT") or "8080"

server {
  listen = { "127.0.0.1:" .. port },   -- one string or a list; "[::1]:8080", "unix:/path" too
  workers = 2,                        -- prefork worker processes
  root = "www",                       -- the document root
  index = { "index.html" },           -- tried in order for a directory
  server_name = "luahttpd",           -- the Server header
  mime = { [".lua"] = "text/plain" }, -- merged over the built-in table
  error_log = "stderr",               -- or a file path; reopened on SIGHUP
  access_log = false,                 -- a path for the combined log format; false = off
  -- pid_file = "/tmp/luahttpd.pid",
  -- daemon = false,
  limits = { connections = 10000, header_bytes = 8192, keepalive_requests = 1000 },
  timeouts = { read_idle = 60, write_idle = 360, keepalive_idle = 5, graceful = 30 },
}
