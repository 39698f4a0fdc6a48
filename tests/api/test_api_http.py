"""HTTP-level behaviour of the API: errors in one shape, body limits, media
types, methods, and no traceback ever."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from api_helpers import Client, base_url, make_gateway
from twisted.logger import capturedLogs

from gateway.app import Gateway

pytestmark = pytest.mark.integration

CALL = {"to": "sip:bob@example.com", "caller": {"handle": "1"}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "the body is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'{"to": 1, "to": 2}', "duplicate member"),
        (b'{"caller": {"handle": "1", "handle": "2"}}', "duplicate member 'handle'"),
        (b'\xef\xbb\xbf{"to": "sip:bob@example.com"}', "Unexpected UTF-8 BOM"),
        (b'{"video": NaN}', "NaN is not JSON"),
        (b'{"ring_timeout_s": 1e999}', "number out of range"),
        (b"\xff\xfe{}", "the body is not valid JSON"),
        (b"[" * 60_000, "the body is not valid JSON"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_json_is_400(client: Client, data: bytes, message: str) -> None:
    """Anything but one UTF-8 JSON object (no duplicates, no NaN) is 400."""
    answer = await client.post(
        "/v1/calls", data=data, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400
    assert answer.body["error"]["code"] == "bad_json"
    assert message in answer.body["error"]["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ],
)
@pytest_twisted.ensureDeferred
async def test_other_media_types_are_415(
    client: Client, content_type: str | None
) -> None:
    """Bodies must be declared application/json (UTF-8)."""
    headers = {"Content-Type": content_type} if content_type else {}
    answer = await client.post("/v1/calls", data=b"{}", headers=headers)
    assert answer.status == 415
    assert answer.body["error"] == {
        "code": "unsupported_media_type",
        "message": "the body must be application/json (UTF-8)",
        "field": "Content-Type",
    }


@pytest_twisted.ensureDeferred
async def test_charset_utf8_is_accepted(client: Client) -> None:
    """`application/json; charset=utf-8` is JSON too."""
    answer = await client.post(
        "/v1/calls",
        data=b'{"to": "sip:x@example.com", "caller": {"handle": "1"}}',
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert answer.status == 404  # parsed and validated: no device for the AOR


@pytest_twisted.ensureDeferred
async def test_body_over_the_cap_is_413(tmp_path: Path) -> None:
    """A body over api.max_body_bytes is 413 (declared length or chunked),
    and is not buffered."""
    gateway = make_gateway(tmp_path, env={"VOIPGW_API__MAX_BODY_BYTES": "1024"})
    gateway.startService()
    try:
        client = Client(base_url(gateway))
        big = b'{"to": "' + b"x" * 2000 + b'"}'
        answer = await client.post(
            "/v1/calls", data=big, headers={"Content-Type": "application/json"}
        )
        assert answer.status == 413
        assert answer.body["error"]["code"] == "body_too_large"
        # Just under the cap still goes through to validation.
        ok = await client.post("/v1/calls", {"caller": {"handle": "x" * 900}})
        assert ok.status == 422
    finally:
        await gateway.stopService()


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404_json(client: Client) -> None:
    """Unknown paths answer 404 in the error shape, not twisted.web's HTML."""
    for path in ("/", "/v1", "/v2/calls", "/v1/calls/a/b", "/v1/devices/%ff"):
        answer = await client.get(path)
        assert answer.status == 404, path
        assert answer.body["error"]["code"] == "not_found"


@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_with_allow(client: Client) -> None:
    """A known path with another method: 405 and the Allow header."""
    answer = await client.request("PATCH", "/v1/calls/abc")
    assert answer.status == 405
    assert answer.header("allow") == "DELETE, GET"
    assert answer.body["error"]["code"] == "method_not_allowed"
    put = await client.request("PUT", "/healthz")
    assert (put.status, put.header("allow")) == (405, "GET")


@pytest_twisted.ensureDeferred
async def test_unexpected_exception_is_500_json_and_logged(
    gateway: Gateway, client: Client
) -> None:
    """A bug in a handler answers 500 in the error shape and is logged with
    its traceback; nothing of it reaches the client."""
    assert gateway.dispatcher is not None

    def broken(*args: object) -> None:
        raise RuntimeError("secret internals")

    gateway.dispatcher.start = broken  # type: ignore[method-assign]
    with capturedLogs() as events:
        answer = await client.post("/v1/calls", CALL)
    assert answer.status == 500
    assert answer.body == {
        "error": {
            "code": "internal",
            "message": "internal error (logged)",
            "field": None,
        }
    }
    assert b"secret internals" not in answer.raw
    failures = [e for e in events if "log_failure" in e]
    assert failures
    assert failures[0]["log_failure"].check(RuntimeError)


@pytest_twisted.ensureDeferred
async def test_errors_carry_no_store(client: Client) -> None:
    """Answers are not cacheable (they hold live state)."""
    answer = await client.get("/v1/calls/x")
    assert answer.header("cache-control") == "no-store"


BODY_ROUTES = [
    ("POST", "/v1/calls"),
    ("POST", "/v1/messages"),
    ("PUT", "/v1/devices/d1"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest_twisted.ensureDeferred
async def test_every_body_route_checks_json_media_type_and_size(
    tmp_path: Path, method: str, path: str
) -> None:
    """Each endpoint with a body answers 400, 415 and 413 the same way."""
    gateway = make_gateway(tmp_path, env={"VOIPGW_API__MAX_BODY_BYTES": "1024"})
    gateway.startService()
    try:
        client = Client(base_url(gateway))
        json_type = {"Content-Type": "application/json"}
        bad = await client.request(method, path, data=b"[]", headers=json_type)
        assert (bad.status, bad.body["error"]["code"]) == (400, "bad_json")
        text = await client.request(
            method, path, data=b"{}", headers={"Content-Type": "text/plain"}
        )
        assert (text.status, text.body["error"]["code"]) == (
            415,
            "unsupported_media_type",
        )
        big = await client.request(method, path, data=b" " * 2048, headers=json_type)
        assert (big.status, big.body["error"]["code"]) == (413, "body_too_large")
        # The body was read and dropped: the connection is still usable.
        again = await client.request(method, path, data=b"[]", headers=json_type)
        assert again.status == 400
    finally:
        await gateway.stopService()
