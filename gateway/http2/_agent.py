"""``IAgent`` over HTTP/2, for ``treq.HTTPClient(H2Agent(...))``.

Twisted's own ``Agent`` speaks HTTP/1.1 only (twisted#8489) and APNs needs
HTTP/2, so this agent keeps one multiplexed TLS connection per (host, port)
and runs every request as a stream on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
from twisted.application.internet import backoffPolicy
from twisted.internet._sslverify import IOpenSSLTrustRoot  # not re-exported
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import Interface, implementer

from gateway.http2._body import BytesProducer
from gateway.http2._connection import CONNECTION_HEADERS
from gateway.http2._errors import (
    AgentClosedError,
    ConnectFailedError,
    H2ClientError,
    QueueFullError,
)
from gateway.http2._exchange import Exchange
from gateway.http2._protocol import ConnectionSettings, H2ClientProtocol
from gateway.http2._proxy import TunnelProtocol
from gateway.http2._response import H2ClientRequest
from gateway.tls import TLSClientEndpoint

__all__ = ["H2Agent", "H2AgentReactor"]


class H2AgentReactor(IReactorTCP, IReactorTime, Interface):
    """What the agent needs from a reactor: TCP connections and a clock."""


_MAX_ORIGINS = 256
# Request fields not sent as given: connection-specific ones (RFC 9113 8.2.2)
# and content-length (recomputed from the body actually sent).
_NOT_FORWARDED = CONNECTION_HEADERS | {b"content-length"}


@attrs.frozen
class _Origin:
    """``scheme://authority`` of request URIs, parsed once."""

    scheme: bytes
    host: str
    port: int
    authority: bytes  # :authority, without the port when it is 443

    @classmethod
    def of(cls, parsed: URI) -> _Origin:
        """From a parsed URI."""
        host, port = parsed.host, parsed.port
        return cls(
            scheme=parsed.scheme,
            host=host.decode("idna"),
            port=port,
            authority=host if port == 443 else b"%s:%d" % (host, port),
        )


@implementer(IConsumer)
class _Collector:
    """Reads a request body producer into memory (bodies are small pushes)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Keep a chunk."""
        self.chunks.append(data)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        """Body producers drive themselves; nothing to register."""

    def unregisterProducer(self) -> None:
        """See ``registerProducer``."""


