import os
import sys
from pathlib import Path

# The example, and the app from this checkout beside it.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parents[2])]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after the path is set)

application = get_wsgi_application()
