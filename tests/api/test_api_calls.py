"""POST/GET/DELETE /v1/calls over real HTTP against the assembled gateway."""

from __future__ import annotations

import pytest
import pytest_twisted
from api_helpers import Client, close_device, connect_device, frame

from gateway.app import Gateway

pytestmark = pytest.mark.integration

CALLER = {"handle": "+4930123", "display_name": "Alice"}


@pytest_twisted.ensureDeferred
async def test_call_rings_a_local_push_device_and_is_cancelled(
    gateway: Gateway, client: Client
) -> None:
    """201 with per-device state; the device gets the call; ack makes it ring;
    DELETE reason=answered_elsewhere sends it call_cancel with that reason."""
    device = await connect_device(gateway, "iphone-1")
    created = await client.post(
        "/v1/calls",
        {
            "to": "sip:Bob@Example.com",
            "caller": CALLER,
            "video": True,
            "headers": {"X-Customer-Id": "42"},
        },
    )
    assert created.status == 201
    call = created.body
    assert created.header("location") == f"/v1/calls/{call['call_id']}"
    assert (call["to"], call["state"], call["video"]) == (
        "sip:bob@example.com",
        "trying",
        True,
    )
    assert call["devices"][0]["device_id"] == "iphone-1"
    assert call["devices"][0]["status"] == "local;pending"

    pushed = await device.next_frame()
    assert pushed["type"] == "call"
    assert pushed["call_id"] == call["call_id"]
    assert pushed["caller"] == CALLER
    assert pushed["headers"] == {"X-Customer-Id": "42"}
    device.transport.write(frame({"type": "ack", "id": pushed["id"]}))
    for _ in range(100):
        got = await client.get(f"/v1/calls/{call['call_id']}")
        if got.body["state"] == "ringing":
            break
    assert got.status == 200
    state = got.body["devices"][0]
    assert (state["path"], state["acked"], state["ringing"]) == ("local", True, True)

    cancelled = await client.delete(
        f"/v1/calls/{call['call_id']}?reason=answered_elsewhere"
    )
    assert cancelled.status == 200
    assert (cancelled.body["state"], cancelled.body["outcome"]) == (
        "ended",
        "cancelled",
    )
    assert cancelled.body["reason"] == "answered_elsewhere"
    cancel = await device.next_frame()
    assert (cancel["type"], cancel["reason"]) == ("call_cancel", "answered_elsewhere")
    device.transport.write(frame({"type": "ack", "id": cancel["id"]}))

    again = await client.delete(f"/v1/calls/{call['call_id']}")
    assert again.status == 409
    assert again.body["error"]["code"] == "call_ended"
    await close_device(device)


@pytest_twisted.ensureDeferred
async def test_declined_on_the_device_shows_in_the_call(
    gateway: Gateway, client: Client
) -> None:
    """A device's decline ends the call; GET reports declined and the outcome."""
    device = await connect_device(gateway, "iphone-2")
    created = await client.post(
        "/v1/calls", {"device_ids": ["iphone-2"], "caller": {"handle": "100"}}
    )
    assert created.status == 201
    call_id = created.body["call_id"]
    assert created.body["to"] == "sip:bob@example.com"  # the device's AOR
    pushed = await device.next_frame()
    device.transport.write(frame({"type": "ack", "id": pushed["id"]}))
    device.transport.write(
        frame({"type": "call_event", "call_id": call_id, "event": "declined"})
    )
    for _ in range(100):
        got = await client.get(f"/v1/calls/{call_id}")
        if got.body["state"] == "ended":
            break
    assert got.body["outcome"] == "declined"
    assert got.body["devices"][0]["declined"] is True
    await close_device(device)


@pytest_twisted.ensureDeferred
async def test_call_with_explicit_call_id_and_conflict(
    gateway: Gateway, client: Client
) -> None:
    """A given call_id is used (lower-cased); reusing it while known is 409."""
    device = await connect_device(gateway, "iphone-3")
    call_id = "6F9619FF-8B86-D011-B42D-00CF4FC964FF"
    first = await client.post(
        "/v1/calls", {"to": "sip:bob@example.com", "caller": CALLER, "call_id": call_id}
    )
    assert first.status == 201
    assert first.body["call_id"] == call_id.lower()
    second = await client.post(
        "/v1/calls", {"to": "sip:bob@example.com", "caller": CALLER, "call_id": call_id}
    )
    assert second.status == 409
    assert second.body["error"]["field"] == "call_id"
    assert (await client.get(f"/v1/calls/{call_id}")).status == 200
    assert (await client.delete(f"/v1/calls/{call_id}")).status == 200
    await close_device(device)


