"""The API resource in memory: route order, query parsing, and the request
plumbing that replaced twisted.web's traversal (Date, Server)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gateway.api import ApiKeys, ApiResource, Route
from gateway.api._resource import ApiRequest, ApiSite, Response
from gateway.api._schema import load_document


def _site(routes: list[Route], clock: Clock) -> ApiSite:
    resource = ApiResource(routes, ApiKeys([]), load_document())
    return ApiSite(resource, 1024, clock)


def _get(site: ApiSite, path: bytes, method: bytes = b"GET") -> bytes:
    """One request through an in-memory HTTP/1.1 connection; the raw answer."""
    transport = StringTransport()
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    assert channel is not None
    channel.makeConnection(transport)
    channel.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    answer: bytes = transport.value()
    channel.connectionLost(None)
    return answer


def _answer(name: str, seen: list[tuple[str, ApiRequest]]) -> Any:
    def handler(request: ApiRequest) -> Response:
        seen.append((name, request))
        return Response(200, {"route": name})

    return handler


def test_routes_keep_their_order_with_the_lookup_for_fixed_paths() -> None:
    """A path without parameters is found by lookup, but a template listed
    earlier whose pattern also matches still wins, as when every route was a
    pattern tried in order."""
    seen: list[tuple[str, ApiRequest]] = []
    routes = [
        Route("GET", "/things/{thing_id}", _answer("pattern", seen), auth=False),
        Route("GET", "/things/new", _answer("shadowed", seen), auth=False),
        Route("GET", "/plain", _answer("plain", seen), auth=False),
    ]
    site = _site(routes, Clock())
    assert b'{"route":"pattern"}' in _get(site, b"/things/new")
    assert b'{"route":"plain"}' in _get(site, b"/plain")
    assert b'{"route":"pattern"}' in _get(site, b"/things/a%20b")
    assert [(name, r.params) for name, r in seen] == [
        ("pattern", {"thing_id": "new"}),
        ("plain", {}),
        ("pattern", {"thing_id": "a b"}),
    ]
    refused = _get(site, b"/plain", b"DELETE")
    assert refused.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET\r\n" in refused


def test_query_is_parsed_only_when_there_is_one() -> None:
    """No '?' gives an empty query; otherwise every value, blanks kept."""
    seen: list[tuple[str, ApiRequest]] = []
    site = _site([Route("GET", "/q", _answer("q", seen), auth=False)], Clock())
    _get(site, b"/q")
    _get(site, b"/q?a=1&a=2&b=")
    assert [r.query for _, r in seen] == [{}, {"a": ["1", "2"], "b": [""]}]


def test_date_is_formatted_once_a_second_from_the_reactor() -> None:
    """Date comes from the site's reactor clock, cached for the second."""
    clock = Clock()
    clock.advance(784111777.25)
    site = _site([], clock)
    first = site.http_date()
    assert first == b"Sun, 06 Nov 1994 08:49:37 GMT"
    clock.advance(0.5)
    assert site.http_date() is first
    clock.advance(0.5)
    assert site.http_date() == b"Sun, 06 Nov 1994 08:49:38 GMT"


def test_answers_carry_date_and_no_version_banner() -> None:
    """Every answer, errors included, has Date and Server: voipgw only."""
    clock = Clock()
    clock.advance(784111777)
    site = _site([], clock)
    answer = _get(site, b"/nowhere")
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 404 ")
    assert b"\r\ndate: sun, 06 nov 1994 08:49:37 gmt" in head
    assert b"\r\nserver: voipgw\r\n" in head + b"\r\n"
    assert b"twisted" not in head
