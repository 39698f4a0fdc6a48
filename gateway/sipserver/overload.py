"""Overload protection for the SIP front: refuse new INVITEs with 503.

A gateway that takes more calls than its CPU can serve does not slow down
gracefully: responses come late, the SIP core retransmits, and the
retransmissions eat the CPU the calls needed, until every call fails. A
``503 Service Unavailable`` with ``Retry-After`` (RFC 3261 21.5.4) instead
tells the core at once to try another gateway (Kamailio's dispatcher and
Asterisk fail over on it), and costs far less than a call. Two signals
decide: too many INVITEs pending an answer, and the reactor running late
(the CPU is saturated, measured rather than guessed). Calls already taken
are never touched.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["LagMonitor", "OverloadGuard", "OverloadSettings"]


@attrs.frozen
class OverloadSettings:
    """From ``[sip]``: ``max_pending_invites``, ``overload_lag_ms`` (0: off)
    and ``overload_retry_after_s``."""

    max_pending_invites: int = 50_000
    lag_ms: int = 250
    retry_after_s: int = 5
    interval_s: float = 0.1  # how often the reactor's lateness is sampled


class OverloadGuard:
    """Sans-IO: fed reactor-lag samples, asked before every new INVITE.

    A sample is the longer of two waits: how late the reactor ran a timer,
    and how long the oldest SIP datagram read since the last sample sat in
    the kernel (``queued``; a deep receive buffer hides that one from the
    timer). Shedding starts when two samples in a row reach ``lag_ms`` and
    the second is no shorter than the first: one late timer is a single
    stall (start-up work, a collector pass, the hypervisor taking the CPU),
    and a backlog that shrinks is one the CPU is already working off, whose
    calls succeed if they are let through. At twice ``lag_ms`` (by default
    T1, when the core starts retransmitting) two samples in a row start it,
    shrinking or not. It ends when a sample falls under half of ``lag_ms``,
    so it does not flap.
    """

    def __init__(self, settings: OverloadSettings = OverloadSettings()) -> None:
        self.settings = settings
        self.retry_after = str(settings.retry_after_s)
        self.lag_s = 0.0  # the last sample's reactor lateness
        self.queued_s = 0.0  # and its oldest datagram's wait in the kernel
        self._queued_max = 0.0  # since the last sample
        self.lagging = False
        self.refused: dict[str, int] = {"pending": 0, "lag": 0}
        self.draining = False  # over the threshold, shrinking, let through
        self.backlogs_absorbed = 0  # such episodes that ended without shedding
        self._late = 0  # samples in a row at or over the threshold
        self._previous_s = 0.0  # the last sample's delay, for the next to compare
        self._enter_s = settings.lag_ms / 1000
        self._leave_s = self._enter_s / 2

    @property
    def watches_lag(self) -> bool:
        """Whether delay samples count at all (``overload_lag_ms`` > 0); the
        timer and the UDP arrival stamps exist only then."""
        return self._enter_s > 0

    def queued(self, wait_s: float) -> None:
        """A datagram was read ``wait_s`` after the kernel received it."""
        self._queued_max = max(self._queued_max, wait_s)

    @property
    def delay_s(self) -> float:
        """The last sample: what a new request waited, by either measure."""
        return max(self.lag_s, self.queued_s)

    def sample(self, lag_s: float) -> bool | None:
        """Record how late the reactor ran (and take the datagrams' waits
        since the last call); True/False when shedding by lag starts/stops
        with this sample, None when nothing changed."""
        self.lag_s = lag_s
        self.queued_s, self._queued_max = self._queued_max, 0.0
        if not self.watches_lag:
            return None
        delay, previous = self.delay_s, self._previous_s
        self._previous_s = delay
        self._late = self._late + 1 if delay >= self._enter_s else 0
        if not self.lagging and self._late >= 2:
            if delay >= previous or delay >= 2 * self._enter_s:
                self.draining = False  # it stopped shrinking: overload after all
                self.lagging = True
                return True
            self.draining = True
        elif self._late == 0 and self.draining:
            self.draining = False  # worked off without a refusal
            self.backlogs_absorbed += 1
        if self.lagging and delay < self._leave_s:
            self.lagging = False
            return False
        return None

    def refusal(self, pending: int) -> str | None:
        """Why a new INVITE must be refused now ("pending", "lag"), or None."""
        if pending >= self.settings.max_pending_invites:
            reason = "pending"
        elif self.lagging:
            reason = "lag"
        else:
            return None
        self.refused[reason] += 1
        return reason


class LagMonitor:
    """Measures how late a timer fires, every ``interval_s`` (the reactor's
    queueing delay), and hands it to the guard with the UDP queue's waits."""

    log = Logger()

    def __init__(self, clock: IReactorTime, guard: OverloadGuard) -> None:
        self._clock = clock
        self._guard = guard
        self._interval = guard.settings.interval_s
        self._due = 0.0
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        if self._call is None and self._guard.watches_lag:
            self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _waits(self) -> dict[str, float]:
        """The log fields of a backlog or overload line (built only for one)."""
        guard = self._guard
        return {
            "delay_ms": guard.delay_s * 1000,
            "lag_ms": guard.lag_s * 1000,
            "queued_ms": guard.queued_s * 1000,
        }

    def _schedule(self) -> None:
        self._due = self._clock.seconds() + self._interval
        self._call = self._clock.callLater(self._interval, self._tick)

    def _tick(self) -> None:
        guard = self._guard
        was_draining = guard.draining
        changed = guard.sample(max(0.0, self._clock.seconds() - self._due))
        if guard.draining and not was_draining:
            self.log.info(
                "SIP backlog: requests wait {delay_ms:.0f} ms (reactor "
                "{lag_ms:.0f} ms late, UDP queue {queued_ms:.0f} ms) but the "
                "wait is shrinking; INVITEs are still taken",
                **self._waits(),
            )
        if changed is True:
            self.log.warn(
                "SIP overload: requests wait {delay_ms:.0f} ms (reactor "
                "{lag_ms:.0f} ms late, UDP queue {queued_ms:.0f} ms); new INVITEs "
                "get 503 until it catches up",
                **self._waits(),
            )
        elif changed is False:
            self.log.info(
                "SIP overload over: requests wait {delay_ms:.0f} ms; {refused} "
                "INVITEs were refused for lag so far",
                delay_ms=guard.delay_s * 1000,
                refused=guard.refused["lag"],
            )
        self._schedule()
