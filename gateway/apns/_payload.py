"""APNs payloads and request headers, as calls.md ("APNs requests") fixes them.

Pure functions: no Twisted, no clock. Payloads are compact UTF-8 JSON; where a
payload would pass Apple's size limit, free-text fields are cut at code-point
boundaries (never inside a UTF-8 sequence) so the push still goes out.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from gateway.ids import new_uuid4

__all__ = [
    "ALERT_PAYLOAD_LIMIT",
    "VOIP_PAYLOAD_LIMIT",
    "ApnsNotification",
    "Environment",
    "PushType",
    "alert_notification",
    "expiration_at",
    "message_payload",
    "missed_call_payload",
    "new_apns_id",
    "request_headers",
    "token_hint",
    "topic_for",
    "voip_notification",
    "voip_payload",
]

VOIP_PAYLOAD_LIMIT = 5120
ALERT_PAYLOAD_LIMIT = 4096

MISSED_CALL_KEY = "MISSED_CALL"
MISSED_CALL_NO_NAME_KEY = "MISSED_CALL_NO_NAME"
INCOMING_MESSAGE_KEY = "INCOMING_MESSAGE"
MISSED_CALLS_THREAD = "missed-calls"

# Apple documents tokens as hex without fixing their length; the bound keeps
# the request path sane and rules out path injection.
_DEVICE_TOKEN_RE = re.compile(r"[0-9a-f]{16,200}")
_TOPIC_RE = re.compile(r"[A-Za-z0-9.-]{1,255}")
# calls.md: a UUID per push; APNs wants its canonical 8-4-4-4-12 form.
_APNS_ID_RE = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)


class Environment(enum.Enum):
    """Which APNs endpoint a device token belongs to."""

    PRODUCTION = "production"
    SANDBOX = "sandbox"


class PushType(enum.Enum):
    """The ``apns-push-type`` header value; it also picks the topic suffix."""

    VOIP = "voip"
    ALERT = "alert"


def token_hint(device_token: str) -> str:
    """A short, loggable stand-in for a device token (rule 13)."""
    return device_token[:8] + "…"


#: A fresh ``apns-id``; one per push, kept across its retries: a random
#: (version 4) UUID in its canonical form.
new_apns_id = new_uuid4


def topic_for(bundle_id: str, push_type: PushType) -> str:
    """``<bundle>.voip`` for VoIP pushes, ``<bundle>`` for alerts.

    The bundle id is taken as given: an app may really be called
    ``com.acme.voip``, whose VoIP topic is then ``com.acme.voip.voip``.
    """
    return bundle_id + ".voip" if push_type is PushType.VOIP else bundle_id


def expiration_at(now: float, expiration_s: int) -> int:
    """``apns-expiration``: 0 means deliver now or never; else an epoch second."""
    if expiration_s <= 0:
        return 0
    return int(now) + expiration_s


def _normalize_token(value: str) -> str:
    return value.strip().lower()


def _check_token(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not _DEVICE_TOKEN_RE.fullmatch(value):
        raise ValueError("device token must be 16 to 200 hex digits")


def _check_topic(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not _TOPIC_RE.fullmatch(value):
        raise ValueError(f"invalid apns topic {value!r}")


def _check_apns_id(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not _APNS_ID_RE.fullmatch(value):
        raise ValueError(f"apns-id must be a UUID, not {value!r}")


def _payload_repr(payload: bytes) -> str:
    # Payloads carry names and message bodies: keep them out of reprs and logs.
    return f"<{len(payload)} bytes>"


@attrs.frozen
class ApnsNotification:
    """One push to one device token; ``deadline`` is absolute reactor time.

    ``expiration`` is the ``apns-expiration`` epoch second (0: now or never);
    None lets the client apply ``ApnsSettings.expiration_s`` when it sends.
    """

    device_token: str = attrs.field(
        converter=_normalize_token, validator=_check_token, repr=token_hint
    )
    environment: Environment
    push_type: PushType
    topic: str = attrs.field(validator=_check_topic)
    # Checked: treq would send a dict or list form-encoded, not fail.
    payload: bytes = attrs.field(
        repr=_payload_repr, validator=attrs.validators.instance_of(bytes)
    )
    deadline: float
    apns_id: str = attrs.field(factory=new_apns_id, validator=_check_apns_id)
    expiration: int | None = attrs.field(
        default=None, converter=attrs.converters.optional(int)
    )
    priority: int = attrs.field(default=10, converter=int)


def voip_notification(
    *,
    device_token: str,
    environment: Environment,
    bundle_id: str,
    payload: bytes,
    deadline: float,
    expiration: int | None = None,
) -> ApnsNotification:
    """A VoIP push: push type voip, topic ``<bundle>.voip``, a fresh apns-id."""
    return _notification(
        PushType.VOIP,
        device_token,
        environment,
        bundle_id,
        payload,
        deadline,
        expiration,
    )


def alert_notification(
    *,
    device_token: str,
    environment: Environment,
    bundle_id: str,
    payload: bytes,
    deadline: float,
    expiration: int | None = None,
) -> ApnsNotification:
    """An alert push (missed call, message): push type alert, topic ``<bundle>``."""
    return _notification(
        PushType.ALERT,
        device_token,
        environment,
        bundle_id,
        payload,
        deadline,
        expiration,
    )


def _notification(  # noqa: PLR0917 - the two factories above pass their arguments on
    push_type: PushType,
    device_token: str,
    environment: Environment,
    bundle_id: str,
    payload: bytes,
    deadline: float,
    expiration: int | None,
) -> ApnsNotification:
    return ApnsNotification(
        device_token=device_token,
        environment=environment,
        push_type=push_type,
        topic=topic_for(bundle_id, push_type),
        payload=payload,
        deadline=deadline,
        expiration=expiration,
    )


def request_headers(
    notification: ApnsNotification,
    authorization: str | None,
    *,
    expiration: int | None = None,
) -> dict[bytes, list[bytes]]:
    """Lower-case HTTP/2 request headers for one attempt; no collapse id.

    ``expiration``, if given, is sent instead of the notification's own (the
    client fixes it once per push when the notification leaves it open).
    """
    if expiration is None:
        expiration = notification.expiration
    headers = {
        b"apns-push-type": [notification.push_type.value.encode("ascii")],
        b"apns-topic": [notification.topic.encode("ascii")],
        b"apns-priority": [str(notification.priority).encode("ascii")],
        b"apns-expiration": [str(expiration or 0).encode("ascii")],
        b"apns-id": [notification.apns_id.encode("ascii")],
    }
    if authorization is not None:
        headers[b"authorization"] = [authorization.encode("ascii")]
    return headers


def _dumps(obj: Any) -> bytes:
    return json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _text(value: str) -> str:
    # Lone surrogates (from lenient decoding upstream) cannot be UTF-8 encoded.
    return value.encode("utf-8", "replace").decode("utf-8")


def _fit(build: Callable[[str], bytes], text: str, limit: int) -> bytes | None:
    """The payload with the longest prefix of ``text`` that fits, or None.

    Payload size grows with the prefix length, so a binary search over code
    points finds the cut; JSON escaping is accounted for because each probe is
    the real serialised payload.
    """
    full = build(text)
    if len(full) <= limit:
        return full
    if len(build("")) > limit:
        return None
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(build(text[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return build(text[:lo])


def voip_payload(
    *,
    call_uuid: str,
    handle: str,
    display_name: str | None,
    video: bool,
    to: str,
    headers: Mapping[str, str],
    limit: int = VOIP_PAYLOAD_LIMIT,
) -> bytes:
    """The PushKit payload; cuts the display name, then drops headers, to fit.

    When the headers are dropped the display name gets the freed room back. If
    even that is too large (absurd handle or To), those are cut too: the call
    is always pushed. A missing display name is sent as ``""``.
    """
    name = _text(display_name or "")
    handle = _text(handle)
    to = _text(to)
    hdrs = {_text(k): _text(v) for k, v in headers.items()}

    def build(
        name: str, hdrs: Mapping[str, str], handle: str = handle, to: str = to
    ) -> bytes:
        return _dumps(
            {
                "aps": {},
                "callUUID": call_uuid,
                "handle": handle,
                "display_name": name,
                "video": video,
                "to": to,
                "headers": hdrs,
            }
        )

    attempts: tuple[tuple[Callable[[str], bytes], str], ...] = (
        (lambda n: build(n, hdrs), name),
        (lambda n: build(n, {}), name),
        (lambda h: build("", {}, handle=h), handle),
        (lambda t: build("", {}, handle="", to=t), to),
    )
    for builder, text in attempts:
        out = _fit(builder, text, limit)
        if out is not None:
            return out
    raise ValueError("callUUID alone exceeds the VoIP payload limit")


def missed_call_payload(
    *, call_uuid: str, display_name: str | None, limit: int = ALERT_PAYLOAD_LIMIT
) -> bytes:
    """Missed-call alert: MISSED_CALL with the name, MISSED_CALL_NO_NAME without."""

    def build(name: str) -> bytes:
        alert: dict[str, Any] = (
            {"loc-key": MISSED_CALL_KEY, "loc-args": [name]}
            if name
            else {"loc-key": MISSED_CALL_NO_NAME_KEY}
        )
        return _dumps(
            {
                "aps": {
                    "alert": alert,
                    "sound": "default",
                    "thread-id": MISSED_CALLS_THREAD,
                },
                "callUUID": call_uuid,
            }
        )

    name = _text(display_name or "").strip()
    out = _fit(build, name, limit)
    if out is None:
        raise ValueError("callUUID alone exceeds the alert payload limit")
    return out


def message_payload(
    *,
    sender: str,
    display_name: str | None,
    body: str,
    limit: int = ALERT_PAYLOAD_LIMIT,
) -> bytes:
    """Message alert: INCOMING_MESSAGE, body cut to fit, one thread per sender.

    The loc-arg is the display name, or the sender where there is none. The
    body is cut first; an absurd name or sender is cut after it.
    """
    sender = _text(sender)
    name = _text(display_name or "").strip() or sender
    body = _text(body)

    def build(body: str, name: str = name, thread: str = sender) -> bytes:
        return _dumps(
            {
                "aps": {
                    "alert": {
                        "loc-key": INCOMING_MESSAGE_KEY,
                        "loc-args": [name],
                        "body": body,
                    },
                    "sound": "default",
                    "thread-id": thread,
                }
            }
        )

    attempts: tuple[tuple[Callable[[str], bytes], str], ...] = (
        (build, body),
        (lambda n: build("", name=n), name),
        (lambda s: build("", name="", thread=s), sender),
    )
    for builder, text in attempts:
        out = _fit(builder, text, limit)
        if out is not None:
            return out
    raise ValueError("message alert cannot fit the payload limit")  # pragma: no cover
