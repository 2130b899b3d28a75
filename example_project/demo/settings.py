"""Settings of the example site. It installs django-conversations the way your project would.

With no REDIS_URL in the environment it runs on fakeredis, an in-process Redis shared by every request
of this process: a demo default only (nothing survives a restart, and it is not shared between
processes). Set REDIS_URL (e.g. redis://127.0.0.1:6379/0) to use a real Redis.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-insecure-secret-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "conversations",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
ASGI_APPLICATION = "demo.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}


def _gunicorn_workers() -> int:
    """The worker count gunicorn was started with: -w/--workers, GUNICORN_CMD_ARGS or WEB_CONCURRENCY."""
    args = [*os.environ.get("GUNICORN_CMD_ARGS", "").split(), *sys.argv[1:]]
    count = os.environ.get("WEB_CONCURRENCY", "1")
    for i, arg in enumerate(args):
        if arg in ("-w", "--workers") and i + 1 < len(args):
            count = args[i + 1]
        elif arg.startswith("--workers="):
            count = arg.split("=", 1)[1]
        elif arg.startswith("-w") and arg[2:].isdigit():
            count = arg[2:]
    return int(count) if count.isdigit() else 1


REDIS_URL = os.environ.get("REDIS_URL", "")
USING_FAKEREDIS = not REDIS_URL

if USING_FAKEREDIS:
    from fakeredis import FakeRedisConnection

    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            # The host names fakeredis's in-process server; nothing listens on the network.
            "LOCATION": "redis://fakeredis-demo:6379/0",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
                "CONNECTION_POOL_KWARGS": {"connection_class": FakeRedisConnection},
            },
        }
    }
    if "runserver" in sys.argv or "gunicorn" in sys.argv[0]:
        print(
            "django-conversations demo: no REDIS_URL set, so conversations live in an in-process "
            "fakeredis (a demo default: lost on restart). Set REDIS_URL to use a real Redis.",
            file=sys.stderr,
        )
    if "gunicorn" in sys.argv[0] and _gunicorn_workers() > 1:
        # Each worker process imports these settings, and so gets a fakeredis of its own.
        print(
            f"django-conversations demo: WARNING: gunicorn runs {_gunicorn_workers()} workers on "
            "fakeredis, and each worker has its own in-process store: a session created in one worker "
            "is missing (404) in the others, so sessions seem to come and go. Set REDIS_URL, or run "
            "one worker (-w 1, with --threads for concurrency).",
            file=sys.stderr,
        )
else:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    }

CONVERSATIONS = {
    "KEY_PREFIX": os.environ.get("CONVERSATIONS_KEY_PREFIX", "demo-conversations"),
    "SESSION_TTL": 1800,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The conversation endpoints' throttle scope (per user, or per IP address for anonymous visitors),
    # counted in the store's Redis.
    "DEFAULT_THROTTLE_RATES": {"conversations": os.environ.get("DEMO_THROTTLE_RATE", "600/min")},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "django-conversations demo API",
    "DESCRIPTION": "Chat sessions and their messages, kept in Redis.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGIN_URL = "/api-auth/login/"
LOGIN_REDIRECT_URL = "/chat/"

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The demo user `ensure_demo_user` creates (and `make demo` runs).
DEMO_USERNAME = os.environ.get("DEMO_USERNAME", "demo")
DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "demo-password")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"conversations": {"handlers": ["console"], "level": "INFO"}},
}

if USING_FAKEREDIS:
    # The async view's client: fakeredis's async twin on the same in-process server.
    CONVERSATIONS["ASYNC_CLIENT_FACTORY"] = "demo.views.fakeredis_async_client"
