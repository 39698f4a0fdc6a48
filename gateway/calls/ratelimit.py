"""Sliding-window rate limits for VoIP pushes, per callee and per caller.

iOS penalises apps that receive VoIP pushes they do not report to CallKit,
so a caller flooding a callee must not turn into a push flood.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """At most ``limit`` hits per key within any ``window_s`` seconds.

    Memory is bounded by the keys active within one window: ``sweep`` (called
    on every hit, amortised) drops keys whose hits have all aged out.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._next_sweep = 0.0

    def allowed(self, key: str, now: float) -> bool:
        """Whether one more hit for ``key`` fits now (does not record it)."""
        hits = self._hits.get(key)
        if hits is None:
            return True
        self._expire(hits, now)
        return len(hits) < self.limit

    def hit(self, key: str, now: float) -> None:
        """Record a hit (call after ``allowed`` said yes)."""
        self._hits.setdefault(key, deque()).append(now)
        if now >= self._next_sweep:
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget keys with no hit inside the window."""
        for key in [k for k, hits in self._hits.items() if not self._expire(hits, now)]:
            del self._hits[key]
        self._next_sweep = now + self.window_s

    def __len__(self) -> int:
        return len(self._hits)

    def _expire(self, hits: deque[float], now: float) -> int:
        edge = now - self.window_s
        while hits and hits[0] <= edge:
            hits.popleft()
        return len(hits)
