"""When CPython's cycle collector runs, so that it never pauses the reactor long.

A full (generation 2) collection walks every tracked object in the process:
at 20,000 device sessions or 100,000 registry records that is a million
objects and a pause of 0.2 to 1.4 s, during which no SIP message, frame or
push moves (docs/benchmarks.md). CPython starts one whenever the objects
promoted since the last one reach a quarter of the long-lived heap, so a
gateway that keeps taking on sessions and calls pays it again and again.

The policy: what has survived is frozen (``gc.freeze()``) once at start-up
and then every ``freeze_interval_s``, after a full collection of only what is
not yet frozen (frozen objects are never scanned), so each pass looks at the
last interval's survivors: milliseconds, not a second. Frozen objects that
die through reference counting are still freed at once; only garbage
*cycles* among frozen objects would stay. The gateway's own per-session,
per-call and per-request objects are freed by reference counting alone (a
test keeps it so), and ``full_interval_s`` sweeps whatever a library leaves
behind: unfreeze, collect everything, freeze again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.config import GcConfig

__all__ = ["Collector", "GcPolicy"]


@attrs.frozen
class Collector:
    """The ``gc`` calls the policy makes; tests pass recording fakes."""

    collect: Callable[[int], int] = gc.collect
    freeze: Callable[[], None] = gc.freeze
    unfreeze: Callable[[], None] = gc.unfreeze
    set_threshold: Callable[[int, int, int], None] = gc.set_threshold
    get_threshold: Callable[[], tuple[int, int, int]] = gc.get_threshold
    freeze_count: Callable[[], int] = gc.get_freeze_count
    clock: Callable[[], float] = time.perf_counter


class GcPolicy(Service):
    """Runs the freeze and sweep steps on the reactor's clock.

    Any interval or the threshold set to 0 turns that step off.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        settings: GcConfig,
        collector: Collector | None = None,
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._gc = collector or Collector()
        self._loops: list[LoopingCall] = []
        self._saved_threshold: tuple[int, int, int] | None = None
        # Read by the metrics collector at scrape time.
        self.freezes = 0
        self.sweeps = 0
        self.last_pause_s = 0.0
        self.longest_pause_s = 0.0
        self.pause_total_s = 0.0

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        gc_ = self._gc
        if self._settings.gen0_threshold:
            # A larger first generation: fewer young passes, and fewer
            # short-lived objects (a call's, a request's) caught alive in one.
            self._saved_threshold = gc_.get_threshold()
            _, gen1, gen2 = self._saved_threshold
            gc_.set_threshold(self._settings.gen0_threshold, gen1, gen2)
        # What is alive now (the loaded registry, TLS contexts, modules)
        # lives for good.
        self.freeze_survivors()
        for interval, step in (
            (self._settings.freeze_interval_s, self.freeze_survivors),
            (self._settings.full_interval_s, self.sweep),
        ):
            if interval > 0:
                loop = LoopingCall(step)
                loop.clock = self._reactor
                loop.start(interval, now=False)
                self._loops.append(loop)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        # Whatever stopped (a test's gateway, say) can be collected again.
        self._gc.unfreeze()
        if self._saved_threshold is not None:
            self._gc.set_threshold(*self._saved_threshold)
            self._saved_threshold = None

    def freeze_survivors(self) -> None:
        """Collect what is not frozen yet, then freeze what survived."""
        started = self._gc.clock()
        self._gc.collect(2)
        self._gc.freeze()
        self.freezes += 1
        self._paused(started)

    def frozen_objects(self) -> int:
        """Objects the cycle collector no longer scans."""
        return self._gc.freeze_count()

    def _paused(self, started: float) -> None:
        pause = self._gc.clock() - started
        self.last_pause_s = pause
        self.longest_pause_s = max(self.longest_pause_s, pause)
        self.pause_total_s += pause

    def sweep(self) -> None:
        """Collect everything once, frozen or not, for cycles libraries leave."""
        started = self._gc.clock()
        before = self._gc.freeze_count()
        self._gc.unfreeze()
        found = self._gc.collect(2)
        self._gc.freeze()
        self.sweeps += 1
        self._paused(started)
        self.log.info(
            "GC sweep: {found} unreachable objects among {objects} "
            "long-lived, {ms:.1f} ms",
            found=found,
            objects=before,
            ms=self.last_pause_s * 1000,
        )
