-- F15 load for wrk (tests/faults/load.py): POST a signal trigger with one organization's
-- key, count every answer's status per thread, and print the totals as one JSON line.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

wrk.method = "POST"
wrk.path = os.getenv("CARILLON_LOAD_PATH")
wrk.body = os.getenv("CARILLON_LOAD_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CARILLON_LOAD_TOKEN")
wrk.headers["X-Api-Key"] = os.getenv("CARILLON_LOAD_API_KEY")

function init(args)
  counts = {}
  missing = 0
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status == 429 and headers["Retry-After"] == nil then
    missing = missing + 1
  end
end

function done(summary, latency, requests)
  local total, lost = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
    lost = lost + thread:get("missing")
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  io.write(string.format(
    'WRK-JSON {"statuses": {%s}, "missingRetryAfter": %d, "requests": %d, ' ..
    '"socketErrors": %d, "p50": %.1f, "p99": %.1f, "max": %.1f}\n',
    table.concat(parts, ", "), lost, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
