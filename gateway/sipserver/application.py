"""The SIP transaction user: what the gateway answers to each request.

calls.md "Requests": INVITE rings devices through the dispatcher, CANCEL
ends the call with the RFC 3326 Reason mapped to a ``call_cancel`` reason,
REGISTER stores RFC 8599 push bindings, MESSAGE stores and delivers a text
message, OPTIONS answers the core's health checks. Responses leave through a
``Responder`` (the transaction layer), so this module does no I/O and is
tested with plain objects.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.calls.dispatcher import ActiveCall, CallRequest, Dispatcher
from gateway.devicetoken import DEVICE_ID_RE
from gateway.ids import new_tag
from gateway.messages import MessageRequest, MessageResult, Messenger
from gateway.observers import guard
from gateway.sip import (
    NameAddr,
    Request,
    Response,
    SipUri,
    TransactionKey,
    build_response,
)
from gateway.sipserver.overload import OverloadGuard
from gateway.store import Binding, DeviceStore

__all__ = [
    "ALLOW",
    "NO_PUSH_STATUS",
    "RequestObserver",
    "Responder",
    "SipApplication",
    "SipSettings",
    "cancel_reason",
]

ALLOW = "INVITE, ACK, CANCEL, OPTIONS, REGISTER, MESSAGE"
ACCEPT = "application/sdp, text/plain"
MAX_REGISTER_EXPIRES = 86_400
DEFAULT_REGISTER_EXPIRES = 3600
_HEX = frozenset("0123456789abcdefABCDEF")
# calls.md: every response to an INVITE after 100 says how the devices were reached.
NO_PUSH_STATUS = ("X-Push-Status", "none")


class Responder(Protocol):
    """The transaction layer as the application sees it."""

    def respond(self, key: TransactionKey, response: Response) -> None:
        """Send a response through the request's server transaction."""

    def find_invite_for_cancel(self, cancel: Request) -> TransactionKey | None:
        """The INVITE server transaction a CANCEL matches (RFC 3261 9.2)."""


@attrs.frozen
class SipSettings:
    """The SIP settings the application needs (from ``[sip]`` and ``[calls]``)."""

    max_message_body_bytes: int = 4096
    custom_headers_max_bytes: int = 1024
    register_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    user_agent: str = "voipgw"

    @property
    def networks(
        self,
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(n, strict=False) for n in self.register_networks
        )


def cancel_reason(request: Request) -> str:
    """RFC 3326 Reason on a CANCEL -> the devices' ``call_cancel`` reason."""
    for reason in request.reasons():
        if reason.protocol.upper() != "SIP" or reason.cause is None:
            continue
        if reason.cause == 200:
            return "answered_elsewhere"
        if reason.cause in (600, 603):
            return "declined_elsewhere"
    return "remote_ended"


class _InviteListener:
    """Turns a call's progress into the INVITE's 180 and final response."""

    def __init__(
        self, app: SipApplication, key: TransactionKey, request: Request
    ) -> None:
        self.app = app
        self.key = key
        self.request = request
        self.to_tag = new_tag()
        self.call_id = ""
        self.answered = False  # a final response went out

    def call_ringing(self, call: ActiveCall) -> None:
        if self.answered:
            return
        self.app.reply(
            self.key,
            self.request,
            180,
            to_tag=self.to_tag,
            headers=[("X-Push-Status", call.push_status)],
        )

    def call_ended(self, call: ActiveCall) -> None:
        final = call.final
        assert final is not None
        if self.answered:
            return
        self.answered = True
        headers = [("X-Push-Status", call.push_status)]
        if final.reason_header:
            headers.append(("Reason", final.reason_header))
        self.app.invite_done(self.key)
        self.app.reply(
            self.key, self.request, final.status, to_tag=self.to_tag, headers=headers
        )


class RequestObserver(Protocol):
    """Hears of every new SIP request (metrics); retransmissions never reach
    the application, so they are not reported."""

    def sip_request(self, method: str) -> None:
        """A request with ``method`` (as received) arrived."""


