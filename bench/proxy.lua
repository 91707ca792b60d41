-- proxy.lua: wrk script that talks to a forward proxy, as a client with
-- HTTP_PROXY set does: every request in absolute form, e.g.
--   GET http://127.0.0.1:8080/ HTTP/1.1
--   Host: 127.0.0.1:8080
-- Usage: wrk -t1 -c50 ... -s bench/proxy.lua http://PROXY:PORT -- URL
-- where URL is the absolute URL to fetch through the proxy. The Host header
-- names the origin (the URL's authority), as curl and other clients send
-- it, not the proxy wrk connects to. Keep-alive as wrk does it.
--
-- wrk builds its one request in wrk.init(), after calling this init() and
-- before the connections start: setting wrk.path here is enough.

function init(args)
  local url = args[1]
  if url == nil or not url:match("^http://[^/]+/") then
    error("proxy.lua: give the absolute URL after --, e.g. -- http://127.0.0.1:8080/")
  end
  wrk.path = url
  wrk.headers["Host"] = url:match("^http://([^/]+)/")
end

-- The same done() as report.lua, loaded from beside this file.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
