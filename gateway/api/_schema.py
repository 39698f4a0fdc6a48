"""A small JSON Schema validator for the subset the OpenAPI document uses.

The API validates request bodies against the same schemas it publishes, so
the document cannot drift from what the server accepts; tests validate
responses with it too. Only the keywords in ``SUPPORTED`` are understood, and
``unsupported_keywords`` lets a test prove the document uses no others (a
keyword silently ignored would be a rule silently not enforced).

``compile_schema`` turns a schema into nested closures once, so a request
pays for the checks its schema has and nothing else: no walking of the
schema dicts, no ``$ref`` resolution, no message formatting until a check
fails. Checks run in a fixed order (``$ref``, ``oneOf``, ``anyOf``, ``type``,
``enum``, ``const``, then the keywords of the value's JSON type) and the
first failure raises, so the error a client gets is stable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "SUPPORTED",
    "Check",
    "SchemaError",
    "compile_schema",
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


# A compiled schema: raises SchemaError for ``value`` at ``path`` (None: the
# top level), returns None when it matches.
Check = Callable[[Any, "str | None"], None]


def validate(
    instance: Any, schema: Mapping[str, Any], document: Mapping[str, Any]
) -> None:
    """Raise ``SchemaError`` for the first violation found (compiles ``schema``
    on every call: hot paths keep a ``compile_schema`` result instead)."""
    compile_schema(schema, document)(instance, None)


def compile_schema(schema: Mapping[str, Any], document: Mapping[str, Any]) -> Check:
    """``schema`` (``$ref``s into ``document`` allowed) as one check function."""
    return _Compiler(document).compile(schema)


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


def _is_integer(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and v.is_integer()
    )


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": _is_integer,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}
# Types a plain isinstance decides (bool is an int: "integer" and "number" are
# not in here).
_CLASSES: dict[str, type] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _join(path: str | None, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path or ''}[{name}]"
    return f"{path}.{name}" if path else name


def _resolve(ref: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported: {ref}")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    result: Mapping[str, Any] = node
    return result


def _run_all(steps: tuple[Check, ...]) -> Check:
    """One check running ``steps`` in order (the common short cases unrolled)."""
    if not steps:
        return _accept
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps

        def both(value: Any, path: str | None) -> None:
            first(value, path)
            second(value, path)

        return both

    def each(value: Any, path: str | None) -> None:
        for step in steps:
            step(value, path)

    return each


def _accept(value: Any, path: str | None) -> None:
    """The empty schema: anything matches."""


class _Compiler:
    """Compiles schemas of one document; each ``$ref`` target compiles once
    (a forwarding stub covers a reference to a schema still being compiled).

    Each schema becomes as few closures as its keywords allow: one for the
    keywords of a JSON type (``minLength``, ``maxLength`` and ``pattern`` are
    one string check), fused with the ``type`` check when the type is one.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document
        self._refs: dict[str, list[Check]] = {}

    def compile(self, schema: Mapping[str, Any]) -> Check:
        steps: list[Check] = []
        if "$ref" in schema:
            steps.append(self._ref(schema["$ref"]))
        if "oneOf" in schema:
            steps.append(_one_of([self.compile(s) for s in schema["oneOf"]]))
        if "anyOf" in schema:
            steps.append(self._any_of(schema["anyOf"]))
        # A string is checked for lone surrogates by every schema it meets,
        # unless a $ref, oneOf or anyOf already did (they pass only after
        # their own checks, which include it).
        kinds = {
            "string": _string(schema, surrogates=not steps),
            "number": _number(schema),
            "array": self._array(schema),
            "object": self._object(schema),
        }
        kind = schema.get("type")
        if "enum" in schema or "const" in schema or not isinstance(kind, str):
            if kind is not None:
                steps.append(_type(kind))
            if "enum" in schema:
                steps.append(_enum(schema["enum"]))
            if "const" in schema:
                steps.append(_const(schema["const"]))
            steps.append(
                _by_kind(
                    string=kinds["string"],
                    number=kinds["number"],
                    array=kinds["array"],
                    obj=kinds["object"],
                )
            )
        else:  # the usual case: one type, then that type's keywords
            step = kinds.get("number" if kind == "integer" else kind, _accept)
            steps.append(_typed(kind, step))
        return _run_all(tuple(s for s in steps if s is not _accept))

    def _ref(self, ref: str) -> Check:
        cell = self._refs.get(ref)
        if cell is None:
            cell = self._refs[ref] = []
            cell.append(self.compile(_resolve(ref, self._document)))
        if cell:
            return cell[0]

        def forward(value: Any, path: str | None) -> None:
            cell[0](value, path)

        return forward

    def _any_of(self, options: list[Mapping[str, Any]]) -> Check:
        if options and all(set(o) == {"required"} for o in options):
            return _any_required([tuple(o["required"]) for o in options])
        return _any_of([self.compile(o) for o in options])

    def _array(self, schema: Mapping[str, Any]) -> Check:
        low = schema.get("minItems", 0)
        high = schema.get("maxItems")
        unique = bool(schema.get("uniqueItems"))
        items = schema.get("items")
        item = self.compile(items) if items is not None else None
        if low <= 0 and high is None and not unique and item is None:
            return _accept
        too_few = f"must have at least {low} items"
        too_many = f"must have at most {high} items"

        def array(value: list[Any], path: str | None) -> None:
            if len(value) < low:
                raise SchemaError(path, too_few)
            if high is not None and len(value) > high:
                raise SchemaError(path, too_many)
            if unique:
                _unique_items(value, path)
            if item is not None:
                for i, member in enumerate(value):
                    item(member, _join(path, i))

        return array

    def _object(self, schema: Mapping[str, Any]) -> Check:
        required = tuple(schema.get("required", ()))
        low = schema.get("minProperties", 0)
        high = schema.get("maxProperties")
        names = schema.get("propertyNames")
        name_check = self.compile(names) if names is not None else None
        properties = {
            name: self.compile(sub)
            for name, sub in schema.get("properties", {}).items()
        }
        extra = schema.get("additionalProperties", True)
        extra_check = self.compile(extra) if isinstance(extra, dict) else None
        closed = extra is False
        # No member can fail: skip the walk over members.
        members = not (
            name_check is None
            and extra_check is None
            and not closed
            and all(c is _accept for c in properties.values())
        )
        if not required and low <= 0 and high is None and not members:
            return _accept
        too_few = f"must have at least {low} members"
        too_many = f"must have at most {high} members"

        def obj(value: dict[str, Any], path: str | None) -> None:
            for name in required:
                if name not in value:
                    raise SchemaError(_join(path, name), "is required")
            if len(value) < low:
                raise SchemaError(path, too_few)
            if high is not None and len(value) > high:
                raise SchemaError(path, too_many)
            if not members:
                return
            for name, member in value.items():
                where = f"{path}.{name}" if path else name
                if name_check is not None:
                    name_check(name, where)
                check = properties.get(name)
                if check is not None:
                    check(member, where)
                elif closed:
                    raise SchemaError(where, "is not a known member")
                elif extra_check is not None:
                    extra_check(member, where)

        return obj


