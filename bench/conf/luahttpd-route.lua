-- route_1k: three string tests that all miss for GET /1k.bin, then nil (the static file).
route(function(req)
  local p = req.path
  if p:find("^/api/") then return respond(200, "api") end
  if p == "/health" then return respond(200, "ok\n") end
  if req.host == "old.example" then return redirect(301, "https://new.example" .. req.uri) end
end)
