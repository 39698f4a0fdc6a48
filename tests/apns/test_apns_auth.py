"""Provider auth: ES256 JWT shape and Apple's 20/60-minute rules on task.Clock."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.task import Clock

from gateway.apns import CertificateAuth, TokenAuth
from gateway.devcert import write_self_signed

KID = "ABC123DEFG"
TEAM = "DEF123GHIJ"
START = 1_800_000_000.0


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, like the one in Apple's .p8 file."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> Clock:
    """A clock at a realistic epoch time."""
    c = Clock()
    c.advance(START)
    return c


def _auth(clock: Clock, key: ec.EllipticCurvePrivateKey, **kw: float) -> TokenAuth:
    return TokenAuth(clock, key, key_id=KID, team_id=TEAM, **kw)


def _p8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_jwt_verifies_with_public_key(
    clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    """ES256 signature, kid header, iss = team id, iat = now: what APNs checks."""
    token = _auth(clock, key).token()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == KID
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["ES256"],
        options={"verify_iat": False},
    )
    assert claims == {"iss": TEAM, "iat": int(START)}


def test_authorization_header_is_bearer(
    clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    """The header value is ``bearer <jwt>``."""
    auth = _auth(clock, key)
    assert auth.authorization() == "bearer " + auth.token()


def test_token_reused_until_refresh_age(
    clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    """One token serves all requests until it is refresh_after_s old."""
    auth = _auth(clock, key, refresh_after_s=40 * 60)
    first = auth.token()
    clock.advance(40 * 60 - 1)
    assert auth.token() == first
    assert auth.generations == 1
    clock.advance(1)
    second = auth.token()
    assert second != first
    assert jwt.decode(second, options={"verify_signature": False})["iat"] == int(
        START + 40 * 60
    )
    assert auth.generations == 2


@pytest.mark.parametrize("age", [19 * 60 + 59, 50 * 60 + 1, 0, 3600])
def test_refresh_age_outside_20_to_50_minutes_refused(
    clock: Clock, key: ec.EllipticCurvePrivateKey, age: float
) -> None:
    """Refreshing faster than 20 min or slower than 50 min is a config error."""
    with pytest.raises(ValueError, match="20 and 50"):
        _auth(clock, key, refresh_after_s=age)


def test_expired_provider_token_regenerates_after_20_minutes(
    clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    """403 ExpiredProviderToken on a token 20+ minutes old mints a new one."""
    auth = _auth(clock, key)
    used = auth.authorization()
    clock.advance(20 * 60)
    assert auth.provider_token_expired(used) is True
    assert auth.authorization() != used
    assert auth.generations == 2


def test_expired_provider_token_within_20_minutes_keeps_token(
    clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    """Minting again sooner would earn 429 TooManyProviderTokenUpdates."""
    auth = _auth(clock, key)
    used = auth.authorization()
    clock.advance(20 * 60 - 1)
    assert auth.provider_token_expired(used) is False
    assert auth.authorization() == used
    assert auth.generations == 1


def test_expired_report_for_an_older_token_needs_no_new_one(
    clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    """A late rejection of a token already replaced retries with the current one."""
    auth = _auth(clock, key)
    old = auth.authorization()
    clock.advance(40 * 60)
    current = auth.authorization()
    assert auth.provider_token_expired(old) is True
    assert auth.authorization() == current
    assert auth.generations == 2


def test_no_token_yet_cannot_be_expired(
    clock: Clock, key: ec.EllipticCurvePrivateKey
) -> None:
    """Before any token was minted there is nothing to refresh."""
    assert _auth(clock, key).provider_token_expired(None) is False


def test_from_p8_loads_pkcs8_pem(clock: Clock, key: ec.EllipticCurvePrivateKey) -> None:
    """The .p8 bytes load and sign tokens verifiable with the matching public key."""
    auth = TokenAuth.from_p8(clock, _p8(key), key_id=KID, team_id=TEAM)
    jwt.decode(
        auth.token(),
        key.public_key(),
        algorithms=["ES256"],
        options={"verify_iat": False},
    )


def test_wrong_key_types_refused(clock: Clock) -> None:
    """Only EC P-256 keys can sign ES256 APNs tokens."""
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        TokenAuth(clock, p384, key_id=KID, team_id=TEAM)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        TokenAuth.from_p8(clock, pem, key_id=KID, team_id=TEAM)


@pytest.mark.parametrize(("kid", "team"), [("", TEAM), (KID, ""), ("AB C", TEAM)])
def test_bad_ids_refused(
    clock: Clock, key: ec.EllipticCurvePrivateKey, kid: str, team: str
) -> None:
    """Key and team ids are alphanumeric and non-empty."""
    with pytest.raises(ValueError, match="id"):
        TokenAuth(clock, key, key_id=kid, team_id=team)


def test_repr_leaks_no_secret(clock: Clock, key: ec.EllipticCurvePrivateKey) -> None:
    """Logging the auth object shows ids only, never the key or the token."""
    auth = _auth(clock, key)
    token = auth.token()
    assert token not in repr(auth)
    assert "PRIVATE" not in repr(auth)
    assert KID in repr(auth)


def test_certificate_auth(tls_pair: tuple[Path, Path]) -> None:
    """Cert auth sends no header, never refreshes, and hands the cert to TLS."""
    cert, key = tls_pair
    auth = CertificateAuth(cert.read_bytes(), key.read_bytes())
    assert auth.authorization() is None
    assert auth.provider_token_expired(None) is False
    assert auth.private_certificate().privateKey is not None
    assert auth.expires_at > START - 10 * 365 * 86400
    assert "PRIVATE" not in repr(auth)


def test_certificate_and_key_must_match(
    tls_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """A key from another pair is refused at load time, not at first push."""
    other_cert, other_key = tmp_path / "c.pem", tmp_path / "k.pem"
    write_self_signed(other_cert, other_key)
    with pytest.raises(ValueError, match="do not match"):
        CertificateAuth(tls_pair[0].read_bytes(), other_key.read_bytes())
