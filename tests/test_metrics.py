"""gateway.metrics without a gateway: labelled children bound once, the
observer hooks ``Metrics`` implements, and ``instrument`` wiring them up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

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


class _Part:
    """A stand-in gateway part: records which observers registered on it."""

    def __init__(self) -> None:
        self.added: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("add_"):
            raise AttributeError(name)
        return lambda observer: self.added.append((name, observer))


def _gateway(clock: Clock, **parts: Any) -> Any:
    names = ("hub", "dispatcher", "apns", "messenger", "sip", "registry")
    return SimpleNamespace(reactor=clock, **{n: parts.get(n) for n in names})


def test_instrument_registers_metrics_on_each_part() -> None:
    """``instrument`` only wires up: the metrics observe every part through
    its hook, and time rings on the gateway's clock."""
    clock = Clock()
    hub, dispatcher, apns, messenger, app, registry = (_Part() for _ in range(6))
    gateway = _gateway(
        clock,
        hub=hub,
        dispatcher=dispatcher,
        apns=apns,
        messenger=messenger,
        sip=SimpleNamespace(app=app),
        registry=registry,
    )
    metrics = instrument(gateway).metrics
    assert metrics.clock is clock
    assert hub.added == [("add_listener", metrics), ("add_frame_observer", metrics)]
    assert dispatcher.added == [("add_observer", metrics)]
    assert apns.added == messenger.added == app.added == dispatcher.added
    assert registry.added == [("add_write_observer", metrics)]


def _call(call_id: str, outcome: str) -> Any:
    return SimpleNamespace(
        call_id=call_id,
        machine=SimpleNamespace(started_at=0.0, outcome=outcome),
        device_states=lambda: {"d1": {"status": "local;acked"}},
    )


def test_call_hooks_count_starts_time_rings_and_count_ends() -> None:
    """Started calls are counted, rings timed from the call's start, ends
    counted by outcome and per device by path and result."""
    clock = Clock()
    metrics = Metrics(clock=clock)
    calls = [_call("c1", "cancelled"), _call("c2", "cancelled")]
    for call in calls:
        metrics.call_started(call)
    clock.advance(0.5)
    for call in calls:
        metrics.call_ringing(call)
        metrics.call_ended(call)
    assert _value(metrics, "voipgw_calls_started_total") == 2
    assert _value(metrics, "voipgw_call_ringing_seconds_count") == 2
    assert _value(metrics, "voipgw_call_ringing_seconds_sum") == 1.0
    assert _value(metrics, "voipgw_calls_total", outcome="cancelled") == 2
    delivered = {"path": "local", "result": "acked"}
    assert _value(metrics, "voipgw_call_deliveries_total", **delivered) == 2


def test_frame_store_and_message_hooks() -> None:
    """Frames are counted by result and timed when acked; writes timed when
    durable and counted when failed; messages counted by result."""
    metrics = Metrics()
    metrics.on_frame_result("d1", "call", DeliveryResult(delivered=True), 0.25)
    lost = DeliveryResult(delivered=False, reason="ack_timeout")
    metrics.on_frame_result("d1", "message", lost, 3.0)
    acked = {"frame": "call", "result": "acked"}
    assert _value(metrics, "voipgw_localpush_frames_total", **acked) == 1
    assert _value(metrics, "voipgw_localpush_ack_seconds_sum", frame="call") == 0.25
    timed_out = {"frame": "message", "result": "ack_timeout"}
    assert _value(metrics, "voipgw_localpush_frames_total", **timed_out) == 1
    assert (
        _value(metrics, "voipgw_localpush_ack_seconds_count", frame="message") is None
    )
    metrics.store_write("put_device", 0.002, True)
    metrics.store_write("delete_device", 0.1, False)
    assert _value(metrics, "voipgw_store_write_seconds_count", op="put_device") == 1
    assert (
        _value(metrics, "voipgw_store_write_seconds_count", op="delete_device") is None
    )
    assert _value(metrics, "voipgw_store_write_failures_total", op="delete_device") == 1
    metrics.message_stored("m1", ("d1",))
    metrics.message_failed("m2")
    metrics.message_no_devices()
    for result in ("stored", "failed", "no_devices"):
        assert _value(metrics, "voipgw_messages_total", result=result) == 1
