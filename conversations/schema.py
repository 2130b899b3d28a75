"""The OpenAPI annotations, from drf-spectacular when it is installed (the ``[openapi]`` extra).

The views and serializers import these names from here, never from drf-spectacular, so the app imports,
serves its API and passes its checks without it. Without drf-spectacular the decorators hand back what they
decorate and the parameter/response objects are inert: only a schema generator reads them, and there is none.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

__all__ = [
    "OpenApiParameter",
    "OpenApiResponse",
    "OpenApiTypes",
    "PolymorphicProxySerializer",
    "extend_schema",
    "extend_schema_field",
    "extend_schema_serializer",
    "extend_schema_view",
    "has_openapi",
]


def has_openapi() -> bool:
    """Whether drf-spectacular is installed (the ``[openapi]`` extra)."""
    return find_spec("drf_spectacular") is not None


# Type checking always sees the real signatures (the dev extra installs drf-spectacular).
if TYPE_CHECKING or find_spec("drf_spectacular") is not None:
    from drf_spectacular.types import OpenApiTypes
    from drf_spectacular.utils import (
        OpenApiParameter,
        OpenApiResponse,
        PolymorphicProxySerializer,
        extend_schema,
        extend_schema_field,
        extend_schema_serializer,
        extend_schema_view,
    )
else:

    def _keep(target: Any) -> Any:
        return target

    def extend_schema(*args: Any, **kwargs: Any) -> Any:
        return _keep

    extend_schema_view = extend_schema_field = extend_schema_serializer = extend_schema

    class OpenApiParameter:
        QUERY = "query"
        PATH = "path"
        HEADER = "header"
        COOKIE = "cookie"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    class OpenApiResponse:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    class PolymorphicProxySerializer:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    class _AnyOpenApiType:
        """Stands for the ``OpenApiTypes`` enum: any member (``OpenApiTypes.STR``) reads as its name."""

        def __getattr__(self, name: str) -> str:
            if name.startswith("__"):
                raise AttributeError(name)
            return name

    OpenApiTypes = _AnyOpenApiType()