def _matching(
    options: list[Check], value: Any, path: str | None, enough: int
) -> tuple[int, SchemaError | None]:
    """How many options accept ``value`` (counting stops at ``enough``), and
    the first option's error."""
    matched = 0
    first: SchemaError | None = None
    for option in options:
        try:
            option(value, path)
        except SchemaError as e:
            first = first or e
        else:
            matched += 1
            if matched >= enough:
                break
    return matched, first


def _one_of(options: list[Check]) -> Check:
    def one_of(value: Any, path: str | None) -> None:
        matched, first = _matching(options, value, path, len(options))
        if matched == 1:
            return
        if matched == 0 and first is not None:
            raise first
        raise SchemaError(path, "matches more than one alternative")

    return one_of


def _any_of(options: list[Check]) -> Check:
    def any_of(value: Any, path: str | None) -> None:
        matched, first = _matching(options, value, path, 1)
        if matched == 0 and first is not None:
            raise first

    return any_of


def _any_required(groups: list[tuple[str, ...]]) -> Check:
    """``anyOf`` of ``{"required": [...]}`` alternatives (one of these sets of
    members must be present): the same first error, without a check per
    alternative. Of other values they check only what every schema does."""

    def any_required(value: Any, path: str | None) -> None:
        if not isinstance(value, dict):
            if isinstance(value, str):
                _no_surrogates(value, path)
            return
        for names in groups:
            if all(name in value for name in names):
                return
        missing = next(name for name in groups[0] if name not in value)
        raise SchemaError(_join(path, missing), "is required")

    return any_required


