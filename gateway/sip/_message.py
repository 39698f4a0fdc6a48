"""Sans-IO SIP message parsing and serialising (RFC 3261 sections 7, 8.2.6, 25).

``parse_message`` reads one whole message (a UDP datagram, or one frame cut by
``StreamFramer``) into a frozen ``Request`` or ``Response``. The headers every
request needs (Via, From, To, Call-ID, CSeq) and the ones whose syntax decides
a ``400`` (Content-Length, Max-Forwards, Expires, Contact, Date, Content-Type)
are parsed at once; the rest on demand through accessor methods, which raise
``SipParseError`` for bad syntax.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar, cast

from gateway.sip._errors import SipParseError
from gateway.sip._headers import (
    ContentType,
    CSeq,
    NameAddr,
    Reason,
    Via,
    parse_content_type,
    parse_cseq,
    parse_name_addr,
    parse_reason,
    parse_via,
    parse_via_sent_by,
    split_list,
)
from gateway.sip._raw import Header, RawMessage
from gateway.sip._routing import Address, stamp_via
from gateway.sip._uri import SipUri, parse_uri

_T = TypeVar("_T")

__all__ = [
    "DEFAULT_MAX_SIZE",
    "REASON_PHRASES",
    "Request",
    "Response",
    "build_error_response",
    "build_response",
    "parse_message",
]

DEFAULT_MAX_SIZE = 65535

# RFC 3261 7.3.3 plus the extensions we may meet (section 20 and later RFCs).
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "Identity",
        "Identity-Info",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reject-Contact",
        "Reply-To",
        "Request-Disposition",
        "Require",
        "Retry-After",
        "Route",
        "Server",
        "Session-Expires",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose grammar is a comma list; only these are ever split on commas.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "in-reply-to",
        "p-asserted-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "require",
        "route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

_SINGLE = ("call-id", "cseq", "from", "to", "content-length", "max-forwards")
_REQUIRED_SINGLE = ("from", "to", "call-id", "cseq")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_FOLD_RE = re.compile(r"\r\n[ \t]+")
# Control characters are only allowed as a quoted-pair ("\" CTL); bare CR or
# LF inside a line is never allowed. The cheap class search runs first.
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CTL_ANY_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_UNPAIRED_CTL_RE = re.compile(r"(?<!\\)[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_CALL_ID_RE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
    r"(?:@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?"
)
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_MAX_DELTA = 2**32 - 1
_METHODS = frozenset(
    ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE")
)
_SIMPLE_MEDIA_RE = re.compile(r"[a-z]+/[A-Za-z0-9.+\-]+")


_NAME_CACHE: dict[str, tuple[str, str]] = {}


def _canonical(name: str) -> tuple[str, str]:
    """``(canonical name, lower-case key)`` for a header name as written."""
    cached = _NAME_CACHE.get(name)
    if cached is not None:
        return cached
    result = _canonical_uncached(name.rstrip(" \t"))
    if len(_NAME_CACHE) < 2048 and len(name) <= 64:
        _NAME_CACHE[name] = result
    return result


def _canonical_uncached(name: str) -> tuple[str, str]:
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    canon = _CANONICAL.get(key)
    if canon is None:
        if _TOKEN_RE.fullmatch(name) is None:
            raise SipParseError("Bad header name")
        return name, key
    return canon, key


@dataclass(frozen=True, slots=True, kw_only=True)
class _Message:
    headers: tuple[Header, ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of a header (any spelling or compact form)."""
        key = name.lower()
        key = COMPACT_FORMS.get(key, key)
        for h in self.headers:
            if h.key == key:
                return h.value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, list headers split on top-level commas."""
        key = name.lower()
        key = COMPACT_FORMS.get(key, key)
        out: list[str] = []
        for h in self.headers:
            if h.key == key:
                if key in LIST_HEADERS:
                    out.extend(v for v in split_list(h.value) if v)
                else:
                    out.append(h.value)
        return out

    def __iter__(self) -> Iterator[Header]:
        return iter(self.headers)

    def reasons(self) -> tuple[Reason, ...]:
        """RFC 3326 Reason values; unreadable ones are left out."""
        return _readable(parse_reason, self.header_values("Reason"))

    def p_asserted_identity(self) -> tuple[NameAddr, ...]:
        """RFC 3325 P-Asserted-Identity values (one SIP and one tel at most);
        unreadable ones are left out."""
        return _readable(parse_name_addr, self.header_values("P-Asserted-Identity"))

    @property
    def content_type(self) -> ContentType | None:
        """The parsed Content-Type, if any."""
        value = self.header("Content-Type")
        return parse_content_type(value) if value is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(_Message):
    """A parsed SIP request; typed views of the mandatory headers as fields."""

    method: str
    uri: str
    sip_uri: SipUri | None
    via: tuple[Via, ...]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: CSeq
    max_forwards: int | None = None
    expires: int | None = None
    contact: tuple[NameAddr, ...] = ()
    contact_star: bool = False
    # Filled by the first build_response: the header lines every response to
    # this request repeats (8.2.6), so a call's 100/180/480 format them once.
    _answer: list[_AnswerBase] = field(
        default_factory=list, init=False, compare=False, repr=False, hash=False
    )

    @property
    def top_via(self) -> Via:
        """The Via the response goes back to."""
        return self.via[0]

    @property
    def aor(self) -> str | None:
        """The Request-URI as an address of record, ``None`` if not SIP."""
        return self.sip_uri.aor if self.sip_uri is not None else None

    def to_bytes(self) -> bytes:
        """The wire form (for tests and tools), Content-Length from ``body``."""
        lines = [f"{self.method} {self.uri} SIP/2.0"]
        lines += [
            f"{h.name}: {h.value}" for h in self.headers if h.key != "content-length"
        ]
        lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8") + self.body

    def x_headers(self) -> list[Header]:
        """``X-`` headers in order, as sent (for ``call.headers``)."""
        return [h for h in self.headers if h.key.startswith("x-")]

    def with_top_via(self, via: Via) -> Request:
        """A copy whose top Via is replaced (``received``/``rport`` stamped)."""
        return Request(
            headers=self.headers,
            body=self.body,
            method=self.method,
            uri=self.uri,
            sip_uri=self.sip_uri,
            via=(via, *self.via[1:]),
            from_=self.from_,
            to=self.to,
            call_id=self.call_id,
            cseq=self.cseq,
            max_forwards=self.max_forwards,
            expires=self.expires,
            contact=self.contact,
            contact_star=self.contact_star,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Response(_Message):
    """A SIP response; built by ``build_response`` or parsed off the wire.

    ``headers`` is what goes on the wire (Content-Length is always computed
    from ``body``); ``via`` and ``cseq`` are typed views for routing and
    transaction matching.
    """

    status: int
    reason: str
    via: tuple[Via, ...] = ()
    cseq: CSeq | None = None
    to_tag: str | None = field(default=None)
    # The header lines as text, set by build_response from the request's
    # pre-formatted Via/From/Call-ID/CSeq lines; not an init field, so a
    # dataclasses.replace() copy formats its own headers again.
    _wire: str | None = field(default=None, init=False, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """The wire form, with a correct Content-Length."""
        wire = self._wire
        if wire is None:
            wire = _header_lines(self.headers)
        return (
            f"SIP/2.0 {self.status} {self.reason}\r\n{wire}"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode() + self.body


def _readable(parse: Callable[[str], _T], values: Iterable[str]) -> tuple[_T, ...]:
    """The values ``parse`` reads. For headers parsed only when asked for
    (Reason, P-Asserted-Identity): they only inform, and a request is not
    refused, nor a call left ringing, over one bad value
    (docs/calls-notes.md)."""
    out = []
    for value in values:
        try:
            out.append(parse(value))
        except SipParseError:
            continue
    return tuple(out)


def _header_lines(headers: Iterable[Header]) -> str:
    """One ``Name: value`` line (CRLF-ended) per header, Content-Length left
    out: to_bytes computes it from the body."""
    return "".join(
        [f"{h.name}: {h.value}\r\n" for h in headers if h.key != "content-length"]
    )


class _Head:
    """A message's start line and headers, plus the ones that decide validity.

    Gathered in the one pass over the header lines.
    """

    __slots__ = ("contacts", "dups", "first", "headers", "offset", "start_line", "vias")

    def __init__(
        self,
        start_line: str,
        offset: int,
        headers: list[Header],
        first: dict[str, str],
    ) -> None:
        self.start_line = start_line
        self.offset = offset
        self.headers = headers
        self.first = first
        self.vias: list[str] = []
        self.contacts: list[str] = []
        self.dups: set[str] = set()

    def content_length(self) -> int | None:
        for key in _SINGLE:
            if key in self.dups:
                raise SipParseError(f"More than one {_CANONICAL[key]}")
        cl = self.first.get("content-length")
        return None if cl is None else _digits(cl, "Content-Length", 2**31)

    def raw(self) -> RawMessage:
        return RawMessage(start_line=self.start_line, headers=tuple(self.headers))


_new_header = tuple.__new__

# Whole header lines that recur from message to message (Max-Forwards: 70,
# Content-Length: 0, a core's Contact) map to their Header at once. Only
# headers that rarely carry per-call values are kept (not Via, From, To,
# Call-ID, CSeq), and the cache starts over when full.
_LINE_CACHE: dict[str, Header] = {}
_LINE_CACHE_MAX = 4096
_LINE_CACHE_LINE_MAX = 256
_STABLE_KEYS = frozenset(
    {
        "accept",
        "allow",
        "contact",
        "content-length",
        "content-type",
        "expires",
        "max-forwards",
        "p-asserted-identity",
        "subject",
        "supported",
        "user-agent",
    }
)


def _check_controls(text: str) -> None:
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        raise SipParseError("Bare CR or LF in headers")
    if _CTL_RE.search(text) and _UNPAIRED_CTL_RE.search(text):
        raise SipParseError("Control character in headers")


def _read_head(data: bytes) -> _Head:
    """Start line, header lines and the body offset of a message."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2  # RFC 3261 7.5: CRLFs before the start line are ignored
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("No empty line after the headers")
    try:
        text = data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("Headers are not UTF-8") from None
    if "\r\n " in text or "\r\n\t" in text:
        text = _FOLD_RE.sub(" ", text)
    if not text.replace("\r\n", "").replace("\t", "").isprintable():
        _check_controls(text)  # the slow, exact check, only when needed
    lines = text.split("\r\n")
    # One C-level pass where it can be: the header list, then first values
    # by key (reversed, so the first occurrence wins), then Via/Contact.
    get = _LINE_CACHE.get
    parsed = [get(line) or _read_line(line) for line in lines[1:]]
    malformed = None in parsed
    # Read on past a malformed line: the others may still route a 400 back.
    found = (
        [h for h in parsed if h is not None]
        if malformed
        else cast("list[Header]", parsed)
    )
    keys = list(map(_KEY, found))
    values = list(map(_VALUE, found))
    head = _Head(
        lines[0],
        end + 4,
        found,
        dict(zip(reversed(keys), reversed(values), strict=True)),
    )
    head.vias = _all_of("via", keys, values, head.first)
    head.contacts = _all_of("contact", keys, values, head.first)
    if len(head.first) + len(head.vias) + len(head.contacts) != len(keys) + (
        "via" in head.first
    ) + ("contact" in head.first):
        head.dups = {key for key in _SINGLE if keys.count(key) > 1}
    if malformed:
        raise SipParseError("Header line without colon", raw=head.raw())
    return head