class _HostPool:
    """The connection (and the requests waiting for it) for one host and port."""

    log = Logger()

    def __init__(self, agent: H2Agent, host: str, port: int) -> None:
        self._agent = agent
        self._host = host
        self._port = port
        self._peer = f"{host}:{port}"
        self._current: H2ClientProtocol | None = None
        self._connecting: H2ClientProtocol | None = None
        self._connect_d: Deferred[IProtocol] | None = None
        self._connect_timer: IDelayedCall | None = None
        self._backoff_call: IDelayedCall | None = None
        # Insertion-ordered; a dict so that cancelling a waiter is O(1).
        self._waiting: dict[Exchange, None] = {}
        self._all: set[H2ClientProtocol] = set()
        self._failures = 0

    @property
    def connections(self) -> int:
        """Open connections (the current one plus any draining after GOAWAY)."""
        return len(self._all)

    # -- requests -----------------------------------------------------------

    def submit(self, exchange: Exchange) -> None:
        """Put ``exchange`` on the connection, or wait for one to be made."""
        current = self._current
        if current is not None and current.usable:
            current.submit(exchange)
            return
        if len(self._waiting) >= self._agent.settings.max_queued:
            raise QueueFullError(
                f"{len(self._waiting)} requests already wait for a connection "
                f"to {self._peer}"
            )
        exchange.waiter = self
        self._waiting[exchange] = None
        self._ensure_connecting()

    def forget(self, exchange: Exchange) -> None:
        """The caller gave up on a waiting exchange."""
        self._waiting.pop(exchange, None)

    def retry(self, exchange: Exchange, error: H2ClientError) -> None:
        """Send an unprocessed request again, a bounded number of times."""
        exchange.attempts += 1
        if exchange.done:
            return
        if exchange.attempts >= self._agent.max_attempts or self._agent.closed:
            exchange.fail(error)
            return
        try:
            self.submit(exchange)
        except H2ClientError as e:
            exchange.fail(e)

    # -- connections --------------------------------------------------------

    def connection_unusable(self, connection: H2ClientProtocol) -> None:
        """GOAWAY or idle: stop sending new requests there."""
        if self._current is connection:
            self._current = None

    def connection_closed(self, connection: H2ClientProtocol, healthy: bool) -> None:
        """Count unhealthy ends for backoff; reconnect if requests wait."""
        if connection in self._all:
            self._all.discard(connection)
            self._failures = 0 if healthy else self._failures + 1
        if self._current is connection:
            self._current = None
        if self._waiting and not self._agent.closed:
            self._ensure_connecting()

    def _ensure_connecting(self) -> None:
        if (
            self._connecting is not None
            or self._backoff_call is not None
            or self._agent.closed
        ):
            return
        delay = self._agent.backoff(self._failures) if self._failures else 0.0
        if delay > 0:
            self.log.info(
                "Reconnecting to {peer} in {delay:.2f}s after {failures} failures",
                peer=self._peer,
                delay=delay,
                failures=self._failures,
            )
            self._backoff_call = self._agent.clock.callLater(delay, self._connect)
        else:
            self._connect()

    def _connect(self) -> None:
        self._backoff_call = None
        protocol = H2ClientProtocol(
            clock=self._agent.clock,
            owner=self,
            settings=self._agent.settings,
            peer=self._peer,
        )
        self._connecting = protocol
        protocol.ready.addCallbacks(self._connected, self._connect_failed)
        self._connect_timer = self._agent.clock.callLater(
            self._agent.connect_timeout, self._connect_timed_out, protocol
        )
        d = self._agent.open_connection(self._host, self._port, protocol)
        self._connect_d = d

        def failed(failure: Failure) -> None:
            self._connect_d = None
            protocol.never_connected(
                ConnectFailedError(
                    f"cannot connect to {self._agent.describe_route(self._peer)}: "
                    f"{failure.getErrorMessage()}"
                )
            )

        def done(_: object) -> None:
            self._connect_d = None

        d.addCallbacks(done, failed)

    def _connect_timed_out(self, protocol: H2ClientProtocol) -> None:
        self._connect_timer = None
        error = ConnectFailedError(
            f"connecting to {self._peer} took longer than "
            f"{self._agent.connect_timeout}s"
        )
        protocol.never_connected(error)
        if self._connect_d is not None:
            d, self._connect_d = self._connect_d, None
            d.cancel()

    def _stop_connect_timer(self) -> None:
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None

    def _connected(self, protocol: H2ClientProtocol) -> None:
        self._stop_connect_timer()
        self._connecting = None
        self._all.add(protocol)
        if self._agent.closed:
            protocol.close()
            return
        self._current = protocol
        waiting, self._waiting = self._waiting, {}
        for exchange in waiting:
            exchange.waiter = None
            if exchange.done:
                continue
            try:
                self.submit(exchange)
            except H2ClientError as e:
                exchange.fail(e)

    def _connect_failed(self, failure: Failure) -> None:
        self._stop_connect_timer()
        self._connecting = None
        self._failures += 1
        error = failure.value
        if not isinstance(error, H2ClientError):
            error = ConnectFailedError(str(error))
        self.log.warn(
            "HTTP/2 connection to {peer} failed: {error}",
            peer=self._peer,
            error=str(error),
        )
        waiting, self._waiting = self._waiting, {}
        for exchange in waiting:
            exchange.waiter = None
            exchange.fail(error)

    def close(self) -> Deferred[object]:
        """Fail waiting requests and close every connection."""
        if self._backoff_call is not None and self._backoff_call.active():
            self._backoff_call.cancel()
        self._backoff_call = None
        waiting, self._waiting = self._waiting, {}
        for exchange in waiting:
            exchange.waiter = None
            exchange.fail(AgentClosedError("HTTP/2 agent closed"))
        closing: list[Deferred[None]] = []
        if self._connecting is not None:
            closing.append(self._connecting.close())
        if self._connect_d is not None:
            d, self._connect_d = self._connect_d, None
            d.cancel()
        closing.extend(p.close() for p in list(self._all))
        self._stop_connect_timer()
        return DeferredList(closing, consumeErrors=True)  # type: ignore[return-value]


