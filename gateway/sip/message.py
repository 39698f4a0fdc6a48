"""Public face of the SIP message layer (the code lives in ``_message``)."""

from __future__ import annotations

from gateway.sip._errors import SipParseError
from gateway.sip._headers import ContentType, CSeq, NameAddr, Reason, Via
from gateway.sip._message import (
    DEFAULT_MAX_SIZE,
    REASON_PHRASES,
    Request,
    Response,
    build_error_response,
    build_response,
    parse_message,
)
from gateway.sip._raw import Header
from gateway.sip._uri import AbsoluteUri, SipUri, parse_sip_uri, parse_uri

__all__ = [
    "DEFAULT_MAX_SIZE",
    "REASON_PHRASES",
    "AbsoluteUri",
    "CSeq",
    "ContentType",
    "Header",
    "NameAddr",
    "Reason",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "Via",
    "build_error_response",
    "build_response",
    "parse_message",
    "parse_sip_uri",
    "parse_uri",
]
