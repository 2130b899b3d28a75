"""The release artefacts, built for real: what ``pip install django-conversations`` would get.

``python -m build`` makes the sdist and the wheel, ``twine check`` accepts them, the wheel carries the
package and its ``py.typed`` and nothing of the repository's other trees, and the wheel installed alone
in a fresh venv (no extras: no drf-spectacular, no hiredis) passes ``django-admin check`` on a minimal site.
Needs ``build`` and ``twine`` (the dev extra) and an index to fetch the dependencies from; skipped
locally without them, never under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
NOT_SHIPPED = ("tests/", "example_project/", "benchmarks/", "loadtest/")

pytestmark = pytest.mark.slow

MINIMAL_SITE = """
SECRET_KEY = "packaging-test"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "conversations",
]
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
    }
}
ROOT_URLCONF = "site_urls"
USE_TZ = True
"""

MINIMAL_URLS = """
from django.urls import include, path

urlpatterns = [path("api/", include("conversations.urls"))]
"""


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, check=False, **kwargs
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [name for name in ("build", "twine") if importlib.util.find_spec(name) is None]
    if missing:
        message = f"needs {', '.join(missing)} (pip install -e '.[dev]')"
        if IN_CI:
            pytest.fail(message + " (CI=true: the packaging test never skips)", pytrace=False)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("dist")
    # As a release is built: the sdist, then the wheel from the sdist (so the sdist is proved complete).
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


def only(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    wheel = only(dist, "*.whl")
    sdist = only(dist, "*.tar.gz")
    assert wheel.name == f"django_conversations-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"django_conversations-{VERSION}.tar.gz"
    result = run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    assert result.stdout.count("PASSED") == 2


def test_the_wheel_carries_the_package_and_nothing_else(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"django_conversations-{VERSION}.dist-info/METADATA").decode()
    assert "conversations/py.typed" in names
    assert "conversations/store/service.py" in names
    assert "conversations/management/commands/conversations_report.py" in names
    assert not [n for n in names if n.startswith(NOT_SHIPPED)]
    assert {n.split("/")[0] for n in names} == {"conversations", f"django_conversations-{VERSION}.dist-info"}
    # drf-spectacular only through the [openapi] extra; the trove classifiers name the tested Djangos.
    assert 'Requires-Dist: drf-spectacular>=0.28; extra == "openapi"' in metadata
    assert "Classifier: Framework :: Django :: 6.1" in metadata
    with tarfile.open(only(dist, "*.tar.gz")) as sdist:
        assert f"django_conversations-{VERSION}/conversations/py.typed" in sdist.getnames()


def test_the_wheel_alone_installs_and_passes_django_admin_check(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", only(dist, "*.whl"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "site_settings.py").write_text(MINIMAL_SITE, encoding="utf-8")
    (site / "site_urls.py").write_text(MINIMAL_URLS, encoding="utf-8")
    # Run outside the repository, with only the temp site on the path: the installed copy is imported.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "site_settings", "PYTHONPATH": str(site)}
    env.pop("PYTHONDEVMODE", None)

    check = run(venv / "bin" / "django-admin", "check", cwd=tmp_path, env=env)
    assert "System check identified no issues (0 silenced)." in check.stdout, check.stderr
    probe = run(
        python,
        "-c",
        "import conversations, importlib.util as u; "
        "print(conversations.__version__, conversations.__file__, u.find_spec('drf_spectacular'))",
        cwd=tmp_path,
        env=env,
    )
    version, location, spectacular = probe.stdout.split()
    assert version == VERSION
    assert location.startswith(str(venv))
    assert spectacular == "None"  # a bare install does not pull drf-spectacular in
