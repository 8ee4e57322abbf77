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
