-- report.lua: wrk script that prints the run's figures as one line that
-- bench/bench.py parses. Latency percentiles come straight from wrk's
-- histogram (microseconds), not from its rounded human summary.
--
-- wrk counts a response with status >= 400 as errors.status; we report it
-- as non-2xx (the bench backends answer only 200 on the paths we use).

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
end
