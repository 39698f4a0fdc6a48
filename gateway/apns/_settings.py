"""Tunables of the APNs client; ``gateway.config`` fills them from the file."""

from __future__ import annotations

import attrs
from attrs import validators as v

from gateway.apns._auth import (
    DEFAULT_REFRESH_AFTER_S,
    MAX_REFRESH_AFTER_S,
    MIN_TOKEN_INTERVAL_S,
)
from gateway.apns._payload import Environment

__all__ = ["ApnsSettings"]

_port = v.and_(v.instance_of(int), v.ge(1), v.le(65535))
# treq (hyperlink) cannot put IPv6 literals in a URL: names and IPv4 only.
_host = v.and_(v.instance_of(str), v.matches_re(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*)"))


def _positive(inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name} must be positive")


@attrs.frozen(kw_only=True)
class ApnsSettings:
    """Endpoints, bounds and timings; defaults are Apple's hosts and sane limits.

    Hosts and ports are per environment so tests, mocks and proxies can stand
    in for Apple. ``max_in_flight`` counts pushes between first attempt and
    outcome (backoff waits included); ``max_queued`` more wait behind them.
    """

    production_host: str = attrs.field(default="api.push.apple.com", validator=_host)
    production_port: int = attrs.field(default=443, validator=_port)
    sandbox_host: str = attrs.field(
        default="api.sandbox.push.apple.com", validator=_host
    )
    sandbox_port: int = attrs.field(default=443, validator=_port)
    max_in_flight: int = attrs.field(default=100, validator=v.ge(1))
    max_queued: int = attrs.field(default=1000, validator=v.ge(0))
    request_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    retry_base_s: float = attrs.field(default=0.5, validator=_positive)
    retry_max_s: float = attrs.field(default=8.0, validator=_positive)
    max_attempts: int = attrs.field(default=6, validator=v.ge(1))
    expiration_s: int = attrs.field(default=0, validator=v.ge(0))
    jwt_refresh_after_s: float = attrs.field(
        default=DEFAULT_REFRESH_AFTER_S,
        validator=[v.ge(MIN_TOKEN_INTERVAL_S), v.le(MAX_REFRESH_AFTER_S)],
    )

    def endpoint(self, environment: Environment) -> tuple[str, int]:
        """(host, port) for a device token's environment."""
        if environment is Environment.PRODUCTION:
            return self.production_host, self.production_port
        return self.sandbox_host, self.sandbox_port