@pytest_twisted.ensureDeferred
async def test_unreachable_device_gives_an_ended_call(
    gateway: Gateway, client: Client
) -> None:
    """A device with no session and no token (APNs disabled): 201, ended at
    once as unreachable, like SIP's 480 Push failed."""
    assert gateway.registry is not None
    put = await client.put("/v1/devices/offline-1", {"aors": ["sip:carol@example.com"]})
    assert put.status == 201
    created = await client.post(
        "/v1/calls", {"to": "sip:carol@example.com", "caller": CALLER}
    )
    assert created.status == 201
    assert (created.body["state"], created.body["outcome"]) == ("ended", "unreachable")
    assert created.body["devices"][0]["path"] == "none"


@pytest_twisted.ensureDeferred
async def test_no_devices_and_unknown_devices_are_404(client: Client) -> None:
    """An AOR with no device and an unknown device id answer 404 naming the field."""
    none = await client.post(
        "/v1/calls", {"to": "sip:nobody@example.com", "caller": CALLER}
    )
    assert none.status == 404
    assert none.body["error"] == {
        "code": "no_devices",
        "message": "no device rings for sip:nobody@example.com",
        "field": "to",
    }
    unknown = await client.post(
        "/v1/calls", {"device_ids": ["ghost"], "caller": CALLER}
    )
    assert unknown.status == 404
    assert unknown.body["error"]["code"] == "unknown_device"
    assert unknown.body["error"]["field"] == "device_ids[0]"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"caller": CALLER}, "to"),
        ({"to": "sip:bob@example.com"}, "caller"),
        ({"to": "bob", "caller": CALLER}, "to"),
        ({"to": "sip:bob@example.com", "caller": {"handle": ""}}, "caller.handle"),
        ({"to": "sip:bob@example.com", "caller": CALLER, "video": "yes"}, "video"),
        ({"to": "sip:bob@example.com", "caller": CALLER, "call_id": "x"}, "call_id"),
        ({"to": "sip:bob@example.com", "caller": CALLER, "vidoe": True}, "vidoe"),
        (
            {"to": "sip:bob@example.com", "caller": CALLER, "headers": {"Foo": "1"}},
            "headers.Foo",
        ),
        ({"device_ids": [], "caller": CALLER}, "device_ids"),
        ({"device_ids": ["a", "a"], "caller": CALLER}, "device_ids"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_invalid_call_bodies_are_422_with_the_field(
    gateway: Gateway, client: Client, body: dict[str, object], field: str
) -> None:
    """Schema and budget violations answer 422 and name the member."""
    await connect_device(gateway, "iphone-9")
    answer = await client.post("/v1/calls", body)
    assert answer.status == 422, answer.body
    assert answer.body["error"]["code"] == "invalid"
    assert answer.body["error"]["field"] == field


@pytest_twisted.ensureDeferred
async def test_get_and_delete_unknown_call_and_bad_reason(client: Client) -> None:
    """Unknown call ids are 404; an unknown cancel reason is 422 on `reason`."""
    assert (await client.get("/v1/calls/nope")).status == 404
    assert (await client.delete("/v1/calls/nope")).status == 404
    bad = await client.delete("/v1/calls/nope?reason=bored")
    assert bad.status == 422
    assert bad.body["error"]["field"] == "reason"


@pytest_twisted.ensureDeferred
async def test_custom_headers_over_the_budget_are_dropped_as_sip_does(
    gateway: Gateway, client: Client
) -> None:
    """Headers are kept in order while name + value bytes fit
    calls.custom_headers_max_bytes (1024 here); the call shows what was kept."""
    device = await connect_device(gateway, "iphone-h")
    headers = {"X-First": "a" * 500, "X-Second": "b" * 600, "X-Third": "c"}
    created = await client.post(
        "/v1/calls", {"to": "sip:bob@example.com", "caller": CALLER, "headers": headers}
    )
    assert created.status == 201
    assert created.body["headers"] == {"X-First": "a" * 500}
    pushed = await device.next_frame()
    assert pushed["headers"] == {"X-First": "a" * 500}
    await close_device(device)
