-- Turns the config state's globals into the request-time sandbox (run once by prepare_sandbox).
--
-- The globals table is emptied and refilled in place: functions the config defined keep it as
-- their _ENV, so they see the sandbox from now on. Values a config captured in upvalues before
-- this ran (e.g. `local io = io`) stay reachable to that code: the config is trusted, requests
-- are not.
local G, tripped, log, decisions, is_c_function, metered, charge, readonly = ...

local error, pairs, next, rawget, type, tostring, select = error, pairs, next, rawget, type, tostring, select
local raw_pcall, raw_xpcall, raw_setmetatable, raw_collectgarbage = pcall, xpcall, setmetatable, collectgarbage
local raw_rawset, rawlen = rawset, rawlen

-- Tables a route may not change, even with rawset: the library views, req, req.headers and
-- the globals. Weak keys: listing a table here does not keep it alive.
local protected = raw_setmetatable({}, { __mode = "k" })
local function protect(t, name)
  protected[t] = name
  return t
end

-- Read-only copy of a library table. `readonly` sets the VM's read-only flag (src/lua_raw.rs,
-- vendor/lua-src/LUAHTTPD.md): every assignment, to a present name too, goes to __newindex and
-- rawset refuses, so nothing a route does can change what the next request sees, while a read
-- is a plain table read (no __index hop).
local function frozen(name, src, skip)
  local copy = {}
  for k, v in pairs(src) do
    if not (skip and skip[k]) then copy[k] = v end
  end
  raw_setmetatable(copy, {
    __newindex = function(_, k)
      error("cannot assign " .. name .. "." .. tostring(k) .. ": libraries are read-only in route", 2)
    end,
    __metatable = false,
  })
  return protect(readonly(copy), name)
end

local keep = {}
for _, k in pairs({ "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
                    "rawset", "select", "tonumber", "tostring", "type", "getmetatable",
                    "_VERSION" }) do
  keep[k] = G[k]
end

-- A stopped call (instruction budget, deadline) must not be caught by pcall/xpcall.
local function pass(ok, ...)
  if not ok and tripped() then error((...), 0) end
  return ok, ...
end
keep.pcall = function(f, ...) return pass(raw_pcall(f, ...)) end
-- The message handler of a stop is never called: Lua runs it inside the hook that raised the
-- stop, where hooks are off, so a looping handler would run outside every limit.
keep.xpcall = function(f, h, ...)
  return pass(raw_xpcall(f, function(m)
    if tripped() then return m end
    return h(m)
  end, ...))
end

keep.rawset = function(t, k, v)
  local name = protected[t]
  if name then error("rawset: " .. name .. " is read-only in route", 2) end
  return raw_rawset(t, k, v)
end

-- Finalizers run with hooks off, outside every limit: refuse them. So does a `__close` run
-- by an unwinding stop (Lua calls it inside the hook that raised the stop).
keep.setmetatable = function(t, mt)
  if type(mt) == "table" then
    for _, k in pairs({ "__gc", "__close" }) do
      if rawget(mt, k) ~= nil then error("setmetatable: " .. k .. " is not available in route", 2) end
    end
  end
  return raw_setmetatable(t, mt)
end

keep.collectgarbage = function(opt)
  if opt == nil or opt == "count" then return raw_collectgarbage("count") end
  error('collectgarbage: only "count" is available in route', 2)
end

keep.print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  log(G.table.concat(parts, "\t"))
end

-- C functions whose time grows with their input run to their end, where no hook can stop
-- them: `charge` notes their size (not counted as instructions) and reads the clock every
-- so much of it, so a loop of them stops at the deadline instead of one hook check per few
-- hundred calls.
local function bytes(s) return type(s) == "string" and #s // 16 or 0 end
local function linear(f)
  return function(s, ...)
    charge(bytes(s))
    return f(s, ...)
  end
end
local function size(t) return type(t) == "table" and rawlen(t) or 0 end
local sort, concat, unpack, rep = G.table.sort, G.table.concat, G.table.unpack, G.string.rep

