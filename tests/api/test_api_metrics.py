"""/metrics: Prometheus text that parses, bounded labels, and counters that
move with traffic (local push, calls, API, store)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from api_helpers import Client, close_device, connect_device, frame, until
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

from gateway.apns import Delivered, Failed, Retryable, TokenRejected
from gateway.app import Gateway
from gateway.metrics import Metrics
from gateway.sipserver.udpport import QueueTimedPort

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: Client) -> dict[Any, float]:
    answer = await client.get("/metrics", key=None)
    assert answer.status == 200
    assert (answer.header("content-type") or "").startswith("text/plain")
    return samples(answer.raw.decode())


@pytest_twisted.ensureDeferred
async def test_metrics_move_with_traffic(gateway: Gateway, client: Client) -> None:
    """A device session, an API call acked and cancelled, a device PUT: each
    shows up in the counters and histograms."""
    before = await scrape(client)
    assert before[("voipgw_sessions_online", ())] == 0
    assert before.get(("voipgw_calls_started_total", ()), 0) == 0
    # The GC policy froze the start-up heap: one freeze pass, objects frozen.
    assert before[("voipgw_gc_passes_total", (("kind", "freeze"),))] >= 1
    assert before[("voipgw_gc_passes_total", (("kind", "sweep"),))] == 0
    assert before[("voipgw_gc_frozen_objects", ())] > 0
    assert before[("voipgw_gc_pause_seconds_total", ())] > 0
    assert (
        0
        < before[("voipgw_gc_longest_pause_seconds", ())]
        <= before[("voipgw_gc_pause_seconds_total", ())]
    )

    device = await connect_device(gateway, "m-phone")
    created = await client.post(
        "/v1/calls", {"to": "sip:bob@example.com", "caller": {"handle": "1"}}
    )
    pushed = await device.next_frame()
    device.transport.write(frame({"type": "ack", "id": pushed["id"]}))
    call_id = created.body["call_id"]
    assert gateway.dispatcher is not None
    dispatcher = gateway.dispatcher
    await until(lambda: dispatcher.get(call_id).machine.rang)  # type: ignore[union-attr]
    await client.delete(f"/v1/calls/{call_id}")
    cancel = await device.next_frame()
    device.transport.write(frame({"type": "ack", "id": cancel["id"]}))
    await client.put("/v1/devices/m-other", {"aors": ["sip:z@example.com"]})

    mid = await scrape(client)
    assert mid[("voipgw_sessions_online", ())] == 1
    assert mid[("voipgw_sessions_opened_total", ())] == 1
    assert mid[("voipgw_calls_started_total", ())] == 1
    assert mid[("voipgw_calls_total", (("outcome", "cancelled"),))] == 1
    assert (
        mid[("voipgw_call_deliveries_total", (("path", "local"), ("result", "acked")))]
        == 1
    )
    assert mid[("voipgw_call_ringing_seconds_count", ())] == 1
    assert mid[("voipgw_localpush_ack_seconds_count", (("frame", "call"),))] == 1
    assert (
        mid[("voipgw_localpush_frames_total", (("frame", "call"), ("result", "acked")))]
        == 1
    )
    assert (
        mid[
            (
                "voipgw_api_requests_total",
                (("method", "POST"), ("route", "/v1/calls"), ("status", "201")),
            )
        ]
        == 1
    )
    assert mid[("voipgw_store_write_seconds_count", (("op", "put_device"),))] >= 2

    await close_device(device)
    await until(lambda: gateway.hub is not None and gateway.hub.online_count == 0)
    after = await scrape(client)
    assert after[("voipgw_sessions_closed_total", (("reason", "bye"),))] == 1
    assert after[("voipgw_sessions_online", ())] == 0


@pytest_twisted.ensureDeferred
async def test_metric_names_and_labels_are_bounded(client: Client) -> None:
    """Every family is voipgw_* (plus none of the process defaults, which
    belong to the global registry); no label carries an id or token."""
    await client.get("/v1/calls/some-call-id")
    await client.get("/v1/devices/some-device")
    text = (await client.get("/metrics", key=None)).raw.decode()
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("voipgw_"), family.name
    assert "some-call-id" not in text
    assert "some-device" not in text
    assert 'route="/v1/calls/{call_id}"' in text


def test_apns_outcomes_map_to_bounded_labels() -> None:
    """Apple's reasons stay; anything else becomes `other`; no response is `none`."""
    metrics = Metrics()
    metrics.apns_outcome(Delivered("id"))
    metrics.apns_outcome(TokenRejected("Unregistered", 410))
    metrics.apns_outcome(Failed(400, "SomethingNew"))
    metrics.apns_outcome(Retryable("timeout"))
    metrics.sip_request("invite")
    metrics.sip_request("FOO")
    got = samples(generate_latest(metrics.registry).decode())
    assert (
        got[("voipgw_apns_responses_total", (("reason", ""), ("status", "200")))] == 1
    )
    assert (
        got[
            (
                "voipgw_apns_responses_total",
                (("reason", "Unregistered"), ("status", "410")),
            )
        ]
        == 1
    )
    assert (
        got[("voipgw_apns_responses_total", (("reason", "other"), ("status", "400")))]
        == 1
    )
    assert (
        got[("voipgw_apns_responses_total", (("reason", "other"), ("status", "none")))]
        == 1
    )
    assert got[("voipgw_sip_requests_total", (("method", "INVITE"),))] == 1
    assert got[("voipgw_sip_requests_total", (("method", "other"),))] == 1


