"""Sans-IO server transactions (RFC 3261 17.2, with RFC 6026's Accepted state).

``TransactionLayer`` sits between the transport adapter and the application
(the TU). The adapter hands it every parsed request with its source and
``now``; it answers with actions: requests for the TU, bytes to send,
retransmissions absorbed, timeouts. Time only enters as ``now``: the adapter
calls ``tick(now)`` at ``next_deadline()``.

Matching follows 17.2.3: the top Via branch (with the ``z9hG4bK`` cookie),
sent-by and method, ACK matching its INVITE; without the cookie, the RFC 2543
rule (Request-URI, From tag, Call-ID, CSeq number, top Via; To tag for ACK).
A CANCEL is a transaction of its own; ``find_invite_for_cancel`` finds the
INVITE it cancels (RFC 3261 9.2).

The state machines live in two tables, ``_INVITE`` and ``_NON_INVITE``; an
input missing from the table raises ``LocalProtocolError`` when it is ours
(a response in the wrong state) and is ignored when it is a stale timer.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple

from gateway.sip._errors import LocalProtocolError
from gateway.sip._message import Request, Response, build_response
from gateway.sip._routing import (
    Address,
    ResponseRoute,
    Transport,
    default_port,
    route_response,
    stamp_via,
)

__all__ = [
    "MAGIC_COOKIE",
    "Absorbed",
    "Action",
    "NewRequest",
    "Send",
    "StrayAck",
    "TimerSettings",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTimeout",
    "TxnState",
    "transaction_key",
]

MAGIC_COOKIE = "z9hG4bK"


class TxnState(enum.Enum):
    """Server transaction states (RFC 3261 figures 7 and 8, RFC 6026)."""

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow


class _Input(enum.Enum):
    REQUEST = "retransmitted request"
    ACK = "ACK"
    SEND_1XX = "send 1xx"
    SEND_2XX = "send 2xx"
    SEND_FINAL = "send 300-699"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_L = "Timer L"

    __hash__ = object.__hash__  # members are singletons; Enum's hash is slow


_S, _I = TxnState, _Input

_INVITE: dict[tuple[TxnState, _Input], TxnState] = {
    (_S.PROCEEDING, _I.REQUEST): _S.PROCEEDING,  # resend last provisional
    (_S.PROCEEDING, _I.ACK): _S.PROCEEDING,  # ACK before a final: absorbed
    (_S.PROCEEDING, _I.SEND_1XX): _S.PROCEEDING,
    (_S.PROCEEDING, _I.SEND_2XX): _S.ACCEPTED,
    (_S.PROCEEDING, _I.SEND_FINAL): _S.COMPLETED,
    (_S.COMPLETED, _I.REQUEST): _S.COMPLETED,  # resend the final response
    (_S.COMPLETED, _I.ACK): _S.CONFIRMED,
    (_S.COMPLETED, _I.TIMER_G): _S.COMPLETED,
    (_S.COMPLETED, _I.TIMER_H): _S.TERMINATED,
    (_S.CONFIRMED, _I.REQUEST): _S.CONFIRMED,  # absorbed
    (_S.CONFIRMED, _I.ACK): _S.CONFIRMED,  # absorbed
    (_S.CONFIRMED, _I.TIMER_I): _S.TERMINATED,
    (_S.ACCEPTED, _I.REQUEST): _S.ACCEPTED,  # absorbed (RFC 6026)
    (_S.ACCEPTED, _I.ACK): _S.ACCEPTED,  # the 2xx ACK goes to the TU
    (_S.ACCEPTED, _I.SEND_2XX): _S.ACCEPTED,  # TU retransmits its 2xx
    (_S.ACCEPTED, _I.TIMER_L): _S.TERMINATED,
}

_NON_INVITE: dict[tuple[TxnState, _Input], TxnState] = {
    (_S.TRYING, _I.REQUEST): _S.TRYING,  # absorbed, nothing to resend yet
    (_S.TRYING, _I.SEND_1XX): _S.PROCEEDING,
    (_S.TRYING, _I.SEND_FINAL): _S.COMPLETED,
    (_S.PROCEEDING, _I.REQUEST): _S.PROCEEDING,  # resend last provisional
    (_S.PROCEEDING, _I.SEND_1XX): _S.PROCEEDING,
    (_S.PROCEEDING, _I.SEND_FINAL): _S.COMPLETED,
    (_S.COMPLETED, _I.REQUEST): _S.COMPLETED,  # resend the final response
    (_S.COMPLETED, _I.TIMER_J): _S.TERMINATED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerSettings:
    """RFC 3261 timer values in seconds (17.1.2.1 defaults)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class TransactionKey(NamedTuple):
    """Identifies a server transaction.

    RFC 3261 requests: ``branch`` + sent-by ``host``/``port`` + ``method``
    (INVITE for an ACK). RFC 2543 requests: ``branch`` is empty and ``legacy``
    holds Request-URI, From tag, Call-ID, CSeq number and the top Via.
    A NamedTuple, not a frozen dataclass: it is hashed on every dict lookup
    of every message, and tuple hashing runs in C (a dataclass's ``__hash__``
    is Python code building a tuple each time). Build it with keywords.
    """

    branch: str
    host: str
    port: int
    method: str
    legacy: tuple[str, ...] = ()