local string_src = {}
for k, v in pairs(G.string) do string_src[k] = v end
-- Pattern matching in Rust, metered step by step (the C matcher can backtrack for seconds
-- inside one call).
for k, v in pairs(metered) do string_src[k] = v end
for _, k in pairs({ "upper", "lower", "reverse", "byte" }) do string_src[k] = linear(G.string[k]) end
-- Charged after the call: one call is bounded by the memory limit, which it meets first.
string_src.rep = function(s, n, sep)
  -- An empty result is made by n empty copies: no memory to run out of, so charge first.
  if type(n) == "number" and n > 0 and #tostring(s) + #tostring(sep or "") == 0 then
    charge(n // 16)
  end
  local r = rep(s, n, sep)
  charge(#r // 16)
  return r
end
local table_src = {}
for k, v in pairs(G.table) do table_src[k] = v end
table_src.sort = function(t, cmp)
  local n = size(t)
  local log = 1
  while (1 << log) < n do log = log + 1 end
  charge(n * log)
  return sort(t, cmp)
end
table_src.concat = function(t, ...) charge(size(t)) return concat(t, ...) end
table_src.unpack = function(t, i, j)
  charge(type(j) == "number" and type(i) == "number" and j - i or size(t))
  return unpack(t, i, j)
end

local string_view = frozen("string", string_src, { dump = true })
keep.string = string_view
keep.table = frozen("table", table_src)
keep.math = frozen("math", G.math)
keep.utf8 = frozen("utf8", G.utf8)
keep.os = frozen("os", { time = G.os.time, clock = G.os.clock, date = G.os.date, getenv = G.os.getenv })

for k, v in pairs(decisions) do keep[k] = v end

-- Methods on strings ("x":find) go through the string metatable: point it at the copy
-- without dump, and hide it.
local smt = getmetatable("")
smt.__index = string_view
smt.__metatable = false

-- Globals the config defined itself (Lua functions, tables, strings, …) stay; the standard
-- library and every C function (the config helpers: server, include, read_file, …) go.
local builtin = {}
for _, k in pairs({ "assert", "collectgarbage", "dofile", "error", "getmetatable", "ipairs",
                    "load", "loadfile", "loadstring", "next", "pairs", "pcall", "print",
                    "rawequal", "rawget", "rawlen", "rawset", "require", "select",
                    "setmetatable", "tonumber", "tostring", "type", "xpcall", "warn", "unpack",
                    "_G", "_VERSION", "coroutine", "debug", "io", "math", "os", "package",
                    "string", "table", "utf8", "bit32" }) do
  builtin[k] = true
end
for k in pairs(decisions) do builtin[k] = true end
-- The `shared` object (src/shared/lua_api.rs) is an empty table over a hidden one: rawset on
-- it would shadow a dictionary for the worker's later requests.
if type(G.shared) == "table" then protect(G.shared, "shared") end
for k, v in next, G do
  if keep[k] == nil and not builtin[k]
     and not (type(v) == "function" and is_c_function(v)) then
    keep[k] = v
  end
end

-- The globals table stays the same table (config functions hold it as _ENV), refilled with
-- `keep` and made read-only like the libraries: every assignment reaches __newindex,
-- existing names included, and rawset refuses it.
local names = {}
for k in next, G do names[#names + 1] = k end
raw_setmetatable(G, nil)
for _, k in pairs(names) do G[k] = nil end
keep._G = G
for k, v in next, keep do G[k] = v end

raw_setmetatable(G, {
  __newindex = function(_, k)
    if keep[k] ~= nil then
      error("cannot assign global '" .. tostring(k) .. "' in route: globals are read-only " ..
            "(use a local; keep per-worker state in an upvalue of the config)", 2)
    end
    error("assignment to undeclared global '" .. tostring(k) ..
          "' (use a local; keep per-worker state in an upvalue of the config)", 2)
  end,
  __metatable = false,
})
protect(readonly(G), "_G")

return protect
