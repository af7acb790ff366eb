-- wrk script for every scenario of bench/run.py.
--
--   wrk -t2 -c16 -d10s -s bench/load.lua http://127.0.0.1:PORT -- SCENARIO BASE COUNT DATA TOKENS
--
-- SCENARIO  bare | unifiedorder | jscode2session | order | pay | notify | notify-dup | login | read
-- BASE      first order index of this run (pay, notify: each index is used once; read: random in [BASE, BASE+COUNT))
-- COUNT     how many order indexes (or notification bodies) this run may use
-- DATA      pay/read: the order-number prefix; notify, notify-dup: a file of signed bodies, one a line
-- TOKENS    a file of bearer tokens, one a line; order index i belongs to token (i % #tokens)
--
-- Every thread takes every nth index (n = number of threads), so no two requests share an
-- order. Each answer is checked, not only its status: a notification answered FAIL, a pay
-- answer without paySign, count as errors. done() prints one line: BENCH_JSON {...}.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local scenario, base, count, data, tokens = nil, 0, 0, nil, {}
local nthreads, index, product_id = 1, 0, 1
local bodies = {}
-- Globals, read by done() through thread:get().
bad, wrapped, status_count = 0, 0, {}

local function lines(path)
  local out = {}
  for line in io.lines(path) do
    if #line > 0 then table.insert(out, line) end
  end
  return out
end

function init(args)
  scenario = args[1]
  base = tonumber(args[2] or "0")
  count = tonumber(args[3] or "0")
  data = args[4]
  if args[5] and args[5] ~= "-" then tokens = lines(args[5]) end
  product_id = tonumber(args[6] or "1")
  nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  index = id  -- this thread's first slot
  math.randomseed(os.time() + id * 7919)
  if scenario == "notify" or scenario == "notify-dup" then
    local all = lines(data)
    -- Keep only this thread's share of [base, base+count): bodies are large, threads are many.
    for i = base + id, math.min(base + count, #all) - 1, nthreads do
      table.insert(bodies, all[i + 1])
    end
    if scenario == "notify-dup" and #bodies == 0 then
      for i = id + 1, #all, nthreads do table.insert(bodies, all[i]) end
    end
  end
end

local function order_no(i)
  return data .. string.format("%026d", i)
end

local function auth(i)
  return { ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1], ["Content-Type"] = "application/json" }
end

-- The next index of this thread's share of [0, count); past its end it wraps (and says so).
local function take()
  local slot = index
  index = index + nthreads
  if slot >= count then
    wrapped = wrapped + 1
    slot = slot % count
  end
  return slot
end

local seq = 0

function request()
  if scenario == "bare" then
    return wrk.format("GET", "/bare")
  elseif scenario == "unifiedorder" or scenario == "jscode2session" then
    return wrk.format("GET", "/upstream/" .. scenario)
  elseif scenario == "read" then
    local i = base + math.random(0, count - 1)
    return wrk.format("GET", "/api/orders/" .. order_no(i), auth(i))
  elseif scenario == "pay" then
    local i = base + take()
    return wrk.format("POST", "/api/orders/" .. order_no(i) .. "/pay", auth(i), "")
  elseif scenario == "order" then
    seq = seq + 1
    return wrk.format("POST", "/api/orders", auth(seq),
      '{"items": [{"product_id": ' .. product_id .. ', "quantity": 2}]}')
  elseif scenario == "notify" then
    seq = seq + 1
    if seq > #bodies then wrapped = wrapped + 1 end
    return wrk.format("POST", "/api/pay/notify", { ["Content-Type"] = "text/xml" }, bodies[((seq - 1) % #bodies) + 1])
  elseif scenario == "notify-dup" then
    seq = seq + 1
    return wrk.format("POST", "/api/pay/notify", { ["Content-Type"] = "text/xml" }, bodies[(seq % #bodies) + 1])
  elseif scenario == "login" then
    -- 1,000 people logging in again and again: "p17#3" is the third login of person 17.
    seq = seq + 1
    local who = math.random(0, 999)
    return wrk.format("POST", "/api/auth/login", { ["Content-Type"] = "application/json" },
      '{"code": "bench-' .. id .. '-' .. who .. '#' .. seq .. '"}')
  end
  error("unknown scenario " .. tostring(scenario))
end

local expect = {
  bare = "ok", unifiedorder = '"ok":true', jscode2session = '"ok":true', read = "out_trade_no",
  pay = "paySign", order = "out_trade_no", notify = "SUCCESS", ["notify-dup"] = "SUCCESS", login = "token",
}

function response(status, headers, body)
  status_count[status] = (status_count[status] or 0) + 1
  if status >= 200 and status < 300 then
    if not string.find(body, expect[scenario], 1, true) then bad = bad + 1 end
  end
end

function done(summary, latency, requests)
  local total_bad, total_wrapped, per_thread = 0, 0, {}
  for _, t in ipairs(threads) do
    total_bad = total_bad + (t:get("bad") or 0)
    total_wrapped = total_wrapped + (t:get("wrapped") or 0)
    local parts = {}
    for code, n in pairs(t:get("status_count") or {}) do table.insert(parts, '"' .. code .. '": ' .. n) end
    table.insert(per_thread, "{" .. table.concat(parts, ", ") .. "}")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "bad_body": %d}, "wrapped": %d, "statuses": [%s]}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    total_bad, total_wrapped, table.concat(per_thread, ", ")))
end
