-- paced.lua: wrk script that sends requests on a fixed schedule, RATE per
-- second over all of this thread's connections (wrk -t1), instead of as
-- fast as possible. Usage: wrk -t1 -c50 ... -s bench/paced.lua URL -- RATE
--
-- One schedule for the thread: request n may start at t0 + n/RATE. delay()
-- is called before each request on a connection and waits until the next
-- free slot (wrk's timers have millisecond resolution; slots stay exact on
-- average). Latency is wrk's usual one (write to full response), measured
-- from when the request actually leaves, so it is the latency at this
-- moderate load, without coordinated-omission correction; at a rate well
-- below capacity the two agree.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms = 0.2 -- 5000/s unless told otherwise
local next_slot = nil

function init(args)
  local rate = tonumber(args[1] or "5000")
  if rate and rate > 0 then interval_ms = 1000 / rate end
end

function delay()
  local t = now_ms()
  if next_slot == nil or next_slot < t - 1000 then
    next_slot = t -- start, or after a long stall: do not burst to catch up
  end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  local d = slot - t
  if d < 0 then return 0 end
  return math.floor(d)
end

-- The same done() as report.lua, loaded from beside this file.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
