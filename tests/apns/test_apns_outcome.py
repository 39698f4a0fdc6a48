"""The (status, reason) -> outcome table, row by row, and error-body parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.apns import (
    APNS_ERRORS,
    UNKNOWN_REASON,
    Delivered,
    Failed,
    Outcome,
    Overloaded,
    Retryable,
    TokenRejected,
    classify,
    parse_error_body,
    push_status,
)
from gateway.apns._outcome import MAX_ERROR_BODY, parse_retry_after

ID = "0b6e3c2e-53a4-4a42-9b1a-1d0c2a5b7e01"

# Written out independently of the table so that a changed row fails a test.
EXPECTED: list[tuple[int, str, type]] = [
    (400, "BadCollapseId", Failed),
    (400, "BadDeviceToken", TokenRejected),
    (400, "BadExpirationDate", Failed),
    (400, "BadMessageId", Failed),
    (400, "BadPriority", Failed),
    (400, "BadTopic", Failed),
    (400, "DeviceTokenNotForTopic", TokenRejected),
    (400, "DuplicateHeaders", Failed),
    (400, "IdleTimeout", Retryable),
    (400, "InvalidPushType", Failed),
    (400, "MissingDeviceToken", Failed),
    (400, "MissingTopic", Failed),
    (400, "PayloadEmpty", Failed),
    (400, "TopicDisallowed", Failed),
    (403, "BadCertificate", Failed),
    (403, "BadCertificateEnvironment", Failed),
    (403, "ExpiredProviderToken", Failed),
    (403, "Forbidden", Failed),
    (403, "InvalidProviderToken", Failed),
    (403, "MissingProviderToken", Failed),
    (403, "UnrelatedKeyIdInToken", Failed),
    (403, "BadEnvironmentKeyIdInToken", Failed),
    (404, "BadPath", Failed),
    (405, "MethodNotAllowed", Failed),
    (410, "ExpiredToken", TokenRejected),
    (410, "Unregistered", TokenRejected),
    (413, "PayloadTooLarge", Failed),
    (429, "TooManyProviderTokenUpdates", Retryable),
    (429, "TooManyRequests", Retryable),
    (500, "InternalServerError", Retryable),
    (503, "ServiceUnavailable", Retryable),
    (503, "Shutdown", Retryable),
]


def _body(reason: str, **extra: object) -> bytes:
    return json.dumps({"reason": reason, **extra}).encode()


def test_table_has_exactly_the_expected_rows() -> None:
    """No row is missing or extra compared with Apple's documented reasons."""
    assert dict(APNS_ERRORS) == {(s, r): c for s, r, c in EXPECTED}


@pytest.mark.parametrize(("status", "reason", "cls"), EXPECTED)
def test_row(status: int, reason: str, cls: type) -> None:
    """Each documented (status, reason) classifies as its outcome, reason kept."""
    outcome = classify(status, _body(reason), apns_id=ID)
    assert type(outcome) is cls
    assert outcome.reason == reason  # type: ignore[union-attr]
    if isinstance(outcome, Failed | Retryable | TokenRejected):
        assert outcome.status == status


def test_200_is_delivered_with_the_apns_id() -> None:
    """200 means APNs accepted it; the body is irrelevant."""
    assert classify(200, b"", apns_id=ID) == Delivered(ID)


def test_410_carries_apples_timestamp() -> None:
    """Unregistered's timestamp (ms) is kept for the registry's race check."""
    outcome = classify(
        410, _body("Unregistered", timestamp=1_700_000_000_000), apns_id=ID
    )
    assert outcome == TokenRejected("Unregistered", 410, 1_700_000_000_000.0)


