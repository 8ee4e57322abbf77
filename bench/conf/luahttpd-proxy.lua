-- proxy_1k / proxy_1m of compare.sh: every request goes to the origin (a luahttpd static
-- instance), with kept upstream connections (as nginx's keepalive 32).
upstream "origin" { address = "127.0.0.1:@ORIGIN_PORT@", keepalive = 32, prefix = "/" }
