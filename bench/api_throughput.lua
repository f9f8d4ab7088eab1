-- wrk script for bench/api_throughput.py.
--
-- Usage (api_throughput.py runs it):
--   wrk -t1 -c2 -d2s -s bench/api_throughput.lua http://127.0.0.1:PORT -- MODE RUN_ID [KEY] [TOPIC]
--       [TOKENS_FILE SUBSCRIBERS FIRST THREADS]
--   MODE "healthz":     GET /healthz, the same request every time.
--   MODE "contacts":    POST /api/v1/contacts, each request a NEW address
--                       bench-<RUN_ID>-<thread>-<n>@example.com subscribing to TOPIC,
--                       with two attributes.
--   MODE "messages":    POST /api/v1/messages, a transactional "receipt" mail, each request
--                       to a NEW address bench-<RUN_ID>-<thread>-<n>@example.com.
--   MODE "promotional": POST /api/v1/messages, a promotional "newsletter" mail of TOPIC to
--                       one of the SUBSCRIBERS pre-created subscribers bench-sub-<i>@example.com
--                       (cycling over the upper half of them, which one-click runs reach last).
--   MODE "unsubscribe": the RFC 8058 one-click POST /unsubscribe/<token>, body
--                       List-Unsubscribe=One-Click (form-encoded), no cookie; the tokens are
--                       the lines of TOKENS_FILE, used from line FIRST + 1 on (0-based FIRST),
--                       THREADS wrk threads taking every THREADS-th one, starting over at the
--                       end of the file.
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
local tokens = nil
local subscribers, first, stride = 0, 0, 1
-- A global (not local): done() reads it from each thread with thread:get().
statuses = {}

local MODES = {healthz = true, contacts = true, messages = true, promotional = true,
               unsubscribe = true}

function init(args)
  mode = args[1] or "healthz"
  run_id = args[2] or "0"
  api_key = args[3] or ""
  topic = args[4] or "bench"
  if not MODES[mode] then
    error("unknown mode " .. mode)
  end
  if mode == "healthz" then
    fixed_request = wrk.format("GET", "/healthz")
  elseif mode == "unsubscribe" or mode == "promotional" then
    subscribers = tonumber(args[6]) or 0
    first = tonumber(args[7]) or 0
    stride = tonumber(args[8]) or 1
    if subscribers < 1 then
      error(mode .. " needs the number of pre-created subscribers")
    end
    if mode == "unsubscribe" then
      tokens = {}
      for line in io.lines(args[5]) do
        if line ~= "" then
          tokens[#tokens + 1] = line
        end
      end
      if #tokens == 0 then
        error("no tokens in " .. tostring(args[5]))
      end
    end
  end
end

local json_headers = nil
local form_headers = {["Content-Type"] = "application/x-www-form-urlencoded"}

-- The n-th request of this thread (from 0) among all threads' requests.
local function sequence()
  local n = first + (tid - 1) + counter * stride
  counter = counter + 1
  return n
end

function request()
  if fixed_request then
    return fixed_request
  end
  if mode == "unsubscribe" then
    -- No Authorization, no cookie: what a mail provider sends.
    local token = tokens[(sequence() % #tokens) + 1]
    return wrk.format("POST", "/unsubscribe/" .. token, form_headers,
                      "List-Unsubscribe=One-Click")
  end
  if json_headers == nil then
    json_headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. api_key,
    }
  end
  local body
  if mode == "contacts" then
    counter = counter + 1
    body = string.format(
      '{"email":"bench-%s-%d-%d@example.com","topics":["%s"],"source":"bench",'
        .. '"attributes":{"country":"DE","plan":"p%d"}}',
      run_id, tid, counter, topic, counter % 5)
    return wrk.format("POST", "/api/v1/contacts", json_headers, body)
  elseif mode == "messages" then
    counter = counter + 1
    body = string.format(
      '{"to":"bench-%s-%d-%d@example.com","template":"receipt","category":"transactional",'
        .. '"data":{"order_number":"B-%d","total":"\\u20ac61.50","items":['
        .. '{"qty":1,"name":"Guitar strings","price":"\\u20ac12.50"},'
        .. '{"qty":2,"name":"Capo","price":"\\u20ac24.50"}]}}',
      run_id, tid, counter, counter)
  else -- promotional
    local base = math.floor(subscribers / 2)
    local span = math.max(subscribers - base, 1)
    body = string.format(
      '{"to":"bench-sub-%d@example.com","template":"newsletter","category":"promotional",'
        .. '"topic":"%s","data":{"headline":"Spring sale","intro":"Strings half price."}}',
      base + (sequence() % span), topic)
  end
  return wrk.format("POST", "/api/v1/messages", json_headers, body)
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
