"""Fake delivery paths (hub, APNs) for call and message tests."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from gateway.apns import (
    ApnsNotification,
    Delivered,
    Failed,
    Outcome,
    Retryable,
    TokenRejected,
)
from gateway.localpush.frames import FrameSpec
from gateway.localpush.hub import NO_SESSION, DeliveryResult


class FakeHub:
    def __init__(self) -> None:
        self.online: set[str] = set()
        self.sent: list[tuple[str, FrameSpec, Deferred[DeliveryResult]]] = []

    def is_online(self, device_id: str) -> bool:
        return device_id in self.online

    def deliver(
        self, device_id: str, spec: FrameSpec, ack_timeout: float | None = None
    ) -> Deferred[DeliveryResult]:
        d: Deferred[DeliveryResult] = Deferred()
        if device_id not in self.online:
            d.callback(DeliveryResult(delivered=False, reason=NO_SESSION))
        self.sent.append((device_id, spec, d))
        return d

    def ack(
        self, index: int, delivered: bool = True, reason: str | None = None
    ) -> None:
        self.sent[index][2].callback(DeliveryResult(delivered=delivered, reason=reason))


class FakeApns:
    def __init__(self) -> None:
        self.pushes: list[tuple[ApnsNotification, Deferred[Outcome]]] = []

    def push(self, notification: ApnsNotification) -> Deferred[Outcome]:
        d: Deferred[Outcome] = Deferred()
        self.pushes.append((notification, d))
        return d

    def answer(self, index: int, outcome: Outcome) -> None:
        self.pushes[index][1].callback(outcome)


# One of each class of APNs answer (for property tests).
OUTCOMES = (
    Delivered("apns-1"),
    TokenRejected("Unregistered"),
    Retryable("ServiceUnavailable", status=503),
    Failed(400, "BadTopic"),
)
