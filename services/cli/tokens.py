"""``backtrack token``: mint a bearer token, inspect one, revoke one or a subject's.

Minting prints the token alone on stdout (scripts capture it) and refuses a
``--ttl`` longer than the role's maximum. ``inspect`` prints what a token
claims (its ``jti`` above all, for ``revoke``) and whether it verifies with
the configured secrets. ``revoke`` writes a record to ``bt:revocations``;
every API process refuses the token(s) within ``BACKTRACK_REVOCATION_STALE_AFTER``
seconds (5 at most).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from shared import auth
from shared.revocations import REVOKED_ROLES
from shared.settings import Settings

ISSUE_ROLES = {"device": "user", "clinic": "clinic", "operator": None}


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``token device|clinic|operator``, ``token inspect`` and ``token revoke``."""
    token = commands.add_parser("token", help="mint, inspect or revoke bearer tokens")
    actions = token.add_subparsers(dest="role", required=True)
    for role, subject in ISSUE_ROLES.items():
        mint = actions.add_parser(role, help=f"print a new {role} token")
        if subject is not None:
            mint.add_argument(f"--{subject}", required=True)
        mint.add_argument("--ttl", type=int, help="lifetime in seconds (at most the role's max)")
    inspect = actions.add_parser("inspect", help="what a token claims (jti, role, subject, times)")
    inspect.add_argument("token", nargs="?", help="the token (default: read from stdin)")
    revoke = actions.add_parser("revoke", help="revoke one token or every token of a subject")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--jti", help="the token's jti (backtrack token inspect shows it)")
    which.add_argument("--subject", help="a user id or clinic id: all its tokens issued until now")
    revoke.add_argument(
        "--role", dest="only", choices=REVOKED_ROLES, help="with --subject: only these tokens"
    )
    revoke.add_argument("--redis-url")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out a ``token`` command; 0 on success, 2 for a refused request, 1 if Redis fails."""
    from redis.exceptions import RedisError  # noqa: PLC0415

    try:
        if args.role == "inspect":
            return inspect(settings, args.token or sys.stdin.read())
        if args.role == "revoke":
            return asyncio.run(revoke(settings, args.jti, args.subject, args.only))
        subject = getattr(args, ISSUE_ROLES[args.role] or "", None)
        print(mint(settings, args.role, subject, args.ttl))
    except ValueError as exc:
        print(f"backtrack token {args.role}: {exc}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"backtrack token {args.role}: Redis failed: {exc}", file=sys.stderr)
        return 1
    return 0


def mint(settings: Settings, role: auth.Role, subject: str | None, ttl: int | None) -> str:
    """A new token; ValueError (naming the setting when ``ttl`` exceeds the maximum) otherwise."""
    lifetimes = settings.token_lifetimes()
    try:
        return auth.issue(role, subject, settings.secret, ttl, lifetimes=lifetimes)
    except ValueError as exc:
        if ttl is not None and ttl > lifetimes.maximum[role]:
            raise ValueError(f"{exc} (BACKTRACK_TOKEN_MAX_TTL_{role.upper()})") from None
        raise


def inspect(settings: Settings, token: str) -> int:
    """Print the token's claims as JSON and whether it verifies (revocations not consulted)."""
    token = token.strip()
    claims = auth.payload_of(token)
    try:
        auth.verify(token, settings.token_keys(), lifetimes=settings.token_lifetimes())
        verdict: dict[str, object] = {"verifies": True}
    except auth.InvalidToken as exc:
        verdict = {"verifies": False, "problem": str(exc)}
    for name in ("iat", "exp"):
        value = claims.get(name)
        if isinstance(value, int | float):
            claims[f"{name}_utc"] = _utc(int(value))
    print(json.dumps(claims | verdict, indent=2))
    return 0


async def revoke(settings: Settings, jti: str | None, subject: str | None, role: str | None) -> int:
    """Write the revocation to ``bt:revocations`` and say what it revoked."""
    from shared.redis_store import connect  # noqa: PLC0415 - Redis only for this command
    from shared.revocation_log import revoke as write  # noqa: PLC0415

    if role and not subject:
        raise ValueError("--role narrows --subject; a jti names one token already")
    if not settings.redis_url:
        raise ValueError("needs the Redis of the deployment: --redis-url or BACKTRACK_REDIS_URL")
    redis = connect(settings.redis_url)
    try:
        kind, value = ("jti", jti) if jti else ("subject", subject)
        done = await write(redis, kind, value or "", settings.token_lifetimes(), role=role)  # type: ignore[arg-type]
    finally:
        await redis.aclose()
    print(done.describe())
    return 0


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


__all__ = ["add_parsers", "run"]
