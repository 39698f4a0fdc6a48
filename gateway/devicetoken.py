"""Device credentials: HS256 JWTs minted by the integrator's backend.

The local-push ``hello`` carries one; see ``localpush.md`` ("hello members").
Pure functions with the time passed in, so the session core stays sans-IO.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import jwt

from gateway.aor import normalize_aor

__all__ = [
    "DEVICE_ID_RE",
    "LEEWAY_S",
    "DeviceClaims",
    "DeviceTokenError",
    "mint_device_token",
    "verify_device_token",
]

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LEEWAY_S = 30
_ALGORITHM = "HS256"


class DeviceTokenError(Exception):
    """The token does not authorise this device; ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class DeviceClaims:
    """What a valid token grants: the device and the AORs it receives calls for."""

    device_id: str
    aors: tuple[str, ...]
    expires_at: float


def mint_device_token(
    secret: bytes,
    device_id: str,
    aors: str | list[str] | tuple[str, ...],
    *,
    now: float,
    ttl_s: int = 86400,
) -> str:
    """Mint a device JWT as an integrator's backend would."""
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(f"invalid device_id {device_id!r}")
    aor_claim: str | list[str] = aors if isinstance(aors, str) else list(aors)
    claims: dict[str, Any] = {
        "sub": device_id,
        "aor": aor_claim,
        "iat": int(now),
        "exp": int(now) + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_device_token(
    secret: bytes, token: str, device_id: str, *, now: float
) -> DeviceClaims:
    """Check signature, algorithm, times and claims; raise DeviceTokenError."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise DeviceTokenError("malformed token") from None
    if header.get("alg") != _ALGORITHM:
        raise DeviceTokenError("algorithm not accepted")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise DeviceTokenError("bad signature") from None
    except jwt.InvalidTokenError:
        raise DeviceTokenError("malformed token") from None
    return _check_claims(claims, device_id, now)


def _check_claims(claims: dict[str, Any], device_id: str, now: float) -> DeviceClaims:
    # Times are checked here against the injected clock, not PyJWT's wall clock.
    for name in ("sub", "aor", "exp"):
        if name not in claims:
            raise DeviceTokenError(f"missing claim {name}")
    exp = _numeric(claims, "exp")
    if now > exp + LEEWAY_S:
        raise DeviceTokenError("token expired")
    for name in ("nbf", "iat"):
        if name in claims and _numeric(claims, name) > now + LEEWAY_S:
            raise DeviceTokenError("token not yet valid")
    if claims["sub"] != device_id:
        raise DeviceTokenError("sub does not match device_id")
    aor = claims["aor"]
    aors = [aor] if isinstance(aor, str) else aor
    if (
        not isinstance(aors, list)
        or not aors
        or not all(isinstance(a, str) and a for a in aors)
    ):
        raise DeviceTokenError("aor must be a string or a list of strings")
    return DeviceClaims(
        device_id=device_id,
        aors=tuple(normalize_aor(a) for a in aors),
        expires_at=exp,
    )


def _numeric(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DeviceTokenError(f"claim {name} must be a number")
    return float(value)
