"""SessionTimers: many owners' deadlines on one reactor timer, fired exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gateway.localpush.timers import SessionTimers


class Owner:
    """Records when its deadline fired; may re-arm or raise."""

    def __init__(self, clock: Clock, name: str = "") -> None:
        self.clock = clock
        self.name = name
        self.fired: list[float] = []
        self.then: list[float] = []  # deadlines to set from on_deadline
        self.timers: SessionTimers | None = None
        self.fail = False

    def on_deadline(self) -> None:
        self.fired.append(self.clock.seconds())
        if self.then and self.timers is not None:
            self.timers.set(self, self.then.pop(0))
        if self.fail:
            raise RuntimeError("owner bug")


def test_fires_each_deadline_once_when_due() -> None:
    """Deadlines fire at their time, in order, each once; one reactor timer."""
    clock = Clock()
    timers = SessionTimers(clock)
    a, b, c = Owner(clock), Owner(clock), Owner(clock)
    timers.set(b, 5.0)
    timers.set(a, 2.5)
    timers.set(c, 5.0)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(2.4)
    assert a.fired == []
    clock.advance(0.1)
    assert a.fired == [2.5]
    clock.advance(2.5)
    assert (b.fired, c.fired) == ([5.0], [5.0])
    clock.advance(100)
    assert (a.fired, b.fired, c.fired) == ([2.5], [5.0], [5.0])
    assert len(timers) == 0
    assert clock.getDelayedCalls() == []


def test_cancel() -> None:
    """A cancelled deadline never fires; cancelling twice or a fired one is a
    no-op; with nothing left, no reactor timer stays scheduled."""
    clock = Clock()
    timers = SessionTimers(clock)
    a, b = Owner(clock), Owner(clock)
    ta = timers.set(a, 1.0)
    tb = timers.set(b, 2.0)
    timers.cancel(ta)
    timers.cancel(ta)
    clock.advance(1.5)
    assert a.fired == []
    clock.advance(0.5)
    assert b.fired == [2.0]
    timers.cancel(tb)
    t = timers.set(a, 10.0)
    timers.cancel(t)
    assert clock.getDelayedCalls() == []
    assert len(timers) == 0


def test_earlier_deadline_rearms() -> None:
    """A deadline earlier than the armed one moves the reactor timer forward."""
    clock = Clock()
    timers = SessionTimers(clock)
    late, early = Owner(clock), Owner(clock)
    timers.set(late, 60.0)
    timers.set(early, 3.0)
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == 3.0
    clock.advance(3.0)
    assert early.fired == [3.0]
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == 60.0


def test_rearm_from_handler_in_the_past_waits_for_next_run() -> None:
    """An owner setting a deadline already due from on_deadline is fired by a
    new reactor timer (task.Clock runs it within the same advance), not in a
    loop inside the run that called it."""
    clock = Clock()
    timers = SessionTimers(clock)
    owner = Owner(clock)
    owner.timers = timers
    owner.then = [0.0, 7.0]
    timers.set(owner, 1.0)
    runs = 0
    run = timers._run

    def counting_run() -> None:
        nonlocal runs
        runs += 1
        run()

    timers._run = counting_run  # type: ignore[method-assign]
    timers._arm(1.0)
    clock.advance(1.0)
    assert owner.fired == [1.0, 1.0]
    assert runs == 2
    clock.advance(6.0)
    assert owner.fired == [1.0, 1.0, 7.0]


def test_failing_owner_does_not_stop_the_others() -> None:
    """An exception from one owner is logged; owners due with it still fire."""
    clock = Clock()
    timers = SessionTimers(clock)
    bad, good = Owner(clock), Owner(clock)
    bad.fail = True
    timers.set(bad, 1.0)
    timers.set(good, 1.0)
    with capturedLogs() as events:
        clock.advance(1.0)
    assert good.fired == [1.0]
    assert any(e.get("log_failure") is not None for e in events)


def test_heap_compacted_after_many_cancels() -> None:
    """Moving deadlines leaves stale entries; they are dropped in bulk, and the
    live deadlines still fire."""
    clock = Clock()
    timers = SessionTimers(clock)
    owners = [Owner(clock, str(i)) for i in range(100)]
    tokens = [timers.set(o, 100.0 + i) for i, o in enumerate(owners)]
    for _ in range(50):
        for i, o in enumerate(owners):
            timers.cancel(tokens[i])
            tokens[i] = timers.set(o, 100.0 + i)
    assert len(timers._heap) <= 2 * len(owners) + SessionTimers._SLACK
    clock.advance(100)
    for _ in range(100):
        clock.advance(1)
    assert [o.fired for o in owners] == [[100.0 + i] for i in range(100)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "cancel", "advance"]),
            st.integers(0, 4),
            st.floats(0, 20, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_matches_one_delayed_call_each(ops: list[tuple[str, int, float]]) -> None:
    """Any mix of set/cancel/advance fires what a DelayedCall per owner would."""
    clock, model_clock = Clock(), Clock()
    timers = SessionTimers(clock)
    owners = [Owner(clock, str(i)) for i in range(5)]
    models = [Owner(model_clock, str(i)) for i in range(5)]
    tokens: dict[int, int] = {}
    calls: dict[int, object] = {}
    for op, i, x in ops:
        if op == "set" and i not in tokens:
            at = clock.seconds() + x
            tokens[i] = timers.set(owners[i], at)
            calls[i] = model_clock.callLater(x, models[i].on_deadline)
        elif op == "cancel" and i in tokens:
            timers.cancel(tokens.pop(i))
            call = calls.pop(i)
            if call.active():  # type: ignore[attr-defined]
                call.cancel()  # type: ignore[attr-defined]
        elif op == "advance":
            clock.advance(x)
            model_clock.advance(x)
        for j in list(tokens):  # fired (the model says): free to set again
            if not calls[j].active():  # type: ignore[attr-defined]
                tokens.pop(j)
                calls.pop(j)
    clock.advance(100)
    model_clock.advance(100)
    assert [o.fired for o in owners] == [m.fired for m in models]


def test_far_deadlines_on_the_grid() -> None:
    """With grid_s, a deadline beyond exact_within_s fires at the next grid
    point (never before it is due); a near one fires exactly."""
    clock = Clock()
    clock.advance(1000.1)
    timers = SessionTimers(clock, grid_s=0.25, exact_within_s=5.0)
    far, near = Owner(clock), Owner(clock)
    timers.set(far, 1075.1)
    timers.set(near, 1003.1)
    clock.advance(3.0)
    assert near.fired == [1003.1]
    clock.advance(1075.1 - clock.seconds())
    assert far.fired == []
    clock.advance(1075.25 - clock.seconds())
    assert far.fired == [1075.25]


def test_many_far_deadlines_share_a_wakeup() -> None:
    """Idle deadlines spread over a quarter second fire in one reactor run."""
    clock = Clock()
    timers = SessionTimers(clock, grid_s=0.25)
    owners = [Owner(clock) for _ in range(50)]
    for i, owner in enumerate(owners):
        timers.set(owner, 75.0 + i * 0.004)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(75.25)
    assert all(o.fired == [75.25] for o in owners)
