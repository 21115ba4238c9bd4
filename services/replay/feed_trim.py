"""Deleting the plaintext entries of a partition feed that every consumer group is done with.

A feed (``bt:{pNN}:feed``, ``bt:{pNN}:rxfeed``) is read by consumer groups, so it is never
renamed, and an entry is never edited; but a feed is transport, not history (DESIGN.md
invariant 5): an entry every group has acknowledged may go. ``FEED_LUA`` goes through a
feed a page at a time and, atomically with what it reads of the groups, XDELs each
plaintext entry that is below every group's last delivered id and pending in none; the
entry at the lowest last delivered id too when it is the feed's newest (every group has it).
So no group's lag becomes unknown (Redis computes it while no deleted id is at or above a
group's last delivered id; at the newest entry it is exact). A plaintext entry some group
has not acknowledged stays, counted as left, for a later run; so does every plaintext
entry of a feed with no group, or without a group the caller names as required (a group
created later would start from the beginning and find nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from services.replay.scripts import Lua, run
from shared.streams import text

#: KEYS feed; ARGV start ('-' or '(id'), page size, then the groups that must exist
#: -> {entries deleted, plaintext entries left, the next start or '', entries read}
FEED_LUA = """
local function id(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function below(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
local function sealed(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'enc' then return true end
  end
  return false
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return {0, 0, '', 0} end
local floor, names, groups = nil, {}, {}
for _, flat in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #flat, 2 do info[flat[i]] = flat[i + 1] end
  names[info['name']] = true
  groups[#groups + 1] = info
  local last = id(info['last-delivered-id'])
  if floor == nil or below(last, floor) then floor = last end
end
for i = 3, #ARGV do
  if not names[ARGV[i]] then floor = nil end
end
local size = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', size)
if #entries == 0 then return {0, 0, '', 0} end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
local pending = {}
if floor and #entries > 0 then
  local first, last = entries[1][1], entries[#entries][1]
  for _, group in ipairs(groups) do
    local start = first
    while group['pending'] > 0 do
      local got = redis.call('XPENDING', KEYS[1], group['name'], start, last, 1000)
      for _, item in ipairs(got) do pending[item[1]] = true end
      if #got < 1000 then break end
      start = '(' .. got[#got][1]
    end
  end
end
local gone, left = {}, 0
for _, entry in ipairs(entries) do
  if not sealed(entry[2]) then
    local at = id(entry[1])
    local done = floor and (below(at, floor) or (entry[1] == newest and not below(floor, at)))
    if done and not pending[entry[1]] then
      gone[#gone + 1] = entry[1]
    else
      left = left + 1
    end
  end
end
if #gone > 0 then redis.call('XDEL', KEYS[1], unpack(gone)) end
local following = ''
if #entries == size then following = '(' .. entries[#entries][1] end
return {#gone, left, following, #entries}
"""
_FEED = Lua(FEED_LUA)


@dataclass(frozen=True, slots=True)
class Trimmed:
    """What one pass over a feed did: plaintext entries deleted, and left (not acknowledged)."""

    deleted: int
    left: int


async def trim(
    redis: Redis,
    feed: str,
    required: Sequence[str] = (),
    page: int = 500,
    on_page: Callable[[int], None] = lambda read: None,
) -> Trimmed:
    """One pass over ``feed`` (``FEED_LUA``, a page per call); ``on_page`` hears how
    many entries each page read."""
    deleted = left = 0
    start = "-"
    while start:
        reply = await run(redis, _FEED, [feed], [start, page, *required])
        deleted, left, start = deleted + int(reply[0]), left + int(reply[1]), text(reply[2])
        on_page(int(reply[3]))
    return Trimmed(deleted, left)


__all__ = ["FEED_LUA", "Trimmed", "trim"]
