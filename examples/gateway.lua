-- A rate-limited API gateway in front of the bundled welcome site, using the request-time Lua
-- of issue 13: shared dictionaries, limit_req, a response hook and timers.
--
--   luahttpd -t -c examples/gateway.lua       check it
--   luahttpd -c examples/gateway.lua          serve it on 127.0.0.1:8080 (PORT=... for another)
--
--   for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:8080/api/x; done
--                                     about 10 x 200 (1 + burst 9, plus what drains meanwhile at
--                                     5/s), then 429 with Retry-After: 1
--   curl -i http://127.0.0.1:8080/api/stats   per-status counts kept by the response hook
--   curl -i --data 'hello' http://127.0.0.1:8080/api/echo   the body, read by Lua (req:body)
--   curl -i http://127.0.0.1:8080/api/upstream  http.request to $UPSTREAM/status
--   curl -i http://127.0.0.1:8080/            the static site, with security headers added
--   luahttpd repl -c examples/gateway.lua     (with admin set) shared.stats:keys(20), shared()
--
-- Every worker, the REPL and the next generation after a reload see the same dictionaries.

local port = os.getenv("PORT") or "8080"

server {
  listen = "127.0.0.1:" .. port,
  workers = 2,
  root = "www",
  error_log = "stderr",
  admin = os.getenv("ADMIN_SOCKET"),   -- e.g. ADMIN_SOCKET=/tmp/gw.sock for the REPL
}

-- UPSTREAM=http://127.0.0.1:9000 for /api/upstream (plain IP addresses only)
UPSTREAM = os.getenv("UPSTREAM")

shared "ratelimit" { size = "1m" }     -- one leaky bucket and one connection count per address
shared "stats" { size = "64k" }        -- counters written by the response hook and a timer

-- Once a second, in one worker only: the time of the last tick, for /api/stats.
every(1, function() shared.stats:set("tick", os.time()) end, { worker = "one" })
at_worker_start(function() shared.stats:incr("worker_starts", 1, 0) end)

route(function(req)
  if req.path:find("^/api/") then
    local refused = limit_req{ zone = "ratelimit", key = req.remote_addr, rate = 5, burst = 9 }
      or limit_conn{ zone = "ratelimit", key = req.remote_addr, max = 20 }
    if refused then return refused end
    if req.path == "/api/echo" then
      -- Waits for the body without holding up the worker (limits.lua_body_bytes bounds it).
      local body, err = req:body(4096)
      if not body then return respond(413, err .. "\n") end
      return respond(200, body)
    end
    if req.path == "/api/upstream" and UPSTREAM then
      -- One call to a backend service on a plain address, over the worker's event loop.
      local r, err = http.request{ url = UPSTREAM .. "/status", timeout = 2 }
      if not r then return respond(502, "upstream: " .. err .. "\n") end
      return respond(r.status, r.body)
    end
    if req.path == "/api/stats" then
      local lines = {}
      local keys = shared.stats:keys(0)
      table.sort(keys)
      for _, k in ipairs(keys) do lines[#lines + 1] = k .. " " .. tostring((shared.stats:get(k))) end
      return respond(200, table.concat(lines, "\n") .. "\n")
    end
    return respond(200, '{"ok":true}\n', { ["Content-Type"] = "application/json" })
  end
end)

-- Every response, whatever produced it: security headers, and a count per status.
respond_hook(function(req, res)
  res.headers["X-Content-Type-Options"] = "nosniff"
  res.headers["X-Frame-Options"] = "DENY"
  if req and req.path:find("%.css$") then res.headers["Cache-Control"] = "max-age=3600" end
  shared.stats:incr("status " .. res.status, 1, 0)
end)
