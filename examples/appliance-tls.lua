-- appliance-cgi.lua over HTTPS: the same static pages from www/ and CGI scripts from
-- cgi-bin/ behind Basic auth and a loopback-only network rule, served on a TLS port, with the
-- plain port answering every request with a 301 to the same URL on https (so the password
-- never crosses the network in clear).
--
-- It needs a certificate; for a box without a name a self-signed one does:
--
--   mkdir -p examples/tls
--   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
--     -subj /CN=appliance.local -addext subjectAltName=DNS:appliance.local,DNS:localhost \
--     -keyout examples/tls/appliance.key -out examples/tls/appliance.pem
--   luahttpd -t -c examples/appliance-tls.lua
--   luahttpd -c examples/appliance-tls.lua
--   curl -i http://127.0.0.1:8080/cgi-bin/status.sh                301 to https://…:8443/…
--   curl -k -u admin:admin https://localhost:8443/cgi-bin/status.sh
--   curl -k -i https://localhost:8443/cgi-bin/status.sh            401 with the realm
--
-- appliance.htpasswd holds one demo user, admin:admin: replace it first (see appliance-cgi.lua).
-- No Strict-Transport-Security header: with a self-signed certificate it would lock browsers
-- out of the box; add `headers = { ["/"] = { ["Strict-Transport-Security"] = "max-age=63072000" } }`
-- to server{} once the certificate is one browsers trust.
--
--   LISTEN       plain HTTP addresses (redirects only), separated by spaces (default 127.0.0.1:8080)
--   LISTEN_TLS   HTTPS addresses, separated by spaces (default 127.0.0.1:8443)
--   CERT, KEY    the certificate chain and key, PEM (default tls/appliance.pem, tls/appliance.key,
--                beside this file)

local listen = {}
for addr in (os.getenv("LISTEN") or "127.0.0.1:8080"):gmatch("%S+") do
  listen[#listen + 1] = { addr, redirect_to_https = true }
end
-- A redirect names the port of the first TLS listener.
for addr in (os.getenv("LISTEN_TLS") or "127.0.0.1:8443"):gmatch("%S+") do
  listen[#listen + 1] = { addr, tls = true }
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
  tls = {
    certificates = {
      { cert = os.getenv("CERT") or "tls/appliance.pem", key = os.getenv("KEY") or "tls/appliance.key" },
    },
    min_version = "1.2",
  },
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