_KEY = operator.itemgetter(2)
_VALUE = operator.itemgetter(1)


def _all_of(
    key: str, keys: list[str], values: list[str], first: dict[str, str]
) -> list[str]:
    """Every value of a header that may repeat (Via, Contact), in order."""
    count = keys.count(key)
    if count == 0:
        return []
    if count == 1:
        return [first[key]]
    return [v for k, v in zip(keys, values, strict=True) if k == key]


def _read_line(line: str) -> Header | None:
    """One header line (not in the line cache); ``None`` without a colon."""
    name, colon, raw_value = line.partition(":")
    if not colon:
        return None
    known = _NAME_CACHE.get(name)
    canon, key = known if known is not None else _canonical(name)
    header: Header = _new_header(Header, (canon, raw_value.strip(" \t"), key))
    if key in _STABLE_KEYS and len(line) <= _LINE_CACHE_LINE_MAX:
        if len(_LINE_CACHE) >= _LINE_CACHE_MAX:
            _LINE_CACHE.clear()  # a new generation: drops one-offs
        _LINE_CACHE[line] = header
    return header


def _digits(value: str, what: str, limit: int) -> int:
    if not value.isdigit() or not value.isascii():
        raise SipParseError(f"Bad {what}")
    if len(value) > 12 or int(value) > limit:
        raise SipParseError(f"{what} out of range")
    return int(value)


