-- backtrack: idempotent, atomic append of one event (DESIGN.md invariants 2, 3, 5).
--
-- KEYS[1] dedupe key     bt:{pNN}:seen:<event_id>
-- KEYS[2] history stream bt:{pNN}:user:<user_id>   (or bt:{pNN}:rx:<user_id>)
-- KEYS[3] feed stream    bt:{pNN}:feed             (or bt:{pNN}:rxfeed)
-- KEYS[4] clinic key     bt:{pNN}:clinic:<user_id> (optional)
-- ARGV[1] dedupe TTL in seconds; ARGV[2 .. n-1] field, value pairs; ARGV[n] clinic id or ""
--
-- Returns {"duplicate", position} if the event_id was stored already, else
-- {"accepted", position}: position is the id of the new history entry.
--
-- The feed entry carries the event's fields plus 'pos' (its history position)
-- and 'prev' (the history entry before it, '0-0' for the first), so a reader
-- whose state is already at 'prev' can fold the event without reading history.
--
-- Redis runs a script atomically but does NOT roll back writes made before an
-- error. So the script does every check that could fail before its first write:
-- reads and validation first (GET on the dedupe key, TYPE of both streams, the
-- TTL and argument shape), then the writes. After the checks the writes cannot
-- fail: XADD * always finds a new id, SET overwrites any type, and an OOM
-- refusal can only hit the first write of a script (Redis lets a script that
-- has written carry on), which is before anything was written. Stream writes
-- never use MAXLEN: history is never trimmed.

local n = #ARGV
if #KEYS < 3 or n < 4 or (n - 2) % 2 ~= 0 then
  return redis.error_reply('ERR backtrack append: bad arguments')
end
local ttl = tonumber(ARGV[1])
if not ttl or ttl < 1 or ttl ~= math.floor(ttl) then
  return redis.error_reply('ERR backtrack append: bad ttl')
end

local stored = redis.call('GET', KEYS[1])
if stored then
  return {'duplicate', stored}
end

for i = 2, 3 do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= 'stream' then
    return redis.error_reply('WRONGTYPE backtrack append: ' .. KEYS[i] .. ' holds a ' .. kind)
  end
end

local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then
  prev = last[1][1]
end

local fields = {}
for i = 2, n - 1 do
  fields[#fields + 1] = ARGV[i]
end

-- Checks done; from here on nothing fails, so nothing is ever half-written.
local position = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XADD', KEYS[3], '*', 'pos', position, 'prev', prev, unpack(fields))
redis.call('SET', KEYS[1], position, 'EX', ARGV[1])
local clinic = ARGV[n]
if KEYS[4] and clinic ~= '' then
  redis.call('SET', KEYS[4], clinic)
end
return {'accepted', position}