def test_retryable_keeps_retry_after() -> None:
    """A Retry-After value travels in the Retryable outcome."""
    outcome = classify(503, _body("ServiceUnavailable"), apns_id=ID, retry_after=7.0)
    assert outcome == Retryable("ServiceUnavailable", retry_after=7.0, status=503)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, Failed),
        (403, Failed),
        (404, Failed),
        (410, TokenRejected),
        (413, Failed),
        (429, Retryable),
        (500, Retryable),
        (502, Retryable),
        (503, Retryable),
        (504, Retryable),
        (418, Failed),
        (301, Failed),
    ],
)
def test_unknown_reason_falls_back_on_status(status: int, cls: type) -> None:
    """A reason Apple adds later (or none) is classified by the status alone."""
    for body in (_body("SomethingNew"), b""):
        outcome = classify(status, body, apns_id=ID)
        assert type(outcome) is cls


def test_known_reason_with_unexpected_status_uses_status() -> None:
    """The pair decides: BadDeviceToken on a 500 is a server error, not a token."""
    assert isinstance(classify(500, _body("BadDeviceToken"), apns_id=ID), Retryable)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"reason"',
        b'{"timestamp": 12}',
        b'{"reason": 42}',
        b'{"reason": null}',
        b'{"reason": ""}',
        b'{"reason": "Bad\\r\\nX-Injected: 1"}',
        b'{"reason": "' + b"A" * 65 + b'"}',
        b"[" * 100_000,
        b"[" * 4000,
        _body("BadDeviceToken") + b" " * MAX_ERROR_BODY,
    ],
)
def test_garbage_bodies_give_unknown_reason(body: bytes) -> None:
    """Non-JSON, wrong shapes, unsafe or huge reasons: never raises, Unknown."""
    assert parse_error_body(body).reason == UNKNOWN_REASON
    outcome = classify(400, body, apns_id=ID)
    assert outcome == Failed(400, UNKNOWN_REASON)


def test_body_timestamp_parsing() -> None:
    """Numeric timestamps are kept; booleans and strings are not numbers."""
    assert parse_error_body(_body("Unregistered", timestamp=5)).timestamp == 5.0
    assert parse_error_body(_body("Unregistered", timestamp=True)).timestamp is None
    assert parse_error_body(_body("Unregistered", timestamp="5")).timestamp is None


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        (None, None),
        ([], None),
        ([b"5"], 5.0),
        ([b" 2.5 "], 2.5),
        ([b"-1"], None),
        ([b"nan"], None),
        ([b"inf"], None),
        ([b"Wed, 21 Oct 2015 07:28:00 GMT"], None),
        ([b"\xff"], None),
        ([b"999999"], 3600.0),
    ],
)
def test_parse_retry_after(values: list[bytes] | None, seconds: float | None) -> None:
    """Delta-seconds only, non-negative and finite, capped at an hour."""
    assert parse_retry_after(values) == seconds


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Delivered(ID), "apns;accepted"),
        (TokenRejected("BadDeviceToken", 400), "apns;rejected=BadDeviceToken"),
        (TokenRejected("Unregistered"), "apns;rejected=Unregistered"),
        (Failed(413, "PayloadTooLarge"), "apns;rejected=PayloadTooLarge"),
        (Retryable("Timeout"), "apns;failed=Timeout"),
        (Overloaded(), "apns;failed=Overloaded"),
    ],
)
def test_push_status_for_x_push_status_header(outcome: Outcome, status: str) -> None:
    """Each outcome maps to the calls.md X-Push-Status entry for its device."""
    assert push_status(outcome) == status


@given(status=st.integers(min_value=100, max_value=599), body=st.binary(max_size=600))
def test_classify_never_raises(status: int, body: bytes) -> None:
    """Any status with any body bytes yields an outcome with a header-safe reason."""
    outcome = classify(status, body, apns_id=ID)
    assert isinstance(outcome, Delivered | TokenRejected | Retryable | Failed)
    assert "\r" not in push_status(outcome)
    assert "\n" not in push_status(outcome)


@given(reason=st.text(max_size=80))
def test_reason_text_is_sanitised(reason: str) -> None:
    """Whatever reason string APNs (or a proxy) sends, only tokens come out."""
    parsed = parse_error_body(json.dumps({"reason": reason}).encode()).reason
    assert parsed in (reason, UNKNOWN_REASON)
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in parsed)
