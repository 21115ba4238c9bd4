#!/bin/sh
# Start redis-server with backtrack's access control.
#
#   sh redis-start.sh /path/to/redis.conf [more redis-server arguments]
#
# redis.conf turns the "default" user off; this adds the one user the
# services log in as, REDIS_USERNAME (default "backtrack"), with the password
# in REDIS_PASSWORD (from a Kubernetes Secret or deploy/.env, never a file in
# the repository). Only the password's SHA-256 reaches the command line.
# The user may touch backtrack's keys (bt:*) and run every command except
# the @dangerous ones (FLUSHALL, KEYS, CONFIG, DEBUG, SHUTDOWN, ...), which
# need an operator's own user.
#
# It refuses to start without a password, with one shorter than 32
# characters, or with characters that would need escaping in a redis:// URL
# (use: openssl rand -hex 32). REDIS_SERVER names the binary (default:
# redis-server on PATH).
set -eu

user="${REDIS_USERNAME:-backtrack}"
password="${REDIS_PASSWORD:-}"
if [ "${#password}" -lt 32 ]; then
  echo "redis-start: REDIS_PASSWORD must be set, at least 32 characters (openssl rand -hex 32)" >&2
  exit 1
fi
case "$password$user" in
  *[!A-Za-z0-9._~-]*)
    echo "redis-start: REDIS_USERNAME and REDIS_PASSWORD may hold only A-Z a-z 0-9 . _ ~ - (they go into a URL)" >&2
    exit 1
    ;;
esac
hash="$(printf '%s' "$password" | sha256sum | cut -d ' ' -f 1)"
conf="$1"
shift
exec "${REDIS_SERVER:-redis-server}" "$conf" \
  --user "$user" reset on "#$hash" '~bt:*' '&*' +@all -@dangerous \
  "$@"
