-- backtrack: take tokens from a token bucket, atomically (shared/rate_limit.py).
--
-- KEYS[1]  the bucket: a hash {tokens, ts}; ts is when tokens was last
--          brought up to date, in milliseconds
-- ARGV[1]  refill rate, tokens per second (> 0)
-- ARGV[2]  burst: the most tokens the bucket holds (>= 1)
-- ARGV[3]  cost: tokens this request takes (0 <= cost <= burst)
-- ARGV[4]  now in milliseconds; when empty, the server's clock (TIME), so
--          every process counts on one clock
-- ARGV[5]  ahead: whole tokens the caller would also take, if the bucket holds
--          them beyond `cost`, to spend on its next requests (empty: none)
--
-- A bucket that does not exist is full. The request takes `cost` tokens (and
-- up to `ahead` more) if the bucket holds `cost`, else it takes nothing.
-- Returns {taken, wait_ms, left}: taken is how many it took (0: refused);
-- wait_ms how long until the bucket holds `cost` (0 if taken); left the tokens
-- it holds now, in thousandths, rounded down. The key expires when the bucket
-- would be full again, so idle buckets vanish (and a full one is not stored at
-- all).
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local ahead = tonumber(ARGV[5]) or 0
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then
  tokens, ts = burst, now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end

local taken, wait_ms = 0, 0
if tokens >= cost then
  taken = cost + math.max(0, math.min(ahead, math.floor(tokens - cost)))
  tokens = tokens - taken
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end

local full_ms = math.ceil((burst - tokens) * 1000 / rate)
if full_ms > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', ts)
  redis.call('PEXPIRE', KEYS[1], full_ms)
else
  redis.call('DEL', KEYS[1])
end
return {taken, wait_ms, math.floor(tokens * 1000)}
