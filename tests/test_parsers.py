"""The API's JSON request parser reads every body as DRF's own ``JSONParser`` does: same data, same errors."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rest_framework.parsers import JSONParser

from conversations.parsers import MAX_FAST_DEPTH, FastJSONParser

BODIES: dict[str, bytes] = {
    "a message": '{"role": "user", "content": "ünï\u2028 😀", "sources": [{"url": "https://x"}]}'.encode(),
    "integers at the 64-bit edges": b'{"a": [18446744073709551615, -9223372036854775808, -0, 0]}',
    "integer past 64 bits": b'{"metadata": {"a": 18446744073709551616}}',
    "integer below 64 bits": b"[-9223372036854775809]",
    "floats": b"[1.5, -0.0, 1e5, 4.9e-324, 0.30000000000000004]",
    "float beyond a double": b"[1e400]",
    "NaN": b'{"a": NaN}',
    "lone surrogate": b'{"title": "\\ud800"}',
    "surrogate pair": b'"\\ud83d\\ude00"',
    "repeated key": b'{"a": 1, "b": 2, "a": 3}',
    "nested at the fast limit": b"[" * (MAX_FAST_DEPTH - 1) + b"]" * (MAX_FAST_DEPTH - 1),
    "nested past the fast limit": b"[" * (MAX_FAST_DEPTH + 1) + b"]" * (MAX_FAST_DEPTH + 1),
    "nested 1,000 deep": b"[" * 1000 + b"]" * 1000,  # orjson takes it; Python's json may run out of stack
    "nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
    "invalid UTF-8": b'{"a": "\xc3"}',
    "UTF-8 BOM": b"\xef\xbb\xbf{}",
    "trailing data": b"{} x",
    "trailing comma": b"[1,]",
    "blank": b" ",
    "scalar": b"5",
}


def _parse(parser: JSONParser, body: bytes, encoding: str) -> tuple[str, Any]:
    try:
        return "data", parser.parse(io.BytesIO(body), "application/json", {"encoding": encoding})
    except Exception as exc:  # RecursionError too
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
@pytest.mark.parametrize("name", BODIES)
def test_the_fast_json_parser_gives_drf_s_data_and_errors(name: str, encoding: str) -> None:
    body = BODIES[name]
    fast, drf = _parse(FastJSONParser(), body, encoding), _parse(JSONParser(), body, encoding)
    assert fast == drf
    if fast[0] == "data":  # the same types too (an integer stays an integer), and the same key order
        assert repr(fast[1]) == repr(drf[1])
