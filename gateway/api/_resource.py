"""HTTP plumbing for the control API: routing, auth, bodies, errors.

One leaf resource owns the whole URL space, so that unknown paths (404),
wrong methods (405 with ``Allow``) and failures (500) all answer in the API's
JSON error shape rather than twisted.web's HTML pages. Routes are a table of
``Route`` values: the OpenAPI test compares that table with the document.

Order of checks for a request: route (404), method (405), auth (401/403),
body size (413), media type (415), JSON (400), schema (422), then the
handler. Request bodies are counted as they arrive and dropped past
``api.max_body_bytes``, so a large upload never sits in memory.

Per request the path costs what it must and no more (``bench/api.py
--in-process`` measures it): request schemas are compiled into checks once,
routes without parameters are one dict lookup, the query string is parsed
only when there is one, the answer is encoded by one shared encoder, and the
request skips twisted.web's resource traversal (there is one leaf) and
formats its ``Date`` header once a second.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.api._auth import ApiKeys
from gateway.api._errors import ApiError, error_body
from gateway.api._schema import Check, SchemaError, compile_schema
from gateway.metrics import Metrics

__all__ = ["ApiRequest", "ApiResource", "ApiSite", "Response", "Route"]


@attrs.frozen
class Response:
    """A handler's answer: JSON (``body`` any JSON value) or raw bytes."""

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None
    content_type: str = "application/json"


@attrs.frozen
class ApiRequest:
    """What a handler sees: path parameters, query, validated JSON body."""

    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any


Handler = Callable[[ApiRequest], "Response | Deferred[Response]"]


@attrs.frozen
class Route:
    """One (method, path template) pair of the API."""

    method: str
    template: str
    handler: Handler
    auth: bool = True
    body_schema: str | None = None  # a components/schemas name

    @property
    def pattern(self) -> re.Pattern[str]:
        return _template_re(self.template)


def _template_re(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    out = ""
    for i, part in enumerate(parts):
        out += re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)"
    return re.compile(f"^{out}$")


# twisted.web keeps bodies shorter than this in memory, longer ones in a file.
_IN_MEMORY = 100_000


class _CappedRequest(Request):
    """Drops the body past the site's cap instead of buffering it."""

    too_large = False
    _received = 0

    def process(self) -> None:
        """``Request.process`` for a site that is one leaf resource: no
        traversal (``prepath``/``postpath`` stay empty; the resource routes
        on ``path``), no encoders, a cached ``Date`` and no version banner."""
        site: ApiSite = self.channel.site  # type: ignore[attr-defined]
        self.site = site
        self.setHeader(b"date", site.http_date())  # type: ignore[no-untyped-call]
        self.prepath = []
        self.postpath = []
        self.sitepath: list[bytes] = []
        if self.path == b"*":
            self._handleStar()  # type: ignore[no-untyped-call]
            return
        try:
            self.render(site.resource)  # type: ignore[no-untyped-call]
        except BaseException:  # noqa: BLE001 - as Request.process: answer 500
            self.processingFailed(Failure())  # type: ignore[no-untyped-call]

    def _cap(self) -> int:
        cap: int = self.channel.site.max_body_bytes  # type: ignore[attr-defined]
        return cap

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._cap():
            self.too_large = True
            self.content = io.BytesIO()
        elif length is not None and length < _IN_MEMORY:
            # What twisted.web picks for a small body, minus its probe for
            # Site.getContentFile (an AttributeError per request).
            self.content = io.BytesIO()
        else:
            super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._cap():
            self.too_large = True
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]


