-- Per-request routing in Lua: every decision kind, on the bundled welcome site.
--
--   luahttpd -t -c examples/routing.lua       check it (prints "Syntax OK")
--   luahttpd -c examples/routing.lua          serve it on 127.0.0.1:8080 (PORT=... for another)
--
-- Then try each branch (add -i to see the status and headers):
--
--   curl -i http://127.0.0.1:8080/health                         respond: 200 "ok", text/plain
--   curl -i 'http://127.0.0.1:8080/hello?name=Lua+fan'           respond: uses req:arg (decoded)
--   curl -i http://127.0.0.1:8080/hits                           respond: a per-worker counter
--   curl -i -H 'Host: old.example' 'http://127.0.0.1:8080/a?b=1' redirect: 301 to https://new.example/a?b=1
--   curl -i http://127.0.0.1:8080/blog/2024/hello                redirect: 308 to /posts/2024/hello
--   curl -i -H 'X-Debug: 1' http://127.0.0.1:8080/               deny: 403
--   curl -i http://127.0.0.1:8080/.env                           deny: 404 for dot files
--   curl -i -X DELETE http://127.0.0.1:8080/                     deny: 405 with an Allow header
--   curl -i -H 'Host: maintenance.localhost' http://127.0.0.1:8080/
--                                                                static: another root (examples/maintenance)
--   curl -i http://127.0.0.1:8080/style.css                      static: main root, plus cache-control
--   curl -i 'http://127.0.0.1:8080/api/users/7?x=1'              fastcgi: php-cgi runs php-www/index.php
--                                                                with PATH_INFO=/users/7 (needs php-cgi)
--   curl -i http://127.0.0.1:8080/                               nil: the default rules (index.html)
--
-- The route function runs in each worker, in a sandbox (no io, no load/require, no new
-- globals), within 1,000,000 VM instructions, 50 ms and 64 MiB per worker state. Any error
-- answers 500 and is logged with file:line and the request.

local port = os.getenv("PORT") or "8080"

server {
  listen = "127.0.0.1:" .. port,
  workers = 2,
  root = "www",                       -- relative to this file's folder: examples/www
  error_log = "stderr",
}

-- static{ root = ... } needs an absolute path, while config paths are relative to this file's
-- folder, and a config cannot learn that folder (no `debug` library at config time). So it
-- comes from EXAMPLES_DIR, else from $PWD when started from the source tree or from examples/.
local HERE = os.getenv("EXAMPLES_DIR")
if not HERE then
  local pwd = os.getenv("PWD") or ""
  for _, dir in ipairs({ pwd .. "/examples", pwd }) do
    -- only absolute candidates (exists() would take a relative one from this file's folder)
    if dir:sub(1, 1) == "/" and exists(dir .. "/routing.lua")
       and exists(dir .. "/maintenance/index.html") then
      HERE = dir
      break
    end
  end
end
if not HERE then
  error("cannot find the examples folder: set EXAMPLES_DIR=/path/to/luahttpd/examples")
end

-- A FastCGI backend, only when php-cgi is installed (PHP_CGI=... for another binary).
local php = os.getenv("PHP_CGI") or "/usr/bin/php-cgi"
local have_php = exists(php)
if have_php then
  fastcgi "app" {
    spawn = php,
    procs = 1,
    socket = "unix:/tmp/luahttpd-routing-" .. port .. ".sock",
    env = { PHP_FCGI_CHILDREN = "0", PHP_FCGI_MAX_REQUESTS = "500" },
  }
end

-- Decisions may be built once, at config time, and returned by every request: the cheapest
-- way, and mistakes (a relative root, a bad status) are reported by `luahttpd -t`.
local maintenance_site = static { root = HERE .. "/maintenance" }
local cached = static { headers = { ["cache-control"] = "max-age=60" } }
local not_found = deny(404)
local ok = respond(200, "ok\n", { ["content-type"] = "text/plain" })

-- Per-worker state: an upvalue lives as long as the worker (each worker has its own).
local hits = 0

route(function(req)
  local path = req.path                 -- decoded: /a%20b arrives as "/a b"

  -- respond(status, body, headers): an answer made here. Content-Type defaults to text/plain.
  if path == "/health" then return ok end
  if path == "/hello" then
    local name = req:arg("name") or "stranger"       -- '+' and %XX are decoded
    return respond(200, "Hello, " .. name .. "!\n")
  end
  if path == "/hits" then
    hits = hits + 1
    return respond(200, "this worker has counted " .. hits .. " visits\n",
                   { ["cache-control"] = "no-store" })
  end

  -- redirect(status, location, headers): 301, 302, 303, 307 or 308.
  if req.host == "old.example" then                  -- host: lowercase, without the port
    return redirect(301, "https://new.example" .. req.uri)   -- uri: path and query as sent
  end
  local rest = path:match("^/blog(/.*)$")
  if rest then return redirect(308, "/posts" .. rest) end

  -- deny(status, headers): an error page with a 4xx or 5xx status (403 by default).
  if req.headers["x-debug"] then return deny() end   -- header names are case-insensitive
  if path:find("/%.") then return not_found end      -- /.env, /.git/config, /a/.htpasswd
  if req.method ~= "GET" and req.method ~= "HEAD" then
    return deny(405, { allow = "GET, HEAD" })
  end

  -- static{ root = ..., headers = ... }: a file; another root (absolute) or the main one.
  if req.host == "maintenance.localhost" then return maintenance_site end
  if path:find("%.css$") or path:find("%.js$") then return cached end

  -- fastcgi(name, { script, path_info, params, headers }): a backend defined above.
  local info = path:match("^/api(/.*)$")
  if info and have_php then
    return fastcgi("app", {
      script = HERE .. "/php-www/index.php",         -- SCRIPT_FILENAME
      path_info = info,                              -- PATH_INFO; SCRIPT_NAME becomes /api
      params = { APP_ENV = "example" },              -- extra FastCGI params
      headers = { ["x-served-by"] = "php" },         -- extra response headers
    })
  end

  -- nil: the default rules (FastCGI extensions/prefixes, then static files from root).
  return nil
end)
