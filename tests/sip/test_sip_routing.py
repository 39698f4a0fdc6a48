"""Response routing, RFC 3261 18.2.1/18.2.2 and RFC 3581 rport."""

from __future__ import annotations

import pytest

from gateway.sip import ResponseRoute, Transport, parse_via, route_response, stamp_via

SOURCE = ("203.0.113.5", 40123)


@pytest.mark.parametrize(
    ("via", "received", "rport"),
    [
        # sent-by equals the packet source: nothing to add
        ("SIP/2.0/UDP 203.0.113.5:40123;branch=z9hG4bK1", None, None),
        # private address behind NAT: received added
        ("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1", "203.0.113.5", None),
        # host name never equals an IP: received added
        ("SIP/2.0/UDP pc.example.com;branch=z9hG4bK1", "203.0.113.5", None),
        # rport requested: both filled, even when the host matches
        ("SIP/2.0/UDP 203.0.113.5:5060;rport;branch=z9hG4bK1", "203.0.113.5", 40123),
        ("SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1;rport", "203.0.113.5", 40123),
    ],
)
def test_stamp_via(via: str, received: str | None, rport: int | None) -> None:
    """received when the host differs from the source; rport when asked."""
    stamped = stamp_via(parse_via(via), SOURCE)
    assert stamped.received == received
    assert stamped.rport == rport
    assert stamped.branch == "z9hG4bK1"


def test_stamp_via_ipv6_equal_spelling() -> None:
    """IPv6 sent-by equal to the source in another spelling adds nothing."""
    via = parse_via("SIP/2.0/UDP [2001:db8:0::1]:5060;branch=z9hG4bK1")
    assert stamp_via(via, ("2001:db8::1", 5060)).received is None


@pytest.mark.parametrize(
    ("via", "transport", "expected"),
    [
        # unreliable, no received: sent-by host and port
        (
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1",
            Transport.UDP,
            ("192.0.2.1", 5070),
        ),
        # unreliable, sent-by without port: 5060
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", Transport.UDP, ("192.0.2.1", 5060)),
        # received: to received, sent-by port
        (
            "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK1;received=203.0.113.5",
            Transport.UDP,
            ("203.0.113.5", 5070),
        ),
        # received + rport: to the packet source exactly
        (
            "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK1;received=203.0.113.5;rport=40123",
            Transport.UDP,
            ("203.0.113.5", 40123),
        ),
        # maddr is ignored (documented): unicast back to received
        (
            "SIP/2.0/UDP 10.0.0.2;maddr=239.255.255.1;ttl=1;received=203.0.113.5;branch=z9hG4bK1",
            Transport.UDP,
            ("203.0.113.5", 5060),
        ),
        # reliable: fallback to received / sent-by port or the default
        (
            "SIP/2.0/TCP 10.0.0.2:5070;branch=z9hG4bK1;received=203.0.113.5;rport=40123",
            Transport.TCP,
            ("203.0.113.5", 5070),
        ),
        (
            "SIP/2.0/TLS host.example.com;branch=z9hG4bK1",
            Transport.TLS,
            ("host.example.com", 5061),
        ),
    ],
)
def test_route_table(via: str, transport: Transport, expected: tuple[str, int]) -> None:
    """The 18.2.2 destination table, one row per case."""
    route = route_response(parse_via(via), transport, connection="conn-1")
    assert route is not None
    assert (route.host, route.port) == expected
    assert route.transport is transport
    assert route.connection == ("conn-1" if transport.reliable else None)


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1",
        "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1;received=224.0.0.1",
        "SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK1",
        "SIP/2.0/UDP [ff02::1];branch=z9hG4bK1",
    ],
)
def test_non_unicast_refused(via: str) -> None:
    """Broadcast, multicast and unspecified destinations are never used."""
    assert route_response(parse_via(via), Transport.UDP) is None


def test_reliable_route_carries_connection() -> None:
    """On TCP the response reuses the request's connection."""
    via = stamp_via(parse_via("SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bK1"), SOURCE)
    assert route_response(via, Transport.TCP, connection=7) == ResponseRoute(
        transport=Transport.TCP, host="203.0.113.5", port=5060, connection=7
    )
