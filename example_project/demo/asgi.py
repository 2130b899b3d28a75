"""The example site under an ASGI server: ``uvicorn demo.asgi:application --app-dir example_project``
(or daphne, or gunicorn with uvicorn workers). Live event streams then cost no thread each."""

import os
import sys
from pathlib import Path

# The example, and the app from this checkout beside it.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parents[2])]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

from django.core.asgi import get_asgi_application  # noqa: E402  (after the path is set)

application = get_asgi_application()
