"""A page's ``next`` and ``previous`` links: its URL with ``cursor`` set, as DRF's paginators build them."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from conversations.pagination import page_link

CURSOR = "MTc2NDYxNzY5NjEyMy5hYWFhYWFhYWFhYWFhYWFhYWFhYWFh"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/sessions/", ""),
        ("/api/sessions/", "limit=20"),
        ("/api/sessions/", "limit=5&cursor=YTIw"),
        ("/api/sessions/", "z=1&limit=5&a=2&a=1"),  # sorted by name; a repeated name keeps its values
        ("/api/sessions/", "limit="),
        ("/api/sessions/", "flag"),
        ("/api/sessions/", "a=1&&b=2"),
        ("/api/sessions/", "q=a+b&r=%41%2F&s=%zz"),
        ("/api/sessions/", "q=é;x=1"),
        ("/api/sessions/a?b#c/messages/", "limit=1"),  # a decoded ``?`` and ``#`` in the path
        ("//api/sessions/", ""),
    ],
)
@pytest.mark.parametrize("cursor", [CURSOR, "a b+c/é#"])
def test_a_page_link_is_the_url_with_the_cursor_replaced(path: str, query: str, cursor: str) -> None:
    http_request = RequestFactory().get("/")
    http_request.path = path
    http_request.META["QUERY_STRING"] = query
    request = Request(http_request)
    assert page_link(request, cursor) == replace_query_param(request.build_absolute_uri(), "cursor", cursor)
    assert page_link(request, None) is None
