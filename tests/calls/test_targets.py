"""Target resolution: one target per app install (docs/calls-notes.md)."""

from __future__ import annotations

from gw_front import AOR, make_front, request
from twisted.internet.task import Clock

from gateway.store import Binding, Device, MemoryPersister, Registry
from gateway.targets import apns_target_id, resolve_targets

T1, T2 = "a1" * 32, "b2" * 32


def _registry() -> Registry:
    registry = Registry(MemoryPersister(), Clock())
    registry.load()
    return registry


def test_apns_binding_for_a_devices_token_adds_no_target() -> None:
    """A phone whose app both says hello (voip token) and REGISTERs the same
    token (RFC 8599) is one target; another token's binding is its own."""
    r = _registry()
    r.put_device(Device("iphone", (AOR,), T1, None, "com.x", last_seen=5))
    r.put_binding(Binding(AOR, "apns", T1.upper(), "TEAM.com.x.voip", 100.0))
    r.put_binding(Binding(AOR, "apns", T2, "TEAM.com.x.voip", 100.0))
    assert list(resolve_targets(r, 0, AOR)) == ["iphone", apns_target_id(T2)]


def test_of_records_sharing_a_token_the_last_seen_rings() -> None:
    """A reinstall that kept its token: the stale record is not rung; records
    without a token, or with their own, all are, in registration order."""
    r = _registry()
    r.put_device(Device("new", (AOR,), T1, None, last_seen=50))
    r.put_device(Device("plain", (AOR,), None, None, last_seen=1))
    r.put_device(Device("old", (AOR,), T1, None, last_seen=10))
    r.put_device(Device("other", (AOR,), T2, None, last_seen=1))
    assert list(resolve_targets(r, 0, AOR)) == ["new", "plain", "other"]


def test_lpc_binding_does_not_bring_back_a_stale_record() -> None:
    """An lpc binding naming the stale record of a token adds no target; one
    naming a device of its own token does."""
    r = _registry()
    r.put_device(Device("new", (AOR,), T1, None, last_seen=50))
    r.put_device(Device("old", (AOR,), T1, None, last_seen=10))
    r.put_device(Device("desk", ("sip:other@example.com",), T2, None))
    r.put_binding(Binding(AOR, "lpc", "old", "", 100.0))
    r.put_binding(Binding(AOR, "lpc", "desk", "", 100.0))
    r.put_binding(Binding(AOR, "apns", T2, "TEAM.com.x.voip", 100.0))
    assert list(resolve_targets(r, 0, AOR)) == ["new", "desk"]


def test_one_voip_push_when_hello_and_register_share_a_token() -> None:
    """End to end through the SIP front: the offline phone gets one push."""
    front = make_front()
    token = "aa" * 32  # make_front's "phone"
    contact = (
        f"<sip:bob@10.0.0.1;pn-provider=apns;pn-prid={token};pn-param=T.com.x.voip>"
    )
    front.send(request("REGISTER", headers=f"Contact: {contact}\r\n"))
    assert front.statuses() == [200]
    front.send(request("INVITE", branch="z9hG4bK-2", call_id="c2"))
    assert [n.device_token for n, _ in front.apns.pushes] == [token]
