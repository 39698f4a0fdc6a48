"""Public face of SIP server transactions and response routing."""

from __future__ import annotations

from gateway.sip._routing import (
    Address,
    ResponseRoute,
    Transport,
    default_port,
    route_response,
    stamp_via,
)
from gateway.sip._transaction import (
    MAGIC_COOKIE,
    Absorbed,
    Action,
    NewRequest,
    Send,
    StrayAck,
    TimerSettings,
    TransactionKey,
    TransactionLayer,
    TransactionTimeout,
    TxnState,
    transaction_key,
)

__all__ = [
    "MAGIC_COOKIE",
    "Absorbed",
    "Action",
    "Address",
    "NewRequest",
    "ResponseRoute",
    "Send",
    "StrayAck",
    "TimerSettings",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTimeout",
    "Transport",
    "TxnState",
    "default_port",
    "route_response",
    "stamp_via",
    "transaction_key",
]
