"""Which devices a call or message for an AOR goes to.

Calls and messages must reach the same devices, so both resolve targets
here: devices whose token claims (or API registration) list the AOR, plus
RFC 8599 REGISTER bindings (``lpc`` device ids and ``apns`` tokens).
"""

from __future__ import annotations

import hashlib

from gateway.apns import ApnsNotification, Environment, alert_notification
from gateway.store import Device, DeviceStore

__all__ = [
    "ALERT_DEADLINE_S",
    "alert_for",
    "apns_environment",
    "apns_target_id",
    "bundle_for",
    "resolve_targets",
]

# An alert (missed call, message) is still worth delivering this much later.
ALERT_DEADLINE_S = 3600.0


def apns_environment(device: Device | None) -> Environment:
    """The APNs endpoint for a device's tokens; production unless it said so."""
    if device is not None and device.apns_env == "sandbox":
        return Environment.SANDBOX
    return Environment.PRODUCTION


def bundle_for(device: Device | None, default: str) -> str:
    """The app's bundle id: the device's own (its hello's topic), else the
    configured one."""
    if device is not None and device.topic:
        return device.topic
    return default


def alert_for(
    device: Device | None,
    token: str,
    payload: bytes,
    *,
    default_bundle: str,
    now: float,
) -> ApnsNotification:
    """The alert push of a missed call or a message for this device."""
    return alert_notification(
        device_token=token,
        environment=apns_environment(device),
        bundle_id=bundle_for(device, default_bundle),
        payload=payload,
        deadline=now + ALERT_DEADLINE_S,
    )


def apns_target_id(token: str) -> str:
    """A stable id for a REGISTER-bound APNs token that does not reveal it."""
    return "apns:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def resolve_targets(
    registry: DeviceStore,
    now: float,
    aor: str | None = None,
    device_ids: tuple[str, ...] | None = None,
) -> dict[str, Device | None]:
    """device_id -> Device (None for an id the registry does not know yet)."""
    found: dict[str, Device | None] = {}
    if device_ids is not None:
        for device_id in device_ids:
            found[device_id] = registry.get_device(device_id)
        return found
    if aor is None:
        return found
    # One target per app install. A PushKit token is one app on one phone:
    # of device records that share one (a reinstall that kept its token and
    # left the old record behind) only the last seen rings, and a REGISTER
    # binding (apns or lpc) that leads to a token already targeted adds
    # nothing. Otherwise the phone would get two VoIP pushes for one call,
    # and iOS penalises an app for a VoIP push it does not report as a new
    # call.
    devices = registry.devices_for_aor(aor)
    latest: dict[str, Device] = {}
    for device in devices:
        token = _key(device.voip_token)
        if token and (
            token not in latest or device.last_seen > latest[token].last_seen
        ):
            latest[token] = device
    tokens: set[str] = set()  # the phones already targeted
    for device in devices:
        token = _key(device.voip_token)
        if not token or latest[token] is device:
            found[device.device_id] = device
            tokens.update(_tokens(device))
    for binding in registry.bindings_for_aor(aor, now):
        bound: Device | None
        if binding.provider == "lpc":
            key, bound = binding.prid, registry.get_device(binding.prid)
        elif binding.provider == "apns":
            bound = _apns_binding_device(aor, binding.prid, binding.param)
            key = bound.device_id
        else:
            continue
        if key in found or (bound is not None and _tokens(bound) & tokens):
            continue
        found[key] = bound
        if bound is not None:
            tokens.update(_tokens(bound))
    return found


def _tokens(device: Device) -> set[str]:
    return {_key(t) for t in (device.voip_token, device.alert_token) if t}


def _key(token: str | None) -> str:
    """Tokens are hex: compared without case ("" for none)."""
    return token.lower() if token else ""


def _apns_binding_device(aor: str, token: str, param: str) -> Device:
    """RFC 8599: pn-param ``<team>.<bundle>.voip`` is a PushKit token,
    ``<team>.<bundle>`` a regular (alert) one."""
    _, _, topic = param.partition(".")
    voip = topic.endswith(".voip")
    return Device(
        device_id=apns_target_id(token),
        aors=(aor,),
        voip_token=token if voip else None,
        alert_token=None if voip else token,
        topic=topic.removesuffix(".voip") or None,
    )
