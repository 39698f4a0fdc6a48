"""gateway.metrics without a gateway: labelled children bound once, and the
run-time wrappers of ``instrument`` on stand-in parts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gateway.localpush.frames import CallFrame, Party
from gateway.localpush.hub import DeliveryResult
from gateway.metrics import Metrics, instrument


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_api_requests_bind_each_label_set_once() -> None:
    """The first request of a (route, method, status) binds its child; later
    ones reuse it; a label set never seen has no series at all."""
    metrics = Metrics()
    labels = {"route": "/v1/calls", "method": "POST", "status": "201"}
    assert _value(metrics, "voipgw_api_requests_total", **labels) is None
    metrics.api_request("/v1/calls", "POST", 201, 0.001)
    child = metrics._api_requests["/v1/calls", "POST", "201"]
    metrics.api_request("/v1/calls", "POST", 201, 0.002)
    assert metrics._api_requests["/v1/calls", "POST", "201"] is child
    assert _value(metrics, "voipgw_api_requests_total", **labels) == 2
    seconds = "voipgw_api_request_seconds_sum"
    assert _value(metrics, seconds, route="/v1/calls") == 0.003
    assert (
        _value(metrics, "voipgw_api_requests_total", **{**labels, "status": "404"})
        is None
    )


class _Dispatcher:
    """Records the listener each call was started with."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def start(self, request: Any, listener: Any) -> Any:
        self.listeners.append(listener)
        return SimpleNamespace(
            call_id=f"c{len(self.listeners)}",
            machine=SimpleNamespace(started_at=0.0, outcome="cancelled"),
            device_states=lambda: {"d1": {"status": "local;acked"}},
        )


class _Listener:
    def __init__(self) -> None:
        self.heard: list[str] = []

    def call_ringing(self, call: Any) -> None:
        self.heard.append("ringing " + call.call_id)

    def call_ended(self, call: Any) -> None:
        self.heard.append("ended " + call.call_id)


def _gateway(clock: Clock, **parts: Any) -> Any:
    names = ("hub", "dispatcher", "apns", "messenger", "sip", "registry")
    return SimpleNamespace(reactor=clock, **{n: parts.get(n) for n in names})


def test_calls_with_one_listener_share_one_measured_wrapper() -> None:
    """API calls all pass the same listener: one wrapper serves them; another
    listener gets its own. Rings are timed and ends counted per call."""
    clock = Clock()
    dispatcher = _Dispatcher()
    metrics = instrument(_gateway(clock, dispatcher=dispatcher)).metrics
    shared, other = _Listener(), _Listener()
    calls = [dispatcher.start(None, shared) for _ in range(2)]
    calls.append(dispatcher.start(None, other))
    first, second, third = dispatcher.listeners
    assert first is second and third is not first
    clock.advance(0.5)
    for call, wrapper in zip(calls, dispatcher.listeners, strict=True):
        wrapper.call_ringing(call)
        wrapper.call_ended(call)
    assert shared.heard == ["ringing c1", "ended c1", "ringing c2", "ended c2"]
    assert other.heard == ["ringing c3", "ended c3"]
    assert _value(metrics, "voipgw_calls_started_total") == 3
    assert _value(metrics, "voipgw_call_ringing_seconds_count") == 3
    assert _value(metrics, "voipgw_call_ringing_seconds_sum") == 1.5
    assert _value(metrics, "voipgw_calls_total", outcome="cancelled") == 3
    delivered = {"path": "local", "result": "acked"}
    assert _value(metrics, "voipgw_call_deliveries_total", **delivered) == 3


def test_frames_and_store_writes_are_measured_and_passed_through() -> None:
    """The deliver and registry-write wrappers time and count, and hand the
    result (or failure) on unchanged."""
    clock = Clock()
    pending: Deferred[DeliveryResult] = Deferred()
    hub = SimpleNamespace(
        deliver=lambda device_id, spec, ack_timeout=None: pending,
        add_listener=lambda listener: None,
    )
    registry = SimpleNamespace(
        put_device=lambda device: succeed("stored"),
        delete_device=lambda device_id: fail(RuntimeError("disk")),
    )
    metrics = instrument(_gateway(clock, hub=hub, registry=registry)).metrics
    got: list[Any] = []
    frame = CallFrame(
        call_id="c1",
        caller=Party(handle="1", display_name=None),
        video=False,
        to="sip:bob@example.com",
        expires_at=5.0,
    )
    hub.deliver("d1", frame, 5.0).addCallback(got.append)
    clock.advance(0.25)
    pending.callback(DeliveryResult(delivered=True))
    assert got == [DeliveryResult(delivered=True)]
    acked = {"frame": "call", "result": "acked"}
    assert _value(metrics, "voipgw_localpush_frames_total", **acked) == 1
    assert _value(metrics, "voipgw_localpush_ack_seconds_sum", frame="call") == 0.25
    stored: list[Any] = []
    registry.put_device("x").addCallback(stored.append)
    failed: list[Any] = []
    registry.delete_device("x").addErrback(failed.append)
    assert stored == ["stored"]
    assert failed[0].check(RuntimeError)
    assert _value(metrics, "voipgw_store_write_seconds_count", op="put_device") == 1
    assert _value(metrics, "voipgw_store_write_failures_total", op="delete_device") == 1
