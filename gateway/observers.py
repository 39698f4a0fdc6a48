"""Calling out to observers and listeners without letting them break us.

Every module that reports to observers (dispatcher, hub, APNs client,
messenger, registry, SIP application) calls them through ``guard``: an
observer's bug is logged with its traceback and swallowed, so metrics or
webhooks can never fail a call, a delivery, a push or a write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.logger import Logger

__all__ = ["guard"]

_T = TypeVar("_T")


def guard(log: Logger, what: str, fn: Callable[..., _T], *args: Any) -> _T | None:
    """``fn(*args)``, or None (logged) if it raises: the caller must go on."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - logged with traceback via log.failure
        log.failure("Callback {what} failed", what=what)
        return None
