"""Device JWTs per localpush.md: HS256 only, sub == device_id, aor, exp; 30 s leeway."""

from __future__ import annotations

import jwt
import pytest

from gateway.aor import normalize_aor
from gateway.devicetoken import (
    DeviceTokenError,
    mint_device_token,
    verify_device_token,
)

SECRET = b"s3cret-for-tests-only-0123456789abcdef"
NOW = 1_800_000_000.0


def test_round_trip_single_and_list_aor() -> None:
    """A minted token verifies and yields normalised AORs."""
    tok = mint_device_token(SECRET, "dev-1", "sip:Bob@Example.com", now=NOW)
    claims = verify_device_token(SECRET, tok, "dev-1", now=NOW)
    assert claims.aors == ("sip:bob@example.com",)
    tok = mint_device_token(SECRET, "dev-1", ["sip:a@x", "sip:b@x"], now=NOW)
    assert verify_device_token(SECRET, tok, "dev-1", now=NOW).aors == (
        "sip:a@x",
        "sip:b@x",
    )


def _encode(claims: dict[str, object], alg: str = "HS256", key: object = SECRET) -> str:
    return jwt.encode(claims, key, algorithm=alg)  # type: ignore[arg-type]


BASE = {"sub": "dev-1", "aor": "sip:bob@example.com", "exp": int(NOW) + 60}


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (_encode(BASE, key=b"other-secret-0123456789abcdef0123"), "bad signature"),
        (_encode(BASE, alg="HS512"), "algorithm not accepted"),
        (_encode({**BASE, "exp": int(NOW) - 31}), "token expired"),
        (_encode({**BASE, "nbf": int(NOW) + 31}), "token not yet valid"),
        (_encode({**BASE, "iat": int(NOW) + 31}), "token not yet valid"),
        (_encode({k: v for k, v in BASE.items() if k != "aor"}), "missing claim aor"),
        (_encode({k: v for k, v in BASE.items() if k != "exp"}), "missing claim exp"),
        (_encode({k: v for k, v in BASE.items() if k != "sub"}), "missing claim sub"),
        (_encode({**BASE, "sub": "dev-2"}), "sub does not match device_id"),
        (_encode({**BASE, "aor": []}), "aor must be a string or a list of strings"),
        (_encode({**BASE, "aor": [1]}), "aor must be a string or a list of strings"),
        (_encode({**BASE, "exp": "soon"}), "claim exp must be a number"),
        ("not.a.jwt", "malformed token"),
        ("", "malformed token"),
    ],
)
def test_rejections(token: str, reason: str) -> None:
    """Every way a token can be wrong is refused with a precise reason."""
    with pytest.raises(DeviceTokenError) as exc:
        verify_device_token(SECRET, token, "dev-1", now=NOW)
    assert exc.value.reason == reason


def test_none_algorithm_refused() -> None:
    """alg=none never passes, even though it has no signature to check."""
    tok = jwt.encode(BASE, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(DeviceTokenError, match="algorithm not accepted"):
        verify_device_token(SECRET, tok, "dev-1", now=NOW)


def test_leeway_accepts_30s() -> None:
    """Clock skew up to 30 s is tolerated on exp and nbf."""
    tok = _encode({**BASE, "exp": int(NOW) - 30, "nbf": int(NOW) + 30})
    assert verify_device_token(SECRET, tok, "dev-1", now=NOW).device_id == "dev-1"


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("sip:Bob@Example.COM", "sip:bob@example.com"),
        ("sips:bob@example.com;transport=tls", "sip:bob@example.com"),
        ("bob@example.com", "sip:bob@example.com"),
        (" sip:bob@example.com?subject=x ", "sip:bob@example.com"),
    ],
)
def test_normalize_aor(raw: str, norm: str) -> None:
    """AORs are compared lower-cased, without scheme variants or parameters."""
    assert normalize_aor(raw) == norm