class ApiSite(Site):
    """A Site with the body cap, no access log (metrics count requests)."""

    requestFactory = _CappedRequest
    displayTracebacks = False

    def __init__(self, resource: Resource, max_body_bytes: int, reactor: Any) -> None:
        # Bodies are JSON only: no form parsing, whose Content-Type parse (the
        # email package) cost a quarter of a request's time.
        super().__init__(  # type: ignore[no-untyped-call]
            resource, reactor=reactor, parsePOSTFormSubmission=False
        )
        self.max_body_bytes = max_body_bytes
        self.timeOut = 60
        self._date_second = -1
        self._date = b""

    def http_date(self) -> bytes:
        """The ``Date`` header value, formatted once per second."""
        now = self.reactor.seconds()
        second = int(now)
        if second != self._date_second:
            self._date = datetimeToString(second)  # type: ignore[no-untyped-call]
            self._date_second = second
        return self._date

    def log(self, request: Any) -> None:
        """No per-request log line: at a thousand calls a second it would
        cost more than the request; see ``voipgw_api_requests_total``."""


# A route and its compiled body check (None: the route takes no body).
_Bound = tuple[Route, Check | None]


class ApiResource(Resource):
    """The whole API as one leaf resource."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        routes: list[Route],
        keys: ApiKeys,
        document: dict[str, Any],
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.routes = routes
        self._keys = keys
        self._document = document
        self._metrics = metrics
        checks: dict[str, Check] = {}
        self._by_template: dict[str, dict[str, _Bound]] = {}
        # Templates in route order; those without parameters are also found
        # by one lookup, unless an earlier template's pattern matches them too.
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        self._static: dict[str, dict[str, _Bound]] = {}
        for route in routes:
            check: Check | None = None
            if route.body_schema is not None:
                if route.body_schema not in checks:
                    schema = {"$ref": f"#/components/schemas/{route.body_schema}"}
                    checks[route.body_schema] = compile_schema(schema, document)
                check = checks[route.body_schema]
            methods = self._by_template.get(route.template)
            if methods is None:
                methods = self._by_template[route.template] = {}
                shadowed = any(p.match(route.template) for p, _ in self._patterns)
                if "{" not in route.template and not shadowed:
                    self._static[route.template] = methods
                else:
                    self._patterns.append((route.pattern, route.template))
            methods[route.method] = (route, check)

    def render(self, request: Request) -> bytes | int:
        began = time.perf_counter()
        template = "unmatched"
        method = (request.method or b"").decode("latin-1")
        try:
            template, (route, check), params = self._match(request, method)
            if route.auth:
                self._keys.check(request.getHeader(b"authorization"))
            api_request = ApiRequest(
                params=params,
                query=_query(request),
                body=None if check is None else _body(check, request),
            )
            result = route.handler(api_request)
        except ApiError as e:
            return self._finish(request, _error_response(e), template, began, method)
        except Exception:  # noqa: BLE001 - any bug answers 500, never a traceback
            self.log.failure(
                "API {method} {template} failed", method=method, template=template
            )
            return self._finish(request, _internal(), template, began, method)
        if isinstance(result, Deferred):
            gone: list[bool] = []
            finished: Deferred[None] = request.notifyFinish()
            finished.addErrback(lambda _: gone.append(True))

            def fail(failure: Failure) -> Response:
                if isinstance(failure.value, ApiError):
                    return _error_response(failure.value)
                self.log.failure(
                    "API {method} {template} failed",
                    failure,
                    method=method,
                    template=template,
                )
                return _internal()

            def write(response: Response) -> None:
                if not gone:
                    self._finish(
                        request, response, template, began, method, deferred=True
                    )

            result.addErrback(fail).addCallback(write)
            return NOT_DONE_YET
        return self._finish(request, result, template, began, method)

    # -- steps ------------------------------------------------------------------

    def _match(
        self, request: Request, method: str
    ) -> tuple[str, _Bound, dict[str, str]]:
        raw_path = (request.path or b"/").decode("latin-1")
        methods = self._static.get(raw_path)
        if methods is not None:
            return raw_path, _pick(methods, method), {}
        for pattern, template in self._patterns:
            m = pattern.match(raw_path)
            if m is None:
                continue
            bound = _pick(self._by_template[template], method)
            # Bytes that are not UTF-8 become U+FFFD, which no id contains.
            params = {k: unquote(v, errors="replace") for k, v in m.groupdict().items()}
            return template, bound, params
        raise ApiError(404, "not_found", "no such resource")

    def _finish(
        self,
        request: Request,
        response: Response,
        template: str,
        began: float,
        method: str,
        *,
        deferred: bool = False,
    ) -> bytes | int:
        request.setResponseCode(response.status)
        headers = request.responseHeaders
        for name, value in response.headers:
            headers.setRawHeaders(name, [value])
        headers.setRawHeaders(b"cache-control", _NO_STORE)
        headers.setRawHeaders(b"server", _SERVER)  # no version banner
        if response.raw is not None:
            data = response.raw
        elif response.status == 204:
            data = b""
        else:
            data = _encode_json(response.body).encode("ascii")
        if response.status != 204:
            content_type = response.content_type
            headers.setRawHeaders(
                b"content-type",
                _JSON if content_type == "application/json" else [content_type],
            )
        if self._metrics is not None:
            self._metrics.api_request(
                template,
                method if method in _METHODS else "other",
                response.status,
                time.perf_counter() - began,
            )
        if deferred:
            request.write(data)  # type: ignore[no-untyped-call]
            request.finish()  # type: ignore[no-untyped-call]
            return NOT_DONE_YET
        return data


_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"})
# Header values set on every answer (twisted.web copies nothing it is given).
_NO_STORE = [b"no-store"]
_SERVER = [b"voipgw"]
_JSON = [b"application/json"]
# json.dumps with separators builds an encoder per call; this one is shared.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _pick(methods: dict[str, _Bound], method: str) -> _Bound:
    """The route for ``method`` among a template's routes, or 405."""
    bound = methods.get(method)
    if bound is None:
        allow = ", ".join(sorted(methods))
        raise ApiError(
            405,
            "method_not_allowed",
            f"{method} is not allowed here; allowed: {allow}",
            headers={"Allow": allow},
        )
    return bound


