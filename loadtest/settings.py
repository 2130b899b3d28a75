"""Settings of the load test: the example project's own, with one change.

The example project throttles the ``conversations`` scope at 600 requests a minute per user, and every
load-test client signs in as the same demo user, so with the throttle on the run would measure the
throttle (10 requests a second in all) instead of the app. ``LOADTEST_THROTTLE_RATE`` (for example
``100000/min``) turns it back on for a run that should include its cost.
"""

from __future__ import annotations

import os

from demo.settings import *  # noqa: F403
from demo.settings import REST_FRAMEWORK

_rate = os.environ.get("LOADTEST_THROTTLE_RATE", "")

REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"conversations": _rate} if _rate else {},
}

# The demo's URLs plus ``/bare/``, the reference the run's requests/s are compared with.
ROOT_URLCONF = "loadtest.urls"
