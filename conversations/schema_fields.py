"""drf-spectacular extensions for the app's JSON fields: imported only when drf-spectacular is installed."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent

from .serializers import (
    JSON_VALUE_COMPONENT,
    JSON_VALUE_SCHEMA,
    MAX_BATCH_MESSAGES,
    MessageBatchSerializer,
    MessageCreateOrBatchSerializer,
    MessageCreateSerializer,
    MessageDataField,
    MetadataField,
    SourcesField,
)


def _json_value(auto_schema: Any) -> dict[str, str]:
    """A reference to the ``JSONValue`` component, registered on first use. A component, since JSON
    nests: a schema says "at any depth" only by referring to itself."""
    component = ResolvedComponent(  # type: ignore[no-untyped-call]
        name=JSON_VALUE_COMPONENT,
        type=ResolvedComponent.SCHEMA,
        object=JSON_VALUE_COMPONENT,
        schema=JSON_VALUE_SCHEMA,
    )
    auto_schema.registry.register_on_missing(component)
    ref: dict[str, str] = component.ref
    return ref


class _MetadataFieldSchema(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = MetadataField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": _json_value(auto_schema)}


class _MessageDataFieldSchema(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = MessageDataField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": _json_value(auto_schema)}


class _SourcesFieldSchema(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = SourcesField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "type": "array",
            "items": {"type": "object", "additionalProperties": _json_value(auto_schema)},
        }


class _MessageBatchSchema(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    target_class = MessageBatchSerializer

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        item = auto_schema.resolve_serializer(MessageCreateSerializer, direction)
        return {"type": "array", "items": item.ref, "minItems": 1, "maxItems": MAX_BATCH_MESSAGES}


class _MessageCreateOrBatchSchema(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    target_class = MessageCreateOrBatchSerializer

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        one = auto_schema.resolve_serializer(MessageCreateSerializer, direction)
        batch = auto_schema.resolve_serializer(MessageBatchSerializer, direction)
        # ``required`` binds only an object (the one message): a list passes it untouched. Stated here
        # as well, drf-spectacular marks the request body itself as required.
        return {"oneOf": [one.ref, batch.ref], "required": ["role", "content"]}