def _body(check: Check, request: Request) -> Any:
    """The request's JSON body, checked: 413, 415, 400, then 422."""
    if getattr(request, "too_large", False):
        raise ApiError(
            413,
            "body_too_large",
            "the request body is larger than api.max_body_bytes",
        )
    raw_type = request.getHeader(b"content-type")
    if raw_type != b"application/json":  # the usual value needs no parsing
        _check_media_type((raw_type or b"").decode("latin-1"))
    assert request.content is not None
    request.content.seek(0)
    body = _parse_json(request.content.read())
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    try:
        check(body, None)
    except SchemaError as e:
        raise ApiError(
            422, "invalid", f"{e.field or 'body'} {e.message}", e.field
        ) from None
    return body


def _check_media_type(content_type: str) -> None:
    """415 unless ``application/json``, with no charset or UTF-8."""
    media, _, params = content_type.partition(";")
    charset = params.strip().lower().replace(" ", "")
    if media.strip().lower() != "application/json" or (
        charset and charset not in ("charset=utf-8", 'charset="utf-8"')
    ):
        raise ApiError(
            415,
            "unsupported_media_type",
            "the body must be application/json (UTF-8)",
            field="Content-Type",
        )


def _query(request: Request) -> dict[str, list[str]]:
    """The query string; bytes that are not UTF-8 become U+FFFD, which no
    parameter's schema accepts (so they end as a 422 naming the parameter)."""
    uri = request.uri or b""
    if b"?" not in uri:
        return {}
    _, _, query = uri.decode("latin-1").partition("?")
    return parse_qs(query, keep_blank_values=True, errors="replace")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # rare: find the first repeated name
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate member {key!r}")
            seen.add(key)
    return result


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


# json.loads with hooks builds a decoder per call; this one is shared.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_constant=_reject_constant,
    parse_float=_parse_float,
)


def _parse_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError(
                "Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0
            )
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as e:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {e}") from None


def _error_response(e: ApiError) -> Response:
    return Response(
        e.status,
        error_body(e.code, e.message, e.field),
        headers=tuple(e.headers.items()),
    )


def _internal() -> Response:
    return Response(500, error_body("internal", "internal error (logged)"))
