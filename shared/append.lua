-- backtrack: idempotent, atomic appends of events (DESIGN.md invariants 2, 3, 5).
--
-- One call appends one or more items, each as its own atomic unit, in order.
-- All keys of a call share one partition's hash tag (Redis Cluster safe).
--
-- KEYS, six per item:
--   dedupe key        bt:{pNN}:seen:<user_id>:<event_id>
--   legacy dedupe key bt:{pNN}:seen:<event_id>  (written by older versions; only read)
--   history stream    bt:{pNN}:user:<user_id>   (or bt:{pNN}:rx:<user_id>)
--   feed stream       bt:{pNN}:feed             (or bt:{pNN}:rxfeed)
--   clinic key        bt:{pNN}:clinic:<user_id> (set only if the item names a clinic and
--                     no clinic holds the user: never a transfer, see shared/enrolments.py)
--   erasure record    bt:{pNN}:erased:<user_id> (only read: an erased user's item is refused)
-- ARGV[1] dedupe TTL in seconds; then per item: n (the number of field and
--   value arguments, even), those n arguments, the clinic id or "", and the
--   version the item must take or "" (see below).
--
-- Returns one reply per item: {"accepted", position}, position being the id
-- of the new history entry; {"duplicate", position} if the user stored this
-- event_id already (by an earlier call or an earlier item of this one) with
-- the same fields; {"conflict", position, fields} if the user stored it with
-- other fields (those of the stored entry, so that the caller can tell an
-- older encoding of the same event from another payload; nothing written);
-- {"erased", ""} if the user was erased (their erasure record exists: nothing
-- written, so no key names them again); or {"error", message} if a key holds
-- the wrong type or, for a versioned item, its version would leave a gap
-- (nothing written for it).
--
-- Dedupe is per user: the same event_id from two users is two events. A
-- dedupe key holds the position of the user's history entry that took the
-- event_id, and the item's fields are compared with that entry's (the codec
-- writes the same event as the same fields), so no fingerprint of a payload
-- is stored anywhere. A legacy key (one per partition and event_id, any
-- user's) counts only if the entry at its position in THIS user's history
-- carries this event_id: positions are per stream, so another user's key may
-- name a position this user has too. A user's own key whose entry is gone
-- (the history was deleted) answers "duplicate", as before.
--
-- A versioned item (a PrescriptionChanged: its version given) is idempotent by
-- version, forever, not by the dedupe window: the stream's versions run 1, 2,
-- 3... in order, so the last entry's version says what is there. A version
-- already there answers "duplicate" with that entry's position; the next one
-- is appended; a later one is a gap and an error ("GAP ..."). Its dedupe keys
-- are neither read nor written. Entries carry their version as a field; an
-- entry without it (written before) is read from its JSON.
--
-- The feed entry carries the event's fields plus 'pos' (its history position)
-- and 'prev' (the history entry before it, '0-0' for the first), so a reader
-- whose state is already at 'prev' can fold the event without reading history.
--
-- Redis runs a script atomically but does NOT roll back writes made before an
-- error. So the arguments of every item are checked before the first write,
-- and each item does its checks (TYPE of both streams, the dedupe keys and
-- the entry they name) before its writes. After the checks the writes cannot
-- fail: XADD * always finds a new id, SET overwrites any type, and an OOM
-- refusal can only hit the first write of a script (Redis lets a script that
-- has written carry on), which comes after its item's checks. Stream writes
-- never use MAXLEN: history is never trimmed.

local function bad(why)
  return redis.error_reply('ERR backtrack append: ' .. why)
end

-- the value of field 'name' in a flat field/value list, or nil
local function field(fields, name)
  for k = 1, #fields, 2 do
    if fields[k] == name then
      return fields[k + 1]
    end
  end
  return nil
end

local function version_of(entry)
  local version = field(entry[2], 'version')
  if version then
    return tonumber(version)
  end
  local data = field(entry[2], 'data')
  if data then
    return tonumber(cjson.decode(data)['version'])
  end
  return nil
end

local function same(a, b)
  if #a ~= #b then
    return false
  end
  for k = 1, #a do
    if a[k] ~= b[k] then
      return false
    end
  end
  return true
end

-- The reply for an item whose event_id a dedupe key places at 'position' in
-- the user's history; nil if no entry there carries that event_id.
local function seen_at(history, position, fields)
  local entry = redis.call('XRANGE', history, position, position)[1]
  if not entry or field(entry[2], 'event_id') ~= field(fields, 'event_id') then
    return nil
  end
  if same(entry[2], fields) then
    return {'duplicate', entry[1]}
  end
  return {'conflict', entry[1], entry[2]}
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
local items = #KEYS / 6
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
  local base = 6 * (i - 1)
  local seen, legacy, history, feed, clinic_key, erased =
    KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5], KEYS[base + 6]
  local first = starts[i]
  local n = tonumber(ARGV[first])
  local want = ARGV[first + n + 2]
  local fields = {}
  for j = first + 1, first + n do
    fields[#fields + 1] = ARGV[j]
  end
  local reply = nil
  if redis.call('EXISTS', erased) == 1 then
    reply = {'erased', ''}
  end
  for _, key in ipairs({history, feed}) do
    local kind = redis.call('TYPE', key)['ok']
    if not reply and kind ~= 'none' and kind ~= 'stream' then
      reply = {'error', 'WRONGTYPE backtrack append: ' .. key .. ' holds a ' .. kind}
    end
  end
  if not reply and want == '' then
    local own, old = unpack(redis.call('MGET', seen, legacy))
    if own then
      reply = seen_at(history, own, fields) or {'duplicate', own}
    elseif old then
      reply = seen_at(history, old, fields)
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
