-- wrk script: POST pre-signed Twilio webhooks, cycling through a file of requests.
--
--   wrk -t2 -c50 -d12s --latency -s bench/wrk_signed.lua http://127.0.0.1:PORT -- FILE PATH THREADS
--
-- FILE has one request per line: "<X-Twilio-Signature>\t<form body>" (bench/webhook_intake.py
-- writes it; each line carries its own MessageSid). Every request is formatted once in init(),
-- so the load generator does no per-request work beyond picking the next string. Each wrk thread
-- starts at its own offset. done() prints one line "WRK_JSON {...}" with the figures.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
end

local requests = {}
local total = 0
local position = 0

function init(args)
  local file, route, threads = args[1], args[2], tonumber(args[3] or "1")
  for line in io.lines(file) do
    local signature, body = line:match("^([^\t]+)\t(.*)$")
    if signature then
      total = total + 1
      requests[total] = wrk.format("POST", route, {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Twilio-Signature"] = signature,
      }, body)
    end
  end
  if total == 0 then
    error("no requests in " .. file)
  end
  position = math.floor((thread_index - 1) * total / threads)
end

function request()
  position = position + 1
  if position > total then
    position = 1
  end
  return requests[position]
end

function done(summary, latency, requests_stats)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
