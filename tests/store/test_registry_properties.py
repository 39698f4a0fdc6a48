"""Whatever the gateway writes, in whatever order, a restart reads back what
the running registry held: devices and their AOR index, bindings, pending
messages in order. Nothing the registry answered from memory is lost on disk,
nothing deleted comes back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.store import Binding, Device, PendingMessage, Registry, SQLitePersister

AORS = ("sip:a@example.com", "sip:b@example.com", "sip:c@example.com")
TOKENS = ("aa" * 32, "bb" * 32, "cc" * 32)
DEVICES = ("dev-1", "dev-2", "dev-3")


class _InlineReactor:
    def callFromThread(self, f: object, *args: object) -> None:
        raise AssertionError("inline persister must not call back from a thread")


def _registry(path: Path, clock: Clock) -> Registry:
    persister = SQLitePersister(path, _InlineReactor(), threaded=False)  # type: ignore[arg-type]
    registry = Registry(persister, clock)
    registry.startService()
    return registry


_token = st.sampled_from((None, *TOKENS))
_OPS = st.one_of(
    st.builds(
        lambda d, aors, voip, alert, seen: (
            "put_device",
            Device(d, tuple(aors), voip, alert, "com.x", last_seen=seen),
        ),
        st.sampled_from(DEVICES),
        st.lists(st.sampled_from(AORS), max_size=2, unique=True),
        _token,
        _token,
        st.floats(0, 1e6),
    ),
    st.tuples(st.just("delete_device"), st.sampled_from(DEVICES)),
    st.tuples(st.just("remove_token"), st.sampled_from(TOKENS)),
    st.builds(
        lambda aor, provider, prid, expires: (
            "put_binding",
            Binding(aor, provider, prid, "T.com.x.voip", expires),
        ),
        st.sampled_from(AORS),
        st.sampled_from(("apns", "lpc")),
        st.sampled_from((*TOKENS, *DEVICES)),
        st.floats(1, 100),
    ),
    st.builds(
        lambda aor, provider, prid: ("remove_binding", (aor, provider, prid)),
        st.sampled_from(AORS),
        st.sampled_from(("apns", "lpc")),
        st.sampled_from((*TOKENS, *DEVICES)),
    ),
    st.builds(
        lambda n, d, expires: (
            "add_message",
            PendingMessage(f"m{n}", d, f"body {n}", "+49", None, float(n), expires),
        ),
        st.integers(0, 5),
        st.sampled_from(DEVICES),
        st.floats(1, 100),
    ),
    st.tuples(
        st.just("ack_message"),
        st.sampled_from(DEVICES),
        st.builds("m{}".format, st.integers(0, 5)),
    ),
    st.tuples(st.just("purge_expired"), st.floats(0, 100)),
    st.just(("restart",)),
)


def _state(r: Registry) -> Any:
    """What the gateway reads, in the order it reads it (ring order, replay)."""
    return (
        sorted(r.devices(), key=lambda d: d.device_id),
        {aor: r.devices_for_aor(aor) for aor in AORS},
        {aor: r.bindings_for_aor(aor, 0) for aor in AORS},
        {d: r.pending_messages(d, 0) for d in DEVICES},
    )


@settings(max_examples=200)
@given(st.lists(_OPS, max_size=25))
def test_a_restart_reads_back_what_was_held(ops: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db" / "voipgw.sqlite3"
        r = _registry(db, clock)
        for name, *args in [*ops, ("restart",)]:
            if name == "restart":
                held = _state(r)
                r.stopService()
                r = _registry(db, clock)
                assert _state(r) == held
            else:
                getattr(r, name)(*args)
        r.stopService()
