"""PUT/GET/DELETE /v1/devices/{device_id} and GET /v1/devices?aor=."""

from __future__ import annotations

import pytest
import pytest_twisted
from api_helpers import Client, close_device, connect_device

from gateway.app import Gateway

pytestmark = pytest.mark.integration

TOKEN = "AB" * 32


@pytest_twisted.ensureDeferred
async def test_device_lifecycle(gateway: Gateway, client: Client) -> None:
    """PUT creates (201) then replaces (200), normalising AORs and tokens;
    GET reads it; the registry holds it; DELETE removes it (204, then 404)."""
    body = {
        "aors": ["sip:Dave@Example.com;transport=tcp", "sip:dave@example.com"],
        "voip_token": TOKEN,
        "topic": "com.example.voip",
        "apns_env": "sandbox",
    }
    created = await client.put("/v1/devices/ipad-7", body)
    assert created.status == 201
    assert created.body == {
        "device_id": "ipad-7",
        "aors": ["sip:dave@example.com"],
        "voip_token": TOKEN.lower(),
        "alert_token": None,
        "topic": "com.example.voip",
        "apns_env": "sandbox",
        "locale": None,
        "app_version": None,
        "last_seen": None,
        "online": False,
    }
    assert gateway.registry is not None
    stored = gateway.registry.get_device("ipad-7")
    assert stored is not None and stored.voip_token == TOKEN.lower()

    replaced = await client.put(
        "/v1/devices/ipad-7", {"aors": ["sip:erin@example.com"], "locale": "de-DE"}
    )
    assert replaced.status == 200
    assert (replaced.body["aors"], replaced.body["voip_token"]) == (
        ["sip:erin@example.com"],
        None,
    )
    got = await client.get("/v1/devices/ipad-7")
    assert got.status == 200 and got.body == replaced.body

    listed = await client.get("/v1/devices?aor=sip:erin@example.com")
    assert [d["device_id"] for d in listed.body["devices"]] == ["ipad-7"]
    assert (await client.get("/v1/devices?aor=sip:dave@example.com")).body == {
        "devices": []
    }

    deleted = await client.delete("/v1/devices/ipad-7")
    assert (deleted.status, deleted.raw) == (204, b"")
    assert gateway.registry.get_device("ipad-7") is None
    assert (await client.get("/v1/devices/ipad-7")).status == 404
    assert (await client.delete("/v1/devices/ipad-7")).status == 404


@pytest_twisted.ensureDeferred
async def test_online_devices_show_online(gateway: Gateway, client: Client) -> None:
    """A device with a local-push session lists as online, with last_seen."""
    device = await connect_device(gateway, "iphone-5", "sip:frank@example.com")
    listed = await client.get("/v1/devices?aor=sip:FRANK@example.com")
    assert listed.status == 200
    (entry,) = listed.body["devices"]
    assert entry["online"] is True
    assert entry["last_seen"] is not None
    await close_device(device)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/devices/bad%20id", {"aors": ["sip:a@b.c"]}, "device_id"),
        ("/v1/devices/apns:1234", {"aors": ["sip:a@b.c"]}, "device_id"),
        ("/v1/devices/%ff", {"aors": ["sip:a@b.c"]}, "device_id"),
        ("/v1/devices/d1", {}, "aors"),
        ("/v1/devices/d1", {"aors": []}, "aors"),
        ("/v1/devices/d1", {"aors": ["bob"]}, "aors[0]"),
        ("/v1/devices/d1", {"aors": ["sip:a@b.c"], "voip_token": "xyz"}, "voip_token"),
        ("/v1/devices/d1", {"aors": ["sip:a@b.c"], "apns_env": "dev"}, "apns_env"),
        ("/v1/devices/d1", {"aors": ["sip:a@b.c"], "token": "x"}, "token"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_invalid_device_puts_are_422(
    client: Client, path: str, body: dict[str, object], field: str
) -> None:
    """Bad ids (including the reserved apns: prefix) and bodies name the field."""
    answer = await client.put(path, body)
    assert answer.status == 422, answer.body
    assert answer.body["error"]["field"] == field


@pytest_twisted.ensureDeferred
async def test_listing_needs_a_valid_aor(client: Client) -> None:
    """GET /v1/devices without or with a malformed aor is 422 on `aor`."""
    for path in (
        "/v1/devices",
        "/v1/devices?aor=",
        "/v1/devices?aor=bob",
        "/v1/devices?aor=sip:%ff@example.com",
    ):
        answer = await client.get(path)
        assert answer.status == 422, path
        assert answer.body["error"]["field"] == "aor"


@pytest_twisted.ensureDeferred
async def test_get_invalid_device_id_is_404(client: Client) -> None:
    """An id that could never exist is simply not found."""
    assert (await client.get("/v1/devices/bad%20id")).status == 404
