"""The request-body parser of the API: DRF's JSON parser, decoding with orjson where that gives the same."""

from __future__ import annotations

import codecs
import io
from collections.abc import Mapping
from typing import IO, Any

import orjson
from rest_framework.parsers import JSONParser

#: Nesting a body may have and still be read by orjson. Python's ``json`` (what DRF uses) recurses once
#: a level and can run out of stack well before orjson's own limit (1,024 levels): a deeper body goes to
#: it, so that it fails as it always did. Far deeper than any body the store takes (``MAX_JSON_DEPTH``).
MAX_FAST_DEPTH = 200


class FastJSONParser(JSONParser):
    """DRF's ``JSONParser``, decoding with orjson when the result is the same value.

    ``json.load`` through a codecs reader cost as much as the rest of an append's parsing; orjson is
    a tenth of that. DRF's own parsing still decides everything orjson would decide differently, so
    the data and every error stay as they were: a body orjson refuses (a lone surrogate, a number
    beyond a double, malformed JSON: DRF words the error), a body with a float (orjson reads an
    integer beyond 64 bits as one) or nested deeper than ``MAX_FAST_DEPTH``, and a charset other
    than UTF-8.
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        if not _is_utf8((parser_context or {}).get("encoding", "utf-8")):
            return super().parse(stream, media_type, parser_context)
        body = stream.read()
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if _plain(data):
                return data
        return super().parse(io.BytesIO(body), media_type, parser_context)


def _is_utf8(encoding: Any) -> bool:
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except (LookupError, TypeError):
        return False


def _plain(data: Any) -> bool:
    """Whether ``data`` holds no float and nests at most ``MAX_FAST_DEPTH`` levels (level by level)."""
    level = [data]
    for _ in range(MAX_FAST_DEPTH):
        below: list[Any] = []
        for value in level:
            kind = type(value)
            if kind is dict:
                below.extend(value.values())
            elif kind is list:
                below.extend(value)
            elif kind is float:
                return False
        if not below:
            return True
        level = below
    return False
