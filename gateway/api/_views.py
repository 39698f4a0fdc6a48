"""JSON views of calls and devices (the OpenAPI ``Call`` and ``Device``).

Shared by the API's answers and the webhook events, so an integrator sees
one shape wherever a call appears.
"""

from __future__ import annotations

from typing import Any

from gateway.calls.dispatcher import ActiveCall
from gateway.store import Device

__all__ = ["call_view", "device_view"]


def call_view(call: ActiveCall) -> dict[str, Any]:
    """A call as the API and webhooks show it."""
    machine = call.machine
    info = machine.info
    if machine.ended:
        state = "ended"
    elif machine.rang:
        state = "ringing"
    else:
        state = "trying"
    devices = [
        {"device_id": device_id, **fields}
        for device_id, fields in call.device_states().items()
    ]
    return {
        "call_id": info.call_id,
        "to": info.to,
        "caller": {
            "handle": info.caller_handle,
            "display_name": info.caller_display_name,
        },
        "video": info.video,
        "headers": dict(info.headers),
        "state": state,
        "outcome": machine.outcome,
        "reason": machine.outcome_reason if machine.ended else None,
        "answered_by": machine.answered_by,
        "push_status": call.push_status,
        "created_at": machine.started_at,
        "expires_at": call.deadline,
        "ended_at": machine.ended_at,
        "devices": devices,
    }


def device_view(device: Device, online: bool) -> dict[str, Any]:
    """A registry device as the API shows it."""
    return {
        "device_id": device.device_id,
        "aors": list(device.aors),
        "voip_token": device.voip_token,
        "alert_token": device.alert_token,
        "topic": device.topic,
        "apns_env": device.apns_env,
        "locale": device.locale,
        "app_version": device.app_version,
        "last_seen": device.last_seen or None,
        "online": online,
    }
