"""The call state machine against calls.md, with fake delivery paths."""

from __future__ import annotations

import pytest

from gateway.calls.machine import (
    PUSH_FAILED_REASON,
    RATE_LIMITED_REASON,
    Call,
    CallInfo,
    CancelDelivered,
    Cancelled,
    DeviceReport,
    Final,
    LocalAcked,
    LocalFailed,
    PushResult,
    Resumed,
    Ringing,
    RingTimeout,
    SendCall,
    SendCancel,
    SendVoipPush,
    Target,
)

INFO = CallInfo(
    call_id="6f1c2b9e-0000-4000-8000-000000000001",
    to="sip:bob@example.com",
    caller_handle="+4930123",
    caller_display_name="Alice",
)


def _call(*targets: Target, policy: str = "all") -> tuple[Call, list[object]]:
    call = Call(INFO, list(targets), now=0.0, decline_policy=policy, resume_window=60)
    return call, list(call.start())


ONLINE = Target("phone", online=True, voip_token="aa" * 32, alert_token="bb" * 32)
OFFLINE = Target("ipad", online=False, voip_token="cc" * 32, alert_token="dd" * 32)
NO_TOKEN = Target("mac", online=False)


def test_online_device_gets_call_frame_and_ack_rings() -> None:
    """Open session: call frame; its ack means ringing, which sends 180 once."""
    call, actions = _call(ONLINE)
    assert actions == [SendCall("phone")]
    assert call.handle(LocalAcked("phone"), 0.1) == [Ringing()]
    assert call.handle(DeviceReport("phone", "ringing"), 0.2) == []
    assert call.push_status() == "local;acked"


def test_offline_device_gets_voip_push_and_200_rings() -> None:
    """No session: a VoIP push; APNs 200 counts as ringing."""
    call, actions = _call(OFFLINE)
    assert actions == [SendVoipPush("ipad", "cc" * 32)]
    assert call.push_status() == "apns;pending"
    assert call.handle(PushResult("ipad", "accepted"), 0.3) == [Ringing()]
    assert call.push_status() == "apns;accepted"


def test_ack_timeout_falls_back_to_apns_once() -> None:
    """No ack in time: APNs; a second failure never causes a second push."""
    call, _ = _call(ONLINE)
    assert call.handle(LocalFailed("phone", "ack_timeout"), 3.0) == [
        SendVoipPush("phone", "aa" * 32)
    ]
    assert call.handle(PushResult("phone", "accepted"), 3.1) == [Ringing()]
    # The woken app connects: the call is replayed, its frame fails: no push.
    assert call.handle(Resumed("phone"), 4.0) == [SendCall("phone")]
    assert call.handle(LocalFailed("phone", "session_died"), 5.0) == []


def test_a_device_that_spoke_of_the_call_gets_the_cancel() -> None:
    """It said ringing but its ack never came: at the end it is still told
    (found by the end-to-end property test: the phone was left ringing)."""
    call, _ = _call(ONLINE)
    assert call.handle(DeviceReport("phone", "ringing"), 0.5) == [Ringing()]
    assert call.handle(LocalFailed("phone", "ack_timeout", unacked=True), 3.0) == []
    assert call.handle(RingTimeout(), 30.0) == [
        Final(480),
        SendCancel("phone", "unanswered", True, "bb" * 32),
    ]


def test_a_frame_unacked_on_a_live_session_is_owed_the_cancel() -> None:
    """The call frame went out but no ack came in time, then every path
    failed: the 480, and a call_cancel in case the device shows the call."""
    call, _ = _call(ONLINE)
    call.handle(LocalFailed("phone", "ack_timeout", unacked=True), 3.0)
    assert call.handle(PushResult("phone", "rejected", "Unregistered"), 3.2) == [
        Final(480, PUSH_FAILED_REASON),
        SendCancel("phone", "failed", False, "bb" * 32),
    ]
    # A frame that never went out (no session) is owed nothing.
    call, _ = _call(ONLINE)
    call.handle(LocalFailed("phone", "no_session"), 0.0)
    assert call.handle(PushResult("phone", "rejected", "Unregistered"), 0.2) == [
        Final(480, PUSH_FAILED_REASON)
    ]


