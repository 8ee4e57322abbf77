-- Request limits built on shared dicts, shipped with luahttpd (issue 13). Loaded into the
-- route sandbox of every worker; the functions return nil (go on) or a decision to return.

-- limit_req{ zone = "rl", key = req.remote_addr, rate = 10, burst = 20, status = 429 }
-- A leaky bucket per key, the way nginx's limit_req works with nodelay: `rate` requests per
-- second, `burst` more at once; past it, a `status` (429, or 503 like nginx) decision with
-- Retry-After in whole seconds.
function limit_req(o)
  if type(o) ~= "table" then error("limit_req expects a table: limit_req{ zone, key, rate, burst }", 2) end
  local zone = shared[o.zone]
  local rate = tonumber(o.rate)
  if not rate or rate <= 0 then error("limit_req: rate must be a number > 0", 2) end
  local key = o.key
  if key == nil then error("limit_req: key is required (e.g. req.remote_addr)", 2) end
  local wait, err = zone:leaky_bucket("limit_req:" .. tostring(key), rate, tonumber(o.burst) or 0)
  if err then return nil end -- a bad key or full value: do not refuse on our own failure
  if wait then
    local status = o.status or 429
    if status ~= 429 and status ~= 503 then error("limit_req: status must be 429 or 503", 2) end
    local secs = math.max(1, math.ceil(wait))
    return respond(status, "Too Many Requests\n", { ["Retry-After"] = tostring(secs) })
  end
  return nil
end

-- limit_conn{ zone = "conn", key = req.remote_addr, max = 10, status = 503 }
-- Requests in flight per key, the way nginx's limit_conn counts them: the count is taken here
-- and given back when the request ends (its response sent, or its connection gone). Past
-- `max`, a `status` decision (503 like nginx, or 429). A worker killed mid-request leaves its
-- counts taken; they expire with the key's TTL (`ttl`, default 60 s after its creation).
function limit_conn(o)
  if type(o) ~= "table" then error("limit_conn expects a table: limit_conn{ zone, key, max }", 2) end
  local zone = shared[o.zone]
  local max = tonumber(o.max)
  if not max or max < 1 then error("limit_conn: max must be a number >= 1", 2) end
  if o.key == nil then error("limit_conn: key is required (e.g. req.remote_addr)", 2) end
  local key = "limit_conn:" .. tostring(o.key)
  local n = zone:incr(key, 1, 0, tonumber(o.ttl) or 60)
  if not n then return nil end
  if n > max then
    zone:incr(key, -1)
    local status = o.status or 503
    if status ~= 429 and status ~= 503 then error("limit_conn: status must be 429 or 503", 2) end
    return respond(status, "Too Many Connections\n", { ["Retry-After"] = "1" })
  end
  __at_request_end(o.zone, key)
  return nil
end
