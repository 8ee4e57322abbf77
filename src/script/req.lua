-- The `req` object: built once per Router, reused by every call. Its fields and its headers are
-- read by Rust (script/req_raw.rs: the state's lazy reader, else the `__index` functions)
-- from the request of the call in progress: nothing is copied up front and no value is kept from one call to the next (the
-- field and header functions keep the last Lua string of each field and of a few header values,
-- only to push it again unchanged).
local index, header_index, arg, header_pairs, protect, body, form_decode = ...
local setmetatable, error = setmetatable, error

local function read_only(what)
  return function() error(what .. " is read-only", 2) end
end

local headers_mt = { __index = header_index, __newindex = read_only("req.headers"),
                     __metatable = false,
                     __pairs = function() return header_pairs() end,
                     __tostring = function() return "req.headers" end }
local headers = protect(setmetatable({}, headers_mt), "req.headers")

-- req:body(max) suspends the route until the body is read (script/suspend.rs); req:form()
-- decodes an urlencoded one.
local function body_method(_, max) return body(max) end
local function form_method(_, max)
  local b, err = body(max)
  if not b then return nil, err end
  return form_decode(b)
end

-- What `req` has besides the request fields sits in `req` itself (read-only, so one table
-- lookup); a request field is answered by the state's lazy reader (script/req_raw.rs) in the
-- VM's read, and by `index` when the reader does not answer.
local req_mt = { __index = index, __newindex = read_only("req"), __metatable = false,
                 __tostring = function() return "req" end }
local req = protect(setmetatable({ headers = headers, arg = arg, body = body_method,
                                   form = form_method }, req_mt), "req")

-- `req` and `req.headers` (for the lazy reader).
return req, headers
