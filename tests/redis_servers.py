"""Local Redis topologies for the deployment tests: a Redis Cluster and a Sentinel-watched primary/replica.

Every process runs on free loopback ports, in its own temporary directory, without persistence, and is
stopped by ``close()`` (the fixtures call it in a finalizer, so also when a test fails). One server
process is a ``tests.redis_server.PrivateRedis``; this module only wires several of them together.
Nothing here touches the shared Redis on 6379.

The module-scoped fixtures ``cluster`` and ``topology`` (a Sentinel) are shared by the test modules that
import them (``from tests.redis_servers import local_cluster``): each module gets its own topology.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import IN_CI
from tests.redis_server import REDIS_SERVER, PrivateRedis, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail loudly after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout} s waiting for {what} (last error: {last_error!r})")


def _distinct_free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


class LocalCluster:
    """A Redis Cluster of ``primaries`` primaries (no replicas) built with ``redis-cli --cluster create``."""

    def __init__(self, primaries: int = 3) -> None:
        self.nodes: list[PrivateRedis] = []
        taken: set[int] = set()
        for _ in range(primaries):
            node = PrivateRedis()
            while node.port in taken:  # pragma: no cover - the kernel rarely hands out a port twice
                node = PrivateRedis()
            taken.add(node.port)
            self.nodes.append(node)
        # Redis 7 lets the cluster bus use any port; the default (port + 10000) may be taken or > 65535.
        for node, bus_port in zip(self.nodes, _distinct_free_ports(primaries, taken), strict=True):
            node.extra_args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(bus_port),
                "--cluster-node-timeout",
                "5000",
            ]

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{node.port}/0" for node in self.nodes]

    def cache_config(self) -> dict[str, Any]:
        """A CACHES entry on this cluster through ``ClusterClient``, as the README's Deployment shows."""
        return {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": self.urls,
            "OPTIONS": {
                "CLIENT_CLASS": "conversations.clients.ClusterClient",
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 5,
            },
        }

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")

        def converged() -> bool:
            for node in self.nodes:
                with node.admin() as admin:
                    fields = admin.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
                    if fields.get("cluster_state") != "ok" or int(
                        fields.get("cluster_known_nodes", 0)
                    ) != len(self.nodes):
                        return False
            return True

        wait_until(converged, timeout=30, what="cluster_state:ok on every node")
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class LocalSentinel:
    """A primary, one replica and one Sentinel (quorum 1) watching them under the name ``service``."""

    def __init__(self, service: str) -> None:
        self.service = service
        # The default diskless-sync delay (5 s, waiting for more replicas to join) only slows the test.
        no_delay = ("--repl-diskless-sync-delay", "0")
        self.primary = PrivateRedis(*no_delay)
        self.replica = PrivateRedis(*no_delay, "--replicaof", "127.0.0.1", str(self.primary.port))
        self.port = _distinct_free_ports(1, {self.primary.port, self.replica.port})[0]
        self.dir = Path(tempfile.mkdtemp(prefix="conv-sentinel-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalSentinel:
        self.primary.start()
        self.replica.start()
        config = self.dir / "sentinel.conf"  # Sentinel rewrites its config file, so it must be writable.
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 5000\n"
            f"sentinel failover-timeout {self.service} 20000\n"
        )
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with self.admin() as sentinel:
            wait_until(sentinel.ping, timeout=10, what="the sentinel to answer")
            # Shorter periods than production (info every 10 s, reconfiguration after 8 s, 30 s of TILT
            # after a stall of a busy machine) keep the test short; the failover runs as in production.
            sentinel.execute_command(
                "SENTINEL DEBUG", "info-period", 250, "publish-period", 250, "tilt-period", 2000
            )

            def replica_known() -> bool:
                replicas = sentinel.sentinel_slaves(self.service)
                return any(
                    r["port"] == self.replica.port
                    and r.get("master-link-status") == "ok"
                    and not r.get("is_sdown")
                    and not r.get("is_disconnected")
                    for r in replicas
                )

            wait_until(replica_known, timeout=30, what="the sentinel to see a healthy replica")
        with self.replica.admin() as replica:
            wait_until(
                lambda: replica.info("replication").get("master_link_status") == "up",
                timeout=30,
                what="the replica to finish its first sync",
            )
        return self

    def cache_config(self) -> dict[str, Any]:
        """A django-redis CACHES entry through this sentinel, as the README's Deployment shows."""
        return {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{self.service}/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": [("127.0.0.1", self.port)],
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 2,
            },
        }

    def admin(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True)

    def primary_port(self) -> int:
        with self.admin() as sentinel:
            _host, port = sentinel.sentinel_get_master_addr_by_name(self.service)
            return int(port)

    def failover(self) -> int:
        """``SENTINEL FAILOVER``; returns the new primary's port once it has been promoted."""
        old = self.primary_port()
        with self.admin() as sentinel:
            # NOGOODSLAVE while the sentinel's view of the replica is being refreshed: ask again.
            wait_until(
                lambda: sentinel.execute_command("SENTINEL FAILOVER", self.service),
                timeout=30,
                what="the sentinel to accept SENTINEL FAILOVER",
                interval=0.2,
            )
        new = wait_until(
            lambda: (port := self.primary_port()) != old and port,
            timeout=30,
            what="the sentinel to announce the new primary",
        )
        return int(new)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a wedged sentinel
                self.process.kill()
                self.process.wait(10)
        self.primary.close()
        self.replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _require(*tools: str) -> None:
    """Skip (fail under CI=true: real-Redis tests never skip) when a Redis binary is missing."""
    missing = [tool for tool in tools if not shutil.which(tool) and not os.path.exists(tool)]
    if missing:
        message = f"{', '.join(missing)} not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: real-Redis tests never skip)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module", name="cluster")
def local_cluster() -> Iterator[LocalCluster]:
    """A local 3-primary Redis Cluster for the importing test module."""
    _require(REDIS_SERVER, REDIS_CLI)
    local = LocalCluster(primaries=3)
    try:
        yield local.start()
    finally:
        local.close()


@pytest.fixture(scope="module", name="topology")
def local_sentinel() -> Iterator[LocalSentinel]:
    """A local primary, replica and sentinel for the importing test module."""
    _require(REDIS_SERVER)
    # A service name of its own: django-redis caches connection pools per LOCATION, process-wide.
    setup = LocalSentinel(f"ct-{uuid.uuid4().hex[:10]}")
    try:
        yield setup.start()
    finally:
        setup.close()
