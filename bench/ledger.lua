-- wrk script for the ledger benchmark.
-- Arguments after "--": mode ("reserve" or "get"), store, sku, nonce.
--   reserve: POST /v1/stores/{store}/reservations, one unit of {sku}, a unique reservation id per request
--            ({nonce}-{thread}-{sequence}); counts 201 answers.
--   reserve-online: the same, with "channel":"online" (CONTRACT §6).
--   get:     GET /v1/stores/{store}/stock/{sku}; counts 200 answers.
-- Every request carries "Authorization: Bearer <token>" when BENCH_LEDGER_TOKEN is set (run.py --token).
-- done() prints one line "WRKJSON {...}" that bench/run.py reads.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "get"
  store = args[2] or "store-1"
  sku = args[3] or "SKU-1"
  nonce = args[4] or "r"
  seq = 0
  ok = 0
  other = 0
  first_other = ""
  local token = os.getenv("BENCH_LEDGER_TOKEN")
  channel = ""
  if mode == "reserve-online" then
    mode = "reserve"
    channel = '"channel":"online",'
  end
  if mode == "reserve" then
    expected = 201
    path = "/v1/stores/" .. store .. "/reservations"
    headers = { ["Content-Type"] = "application/json" }
  else
    expected = 200
    headers = {}
  end
  if token ~= nil and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  if mode ~= "reserve" then
    fixed = wrk.format("GET", "/v1/stores/" .. store .. "/stock/" .. sku, headers)
  end
end

function request()
  if mode == "reserve" then
    seq = seq + 1
    local body = '{"reservation_id":"' .. nonce .. "-" .. tid .. "-" .. seq .. '",' .. channel ..
      '"lines":[{"sku":"' .. sku .. '","qty":1}]}'
    return wrk.format("POST", path, headers, body)
  end
  return fixed
end

function response(status, headers, body)
  if status == expected then
    ok = ok + 1
  else
    other = other + 1
    if first_other == "" then
      first_other = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

local function escape(text)
  return (string.gsub(text, '[%c"\\]', " "))
end

function done(summary, latency, requests)
  local total_ok, total_other, sample = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_ok = total_ok + (thread:get("ok") or 0)
    total_other = total_other + (thread:get("other") or 0)
    local first = thread:get("first_other") or ""
    if sample == "" then sample = first end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"ok":%d,"other":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"first_other":"%s"}\n',
    summary.requests, summary.duration, total_ok, total_other, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, escape(sample)))
end