def _parse_common(
    c: _Head,
) -> tuple[tuple[Via, ...], NameAddr, NameAddr, str, CSeq]:
    if not c.vias:
        raise SipParseError("Missing Via")
    for key in _REQUIRED_SINGLE:
        if key not in c.first:
            raise SipParseError(f"Missing {_CANONICAL[key]}")
    vias: list[Via] = []
    for value in c.vias:
        if "," in value:
            vias.extend(parse_via(v) for v in split_list(value))
        else:
            vias.append(parse_via(value))
    call_id = c.first["call-id"]
    if _CALL_ID_RE.fullmatch(call_id) is None:
        raise SipParseError("Bad Call-ID")
    try:
        from_ = parse_name_addr(c.first["from"])
        to = parse_name_addr(c.first["to"])
    except SipParseError as e:
        raise SipParseError(f"Bad From/To: {e.reason}") from None
    return tuple(vias), from_, to, call_id, parse_cseq(c.first["cseq"])


def _body(data: bytes, offset: int, content_length: int | None) -> bytes:
    if content_length is None:
        return data[offset:]
    if offset + content_length > len(data):
        raise SipParseError("Content-Length larger than the message")
    return data[offset : offset + content_length]


def _parse_request(c: _Head, data: bytes) -> Request:
    parts = c.start_line.split(" ")
    if len(parts) != 3:
        raise SipParseError("Bad request line")
    method, uri, version = parts
    if method not in _METHODS and _TOKEN_RE.fullmatch(method) is None:
        raise SipParseError("Bad method")
    if version.upper() != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise SipParseError("Version Not Supported", 505)
        raise SipParseError("Bad SIP version")
    try:
        parsed_uri = parse_uri(uri)
    except SipParseError:
        raise SipParseError("Bad Request-URI") from None
    sip_uri = parsed_uri if isinstance(parsed_uri, SipUri) else None
    if sip_uri is not None and sip_uri.headers:
        raise SipParseError("Request-URI must not carry headers")
    vias, from_, to, call_id, cseq = _parse_common(c)
    if cseq.method != method:
        raise SipParseError("CSeq method does not match the request")
    mf = c.first.get("max-forwards")
    expires = c.first.get("expires")
    contacts: list[NameAddr] = []
    star = False
    for value in c.contacts:
        for item in split_list(value):
            if item == "*":
                star = True
            else:
                try:
                    contacts.append(parse_name_addr(item))
                except SipParseError as e:
                    raise SipParseError(f"Bad Contact: {e.reason}") from None
    if star and (contacts or len(c.contacts) > 1):
        raise SipParseError("Contact * mixed with other contacts")
    for na in contacts:
        exp = na.param("expires")
        if exp is not None:
            _digits(exp, "Contact expires", _MAX_DELTA)
    date = c.first.get("date")
    if date is not None and _DATE_RE.fullmatch(date) is None:
        raise SipParseError("Bad Date")
    ctype = c.first.get("content-type")
    if ctype is not None and _SIMPLE_MEDIA_RE.fullmatch(ctype) is None:
        parse_content_type(ctype)  # raises if it is really broken
    return Request(
        method=method,
        uri=uri,
        sip_uri=sip_uri,
        headers=tuple(c.headers),
        body=_body(data, c.offset, c.content_length()),
        via=vias,
        from_=from_,
        to=to,
        call_id=call_id,
        cseq=cseq,
        max_forwards=_digits(mf, "Max-Forwards", 255) if mf is not None else None,
        expires=_digits(expires, "Expires", _MAX_DELTA)
        if expires is not None
        else None,
        contact=tuple(contacts),
        contact_star=star,
    )


