"""The OpenAPI document is true: same routes as the server, only keywords
our validator enforces, served as checked in, and the validator itself
behaves like JSON Schema for that subset."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
import pytest_twisted
from api_helpers import Client, api_listener

from gateway.api import load_document
from gateway.api._schema import SchemaError, unsupported_keywords, validate
from gateway.app import Gateway

pytestmark = pytest.mark.integration


def test_every_route_is_documented_and_vice_versa(gateway: Gateway) -> None:
    """The resource's route table and the document's paths x methods agree,
    as do which routes need auth and which take which body schema."""
    document = load_document()
    served = {(r.method, r.template) for r in api_listener(gateway).resource.routes}
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert served == documented
    for route in api_listener(gateway).resource.routes:
        operation = document["paths"][route.template][route.method.lower()]
        assert (operation.get("security") != []) == route.auth, route.template
        assert ("401" in operation["responses"]) == route.auth
        body = operation.get("requestBody")
        if route.body_schema is None:
            assert body is None
        else:
            ref = body["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{route.body_schema}"


def test_document_uses_only_enforced_keywords() -> None:
    """No keyword the validator would silently ignore."""
    assert unsupported_keywords(load_document()) == set()


def test_document_is_openapi_31_with_resolvable_refs() -> None:
    """Version 3.1, every $ref points at a schema that exists."""
    document = load_document()
    assert document["openapi"].startswith("3.1.")
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        name = ref.removeprefix("#/components/schemas/")
        assert name in document["components"]["schemas"], ref


@pytest_twisted.ensureDeferred
async def test_served_document_is_the_packaged_file(client: Client) -> None:
    """GET /v1/openapi.json returns the checked-in document."""
    answer = await client.get("/v1/openapi.json")
    assert answer.status == 200
    packaged = resources.files("gateway.api").joinpath("openapi.json").read_text()
    assert answer.body == json.loads(packaged)


DOC: dict[str, Any] = {
    "components": {
        "schemas": {
            "Thing": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "anyOf": [{"required": ["name"]}],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "pattern": "^a"},
                    "n": {"type": ["integer", "null"], "minimum": 0, "maximum": 3},
                    "tags": {
                        "type": "array",
                        "items": {"type": "string"},
                        "uniqueItems": True,
                        "maxItems": 2,
                    },
                    "kind": {"enum": ["x", "y"]},
                    "one": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                },
            }
        }
    }
}
THING = {"$ref": "#/components/schemas/Thing"}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "b"}, "name"),
        ({"name": "a", "n": True}, "n"),
        ({"name": "a", "n": 4}, "n"),
        ({"name": "a", "n": 1.5}, "n"),
        ({"name": "a", "tags": ["x", "x"]}, "tags"),
        ({"name": "a", "tags": ["x", 1]}, "tags[1]"),
        ({"name": "a", "tags": ["x", "y", "z"]}, "tags"),
        ({"name": "a", "kind": "z"}, "kind"),
        ({"name": "a", "other": 1}, "other"),
        ({"name": "a", "one": None}, "one"),
        ({"name": "a\ud800"}, "name"),
        ([], None),
    ],
)
def test_validator_rejects(value: Any, field: str | None) -> None:
    """Each supported keyword rejects what JSON Schema rejects, naming the member."""
    with pytest.raises(SchemaError) as raised:
        validate(value, THING, DOC)
    assert raised.value.field == field


def test_validator_accepts() -> None:
    """Valid instances pass, including integral floats as integers and null."""
    validate(
        {"name": "ab", "n": 2.0, "tags": ["x", "y"], "kind": "x", "one": 3}, THING, DOC
    )
    validate({"name": "a", "n": None}, THING, DOC)
