"""The API's handlers: calls, messages, devices, health, metrics, document.

Handlers get validated input (the request schemas are checked before they
run) and do the checks a schema cannot: unknown devices, a call id in use,
the custom-header byte budget. Calls and messages go through the same
dispatcher and messenger as SIP, so an API call behaves like an INVITE and a
DELETE like a CANCEL.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred

from gateway.aor import normalize_aor
from gateway.api._errors import ApiError
from gateway.api._health import ApnsProbe, Check, readiness
from gateway.api._resource import ApiRequest, Response, Route
from gateway.api._schema import SchemaError, compile_schema
from gateway.api._views import call_view, device_view
from gateway.calls.dispatcher import ActiveCall, CallRequest
from gateway.devicetoken import DEVICE_ID_RE
from gateway.messages import MessageRequest, MessageResult
from gateway.metrics import Metrics
from gateway.store import Device
from gateway.targets import resolve_targets

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["CANCEL_REASONS", "Api"]

CANCEL_REASONS = ("remote_ended", "answered_elsewhere", "declined_elsewhere")
# REGISTER-bound APNs tokens appear as "apns:<hash>" targets (gateway.targets).
_RESERVED_PREFIX = "apns:"


class _ApiCall:
    """The API's CallListener: its state is read from the call on demand."""

    def call_ringing(self, call: ActiveCall) -> None:
        """Nothing to do: GET shows it, webhooks report it."""

    def call_ended(self, call: ActiveCall) -> None:
        """Nothing to do: GET shows it, webhooks report it."""


_LISTENER = _ApiCall()


