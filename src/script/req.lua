-- The `req` object: built once per Router, reused by every call. A field is computed by Rust
-- (`fetch`, `header`) on its first read in a call, then read from a cache like any table
-- field. The caches are emptied at the start of each call (no allocation per call).
local fetch, header, arg, header_pairs, route, protect, body, form_decode = ...
local setmetatable, error, next = setmetatable, error, next

local function read_only(what)
  return function() error(what .. " is read-only", 2) end
end

local headers_mt = { __newindex = read_only("req.headers"), __metatable = false,
                     __pairs = function() return header_pairs() end,
                     __tostring = function() return "req.headers" end }
local headers = protect(setmetatable({}, headers_mt), "req.headers")
local header_cache = setmetatable({}, { __index = function(c, k)
  local v = header(k)
  c[k] = v
  return v
end })
headers_mt.__index = header_cache

local function arg_method(_, name) return arg(name) end
-- req:body(max) suspends the route until the body is read (script/suspend.rs); req:form()
-- decodes an urlencoded one.
local function body_method(_, max) return body(max) end
local function form_method(_, max)
  local b, err = body(max)
  if not b then return nil, err end
  return form_decode(b)
end

local req_mt = { __newindex = read_only("req"), __metatable = false,
                 __tostring = function() return "req" end }
local req = protect(setmetatable({}, req_mt), "req")
local req_cache = setmetatable({}, { __index = function(c, k)
  if k == "headers" then
    for h in next, header_cache do header_cache[h] = nil end
    c.headers = headers
    return headers
  elseif k == "arg" then
    c.arg = arg_method
    return arg_method
  elseif k == "body" then
    c.body = body_method
    return body_method
  elseif k == "form" then
    c.form = form_method
    return form_method
  end
  local v, unknown = fetch(k)
  if unknown then error(unknown, 2) end
  c[k] = v
  return v
end })
req_mt.__index = req_cache

return function(...)
  for k in next, req_cache do req_cache[k] = nil end
  return route(req, ...)
end