def _parse_response(c: _Head, data: bytes) -> Response:
    parts = c.start_line.split(" ", 2)
    if len(parts) < 2:
        raise SipParseError("Bad status line")
    version, code = parts[0], parts[1]
    if version.upper() != "SIP/2.0":
        raise SipParseError("Bad SIP version", 505)
    if len(code) != 3 or not code.isdigit() or not "1" <= code[0] <= "6":
        raise SipParseError("Bad status code")
    vias, _from, to, _call_id, cseq = _parse_common(c)
    return Response(
        status=int(code),
        reason=parts[2] if len(parts) == 3 else "",
        headers=tuple(c.headers),
        body=_body(data, c.offset, c.content_length()),
        via=vias,
        cseq=cseq,
        to_tag=to.tag,
    )


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Request | Response:
    """Parse one whole message, datagram rules for the body (RFC 3261 18.3).

    Without Content-Length the body is the rest of ``data``; a Content-Length
    beyond ``data`` is an error; bytes past it are ignored.
    """
    head = _read_head(data)
    try:
        if len(data) > max_size:
            raise SipParseError("Message too large")
        if head.start_line.startswith("SIP/"):
            return _parse_response(head, data)
        return _parse_request(head, data)
    except SipParseError as e:
        if e.raw is None:
            e.raw = head.raw()
        raise


