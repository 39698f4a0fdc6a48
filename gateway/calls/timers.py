"""Many keyed deadlines on one reactor timer.

A ``DelayedCall`` per call (ring timeout, then the resume window) costs a
handful of GC-tracked objects (the call, its bound methods, argument tuple
and kwargs dict) for as long as it is pending, plus a heap push and, once
cancelled, a stale heap entry in the reactor. ``Deadlines`` keeps one heap of
``(deadline, seq, key)`` entries with string keys (tuples of atoms, which the
GC stops tracking) and arms a single reactor timer for the earliest one.
Cancelling or moving a deadline only updates a dict: the old heap entry is
skipped when it surfaces. After a firing, the next one is at least ``gap``
seconds later, so that deadlines close together (a thousand calls a second
ending their resume windows) share one reactor wake-up; a deadline is then at
most ``gap`` late. Time comes from the injected clock, so ``task.Clock``
drives it in tests.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["Deadlines"]


class Deadlines:
    """Deadlines by key; ``fire(key)`` runs when a key's deadline passes."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, fire: Callable[[str], object], gap: float = 0.0
    ) -> None:
        self._clock = clock
        self._fire = fire
        self._gap = gap  # seconds between two firings, at least
        self._not_before = 0.0
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._timer: IDelayedCall | None = None
        self._armed_at = 0.0

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: str) -> bool:
        return key in self._due

    def set(self, key: str, at: float) -> None:
        """Fire ``key`` at ``at`` (replacing any deadline it had)."""
        self._due[key] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, key))
        if self._needs_arm(at):
            self._arm(at)

    def cancel(self, key: str) -> None:
        """Forget ``key``'s deadline; its heap entry is dropped lazily."""
        self._due.pop(key, None)
        if not self._due:
            self.stop()

    def stop(self) -> None:
        """Drop every deadline and the reactor timer (service stop)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._due.clear()
        self._heap.clear()

    def _arm(self, at: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        at = max(at, self._not_before)
        self._armed_at = at
        self._timer = self._clock.callLater(
            max(0.0, at - self._clock.seconds()), self._run
        )

    def _run(self) -> None:
        self._timer = None
        heap, due = self._heap, self._due
        now = self._clock.seconds()
        self._not_before = now + self._gap
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if due.get(key) == at:
                del due[key]
                try:
                    self._fire(key)
                except Exception:  # noqa: BLE001 - the other deadlines still fire
                    self.log.failure("Deadline of {key} failed", key=key)
        # Skip stale entries so the timer is armed for a live deadline only
        # (and not at all once nothing is due: no idle wake-ups).
        while heap and due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        if heap and self._needs_arm(heap[0][0]):
            self._arm(heap[0][0])

    def _needs_arm(self, at: float) -> bool:
        """No timer, or one armed later than ``at`` may fire."""
        return self._timer is None or max(at, self._not_before) < self._armed_at
