-- An appliance-style UI the way OpenWrt's LuCI runs one: static pages from www/, scripts in
-- cgi-bin/ run as CGI (a Lua script through the system Lua when one is installed, a /bin/sh
-- one always), and the scripts behind Basic auth and a loopback-only network rule.
--
--   luahttpd -t -c examples/appliance-cgi.lua
--   luahttpd -c examples/appliance-cgi.lua
--   curl -u admin:admin http://127.0.0.1:8080/cgi-bin/status.sh
--   curl -u admin:admin http://127.0.0.1:8080/cgi-bin/status.lua   (with lua5.4/5.3/lua installed)
--   curl -i http://127.0.0.1:8080/cgi-bin/status.sh               401 with the realm
--
-- appliance.htpasswd holds one demo user, admin:admin (an apr1 hash, as `htpasswd -m` makes);
-- replace it (`htpasswd -B appliance.htpasswd admin` for bcrypt) before anything else. Basic
-- auth sends the password in clear on every request: on a network, put this behind TLS
-- (examples/appliance-tls.lua is this config over HTTPS).
--
--   LISTEN   listen addresses, separated by spaces (default 127.0.0.1:8080)

local listen = {}
for addr in (os.getenv("LISTEN") or "127.0.0.1:8080"):gmatch("%S+") do
  listen[#listen + 1] = addr
end

-- .sh scripts always run; .lua ones only where a Lua interpreter exists (-t refuses a
-- missing interpreter, so the table only names what is installed).
local interpreters = { [".sh"] = "/bin/sh" }
for _, lua in ipairs({ "/usr/bin/lua5.4", "/usr/bin/lua5.3", "/usr/bin/lua" }) do
  if exists(lua) then
    interpreters[".lua"] = lua
    break
  end
end

server {
  listen = listen,
  workers = 2,
  root = "www",
  error_log = "stderr",
  auth = {
    { prefix = "/cgi-bin/", realm = "Appliance", users = "appliance.htpasswd" },
  },
  access = {
    -- The management scripts answer only on the box itself.
    { prefix = "/cgi-bin/", allow = { "127.0.0.0/8", "::1" } },
  },
}

cgi {
  prefix = "/cgi-bin/",
  root = "cgi-bin",
  interpreters = interpreters,
  timeout = 10,   -- seconds a script may run before it is killed (504)
  max_procs = 4,  -- scripts one worker runs at once (503 beyond)
}
