"""The example site starts the way the README says, on fakeredis when REDIS_URL is unset."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["DEMO_DATABASE"] = str(tmp_path / "demo.sqlite3")
    env.update(extra)
    return env


def _manage(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    assert _manage(tmp_path, "migrate", "--noinput").returncode == 0
    assert _manage(tmp_path, "ensure_demo_user").returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(MANAGE), "runserver", "--noreload", f"127.0.0.1:{port}"],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/health/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    yield base, proc
    proc.terminate()
    proc.wait(10)


def test_manage_check_is_clean_without_redis_url(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_demo_runs_on_fakeredis_and_says_so(demo_server: tuple[str, subprocess.Popen[str]]) -> None:
    base, proc = demo_server
    with urllib.request.urlopen(base + "/health/", timeout=5) as response:
        assert response.status == 200
        assert b'"fakeredis": true' in response.read()
    with urllib.request.urlopen(base + "/", timeout=5) as response:
        page = response.read().decode()
    assert "Demo default" in page
    assert "/api/sessions/" in page
    proc.terminate()
    _, stderr = proc.communicate(timeout=10)
    assert "fakeredis" in stderr


def test_demo_store_works_in_process(tmp_path: Path) -> None:
    script = (
        "from conversations.store import get_store\n"
        "s = get_store()\n"
        "x = s.create_session(owner='demo')\n"
        "s.append_message(x.id, role='user', content='hello', owner='demo')\n"
        "print(s.get_session(x.id, owner='demo').messages[0].content)\n"
    )
    result = _manage(tmp_path, "shell", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("hello")
