"""API keys: read from ``api.keys_file``, kept only as SHA-256 digests.

One key per line, or ``sha256:<hex>`` of a key (so the file need not hold
the key itself); blank lines and ``#`` comments are ignored. A request's
bearer token is hashed and its SHA-256 digest looked up in a set of the
stored digests: one hash and one lookup per request, however many keys.
Timing cannot reveal a key: what is compared is the digest, which an
attacker cannot steer byte by byte towards a stored one (finding a token
whose digest shares a prefix with a stored digest is a preimage search), and
the comparison happens only after the set's own keyed hash has matched. With
no keys file the authenticated endpoints refuse everything (403): the API is
never open by default.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gateway.api._errors import ApiError

__all__ = ["ApiKeys", "ApiKeysError"]

# RFC 6750 b64token: what may follow "Bearer ".
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_HASHED_RE = re.compile(r"sha256:([0-9a-fA-F]{64})")
MIN_KEY_LENGTH = 16
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="voipgw"'}


class ApiKeysError(Exception):
    """The keys file cannot be used (start-up stops with this message)."""


class ApiKeys:
    """The set of accepted keys, as digests."""

    def __init__(self, digests: list[bytes], source: Path | None = None) -> None:
        self._digests = frozenset(digests)
        self.source = source

    @classmethod
    def from_file(cls, path: Path | None) -> ApiKeys:
        """Parse a keys file; None (no file configured) accepts no key."""
        if path is None:
            return cls([])
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ApiKeysError(f"api.keys_file {path}: cannot read: {e}") from None
        return cls(_parse(text, path), path)

    @property
    def configured(self) -> bool:
        """True when a keys file was given (even one holding no keys)."""
        return self.source is not None

    def __len__(self) -> int:
        return len(self._digests)

    def reload(self) -> None:
        """Re-read the keys file (e.g. on SIGHUP); on error keep the old keys."""
        if self.source is not None:
            self._digests = ApiKeys.from_file(self.source)._digests

    def check(self, authorization: bytes | None) -> None:
        """Raise ApiError 401 (missing or malformed) or 403 (wrong or no keys)."""
        if not self._digests:
            raise ApiError(
                403,
                "no_api_keys",
                "no API keys are configured (set api.keys_file)"
                if self.source is None
                else "the API keys file holds no keys",
            )
        if authorization is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing Authorization: Bearer <key>",
                headers=_CHALLENGE,
            )
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _TOKEN_RE.fullmatch(token):
            raise ApiError(
                401,
                "unauthorized",
                "malformed Authorization header: expected Bearer <key>",
                headers=_CHALLENGE,
            )
        if hashlib.sha256(token.encode("ascii")).digest() not in self._digests:
            raise ApiError(403, "forbidden", "the API key is not valid")


def _parse(text: str, path: Path) -> list[bytes]:
    digests: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        hashed = _HASHED_RE.fullmatch(line)
        if hashed:
            digests.append(bytes.fromhex(hashed.group(1)))
            continue
        if not _TOKEN_RE.fullmatch(line):
            # Never echo the line: it may be a key with a typo.
            raise ApiKeysError(
                f"api.keys_file {path}: line {number}: not a key "
                "(letters, digits and -._~+/ only) nor sha256:<64 hex digits>"
            )
        if len(line) < MIN_KEY_LENGTH:
            raise ApiKeysError(
                f"api.keys_file {path}: line {number}: keys must be at least "
                f"{MIN_KEY_LENGTH} characters"
            )
        digests.append(hashlib.sha256(line.encode("ascii")).digest())
    return digests
