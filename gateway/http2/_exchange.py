"""One request's life across queues, connections and retries.

The exchange outlives any single connection (GOAWAY retries move it), so the
caller's Deferred, the timeout and the response object live here, and the
connection only holds it as the key of a stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from gateway.http2._errors import RequestTimeoutError
from gateway.http2._response import H2ClientRequest, H2Response

if TYPE_CHECKING:
    from gateway.http2._protocol import H2ClientProtocol

__all__ = ["Exchange", "Waiter"]


class Waiter(Protocol):
    """Something holding an exchange before it has a stream (the host pool)."""

    def forget(self, exchange: Exchange) -> None:
        """Drop ``exchange`` from any waiting list."""


class Exchange:
    """A request and the Deferred of its response."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        request: H2ClientRequest,
        h2_headers: list[tuple[bytes, bytes]],
        timeout: float | None,
    ) -> None:
        self.request = request
        self.h2_headers = h2_headers
        self.body = b""
        self.attempts = 0
        self.protocol: H2ClientProtocol | None = None
        self.waiter: Waiter | None = None
        self.producer: IBodyProducer | None = None
        self.response: H2Response | None = None
        self.deferred: Deferred[IResponse] = Deferred(self._cancelled)
        self._done = False
        self._timer: IDelayedCall | None = None
        if timeout is not None:
            self._timer = clock.callLater(timeout, self._timed_out, timeout)

    @property
    def done(self) -> bool:
        """Whether the caller has its final answer (or gave up)."""
        return self._done

    # -- from the connection --------------------------------------------------

    def headers_received(
        self, status: int, headers: tuple[tuple[bytes, bytes], ...]
    ) -> None:
        """Fire the caller's Deferred with a response whose body follows."""
        if self._done or self.response is not None:
            return
        twisted_headers = Headers()
        for name, value in headers:
            twisted_headers.addRawHeader(name, value)
        self.response = H2Response(status, twisted_headers, self.request, self._stopped)
        self.deferred.callback(self.response)

    def data_received(self, data: bytes) -> None:
        """Pass a body chunk on."""
        if self.response is not None and not self._done:
            self.response.data_received(data)

    def complete(self) -> None:
        """The body ended cleanly."""
        if self._done:
            return
        response = self._finish()
        if response is not None:
            response.end()

    def fail(self, error: BaseException) -> None:
        """End with ``error``: on the Deferred, or on the body if headers came."""
        if self._done:
            return
        response = self._finish()
        if response is None:
            self.deferred.errback(error)
        else:
            response.end(error)

    # -- giving up ------------------------------------------------------------

    def abort(self, error: BaseException | None) -> None:
        """Detach from wherever the request is, then fail with ``error``."""
        if self._done:
            return
        if self.producer is not None:
            self.producer.stopProducing()  # type: ignore[no-untyped-call]
            self.producer = None
        if self.protocol is not None:
            protocol, self.protocol = self.protocol, None
            protocol.cancel(self)
        if self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            waiter.forget(self)
        if error is None:
            self._finish()
        else:
            self.fail(error)

    def _cancelled(self, _: Deferred[IResponse]) -> None:
        # Deferred.cancel errbacks with CancelledError after this returns.
        self.abort(None)

    def _stopped(self) -> None:
        self.abort(CancelledError("response body delivery was stopped"))

    def _timed_out(self, timeout: float) -> None:
        self._timer = None
        self.abort(
            RequestTimeoutError(f"no complete response within {timeout} seconds")
        )

    def _finish(self) -> H2Response | None:
        """Done: stop the timer and let go of the response, which is returned.

        The response points back here (its body's stop callback), so keeping
        it would leave a reference cycle per request for the garbage
        collector, which then runs several times as often.
        """
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        response, self.response = self.response, None
        return response
