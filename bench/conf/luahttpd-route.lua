-- route_1k: three string tests that all miss for GET /1k.bin, then nil (the static file).
-- shared_incr: GET /api/incr does one shared dict incr (only that path).
shared "bench" { size = "8m" }
route(function(req)
  local p = req.path
  if p:find("^/api/") then
    if p == "/api/incr" then shared.bench:incr("hits", 1, 0) end
    return respond(200, "api")
  end
  if p == "/health" then return respond(200, "ok\n") end
  if req.host == "old.example" then return redirect(301, "https://new.example" .. req.uri) end
end)
