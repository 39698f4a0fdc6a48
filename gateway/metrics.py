"""Prometheus metrics: ``voipgw_*``, bounded labels, one registry per gateway.

The metric *definitions* live here, in one place; each ``Gateway`` gets its
own ``Metrics`` with its own ``CollectorRegistry`` (not prometheus-client's
global one), so tests and several gateways in one process never collide.
Labels are closed sets (outcome, path, reason from Apple's table, SIP
method): never a device id, token or AOR. Values outside a set count as
``other``.

Numbers are observed without the producing code knowing about Prometheus:
``Metrics`` implements each module's typed observer hook and ``instrument``
only registers it, so every caller (SIP and API alike) is measured:

- ``Hub``: ``SessionListener`` (sessions opened and closed) and
  ``FrameObserver`` (each frame's result and ack time);
- ``Dispatcher``: ``CallObserver`` (calls started, time to first ring,
  outcome and per-device path at the end);
- ``ApnsClient``: ``PushObserver`` (each push's final outcome);
- ``Messenger``: ``MessageObserver`` (stored, failed, no devices);
- ``Registry``: ``WriteObserver`` (each write's duration or failure);
- ``SipApplication``: ``RequestObserver`` (new requests by method;
  retransmissions are absorbed by the transaction layer first).

The modules call observers through ``gateway.observers.guard`` (the
dispatcher through its ``_notify``, which names the call), so a bug here is
logged and never breaks a call, delivery, push or write. A collector reads
``hub.online_count``, ``dispatcher.active_count``, ``ApnsClient.stats``/
``in_flight``/``queued`` and ``SipServer.responses``/``stats`` at scrape time.

Cost per event: ``metric.labels(...)`` costs more than the increment it
precedes, so every labelled metric is read through a ``_Children`` dict
that binds each label combination once (on first use, so ``/metrics`` shows
only series that happened, as before); an event is then one dict lookup and
one ``inc``/``observe``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime

from gateway.apns import (
    APNS_ERRORS,
    Delivered,
    Failed,
    Outcome,
    Overloaded,
    TokenRejected,
)
from gateway.localpush.hub import DeliveryResult, SessionInfo
from gateway.sipserver.overload import OverloadGuard

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.calls.dispatcher import ActiveCall

__all__ = ["Instrumentation", "Metrics", "instrument"]

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


class Metrics:
    """Every metric of one gateway, in its own registry; the observer of
    each part that ``instrument`` wires up."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: IReactorTime | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Times the ring (``instrument`` sets the gateway's reactor).
        self.clock = clock
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
        self._store_seconds = _Children(self.store_seconds)
        self._store_failures = _Children(self.store_failures)

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

    # -- Dispatcher CallObserver ---------------------------------------------

    def call_started(self, call: ActiveCall) -> None:
        """Count a started call."""
        self.calls_started.inc()

    def call_ringing(self, call: ActiveCall) -> None:
        """Time from the call's start to its first ring (once per call)."""
        if self.clock is not None:
            elapsed = self.clock.seconds() - call.machine.started_at
            self.ringing_seconds.observe(max(0.0, elapsed))

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

    # -- Messenger MessageObserver --------------------------------------------

    def message_stored(self, message_id: str, device_ids: tuple[str, ...]) -> None:
        """Count a stored message."""
        self._messages["stored"].inc()

    def message_failed(self, message_id: str) -> None:
        """Count a message that could not be stored."""
        self._messages["failed"].inc()

    def message_no_devices(self) -> None:
        """Count a message with no device to go to."""
        self._messages["no_devices"].inc()

    # -- Registry WriteObserver -----------------------------------------------

    def store_write(self, op: str, seconds: float, ok: bool) -> None:
        """Time a durable write; count a failed one (``op`` is a write
        method's name, a closed set: ``STORE_OPS``)."""
        if ok:
            self._store_seconds[op].observe(seconds)
        else:
            self._store_failures[op].inc()

    # -- Hub FrameObserver ----------------------------------------------------

    def on_frame_result(
        self, device_id: str, frame: str, result: DeliveryResult, seconds: float
    ) -> None:
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
            yield _counter_family(
                "voipgw_apns_client_events",
                "APNs client counters (requests, retries, timeouts, ...)",
                "event",
                vars(apns.stats),
            )
        sip = gw.sip
        if sip is not None:
            yield _counter_family(
                "voipgw_sip_responses",
                "SIP responses sent, by status code",
                "code",
                sip.responses,
            )
            yield _counter_family(
                "voipgw_sip_events",
                "SIP server counters (received, bad, dropped, absorbed, ...)",
                "event",
                sip.stats,
            )
            if sip.app is not None:
                yield from _overload_metrics(sip.app.overload)
        if gw.gc is not None:
            policy = gw.gc
            yield GaugeMetricFamily(
                "voipgw_gc_frozen_objects",
                "Objects frozen out of the cycle collector's passes",
                value=policy.frozen_objects(),
            )
            yield _counter_family(
                "voipgw_gc_passes",
                "GC policy passes: freeze (survivors) and sweep (everything)",
                "kind",
                {"freeze": policy.freezes, "sweep": policy.sweeps},
            )
            yield CounterMetricFamily(
                "voipgw_gc_pause_seconds",
                "Time the GC policy's passes held the process",
                value=policy.pause_total_s,
            )
            yield GaugeMetricFamily(
                "voipgw_gc_longest_pause_seconds",
                "Longest single GC policy pass since start",
                value=policy.longest_pause_s,
            )
        for extra in self.extra:
            yield from extra()


