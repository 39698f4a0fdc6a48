"""Fixtures for the real-socket SIP tests: a fake APNs, the assembled gateway
configured to push to it, LPP/1 devices and a sipp runner."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gw_example import example_in
from sipp_helpers import (
    BUNDLE,
    KEY_ID,
    TEAM_ID,
    Apns,
    AutoDevice,
    FakeApns,
    Sipp,
    site,
)
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)

from gateway.app import Gateway, build_service
from gateway.config import load_config
from gateway.devfiles import read_jwt_secret
from gateway.devicetoken import mint_device_token


@pytest.fixture
def apns(tls_pair: tuple[Path, Path], tmp_path: Path) -> Generator[Apns, None, None]:
    """An HTTP/2 TLS server on 127.0.0.1 answering like APNs, and a .p8 key."""
    cert, key = tls_pair
    pc = PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes())
    options = CertificateOptions(
        privateKey=pc.privateKey.original,
        certificate=pc.original,
        acceptableProtocols=[b"h2"],
    )
    fake = FakeApns()
    port = reactor.listenSSL(  # type: ignore[attr-defined]
        0, site(fake), options, interface="127.0.0.1"
    )
    private = ec.generate_private_key(ec.SECP256R1())
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    p8.chmod(0o600)
    yield Apns(fake, port.getHost().port, private.public_key(), p8)
    pytest_twisted.blockon(port.stopListening())


def gateway_environ(
    apns: Apns, ca_file: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Config overrides: ephemeral ports, APNs at the fake, high push limits."""
    env = {
        "VOIPGW_SIP__UDP__PORT": "0",
        "VOIPGW_SIP__TCP__PORT": "0",
        # The slow-loris test waits for this; complete messages never do.
        "VOIPGW_SIP__TCP_MESSAGE_TIMEOUT_S": "1",
        "VOIPGW_LOCALPUSH__PORT": "0",
        "VOIPGW_API__PORT": "0",
        "VOIPGW_APNS__AUTH": "token",
        "VOIPGW_APNS__KEY_FILE": str(apns.key_file),
        "VOIPGW_APNS__KEY_ID": KEY_ID,
        "VOIPGW_APNS__TEAM_ID": TEAM_ID,
        "VOIPGW_APNS__BUNDLE_ID": BUNDLE,
        "VOIPGW_APNS__PRODUCTION_HOST": "127.0.0.1",
        "VOIPGW_APNS__PRODUCTION_PORT": str(apns.port),
        "VOIPGW_APNS__SANDBOX_HOST": "127.0.0.1",
        "VOIPGW_APNS__SANDBOX_PORT": str(apns.port),
        "VOIPGW_APNS__CA_FILE": str(ca_file),
        "VOIPGW_CALLS__RING_TIMEOUT_S": "20",
        "VOIPGW_CALLS__CALLEE_PUSH_LIMIT": "1000",
        "VOIPGW_CALLS__CALLER_PUSH_LIMIT": "1000",
        "VOIPGW_LOG__LEVEL": "warn",
    }
    env.update(extra or {})
    return env


@pytest.fixture
def gateway_extra() -> dict[str, str]:
    """Per-test config overrides (override this fixture in a module)."""
    return {}


@pytest.fixture
def gateway(
    tmp_path: Path,
    apns: Apns,
    tls_pair: tuple[Path, Path],
    gateway_extra: dict[str, str],
) -> Generator[Gateway, None, None]:
    """The assembled gateway on ephemeral ports of 127.0.0.1."""
    config = load_config(
        example_in(tmp_path),
        environ=gateway_environ(apns, tls_pair[0], gateway_extra),
    )
    service = build_service(config, reactor)  # type: ignore[arg-type]
    service.startService()
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest.fixture
def sipp_for(
    gateway: Gateway, tmp_path: Path
) -> Generator[Callable[[str], Sipp], None, None]:
    """sipp aimed at the gateway's listener for 'udp' or 'tcp'."""
    runners: list[Sipp] = []

    def make(transport: str) -> Sipp:
        address = gateway.listeners[f"sip-{transport}"].address
        assert address is not None
        runner = Sipp(tmp_path, address)
        runners.append(runner)
        return runner

    try:
        yield make
    finally:
        for runner in runners:
            runner.kill_all()


DeviceFactory = Callable[..., Deferred[AutoDevice]]


@pytest.fixture
def connect_device(gateway: Gateway) -> Generator[DeviceFactory, None, None]:
    """Connect an auto-acking device over TLS and complete its hello."""
    devices: list[AutoDevice] = []
    config = gateway.config
    assert config.localpush.cert is not None
    assert config.localpush.jwt_secret_file is not None
    secret = read_jwt_secret(config.localpush.jwt_secret_file)
    trust = Certificate.loadPEM(config.localpush.cert.read_bytes())

    @inlineCallbacks
    def connect(
        device_id: str, aor: str, **hello: Any
    ) -> Generator[Deferred[Any], Any, AutoDevice]:
        address = gateway.listeners["localpush"].address
        assert address is not None
        endpoint = endpoints.SSL4ClientEndpoint(
            reactor, address[0], address[1], optionsForClientTLS("localhost", trust)
        )
        device = yield endpoints.connectProtocol(endpoint, AutoDevice())
        devices.append(device)
        token = mint_device_token(secret, device_id, aor, now=time.time())
        device.send(
            {"type": "hello", "v": 1, "device_id": device_id, "token": token, **hello}
        )
        welcome = yield device.wait_for("welcome")
        assert welcome["v"] == 1
        return device

    yield connect
    for device in devices:
        if device.transport is not None and device.connected:
            device.transport.loseConnection()
