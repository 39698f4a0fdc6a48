"""APNs provider authentication: ES256 JWTs from a .p8 key, or a client cert.

Apple rejects JWTs older than an hour (403 ExpiredProviderToken) and answers
429 TooManyProviderTokenUpdates when a provider mints them more often than
every 20 minutes, so one token is reused and refreshed between those bounds,
on the injected clock.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import PrivateCertificate
from twisted.logger import Logger

__all__ = [
    "DEFAULT_REFRESH_AFTER_S",
    "MAX_REFRESH_AFTER_S",
    "MIN_TOKEN_INTERVAL_S",
    "ApnsAuth",
    "CertificateAuth",
    "TokenAuth",
]

MIN_TOKEN_INTERVAL_S: Final = 20 * 60
MAX_REFRESH_AFTER_S: Final = 50 * 60
DEFAULT_REFRESH_AFTER_S: Final = 40 * 60
_ALGORITHM = "ES256"
_ID_RE = re.compile(r"[A-Za-z0-9]{1,64}")


class ApnsAuth(Protocol):
    """What the client needs from either kind of provider authentication."""

    def authorization(self) -> str | None:
        """The ``authorization`` header value, or None (certificate auth)."""

    def provider_token_expired(self, used: str | None) -> bool:
        """APNs said 403 ExpiredProviderToken for ``used``: may we retry?"""


class TokenAuth:
    """One ES256 provider JWT, shared by all requests and refreshed in time."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        key: ec.EllipticCurvePrivateKey,
        *,
        key_id: str,
        team_id: str,
        refresh_after_s: float = DEFAULT_REFRESH_AFTER_S,
    ) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("APNs signing key must be an EC P-256 key")
        if not _ID_RE.fullmatch(key_id):
            raise ValueError("APNs key id must be alphanumeric")
        if not _ID_RE.fullmatch(team_id):
            raise ValueError("APNs team id must be alphanumeric")
        if not MIN_TOKEN_INTERVAL_S <= refresh_after_s <= MAX_REFRESH_AFTER_S:
            raise ValueError("JWT refresh age must be between 20 and 50 minutes")
        self._clock = clock
        self._key = key
        self.key_id = key_id
        self.team_id = team_id
        self.refresh_after_s = refresh_after_s
        self._token: str | None = None
        self._issued_at = 0.0
        self.generations = 0

    @classmethod
    def from_p8(
        cls,
        clock: IReactorTime,
        p8: bytes,
        *,
        key_id: str,
        team_id: str,
        refresh_after_s: float = DEFAULT_REFRESH_AFTER_S,
    ) -> TokenAuth:
        """Load Apple's PKCS#8 PEM signing key (the .p8 file's bytes)."""
        key = serialization.load_pem_private_key(p8, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("APNs signing key must be an EC P-256 key")
        return cls(
            clock,
            key,
            key_id=key_id,
            team_id=team_id,
            refresh_after_s=refresh_after_s,
        )

    def __repr__(self) -> str:
        return f"<TokenAuth kid={self.key_id} team={self.team_id}>"

    def token(self) -> str:
        """The current JWT, minted anew once it is ``refresh_after_s`` old."""
        now = self._clock.seconds()
        if self._token is None or now - self._issued_at >= self.refresh_after_s:
            return self._mint(now)
        return self._token

    def authorization(self) -> str:
        """``bearer <jwt>`` for the ``authorization`` request header."""
        return "bearer " + self.token()

    def provider_token_expired(self, used: str | None) -> bool:
        """Mint a new token unless that would break Apple's 20-minute rule.

        A rejection of an older token than the current one needs no new token:
        the current one is retried.
        """
        if self._token is None:
            return False
        if used is not None and used != "bearer " + self._token:
            return True
        now = self._clock.seconds()
        age = now - self._issued_at
        if age < MIN_TOKEN_INTERVAL_S:
            self.log.warn(
                "APNs rejected provider token {kid} aged {age:.0f}s as expired;"
                " not minting another before 20 minutes (check the clock)",
                kid=self.key_id,
                age=age,
            )
            return False
        self._mint(now)
        return True

    def _mint(self, now: float) -> str:
        self._token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self._key,
            algorithm=_ALGORITHM,
            headers={"kid": self.key_id},
        )
        self._issued_at = now
        self.generations += 1
        self.log.info(
            "Minted APNs provider token kid={kid} iat={iat}",
            kid=self.key_id,
            iat=int(now),
        )
        return self._token


class CertificateAuth:
    """TLS client-certificate auth: no header; the transport presents the cert."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if cert.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        ):
            raise ValueError("APNs client certificate and key do not match")
        self._cert_pem = cert_pem
        self._key_pem = key_pem
        self.expires_at = cert.not_valid_after_utc.timestamp()

    def __repr__(self) -> str:
        return f"<CertificateAuth expires_at={self.expires_at:.0f}>"

    def authorization(self) -> None:
        """Certificate auth sends no ``authorization`` header."""

    def provider_token_expired(self, used: str | None) -> bool:
        """There is no provider token to refresh."""
        return False

    def private_certificate(self) -> PrivateCertificate:
        """The client certificate for the HTTP/2 agent's TLS options."""
        pem = self._cert_pem + b"\n" + self._key_pem
        cert: PrivateCertificate = PrivateCertificate.loadPEM(pem)  # type: ignore[no-untyped-call]
        return cert