def test_two_metrics_objects_do_not_collide() -> None:
    """Each gateway has its own registry: two can exist in one process."""
    first, second = Metrics(), Metrics()
    first.calls_started.inc()
    assert second.registry.get_sample_value("voipgw_calls_started_total") == 0
    assert first.registry.get_sample_value("voipgw_calls_started_total") == 1


OPTIONS = (
    "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-metrics-1\r\n"
    "From: <sip:core@127.0.0.1>;tag=1\r\n"
    "To: <sip:gw@127.0.0.1>\r\n"
    "Call-ID: metrics-1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


@pytest_twisted.ensureDeferred
async def test_sip_requests_and_responses_are_counted(
    gateway: Gateway, client: Client
) -> None:
    """A SIP OPTIONS over UDP counts as a request by method and its 200 by code."""
    answers: list[bytes] = []

    class Core(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            answers.append(datagram)

    port = reactor.listenUDP(0, Core(), interface="127.0.0.1")
    try:
        sip = gateway.listeners["sip-udp"].address
        assert sip is not None
        message = OPTIONS.format(port=port.getHost().port).encode()
        port.write(message, ("127.0.0.1", sip[1]))
        await until(lambda: bool(answers))
        assert answers[0].startswith(b"SIP/2.0 200")
    finally:
        await port.stopListening()
    got = await scrape(client)
    assert got[("voipgw_sip_requests_total", (("method", "OPTIONS"),))] == 1
    assert got[("voipgw_sip_responses_total", (("code", "200"),))] == 1
    assert got[("voipgw_sip_events_total", (("event", "received"),))] == 1
    # The overload guard is wired in and idle: nothing refused, not shedding.
    refused = "voipgw_sip_invites_refused_overload_total"
    assert got[(refused, (("reason", "lag"),))] == 0
    assert got[(refused, (("reason", "pending"),))] == 0
    assert got[("voipgw_sip_overloaded", ())] == 0
    assert got[("voipgw_sip_backlogs_absorbed_total", ())] == 0
    assert 0 <= got[("voipgw_reactor_lag_seconds", ())] < 1
    assert 0 <= got[("voipgw_sip_udp_queue_delay_seconds", ())] < 1
    # The UDP port feeds the guard the datagrams' waits in the kernel.
    port = gateway.listeners["sip-udp"].port
    assert isinstance(port, QueueTimedPort) and port.timed
    assert gateway.sip is not None and gateway.sip.app is not None
    assert port._on_delay == gateway.sip.app.overload.queued