class SipApplication:
    """Answers requests; one instance serves every transport."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        dispatcher: Dispatcher,
        messenger: Messenger,
        registry: DeviceStore,
        settings: SipSettings,
        responder: Responder,
        overload: OverloadGuard | None = None,
    ) -> None:
        self._clock = clock
        self._dispatcher = dispatcher
        self._messenger = messenger
        self._registry = registry
        self.settings = settings
        self._networks = settings.networks
        self._responder = responder
        self._invites: dict[TransactionKey, _InviteListener] = {}  # pending INVITEs
        self.overload = overload if overload is not None else OverloadGuard()
        self.shutting_down = False
        self._observers: list[RequestObserver] = []

    def add_observer(self, observer: RequestObserver) -> None:
        """Tell ``observer`` of every new request from now on."""
        self._observers.append(observer)

    # -- entry points ------------------------------------------------------------

    def handle(self, key: TransactionKey, request: Request, source: Any) -> None:
        """A new request (not a retransmission, not an ACK)."""
        method = request.method
        for observer in self._observers:
            guard(self, "sip_request", observer.sip_request, method)
        handler = _METHODS.get(method)
        if handler is None:
            self.reply(key, request, 405, headers=[("Allow", ALLOW)])
            return
        if method not in ("CANCEL", "ACK"):
            required = request.header_values("Require")
            if required:
                unsupported = ", ".join(required)
                self.reply(key, request, 420, headers=[("Unsupported", unsupported)])
                return
        handler(self, key, request, source)

    def invite_done(self, key: TransactionKey) -> None:
        self._invites.pop(key, None)

    def shutdown(self, retry_after_s: int) -> None:
        """Answer every pending INVITE 503 and refuse new ones (graceful stop);
        the devices are told the call failed."""
        self.shutting_down = True
        for key, listener in list(self._invites.items()):
            listener.answered = True
            self._unavailable(
                key,
                listener.request,
                str(retry_after_s),
                push_status=self._status_of(listener.call_id),
                to_tag=listener.to_tag,
            )
            if listener.call_id:
                self._dispatcher.cancel(listener.call_id, "failed")
        self._invites.clear()

    def _unavailable(
        self,
        key: TransactionKey,
        request: Request,
        retry_after: str,
        reason: str | None = None,
        *,
        push_status: str = "none",
        to_tag: str | None = None,
    ) -> None:
        """503 + Retry-After: the core's cue to fail over (stop, overload)."""
        self.reply(
            key,
            request,
            503,
            reason,
            to_tag=to_tag,
            headers=[("Retry-After", retry_after), ("X-Push-Status", push_status)],
        )

    def _status_of(self, call_id: str) -> str:
        call = self._dispatcher.get(call_id) if call_id else None
        return call.push_status if call is not None else "none"

    def reply(
        self,
        key: TransactionKey,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Build and send a response; a tag is added to final responses, and
        ``X-Push-Status: none`` to an INVITE's that have none (calls.md)."""
        if to_tag is None and status >= 200:
            to_tag = new_tag()
        extra = [*headers, ("Server", self.settings.user_agent)]
        invite = request.method == "INVITE" and status > 100
        if invite and all(name != "X-Push-Status" for name, _ in extra):
            extra.append(NO_PUSH_STATUS)
        response = build_response(request, status, reason, to_tag=to_tag, headers=extra)
        try:
            self._responder.respond(key, response)
        except Exception as e:  # noqa: BLE001 - a gone transaction must not break others
            self.log.warn(
                "No way to send {status} for {method}: {error}",
                status=status,
                method=request.method,
                error=str(e),
            )

    # -- methods -----------------------------------------------------------------

    def _invite(self, key: TransactionKey, request: Request, source: Any) -> None:
        if request.to.tag is not None:
            # We hold no dialogs: an in-dialog request cannot be ours.
            self.reply(key, request, 481)
            return
        aor = request.aor
        if aor is None:
            self.reply(key, request, 416)
            return
        if self.shutting_down:
            self._unavailable(key, request, "5")
            return
        if self.overload.refusal(len(self._invites)) is not None:
            self._unavailable(key, request, self.overload.retry_after, "Overloaded")
            return
        handle, display_name = _caller(request)
        call_request = CallRequest(
            aor=aor,
            caller_handle=handle,
            caller_display_name=display_name,
            headers=self._custom_headers(request),
            ring_timeout_s=float(request.expires)
            if request.expires is not None
            else None,
        )
        listener = _InviteListener(self, key, request)
        self._invites[key] = listener
        call = self._dispatcher.start(call_request, listener)
        if call is None:
            self._invites.pop(key, None)
            self.reply(key, request, 404)
            return
        listener.call_id = call.call_id

    def _cancel(self, key: TransactionKey, request: Request, source: Any) -> None:
        invite_key = self._responder.find_invite_for_cancel(request)
        if invite_key is None:
            self.reply(key, request, 481)
            return
        # RFC 3261 9.2: 200 for a matched CANCEL, even if the INVITE is final.
        self.reply(key, request, 200)
        listener = self._invites.get(invite_key)
        if listener is not None and listener.call_id:
            self._dispatcher.cancel(listener.call_id, cancel_reason(request))

    def _options(self, key: TransactionKey, request: Request, source: Any) -> None:
        self.reply(key, request, 200, headers=[("Allow", ALLOW), ("Accept", ACCEPT)])

    def _register(self, key: TransactionKey, request: Request, source: Any) -> None:
        host = source[0] if isinstance(source, tuple) else str(source)
        if not self._allowed_source(host):
            self.reply(key, request, 403, "Source not allowed to REGISTER")
            return
        to_uri = request.to.sip_uri
        if to_uri is None:
            self.reply(key, request, 400, "To is not a SIP URI")
            return
        aor = to_uri.aor
        now = self._clock.seconds()
        if request.contact_star:
            if request.expires != 0 or request.contact:
                self.reply(key, request, 400, "Contact * needs Expires: 0 alone")
                return
            removals: list[Deferred[Any]] = [
                self._registry.remove_binding(b.key)
                for b in self._registry.bindings_for_aor(aor, now)
            ]
            self._after(removals, key, request, aor)
            return
        if not request.contact:
            # A query: list the current bindings.
            self._reply_bindings(key, request, aor)
            return
        changes: list[tuple[Binding, int]] = []
        for contact in request.contact:
            parsed = self._push_binding(aor, contact, request, now)
            if isinstance(parsed, str):
                status = 403 if parsed.startswith("REGISTER without") else 400
                self.reply(key, request, status, parsed)
                return
            changes.append(parsed)
        writes: list[Deferred[Any]] = []
        for binding, expires in changes:
            if expires == 0:
                writes.append(self._registry.remove_binding(binding.key))
            else:
                writes.append(self._registry.put_binding(binding))
        self._after(writes, key, request, aor)

    def _message(self, key: TransactionKey, request: Request, source: Any) -> None:
        aor = request.aor
        if aor is None:
            self.reply(key, request, 416)
            return
        content_type = request.content_type
        if content_type is None or content_type.mime.lower() != "text/plain":
            self.reply(key, request, 415, headers=[("Accept", "text/plain")])
            return
        if len(request.body) > self.settings.max_message_body_bytes:
            self.reply(key, request, 413, "Message body too large")
            return
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            self.reply(key, request, 400, "Message body is not UTF-8")
            return
        handle, display_name = _caller(request)
        d = self._messenger.send(
            MessageRequest(
                sender_handle=handle,
                sender_display_name=display_name,
                body=body,
                aor=aor,
            )
        )
        if d is None:
            self.reply(key, request, 404)
            return

        def stored(result: MessageResult) -> None:
            self.reply(key, request, 202)

        def failed(failure: Any) -> None:
            self.log.failure("Storing a MESSAGE failed", failure)
            self.reply(key, request, 500, "Message could not be stored")

        d.addCallbacks(stored, failed)

    # -- helpers -----------------------------------------------------------------

    def _allowed_source(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def _custom_headers(self, request: Request) -> tuple[tuple[str, str], ...]:
        """X- headers in order, as many as fit in the configured byte budget."""
        budget = self.settings.custom_headers_max_bytes
        kept: list[tuple[str, str]] = []
        for header in request.x_headers():
            size = len(header.name.encode()) + len(header.value.encode())
            if size > budget:
                self.log.info(
                    "X- headers over {limit} bytes dropped from the call",
                    limit=self.settings.custom_headers_max_bytes,
                )
                break
            budget -= size
            kept.append((header.name, header.value))
        return tuple(kept)

    def _push_binding(
        self, aor: str, contact: NameAddr, request: Request, now: float
    ) -> tuple[Binding, int] | str:
        uri = contact.sip_uri
        push = uri.push_params if uri is not None else None
        if push is None:
            return "REGISTER without push parameters (pn-provider, pn-prid)"
        provider = push.provider.lower()
        if provider == "apns":
            if not 16 <= len(push.prid) <= 200 or not set(push.prid) <= _HEX:
                return "pn-prid is not an APNs token (hex)"
            prid = push.prid.lower()
        elif provider == "lpc":
            if not DEVICE_ID_RE.fullmatch(push.prid):
                return "pn-prid is not a device id"
            prid = push.prid
        else:
            return f"REGISTER without a supported pn-provider ({push.provider})"
        expires = contact.expires
        if expires is None:
            expires = request.expires
        if expires is None:
            expires = DEFAULT_REGISTER_EXPIRES
        expires = min(expires, MAX_REGISTER_EXPIRES)
        binding = Binding(
            aor=aor,
            provider=provider,
            prid=prid,
            param=push.param or "",
            expires_at=now + expires,
        )
        return binding, expires

    def _after(
        self,
        writes: list[Deferred[Any]],
        key: TransactionKey,
        request: Request,
        aor: str,
    ) -> None:
        d: Deferred[Any] = gatherResults(writes, consumeErrors=True)

        def failed(failure: Any) -> None:
            self.log.failure("REGISTER store write failed", failure)
            self.reply(key, request, 500, "Bindings could not be stored")

        d.addCallbacks(lambda _: self._reply_bindings(key, request, aor), failed)

    def _reply_bindings(self, key: TransactionKey, request: Request, aor: str) -> None:
        now = self._clock.seconds()
        contacts = [
            ("Contact", _binding_contact(b, now))
            for b in self._registry.bindings_for_aor(aor, now)
        ]
        self.reply(key, request, 200, headers=contacts)


def _binding_contact(binding: Binding, now: float) -> str:
    user_host = binding.aor.removeprefix("sip:")
    params = f";pn-provider={binding.provider};pn-prid={binding.prid}"
    if binding.param:
        params += f";pn-param={binding.param}"
    remaining = max(0, int(binding.expires_at - now))
    return f"<sip:{user_host}{params}>;expires={remaining}"


def _caller(request: Request) -> tuple[str, str | None]:
    """P-Asserted-Identity if present, else From: (handle, display name)."""
    identities = request.p_asserted_identity()
    addr = identities[0] if identities else request.from_
    display = addr.display_name or request.from_.display_name
    uri = addr.uri
    if isinstance(uri, SipUri):
        handle = uri.user or uri.host
    else:
        handle = str(uri).split(":", 1)[-1].split(";", 1)[0]
    return handle, display or None


_METHODS: dict[str, Any] = {
    "INVITE": SipApplication._invite,
    "CANCEL": SipApplication._cancel,
    "OPTIONS": SipApplication._options,
    "REGISTER": SipApplication._register,
    "MESSAGE": SipApplication._message,
}
