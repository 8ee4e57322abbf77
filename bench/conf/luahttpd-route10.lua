-- route10_1k: ten tests over req.path, req.host, req.headers[...] and req:arg that all
-- miss for wrk's GET /1k.bin, then nil (the static file). The issue's "ten-test route".
route(function(req)
  local p = req.path
  if p:find("^/api/") then return respond(200, "api") end
  if p == "/health" then return respond(200, "ok\n") end
  if p:find("%.php$") then return deny(403) end
  if p:sub(1, 8) == "/private" then return deny(403) end
  if req.host == "old.example" then return redirect(301, "https://new.example" .. req.uri) end
  if req.host:find("^admin%.") then return deny(403) end
  if req.headers["x-debug"] then return respond(200, "debug") end
  if req.headers["user-agent"] == "BadBot" then return deny(403) end
  if req:arg("token") then return deny(401) end
  if req:arg("lang") == "xx" then return redirect(302, "/") end
end)