@implementer(IAgent)
class H2Agent:
    """HTTP/2-only ``IAgent``: streams multiplexed over one TLS connection per host.

    ``request`` fails (never hangs) with an ``H2ClientError`` subclass or
    ``CancelledError``; see ``gateway.http2`` for the list.
    """

    log = Logger()

    def __init__(
        self,
        reactor: H2AgentReactor,
        *,
        ca_file: Path | str | None = None,
        trust_root: IOpenSSLTrustRoot | None = None,
        client_certificate: PrivateCertificate | None = None,
        proxy: tuple[str, int] | None = None,
        connect_timeout: float = 10.0,
        request_timeout: float | None = 30.0,
        max_concurrent_streams: int = 1000,
        max_queued: int = 10000,
        max_response_size: int = 1024 * 1024,
        ping_interval: float | None = 60.0,
        ping_timeout: float = 20.0,
        idle_timeout: float | None = None,
        max_attempts: int = 3,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        self._reactor = reactor
        self.clock: IReactorTime = reactor
        if ca_file is not None and trust_root is not None:
            raise ValueError("give ca_file or trust_root, not both")
        self._trust_root: IOpenSSLTrustRoot | Certificate | None = trust_root
        if ca_file is not None:
            self._trust_root = Certificate.loadPEM(Path(ca_file).read_bytes())
        self._client_certificate = client_certificate
        self._proxy = proxy
        self.connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self.max_attempts = max_attempts
        self.backoff: Callable[[int], float] = backoff or backoffPolicy()
        self.settings = ConnectionSettings(
            max_concurrent_streams=max_concurrent_streams,
            max_queued=max_queued,
            max_response_size=max_response_size,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            idle_timeout=idle_timeout,
        )
        self._pools: dict[tuple[str, int], _HostPool] = {}
        self._origins: dict[bytes, _Origin] = {}
        self.closed = False

    def connection_count(self, host: str, port: int) -> int:
        """Open connections to ``host:port`` (for tests and metrics)."""
        pool = self._pools.get((host, port))
        return 0 if pool is None else pool.connections

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Send one request as an HTTP/2 stream; fires with the response head."""
        if self.closed:
            return fail(AgentClosedError("HTTP/2 agent is closed"))
        origin, path = self._split(uri)
        if origin.scheme != b"https":
            return fail(
                SchemeNotSupported(f"HTTP/2 agent needs https, not {origin.scheme!r}")
            )
        host, port = origin.host, origin.port
        if headers is None:
            headers = Headers()
        h2_headers = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", origin.authority),
            (b":path", path),
        ]
        # Built clean for ClientConnection.submit(clean=True): lower-case
        # names after the pseudo-header fields (Headers allows no ":" names),
        # no connection-specific ones.
        for name, values in headers.getAllRawHeaders():
            lower = name.lower()
            if lower in _NOT_FORWARDED:
                continue
            for value in values:
                h2_headers.append((lower, value))
        exchange = Exchange(
            clock=self.clock,
            request=H2ClientRequest(method, uri, h2_headers),
            h2_headers=h2_headers,
            timeout=self._request_timeout,
        )
        if bodyProducer is None:
            self._dispatch(exchange, host, port)
        elif isinstance(bodyProducer, BytesProducer):
            self._set_body(exchange, bodyProducer.body)
            self._dispatch(exchange, host, port)
        else:
            self._produce(exchange, bodyProducer, host, port)
        return exchange.deferred

    def _split(self, uri: bytes) -> tuple[_Origin, bytes]:
        """(origin, request target) of an absolute URI.

        Parsing a whole URI with ``URI.fromBytes`` (urllib) per request costs
        about as much as sending its HEADERS frame; requests go to a handful of
        origins, so only the ``scheme://authority`` part is parsed, once.
        """
        start = uri.find(b"://")
        end = uri.find(b"/", start + 3) if start > 0 else -1
        prefix, target = (uri, b"/") if end < 0 else (uri[:end], uri[end:])
        if b"?" in prefix or b"#" in prefix or b"#" in target:
            # Query without a path, or a fragment: let urllib sort it out.
            parsed = URI.fromBytes(uri)  # type: ignore[no-untyped-call]
            return _Origin.of(parsed), parsed.originForm
        origin = self._origins.get(prefix)
        if origin is None:
            if len(self._origins) >= _MAX_ORIGINS:
                self._origins.clear()
            parsed = URI.fromBytes(prefix + b"/")  # type: ignore[no-untyped-call]
            origin = self._origins[prefix] = _Origin.of(parsed)
        return origin, target

    def _produce(
        self, exchange: Exchange, producer: IBodyProducer, host: str, port: int
    ) -> None:
        collector = _Collector()
        exchange.producer = producer

        def produced(_: object) -> None:
            exchange.producer = None
            if exchange.done:
                return
            self._set_body(exchange, b"".join(collector.chunks))
            self._dispatch(exchange, host, port)

        def failed(failure: Failure) -> None:
            exchange.producer = None
            if failure.value is not None:
                exchange.fail(failure.value)  # no-op if we stopped it ourselves

        d: Deferred[object] = producer.startProducing(collector)  # type: ignore[no-untyped-call]
        d.addCallbacks(produced, failed)

    @staticmethod
    def _set_body(exchange: Exchange, body: bytes) -> None:
        exchange.body = body
        if body:
            length = str(len(body)).encode("ascii")
            exchange.h2_headers.append((b"content-length", length))

    def _dispatch(self, exchange: Exchange, host: str, port: int) -> None:
        if self.closed:
            exchange.fail(AgentClosedError("HTTP/2 agent is closed"))
            return
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[host, port] = _HostPool(self, host, port)
        try:
            pool.submit(exchange)
        except H2ClientError as e:
            exchange.fail(e)

    def open_connection(
        self, host: str, port: int, protocol: H2ClientProtocol
    ) -> Deferred[IProtocol]:
        """TCP (maybe through the proxy), then TLS with ALPN h2, to ``protocol``."""
        tls = self._tls_options(host)
        if self._proxy is None:
            direct = TLSClientEndpoint(
                tls,
                HostnameEndpoint(
                    self._reactor, host, port, timeout=self.connect_timeout
                ),
            )
            return direct.connect(Factory.forProtocol(lambda: protocol))
        proxy_host, proxy_port = self._proxy
        tunnel = TunnelProtocol(host=host, port=port, tls=tls, inner=protocol)
        endpoint = HostnameEndpoint(
            self._reactor, proxy_host, proxy_port, timeout=self.connect_timeout
        )
        return endpoint.connect(Factory.forProtocol(lambda: tunnel))

    def describe_route(self, peer: str) -> str:
        """``host:port``, plus the proxy when one is used (for error messages)."""
        if self._proxy is None:
            return peer
        return f"{peer} via proxy {self._proxy[0]}:{self._proxy[1]}"

    def _tls_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        return optionsForClientTLS(
            host,
            trustRoot=self._trust_root,
            clientCertificate=self._client_certificate,
            acceptableProtocols=[b"h2"],
        )

    def close(self) -> Deferred[None]:
        """Fail pending requests and close every connection (service stop)."""
        self.closed = True
        pools, self._pools = list(self._pools.values()), {}
        d: Deferred[object] = DeferredList(  # type: ignore[assignment]
            [pool.close() for pool in pools], consumeErrors=True
        )
        return d.addCallback(lambda _: None)
