-- wrk script for benchmarks/online.py: replay distinct transactions, one JSON per line of
-- $REPLAY_FILE. Thread k of $REPLAY_THREADS sends lines k, k + threads, ... so no two
-- requests of one run carry the same transaction, and each thread keeps time order.
-- $REPLAY_DELAY_MS (default 0, flat out) paces each connection: after an answer it waits
-- a random time of that mean (exponential) before its next request, so connections /
-- (delay + latency) is the rate and requests arrive as from many independent terminals.
-- A fixed wait made the connections march in step: a drain answers several at once, they
-- all wait the same time, and they come back together (6.8 transactions per drain at
-- 410 req/s), a convoy that real traffic does not form (benchmarks/README.md).
local counter = 1
local pause = tonumber(os.getenv("REPLAY_DELAY_MS") or "0")

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  bodies = {}
  for line in io.lines(os.getenv("REPLAY_FILE")) do
    bodies[#bodies + 1] = line
  end
  step = tonumber(os.getenv("REPLAY_THREADS") or "1")
  position = tid - 1
  math.randomseed(tid * 7919)
end

function request()
  local body = bodies[(position % #bodies) + 1]
  position = position + step
  return wrk.format("POST", "/score", {["Content-Type"] = "application/json"}, body)
end

function delay()
  if pause <= 0 then
    return 0
  end
  return -pause * math.log(1 - math.random())
end