def test_no_device_reachable_is_480_push_failed() -> None:
    """No session and no token anywhere: 480 with the Push failed Reason."""
    call, actions = _call(NO_TOKEN)
    assert actions == [Final(480, PUSH_FAILED_REASON)]
    assert call.outcome == "unreachable"
    assert call.push_status() == "none"


def test_all_paths_fail_is_480_with_statuses() -> None:
    """Every device's paths fail: 480, and X-Push-Status says why per device."""
    call, _ = _call(ONLINE, OFFLINE)
    assert call.handle(PushResult("ipad", "rejected", "BadDeviceToken"), 0.2) == []
    call.handle(LocalFailed("phone", "ack_timeout"), 3.0)
    actions = call.handle(PushResult("phone", "failed", "InternalServerError"), 3.5)
    assert actions == [Final(480, PUSH_FAILED_REASON)]
    assert call.push_status() == (
        "apns;failed=InternalServerError,apns;rejected=BadDeviceToken"
    )


def test_rate_limited_push_is_486() -> None:
    """A push refused by the rate limit: 486 with its Reason, no push."""
    call, _ = _call(OFFLINE)
    assert call.handle(PushResult("ipad", "rate_limited"), 0.0) == [
        Final(486, RATE_LIMITED_REASON)
    ]
    assert call.push_status() == "apns;rate_limited"


def test_ring_timeout_480_cancels_unanswered_with_missed_alerts() -> None:
    """Ring timeout: 480, call_cancel unanswered, missed-call alert for told devices."""
    call, _ = _call(ONLINE, OFFLINE, NO_TOKEN)
    call.handle(LocalAcked("phone"), 0.1)
    call.handle(PushResult("ipad", "accepted"), 0.2)
    assert call.handle(RingTimeout(), 30.0) == [
        Final(480),
        SendCancel("phone", "unanswered", True, "bb" * 32),
        SendCancel("ipad", "unanswered", True, "dd" * 32),
    ]
    assert call.handle(RingTimeout(), 31.0) == []
    assert call.handle(Cancelled("remote_ended"), 31.0) == []


@pytest.mark.parametrize(
    ("reason", "missed"),
    [
        ("remote_ended", True),
        ("answered_elsewhere", False),
        ("declined_elsewhere", False),
    ],
)
def test_cancel_is_487_and_tells_devices(reason: str, missed: bool) -> None:
    """CANCEL: 487 and call_cancel with the mapped reason; only remote_ended is missed."""
    call, _ = _call(ONLINE, OFFLINE)
    call.handle(LocalAcked("phone"), 0.1)
    actions = call.handle(Cancelled(reason), 1.0)
    assert actions == [
        Final(487),
        SendCancel("phone", reason, missed, "bb" * 32),
        SendCancel("ipad", reason, False, "dd" * 32),  # pushed, not yet told
    ]


def test_push_accepted_after_cancel_gets_cancel_and_missed_alert() -> None:
    """The caller hung up while the push was in flight: when APNs accepts it,
    the device is owed the cancel and, the call being missed, the alert."""
    call, _ = _call(OFFLINE)
    assert call.handle(Cancelled("remote_ended"), 0.5) == [
        Final(487),
        SendCancel("ipad", "remote_ended", False, "dd" * 32),  # not told yet
    ]
    assert call.handle(PushResult("ipad", "accepted"), 0.6) == [
        SendCancel("ipad", "remote_ended", True, "dd" * 32)
    ]


def test_push_accepted_after_answered_elsewhere_is_not_missed() -> None:
    """Answered elsewhere: the late push's device gets the cancel, no alert."""
    call, _ = _call(OFFLINE)
    call.handle(Cancelled("answered_elsewhere"), 0.5)
    assert call.handle(PushResult("ipad", "accepted"), 0.6) == [
        SendCancel("ipad", "answered_elsewhere", False, "dd" * 32)
    ]


