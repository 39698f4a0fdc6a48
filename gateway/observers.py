"""Calling out to observers and listeners without letting them break us.

Every module that reports to observers (dispatcher, hub, APNs client,
messenger, registry, SIP application) calls them through ``guard``: an
observer's bug is logged with its traceback and swallowed, so metrics or
webhooks can never fail a call, a delivery, a push or a write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.logger import Logger

__all__ = ["Logs", "guard"]

_T = TypeVar("_T")


class Logs(Protocol):
    """Whoever calls out: its ``log`` (a class's ``Logger()``) hears failures."""

    log: Logger


def guard(owner: Logs, what: str, fn: Callable[..., _T], *args: Any) -> _T | None:
    """``fn(*args)``, or None (logged by ``owner.log``) if it raises: the caller
    must go on.

    Takes the owner rather than its logger: every ``self.log`` makes a new
    ``Logger`` (Twisted's descriptor binds it to the instance), and guard runs
    a few times per call and per push where nothing fails.
    """
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - logged with traceback via log.failure
        owner.log.failure("Callback {what} failed", what=what)
        return None
