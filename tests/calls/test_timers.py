"""Deadlines: many keyed deadlines on one reactor timer, driven by task.Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gateway.calls.timers import Deadlines


def _deadlines() -> tuple[Clock, Deadlines, list[tuple[float, str]]]:
    clock = Clock()
    fired: list[tuple[float, str]] = []
    deadlines = Deadlines(clock, lambda key: fired.append((clock.seconds(), key)))
    return clock, deadlines, fired


def test_fire_in_deadline_order_on_one_reactor_timer() -> None:
    """Keys fire at their deadlines, in order, with one DelayedCall pending."""
    clock, deadlines, fired = _deadlines()
    deadlines.set("b", 2.0)
    deadlines.set("a", 1.0)
    deadlines.set("c", 3.0)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1.5)
    assert fired == [(1.5, "a")]
    clock.advance(10)
    assert [key for _, key in fired] == ["a", "b", "c"]
    assert len(deadlines) == 0
    assert clock.getDelayedCalls() == []


def test_cancel_and_move() -> None:
    """A cancelled key never fires; setting a key again moves its deadline."""
    clock, deadlines, fired = _deadlines()
    deadlines.set("a", 1.0)
    deadlines.set("b", 1.0)
    deadlines.cancel("a")
    deadlines.set("b", 5.0)
    assert "a" not in deadlines and "b" in deadlines
    clock.advance(4)
    assert fired == []
    clock.advance(1)
    assert fired == [(5.0, "b")]
    assert clock.getDelayedCalls() == []


def test_cancelling_the_last_key_drops_the_reactor_timer() -> None:
    """No deadline left: no pending DelayedCall (no idle wake-ups)."""
    clock, deadlines, _ = _deadlines()
    deadlines.set("a", 30.0)
    deadlines.cancel("a")
    assert clock.getDelayedCalls() == []


def test_an_earlier_deadline_rearms_the_timer() -> None:
    """A deadline earlier than the armed one fires on time."""
    clock, deadlines, fired = _deadlines()
    deadlines.set("late", 30.0)
    deadlines.set("soon", 1.0)
    clock.advance(1)
    assert fired == [(1.0, "soon")]
    (pending,) = clock.getDelayedCalls()
    assert pending.getTime() == 30.0


def test_a_key_set_while_firing_is_kept() -> None:
    """fire() may set deadlines (the dispatcher sets the resume window when
    the ring timeout ends a call); they fire later, even if earlier than
    what was armed."""
    clock = Clock()
    fired: list[tuple[float, str]] = []
    deadlines: Deadlines

    def fire(key: str) -> None:
        fired.append((clock.seconds(), key))
        if key == "ring":
            deadlines.set("reap", clock.seconds() + 60)
            deadlines.set("soon", clock.seconds() + 1)

    deadlines = Deadlines(clock, fire)
    deadlines.set("ring", 30.0)
    deadlines.set("other", 100.0)
    clock.advance(30)
    clock.advance(1)
    clock.advance(59)
    clock.advance(10)
    assert fired == [(30.0, "ring"), (31.0, "soon"), (90.0, "reap"), (100.0, "other")]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    """An exception from fire() is logged; later deadlines still fire."""
    clock = Clock()
    fired: list[str] = []

    def fire(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        fired.append(key)

    deadlines = Deadlines(clock, fire)
    deadlines.set("bad", 1.0)
    deadlines.set("good", 1.0)
    deadlines.set("later", 2.0)
    with capturedLogs() as events:
        clock.advance(5)
    assert fired == ["good", "later"]
    assert any("log_failure" in e for e in events)


def test_stop_drops_everything() -> None:
    """stop() (service stop) cancels the reactor timer and every deadline."""
    clock, deadlines, fired = _deadlines()
    deadlines.set("a", 1.0)
    deadlines.stop()
    clock.advance(5)
    assert fired == [] and len(deadlines) == 0
    assert clock.getDelayedCalls() == []


def test_gap_batches_close_deadlines_into_one_firing() -> None:
    """With a gap, the first deadline fires on time and the ones close after
    it wait for the gap to pass, then fire together (one DelayedCall)."""
    clock = Clock()
    fired: list[tuple[float, str]] = []
    deadlines = Deadlines(
        clock, lambda key: fired.append((clock.seconds(), key)), gap=0.01
    )
    for n in range(5):
        deadlines.set(f"k{n}", 1.0 + n * 0.002)
    deadlines.set("late", 2.0)
    clock.advance(1.0)
    assert fired == [(1.0, "k0")]
    clock.advance(0.01)
    assert [key for _, key in fired] == ["k0", "k1", "k2", "k3", "k4"]
    assert fired[-1][0] == 1.01
    clock.advance(0.99)
    assert fired[-1] == (2.0, "late")
    assert clock.getDelayedCalls() == []
