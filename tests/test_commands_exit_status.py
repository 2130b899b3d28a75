"""The operator commands' exit statuses, as a shell or cron sees them: 2 for a command line the command
refuses (argparse's and Django's usage-error status; nothing was read or written), 1 for a run that failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage(
    *args: str, settings: str = "tests.settings", pythonpath: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings,
        "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, str(ROOT)) if p),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["conversations_report", "--top", "many"], "argument --top: 'many' is not a whole number."),
        (["conversations_report", "--top", "0"], "argument --top: 0 is outside 1..1000."),
        (["conversations_report", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["conversations_report", "--idle-longer-than", "soon"], "'soon' is not a duration"),
        (["conversations_report", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["conversations_purge", "--noinput"], "one of the arguments --owner --idle-longer-than --all"),
        (["conversations_purge", "--all", "--owner", "user:1"], "not allowed with argument --all"),
        (["conversations_import", "--dry-run", "--delete-source"], "not allowed with argument --dry-run"),
        # Refused by the import's own option check rather than by argparse: the same status.
        (
            ["conversations_import", "--owner-template", "user:"],
            "--owner-template must contain {} exactly once",
        ),
    ],
)
def test_a_refused_command_line_exits_2_with_the_reason(args: list[str], message: str) -> None:
    result = manage(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_a_failed_run_exits_1(tmp_path: Path) -> None:
    (tmp_path / "unreachable_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\nCONVERSATIONS = {'CACHE_ALIAS': 'unreachable'}\n"
    )
    result = manage("conversations_report", settings="unreachable_settings", pythonpath=str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "Cannot reach Redis" in result.stderr