def _response_headers(  # noqa: PLR0917 - the five 8.2.6 headers, in order
    vias: Iterable[str],
    from_: str,
    to: str,
    call_id: str,
    cseq: str,
    extra: Iterable[tuple[str, str]],
) -> tuple[Header, ...]:
    out = [Header("Via", v, "via") for v in vias]
    out.append(Header("From", from_, "from"))
    out.append(Header("To", to, "to"))
    out.append(Header("Call-ID", call_id, "call-id"))
    out.append(Header("CSeq", cseq, "cseq"))
    out.extend(Header(n, v, _canonical(n)[1]) for n, v in extra)
    return tuple(out)


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response per RFC 3261 8.2.6: Via/From/To/Call-ID/CSeq copied.

    ``to_tag`` is added to To unless To already has one or the status is 100
    (8.2.6.2); a 100 copies Timestamp (8.2.6.1).
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} out of range")
    cache = request._answer
    if not cache:
        cache.append(_answer_base(request))
    base = cache[0]
    to_value = base.to_value
    tag = request.to.tag
    if tag is None and to_tag is not None and status != 100:
        to_value = f"{to_value};tag={to_tag}"
        tag = to_tag
    extra: list[Header] = []
    if status == 100:
        timestamp = request.header("Timestamp")
        if timestamp is not None:
            extra.append(_new_header(Header, ("Timestamp", timestamp, "timestamp")))
    for name, value in headers:
        extra.append(_new_header(Header, (name, value, _canonical(name)[1])))
    if content_type is not None:
        extra.append(
            _new_header(Header, ("Content-Type", content_type, "content-type"))
        )
    response = Response(
        status=status,
        reason=reason if reason is not None else REASON_PHRASES.get(status, "Unknown"),
        headers=(
            *base.before_to,
            _new_header(Header, ("To", to_value, "to")),
            *base.after_to,
            *extra,
        ),
        body=body,
        via=request.via,
        cseq=request.cseq,
        to_tag=tag,
    )
    wire = f"{base.before_wire}To: {to_value}\r\n{base.after_wire}"
    if extra:
        wire += _header_lines(extra)
    object.__setattr__(response, "_wire", wire)  # a cache of headers' text
    return response