def transaction_key(request: Request, method: str | None = None) -> TransactionKey:
    """The key a request matches on (17.2.3); ``method`` overrides its method."""
    via = request.via[0]
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    port = via.port or default_port(via.transport)
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > 7:
        return TransactionKey(branch=branch, host=via.host, port=port, method=method)
    own = tuple(p for p in via.params if p[0] not in ("received", "rport"))
    legacy = (
        request.uri,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        f"{via.transport} {via.host}:{port} {own}",
    )
    return TransactionKey(
        branch="", host=via.host, port=port, method=method, legacy=legacy
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRequest:
    """A request for the TU, with ``received``/``rport`` already stamped."""

    key: TransactionKey
    request: Request
    transport: Transport
    source: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Bytes to send (a response or a retransmission of one)."""

    data: bytes
    route: ResponseRoute


@dataclass(frozen=True, slots=True, kw_only=True)
class Absorbed:
    """A retransmission or ACK the transaction layer handled by itself."""

    key: TransactionKey
    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class StrayAck:
    """An ACK that is not for a non-2xx final response: the TU's business."""

    request: Request
    source: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTimeout:
    """Timer H fired: no ACK came for the final response to this INVITE."""

    key: TransactionKey


Action = NewRequest | Send | Absorbed | StrayAck | TransactionTimeout

_FINAL_SENT = frozenset((TxnState.COMPLETED, TxnState.ACCEPTED))


class _Txn:
    """One server transaction.

    Its timers are two slots, not a dict: at most one retransmission timer
    (G) and one that ends the transaction (H, I, J or L) run at once. Once a
    final response is sent the request is dropped (``request`` is ``None``):
    completed transactions wait up to 64*T1 for retransmissions and need only
    the response bytes and where they go, and the parsed request is most of
    the objects the garbage collector would walk meanwhile.
    """

    __slots__ = (
        "end_at",
        "end_timer",
        "g_at",
        "g_interval",
        "invite",
        "key",
        "last_response",
        "reliable",
        "request",
        "route",
        "state",
        "to_tag",
    )

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        reliable: bool,
        route: ResponseRoute | None,
    ) -> None:
        self.key = key
        self.request: Request | None = request
        self.invite = request.method == "INVITE"
        self.state = TxnState.PROCEEDING if self.invite else TxnState.TRYING
        self.reliable = reliable
        self.route = route
        self.last_response: bytes | None = None
        self.to_tag: str | None = None
        self.g_at: float | None = None
        self.end_at: float | None = None
        self.end_timer: _Input | None = None
        self.g_interval = 0.0

    def due(self, timer: _Input) -> float | None:
        """When ``timer`` fires, ``None`` if it is not running."""
        if timer is _Input.TIMER_G:
            return self.g_at
        return self.end_at if timer is self.end_timer else None

    def clear_timers(self) -> None:
        self.g_at = self.end_at = self.end_timer = None