def test_decline_policy_all_needs_every_device() -> None:
    """decline_policy all (default): 603 once every live device declined."""
    call, _ = _call(ONLINE, OFFLINE)
    call.handle(LocalAcked("phone"), 0.1)
    call.handle(PushResult("ipad", "accepted"), 0.2)
    assert call.handle(DeviceReport("phone", "declined"), 1.0) == []
    assert call.handle(DeviceReport("ipad", "declined"), 2.0) == [Final(603)]
    assert call.outcome == "declined"


def test_decline_policy_all_ignores_dead_devices() -> None:
    """A device with no path left does not block the 603."""
    call, _ = _call(ONLINE, NO_TOKEN)
    call.handle(LocalAcked("phone"), 0.1)
    assert call.handle(DeviceReport("phone", "declined"), 1.0) == [Final(603)]


def test_decline_policy_any_ends_for_everyone() -> None:
    """decline_policy any: one decline is 603 and declined_elsewhere to the rest."""
    call, _ = _call(ONLINE, OFFLINE, policy="any")
    call.handle(LocalAcked("phone"), 0.1)
    call.handle(PushResult("ipad", "accepted"), 0.2)
    assert call.handle(DeviceReport("phone", "declined"), 1.0) == [
        Final(603),
        SendCancel("ipad", "declined_elsewhere", False, "dd" * 32),
    ]


def test_answered_cancels_other_devices_and_no_missed_alert() -> None:
    """answered: the others get answered_elsewhere; the end is not a missed call."""
    call, _ = _call(ONLINE, OFFLINE)
    call.handle(LocalAcked("phone"), 0.1)
    call.handle(PushResult("ipad", "accepted"), 0.2)
    assert call.handle(DeviceReport("phone", "answered"), 1.0) == [
        SendCancel("ipad", "answered_elsewhere", False, "dd" * 32)
    ]
    assert call.handle(Cancelled("remote_ended"), 2.0) == [Final(487)]


def test_device_failed_report_counts_as_unreachable() -> None:
    """call_event failed from the only device: 480 push failed."""
    call, _ = _call(ONLINE)
    call.handle(LocalAcked("phone"), 0.1)
    assert call.handle(DeviceReport("phone", "failed"), 0.2) == [
        Final(480, PUSH_FAILED_REASON),
        SendCancel("phone", "failed", False, "bb" * 32),
    ]


def test_resume_replays_ringing_call_and_recent_cancel() -> None:
    """A woken app gets the ringing call, later the cancel within the window only."""
    call, _ = _call(OFFLINE)
    call.handle(PushResult("ipad", "accepted"), 1.0)
    assert call.handle(Resumed("ipad"), 2.0) == [SendCall("ipad")]
    call.handle(LocalAcked("ipad"), 2.1)
    call.handle(Cancelled("remote_ended"), 5.0)
    # The cancel frame was not acked (app went away); it reconnects:
    assert call.handle(Resumed("ipad"), 30.0) == [
        SendCancel("ipad", "remote_ended", False, None)
    ]
    assert call.handle(Resumed("ipad"), 61.5) == []  # past the resume window
    call2, _ = _call(OFFLINE)
    call2.handle(PushResult("ipad", "accepted"), 1.0)
    call2.handle(Cancelled("remote_ended"), 2.0)
    call2.handle(CancelDelivered("ipad"), 2.5)
    assert call2.handle(Resumed("ipad"), 3.0) == []


def test_unknown_devices_and_late_events_are_ignored() -> None:
    """Events for devices not in the call, late acks and bad events change nothing."""
    call, _ = _call(ONLINE)
    assert call.handle(LocalAcked("stranger"), 0.1) == []
    assert call.handle(DeviceReport("phone", "dancing"), 0.1) == []
    assert call.handle(PushResult("phone", "accepted"), 0.1) == []  # never pushed
    call.handle(LocalAcked("phone"), 0.2)
    assert call.handle(LocalAcked("phone"), 0.3) == []
    assert call.handle(LocalFailed("phone", "ack_timeout"), 3.0) == []


def test_bad_policy_refused() -> None:
    """A decline policy other than all/any is a programming error."""
    with pytest.raises(ValueError, match="decline_policy"):
        Call(INFO, [], now=0, decline_policy="some")
