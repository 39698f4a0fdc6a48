"""guard: observers' bugs are logged by their caller and swallowed."""

from __future__ import annotations

from twisted.logger import Logger, capturedLogs

from gateway.observers import guard


class Owner:
    log = Logger()
    lookups = 0

    def __getattribute__(self, name: str) -> object:
        if name == "log":
            type(self).lookups += 1
        return object.__getattribute__(self, name)


def test_a_passing_callback_returns_its_value_without_touching_the_log() -> None:
    """No ``Logger`` is bound (``self.log`` makes one each time) unless
    something failed."""
    owner = Owner()
    Owner.lookups = 0
    assert guard(owner, "add", lambda a, b: a + b, 2, 3) == 5
    assert Owner.lookups == 0


def test_a_failing_callback_is_logged_in_the_owners_namespace() -> None:
    """The failure and its traceback go to the owner's log; None comes back."""

    def broken() -> None:
        raise ValueError("observer bug")

    owner = Owner()
    with capturedLogs() as events:
        assert guard(owner, "broken", broken) is None
    (event,) = events
    assert event["what"] == "broken"
    assert event["log_namespace"] == f"{__name__}.Owner"
    assert event["log_source"] is owner
    assert event["log_failure"].check(ValueError)
