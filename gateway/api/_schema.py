"""A small JSON Schema validator for the subset the OpenAPI document uses.

The API validates request bodies against the same schemas it publishes, so
the document cannot drift from what the server accepts; tests validate
responses with it too. Only the keywords in ``SUPPORTED`` are understood, and
``unsupported_keywords`` lets a test prove the document uses no others (a
keyword silently ignored would be a rule silently not enforced).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "SUPPORTED",
    "SchemaError",
    "load_document",
    "unsupported_keywords",
    "validate",
]

# Annotations (description, example, ...) are allowed anywhere and ignored.
_ANNOTATIONS = frozenset(
    {"description", "title", "examples", "example", "default", "deprecated"}
)
SUPPORTED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "oneOf",
        "anyOf",
        "format",  # annotation only (OpenAPI 3.1 default), patterns do the work
    }
)


class SchemaError(Exception):
    """``instance`` does not match; ``field`` is a dotted path to the member."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field or '(body)'}: {message}")
        self.field = field
        self.message = message


@cache
def load_document() -> dict[str, Any]:
    """The packaged OpenAPI document (parsed once)."""
    text = resources.files("gateway.api").joinpath("openapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def validate(
    instance: Any, schema: Mapping[str, Any], document: Mapping[str, Any]
) -> None:
    """Raise ``SchemaError`` for the first violation found."""
    _check(instance, schema, document, None)


def unsupported_keywords(document: Mapping[str, Any]) -> set[str]:
    """Keywords in the document's schemas this validator would not enforce."""
    found: set[str] = set()
    for schema in _schemas(document):
        found.update(_keywords(schema))
    return found - SUPPORTED - _ANNOTATIONS


def _schemas(document: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from document.get("components", {}).get("schemas", {}).values()
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    yield parameter["schema"]
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                yield media["schema"]
            for response in operation.get("responses", {}).values():
                for media in response.get("content", {}).values():
                    if "schema" in media:
                        yield media["schema"]


def _keywords(schema: Mapping[str, Any]) -> Iterator[str]:
    for key, value in schema.items():
        yield key
        if key == "properties":
            for sub in value.values():
                yield from _keywords(sub)
        elif key in ("items", "additionalProperties", "propertyNames") and isinstance(
            value, dict
        ):
            yield from _keywords(value)
        elif key in ("oneOf", "anyOf"):
            for sub in value:
                yield from _keywords(sub)


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _join(path: str | None, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path or ''}[{name}]"
    return f"{path}.{name}" if path else name


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _resolve(ref: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported: {ref}")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    result: Mapping[str, Any] = node
    return result


def _check(
    value: Any, schema: Mapping[str, Any], document: Mapping[str, Any], path: str | None
) -> None:
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], document), document, path)
    if "oneOf" in schema:
        _one_of(value, schema["oneOf"], document, path)
    if "anyOf" in schema:
        _any_of(value, schema["anyOf"], document, path)
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else kind
        if not any(_TYPES[k](value) for k in kinds):
            raise SchemaError(path, f"must be {' or '.join(kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(json.dumps(c) for c in schema["enum"])
        raise SchemaError(path, f"must be one of {choices}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(path, f"must be {json.dumps(schema['const'])}")
    if isinstance(value, str):
        _string(value, schema, path)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        _number(value, schema, path)
    elif isinstance(value, list):
        _array(value, schema, document, path)
    elif isinstance(value, dict):
        _object(value, schema, document, path)


def _one_of(
    value: Any, options: list[Any], document: Mapping[str, Any], path: str | None
) -> None:
    matched = 0
    first: SchemaError | None = None
    for option in options:
        try:
            _check(value, option, document, path)
        except SchemaError as e:
            first = first or e
        else:
            matched += 1
    if matched == 1:
        return
    if matched == 0 and first is not None:
        raise first
    raise SchemaError(path, "matches more than one alternative")


def _any_of(
    value: Any, options: list[Any], document: Mapping[str, Any], path: str | None
) -> None:
    first: SchemaError | None = None
    for option in options:
        try:
            _check(value, option, document, path)
        except SchemaError as e:
            first = first or e
        else:
            return
    if first is not None:
        raise first


def _string(value: str, schema: Mapping[str, Any], path: str | None) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SchemaError(path, "must be valid Unicode (no lone surrogates)") from None
    if len(value) < schema.get("minLength", 0):
        raise SchemaError(path, f"must be at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise SchemaError(path, f"must be at most {schema['maxLength']} characters")
    pattern = schema.get("pattern")
    if pattern is not None and not _compiled(pattern).search(value):
        raise SchemaError(path, f"must match {pattern}")


def _number(value: float, schema: Mapping[str, Any], path: str | None) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        raise SchemaError(path, f"must be at least {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise SchemaError(path, f"must be at most {schema['maximum']}")


def _array(
    value: list[Any],
    schema: Mapping[str, Any],
    document: Mapping[str, Any],
    path: str | None,
) -> None:
    if len(value) < schema.get("minItems", 0):
        raise SchemaError(path, f"must have at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        raise SchemaError(path, f"must have at most {schema['maxItems']} items")
    if schema.get("uniqueItems"):
        seen = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(seen)) != len(seen):
            raise SchemaError(path, "must not repeat items")
    items = schema.get("items")
    if items is not None:
        for i, item in enumerate(value):
            _check(item, items, document, _join(path, i))


def _object(
    value: dict[str, Any],
    schema: Mapping[str, Any],
    document: Mapping[str, Any],
    path: str | None,
) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            raise SchemaError(_join(path, name), "is required")
    if len(value) < schema.get("minProperties", 0):
        raise SchemaError(path, f"must have at least {schema['minProperties']} members")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise SchemaError(path, f"must have at most {schema['maxProperties']} members")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    names = schema.get("propertyNames")
    for name, member in value.items():
        where = _join(path, name)
        if names is not None:
            _check(name, names, document, where)
        if name in properties:
            _check(member, properties[name], document, where)
        elif extra is False:
            raise SchemaError(where, "is not a known member")
        elif isinstance(extra, dict):
            _check(member, extra, document, where)
