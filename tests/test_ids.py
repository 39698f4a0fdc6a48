"""Random identifiers from the pooled generator."""

from __future__ import annotations

import os
import uuid

import pytest

from gateway import ids
from gateway.apns import new_apns_id
from gateway.ids import new_uuid4
from gateway.localpush.session import random_id

# More than one pool's worth, so ids come from at least three refills.
_MANY = 3 * ids._POOL_BYTES // 16 + 7


def test_ids_are_canonical_random_version_4_uuids() -> None:
    """Each id parses back to itself as an RFC 4122 version 4 UUID, and no
    id repeats across pool refills."""
    made = [new_uuid4() for _ in range(_MANY)]
    assert len(set(made)) == len(made)
    for value in made:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == value


def test_every_random_bit_varies() -> None:
    """The 122 random bits are all used: none is stuck across many ids (the
    version and variant bits are the only fixed ones)."""
    seen_or, seen_and = 0, (1 << 128) - 1
    for _ in range(_MANY):
        n = uuid.UUID(new_uuid4()).int
        seen_or |= n
        seen_and &= n
    fixed = seen_and | ((1 << 128) - 1 ^ seen_or)
    version_and_variant = (0xF << 76) | (0x3 << 62)
    assert fixed == version_and_variant


def test_frame_session_call_and_apns_ids_share_the_generator() -> None:
    """One implementation serves every id the gateway makes."""
    assert random_id is new_uuid4
    assert new_apns_id is new_uuid4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    """After fork the child draws fresh bytes: it never hands out the ids
    the parent is about to hand out from the same pool."""
    new_uuid4()  # the pool is filled and part used
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write_end, "".join(new_uuid4() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = "".join(new_uuid4() for _ in range(4))
    assert len(child) == len(parent) == 4 * 36
    assert child != parent


def test_tags_are_64_random_bits_in_hex() -> None:
    """SIP To tags: 16 lower-case hex digits, none repeated across pool
    refills."""
    from gateway.ids import new_tag

    tags = [new_tag() for _ in range(_MANY)]
    assert len(set(tags)) == len(tags)
    assert all(len(t) == 16 and int(t, 16) >= 0 and t == t.lower() for t in tags)
