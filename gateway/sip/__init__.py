"""Sans-IO SIP: message parsing/serialising, stream framing, server transactions.

Nothing here does I/O or imports Twisted; the adapter feeds bytes in and
writes the bytes the returned actions carry.
"""

from __future__ import annotations

from gateway.sip._errors import LocalProtocolError, RemoteProtocolError, SipParseError
from gateway.sip._framing import (
    DEFAULT_MAX_CONTENT_LENGTH,
    DEFAULT_MAX_HEADER_BYTES,
    PONG,
    Frame,
    FramedMessage,
    FramingError,
    Ping,
    StreamFramer,
)
from gateway.sip._headers import (
    ContentType,
    CSeq,
    NameAddr,
    Reason,
    Via,
    parse_name_addr,
    parse_reason,
    parse_via,
    split_list,
)
from gateway.sip._message import (
    DEFAULT_MAX_SIZE,
    REASON_PHRASES,
    Request,
    Response,
    build_error_response,
    build_response,
    parse_message,
)
from gateway.sip._raw import Header, RawMessage
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
from gateway.sip._uri import (
    AbsoluteUri,
    PushParams,
    SipUri,
    Uri,
    parse_sip_uri,
    parse_uri,
)

__all__ = [
    "DEFAULT_MAX_CONTENT_LENGTH",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_SIZE",
    "MAGIC_COOKIE",
    "PONG",
    "REASON_PHRASES",
    "AbsoluteUri",
    "Absorbed",
    "Action",
    "Address",
    "CSeq",
    "ContentType",
    "Frame",
    "FramedMessage",
    "FramingError",
    "Header",
    "LocalProtocolError",
    "NameAddr",
    "NewRequest",
    "Ping",
    "PushParams",
    "RawMessage",
    "Reason",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ResponseRoute",
    "Send",
    "SipParseError",
    "SipUri",
    "StrayAck",
    "StreamFramer",
    "TimerSettings",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTimeout",
    "Transport",
    "TxnState",
    "Uri",
    "Via",
    "build_error_response",
    "build_response",
    "default_port",
    "parse_message",
    "parse_name_addr",
    "parse_reason",
    "parse_sip_uri",
    "parse_uri",
    "parse_via",
    "route_response",
    "split_list",
    "stamp_via",
    "transaction_key",
]