class Api:
    """Handlers bound to one gateway."""

    def __init__(
        self,
        gateway: Gateway,
        document: dict[str, Any],
        metrics: Metrics | None,
        probe: ApnsProbe | None,
    ) -> None:
        self._gw = gateway
        self._document = document
        self._check_aor = compile_schema({"$ref": "#/components/schemas/Aor"}, document)
        self._document_bytes = json.dumps(document, separators=(",", ":")).encode()
        self._metrics = metrics
        self._probe = probe

    def routes(self) -> list[Route]:
        """The route table (the OpenAPI test compares it with the document)."""
        return [
            Route("GET", "/healthz", self.healthz, auth=False),
            Route("GET", "/readyz", self.readyz, auth=False),
            Route("GET", "/metrics", self.metrics, auth=False),
            Route("GET", "/v1/openapi.json", self.openapi),
            Route("POST", "/v1/calls", self.create_call, body_schema="CallCreate"),
            Route("GET", "/v1/calls/{call_id}", self.get_call),
            Route("DELETE", "/v1/calls/{call_id}", self.cancel_call),
            Route(
                "POST", "/v1/messages", self.send_message, body_schema="MessageCreate"
            ),
            Route("GET", "/v1/devices", self.list_devices),
            Route(
                "PUT",
                "/v1/devices/{device_id}",
                self.put_device,
                body_schema="DevicePut",
            ),
            Route("GET", "/v1/devices/{device_id}", self.get_device),
            Route("DELETE", "/v1/devices/{device_id}", self.delete_device),
        ]

    # -- health and metadata ------------------------------------------------------

    def healthz(self, request: ApiRequest) -> Response:
        return Response(200, {"status": "ok"})

    def readyz(self, request: ApiRequest) -> Deferred[Response]:
        def answer(checks: dict[str, Check]) -> Response:
            ready = all(c.ok for c in checks.values())
            body = {
                "ready": ready,
                "checks": {k: attrs.asdict(c) for k, c in checks.items()},
            }
            return Response(200 if ready else 503, body)

        return readiness(self._gw, self._probe).addCallback(answer)

    def metrics(self, request: ApiRequest) -> Response:
        if self._metrics is None:
            return Response(200, raw=b"", content_type=CONTENT_TYPE_LATEST)
        data = generate_latest(self._metrics.registry)
        return Response(200, raw=data, content_type=CONTENT_TYPE_LATEST)

    def openapi(self, request: ApiRequest) -> Response:
        return Response(200, raw=self._document_bytes)

    # -- calls ----------------------------------------------------------------------

    def create_call(self, request: ApiRequest) -> Response:
        body = request.body
        dispatcher = self._gw.dispatcher
        assert dispatcher is not None
        device_ids = self._known_devices(body.get("device_ids"))
        to = normalize_aor(body["to"]) if "to" in body else self._first_aor(device_ids)
        headers = self._custom_headers(body.get("headers", {}))
        call_id = body.get("call_id")
        caller = body["caller"]
        call_request = CallRequest(
            aor=to,
            caller_handle=caller["handle"],
            caller_display_name=caller.get("display_name"),
            video=body.get("video", False),
            headers=headers,
            call_id=call_id.lower() if call_id else None,
            ring_timeout_s=body.get("ring_timeout_s"),
            device_ids=device_ids,
        )
        try:
            call = dispatcher.start(call_request, _LISTENER)
        except ValueError:
            raise ApiError(409, "conflict", "call_id is in use", "call_id") from None
        if call is None:
            raise ApiError(404, "no_devices", f"no device rings for {to}", "to")
        return Response(
            201,
            call_view(call),
            headers=(("Location", f"/v1/calls/{call.call_id}"),),
        )

    def get_call(self, request: ApiRequest) -> Response:
        return Response(200, call_view(self._call(request)))

    def cancel_call(self, request: ApiRequest) -> Response:
        values = request.query.get("reason", ["remote_ended"])
        reason = values[-1]
        if reason not in CANCEL_REASONS:
            raise ApiError(
                422,
                "invalid",
                "reason must be one of " + ", ".join(CANCEL_REASONS),
                "reason",
            )
        call = self._call(request)
        dispatcher = self._gw.dispatcher
        assert dispatcher is not None
        if not dispatcher.cancel(call.call_id, reason):
            raise ApiError(409, "call_ended", "the call has already ended")
        return Response(200, call_view(call))

    def _call(self, request: ApiRequest) -> ActiveCall:
        dispatcher = self._gw.dispatcher
        assert dispatcher is not None
        call_id = request.params["call_id"]
        call = dispatcher.get(call_id) or dispatcher.get(call_id.lower())
        if call is None:
            raise ApiError(404, "not_found", "no such call (or it ended long ago)")
        return call

    # -- messages ---------------------------------------------------------------------

    def send_message(self, request: ApiRequest) -> Deferred[Response]:
        body = request.body
        messenger = self._gw.messenger
        assert messenger is not None
        limit = self._gw.config.sip.max_message_body_bytes
        if len(body["body"].encode()) > limit:
            raise ApiError(
                422,
                "invalid",
                f"body is over {limit} bytes (sip.max_message_body_bytes)",
                "body",
            )
        device_ids = self._known_devices(body.get("device_ids"))
        sender = body["from"]
        message_id = body.get("message_id")
        d = messenger.send(
            MessageRequest(
                sender_handle=sender["handle"],
                sender_display_name=sender.get("display_name"),
                body=body["body"],
                aor=normalize_aor(body["to"]) if "to" in body else None,
                device_ids=device_ids,
                message_id=message_id.lower() if message_id else None,
            )
        )
        if d is None:
            raise ApiError(404, "no_devices", "no device for this message", "to")

        def accepted(result: MessageResult) -> Response:
            return Response(
                202,
                {
                    "message_id": result.message_id,
                    "device_ids": list(result.device_ids),
                },
            )

        return d.addCallback(accepted)

    # -- devices ----------------------------------------------------------------------

    def list_devices(self, request: ApiRequest) -> Response:
        values = request.query.get("aor")
        if not values:
            raise ApiError(422, "invalid", "the aor query parameter is required", "aor")
        try:
            self._check_aor(values[-1], None)
        except SchemaError as e:
            raise ApiError(422, "invalid", f"aor {e.message}", "aor") from None
        registry = self._gw.registry
        assert registry is not None
        now = self._gw.reactor.seconds()
        targets = resolve_targets(registry, now, normalize_aor(values[-1]))
        devices = [
            self._device_view(device)
            for device_id, device in sorted(targets.items())
            if device is not None and not device_id.startswith(_RESERVED_PREFIX)
        ]
        return Response(200, {"devices": devices})

    def put_device(self, request: ApiRequest) -> Deferred[Response]:
        device_id = request.params["device_id"]
        if not DEVICE_ID_RE.fullmatch(device_id) or device_id.startswith(
            _RESERVED_PREFIX
        ):
            raise ApiError(
                422,
                "invalid",
                "device_id must be 1 to 128 of A-Z a-z 0-9 . _ : - "
                f"and not start with {_RESERVED_PREFIX}",
                "device_id",
            )
        registry = self._gw.registry
        assert registry is not None
        body = request.body
        old = registry.get_device(device_id)
        aors = tuple(dict.fromkeys(normalize_aor(a) for a in body["aors"]))
        device = Device(
            device_id=device_id,
            aors=aors,
            voip_token=_token(body.get("voip_token")),
            alert_token=_token(body.get("alert_token")),
            topic=body.get("topic"),
            apns_env=body.get("apns_env", "production"),
            locale=body.get("locale"),
            app_version=body.get("app_version"),
            last_seen=old.last_seen if old is not None else 0.0,
        )
        status = 200 if old is not None else 201

        def stored(_: object) -> Response:
            return Response(status, self._device_view(device))

        return registry.put_device(device).addCallback(stored)

    def get_device(self, request: ApiRequest) -> Response:
        registry = self._gw.registry
        assert registry is not None
        device = registry.get_device(request.params["device_id"])
        if device is None:
            raise ApiError(404, "not_found", "no such device")
        return Response(200, self._device_view(device))

    def delete_device(self, request: ApiRequest) -> Deferred[Response]:
        registry = self._gw.registry
        assert registry is not None
        device_id = request.params["device_id"]
        if registry.get_device(device_id) is None:
            raise ApiError(404, "not_found", "no such device")

        def deleted(existed: bool) -> Response:
            if not existed:
                raise ApiError(404, "not_found", "no such device")
            return Response(204)

        return registry.delete_device(device_id).addCallback(deleted)

    # -- helpers ----------------------------------------------------------------------

    def _device_view(self, device: Device) -> dict[str, Any]:
        hub = self._gw.hub
        online = hub is not None and hub.is_online(device.device_id)
        return device_view(device, online)

    def _known_devices(self, ids: list[str] | None) -> tuple[str, ...] | None:
        """Explicit device ids, each known to the registry or online."""
        if ids is None:
            return None
        registry = self._gw.registry
        hub = self._gw.hub
        assert registry is not None
        for i, device_id in enumerate(ids):
            known = registry.get_device(device_id) is not None or (
                hub is not None and hub.is_online(device_id)
            )
            if not known:
                raise ApiError(
                    404,
                    "unknown_device",
                    f"unknown device {device_id}",
                    f"device_ids[{i}]",
                )
        return tuple(ids)

    def _custom_headers(self, given: dict[str, str]) -> tuple[tuple[str, str], ...]:
        """As SIP does: in order, while name + value bytes fit the budget
        (``calls.custom_headers_max_bytes``); the rest are dropped, and the
        call's ``headers`` shows what was kept."""
        budget = self._gw.config.calls.custom_headers_max_bytes
        kept: list[tuple[str, str]] = []
        for name, value in given.items():
            size = len(name.encode()) + len(value.encode())
            if size > budget:
                break
            budget -= size
            kept.append((name, value))
        return tuple(kept)

    def _first_aor(self, device_ids: tuple[str, ...] | None) -> str:
        registry = self._gw.registry
        assert registry is not None
        for device_id in device_ids or ():
            device = registry.get_device(device_id)
            if device is not None and device.aors:
                return device.aors[0]
        return ""


def _token(value: str | None) -> str | None:
    return value.lower() if value else None
