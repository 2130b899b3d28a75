"""A private, throwaway ``redis-server`` for tests that must kill, pause, starve or reconfigure Redis.

The shared Redis on 6379 is never touched by these tests: each ``PrivateRedis`` runs its own server on a
free loopback port, in its own temporary directory, without persistence (``--save "" --appendonly no``),
and is stopped when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """One redis-server process that a test owns: start, kill -9, SIGSTOP/SIGCONT, restart (same port)."""

    def __init__(self, *extra_args: str) -> None:
        self.port = free_port()
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="conv-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.stopped = False
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.admin() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}") from None
                time.sleep(0.02)

    def admin(self, **kwargs: Any) -> redis.Redis:
        """A separate client for the test itself (never the store's), with no retries."""
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2, "retry": None}
        options.update(kwargs)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def kill(self) -> None:
        """kill -9: the server vanishes mid-command, as on a crash or an OOM kill."""
        assert self.process is not None
        self._resume_if_stopped()
        self.process.kill()
        self.process.wait(10)

    def stop_signal(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing (a frozen VM, a long fork)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.stopped = True

    def continue_signal(self) -> None:
        self._resume_if_stopped()

    def _resume_if_stopped(self) -> None:
        if self.process is not None and self.stopped:
            os.kill(self.process.pid, signal.SIGCONT)
            self.stopped = False

    def restart(self) -> None:
        """A fresh, empty server on the same port (no persistence), like a crashed Redis coming back."""
        if self.process is not None and self.process.poll() is None:
            self.kill()
        self.start()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._resume_if_stopped()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a wedged server
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def half_written_sessions(
    client: redis.Redis, prefix: str, *, check_index: bool = True, keys: Iterable[str] | None = None
) -> list[str]:
    """What is wrong with the sessions stored under ``prefix``, one line per problem ([] when all is whole).

    A whole session has its meta hash; a message set exactly ``count`` long (absent only when count is
    0); no key without a TTL; and (``check_index``) an owner index entry only while its session exists.
    Expiry legitimately leaves index entries behind until a listing prunes them: pass False then.
    ``keys`` names the keys to inspect (missing ones are fine) instead of a SCAN of the prefix, whose cost
    grows with everything else stored in that Redis.
    """
    from conversations.store.keys import KeyLayout

    layout = KeyLayout(prefix)
    problems: list[str] = []
    sessions: set[str] = set()
    indexes: list[str] = []
    names = (
        (raw.decode() for raw in client.scan_iter(match=f"{prefix}:*", count=1000)) if keys is None else keys
    )
    for key in names:
        if key == layout.layout():
            continue
        ttl = client.pttl(key)
        if ttl == -2:
            continue  # expired between SCAN and now
        if ttl == -1:
            problems.append(f"{key} has no TTL")
        session_id = layout.session_id_from_key(key)
        if session_id is not None:
            sessions.add(session_id)
        elif key.endswith(":sessions"):
            indexes.append(key)
    for session_id in sorted(sessions):
        meta = client.hgetall(layout.meta(session_id))
        length = client.zcard(layout.messages(session_id))
        if not meta:
            if client.exists(*layout.session_keys(session_id)):
                problems.append(f"session {session_id} has keys but no meta")
            continue
        count = int(meta.get(b"count", b"-1"))
        if count != length:
            problems.append(f"session {session_id}: count {count} but {length} messages")
    for index in indexes if check_index else []:
        for member in client.zrange(index, 0, -1):
            if not client.exists(layout.meta(member.decode())):
                problems.append(f"{index} lists {member.decode()}, which does not exist")
    return problems
