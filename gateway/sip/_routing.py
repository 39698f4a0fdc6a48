"""Where responses go: RFC 3261 18.2.1/18.2.2 with RFC 3581 ``rport``.

Pure functions. ``stamp_via`` is what the server transport does to the top Via
of every request it receives; ``route_response`` picks the destination of a
response from that stamped Via.

``maddr`` is ignored: the gateway answers over unicast only, so a response
never goes to a multicast group, and a broadcast, multicast or unspecified
destination is refused (RFC 4475 3.3.10 "bcast").
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Hashable
from dataclasses import dataclass

from gateway.sip._headers import Via

__all__ = [
    "Address",
    "ResponseRoute",
    "Transport",
    "default_port",
    "route_response",
    "stamp_via",
]

Address = tuple[str, int]
"""``(host, port)`` as the socket layer reports it."""


class Transport(enum.Enum):
    """The transports the gateway listens on."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"

    @property
    def reliable(self) -> bool:
        """Stream transports: no retransmission timers (RFC 3261 17)."""
        return self is not Transport.UDP


def default_port(transport: str | Transport) -> int:
    """5061 for TLS, 5060 otherwise (RFC 3261 19.1.2)."""
    name = transport.value if isinstance(transport, Transport) else transport.upper()
    return 5061 if name == "TLS" else 5060


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseRoute:
    """Where to send a response.

    On a reliable transport, write to ``connection`` (the one the request
    came on) while it is open; otherwise connect to ``host``:``port``.
    """

    transport: Transport
    host: str
    port: int
    connection: Hashable | None = None


def _same_ip(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(
            b.strip("[]")
        )
    except ValueError:
        return False  # a host name never equals the packet source


def stamp_via(via: Via, source: Address) -> Via:
    """Add ``received`` when sent-by differs from the source IP; fill ``rport``.

    RFC 3581: with ``rport`` present, ``received`` is added even when equal.
    """
    host, port = source
    params: dict[str, str | None] = {}
    if via.wants_rport:
        params["rport"] = str(port)
        params["received"] = host
    elif not _same_ip(via.host, host):
        params["received"] = host
    return via.with_params(**params) if params else via


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _unicast(host: str) -> bool:
    head = host.split(".", 1)[0]
    if head.isdigit() and 0 < int(head) < 224 and host != "255.255.255.255":
        return True  # the common IPv4 case without the ipaddress module
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True  # a name: resolved by the adapter (RFC 3263 section 6)
    return not (ip.is_multicast or ip.is_unspecified or ip == _BROADCAST)


def route_response(
    via: Via,
    transport: Transport,
    connection: Hashable | None = None,
) -> ResponseRoute | None:
    """The destination of a response whose request had this (stamped) top Via.

    Reliable transports reuse ``connection``, with received (or sent-by) and
    the sent-by port as the fallback. Unreliable: ``received`` if present,
    else sent-by; port ``rport`` if filled, else sent-by port, else the
    default. ``None``: the destination is not unicast, drop the response.
    """
    host = via.received or via.host
    if not _unicast(host):
        return None
    if transport.reliable:
        port = via.port or default_port(via.transport)
        return ResponseRoute(
            transport=transport, host=host, port=port, connection=connection
        )
    if via.received and via.rport:
        port = via.rport
    else:
        port = via.port or default_port(via.transport)
    return ResponseRoute(transport=transport, host=host, port=port)
