-- Turns the config state's globals into the request-time sandbox (run once by prepare_sandbox).
--
-- The globals table is emptied and refilled in place: functions the config defined keep it as
-- their _ENV, so they see the sandbox from now on. Values a config captured in upvalues before
-- this ran (e.g. `local io = io`) stay reachable to that code: the config is trusted, requests
-- are not.
local G, tripped, log, decisions, is_c_function = ...

local error, pairs, next, rawget, type, tostring, select = error, pairs, next, rawget, type, tostring, select
local raw_pcall, raw_xpcall, raw_setmetatable, raw_collectgarbage = pcall, xpcall, setmetatable, collectgarbage

-- Read-only view of a library table; pairs() still lists it.
local function frozen(name, src, skip)
  local copy = {}
  for k, v in pairs(src) do
    if not (skip and skip[k]) then copy[k] = v end
  end
  return raw_setmetatable({}, {
    __index = copy,
    __newindex = function(_, k)
      error("cannot assign " .. name .. "." .. tostring(k) .. ": libraries are read-only in route", 2)
    end,
    __pairs = function() return next, copy, nil end,
    __metatable = false,
  }), copy
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
keep.xpcall = function(f, h, ...) return pass(raw_xpcall(f, h, ...)) end

-- Finalizers run with hooks off, outside every limit: refuse them.
keep.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc is not available in route", 2)
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

local string_view, string_copy = frozen("string", G.string, { dump = true })
keep.string = string_view
keep.table = frozen("table", G.table)
keep.math = frozen("math", G.math)
keep.utf8 = frozen("utf8", G.utf8)
keep.os = frozen("os", { time = G.os.time, clock = G.os.clock, date = G.os.date, getenv = G.os.getenv })

for k, v in pairs(decisions) do keep[k] = v end

-- Methods on strings ("x":find) go through the string metatable: point it at the copy
-- without dump, and hide it.
local smt = getmetatable("")
smt.__index = string_copy
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
for k, v in next, G do
  if keep[k] == nil and not builtin[k]
     and not (type(v) == "function" and is_c_function(v)) then
    keep[k] = v
  end
end

local names = {}
for k in next, G do names[#names + 1] = k end
for _, k in pairs(names) do G[k] = nil end
for k, v in next, keep do G[k] = v end
G._G = G

raw_setmetatable(G, {
  __newindex = function(_, k)
    error("assignment to undeclared global '" .. tostring(k) ..
          "' (use a local; keep per-worker state in an upvalue of the config)", 2)
  end,
  __metatable = false,
})