class TransactionLayer:
    """All server transactions of one gateway (shared by every transport)."""

    def __init__(
        self, timers: TimerSettings | None = None, *, auto_trying: bool = True
    ) -> None:
        self._timers = timers or TimerSettings()
        self._auto_trying = auto_trying
        self._txns: dict[TransactionKey, _Txn] = {}
        self._heap: list[tuple[float, int, TransactionKey, _Input]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._txns)

    def state(self, key: TransactionKey) -> TxnState | None:
        """Current state, ``None`` once the transaction is gone."""
        txn = self._txns.get(key)
        return txn.state if txn is not None else None

    def request(self, key: TransactionKey) -> Request | None:
        """The (stamped) request that created the transaction, until a final
        response was sent."""
        txn = self._txns.get(key)
        return txn.request if txn is not None else None

    def find_invite_for_cancel(self, cancel: Request) -> TransactionKey | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2)."""
        key = transaction_key(cancel, method="INVITE")
        txn = self._txns.get(key)
        return key if txn is not None and txn.invite else None

    def receive(
        self,
        request: Request,
        transport: Transport,
        source: Address,
        now: float,
        connection: Hashable | None = None,
    ) -> list[Action]:
        """Handle an incoming request: new, retransmitted, or an ACK."""
        top = request.via[0]
        via = stamp_via(top, source)
        stamped = request if via is top else request.with_top_via(via)
        key = transaction_key(stamped)
        txn = self._txns.get(key)
        if request.method == "ACK":
            if txn is None or not txn.invite or not self._ack_matches(txn, stamped):
                return [StrayAck(request=stamped, source=source)]
            if txn.state is TxnState.ACCEPTED:
                return [StrayAck(request=stamped, source=source)]
            return self._input(txn, _Input.ACK, now, stamped)
        if txn is not None:
            return self._input(txn, _Input.REQUEST, now, stamped)
        route = route_response(stamped.via[0], transport, connection)
        txn = _Txn(key, stamped, transport.reliable, route)
        self._txns[key] = txn
        actions: list[Action] = []
        if txn.invite and self._auto_trying:
            actions.extend(self.respond(key, build_response(stamped, 100), now))
        actions.append(
            NewRequest(key=key, request=stamped, transport=transport, source=source)
        )
        return actions

    def respond(
        self, key: TransactionKey, response: Response, now: float
    ) -> list[Action]:
        """Send the TU's response through its transaction."""
        txn = self._txns.get(key)
        if txn is None:
            raise LocalProtocolError(f"no transaction {key}")
        status = response.status
        if status < 200:
            event = _Input.SEND_1XX
        elif status < 300 and txn.invite:
            event = _Input.SEND_2XX
        else:
            event = _Input.SEND_FINAL
        if (txn.state, event) not in (_INVITE if txn.invite else _NON_INVITE):
            raise LocalProtocolError(f"cannot send {status} in state {txn.state.value}")
        txn.last_response = response.to_bytes()
        if response.to_tag is not None:
            txn.to_tag = response.to_tag
        return self._input(txn, event, now, None)

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work, ``None`` if no timer runs."""
        heap = self._heap
        while heap:
            deadline, _, key, timer = heap[0]
            txn = self._txns.get(key)
            if txn is not None and txn.due(timer) == deadline:
                return deadline
            heapq.heappop(heap)  # stale: cancelled or superseded
        return None

    def tick(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``."""
        actions: list[Action] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key, timer = heapq.heappop(heap)
            txn = self._txns.get(key)
            if txn is None or txn.due(timer) != deadline:
                continue
            if timer is _Input.TIMER_G:
                txn.g_at = None
            else:
                txn.end_at = txn.end_timer = None
            actions.extend(self._input(txn, timer, now, None))
        return actions

    def _ack_matches(self, txn: _Txn, ack: Request) -> bool:
        if txn.key.legacy and txn.to_tag is not None:
            return ack.to.tag == txn.to_tag
        return True

    def _start(self, txn: _Txn, timer: _Input, now: float, delay: float) -> None:
        deadline = now + delay
        if timer is _Input.TIMER_G:
            txn.g_at = deadline
        else:
            txn.end_at, txn.end_timer = deadline, timer
        self._queue(txn, timer, deadline)

    def _queue(self, txn: _Txn, timer: _Input, deadline: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, txn.key, timer))

    @property
    def timers_queued(self) -> int:
        """How many timers were ever queued: unchanged, ``next_deadline`` can
        only have moved later (a timer stopped), never earlier."""
        return self._seq

    def _send_last(self, txn: _Txn) -> list[Action]:
        if txn.last_response is None or txn.route is None:
            return []
        return [Send(data=txn.last_response, route=txn.route)]

    def _input(
        self, txn: _Txn, event: _Input, now: float, request: Request | None
    ) -> list[Action]:
        table = _INVITE if txn.invite else _NON_INVITE
        new_state = table.get((txn.state, event))
        if new_state is None:
            return []  # a stale timer; responses were checked in respond()
        old_state, txn.state = txn.state, new_state
        actions: list[Action] = []
        t = self._timers
        if event is _Input.REQUEST:
            assert request is not None
            if old_state in (TxnState.PROCEEDING, TxnState.COMPLETED):
                actions.extend(self._send_last(txn))
            actions.append(Absorbed(key=txn.key, request=request))
        elif event is _Input.ACK:
            assert request is not None
            actions.append(Absorbed(key=txn.key, request=request))
            if new_state is TxnState.CONFIRMED and old_state is TxnState.COMPLETED:
                txn.clear_timers()  # Timers G and H stop
                if txn.reliable:
                    new_state = txn.state = TxnState.TERMINATED
                else:
                    self._start(txn, _Input.TIMER_I, now, t.t4)
        elif event in (_Input.SEND_1XX, _Input.SEND_2XX, _Input.SEND_FINAL):
            actions.extend(self._send_last(txn))
            if old_state is not new_state:
                if new_state is TxnState.COMPLETED and txn.invite:
                    if txn.reliable:
                        self._start(txn, _Input.TIMER_H, now, 64 * t.t1)
                    else:
                        # Timer H is queued by the Timer G firing it comes
                        # before (see below): an ACK, nearly always in time,
                        # then leaves no stale H entry for 64*T1.
                        txn.end_at, txn.end_timer = now + 64 * t.t1, _Input.TIMER_H
                        txn.g_interval = t.t1
                        self._start(txn, _Input.TIMER_G, now, t.t1)
                elif new_state is TxnState.COMPLETED:
                    if txn.reliable:
                        new_state = txn.state = TxnState.TERMINATED
                    else:
                        self._start(txn, _Input.TIMER_J, now, 64 * t.t1)
                elif new_state is TxnState.ACCEPTED:
                    self._start(txn, _Input.TIMER_L, now, 64 * t.t1)
        elif event is _Input.TIMER_G:
            actions.extend(self._send_last(txn))
            txn.g_interval = min(2 * txn.g_interval, t.t2)
            end_at = txn.end_at
            if end_at is not None and end_at <= now + txn.g_interval:
                self._queue(txn, _Input.TIMER_H, end_at)  # H comes first
            else:
                self._start(txn, _Input.TIMER_G, now, txn.g_interval)
        elif event is _Input.TIMER_H:
            actions.append(TransactionTimeout(key=txn.key))
        if new_state is TxnState.TERMINATED:
            txn.clear_timers()
            del self._txns[txn.key]
        elif old_state is not new_state and new_state in _FINAL_SENT:
            txn.request = None
        return actions
