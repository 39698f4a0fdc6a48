"""Messages: stored before delivery, framed where online, alert pushed where not."""

from __future__ import annotations

import json

import pytest
from gw_fakes import FakeApns, FakeHub
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gateway.devicetoken import DeviceClaims
from gateway.directory import RegistryDirectory
from gateway.localpush.frames import Hello, MessageFrame
from gateway.localpush.hub import ACK_TIMEOUT, SessionInfo
from gateway.messages import MessageRequest, MessageResult, Messenger
from gateway.store import Binding, Device, MemoryPersister, Registry

AOR = "sip:bob@example.com"


class _MessageRecorder:
    """A ``MessageObserver`` that records, and raises when told to."""

    def __init__(self, raises: bool = False) -> None:
        self.raises = raises
        self.heard: list[tuple[str, str | None, tuple[str, ...] | None]] = []

    def _heard(
        self, what: str, message_id: str | None, device_ids: tuple[str, ...] | None
    ) -> None:
        self.heard.append((what, message_id, device_ids))
        if self.raises:
            raise RuntimeError("observer bug")

    def message_stored(self, message_id: str, device_ids: tuple[str, ...]) -> None:
        self._heard("stored", message_id, device_ids)

    def message_failed(self, message_id: str) -> None:
        self._heard("failed", message_id, None)

    def message_no_devices(self) -> None:
        self._heard("no_devices", None, None)


class MessengerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = Registry(MemoryPersister(), self.clock)
        self.registry.load()
        self.registry.put_device(Device("phone", (AOR,), "aa" * 32, "bb" * 32, "com.x"))
        self.registry.put_device(Device("ipad", (AOR,), None, "dd" * 32, "com.x"))
        self.hub, self.apns = FakeHub(), FakeApns()
        self.messenger = Messenger(
            self.clock,
            self.registry,
            self.hub,
            self.apns,
            ttl_s=600,
            ack_timeout_s=3,
            bundle_id="com.x",
        )
        self.request = MessageRequest(
            sender_handle="+4930123", sender_display_name="Alice", body="hi", aor=AOR
        )

    def _send(self, request: MessageRequest) -> MessageResult:
        d = self.messenger.send(request)
        assert d is not None
        return self.successResultOf(d)

    def test_stored_then_framed_or_alerted(self) -> None:
        """Stored for every device; online gets the frame, offline an alert push."""
        self.hub.online.add("phone")
        result = self._send(self.request)
        assert result.device_ids == ("phone", "ipad")
        for device_id in ("phone", "ipad"):
            [m] = self.registry.pending_messages(device_id, now=self.clock.seconds())
            assert (m.message_id, m.body, m.expires_at) == (
                result.message_id,
                "hi",
                1600,
            )
        [(device_id, frame, _)] = self.hub.sent
        assert device_id == "phone"
        assert isinstance(frame, MessageFrame)
        assert frame.message_id == result.message_id
        [(alert, _)] = self.apns.pushes
        assert alert.device_token == "dd" * 32
        payload = json.loads(alert.payload)
        assert payload["aps"]["alert"]["loc-key"] == "INCOMING_MESSAGE"
        assert payload["aps"]["alert"]["body"] == "hi"

    def test_observers_hear_stored_failed_and_no_devices(self) -> None:
        """Observers hear each send's end; one that raises is logged and the
        caller still gets its result (or failure) unchanged."""
        broken, recorder = _MessageRecorder(raises=True), _MessageRecorder()
        self.messenger.add_observer(broken)
        self.messenger.add_observer(recorder)
        with capturedLogs() as events:
            result = self._send(self.request)
            assert self.messenger.send(MessageRequest("x", "y", aor="sip:no@x")) is None
            self.registry.add_message = lambda m: fail(RuntimeError("disk"))  # type: ignore[method-assign]
            d = self.messenger.send(MessageRequest("x", "y", message_id="m2", aor=AOR))
            assert d is not None
            self.failureResultOf(d)
        expected = [
            ("stored", result.message_id, result.device_ids),
            ("no_devices", None, None),
            ("failed", "m2", None),
        ]
        assert recorder.heard == broken.heard == expected
        failures = [e for e in events if "log_failure" in e]
        assert [e["what"] for e in failures] == [
            "message_stored",
            "message_no_devices",
            "message_failed",
        ]
        assert len(self.flushLoggedErrors(RuntimeError)) == 3  # the observer's

    def test_unacked_frame_falls_back_to_alert(self) -> None:
        """No ack in time: the message stays stored and an alert goes out."""
        self.hub.online.add("phone")
        self._send(MessageRequest("x", "yo", device_ids=("phone",)))
        self.hub.ack(0, delivered=False, reason=ACK_TIMEOUT)
        assert [p.device_token for p, _ in self.apns.pushes] == ["bb" * 32]
        assert len(self.registry.pending_messages("phone", self.clock.seconds())) == 1

    def test_unknown_aor_is_none(self) -> None:
        """No devices: None, so SIP answers 404."""
        assert self.messenger.send(MessageRequest("x", "y", aor="sip:no@x")) is None

    def test_register_bound_alert_token_gets_push_only(self) -> None:
        """An APNs binding without .voip is an alert token: pushed, not stored."""
        aor = "sip:carol@example.com"
        self.registry.put_binding(Binding(aor, "apns", "ee" * 32, "TEAM.com.y", 1e9))
        self._send(MessageRequest("x", "y", aor=aor))
        [(alert, _)] = self.apns.pushes
        assert (alert.device_token, alert.topic) == ("ee" * 32, "com.y")


def _info(device_id: str, hello: Hello) -> SessionInfo:
    return SessionInfo(
        session_id="s1",
        device_id=device_id,
        hello=hello,
        claims=DeviceClaims(device_id=device_id, aors=("sip:a@x",), expires_at=9e9),
        connected_at=42.0,
    )


def test_directory_hello_updates_device_and_keeps_omitted_tokens() -> None:
    """hello writes AORs, tokens and metadata; omitted tokens keep their value."""
    registry = Registry(MemoryPersister(), Clock())
    registry.load()
    registry.put_device(Device("d1", ("sip:old@x",), "11" * 32, "22" * 32))
    directory = RegistryDirectory(registry)
    directory.device_hello(
        _info(
            "d1",
            Hello(
                device_id="d1",
                alert_token="33" * 32,
                topic="com.z",
                apns_env="sandbox",
                locale="de-DE",
                app_version="2.4.1",
            ),
        )
    )
    device = registry.get_device("d1")
    assert device == Device(
        "d1",
        ("sip:a@x",),
        "11" * 32,
        "33" * 32,
        "com.z",
        "sandbox",
        "de-DE",
        "2.4.1",
        42.0,
    )
    assert registry.devices_for_aor("sip:old@x") == []


@pytest.mark.parametrize("ack", [True, False])
def test_directory_messages_round_trip(ack: bool) -> None:
    """The hub sees the registry's pending messages; its acks remove them."""
    from gateway.store import PendingMessage

    registry = Registry(MemoryPersister(), Clock())
    registry.load()
    registry.add_message(PendingMessage("m1", "d1", "hi", "+49", "Alice", 1.0, 100.0))
    directory = RegistryDirectory(registry)
    [stored] = directory.pending_messages("d1", now=2.0)
    assert (stored.sender.handle, stored.sender.display_name) == ("+49", "Alice")
    if ack:
        directory.message_acked("d1", "m1")
    assert len(directory.pending_messages("d1", now=2.0)) == (0 if ack else 1)
