"""The ASGI entry point: ``uvicorn demo.asgi:application --app-dir example_project`` (or daphne, or
gunicorn with uvicorn workers).

Django runs the async views (``demo.views.last_messages``, the live event streams) on the server's event
loop, where the store's ``a…`` methods use that loop's own redis.asyncio pool; sync views run in a
thread, as under WSGI.
"""

import os
import sys
from pathlib import Path

# The example, and the app from this checkout beside it.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parents[2])]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

from django.core.asgi import get_asgi_application  # noqa: E402  (after the path is set)

application = get_asgi_application()
