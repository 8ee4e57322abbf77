-- route_1k for lighttpd's mod_magnet: the same three tests as luahttpd-route.lua.
local r = lighty.r
local p = r.req_attr["uri.path"]
if p:find("^/api/") then r.resp_body:set({ "api" }) return 200 end
if p == "/health" then r.resp_body:set({ "ok\n" }) return 200 end
if r.req_attr["uri.authority"] == "old.example" then
  r.resp_header["Location"] = "https://new.example" .. r.req_attr["request.uri"]
  return 301
end
return 0
