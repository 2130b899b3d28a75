"""Durations typed by operators: ``90`` (seconds), ``90s``, ``15m``, ``2h``, ``1d``, ``1w``."""

from __future__ import annotations

import re

from django.utils.translation import gettext_lazy as _

from conversations.exceptions import InvalidInput

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_RE = re.compile(r"\A\s*(\d{1,12})\s*([smhdw]?)\s*\Z", re.IGNORECASE)
# Beyond a century a typo is far likelier than intent (and the milliseconds must fit Redis scores).
_MAX_SECONDS = 100 * 365 * 86_400


def parse_duration(text: object, *, field: str = "duration") -> int:
    """Seconds in ``text``: a positive whole number with an optional unit s, m, h, d or w."""
    if isinstance(text, bool):
        raise InvalidInput(str(_("Expected a duration such as 90, 90s, 15m, 2h or 1d.")), field=field)
    match = _DURATION_RE.match(str(text))
    if match is None:
        raise InvalidInput(
            str(_("%(value)r is not a duration: use e.g. 90, 90s, 15m, 2h or 1d.") % {"value": text}),
            field=field,
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise InvalidInput(str(_("The duration must be longer than zero.")), field=field)
    if seconds > _MAX_SECONDS:
        raise InvalidInput(str(_("The duration must be at most 100 years.")), field=field)
    return seconds


def format_duration(seconds: float | None) -> str:
    """A short human reading of a duration: ``45s``, ``12m 05s``, ``3h 20m``, ``2d 04h``."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    sign = "-" if whole < 0 else ""
    whole = abs(whole)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"