class _AnswerBase(NamedTuple):
    before_to: tuple[Header, ...]  # Via lines and From
    to_value: str
    after_to: tuple[Header, ...]  # Call-ID and CSeq
    before_wire: str  # before_to as header lines
    after_wire: str


def _answer_base(request: Request) -> _AnswerBase:
    before = [_new_header(Header, ("Via", str(v), "via")) for v in request.via]
    before.append(
        _new_header(
            Header, ("From", request.header("From") or str(request.from_), "from")
        )
    )
    after = (
        _new_header(Header, ("Call-ID", request.call_id, "call-id")),
        _new_header(Header, ("CSeq", str(request.cseq), "cseq")),
    )
    return _AnswerBase(
        before_to=tuple(before),
        to_value=request.header("To") or str(request.to),
        after_to=after,
        before_wire=_header_lines(before),
        after_wire=_header_lines(after),
    )


def build_error_response(
    error: SipParseError,
    *,
    to_tag: str | None = None,
    source: Address | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response | None:
    """The ``400`` (or ``505``) for a request that failed to parse.

    ``None`` when no response can be built: a response came in, or the top
    Via, From, To, Call-ID or CSeq is missing or the top Via is unreadable.
    Values are copied as received, as RFC 3261 8.2.6.2 asks. With
    ``source``, the top Via gets ``received``/``rport`` (18.2.1), so
    ``route_response(response.via[0], ...)`` finds the way back;
    ``headers`` are added after the five copied ones.
    """
    raw = error.raw
    if raw is None or raw.start_line.startswith("SIP/"):
        return None
    first: dict[str, str] = {}
    vias: list[str] = []
    for h in raw.headers:
        if h.key == "via":
            vias.extend(v for v in split_list_safe(h.value))
        else:
            first.setdefault(h.key, h.value)
    if not vias or any(k not in first for k in ("from", "to", "call-id", "cseq")):
        return None
    top_raw = vias[0]
    try:
        top: Via | None = parse_via(top_raw)
        if top is not None and source is not None:
            top = stamp_via(top, source)
        top_raw = str(top)
    except SipParseError:
        top = parse_via_sent_by(top_raw)  # route by sent-by, copy as received
        if top is not None and source is not None:
            top = stamp_via(top, source)
    if top is None:
        return None
    to_value = first["to"]
    if to_tag is not None and ";tag=" not in to_value.replace(" ", "").lower():
        to_value = f"{to_value};tag={to_tag}"
    # Reason-Phrase allows no control characters; keep it short as well.
    reason = _CTL_ANY_RE.sub("?", error.reason)[:120]
    return Response(
        status=error.status,
        reason=reason,
        headers=_response_headers(
            [top_raw, *vias[1:]],
            first["from"],
            to_value,
            first["call-id"],
            first["cseq"],
            headers,
        ),
        via=(top,),
    )


def split_list_safe(value: str) -> list[str]:
    """``split_list`` that never raises (for copying broken headers)."""
    try:
        return split_list(value)
    except SipParseError:
        return [value]
