"""Operations on a real `twistd -n voipgw` process: SIGHUP reload, SIGTERM stop."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from gw_example import example_in

from gateway.devcert import write_self_signed
from gateway.devicetoken import mint_device_token
from gateway.localpush.codec import FrameDecoder, encode_frame

ROOT = Path(__file__).parent.parent
AOR = "sip:bob@example.com"

pytestmark = pytest.mark.integration


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """A gateway process with its log file and ports."""

    def __init__(self, tmp: Path) -> None:
        config_path = example_in(tmp)
        self.var = tmp / "var"
        self.sip_port = _free_port(socket.SOCK_DGRAM)
        self.lp_port = _free_port()
        env = {
            **os.environ,
            "VOIPGW_SIP__UDP__PORT": str(self.sip_port),
            "VOIPGW_SIP__TCP__PORT": "0",
            "VOIPGW_LOCALPUSH__PORT": str(self.lp_port),
            "VOIPGW_API__PORT": "0",
            "VOIPGW_API__ENABLED": "false",
        }
        self.log = tmp / "gw.log"
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "twistd"),
                "-n",
                "--pidfile=",
                "voipgw",
                "--config",
                str(config_path),
            ],
            cwd=tmp,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.wait_log(" ready (config ")

    def wait_log(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.log.read_text()
            if text in content:
                return content
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged:\n{self.log.read_text()}")

    def secret(self) -> bytes:
        return (self.var / "device-jwt.secret").read_bytes().rstrip(b"\r\n")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def gateway(tmp_path: Path) -> Generator[Gateway, None, None]:
    gw = Gateway(tmp_path)
    try:
        yield gw
    finally:
        gw.stop()


class DeviceSocket:
    """A blocking LPP/1 client over TLS."""

    def __init__(
        self, gw: Gateway, device_id: str, secret: bytes, ca: Path | None = None
    ) -> None:
        ca = ca or gw.var / "dev-tls-cert.pem"
        context = ssl.create_default_context(cafile=str(ca))
        raw = socket.create_connection(("127.0.0.1", gw.lp_port), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.decoder = FrameDecoder(1 << 20)
        self.frames: list[dict[str, Any]] = []
        token = mint_device_token(secret, device_id, AOR, now=time.time())
        self.send({"type": "hello", "v": 1, "device_id": device_id, "token": token})

    def cert_sha256(self) -> str:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(encode_frame(obj, 16384))

    def next(self) -> dict[str, Any]:
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.frames += [dict(f.body) for f in self.decoder.feed(data)]
        return self.frames.pop(0)


def _der_sha256(pem: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem.read_text())
    return hashlib.sha256(der).hexdigest()


def test_sighup_reloads_cert_and_secret_without_dropping_sessions(
    gateway: Gateway,
) -> None:
    """SIGHUP: new TLS cert and JWT secret for new sessions; old sessions stay up."""
    old_secret = gateway.secret()
    device = DeviceSocket(gateway, "old-1", old_secret)
    assert device.next()["type"] == "welcome"
    old_cert = device.cert_sha256()

    cert, key = gateway.var / "dev-tls-cert.pem", gateway.var / "dev-tls-key.pem"
    write_self_signed(cert, key)
    new_secret = b"n" * 48
    (gateway.var / "device-jwt.secret").write_bytes(new_secret + b"\n")
    gateway.proc.send_signal(signal.SIGHUP)
    gateway.wait_log("Reloaded device JWT secret")
    gateway.wait_log("Reloaded local push TLS certificate")

    device.send({"type": "ping", "id": "p1"})
    assert device.next() == {"type": "pong", "id": "p1"}  # not dropped

    fresh = DeviceSocket(gateway, "new-1", new_secret)
    assert fresh.next()["type"] == "welcome"
    assert fresh.cert_sha256() == _der_sha256(cert) != old_cert
    stale = DeviceSocket(gateway, "new-2", old_secret)
    frame = stale.next()
    assert (frame["type"], frame["code"]) == ("error", "unauthorized")


def test_sighup_with_a_broken_cert_keeps_the_old_one(gateway: Gateway) -> None:
    """A bad file on reload is reported; the gateway keeps serving the old cert."""
    cert = gateway.var / "dev-tls-cert.pem"
    before = _der_sha256(cert)
    kept = gateway.var / "kept-cert.pem"
    shutil.copy(cert, kept)
    cert.write_text("not a certificate")
    gateway.proc.send_signal(signal.SIGHUP)
    gateway.wait_log("Reload of local push TLS certificate failed")
    device = DeviceSocket(gateway, "d1", gateway.secret(), ca=kept)
    assert device.next()["type"] == "welcome"
    assert device.cert_sha256() == before


def _invite(branch: str, local_port: int) -> bytes:
    return (
        f"INVITE {AOR} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\n"
        f"To: <{AOR}>\r\nCall-ID: {branch}@test\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_sigterm_503s_pending_invites_and_sends_goaway(gateway: Gateway) -> None:
    """SIGTERM: pending INVITE gets 503 + Retry-After, devices call_cancel and
    goaway shutdown, and the process ends cleanly."""
    device = DeviceSocket(gateway, "phone-1", gateway.secret())
    assert device.next()["type"] == "welcome"
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.settimeout(5)
    sip.sendto(
        _invite("z9hG4bK-term", sip.getsockname()[1]), ("127.0.0.1", gateway.sip_port)
    )
    call = device.next()
    assert call["type"] == "call"
    device.send({"type": "ack", "id": call["id"]})
    statuses = []
    while 180 not in statuses:
        statuses.append(int(sip.recv(65535).split(b" ", 2)[1]))

    gateway.proc.send_signal(signal.SIGTERM)
    response = sip.recv(65535)
    assert response.startswith(b"SIP/2.0 503 ")
    assert b"\r\nRetry-After: 5\r\n" in response
    cancel = device.next()
    assert (cancel["type"], cancel["reason"]) == ("call_cancel", "failed")
    device.send({"type": "ack", "id": cancel["id"]})
    goaway = device.next()
    assert (goaway["type"], goaway["reason"]) == ("goaway", "shutdown")
    assert 0 <= goaway["reconnect_after_ms"] <= 10_000
    gateway.proc.wait(20)
    log = gateway.log.read_text()
    assert "Traceback" not in log
    assert "Main loop terminated." in log
