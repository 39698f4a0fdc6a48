"""Every session's next deadline on one reactor timer.

Each device session has one deadline at a time (handshake, ack or idle
timeout; a simulated device its next ping). A ``DelayedCall`` each costs a
few GC-tracked objects per session (the call, a bound method, its argument
tuple and kwargs dict) and a push into the reactor's heap, whose order is
kept by a Python ``__lt__``: with 20,000 sessions, about fifteen Python calls
on cold objects per push or pop, once or twice a minute per session.
``SessionTimers`` keeps a heap of ``(deadline, token)`` tuples of atoms (the
GC stops tracking them, and they compare in C), a dict token -> owner, and
one reactor timer for the earliest deadline. Cancelling drops the token; its
heap entry is skipped when it surfaces and the heap is compacted when such
entries pile up. Deadlines fire when due, on the injected clock.

With ``grid_s``, deadlines further than ``exact_within_s`` ahead (idle
timeouts, 75 s out) are rounded up to a multiple of ``grid_s``, so that the
idle checks of thousands of sessions share a few reactor wakeups a second
instead of one each; near ones (ack timeouts) stay exact.
"""

from __future__ import annotations

import heapq
import math
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["DeadlineOwner", "SessionTimers"]


class DeadlineOwner(Protocol):
    """Whoever set a deadline; told once when it passes."""

    def on_deadline(self) -> None:
        """The deadline set with ``SessionTimers.set`` has passed."""


class SessionTimers:
    """Deadlines of many owners on one reactor timer; ``set`` returns a token."""

    log = Logger()

    # Compact the heap once it holds this many entries more than twice the live
    # ones (cancelled and moved deadlines).
    _SLACK = 1024

    def __init__(
        self, clock: IReactorTime, *, grid_s: float = 0.0, exact_within_s: float = 5.0
    ) -> None:
        self._clock = clock
        self._grid = grid_s
        self._exact_within = exact_within_s
        self._heap: list[tuple[float, int]] = []
        self._owners: dict[int, DeadlineOwner] = {}
        self._next_token = 0
        self._timer: IDelayedCall | None = None
        self._armed_at = 0.0
        self._running = False

    def __len__(self) -> int:
        """Deadlines set and not yet fired or cancelled."""
        return len(self._owners)

    def set(self, owner: DeadlineOwner, at: float) -> int:
        """Call ``owner.on_deadline()`` once at clock time ``at`` (or on the
        grid after it); returns a token for ``cancel`` (never 0: "none")."""
        grid = self._grid
        if grid and at - self._clock.seconds() > self._exact_within:
            at = math.ceil(at / grid) * grid
        self._next_token += 1
        token = self._next_token
        self._owners[token] = owner
        heapq.heappush(self._heap, (at, token))
        if not self._running and (self._timer is None or at < self._armed_at):
            self._arm(at)
        return token

    def cancel(self, token: int) -> None:
        """Forget a deadline (no-op if it fired or was cancelled already)."""
        if self._owners.pop(token, None) is None:
            return
        if not self._owners:
            self._heap.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif len(self._heap) > 2 * len(self._owners) + self._SLACK:
            owners = self._owners
            self._heap = [e for e in self._heap if e[1] in owners]
            heapq.heapify(self._heap)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = at
        delay = max(0.0, at - self._clock.seconds())
        self._timer = self._clock.callLater(delay, self._run)

    def _run(self) -> None:
        """Fire every deadline due now (those set meanwhile wait for the next
        run, so an owner re-arming in the past cannot loop), then re-arm."""
        self._timer = None
        heap, owners = self._heap, self._owners
        now = self._clock.seconds()
        due: list[DeadlineOwner] = []
        while heap and heap[0][0] <= now:
            owner = owners.pop(heapq.heappop(heap)[1], None)
            if owner is not None:
                due.append(owner)
        self._running = True
        try:
            for owner in due:
                try:
                    owner.on_deadline()
                except Exception:  # noqa: BLE001 - one owner must not stop the rest
                    self.log.failure("Session deadline handler failed")
        finally:
            self._running = False
        heap = self._heap  # cancel() may have compacted it
        while heap and heap[0][1] not in owners:
            heapq.heappop(heap)
        if heap and self._timer is None:
            self._arm(heap[0][0])
