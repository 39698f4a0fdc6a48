"""APNs: PushKit VoIP pushes and alert pushes for calls.md ("APNs requests").

Import from here; the ``_modules`` are private (STYLE rule 2).
"""

from __future__ import annotations

from gateway.apns._auth import (
    DEFAULT_REFRESH_AFTER_S,
    MAX_REFRESH_AFTER_S,
    MIN_TOKEN_INTERVAL_S,
    ApnsAuth,
    CertificateAuth,
    TokenAuth,
)
from gateway.apns._client import (
    ApnsClient,
    ApnsStats,
    PushObserver,
    TokenRejectedCallback,
)
from gateway.apns._outcome import (
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
from gateway.apns._payload import (
    ALERT_PAYLOAD_LIMIT,
    VOIP_PAYLOAD_LIMIT,
    ApnsNotification,
    Environment,
    PushType,
    alert_notification,
    expiration_at,
    message_payload,
    missed_call_payload,
    new_apns_id,
    request_headers,
    token_hint,
    topic_for,
    voip_notification,
    voip_payload,
)
from gateway.apns._settings import ApnsSettings

__all__ = [
    "ALERT_PAYLOAD_LIMIT",
    "APNS_ERRORS",
    "DEFAULT_REFRESH_AFTER_S",
    "MAX_REFRESH_AFTER_S",
    "MIN_TOKEN_INTERVAL_S",
    "UNKNOWN_REASON",
    "VOIP_PAYLOAD_LIMIT",
    "ApnsAuth",
    "ApnsClient",
    "ApnsNotification",
    "ApnsSettings",
    "ApnsStats",
    "CertificateAuth",
    "Delivered",
    "Environment",
    "Failed",
    "Outcome",
    "Overloaded",
    "PushObserver",
    "PushType",
    "Retryable",
    "TokenAuth",
    "TokenRejected",
    "TokenRejectedCallback",
    "alert_notification",
    "classify",
    "expiration_at",
    "message_payload",
    "missed_call_payload",
    "new_apns_id",
    "parse_error_body",
    "push_status",
    "request_headers",
    "token_hint",
    "topic_for",
    "voip_notification",
    "voip_payload",
]
