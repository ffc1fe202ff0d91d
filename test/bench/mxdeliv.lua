-- wrk script for POST /mxdeliv (used by test/bench/inbound.bench.ts).
--   BODY=path/to/message.eml MAIL_FROM=alice@remote.test MAIL_TO=bob@chat.test \
--     wrk -t2 -c32 -d10s --latency -s test/bench/mxdeliv.lua http://127.0.0.1:PORT/mxdeliv
-- The body is read once; every request is the same raw RFC 5322 message. If this script fails,
-- wrk falls back to plain GETs: the caller must check "Non-2xx or 3xx responses".
local path = os.getenv("BODY")
if path == nil or path == "" then
  error("BODY (path of the message file) is not set")
end
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "message/rfc822"
wrk.headers["X-Mail-From"] = os.getenv("MAIL_FROM") or "alice@remote.test"
wrk.headers["X-Mail-To"] = os.getenv("MAIL_TO") or "bob@chat.test"
