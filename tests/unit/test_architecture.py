"""The layering the team agreed, checked on every module's imports (read with ast).

- The pure core imports no Redis, FastStream, asyncio, clock, logging or HTTP,
  and calls no clock.
- ``shared`` imports no service.
- Services meet only through the log and ``shared``: a service package
  imports another only along the edges listed in ``ALLOWED`` (the CLI composes
  everything; operator tools and the clinical study fold with the pure core;
  the clinic port mounts the channels router); ``channels`` never imports
  ``prescriber``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CORE = ("services.prescriber.engine", "services.prescriber.arrivals")
IMPURE = (
    "redis",
    "faststream",
    "asyncio",
    "time",
    "logging",
    "structlog",
    "fastapi",
    "starlette",
    "httpx",
    "uvicorn",
    "socket",
    "os",
    "random",
)
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}
#: service package -> the other service packages (or modules) it may import
ALLOWED = {
    "cli": ("services",),
    # redeliver puts stored changes back on a subscription's webhook queue
    "replay": (*CORE, "services.channels.queues", "services.channels.subscriptions"),
    "clinical": (*CORE, "services.replay.rulesets"),
    "prescriber": ("services.channels",),
    "channels": (),
    "logging_svc": (),
}


def modules(package: str) -> Iterator[tuple[str, Path]]:
    """Every module under a dotted package (or the module itself), with its path."""
    base = ROOT / package.replace(".", "/")
    if base.with_suffix(".py").exists():
        yield package, base.with_suffix(".py")
        return
    for path in sorted(base.rglob("*.py")):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield dotted.removesuffix(".__init__"), path


def imports(path: Path, dotted: str) -> set[str]:
    """The absolute module names a module imports (relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = dotted.split(".")
                parent = ".".join(parts[: len(parts) - node.level + path.name.startswith("__")])
                base = f"{parent}.{node.module}" if node.module else parent
            else:
                base = node.module or ""
            for alias in node.names:  # a submodule by its own name, else the module itself
                sub = ROOT / base.replace(".", "/") / alias.name
                submodule = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                found.add(f"{base}.{alias.name}" if submodule else base)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_no_io_clock_logging_or_http(core: str) -> None:
    """No module of the pure core imports an I/O, clock, logging or HTTP library."""
    for dotted, path in modules(core):
        bad = sorted(i for i in imports(path, dotted) if _within(i, IMPURE))
        assert bad == [], f"{dotted} imports {bad}"


@pytest.mark.parametrize("core", CORE)
def test_the_core_calls_no_clock(core: str) -> None:
    """No module of the pure core asks the time: "now" comes from the events."""
    for dotted, path in modules(core):
        tree = ast.parse(path.read_text())
        calls = [
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
        ]
        assert calls == [], f"{dotted} calls {calls}"


def test_shared_imports_no_service() -> None:
    """The project's own package stands alone: nothing in shared imports services."""
    for dotted, path in modules("shared"):
        bad = sorted(i for i in imports(path, dotted) if _within(i, ("services",)))
        assert bad == [], f"{dotted} imports {bad}"


@pytest.mark.parametrize("service", sorted(ALLOWED))
def test_services_meet_only_through_the_log_and_shared(service: str) -> None:
    """A service imports another service only along an allowed edge."""
    own, allowed = f"services.{service}", ALLOWED[service]
    for dotted, path in modules(own):
        bad = sorted(
            i
            for i in imports(path, dotted)
            if _within(i, ("services",)) and not _within(i, (own, *allowed))
        )
        assert bad == [], f"{dotted} imports {bad}"


def test_every_service_package_has_a_rule() -> None:
    """A new service package must be given its edges here before it can import others."""
    packages = {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The checker sees a core module that imports redis, even from inside a function."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from redis.asyncio import Redis\n    return Redis\n")
    assert _within("redis.asyncio", IMPURE)
    assert "redis.asyncio" in imports(module, "services.prescriber.engine.probe")