class Instrumentation:
    """What ``instrument`` installed: the metrics and the scrape collector."""

    def __init__(self, metrics: Metrics, collector: _GatewayCollector) -> None:
        self.metrics = metrics
        self.collector = collector


def instrument(gateway: Gateway, metrics: Metrics | None = None) -> Instrumentation:
    """Register ``metrics`` as the observer of each part of a built gateway.

    Call once, after ``build_service`` assembled the parts. Other observers
    (webhooks) register on the parts themselves.
    """
    metrics = metrics or Metrics()
    if metrics.clock is None:
        metrics.clock = gateway.reactor
    collector = _GatewayCollector(gateway)
    metrics.registry.register(collector)
    if gateway.hub is not None:
        gateway.hub.add_listener(metrics)
        gateway.hub.add_frame_observer(metrics)
    if gateway.dispatcher is not None:
        gateway.dispatcher.add_observer(metrics)
    if gateway.apns is not None:
        gateway.apns.add_observer(metrics)
    if gateway.messenger is not None:
        gateway.messenger.add_observer(metrics)
    if gateway.sip is not None and gateway.sip.app is not None:
        gateway.sip.app.add_observer(metrics)
    if gateway.registry is not None:
        gateway.registry.add_write_observer(metrics)
    return Instrumentation(metrics, collector)


def _overload_metrics(guard: OverloadGuard) -> Iterator[Metric]:
    yield _counter_family(
        "voipgw_sip_invites_refused_overload",
        "New INVITEs answered 503 by the overload guard, by signal",
        "reason",
        guard.refused,
    )
    yield GaugeMetricFamily(
        "voipgw_sip_overloaded",
        "1 while new INVITEs are refused because requests wait too long",
        value=1.0 if guard.lagging else 0.0,
    )
    yield CounterMetricFamily(
        "voipgw_sip_backlogs_absorbed",
        "Waits over sip.overload_lag_ms that shrank until worked off, none refused",
        value=float(guard.backlogs_absorbed),
    )
    yield GaugeMetricFamily(
        "voipgw_reactor_lag_seconds",
        "How late the last 100 ms reactor timer fired",
        value=guard.lag_s,
    )
    yield GaugeMetricFamily(
        "voipgw_sip_udp_queue_delay_seconds",
        "Longest wait in the kernel of a SIP datagram read in the last 100 ms",
        value=guard.queued_s,
    )


def _counter_family(
    name: str, documentation: str, label: str, counts: Mapping[Any, float]
) -> CounterMetricFamily:
    """One labelled counter family from a plain ``{label value: count}`` map,
    the shape the cores keep their counters in."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([str(value)], float(count))
    return family
