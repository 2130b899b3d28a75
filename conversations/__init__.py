"""django-conversations: chat conversations in Redis, served through Django REST framework."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    # The version is written once, in pyproject.toml; the installed metadata carries it here.
    __version__ = version("django-conversations")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
