"""A private Redis Cluster of ``RedisServer`` processes: three masters, no replicas.

Each node is a ``RedisServer`` with ``--cluster-enabled yes`` in its own
directory (its ``nodes.conf`` and AOF). The slots are assigned by
``redis-cli --cluster create`` when a redis-cli (or valkey-cli) is found,
else by hand (CLUSTER ADDSLOTS on each node, CLUSTER MEET). ``url`` is the
``redis+cluster://`` URL that ``shared.redis_store.connect`` (and so every
service) understands.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from shared.redis_server import RedisServer, find_binary, free_port

SLOTS = 16384
_MAX_PORT = 65535 - 10000  # the cluster bus listens on port + 10000


def find_cli(server_binary: str) -> str | None:
    """The redis-cli (or valkey-cli) beside ``server_binary``, else one on PATH."""
    for name in ("redis-cli", "valkey-cli"):
        beside = Path(server_binary).with_name(name)
        if beside.is_file():
            return str(beside)
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port > _MAX_PORT:
            continue
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind(("127.0.0.1", port + 10000))
            return port


class ClusterServer:
    """``masters`` cluster-enabled redis-servers on free ports, slots spread evenly.

    ``url`` seeds a cluster client with the first node (the client discovers
    the rest); ``urls`` are the nodes' plain URLs. ``stop()`` stops them all.
    """

    def __init__(self, masters: int = 3, binary: str | None = None, node_timeout_ms: int = 2000):
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.binary = binary or find_binary()
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []

    @classmethod
    def start(cls, **options: Any) -> ClusterServer:
        """A new cluster whose every node reports ``cluster_state:ok``."""
        cluster = cls(**options)
        try:
            return cluster.launch()
        except BaseException:
            cluster.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def urls(self) -> list[str]:
        return [node.url.removesuffix("/0") for node in self.nodes]

    def launch(self, timeout: float = 30.0) -> ClusterServer:
        args: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        args += ("--cluster-node-timeout", str(self.node_timeout_ms))
        for _ in range(self.masters):
            self.nodes.append(self._start_node(args))
        cli = find_cli(self.binary)
        if cli is not None:
            self._create_with_cli(cli, timeout)
        else:
            self._create_by_hand()
        self._wait_ok(timeout)
        return self

    def _start_node(self, args: tuple[str, ...]) -> RedisServer:
        for attempt in range(3):  # a port (or its bus port) may be taken in between
            node = RedisServer(binary=self.binary, port=_cluster_port(), extra_args=args)
            try:
                return node.launch()
            except RuntimeError:
                node.stop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _create_with_cli(self, cli: str, timeout: float) -> None:
        hosts = [f"127.0.0.1:{node.port}" for node in self.nodes]
        command = [cli, "--cluster", "create", *hosts, "--cluster-replicas", "0"]
        done = subprocess.run(
            [*command, "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}")

    def _create_by_hand(self) -> None:
        share = SLOTS // self.masters
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(self._client(node)) for node in self.nodes]
            for i, client in enumerate(clients):
                first = i * share
                last = SLOTS - 1 if i == self.masters - 1 else first + share - 1
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)

    def _wait_ok(self, timeout: float) -> None:
        """Until every node sees all slots assigned and every other node."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with self._client(node) as client:
                while True:
                    info: dict[str, str] = client.execute_command("CLUSTER INFO")
                    known = int(info.get("cluster_known_nodes", 0))
                    if info.get("cluster_state") == "ok" and known == self.masters:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster not ok after {timeout}s: {info}")
                    time.sleep(0.05)

    @staticmethod
    def _client(node: RedisServer) -> redis.Redis:
        return redis.Redis(port=node.port, socket_connect_timeout=1, socket_timeout=5)

    def flushall(self) -> None:
        """Empty every node (FLUSHALL on each master)."""
        for node in self.nodes:
            with self._client(node) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()

    close = stop

    def __enter__(self) -> ClusterServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ClusterServer", "find_cli"]
