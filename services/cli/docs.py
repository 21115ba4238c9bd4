"""``python -m services.cli.docs``: write the API documents under ``docs/`` from the code.

Each document is built from the same ``create_app`` / subscriber wiring the
services run, with default settings (init arguments, so no ``BACKTRACK_*``
variable of the caller's environment leaks in) and serialised with sorted
keys, so regenerating an unchanged codebase rewrites nothing.
``--check`` writes nothing and exits 1 naming the stale files (what CI runs
through ``tests/unit/test_generated_docs.py``).

Nothing connects: the apps connect only in their lifespans, and registering
FastStream subscribers only records them on the broker.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI
from pydantic_settings import BaseSettings

from shared.keys import Keys
from shared.settings import Settings

#: Shown as the server in the AsyncAPI documents (the compose/Kubernetes address).
REDIS_URL = "redis://redis:6379/0"
ASYNCAPI_VERSION = "3.0.0"
#: The consumer name in the documents; the services use ``<host>-<pid>``.
CONSUMER = "<host>-<pid>"

S = TypeVar("S", bound=BaseSettings)
#: Stands in for the Redis client, processor and dispatcher that handlers close over:
#: registering a subscriber records it on the broker and calls none of them.
UNUSED: Any = None


def _defaults(cls: type[S]) -> S:
    """``cls`` with every field at its default, whatever the environment says."""
    values = {name: field.get_default() for name, field in cls.model_fields.items()}
    values["redis_url"] = REDIS_URL
    values["environment"] = "development"  # the default secret is refused anywhere else
    return cls(**values)


def openapi_ingest() -> dict[str, Any]:
    """The ingest API (services.logging_svc) as served on /openapi.json."""
    from services.logging_svc.app import create_app  # noqa: PLC0415 - one app per document
    from shared.store import MemoryStore  # noqa: PLC0415

    return create_app(_defaults(Settings), store=MemoryStore()).openapi()


def openapi_clinic() -> dict[str, Any]:
    """The prescriber's clinic API (services.prescriber) as served on /openapi.json."""
    from services.prescriber.bootstrap import create_app  # noqa: PLC0415

    return create_app(_defaults(Settings)).openapi()


def openapi_channels() -> dict[str, Any]:
    """The channels' API (services.channels: subscriptions, SSE) as served on /openapi.json."""
    from services.channels.app import create_app  # noqa: PLC0415
    from services.channels.options import ChannelSettings  # noqa: PLC0415

    return create_app(_defaults(ChannelSettings)).openapi()


def _asyncapi(broker: RedisBroker, title: str, description: str) -> dict[str, Any]:
    spec = AsyncAPI(
        broker,
        title=title,
        version="1",
        description=description,
        schema_version=ASYNCAPI_VERSION,
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document


def asyncapi_prescriber() -> dict[str, Any]:
    """The prescriber's FastStream subscribers: the log channel on the rx feeds.

    The partition feeds are read by lease-gated loops, not FastStream; their
    entries are described in the README and the store's key layout.
    """
    from services.prescriber.entrypoints.log_channel import subscribe_log_channel  # noqa: PLC0415

    settings = _defaults(Settings)
    keys = Keys(settings.partitions)
    broker = RedisBroker(REDIS_URL)
    subscribe_log_channel(broker, keys, CONSUMER)
    return _asyncapi(
        broker,
        "backtrack prescriber",
        "Consumer group `prescriber` reads the partition feeds `bt:{pNN}:feed` (entries: "
        "`type`, `event_id`, `user_id`, `data` = the input event's JSON) and appends "
        "PrescriptionChanged; group `channel-log` logs each entry of `bt:{pNN}:rxfeed`.",
    )


def asyncapi_channels() -> dict[str, Any]:
    """The channels' FastStream subscribers: the webhook group on the rx feeds."""
    from services.channels.feed import subscribe_webhook_channel  # noqa: PLC0415

    settings = _defaults(Settings)
    broker = RedisBroker(REDIS_URL)
    subscribe_webhook_channel(broker, UNUSED, Keys(settings.partitions), CONSUMER, UNUSED)
    return _asyncapi(
        broker,
        "backtrack channels",
        "Consumer group `channel-webhook` reads `bt:{pNN}:rxfeed` (entries: `type`, "
        "`event_id`, `user_id`, `data` = the PrescriptionChanged JSON) and queues one "
        "webhook delivery per matching subscription.",
    )


#: File name under docs/ -> its builder.
DOCUMENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "openapi-ingest.json": openapi_ingest,
    "openapi-clinic.json": openapi_clinic,
    "openapi-channels.json": openapi_channels,
    "asyncapi.json": asyncapi_prescriber,
    "asyncapi-channels.json": asyncapi_channels,
}


def render(document: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, UTF-8, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """Every document's file name and text, built from the code as it is now."""
    return {name: render(build()) for name, build in DOCUMENTS.items()}


def stale(out: Path, documents: dict[str, str]) -> list[str]:
    """The names whose file under ``out`` is missing or differs from ``documents``."""
    return [
        name
        for name, text in documents.items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
    ]


def write(out: Path, documents: dict[str, str]) -> list[str]:
    """Write the stale documents under ``out``; returns their names."""
    changed = stale(out, documents)
    out.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (out / name).write_text(documents[name], encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.cli.docs", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"), help="directory (docs)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    documents = generate()
    if args.check:
        names = stale(args.out, documents)
        for name in names:
            print(f"{args.out / name} is stale: run `make docs`", file=sys.stderr)
        return 1 if names else 0
    for name in write(args.out, documents):
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
