"""The compiled request validator: the same first error as the schema-walking
validator it replaced, for a table of bad bodies (recorded from that
validator), and the keywords the document does not use yet."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api._schema import SchemaError, compile_schema, load_document

A = "sip:bob@example.com"
C = {"handle": "1"}
U = "123e4567-e89b-12d3-a456-426614174000"
UUID_RE = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
CTRL_RE = "^[^\\x00-\\x1f\\x7f]*$"
AOR_RE = (
    "^[sS][iI][pP][sS]?:[A-Za-z0-9\\-_.!~*'()&=+$,%/]+@[A-Za-z0-9\\-.\\[\\]:]+"
    "(;[A-Za-z0-9\\-_.!~*'()&=+$,%/:;]*)?$"
)

# (components/schemas name, instance, (field, message) of the first error).
BAD: list[tuple[str, Any, tuple[str | None, str]]] = [
    ("CallCreate", {}, ("to", "is required")),
    ("CallCreate", {"caller": C}, ("to", "is required")),
    ("CallCreate", {"to": A}, ("caller", "is required")),
    ("CallCreate", {"to": A, "caller": C, "x": 1}, ("x", "is not a known member")),
    ("CallCreate", {"to": 5, "caller": C}, ("to", "must be string")),
    ("CallCreate", {"to": "bob", "caller": C}, ("to", "must be at least 5 characters")),
    (
        "CallCreate",
        {"to": "sip:" + "a" * 300 + "@x", "caller": C},
        ("to", "must be at most 256 characters"),
    ),
    (
        "CallCreate",
        {"to": "sip:b\ud800b@example.com", "caller": C},
        ("to", "must be valid Unicode (no lone surrogates)"),
    ),
    ("CallCreate", {"to": A, "caller": {}}, ("caller.handle", "is required")),
    (
        "CallCreate",
        {"to": A, "caller": {"handle": ""}},
        ("caller.handle", "must be at least 1 characters"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": {"handle": "1", "display_name": 7}},
        ("caller.display_name", "must be string or null"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": {"handle": "1", "x": 1}},
        ("caller.x", "is not a known member"),
    ),
    ("CallCreate", {"to": A, "caller": "bob"}, ("caller", "must be object")),
    (
        "CallCreate",
        {"to": A, "caller": C, "video": "yes"},
        ("video", "must be boolean"),
    ),
    ("CallCreate", {"to": A, "caller": C, "video": 1}, ("video", "must be boolean")),
    (
        "CallCreate",
        {"to": A, "caller": C, "ring_timeout_s": 0},
        ("ring_timeout_s", "must be at least 1"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "ring_timeout_s": 301},
        ("ring_timeout_s", "must be at most 300"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "ring_timeout_s": "5"},
        ("ring_timeout_s", "must be number"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "ring_timeout_s": True},
        ("ring_timeout_s", "must be number"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "call_id": "nope"},
        ("call_id", f"must match {UUID_RE}"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "call_id": None},
        ("call_id", "must be string"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "headers": []},
        ("headers", "must be object"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "headers": {"Y-a": "1"}},
        ("headers.Y-a", "must match ^[Xx]-[A-Za-z0-9-]{1,64}$"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "headers": {"X-a": 1}},
        ("headers.X-a", "must be string"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "headers": {"X-a": "a\nb"}},
        ("headers.X-a", f"must match {CTRL_RE}"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "headers": {"X-a": "a" * 1025}},
        ("headers.X-a", "must be at most 1024 characters"),
    ),
    (
        "CallCreate",
        {"to": A, "caller": C, "headers": {f"X-{i}": "v" for i in range(33)}},
        ("headers", "must have at most 32 members"),
    ),
    (
        "CallCreate",
        {"caller": C, "device_ids": []},
        ("device_ids", "must have at least 1 items"),
    ),
    ("CallCreate", {"caller": C, "device_ids": "d1"}, ("device_ids", "must be array")),
    (
        "CallCreate",
        {"caller": C, "device_ids": ["d1", "d1"]},
        ("device_ids", "must not repeat items"),
    ),
    (
        "CallCreate",
        {"caller": C, "device_ids": ["d 1"]},
        ("device_ids[0]", "must match ^[A-Za-z0-9._:-]{1,128}$"),
    ),
    (
        "CallCreate",
        {"caller": C, "device_ids": ["d1", 2]},
        ("device_ids[1]", "must be string"),
    ),
    (
        "CallCreate",
        {"caller": C, "device_ids": [f"d{i}" for i in range(200)]},
        ("device_ids", "must have at most 100 items"),
    ),
    ("MessageCreate", {}, ("to", "is required")),
    ("MessageCreate", {"from": C, "body": ""}, ("to", "is required")),
    (
        "MessageCreate",
        {"to": A, "from": C, "body": "x" * 5000},
        ("body", "must be at most 4096 characters"),
    ),
    (
        "MessageCreate",
        {"to": A, "from": C, "body": "hi", "message_id": "x"},
        ("message_id", f"must match {UUID_RE}"),
    ),
    ("MessageCreate", {"to": A, "from": C}, ("body", "is required")),
    ("DevicePut", {}, ("aors", "is required")),
    ("DevicePut", {"aors": []}, ("aors", "must have at least 1 items")),
    ("DevicePut", {"aors": [A, A]}, ("aors", "must not repeat items")),
    ("DevicePut", {"aors": ["bob"]}, ("aors[0]", "must be at least 5 characters")),
    (
        "DevicePut",
        {"aors": [A], "voip_token": "zz"},
        ("voip_token", "must be at least 8 characters"),
    ),
    (
        "DevicePut",
        {"aors": [A], "topic": ""},
        ("topic", "must be at least 1 characters"),
    ),
    (
        "DevicePut",
        {"aors": [A], "topic": "a b"},
        ("topic", "must match ^[A-Za-z0-9.-]+$"),
    ),
    ("DevicePut", {"aors": [A], "topic": 5}, ("topic", "must be string or null")),
    (
        "DevicePut",
        {"aors": [A], "apns_env": "dev"},
        ("apns_env", 'must be one of "production", "sandbox"'),
    ),
    (
        "DevicePut",
        {"aors": [A], "locale": "x" * 36},
        ("locale", "must be at most 35 characters"),
    ),
    (
        "DevicePut",
        {"aors": [A], "app_version": "\x01"},
        ("app_version", f"must match {CTRL_RE}"),
    ),
    ("DevicePut", {"aors": [A], "aors2": 1}, ("aors2", "is not a known member")),
    ("DevicePut", {"aors": [A] * 33}, ("aors", "must have at most 32 items")),
    ("Aor", "sip:bob", (None, f"must match {AOR_RE}")),
    ("Aor", 7, (None, "must be string")),
    ("Aor", None, (None, "must be string")),
    ("Uuid", U.upper() + "x", (None, f"must match {UUID_RE}")),
    ("ApnsToken", "a" * 64 + "g", (None, "must match ^([0-9a-fA-F]{2})+$")),
]

GOOD: list[tuple[str, Any]] = [
    ("CallCreate", {"to": A, "caller": C}),
    (
        "CallCreate",
        {
            "caller": {"handle": "1", "display_name": None},
            "device_ids": ["d1"],
            "video": True,
            "ring_timeout_s": 1.5,
            "call_id": U,
            "headers": {"X-a": "b"},
        },
    ),
    ("MessageCreate", {"to": A, "from": C, "body": "hi", "message_id": U}),
    (
        "DevicePut",
        {"aors": [A], "voip_token": "a" * 64, "topic": None, "apns_env": "sandbox"},
    ),
    ("DevicePut", {"aors": [A], "voip_token": None, "locale": None}),
    ("Aor", A),
]


def _compiled(name: str) -> Any:
    return compile_schema({"$ref": f"#/components/schemas/{name}"}, load_document())


@pytest.mark.parametrize(("name", "instance", "expected"), BAD)
def test_first_error_is_the_recorded_one(
    name: str, instance: Any, expected: tuple[str | None, str]
) -> None:
    """Each bad instance fails with the field and message the old validator
    gave (clients and tests match on them)."""
    with pytest.raises(SchemaError) as caught:
        _compiled(name)(instance, None)
    assert (caught.value.field, caught.value.message) == expected


@pytest.mark.parametrize(("name", "instance"), GOOD)
def test_good_instances_pass(name: str, instance: Any) -> None:
    """Valid bodies pass the compiled check."""
    _compiled(name)(instance, None)


def test_keywords_the_document_does_not_use_yet() -> None:
    """oneOf (none, two), const, enum of numbers, integer, minProperties and a
    recursive $ref behave as the walking validator did."""
    document: dict[str, Any] = {
        "components": {
            "schemas": {
                "Tree": {
                    "type": "object",
                    "minProperties": 1,
                    "properties": {
                        "v": {"type": "integer", "enum": [1, 2]},
                        "kids": {"type": "array", "items": {"$ref": "#/x/Tree"}},
                    },
                }
            }
        }
    }
    document["x"] = document["components"]["schemas"]
    tree = compile_schema({"$ref": "#/x/Tree"}, document)
    tree({"v": 1, "kids": [{"v": 2.0, "kids": []}]}, None)
    cases: list[tuple[Any, tuple[str | None, str]]] = [
        ({}, (None, "must have at least 1 members")),
        ({"v": 1.5}, ("v", "must be integer")),
        ({"kids": [{"v": 3}]}, ("kids[0].v", "must be one of 1, 2")),
    ]
    for instance, expected in cases:
        with pytest.raises(SchemaError) as caught:
            tree(instance, None)
        assert (caught.value.field, caught.value.message) == expected
    one_of = compile_schema(
        {"oneOf": [{"type": "string"}, {"const": "a"}, {"type": "null"}]}, document
    )
    one_of(None, "p")
    with pytest.raises(SchemaError, match="matches more than one alternative"):
        one_of("a", "p")
    with pytest.raises(SchemaError, match="must be string"):
        one_of(5, "p")


def test_any_of_required_alternatives_check_other_values_as_before() -> None:
    """anyOf of required-sets (compiled to one check) still rejects a lone
    surrogate in a string and lets other non-objects through, as each
    alternative did when it was checked on its own."""
    document: dict[str, Any] = {}
    check = compile_schema(
        {"anyOf": [{"required": ["a"]}, {"required": ["b", "c"]}]}, document
    )
    check({"b": 1, "c": 2}, None)
    check(5, None)
    check("fine", None)
    with pytest.raises(SchemaError) as caught:
        check({"b": 1}, "x")
    assert (caught.value.field, caught.value.message) == ("x.a", "is required")
    with pytest.raises(SchemaError, match="lone surrogates"):
        check("\ud800", None)
