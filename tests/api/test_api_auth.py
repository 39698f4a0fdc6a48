"""Bearer keys: 401 for missing or malformed, 403 for wrong keys or none
configured; health, readiness and metrics stay open."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import pytest_twisted
from api_helpers import KEY, Client, base_url, make_gateway

from gateway.api import ApiError, ApiKeys, ApiKeysError
from gateway.app import Gateway

pytestmark = pytest.mark.integration

# Every authenticated route, with a request that would otherwise succeed or
# fail on its merits (auth is checked before the body).
AUTHENTICATED = [
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/calls"),
    ("GET", "/v1/calls/x"),
    ("DELETE", "/v1/calls/x"),
    ("POST", "/v1/messages"),
    ("GET", "/v1/devices?aor=sip:a@b.c"),
    ("PUT", "/v1/devices/d1"),
    ("GET", "/v1/devices/d1"),
    ("DELETE", "/v1/devices/d1"),
]
OPEN = ["/healthz", "/readyz", "/metrics"]


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED)
@pytest_twisted.ensureDeferred
async def test_missing_key_is_401_with_challenge(
    gateway: Gateway, method: str, path: str
) -> None:
    """No Authorization header: 401 and WWW-Authenticate: Bearer."""
    answer = await Client(base_url(gateway), key=None).request(method, path)
    assert answer.status == 401
    assert answer.body["error"]["code"] == "unauthorized"
    assert answer.header("www-authenticate") == 'Bearer realm="voipgw"'


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED)
@pytest_twisted.ensureDeferred
async def test_wrong_key_is_403(gateway: Gateway, method: str, path: str) -> None:
    """A well-formed but unknown key: 403."""
    answer = await Client(base_url(gateway), key="x" * 32).request(method, path)
    assert answer.status == 403
    assert answer.body["error"] == {
        "code": "forbidden",
        "message": "the API key is not valid",
        "field": None,
    }


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "Bearer ké", KEY],
)
@pytest_twisted.ensureDeferred
async def test_malformed_authorization_is_401(gateway: Gateway, header: str) -> None:
    """Other schemes, empty or non-b64token credentials: 401."""
    client = Client(base_url(gateway), key=None)
    answer = await client.get("/v1/calls/x", headers={"Authorization": header})
    assert answer.status == 401
    assert "malformed" in answer.body["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_scheme_is_case_insensitive(gateway: Gateway) -> None:
    """`bearer <key>` is accepted (RFC 7235 schemes are case-insensitive)."""
    client = Client(base_url(gateway), key=None)
    answer = await client.get("/v1/calls/x", headers={"Authorization": f"bearer {KEY}"})
    assert answer.status == 404


@pytest.mark.parametrize("path", OPEN)
@pytest_twisted.ensureDeferred
async def test_health_and_metrics_need_no_key(gateway: Gateway, path: str) -> None:
    """Probes and scrapers do not hold API keys."""
    answer = await Client(base_url(gateway), key=None).get(path)
    assert answer.status == 200


@pytest_twisted.ensureDeferred
async def test_hashed_keys_in_the_file_are_accepted(tmp_path: Path) -> None:
    """A `sha256:<hex>` line accepts the key it hashes; comments are ignored."""
    other = "another-key-0123456789"
    digest = hashlib.sha256(other.encode()).hexdigest()
    gateway = make_gateway(tmp_path, keys=f"# ops team\n\nsha256:{digest.upper()}\n")
    gateway.startService()
    try:
        client = Client(base_url(gateway), key=other)
        assert (await client.get("/v1/calls/x")).status == 404
        assert (await client.get("/v1/calls/x", key=KEY)).status == 403
    finally:
        await gateway.stopService()


@pytest_twisted.ensureDeferred
async def test_no_keys_file_refuses_everything_but_probes(tmp_path: Path) -> None:
    """Without api.keys_file the API is closed: 403 no_api_keys, with or
    without a header; healthz/readyz/metrics still answer."""
    gateway = make_gateway(tmp_path, keys=None)
    gateway.startService()
    try:
        for key in (None, KEY):
            client = Client(base_url(gateway), key=key)
            answer = await client.post("/v1/calls", {"caller": {"handle": "1"}})
            assert answer.status == 403
            assert answer.body["error"] == {
                "code": "no_api_keys",
                "message": "no API keys are configured (set api.keys_file)",
                "field": None,
            }
        assert (await Client(base_url(gateway), key=None).get("/healthz")).status == 200
    finally:
        await gateway.stopService()


def test_keys_file_errors_do_not_echo_the_line(tmp_path: Path) -> None:
    """A bad line is reported by number, never by content (it may be a key)."""
    path = tmp_path / "keys"
    path.write_text("good-key-0123456789\nshort\n")
    with pytest.raises(ApiKeysError) as raised:
        ApiKeys.from_file(path)
    assert "line 2" in str(raised.value)
    assert "short" not in str(raised.value).replace("shortest", "")
    path.write_text("has space in it 0123456789\n")
    with pytest.raises(ApiKeysError, match="line 1: not a key"):
        ApiKeys.from_file(path)
    with pytest.raises(ApiKeysError, match="cannot read"):
        ApiKeys.from_file(tmp_path / "missing")


def test_keys_are_held_as_digests_and_reload(tmp_path: Path) -> None:
    """Only digests are kept; reload picks up a rotated file; an empty file
    refuses everything with its own message."""
    path = tmp_path / "keys"
    path.write_text("first-key-0123456789\n")
    keys = ApiKeys.from_file(path)
    assert "first-key" not in repr(vars(keys))
    keys.check(b"Bearer first-key-0123456789")
    path.write_text("second-key-0123456789\n")
    keys.reload()
    keys.check(b"Bearer second-key-0123456789")
    with pytest.raises(ApiError) as raised:
        keys.check(b"Bearer first-key-0123456789")
    assert raised.value.status == 403
    path.write_text("# nothing yet\n")
    keys.reload()
    with pytest.raises(ApiError) as raised:
        keys.check(b"Bearer second-key-0123456789")
    assert (raised.value.status, raised.value.code) == (403, "no_api_keys")
    assert raised.value.message == "the API keys file holds no keys"


@pytest_twisted.ensureDeferred
async def test_gateway_reload_rotates_api_keys(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The gateway's reload (SIGHUP) re-reads api.keys_file: the new key works,
    the old one is refused, sessions and listeners stay."""
    keys_file = gateway.config.api.keys_file
    assert keys_file is not None
    keys_file.write_text("rotated-key-0123456789\n")
    assert gateway.reload()["API keys"] == "reloaded"
    client = Client(base_url(gateway), key="rotated-key-0123456789")
    assert (await client.get("/v1/calls/x")).status == 404
    assert (await client.get("/v1/calls/x", key=KEY)).status == 403
    keys_file.write_text("bad line\n")
    assert gateway.reload()["API keys"].startswith("failed: ")
    assert (await client.get("/v1/calls/x")).status == 404  # old keys kept
