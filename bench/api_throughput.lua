-- wrk script for bench/api_throughput.py.
--
-- Usage (api_throughput.py runs it):
--   wrk -t1 -c2 -d2s -s bench/api_throughput.lua http://127.0.0.1:PORT -- MODE RUN_ID [KEY] [TOPIC]
--   MODE "healthz":  GET /healthz, the same request every time.
--   MODE "contacts": POST /api/v1/contacts, each request a NEW address
--                    bench-<RUN_ID>-<thread>-<n>@example.com subscribing to TOPIC,
--                    with two attributes.
-- done() prints one line "BENCH_RESULT {json}" that api_throughput.py parses:
-- requests, duration (us), socket errors, per-status counts, latency percentiles (us), and a
-- finer list of [percentile, us] points so that several runs can be merged.

local mode, run_id, api_key, topic
local threads = {}
local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("tid", thread_counter)
  table.insert(threads, thread)
end

local counter = 0
local fixed_request = nil
-- A global (not local): done() reads it from each thread with thread:get().
statuses = {}

function init(args)
  mode = args[1] or "healthz"
  run_id = args[2] or "0"
  api_key = args[3] or ""
  topic = args[4] or "bench"
  if mode == "healthz" then
    fixed_request = wrk.format("GET", "/healthz")
  elseif mode ~= "contacts" then
    error("unknown mode " .. mode)
  end
end

local contact_headers = nil

function request()
  if fixed_request then
    return fixed_request
  end
  if contact_headers == nil then
    contact_headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. api_key,
    }
  end
  counter = counter + 1
  local body = string.format(
    '{"email":"bench-%s-%d-%d@example.com","topics":["%s"],"source":"bench",'
      .. '"attributes":{"country":"DE","plan":"p%d"}}',
    run_id, tid, counter, topic, counter % 5)
  return wrk.format("POST", "/api/v1/contacts", contact_headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local function json_statuses(merged)
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Percentiles printed for merging several runs (finer towards the tail).
local DIST_POINTS = {}
for p = 1, 89 do table.insert(DIST_POINTS, p) end
for i = 900, 989 do table.insert(DIST_POINTS, i / 10) end
for i = 9900, 9999 do table.insert(DIST_POINTS, i / 100) end
table.insert(DIST_POINTS, 100)

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    if s then
      for status, count in pairs(s) do
        merged[status] = (merged[status] or 0) + count
      end
    end
  end
  local e = summary.errors
  local points = {}
  for _, p in ipairs(DIST_POINTS) do
    table.insert(points, string.format("[%g,%d]", p, latency:percentile(p)))
  end
  local dist = table.concat(points, ",")
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"statuses":%s,'
      .. '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},'
      .. '"dist_us":[%s]}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    json_statuses(merged),
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, dist))
end
