"""The release artefacts, built for real: what ``pip install django-conversations`` would get; and the app
without its optional drf-spectacular.

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


@pytest.mark.slow
def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    wheel = only(dist, "*.whl")
    sdist = only(dist, "*.tar.gz")
    assert wheel.name == f"django_conversations-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"django_conversations-{VERSION}.tar.gz"
    result = run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    assert result.stdout.count("PASSED") == 2


@pytest.mark.slow
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


@pytest.mark.slow
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


# Run before anything else in the subprocess: drf_spectacular is unimportable, as on a site without it
# (a None in sys.modules makes `import` raise ImportError and importlib's find_spec answer None).
WITHOUT_SPECTACULAR = """
import sys

sys.modules["drf_spectacular"] = None

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="no-spectacular",
    INSTALLED_APPS=[
        "django.contrib.auth", "django.contrib.contenttypes", "rest_framework", "conversations"
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    CACHES={"default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": sys.argv[1],
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
    }},
    CONVERSATIONS={"KEY_PREFIX": sys.argv[2]},
    ROOT_URLCONF="conversations.urls",
    ALLOWED_HOSTS=["testserver"],
    USE_TZ=True,
)
django.setup()

from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

import conversations.serializers, conversations.views

call_command("check", fail_level="WARNING")
call_command("migrate", verbosity=0)
client = APIClient()
client.force_authenticate(User.objects.create_user("ada"))
created = client.post("/sessions/", {"title": "no schema"}, format="json")
assert created.status_code == 201, created.content
session = created.json()["id"]
posted = client.post(f"/sessions/{session}/messages/", {"role": "user", "content": "hi"}, format="json")
assert posted.status_code == 201, posted.content
read = client.get(f"/sessions/{session}/")
assert read.status_code == 200 and [m["content"] for m in read.json()["messages"]] == ["hi"], read.content
assert [m for m in sys.modules if m.startswith("drf_spectacular")] == ["drf_spectacular"]  # the block only
print("served without drf_spectacular")
"""


def test_the_app_runs_and_passes_its_checks_without_drf_spectacular(redis_url: str, key_prefix: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_SPECTACULAR, redis_url, key_prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "System check identified no issues (0 silenced).",
        "served without drf_spectacular",
    ]
