-- backtrack: idempotent, atomic appends of events (DESIGN.md invariants 2, 3, 5).
--
-- One call appends one or more items, each as its own atomic unit, in order.
-- All keys of a call share one partition's hash tag (Redis Cluster safe).
--
-- KEYS, four per item:
--   dedupe key     bt:{pNN}:seen:<event_id>
--   history stream bt:{pNN}:user:<user_id>   (or bt:{pNN}:rx:<user_id>)
--   feed stream    bt:{pNN}:feed             (or bt:{pNN}:rxfeed)
--   clinic key     bt:{pNN}:clinic:<user_id> (set only if the item names a clinic and
--                  no clinic holds the user: never a transfer, see shared/enrolments.py)
-- ARGV[1] dedupe TTL in seconds; then per item: n (the number of field and
--   value arguments, even), those n arguments, the clinic id or "", and the
--   version the item must take or "" (see below).
--
-- Returns one reply per item: {"duplicate", position} if its event_id was
-- stored already (by an earlier call or an earlier item of this one), else
-- {"accepted", position}, position being the id of the new history entry; or
-- {"error", message} if a key holds the wrong type or, for a versioned item,
-- its version would leave a gap (nothing written for it).
--
-- A versioned item (a PrescriptionChanged: its version given) is idempotent by
-- version, forever, not by the dedupe window: the stream's versions run 1, 2,
-- 3... in order, so the last entry's version says what is there. A version
-- already there answers "duplicate" with that entry's position; the next one
-- is appended; a later one is a gap and an error ("GAP ..."). Its dedupe key
-- is neither read nor written. Entries carry their version as a field; an
-- entry without it (written before) is read from its JSON.
--
-- The feed entry carries the event's fields plus 'pos' (its history position)
-- and 'prev' (the history entry before it, '0-0' for the first), so a reader
-- whose state is already at 'prev' can fold the event without reading history.
--
-- Redis runs a script atomically but does NOT roll back writes made before an
-- error. So the arguments of every item are checked before the first write,
-- and each item does its checks (GET on the dedupe key, TYPE of both streams)
-- before its writes. After the checks the writes cannot fail: XADD * always
-- finds a new id, SET overwrites any type, and an OOM refusal can only hit
-- the first write of a script (Redis lets a script that has written carry
-- on), which comes after its item's checks. Stream writes never use MAXLEN:
-- history is never trimmed.

local function bad(why)
  return redis.error_reply('ERR backtrack append: ' .. why)
end

local function version_of(entry)
  local fields = entry[2]
  for k = 1, #fields, 2 do
    if fields[k] == 'version' then
      return tonumber(fields[k + 1])
    end
  end
  for k = 1, #fields, 2 do
    if fields[k] == 'data' then
      return tonumber(cjson.decode(fields[k + 1])['version'])
    end
  end
  return nil
end

-- nil when version 'want' comes next after the stream's last entry; else the reply for it
local function taken(stream, last, want)
  if not want or want < 1 or want ~= math.floor(want) then
    return {'error', 'backtrack append: bad version'}
  end
  local have = 0
  if last then
    have = version_of(last)
    if not have then
      return {'error', 'backtrack append: ' .. stream .. ' ends in an entry without a version'}
    end
  end
  if want == have + 1 then
    return nil
  end
  if want > have + 1 then
    return {'error', 'GAP backtrack append: version ' .. want .. ' after ' .. have .. ' in ' .. stream}
  end
  -- versions run 1, 2, 3... in order, so version 'want' is this far from the end
  local back = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', have - want + 1)
  return {'duplicate', back[#back][1]}
end

local ttl = tonumber(ARGV[1])
if not ttl or ttl < 1 or ttl ~= math.floor(ttl) then
  return bad('bad ttl')
end
local items = #KEYS / 4
if items < 1 or items ~= math.floor(items) then
  return bad('bad arguments')
end

-- the argument shape of every item, before anything is written
local starts = {}
local a = 2
for i = 1, items do
  local n = tonumber(ARGV[a])
  if not n or n < 2 or n % 2 ~= 0 or a + n + 2 > #ARGV then
    return bad('bad arguments')
  end
  starts[i] = a
  a = a + n + 3
end
if a - 1 ~= #ARGV then
  return bad('bad arguments')
end

local replies = {}
for i = 1, items do
  local seen, history, feed, clinic_key = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local first = starts[i]
  local n = tonumber(ARGV[first])
  local want = ARGV[first + n + 2]
  local reply = nil
  local stored = false
  if want == '' then
    stored = redis.call('GET', seen)
  end
  if stored then
    reply = {'duplicate', stored}
  else
    for _, key in ipairs({history, feed}) do
      local kind = redis.call('TYPE', key)['ok']
      if not reply and kind ~= 'none' and kind ~= 'stream' then
        reply = {'error', 'WRONGTYPE backtrack append: ' .. key .. ' holds a ' .. kind}
      end
    end
  end
  local last = nil
  if not reply then
    last = redis.call('XREVRANGE', history, '+', '-', 'COUNT', 1)[1]
    if want ~= '' then
      reply = taken(history, last, tonumber(want))
    end
  end
  if not reply then
    local prev = '0-0'
    if last then
      prev = last[1]
    end
    local fields = {}
    for j = first + 1, first + n do
      fields[#fields + 1] = ARGV[j]
    end
    -- checks done; from here on nothing fails, so no item is ever half-written
    local position = redis.call('XADD', history, '*', unpack(fields))
    redis.call('XADD', feed, '*', 'pos', position, 'prev', prev, unpack(fields))
    if want == '' then
      redis.call('SET', seen, position, 'EX', ARGV[1])
    end
    local clinic = ARGV[first + n + 1]
    if clinic ~= '' then
      redis.call('SET', clinic_key, clinic, 'NX')
    end
    reply = {'accepted', position}
  end
  replies[i] = reply
end
return replies