def _typed(kind: str, step: Check) -> Check:
    """``type: <kind>`` (one type), then ``step`` for the value's keywords."""
    message = f"must be {kind}"
    test = _TYPES[kind]
    cls = _CLASSES.get(kind)
    if cls is not None and step is _accept:

        def of_class(value: Any, path: str | None) -> None:
            if not isinstance(value, cls):
                raise SchemaError(path, message)

        return of_class
    if cls is not None:

        def of_class_then(value: Any, path: str | None) -> None:
            if not isinstance(value, cls):
                raise SchemaError(path, message)
            step(value, path)

        return of_class_then

    def tested_then(value: Any, path: str | None) -> None:
        if not test(value):
            raise SchemaError(path, message)
        step(value, path)

    return tested_then


def _type(kind: str | list[str]) -> Check:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    message = f"must be {' or '.join(kinds)}"
    if all(k in _CLASSES for k in kinds):
        classes = tuple(_CLASSES[k] for k in kinds)

        def of_classes(value: Any, path: str | None) -> None:
            if not isinstance(value, classes):
                raise SchemaError(path, message)

        return of_classes
    tests = [_TYPES[k] for k in kinds]

    def of_type(value: Any, path: str | None) -> None:
        for test in tests:
            if test(value):
                return
        raise SchemaError(path, message)

    return of_type


def _enum(choices: list[Any]) -> Check:
    message = "must be one of " + ", ".join(json.dumps(c) for c in choices)

    def enum(value: Any, path: str | None) -> None:
        if value not in choices:
            raise SchemaError(path, message)

    return enum


def _const(constant: Any) -> Check:
    message = f"must be {json.dumps(constant)}"

    def const(value: Any, path: str | None) -> None:
        if value != constant:
            raise SchemaError(path, message)

    return const


def _by_kind(*, string: Check, number: Check, array: Check, obj: Check) -> Check:
    """Dispatch on the value's JSON type to that type's keywords."""
    if string is number is array is obj is _accept:
        return _accept

    def by_kind(value: Any, path: str | None) -> None:
        if isinstance(value, str):
            string(value, path)
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int | float):
            number(value, path)
        elif isinstance(value, list):
            array(value, path)
        elif isinstance(value, dict):
            obj(value, path)

    return by_kind


def _no_surrogates(value: str, path: str | None) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaError(
                path, "must be valid Unicode (no lone surrogates)"
            ) from None


def _string(schema: Mapping[str, Any], *, surrogates: bool) -> Check:
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    pattern = schema.get("pattern")
    if not surrogates and low <= 0 and high is None and pattern is None:
        return _accept
    search = re.compile(pattern).search if pattern is not None else None
    too_short = f"must be at least {low} characters"
    too_long = f"must be at most {high} characters"
    mismatch = f"must match {pattern}"

    def string(value: str, path: str | None) -> None:
        if surrogates and not value.isascii():
            _no_surrogates(value, path)
        if len(value) < low:
            raise SchemaError(path, too_short)
        if high is not None and len(value) > high:
            raise SchemaError(path, too_long)
        if search is not None and search(value) is None:
            raise SchemaError(path, mismatch)

    return string


def _number(schema: Mapping[str, Any]) -> Check:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if low is None and high is None:
        return _accept
    too_small = f"must be at least {low}"
    too_big = f"must be at most {high}"

    def number(value: float, path: str | None) -> None:
        if low is not None and value < low:
            raise SchemaError(path, too_small)
        if high is not None and value > high:
            raise SchemaError(path, too_big)

    return number


def _unique_items(value: list[Any], path: str | None) -> None:
    seen = [json.dumps(v, sort_keys=True) for v in value]
    if len(set(seen)) != len(seen):
        raise SchemaError(path, "must not repeat items")
