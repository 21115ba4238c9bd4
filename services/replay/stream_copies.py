"""The temporary copies a stream is rewritten into, and the scripts that search, write and swap.

- ``temp_key``: a copy's name, ``bt:{pNN}:migrating:<rest of the name>`` (the original's
  hash tag, so its Redis Cluster slot: RENAME needs both keys in one), or for a key
  without a tag (``bt:dlq``) ``{<the name>}:migrating``. No scan for users' streams
  matches one; ``TEMP_PATTERNS`` finds them all.
- ``FIND_LUA`` searches a page of a stream for a plaintext entry on the server.
- ``COPY_LUA`` appends a page of entries to a copy (each under its given id) and renews
  its TTL; the entries come framed in one argument (``frame``): packing one argument
  per field is most of what a client spends.
- ``SWAP_LUA`` renames a copy over its original only if the original is still what was
  copied (``restream``); ``entry_digest`` computes, as the entries are read, the digest
  it compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.replay.scripts import Lua

#: a stream entry as read: its id and its fields
Entry = tuple[bytes, dict[bytes, Any]]

#: a temporary copy from a run that died is gone an hour after its last page at most
TEMP_TTL = 3600
TEMP = "migrating"
#: SCAN patterns of the temporary copies (partitioned keys, and the dead letters' own)
TEMP_PATTERNS = (f"bt:{{p*}}:{TEMP}:*", f"{{bt:dlq*}}:{TEMP}")

_PLAIN = """
-- whether an entry is plaintext with the envelope a seal binds (fields named after 'prefix')
local function plain(fields, prefix)
  local found = 0
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == prefix .. 'enc' then return false end
    if name == prefix .. 'type' or name == prefix .. 'event_id' or name == prefix .. 'user_id'
       or name == prefix .. 'data' then
      found = found + 1
    end
  end
  return found == 4
end
local function plain_letter(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'subscription' then
      for j = 1, #fields, 2 do
        if fields[j] == 'f:data' then
          return string.sub(fields[j + 1], 1, #ARGV[4]) ~= ARGV[4]
        end
      end
      return false
    end
  end
  return plain(fields, 'f:')
end
"""
#: KEYS stream; ARGV start, count, 'entry' or 'letter', the packed prefix
#: -> {1 if a plaintext entry is in the page, the next start or ''}
FIND_LUA = (
    _PLAIN
    + """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return {0, ''} end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
for _, entry in ipairs(entries) do
  if (ARGV[3] == 'letter' and plain_letter(entry[2])) or
     (ARGV[3] == 'entry' and plain(entry[2], '')) then
    return {1, ''}
  end
end
if #entries < tonumber(ARGV[2]) then return {0, ''} end
return {0, '(' .. entries[#entries][1]}
"""
)
#: KEYS copy; ARGV its TTL in seconds, then the page's entries framed (``frame``): per
#: entry its id, the number of field and value strings, those strings -> the copy's length.
#: One argument per page rather than one per string: packing arguments is where a client
#: spends its time.
COPY_LUA = """
local blob, at = ARGV[2], 1
local function take()
  local colon = string.find(blob, ':', at, true)
  local size = tonumber(string.sub(blob, at, colon - 1))
  at = colon + size + 1
  return string.sub(blob, colon + 1, colon + size)
end
while at <= #blob do
  local id, n, fields = take(), tonumber(take()), {}
  for j = 1, n do fields[j] = take() end
  redis.call('XADD', KEYS[1], id, unpack(fields))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('XLEN', KEYS[1])
"""
#: KEYS original, copy; ARGV length, last id, digest ('' for none)
#: -> {'swapped'} | {'changed', length, last id} | {'incomplete'} | {'gone'} | {'groups'}
SWAP_LUA = """
local function tip(key)
  local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #newest == 0 then return '' end
  return newest[1][1]
end
local function digest(key)
  local parts, start = {}, '-'
  while true do
    local page = redis.call('XRANGE', key, start, '+', 'COUNT', 1000)
    for _, entry in ipairs(page) do
      parts[#parts + 1] = entry[1] .. '\\n'
      for _, value in ipairs(entry[2]) do
        parts[#parts + 1] = #value .. ':' .. value
      end
      parts[#parts + 1] = '\\n'
    end
    if #page < 1000 then break end
    start = '(' .. page[#page][1]
  end
  return redis.sha1hex(table.concat(parts))
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then
  redis.call('DEL', KEYS[2])
  return {'gone'}
end
local length, last = redis.call('XLEN', KEYS[1]), tip(KEYS[1])
if length ~= tonumber(ARGV[1]) or last ~= ARGV[2]
   or (ARGV[3] ~= '' and digest(KEYS[1]) ~= ARGV[3]) then
  return {'changed', length, last}
end
if redis.call('TYPE', KEYS[2])['ok'] ~= 'stream' or redis.call('XLEN', KEYS[2]) ~= length
   or tip(KEYS[2]) ~= last then
  redis.call('DEL', KEYS[2])
  return {'incomplete'}
end
local info, flat = {}, redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #flat, 2 do info[flat[i]] = flat[i + 1] end
if info['groups'] > 0 then
  redis.call('DEL', KEYS[2])
  return {'groups'}
end
redis.call('XSETID', KEYS[2], info['last-generated-id'], 'ENTRIESADDED', info['entries-added'],
  'MAXDELETEDID', info['max-deleted-entry-id'])
local ttl = redis.call('PTTL', KEYS[1])
redis.call('RENAME', KEYS[2], KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return {'swapped'}
"""
FIND, COPY, SWAP = Lua(FIND_LUA), Lua(COPY_LUA), Lua(SWAP_LUA)


def temp_key(key: str) -> str:
    """The temporary copy of ``key``, in its Redis Cluster slot (its hash tag, or the whole
    name of a key without one as the tag)."""
    if key.startswith("bt:{"):
        prefix, tag, rest = key.split(":", 2)
        return f"{prefix}:{tag}:{TEMP}:{rest}"
    return f"{{{key}}}:{TEMP}"


def entry_digest(digest: Any, entry_id: bytes, fields: dict[bytes, Any]) -> None:
    """Feed one entry, as read, to ``digest`` the way ``SWAP_LUA`` reads it."""
    digest.update(entry_id + b"\n")
    for name, value in fields.items():
        for part in (name, value):
            digest.update(frame([_raw(part)]))
    digest.update(b"\n")


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def frame(parts: Sequence[bytes]) -> bytes:
    """Strings as one: each as ``<length>:<bytes>`` (what ``COPY_LUA`` takes apart)."""
    return b"".join(b"%d:%s" % (len(part), part) for part in parts)


def frame_entries(entries: Sequence[Entry]) -> bytes:
    """A page of entries as ``COPY_LUA`` takes them: per entry its id, its number of field
    and value strings, those strings, all framed."""
    parts: list[bytes] = []
    for entry_id, fields in entries:
        parts += [entry_id, b"%d" % (2 * len(fields))]
        parts += [_raw(x) for pair in fields.items() for x in pair]
    return frame(parts)


__all__ = [
    "COPY",
    "COPY_LUA",
    "FIND",
    "FIND_LUA",
    "SWAP",
    "SWAP_LUA",
    "TEMP_PATTERNS",
    "TEMP_TTL",
    "Entry",
    "entry_digest",
    "frame",
    "frame_entries",
    "temp_key",
]
