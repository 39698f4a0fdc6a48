"""Prometheus metrics: ``voipgw_*``, bounded labels, one registry per gateway.

The metric *definitions* live here, in one place; each ``Gateway`` gets its
own ``Metrics`` with its own ``CollectorRegistry`` (not prometheus-client's
global one), so tests and several gateways in one process never collide.
Labels are closed sets (outcome, path, reason from Apple's table, SIP
method): never a device id, token or AOR. Values outside a set count as
``other``.

Most numbers are observed without touching the code that produces them:

- a hub ``SessionListener`` counts sessions opened and closed;
- a collector reads ``hub.online_count``, ``dispatcher.active_count`` and
  ``ApnsClient.stats``/``in_flight``/``queued`` at scrape time;
- ``instrument`` wraps a few bound methods on the gateway's instances
  (``dispatcher.start``, ``hub.deliver``, ``apns.push``, ``messenger.send``
  and the registry's writes) so that every caller, SIP and API alike, is
  measured. Those wrappers are a stop-gap until the modules grow explicit
  hooks; they only observe and always pass results through unchanged.

SIP requests are counted by method through a wrapper on the SIP
application's ``handle`` (new requests only: retransmissions are absorbed by
the transaction layer); responses by code and the server's event counters
are read from ``SipServer.responses``/``stats``.

Cost per event: ``metric.labels(...)`` costs more than the increment it
precedes, so every labelled metric is read through a ``_Children`` dict
that binds each label combination once (on first use, so ``/metrics`` shows
only series that happened, as before); an event is then one dict lookup and
one ``inc``/``observe``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.apns import (
    APNS_ERRORS,
    Delivered,
    Failed,
    Outcome,
    Overloaded,
    TokenRejected,
)
from gateway.localpush.hub import DeliveryResult, SessionInfo

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.calls.dispatcher import ActiveCall, CallListener, CallRequest

__all__ = [
    "CallObserver",
    "Instrumentation",
    "MessageObserver",
    "Metrics",
    "instrument",
]

# Closed label sets.
SESSION_CLOSE_REASONS = frozenset(
    {
        "bye",
        "connection_lost",
        "replaced",
        "shutdown",
        "idle",
        "handshake_required",
        "handshake_timeout",
        "bad_hello",
        "unsupported_version",
        "unauthorized",
        "bad_frame",
        "frame_too_large",
        "rate_limited",
        "internal",
    }
)
CALL_OUTCOMES = frozenset(
    {"cancelled", "unanswered", "declined", "rate_limited", "unreachable"}
)
SIP_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "REGISTER",
        "MESSAGE",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "PUBLISH",
    }
)
APNS_REASONS = frozenset({reason for _, reason in APNS_ERRORS} | {"Overloaded"})
FRAME_RESULTS = frozenset(
    {
        "acked",
        "no_session",
        "session_died",
        "ack_timeout",
        "replaced",
        "frame_too_large",
    }
)
DELIVERY_PATHS = frozenset({"local", "apns", "none"})
DELIVERY_RESULTS = frozenset(
    {"acked", "pending", "failed", "accepted", "rejected", "rate_limited", "none"}
)
STORE_OPS = (
    "put_device",
    "delete_device",
    "remove_token",
    "put_binding",
    "remove_binding",
    "add_message",
    "ack_message",
    "purge_expired",
)

# The API's statuses as label values, formatted once.
_STATUS_TEXT = {code: str(code) for code in range(100, 600)}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else "other"


class _Children(dict[Any, Any]):
    """``metric.labels(*key)`` by key (a label value, or a tuple of them),
    bound on first use. Keys must come from closed sets (``_bounded``)."""

    __slots__ = ("_metric",)

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, key: str | tuple[str, ...]) -> Any:
        labels = key if isinstance(key, tuple) else (key,)
        child = self[key] = self._metric.labels(*labels)
        return child


class CallObserver(Protocol):
    """Hears of every call the dispatcher starts (SIP and API alike)."""

    def call_started(self, call: ActiveCall) -> None: ...

    def call_ringing(self, call: ActiveCall) -> None: ...

    def call_ended(self, call: ActiveCall) -> None: ...


class MessageObserver(Protocol):
    """Hears of every message once it is stored (SIP and API alike)."""

    def message_stored(self, message_id: str, device_ids: tuple[str, ...]) -> None: ...


class Metrics:
    """Every metric of one gateway, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sessions_opened = Counter(
            "voipgw_sessions_opened",
            "Local-push sessions opened (welcome sent)",
            [],
            registry=r,
        )
        self.sessions_closed = Counter(
            "voipgw_sessions_closed",
            "Local-push sessions closed, by reason",
            ["reason"],
            registry=r,
        )
        self.calls_started = Counter(
            "voipgw_calls_started", "Calls the dispatcher started", [], registry=r
        )
        self.calls = Counter(
            "voipgw_calls", "Calls ended, by outcome", ["outcome"], registry=r
        )
        self.call_deliveries = Counter(
            "voipgw_call_deliveries",
            "Per call and device at the call's end: the path that reached it "
            "(local, apns, none) and its result",
            ["path", "result"],
            registry=r,
        )
        self.ringing_seconds = Histogram(
            "voipgw_call_ringing_seconds",
            "From the call's start (INVITE or POST /v1/calls) to the first "
            "device ringing (SIP 180)",
            buckets=_RING_BUCKETS,
            registry=r,
        )
        self.frames = Counter(
            "voipgw_localpush_frames",
            "Frames sent over local push, by frame type and result",
            ["frame", "result"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            "voipgw_localpush_ack_seconds",
            "From sending a frame to its ack, by frame type",
            ["frame"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.apns_responses = Counter(
            "voipgw_apns_responses",
            "Final APNs outcome per push, by HTTP status (none: no response) "
            "and Apple's reason",
            ["status", "reason"],
            registry=r,
        )
        self.messages = Counter(
            "voipgw_messages", "Text messages, by result", ["result"], registry=r
        )
        self.sip_requests = Counter(
            "voipgw_sip_requests",
            "SIP requests received, by method",
            ["method"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "voipgw_store_write_seconds",
            "From a registry write to it being durable, by operation",
            ["op"],
            buckets=_STORE_BUCKETS,
            registry=r,
        )
        self.store_failures = Counter(
            "voipgw_store_write_failures",
            "Registry writes that failed, by operation",
            ["op"],
            registry=r,
        )
        self.api_requests = Counter(
            "voipgw_api_requests",
            "Control API requests, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.api_seconds = Histogram(
            "voipgw_api_request_seconds",
            "Control API request handling time, by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.webhooks = Counter(
            "voipgw_webhook_events",
            "Webhook events by result (delivered, retried, failed, dropped)",
            ["result"],
            registry=r,
        )
        self._sessions_closed = _Children(self.sessions_closed)
        self._calls = _Children(self.calls)
        self._call_deliveries = _Children(self.call_deliveries)
        self._frames = _Children(self.frames)
        self._ack_seconds = _Children(self.ack_seconds)
        self._apns_responses = _Children(self.apns_responses)
        self._messages = _Children(self.messages)
        self._sip_requests = _Children(self.sip_requests)
        self._api_requests = _Children(self.api_requests)
        self._api_seconds = _Children(self.api_seconds)
        self._webhooks = _Children(self.webhooks)

    # -- hooks for components -------------------------------------------------

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one API request (``route`` is a template or
        ``unmatched``; ``method`` must already be bounded)."""
        self._api_requests[route, method, _STATUS_TEXT.get(status) or str(status)].inc()
        self._api_seconds[route].observe(seconds)

    def webhook(self, result: str) -> None:
        """Count a webhook event by result (delivered, retried, failed, dropped)."""
        self._webhooks[result].inc()

    def message(self, result: str) -> None:
        """Count a text message by result (``stored``, ``failed``, ``no_devices``)."""
        self._messages[result].inc()

    def sip_request(self, method: str) -> None:
        """Count a SIP request (the SIP service calls this)."""
        self._sip_requests[_bounded(method.upper(), SIP_METHODS)].inc()

    def apns_outcome(self, outcome: Outcome) -> None:
        """Count one push's final outcome."""
        if isinstance(outcome, Delivered):
            status, reason = "200", ""
        elif isinstance(outcome, Overloaded):
            status, reason = "none", "Overloaded"
        elif isinstance(outcome, TokenRejected | Failed):
            status, reason = str(outcome.status), outcome.reason
        else:
            status = str(outcome.status) if outcome.status is not None else "none"
            reason = outcome.reason
        if status not in ("200", "none", "other") and not (
            len(status) == 3 and status.isdigit()
        ):
            status = "other"
        if reason:
            reason = _bounded(reason, APNS_REASONS)
        self._apns_responses[status, reason].inc()

    def call_ended(self, call: ActiveCall) -> None:
        """Count a call's outcome and, per device, the path that reached it."""
        self._calls[_bounded(call.machine.outcome or "", CALL_OUTCOMES)].inc()
        deliveries = self._call_deliveries
        for state in call.device_states().values():
            path, _, result = str(state["status"]).partition(";")
            result = result.partition("=")[0] or "none"
            key = (
                _bounded(path, DELIVERY_PATHS),
                _bounded(result, DELIVERY_RESULTS),
            )
            deliveries[key].inc()

    def frame_result(self, frame: str, result: DeliveryResult, seconds: float) -> None:
        """Count a local-push frame's fate; time it when acked."""
        if result.delivered:
            self._frames[frame, "acked"].inc()
            self._ack_seconds[frame].observe(seconds)
        else:
            reason = _bounded(result.reason or "", FRAME_RESULTS)
            self._frames[frame, reason].inc()

    # -- hub SessionListener --------------------------------------------------

    def on_session_up(self, device_id: str, info: SessionInfo) -> None:
        self.sessions_opened.inc()

    def on_session_down(self, device_id: str, reason: str) -> None:
        self._sessions_closed[_bounded(reason, SESSION_CLOSE_REASONS)].inc()

    def on_call_event(self, device_id: str, call_id: str, event: str) -> None:
        """Call events are counted through the calls they affect."""


class _GatewayCollector(Collector):
    """Gauges and counters read from the gateway's parts at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.extra: list[Callable[[], Iterator[Metric]]] = []

    def collect(self) -> Iterator[Metric]:
        gw = self._gateway
        if gw.hub is not None:
            yield GaugeMetricFamily(
                "voipgw_sessions_online",
                "Devices with an open local-push session",
                value=gw.hub.online_count,
            )
        if gw.dispatcher is not None:
            yield GaugeMetricFamily(
                "voipgw_calls_active",
                "Calls ringing now",
                value=gw.dispatcher.active_count,
            )
        if gw.apns is not None:
            apns = gw.apns
            yield GaugeMetricFamily(
                "voipgw_apns_in_flight", "APNs requests in flight", value=apns.in_flight
            )
            yield GaugeMetricFamily(
                "voipgw_apns_queued",
                "Pushes waiting for an APNs slot",
                value=apns.queued,
            )
            family = CounterMetricFamily(
                "voipgw_apns_client_events",
                "APNs client counters (requests, retries, timeouts, ...)",
                labels=["event"],
            )
            for name, value in sorted(vars(apns.stats).items()):
                family.add_metric([name], float(value))
            yield family
        sip = gw.sip
        if sip is not None:
            codes = CounterMetricFamily(
                "voipgw_sip_responses",
                "SIP responses sent, by status code",
                labels=["code"],
            )
            for code, count in sorted(sip.responses.items()):
                codes.add_metric([str(code)], float(count))
            yield codes
            events = CounterMetricFamily(
                "voipgw_sip_events",
                "SIP server counters (received, bad, dropped, absorbed, ...)",
                labels=["event"],
            )
            for name, count in sorted(sip.stats.items()):
                events.add_metric([name], float(count))
            yield events
        for extra in self.extra:
            yield from extra()


_FRAME_NAMES = {
    "CallFrame": "call",
    "CallCancelFrame": "call_cancel",
    "MessageFrame": "message",
}


class _MeasuredListener:
    """Wraps a call listener: times the ring, counts the end.

    Holds nothing of a call, so calls with the same listener (every API call
    has the same one) share one wrapper. The dispatcher reports ringing once
    per call (``Call`` emits ``Ringing`` only when it first rings).
    """

    def __init__(
        self,
        inner: CallListener,
        metrics: Metrics,
        clock: IReactorTime,
        observers: list[CallObserver],
    ) -> None:
        self.inner = inner
        self._metrics = metrics
        self._clock = clock
        self._observers = observers

    def call_ringing(self, call: ActiveCall) -> None:
        elapsed = self._clock.seconds() - call.machine.started_at
        self._metrics.ringing_seconds.observe(max(0.0, elapsed))
        for observer in self._observers:
            _guarded(observer.call_ringing, call)
        self.inner.call_ringing(call)

    def call_ended(self, call: ActiveCall) -> None:
        self._metrics.call_ended(call)
        for observer in self._observers:
            _guarded(observer.call_ended, call)
        self.inner.call_ended(call)


_log = Logger(namespace="gateway.metrics")


def _guarded(fn: Callable[[ActiveCall], None], call: ActiveCall) -> None:
    try:
        fn(call)
    except Exception:  # noqa: BLE001 - an observer's bug must not touch the call
        _log.failure("Call observer failed for {call_id}", call_id=call.call_id)


class Instrumentation:
    """What ``instrument`` installed: the metrics and the call observers."""

    def __init__(self, metrics: Metrics, collector: _GatewayCollector) -> None:
        self.metrics = metrics
        self.collector = collector
        self.call_observers: list[CallObserver] = []
        self.message_observers: list[MessageObserver] = []


def instrument(gateway: Gateway, metrics: Metrics | None = None) -> Instrumentation:
    """Measure a built gateway; returns the metrics and an observer list.

    Call once, after ``build_service`` assembled the parts.
    """
    metrics = metrics or Metrics()
    collector = _GatewayCollector(gateway)
    metrics.registry.register(collector)
    result = Instrumentation(metrics, collector)
    clock: IReactorTime = gateway.reactor
    if gateway.hub is not None:
        gateway.hub.add_listener(metrics)
        _wrap_deliver(gateway.hub, metrics, clock)
    if gateway.dispatcher is not None:
        _wrap_start(gateway.dispatcher, metrics, clock, result.call_observers)
    if gateway.apns is not None:
        _wrap_push(gateway.apns, metrics)
    if gateway.messenger is not None:
        _wrap_send(gateway.messenger, metrics, result.message_observers)
    if gateway.sip is not None and gateway.sip.app is not None:
        _wrap_sip(gateway.sip.app, metrics)
    if gateway.registry is not None:
        for op in STORE_OPS:
            _wrap_write(gateway.registry, op, metrics, clock)
    return result


def _wrap_start(
    dispatcher: Any,
    metrics: Metrics,
    clock: IReactorTime,
    observers: list[CallObserver],
) -> None:
    start = dispatcher.start
    # The last wrapper made: API calls all pass the same listener. (A SIP
    # call's own listener stays referenced until the next call replaces it.)
    last: list[_MeasuredListener] = []

    @functools.wraps(start)
    def measured_start(request: CallRequest, listener: CallListener) -> Any:
        if last and last[0].inner is listener:
            wrapped = last[0]
        else:
            wrapped = _MeasuredListener(listener, metrics, clock, observers)
            last[:] = [wrapped]
        call = start(request, wrapped)
        if call is not None:
            metrics.calls_started.inc()
            for observer in observers:
                _guarded(observer.call_started, call)
        return call

    setattr(dispatcher, "start", measured_start)  # noqa: B010 - instance override


def _wrap_sip(app: Any, metrics: Metrics) -> None:
    handle = app.handle

    @functools.wraps(handle)
    def counted(key: Any, request: Any, *args: Any) -> Any:
        metrics.sip_request(str(request.method))
        return handle(key, request, *args)

    setattr(app, "handle", counted)  # noqa: B010 - instance override


def _wrap_deliver(hub: Any, metrics: Metrics, clock: IReactorTime) -> None:
    deliver = hub.deliver

    @functools.wraps(deliver)
    def measured_deliver(
        device_id: str, spec: Any, ack_timeout: float | None = None
    ) -> Deferred[DeliveryResult]:
        began = clock.seconds()
        frame = _FRAME_NAMES.get(type(spec).__name__, "other")
        d: Deferred[DeliveryResult] = deliver(device_id, spec, ack_timeout)
        return d.addCallback(_frame_seen, metrics, clock, frame, began)

    setattr(hub, "deliver", measured_deliver)  # noqa: B010 - instance override


# Callbacks take their state as arguments rather than closing over it: a
# closure per event is a function, a tuple and a cell per variable for the
# collector to track; arguments are one tuple.


def _frame_seen(
    result: DeliveryResult,
    metrics: Metrics,
    clock: IReactorTime,
    frame: str,
    began: float,
) -> DeliveryResult:
    metrics.frame_result(frame, result, clock.seconds() - began)
    return result


def _outcome_seen(outcome: Outcome, metrics: Metrics) -> Outcome:
    metrics.apns_outcome(outcome)
    return outcome


def _wrap_push(apns: Any, metrics: Metrics) -> None:
    push = apns.push

    @functools.wraps(push)
    def measured_push(notification: Any) -> Deferred[Outcome]:
        d: Deferred[Outcome] = push(notification)
        return d.addCallback(_outcome_seen, metrics)

    setattr(apns, "push", measured_push)  # noqa: B010 - instance override


def _wrap_send(
    messenger: Any, metrics: Metrics, observers: list[MessageObserver]
) -> None:
    send = messenger.send

    @functools.wraps(send)
    def measured_send(request: Any) -> Any:
        d = send(request)
        if d is None:
            metrics.message("no_devices")
            return None

        def stored(result: Any) -> Any:
            metrics.message("stored")
            for observer in observers:
                try:
                    observer.message_stored(result.message_id, result.device_ids)
                except Exception:  # noqa: BLE001 - must not fail the message
                    _log.failure("Message observer failed")
            return result

        def failed(failure: Any) -> Any:
            metrics.message("failed")
            return failure

        return d.addCallbacks(stored, failed)

    setattr(messenger, "send", measured_send)  # noqa: B010 - instance override


def _wrap_write(registry: Any, op: str, metrics: Metrics, clock: IReactorTime) -> None:
    write = getattr(registry, op, None)
    if write is None:
        return
    histogram = metrics.store_seconds.labels(op)
    failures = metrics.store_failures.labels(op)

    @functools.wraps(write)
    def measured(*args: Any) -> Any:
        began = clock.seconds()
        d: Deferred[Any] = write(*args)
        return d.addCallbacks(
            _write_done,
            _write_failed,
            callbackArgs=(histogram, clock, began),
            errbackArgs=(failures,),
        )

    setattr(registry, op, measured)


def _write_done(result: Any, histogram: Any, clock: IReactorTime, began: float) -> Any:
    histogram.observe(clock.seconds() - began)
    return result


def _write_failed(failure: Any, failures: Any) -> Any:
    failures.inc()
    return failure
