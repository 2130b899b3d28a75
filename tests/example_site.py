"""The example project served for real, for the tests that talk to it over HTTP: prepared (migrated,
with its demo user), started under ``manage.py runserver`` or uvicorn on a free port, waited for, and
stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
MANAGE = EXAMPLE / "manage.py"


def example_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of an example site of its own: its database in ``tmp_path``, this process's
    settings module and ``REDIS_URL`` left out (``extra`` may set them again)."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(DEMO_DATABASE=str(tmp_path / "demo.sqlite3"), PYTHONUNBUFFERED="1", **extra)
    return env


def prepare(env: dict[str, str]) -> None:
    """``migrate`` and ``ensure_demo_user``, as ``make demo`` runs them."""
    for command in (["migrate", "--noinput"], ["ensure_demo_user"]):
        done = subprocess.run(
            [sys.executable, str(MANAGE), *command], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr


def runserver_command(port: int) -> list[str]:
    return [sys.executable, str(MANAGE), "runserver", "--noreload", f"127.0.0.1:{port}"]


def uvicorn_command(port: int, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "demo.asgi:application",
        "--app-dir",
        str(EXAMPLE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        *options,
    ]


@contextmanager
def serve(
    command_for_port: object, env: dict[str, str], log_path: Path, *, timeout: float = 60
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``command_for_port(port)`` on a free port and yield (its base URL, the process) once
    ``/health/`` answers; the server's output goes to ``log_path``, shown if it fails to start."""
    assert callable(command_for_port)
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command_for_port(port), env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(base + "/health/", timeout=2).close()
                    break
                except OSError:
                    log.flush()
                    failed = proc.poll() is not None or time.monotonic() > deadline
                    assert not failed, log_path.read_text(errors="replace")[-3000:]
                    time.sleep(0.2)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
