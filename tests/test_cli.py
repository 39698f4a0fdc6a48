"""The voipgw CLI: dev certificates and device tokens for first steps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from gw_example import example_in

from gateway.cli import main
from gateway.devfiles import read_jwt_secret
from gateway.devicetoken import verify_device_token


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return example_in(tmp_path)


def test_dev_cert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dev-cert writes a cert for the given names and a private key file."""
    assert main(["dev-cert", str(tmp_path / "tls"), "--name", "gw.example.com"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["gw.example.com"]
    assert (tmp_path / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert "wrote" in capsys.readouterr().out


def test_device_token_verifies(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """device-token mints a JWT the gateway accepts for that device and AORs."""
    args = ["device-token", "--config", str(example), "--device-id", "test-1"]
    args += ["--aor", "sip:Bob@example.com", "--aor", "sip:team@example.com"]
    assert main([*args, "--ttl", "600"]) == 0
    token = capsys.readouterr().out.strip()
    secret = read_jwt_secret(example.parent.parent / "var" / "device-jwt.secret")
    claims = verify_device_token(secret, token, "test-1", now=time.time())
    assert claims.aors == ("sip:bob@example.com", "sip:team@example.com")
    assert claims.expires_at - time.time() == pytest.approx(600, abs=5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device-id", "bad id!"], "--device-id must be 1 to 128 characters"),
        (["--device-id", "ok", "--ttl", "0"], "--ttl must be a positive number"),
    ],
)
def test_device_token_rejects_bad_arguments(
    example: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """Bad arguments: exit 1 with a clear message, no token."""
    args = ["device-token", "--config", str(example), "--aor", "sip:b@x", *extra]
    assert main(args) == 1
    out = capsys.readouterr()
    assert message in out.err
    assert out.out == ""


def test_short_secret_refused(tmp_path: Path) -> None:
    """A JWT secret shorter than 32 bytes is refused, not silently weak."""
    path = tmp_path / "s"
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        read_jwt_secret(path)


def test_dev_mode_generates_an_api_key_file(example: Path) -> None:
    """dev_mode creates the example's API keys file, private, with one key."""
    from gateway.config import load_config
    from gateway.devfiles import prepare_dev_files

    config = load_config(example, environ={})
    made = prepare_dev_files(config)
    keys = example.parent.parent / "var" / "api-keys"
    assert keys in made
    assert keys.stat().st_mode & 0o777 == 0o600
    [key] = keys.read_text().split()
    assert len(key) >= 40
    assert prepare_dev_files(config) == []  # never overwritten
