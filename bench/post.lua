-- wrk script for keyless's benchmarks: POST the body in $BENCH_BODY (a file)
-- with the headers an OpenAI SDK sends, a placeholder key (keyless removes it
-- and injects the provider's), and an optional mockllm directive in
-- $BENCH_XMOCK (e.g. "events=20").
local path = os.getenv("BENCH_BODY")
local f = assert(io.open(path, "rb"), "BENCH_BODY must name a readable file")
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-placeholder-not-a-key"
wrk.headers["User-Agent"] = "OpenAI/JS 6.9.0"
local xmock = os.getenv("BENCH_XMOCK")
if xmock and xmock ~= "" then
  wrk.headers["x-mock"] = xmock
end

-- Count answers by status, so a run that got errors is visible in the report.
local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
