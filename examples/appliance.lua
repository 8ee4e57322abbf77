-- A device-style configuration: everything that differs between boxes comes from the
-- environment, optional parts switch on only when what they need is installed, and a
-- maintenance page takes over while a flag file exists.
--
--   luahttpd -t -c examples/appliance.lua
--   LISTEN="127.0.0.1:8080 [::1]:8080" luahttpd -c examples/appliance.lua
--
--   LISTEN            listen addresses, separated by spaces (default 127.0.0.1:8080)
--   WORKERS           worker processes (default 2)
--   PHP_CGI           the php-cgi binary (default /usr/bin/php-cgi); PHP is on only if it exists
--   WWW_ROOT          the document root (default php-www with PHP, else www; relative to here)
--   MAINTENANCE_FLAG  the flag file (default /tmp/luahttpd-maintenance; on a device,
--                     something like /run/luahttpd/maintenance)
--
-- Try it:
--   curl -i http://127.0.0.1:8080/                the site (PHP's index.php, or the welcome page)
--   curl -i http://127.0.0.1:8080/health          200 "ok", also during maintenance
--   touch /tmp/luahttpd-maintenance               within a second, every other path answers
--   curl -i http://127.0.0.1:8080/                503 with the maintenance page and Retry-After
--   rm /tmp/luahttpd-maintenance                  and the site is back within a second

-- Listen addresses: "a b c" → { "a", "b", "c" }.
local listen = {}
for addr in (os.getenv("LISTEN") or "127.0.0.1:8080"):gmatch("%S+") do
  listen[#listen + 1] = addr
end

-- PHP only when its binary is installed (luahttpd -t refuses a spawn program that is missing).
local php_cgi = os.getenv("PHP_CGI") or "/usr/bin/php-cgi"
local have_php = exists(php_cgi)

server {
  listen = listen,
  workers = tonumber(os.getenv("WORKERS") or "2"),
  root = os.getenv("WWW_ROOT") or (have_php and "php-www" or "www"),
  index = have_php and { "index.php", "index.html" } or { "index.html" },
  error_log = "stderr",
}

if have_php then
  fastcgi "php" {
    spawn = php_cgi,
    procs = 2,
    socket = "unix:/tmp/luahttpd-appliance.sock",
    env = { PHP_FCGI_CHILDREN = "0", PHP_FCGI_MAX_REQUESTS = "500" },
    extensions = { ".php" },
  }
end

-- The maintenance answer is built once, here: the page is read at config time (read_file is
-- a config-time helper, relative to this file's folder), so serving it costs no file access.
local page = read_file("maintenance/index.html")
  or "<!DOCTYPE html><title>Maintenance</title><h1>Down for maintenance</h1>\n"
local maintenance = respond(503, page, {
  ["content-type"] = "text/html; charset=utf-8",
  ["retry-after"] = "120",
  ["cache-control"] = "no-store",
})
local healthy = respond(200, "ok\n", { ["cache-control"] = "no-store" })
local no_php = deny(404)

-- Is the flag there? A timer looks once a second, in one worker, and writes the answer into a
-- shared dict that every worker's route reads, so a busy server does one open() per second
-- in all, and the flag applies within a second. fs.read is the request-time read-only file
-- helper (a small local file: fine in a timer); no io is captured from the config.
-- (Without this, the alternative is deciding at config time with exists(flag), which takes a
-- reload (SIGUSR1, or reload() in the admin REPL) to change.)
local flag = os.getenv("MAINTENANCE_FLAG") or "/tmp/luahttpd-maintenance"
shared "appliance" { size = "64k" }
every(1, function()
  local _, err = fs.read(flag, 0)           -- read nothing, just look
  shared.appliance:set("maintenance", err == nil or err == "too large")
end, { worker = "one" })
local function in_maintenance()
  return shared.appliance:get("maintenance") == true
end

route(function(req)
  if req.path == "/health" then return healthy end
  if in_maintenance() then return maintenance end
  -- Without PHP, never serve PHP sources as plain files.
  if not have_php and req.path:find("%.php$") then return no_php end
  return nil   -- the default rules: .php to php-cgi, the rest static files
end)
