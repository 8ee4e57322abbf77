-- A CGI script run by the system Lua interpreter: the head, an empty line, the body.
local env = os.getenv
io.write("Content-Type: text/plain; charset=utf-8\r\n")
io.write("Cache-Control: no-store\r\n\r\n")
io.write(("user:    %s\n"):format(env("REMOTE_USER") or "-"))
io.write(("method:  %s\n"):format(env("REQUEST_METHOD") or "-"))
io.write(("query:   %s\n"):format(env("QUERY_STRING") or ""))
local f = io.open("/proc/uptime")
if f then
  io.write(("uptime:  %s s\n"):format(f:read("n")))
  f:close()
end
local len = tonumber(env("CONTENT_LENGTH") or "")
if len and len > 0 then
  io.write("body:    ", io.read(len) or "", "\n")
end
