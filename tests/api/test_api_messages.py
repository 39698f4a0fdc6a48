"""POST /v1/messages: stored, then delivered as a `message` frame."""

from __future__ import annotations

import pytest
import pytest_twisted
from api_helpers import Client, close_device, connect_device, frame, until

from gateway.app import Gateway

pytestmark = pytest.mark.integration

SENDER = {"handle": "+4930123", "display_name": "Alice"}


@pytest_twisted.ensureDeferred
async def test_message_is_stored_then_delivered(
    gateway: Gateway, client: Client
) -> None:
    """202 once stored; the online device gets the frame; its ack clears it."""
    device = await connect_device(gateway, "iphone-m1", "sip:gina@example.com")
    message_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    answer = await client.post(
        "/v1/messages",
        {
            "to": "sip:gina@example.com",
            "from": SENDER,
            "body": "Call me back",
            "message_id": message_id,
        },
    )
    assert answer.status == 202
    assert answer.body == {"message_id": message_id, "device_ids": ["iphone-m1"]}
    received = await device.next_frame()
    assert (received["type"], received["message_id"], received["body"]) == (
        "message",
        message_id,
        "Call me back",
    )
    assert received["from"] == SENDER
    registry = gateway.registry
    assert registry is not None
    assert [m.message_id for m in registry.pending_messages("iphone-m1", 0)] == [
        message_id
    ]
    device.transport.write(frame({"type": "ack", "id": received["id"]}))
    await until(lambda: not registry.pending_messages("iphone-m1", 0))
    await close_device(device)


@pytest_twisted.ensureDeferred
async def test_message_to_an_offline_device_waits_in_the_store(
    gateway: Gateway, client: Client
) -> None:
    """A registered device without a session: stored for its next session."""
    await client.put("/v1/devices/off-1", {"aors": ["sip:hank@example.com"]})
    answer = await client.post(
        "/v1/messages", {"device_ids": ["off-1"], "from": SENDER, "body": "hi"}
    )
    assert answer.status == 202
    assert gateway.registry is not None
    (stored,) = gateway.registry.pending_messages("off-1", 0)
    assert (stored.message_id, stored.body) == (answer.body["message_id"], "hi")


@pytest_twisted.ensureDeferred
async def test_message_errors(client: Client) -> None:
    """Unknown AOR 404; unknown device 404; a body over the SIP limit in
    bytes 422; missing body 422."""
    none = await client.post(
        "/v1/messages", {"to": "sip:nobody@example.com", "from": SENDER, "body": "x"}
    )
    assert (none.status, none.body["error"]["code"]) == (404, "no_devices")
    ghost = await client.post(
        "/v1/messages", {"device_ids": ["ghost"], "from": SENDER, "body": "x"}
    )
    assert (ghost.status, ghost.body["error"]["field"]) == (404, "device_ids[0]")
    await client.put("/v1/devices/m-2", {"aors": ["sip:ivy@example.com"]})
    big = await client.post(
        "/v1/messages",
        {"to": "sip:ivy@example.com", "from": SENDER, "body": "é" * 3000},
    )
    assert (big.status, big.body["error"]["field"]) == (422, "body")
    missing = await client.post(
        "/v1/messages", {"to": "sip:ivy@example.com", "from": SENDER}
    )
    assert (missing.status, missing.body["error"]["field"]) == (422, "body")
