"""Typed values for LPP/1 frames: what the gateway sends and the accepted hello.

The rest of the gateway builds these instead of JSON dicts; only ``to_wire``
turns them into the wire shape from ``localpush.md`` ("Frames the server sends").
"""

from __future__ import annotations

from typing import Any

import attrs

from gateway.localpush.codec import format_time

__all__ = [
    "APNS_ENVS",
    "CALL_EVENTS",
    "CANCEL_REASONS",
    "GOAWAY_REASONS",
    "CallCancelFrame",
    "CallFrame",
    "FrameSpec",
    "Hello",
    "MessageFrame",
    "Party",
    "to_wire",
]

CANCEL_REASONS = frozenset(
    {"remote_ended", "answered_elsewhere", "declined_elsewhere", "unanswered", "failed"}
)
CALL_EVENTS = frozenset({"ringing", "declined", "answered", "failed"})
GOAWAY_REASONS = frozenset({"shutdown", "replaced", "idle"})
APNS_ENVS = frozenset({"production", "sandbox"})


def _one_of(allowed: frozenset[str]) -> Any:
    def check(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {sorted(allowed)}")

    return check


@attrs.frozen(kw_only=True)
class Party:
    """A caller or message sender as the app shows it."""

    handle: str
    display_name: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``{"handle", "display_name"}`` object."""
        return {"handle": self.handle, "display_name": self.display_name}


@attrs.frozen(kw_only=True)
class CallFrame:
    """An incoming call; ``expires_at`` is POSIX seconds."""

    call_id: str
    caller: Party
    video: bool
    to: str
    expires_at: float
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class CallCancelFrame:
    """The call ended before it was answered on this device."""

    call_id: str
    reason: str = attrs.field(validator=_one_of(CANCEL_REASONS))


@attrs.frozen(kw_only=True)
class MessageFrame:
    """A text message; ``sent_at`` is POSIX seconds."""

    message_id: str
    sender: Party
    body: str
    sent_at: float


FrameSpec = CallFrame | CallCancelFrame | MessageFrame


def to_wire(spec: FrameSpec, frame_id: str) -> dict[str, Any]:
    """The JSON object for ``spec`` sent with frame ``id`` ``frame_id``."""
    if isinstance(spec, CallFrame):
        obj: dict[str, Any] = {
            "type": "call",
            "id": frame_id,
            "call_id": spec.call_id,
            "caller": spec.caller.to_wire(),
            "video": spec.video,
            "to": spec.to,
            "expires_at": format_time(spec.expires_at),
        }
        if spec.headers:
            obj["headers"] = dict(spec.headers)
        return obj
    if isinstance(spec, CallCancelFrame):
        return {
            "type": "call_cancel",
            "id": frame_id,
            "call_id": spec.call_id,
            "reason": spec.reason,
        }
    return {
        "type": "message",
        "id": frame_id,
        "message_id": spec.message_id,
        "from": spec.sender.to_wire(),
        "body": spec.body,
        "sent_at": format_time(spec.sent_at),
    }


@attrs.frozen(kw_only=True)
class Hello:
    """A validated ``hello`` without its JWT (which is never kept or logged)."""

    device_id: str
    voip_token: str | None = None
    alert_token: str | None = None
    topic: str | None = None
    apns_env: str | None = None
    locale: str | None = None
    app_version: str | None = None
