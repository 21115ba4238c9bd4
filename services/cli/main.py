"""``backtrack``: run the stack, the demo, mint and revoke tokens, read a user's history,
export or erase a user's data, read the audit log of who read whose, seal what was stored
before encryption at rest and rewrap the data keys."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from services.cli import tokens
from shared.settings import Settings, refusal


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backtrack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole stack in the foreground")
    up.add_argument("--redis-url", help="an external Redis (default: an embedded one)")

    demo = commands.add_parser(
        "demo", help="the stack plus virtual patients living against it over HTTP, with a report"
    )
    demo.add_argument("--redis-url", help="an external Redis (default: a fresh embedded one)")
    demo.add_argument("--patients", type=_positive, default=200)
    demo.add_argument("--seed", type=int, help="cohort seed (default: make clinical's)")
    demo.add_argument("--weeks", type=_positive, default=12, help="program weeks per patient")
    demo.add_argument("--report", default="backtrack-report.html", help="HTML report path")

    tokens.add_parsers(commands)

    history = commands.add_parser("history", help="a user's timeline")
    history.add_argument("user")
    history.add_argument("--redis-url")
    history.add_argument("--plot", help="also draw pain against level to this PNG")
    _privacy_parsers(commands)
    _replay_parsers(commands)
    return parser


def _privacy_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from services.cli.audit import since  # noqa: PLC0415

    export = commands.add_parser(
        "export", help="everything held about a user, as JSON (the export is audited)"
    )
    export.add_argument("--user", required=True)
    export.add_argument("--redis-url")
    export.add_argument("--out", help="write to FILE (default: stdout)")
    export.add_argument(
        "--fhir", action="store_true", help="a FHIR Bundle: not built yet, refused (exit 2)"
    )
    erase = commands.add_parser(
        "erase", help="erase a patient: data key destroyed, data deleted, clinics told"
    )
    which = erase.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help="the patient to erase")
    which.add_argument("--resume", action="store_true", help="finish every erasure left unfinished")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase.add_argument("--redis-url")
    audit = commands.add_parser("audit", help="who read whose data, when; oldest first")
    audit.add_argument("--user", help="only reads of this user")
    audit.add_argument("--since", type=since, help="RFC 3339 time (no offset: UTC)")
    audit.add_argument("--redis-url")
    audit.add_argument("--table", action="store_true", help="a table instead of JSON lines")
    migrate = commands.add_parser("migrate", help="move a deployment's data to a new format")
    steps = migrate.add_subparsers(dest="step", required=True)
    steps.add_parser(
        "encrypt",
        help="seal what was stored before encryption at rest; rerun until it exits 0",
    ).add_argument("--redis-url")
    keys = commands.add_parser("keys", help="patients' data keys")
    actions = keys.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "rewrap", help="rewrap every data key under the current master key (a rotation)"
    ).add_argument("--redis-url")


def _replay_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser("replay", help="operator replays of the event log")
    tools = replay.add_subparsers(dest="tool", required=True)
    rebuild = tools.add_parser("rebuild", help="recompute read models blue/green, resumably")
    scope = rebuild.add_mutually_exclusive_group(required=True)
    scope.add_argument("--user")
    scope.add_argument("--all", action="store_true")
    rebuild.add_argument("--id", help="rebuild id (rerun with it to resume)")
    whatif = tools.add_parser("what-if", help="replay under other rules; writes nothing")
    whatif.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    whatif.add_argument(
        "--rules", help="a built-in rule set (1, 2; default 2) or a JSON or TOML file of values"
    )
    whatif.add_argument("--out", help="also write the differences to FILE.csv or FILE.json")
    asof = tools.add_parser("as-of", help="state and prescription as of a past time")
    asof.add_argument("time", help="RFC 3339 time (no offset: UTC)")
    asof.add_argument("--user")
    asof.add_argument("--arrived", action="store_true", help="events stored by then")
    again = tools.add_parser("redeliver", help="queue a time range again for one subscription")
    again.add_argument("--subscription", required=True)
    again.add_argument("--since", required=True)
    again.add_argument("--until")

    dlq = commands.add_parser("dlq", help="dead letters: list, show, retry, drop")
    actions = dlq.add_subparsers(dest="action", required=True)
    actions.add_parser("list").add_argument("--count", type=int, default=100)
    for action in ("show", "retry", "drop"):
        actions.add_parser(action).add_argument("id")
    for sub in [*tools.choices.values(), *actions.choices.values()]:
        sub.add_argument("--redis-url")
    for sub in (rebuild, whatif, asof):
        sub.add_argument(
            "--metrics-port",
            type=_port,
            metavar="PORT",
            help="serve progress on http://BACKTRACK_HOST:PORT/metrics while the run lasts",
        )
    for sub in (whatif, asof):
        sub.add_argument(
            "--workers",
            type=_workers,
            metavar="N",
            help="split the users between N processes (about one per core; default 1)",
        )


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {value}")
    return int(value)


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"not a number of processes from 1 to 64: {value}")
    return int(value)


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "redis_url": "redis_url",
        "metrics_port": "replay_metrics_port",
        "workers": "replay_workers",
    }
    given = {field: getattr(args, flag, None) for flag, field in flags.items()}
    values = {field: value for field, value in given.items() if value}
    if _local_stack(args):
        values["environment"] = "development"
    return Settings(**values)


def _local_stack(args: argparse.Namespace) -> bool:
    """``up`` and ``demo`` on the embedded Redis, listening on loopback only, are local:
    they run as development unless BACKTRACK_ENVIRONMENT says otherwise (every other
    command, and a stack reachable from the network, defaults to production)."""
    embedded = not (getattr(args, "redis_url", None) or os.environ.get("BACKTRACK_REDIS_URL"))
    host = os.environ.get("BACKTRACK_HOST", "127.0.0.1")
    return (
        args.command in ("up", "demo")
        and embedded
        and _loopback(host)
        and "BACKTRACK_ENVIRONMENT" not in os.environ
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "tool", None) == "as-of" and args.user and args.metrics_port is not None:
        parser.error("--metrics-port watches a run over every user; as-of --user reads one")
    if getattr(args, "tool", None) == "as-of" and args.user and args.workers is not None:
        parser.error("--workers splits a run over every user; as-of --user reads one")
    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"backtrack: {refusal(exc)}", file=sys.stderr)
        return 1
    if args.command == "token":
        return tokens.run(settings, args)
    from shared.log import configure_logging  # noqa: PLC0415

    # the demo and history speak through their own output; logs only for trouble
    configure_logging("INFO" if args.command == "up" else "WARNING")
    if args.command == "up":
        return _up(settings)
    if args.command == "demo":
        from services.cli.demo import run_demo  # noqa: PLC0415

        return run_demo(settings, args.patients, args.seed, args.weeks, args.report)
    if args.command == "history":
        from services.cli.history import show_history  # noqa: PLC0415

        return asyncio.run(show_history(settings, args.user, args.plot))
    if args.command == "export":
        from services.cli.export import export_user  # noqa: PLC0415

        return asyncio.run(export_user(settings, args.user, args.out, args.fhir))
    if args.command == "erase":
        from services.cli.erase import erase  # noqa: PLC0415

        return asyncio.run(erase(settings, args.user, args.resume, args.yes))
    if args.command == "audit":
        from services.cli.audit import show_audit  # noqa: PLC0415

        return asyncio.run(show_audit(settings, args.user, args.since, args.table))
    if args.command in ("replay", "dlq"):
        return asyncio.run(_replay(settings, args))
    if args.command in ("migrate", "keys"):
        from services.cli import migrate  # noqa: PLC0415

        return asyncio.run(
            migrate.encrypt(settings) if args.command == "migrate" else migrate.rewrap(settings)
        )
    return 2


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli import replay  # noqa: PLC0415

    if args.command == "dlq":
        return await replay.dlq(
            settings,
            args.action,
            getattr(args, "id", None),
            args.count if args.action == "list" else 0,
        )
    if args.tool == "rebuild":
        return await replay.rebuild(settings, args.user, args.id)
    if args.tool == "what-if":
        return await replay.what_if(settings, args.set, args.rules, args.out)
    if args.tool == "as-of":
        return await replay.as_of(settings, replay.parse_time(args.time), args.user, args.arrived)
    until = replay.parse_time(args.until) if args.until else None
    return await replay.redeliver(settings, args.subscription, replay.parse_time(args.since), until)


def _up(settings: Settings) -> int:
    from services.cli.stack import Stack  # noqa: PLC0415

    stack = Stack(settings)
    try:
        stack.start()
        print(
            f"ingest   {stack.ingest_url}\nclinic   {stack.clinic_url}\nredis    {stack.redis_url}"
        )
        if settings.is_local:
            print("tokens   BACKTRACK_ENVIRONMENT=development backtrack token operator")
        print("Ctrl-C stops everything.", flush=True)
        return stack.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def run() -> int:
    """The ``backtrack`` command: ``main`` in a process of its own, its collector tuned.

    A replay decodes and folds millions of short-lived objects; with the
    services' collector settings (``shared.runtime``) it runs about 40% faster.
    ``main`` itself leaves the collector alone, for callers in a process of
    their own making.
    """
    from shared.runtime import tune_gc  # noqa: PLC0415

    tune_gc()
    return main()


if __name__ == "__main__":
    sys.exit(run())
