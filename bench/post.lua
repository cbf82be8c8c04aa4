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

-- No response() function: wrk then skips handing every answer to Lua (that
-- cost the load core ~20 % of its requests per second), and it counts
-- non-2xx answers itself, which bench/report.mjs reads.
