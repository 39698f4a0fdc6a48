"""Socket options every TCP connection of the gateway shares."""

from __future__ import annotations

__all__ = ["no_delay"]


def no_delay(transport: object) -> None:
    """Turn Nagle's algorithm off on a TCP (or TLS over TCP) transport.

    Twisted already writes once per reactor turn, so Nagle only adds waits:
    a frame or response written while the last one is unacknowledged waits
    for the ACK, which a quiet peer delays by up to 40 ms (a SIP ``180``
    after the ``100``, a device frame while the previous one is in flight).
    Transports without the option (a proxy tunnel, a test's) are left as
    they are.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)
