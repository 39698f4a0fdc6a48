"""HTTP plumbing for the control API: routing, auth, bodies, errors.

One leaf resource owns the whole URL space, so that unknown paths (404),
wrong methods (405 with ``Allow``) and failures (500) all answer in the API's
JSON error shape rather than twisted.web's HTML pages. Routes are a table of
``Route`` values: the OpenAPI test compares that table with the document.

Order of checks for a request: route (404), method (405), auth (401/403),
body size (413), media type (415), JSON (400), schema (422), then the
handler. Request bodies are counted as they arrive and dropped past
``api.max_body_bytes``, so a large upload never sits in memory.
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
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gateway.api._auth import ApiKeys
from gateway.api._errors import ApiError, error_body
from gateway.api._schema import SchemaError, validate
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


class _CappedRequest(Request):
    """Drops the body past the site's cap instead of buffering it."""

    too_large = False
    _received = 0

    def _cap(self) -> int:
        cap: int = self.channel.site.max_body_bytes  # type: ignore[attr-defined]
        return cap

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._cap():
            self.too_large = True
            self.content = io.BytesIO()
            return
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

    def log(self, request: Any) -> None:
        """No per-request log line: at a thousand calls a second it would
        cost more than the request; see ``voipgw_api_requests_total``."""


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
        # Labelled children, cached: labels() costs more than inc().
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[str, Any] = {}
        self._by_template: dict[str, dict[str, Route]] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        for route in routes:
            if route.template not in self._by_template:
                self._by_template[route.template] = {}
                self._patterns.append((route.pattern, route.template))
            self._by_template[route.template][route.method] = route

    def render(self, request: Request) -> bytes | int:
        began = time.perf_counter()
        template = "unmatched"
        try:
            template, route, params = self._match(request)
            self._check_auth(route, request)
            api_request = ApiRequest(
                params=params,
                query=_query(request),
                body=self._body(route, request),
            )
            result = route.handler(api_request)
        except ApiError as e:
            return self._finish(request, _error_response(e), template, began)
        except Exception:  # noqa: BLE001 - any bug answers 500, never a traceback
            self.log.failure(
                "API {method} {template} failed",
                method=_method(request),
                template=template,
            )
            return self._finish(request, _internal(), template, began)
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
                    method=_method(request),
                    template=template,
                )
                return _internal()

            def write(response: Response) -> None:
                if not gone:
                    self._finish(request, response, template, began, deferred=True)

            result.addErrback(fail).addCallback(write)
            return NOT_DONE_YET
        return self._finish(request, result, template, began)

    # -- steps ------------------------------------------------------------------

    def _match(self, request: Request) -> tuple[str, Route, dict[str, str]]:
        raw_path = (request.path or b"/").decode("latin-1")
        for pattern, template in self._patterns:
            m = pattern.match(raw_path)
            if m is None:
                continue
            methods = self._by_template[template]
            route = methods.get(_method(request))
            if route is None:
                allow = ", ".join(sorted(methods))
                raise ApiError(
                    405,
                    "method_not_allowed",
                    f"{_method(request)} is not allowed here; allowed: {allow}",
                    headers={"Allow": allow},
                )
            # Bytes that are not UTF-8 become U+FFFD, which no id contains.
            params = {k: unquote(v, errors="replace") for k, v in m.groupdict().items()}
            return template, route, params
        raise ApiError(404, "not_found", "no such resource")

    def _check_auth(self, route: Route, request: Request) -> None:
        if route.auth:
            self._keys.check(request.getHeader(b"authorization"))

    def _body(self, route: Route, request: Request) -> Any:
        if route.body_schema is None:
            return None
        if getattr(request, "too_large", False):
            raise ApiError(
                413,
                "body_too_large",
                "the request body is larger than api.max_body_bytes",
            )
        content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
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
        assert request.content is not None
        request.content.seek(0)
        body = _parse_json(request.content.read())
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object")
        schema = {"$ref": f"#/components/schemas/{route.body_schema}"}
        try:
            validate(body, schema, self._document)
        except SchemaError as e:
            raise ApiError(
                422, "invalid", f"{e.field or 'body'} {e.message}", e.field
            ) from None
        return body

    def _finish(
        self,
        request: Request,
        response: Response,
        template: str,
        began: float,
        *,
        deferred: bool = False,
    ) -> bytes | int:
        request.setResponseCode(response.status)
        headers = request.responseHeaders
        for name, value in response.headers:
            headers.setRawHeaders(name, [value])
        headers.setRawHeaders(b"cache-control", [b"no-store"])
        headers.setRawHeaders(b"server", [b"voipgw"])  # no version banner
        if response.raw is not None:
            data = response.raw
        elif response.status == 204:
            data = b""
        else:
            data = json.dumps(response.body, separators=(",", ":")).encode("ascii")
        if response.status != 204:
            headers.setRawHeaders(b"content-type", [response.content_type.encode()])
        if self._metrics is not None:
            method = _method(request)
            self._metrics.api_requests.labels(
                template,
                method if method in _METHODS else "other",
                str(response.status),
            ).inc()
            self._metrics.api_seconds.labels(template).observe(
                time.perf_counter() - began
            )
        if deferred:
            request.write(data)  # type: ignore[no-untyped-call]
            request.finish()  # type: ignore[no-untyped-call]
            return NOT_DONE_YET
        return data


_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"})


def _method(request: Request) -> str:
    return (request.method or b"").decode("latin-1")


def _query(request: Request) -> dict[str, list[str]]:
    """The query string; bytes that are not UTF-8 become U+FFFD, which no
    parameter's schema accepts (so they end as a 422 naming the parameter)."""
    uri = (request.uri or b"").decode("latin-1")
    _, _, query = uri.partition("?")
    return parse_qs(query, keep_blank_values=True, errors="replace")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _parse_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
        )
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
