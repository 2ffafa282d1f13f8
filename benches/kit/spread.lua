-- spread.lua — writes spread over many documents, for wrk (and the shared kit's servers).
--
-- Each request goes to the next document, /docs/1 .. /docs/NDOCS round robin per wrk
-- thread (connections interleave), so no two requests wait for one document's lock.
--
--   wrk -t1 -c32 -d5s -s benches/kit/spread.lua http://127.0.0.1:PORT -- \
--       METHOD BODYFILE NDOCS [HEADER]...
--     METHOD   : PUT | PATCH | GET
--     BODYFILE : request body, or "-" for none
--     NDOCS    : number of documents, seeded at /docs/1 .. /docs/NDOCS (the kit's NDOCS)
--     HEADER   : "Name: value", repeatable (Content-Type, If-Match, ...)
--
-- done() prints the kit's BENCH_RESULT line (requests, rps, p50/p99, statuses).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   method = args[1] or "PUT"
   local bodyfile = args[2]
   if bodyfile and bodyfile ~= "-" then
      local f = assert(io.open(bodyfile, "rb"))
      body = f:read("*a")
      f:close()
   end
   ndocs = tonumber(args[3] or "1000")
   headers = {}
   for i = 4, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      if name then
         headers[name] = value
      end
   end
   n = 0
end

function request()
   n = n + 1
   return wrk.format(method, "/docs/" .. ((n - 1) % ndocs + 1), headers, body)
end

function response(status, hdrs, b)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local agg = {}
   for _, t in ipairs(threads) do
      for code, k in pairs(t:get("statuses") or {}) do
         agg[code] = (agg[code] or 0) + k
      end
   end
   local parts = {}
   for code, k in pairs(agg) do
      parts[#parts + 1] = string.format('"%d":%d', code, k)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"status":{%s}}\n',
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
