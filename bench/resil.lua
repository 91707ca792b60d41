-- resil.lua: wrk script for the reliability scenarios (bench/resilience.py).
-- Prints report.lua's line (requests, errors, latency percentiles from
-- wrk's histogram, in microseconds) and one more with the count of every
-- status the client saw, so that success (2xx) is counted exactly rather
-- than taken from wrk's errors.status (which counts >= 400 only).
--
-- wrk runs response() in each thread's Lua state and done() in the main
-- one: setup() keeps the threads, done() collects each one's `statuses`
-- (a global, so that thread:get finds it).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d err_connect=%d err_read=%d " ..
    "err_write=%d err_status=%d err_timeout=%d p50_us=%d p90_us=%d " ..
    "p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
  local all = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for code, n in pairs(s) do
        all[code] = (all[code] or 0) + n
      end
    end
  end
  local keys = {}
  for code in pairs(all) do table.insert(keys, code) end
  table.sort(keys)
  local parts = {}
  for _, code in ipairs(keys) do
    table.insert(parts, string.format("%d=%d", code, all[code]))
  end
  io.write("STATUSES " .. table.concat(parts, " ") .. "\n")
end
