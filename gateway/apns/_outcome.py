"""What became of one push: a closed set of outcomes and Apple's error table.

The table maps APNs ``(status, reason)`` pairs to an outcome class (STYLE rule
14, after sygnal's ``TOKEN_ERRORS``); pairs not listed fall back on the status
alone, so a new reason string from Apple is still classified.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Final, TypeAlias

import attrs

__all__ = [
    "APNS_ERRORS",
    "MAX_ERROR_BODY",
    "UNKNOWN_REASON",
    "Delivered",
    "ErrorBody",
    "Failed",
    "Outcome",
    "Overloaded",
    "Retryable",
    "TokenRejected",
    "classify",
    "parse_error_body",
    "parse_retry_after",
    "push_status",
]

UNKNOWN_REASON = "Unknown"
# Apple's error bodies are a few dozen bytes; anything longer is not from Apple.
MAX_ERROR_BODY = 4096
_MAX_RETRY_AFTER_S = 3600.0
# Reasons end up in logs and in the X-Push-Status SIP header: tokens only.
_REASON_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@attrs.frozen
class Delivered:
    """APNs accepted the push (200); the device counts as ringing."""

    apns_id: str


@attrs.frozen
class TokenRejected:
    """The device token is dead for this topic; the registry should drop it.

    ``timestamp`` is Apple's "last valid" time in ms since the epoch (410), so
    a registry can keep a token re-registered after it.
    """

    reason: str
    status: int = 410
    timestamp: float | None = None


@attrs.frozen
class Retryable:
    """A transient failure: retried within the deadline, this is the last one.

    ``status`` is None when no HTTP response arrived (connection lost, timeout).
    """

    reason: str
    retry_after: float | None = None
    status: int | None = None


@attrs.frozen
class Failed:
    """A permanent failure for this push (bad request, auth, payload size)."""

    status: int
    reason: str


@attrs.frozen
class Overloaded:
    """Back-pressure: the push was never sent because the client is full."""

    reason: str = "queue full"


Outcome: TypeAlias = Delivered | TokenRejected | Retryable | Failed | Overloaded
_ErrorClass: TypeAlias = type[TokenRejected] | type[Retryable] | type[Failed]

APNS_ERRORS: Final[Mapping[tuple[int, str], _ErrorClass]] = {
    (400, "BadCollapseId"): Failed,
    (400, "BadDeviceToken"): TokenRejected,
    (400, "BadExpirationDate"): Failed,
    (400, "BadMessageId"): Failed,
    (400, "BadPriority"): Failed,
    (400, "BadTopic"): Failed,
    (400, "DeviceTokenNotForTopic"): TokenRejected,
    (400, "DuplicateHeaders"): Failed,
    (400, "IdleTimeout"): Retryable,
    (400, "InvalidPushType"): Failed,
    (400, "MissingDeviceToken"): Failed,
    (400, "MissingTopic"): Failed,
    (400, "PayloadEmpty"): Failed,
    (400, "TopicDisallowed"): Failed,
    (403, "BadCertificate"): Failed,
    (403, "BadCertificateEnvironment"): Failed,
    # The client refreshes its JWT and retries once before this is final.
    (403, "ExpiredProviderToken"): Failed,
    (403, "Forbidden"): Failed,
    (403, "InvalidProviderToken"): Failed,
    (403, "MissingProviderToken"): Failed,
    (403, "UnrelatedKeyIdInToken"): Failed,
    (403, "BadEnvironmentKeyIdInToken"): Failed,
    (404, "BadPath"): Failed,
    (405, "MethodNotAllowed"): Failed,
    (410, "ExpiredToken"): TokenRejected,
    (410, "Unregistered"): TokenRejected,
    (413, "PayloadTooLarge"): Failed,
    (429, "TooManyProviderTokenUpdates"): Retryable,
    (429, "TooManyRequests"): Retryable,
    (500, "InternalServerError"): Retryable,
    (503, "ServiceUnavailable"): Retryable,
    (503, "Shutdown"): Retryable,
}

# Fallback by status for reasons not in the table (or no body at all).
_BY_STATUS: Final[Mapping[int, _ErrorClass]] = {
    410: TokenRejected,
    429: Retryable,
    500: Retryable,
    502: Retryable,
    503: Retryable,
    504: Retryable,
}


@attrs.frozen
class ErrorBody:
    """The useful part of Apple's ``{"reason": ..., "timestamp": ...}``."""

    reason: str = UNKNOWN_REASON
    timestamp: float | None = None


def parse_error_body(body: bytes) -> ErrorBody:
    """Never raises: garbage, huge or reason-less bodies give ``Unknown``."""
    if not body or len(body) > MAX_ERROR_BODY:
        return ErrorBody()
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ErrorBody()
    if not isinstance(data, dict):
        return ErrorBody()
    reason = data.get("reason")
    if not isinstance(reason, str) or not _REASON_RE.fullmatch(reason):
        reason = UNKNOWN_REASON
    stamp = data.get("timestamp")
    timestamp = (
        float(stamp)
        if isinstance(stamp, int | float) and not isinstance(stamp, bool)
        else None
    )
    return ErrorBody(reason=reason, timestamp=timestamp)


def parse_retry_after(values: list[bytes] | None) -> float | None:
    """Delta-seconds from a ``Retry-After`` header, capped; dates are ignored."""
    if not values:
        return None
    try:
        seconds = float(values[-1].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER_S)


def classify(
    status: int,
    body: bytes,
    *,
    apns_id: str,
    retry_after: float | None = None,
) -> Outcome:
    """Map one APNs HTTP response to an outcome."""
    if status == 200:
        return Delivered(apns_id)
    error = parse_error_body(body)
    cls = APNS_ERRORS.get((status, error.reason)) or _BY_STATUS.get(status, Failed)
    if cls is TokenRejected:
        return TokenRejected(error.reason, status=status, timestamp=error.timestamp)
    if cls is Retryable:
        return Retryable(error.reason, retry_after=retry_after, status=status)
    return Failed(status, error.reason)


def push_status(outcome: Outcome) -> str:
    """This device's entry for the ``X-Push-Status`` SIP header (calls.md).

    ``apns;accepted``, ``apns;rejected=<reason>`` (APNs refused the push or the
    token), ``apns;failed=<reason>`` (no answer in time, or back-pressure).
    Reasons are token characters only, so the value is header-safe.
    """
    if isinstance(outcome, Delivered):
        return "apns;accepted"
    if isinstance(outcome, TokenRejected | Failed):
        return f"apns;rejected={outcome.reason}"
    if isinstance(outcome, Retryable):
        return f"apns;failed={outcome.reason}"
    return "apns;failed=Overloaded"
