"""What the registry holds: devices, SIP push bindings, pending messages."""

from __future__ import annotations

import attrs

__all__ = ["APNS_ENVIRONMENTS", "Binding", "Device", "PendingMessage"]

APNS_ENVIRONMENTS = ("production", "sandbox")


@attrs.frozen
class Device:
    """One app install: where to reach it and which AORs it rings for."""

    device_id: str
    aors: tuple[str, ...] = ()
    voip_token: str | None = None
    alert_token: str | None = None
    topic: str | None = None
    apns_env: str = "production"
    locale: str | None = None
    app_version: str | None = None
    last_seen: float = 0.0


@attrs.frozen
class Binding:
    """An RFC 8599 REGISTER binding of a push target to an AOR.

    ``provider`` is ``apns`` (``prid`` = a PushKit token) or ``lpc``
    (``prid`` = a local-push device_id).
    """

    aor: str
    provider: str
    prid: str
    param: str = ""
    expires_at: float = 0.0

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity within the registry: one binding per AOR and target."""
        return (self.aor, self.provider, self.prid)


@attrs.frozen
class PendingMessage:
    """A text message stored until the device acks it or it expires."""

    message_id: str
    device_id: str
    body: str
    sender_handle: str
    sender_display_name: str | None
    sent_at: float
    expires_at: float
