-- luahttpd config of the soak (bench/lib/soak.py renders it: each placeholder
-- between @ signs is replaced). A changed-config reload flips VARIANT between
-- "a" and "b": a response header, and the environment of the php backend (so
-- that reload also replaces the php-cgi processes).
local VARIANT = "@VARIANT@"
-- Captured on purpose: the route sandbox has no coroutine library, but a
-- config may hand one over; the soak checks the limits hold inside coroutines.
local co = coroutine

server {
  listen = "127.0.0.1:@PORT@",
  workers = @WORKERS@,
  root = "@WWW@",
  access_log = "@DIR@/access.log",
  error_log = "@DIR@/error.log",
  admin = "@DIR@/admin.sock",
  pid_file = "@DIR@/luahttpd.pid",
  timeouts = { keepalive_idle = @KEEPALIVE_IDLE@, read_idle = 10 },
}

fastcgi "php" {
  spawn = "@PHP_CGI@",
  procs = @PHP_PROCS@,
  socket = "unix:@DIR@/php.sock",
  env = { PHP_FCGI_CHILDREN = "0", PHP_FCGI_MAX_REQUESTS = VARIANT == "a" and "@PHP_MAX_REQUESTS@" or "@PHP_MAX_REQUESTS@1" },
  extensions = { ".php" },
}

-- The stalling backend: /stall/?mode=slowhead&ms=N answers after N ms;
-- past read_timeout the client gets 504.
fastcgi "stall" {
  spawn = "@FCGI_TEST@",
  procs = 1,
  socket = "unix:@DIR@/stall.sock",
  prefix = "/stall/",
  read_timeout = @STALL_TIMEOUT@,
}

local hello = respond(200, "hello\n", { ["x-soak-config"] = VARIANT })

-- Adversarial route code: each must end in a 500 within the route limits
-- (1,000,000 instructions, 50 ms, 64 MiB), never hang a worker.
local adv = {}
adv.index = function() return setmetatable({}, { __index = function() while true do end end }).x end
adv.tostring = function() return tostring(setmetatable({}, { __tostring = function() while true do end end })) end
adv.gc = function() setmetatable({}, { __gc = function() end }) end
adv.close = function()
  local x <close> = setmetatable({}, { __close = function() while true do end end })
  error("boom")
end
adv.xpcall = function() xpcall(function() error("x") end, function() while true do end end) end
adv.pcall = function() while true do pcall(function() while true do end end) end end
adv.coroutine = function() co.wrap(function() while true do end end)() end
adv.resume = function() while true do co.resume(co.create(function() while true do end end)) end end
adv.find = function() return respond(200, tostring((("a"):rep(@FIND_N@)):find(".-.-.-b")) .. "\n") end
adv.rep = function() local s = ("x"):rep(1 << 30) return respond(200, #s .. "\n") end
adv.gsub = function() (("a"):rep(100000)):gsub(".", function() while true do end end) end
adv.sort = function()
  local t = {}
  for i = 1, 200 do t[i] = 201 - i end
  table.sort(t, function() while true do end end)
end
adv.grow = function() local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end end

route(function(req)
  local p = req.path
  if p == "/r/hello" then return hello end
  if p == "/r/1k.bin" then return static { headers = { ["x-soak-config"] = VARIANT } } end
  local name = p:match("^/adv/(%a+)$")
  if name then
    local f = adv[name]
    if not f then return deny(404) end
    return f() or respond(200, "survived\n")
  end
end)
