"""Rate limiting of the conversation endpoints: the DRF throttle scope ``conversations``.

Set a rate in the host project to turn it on::

    REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {"conversations": "120/min"}}

Without that entry nothing is limited (DRF's own scoped throttles would fail with ImproperlyConfigured).
Requests are counted per authenticated user, and per client IP address otherwise.

The counters live in the store's Redis (``get_redis_client()``), one key per identity::

    <KEY_PREFIX>:t:{<digest of the identity>}:conversations    string   requests in the current window

and each decision is one Lua script, so any number of threads and worker processes share one exact
count: DRF's ``SimpleRateThrottle`` reads its history, appends and writes it back in three steps, and
concurrent requests of one user overwrote each other's history (a 600/min limit let ~1,040 through in
3.5 s from 8 parallel clients). The window is fixed and starts at an identity's first request: at most
``N`` requests are admitted until it ends (``Retry-After`` says when), one small integer per identity.

When Redis refuses writes (``maxmemory`` reached with ``noeviction``, or a read-only replica) a request
that would be admitted cannot be counted: it is let through uncounted, so that reads, listings, exports
and deletes — the requests that can free room — keep working (a write then gets the store's own 503).
A client already over its limit is still refused, since reading its count needs no memory.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from .exceptions import StoreUnavailable
from .store import get_redis_client, store_config
from .store.keys import digest

logger = logging.getLogger("conversations")

# KEYS: the identity's counter   ARGV: the limit, the window (ms)
# Returns {1, 0} when admitted (and counted), {0, ms until the window ends} when refused. A refusal
# writes nothing, so it works on a Redis at ``maxmemory`` too.
WINDOW = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    -- A counter without an expiry would refuse forever (none of ours has one): end its window.
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  return {0, ttl}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, 0}
"""

# Redis refusing writes, not failing: reads still work, so the request can go on uncounted.
_WRITES_REFUSED = ("OOM", "READONLY", "MISCONF", "NOREPLICAS")

# One registered script per client object (registering computes the digest; reuse it per request).
_scripts: dict[int, tuple[Any, Any]] = {}


def _window_script(client: Any) -> Any:
    cached = _scripts.get(id(client))
    if cached is None or cached[0] is not client:
        if len(_scripts) > 64:
            _scripts.clear()
        cached = _scripts[id(client)] = (client, client.register_script(WINDOW))
    return cached[1]


def _refuses_writes(exc: redis.RedisError) -> bool:
    if isinstance(exc, redis.exceptions.OutOfMemoryError | redis.exceptions.ReadOnlyError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_WRITES_REFUSED)


class ConversationsRateThrottle(UserRateThrottle):
    """DRF's ``UserRateThrottle`` interface (scope, rate setting, ``wait()``), counted atomically in Redis."""

    scope = "conversations"

    def __init__(self) -> None:
        # DRF's base class parses the rate here; it is read again per request (``override_settings``).
        self._wait_ms = 0

    def get_rate(self) -> str | None:
        # Read at call time (DRF's base class binds the rates when the module is imported), and no
        # rate means no limit.
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES or {}
        rate = rates.get(self.scope)
        return None if rate is None else str(rate)

    def counter_key(self, request: Request) -> str:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            identity = f"user:{user.pk}"
        else:
            identity = f"ip:{self.get_ident(request)}"
        return f"{store_config().key_prefix}:t:{{{digest(identity)}}}:{self.scope}"

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        assert self.num_requests is not None  # both parsed from a rate
        assert self.duration is not None
        key = self.counter_key(request)
        try:
            client = get_redis_client()
            admitted, wait_ms = _window_script(client)(
                keys=[key], args=[self.num_requests, self.duration * 1000], client=client
            )
        except redis.RedisError as exc:
            if _refuses_writes(exc):
                logger.warning("Throttle not counting (Redis refuses writes), request let through: %s", exc)
                return True
            # Unreachable or timing out: the store would be too. "Cannot decide now" is a 503, never a 500.
            raise StoreUnavailable(f"The throttle's Redis is unavailable: {exc}") from exc
        except Exception as exc:  # a misconfigured client, say: still a 503, never a 500
            raise StoreUnavailable(f"The throttle's Redis is unavailable: {exc}") from exc
        self._wait_ms = int(wait_ms)
        return bool(admitted)

    def wait(self) -> float | None:
        """Seconds until this identity's window ends (DRF sends it, rounded up, as ``Retry-After``)."""
        return max(self._wait_ms, 1) / 1000
