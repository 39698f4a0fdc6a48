"""Typed header values: Via, name-addr (From/To/Contact/...), CSeq, Reason.

Each ``parse_*`` takes one header value (already unfolded) and raises
``SipParseError`` when it breaks RFC 3261 section 25 grammar. LWS is allowed
wherever the grammar's SWS/LWS allows it (around ``;``, ``=``, ``/``, ``:``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from gateway.sip._errors import SipParseError
from gateway.sip._uri import (
    CACHED_VALUE_LENGTH,
    HOST,
    SipUri,
    Uri,
    format_host,
    parse_host,
    parse_uri,
)

__all__ = [
    "CSeq",
    "ContentType",
    "NameAddr",
    "Params",
    "Reason",
    "Via",
    "parse_content_type",
    "parse_cseq",
    "parse_name_addr",
    "parse_params",
    "parse_reason",
    "parse_via",
    "parse_via_sent_by",
    "quote",
    "split_list",
    "unquote",
]

Params = tuple[tuple[str, str | None], ...]

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - RFC 3261 "token"
_QDCHAR = r"(?:[^\"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])"
_QUOTED = rf'"{_QDCHAR}*"'
_QUOTED_INNER = rf'"({_QDCHAR}*)"'
_GEN_VALUE = rf"(?:{_QUOTED}|[A-Za-z0-9\-.!%*_+`'~:\[\]]+)"
_PARAM_RE = re.compile(rf"[ \t]*;[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_GEN_VALUE}))?")
_TOKEN_RE = re.compile(_TOKEN)
_SIMPLE_PARAMS_RE = re.compile(
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)+"
)
_NAME_ADDR_RE = re.compile(
    rf"[ \t]*(?:{_QUOTED_INNER}[ \t]*"
    rf"|({_TOKEN}(?:[ \t]+{_TOKEN})*)[ \t]*)?<([^<>\s]*)>"
)
_QUOTED_RE = re.compile(_QUOTED)
_VIA_FAST_RE = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ({HOST})(?::([0-9]{{1,5}}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)"
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_VIA_RE = re.compile(
    rf"({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    rf"({HOST})(?:[ \t]*:[ \t]*([0-9]{{1,5}}))?"
)
_CSEQ_RE = re.compile(rf"([0-9]+)[ \t]+({_TOKEN})")
_DISPLAY_TOKENS_RE = re.compile(rf"{_TOKEN}(?:[ \t]+{_TOKEN})*")
_MEDIA_RE = re.compile(rf"({_TOKEN})[ \t]*/[ \t]*({_TOKEN})")

MAX_CSEQ = 2**31 - 1


def unquote(text: str) -> str:
    """``"a \\"b\\""`` -> ``a "b"``."""
    inner = text[1:-1]
    return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner


_NEEDS_PAIR_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote(text: str) -> str:
    """The reverse of ``unquote``: a quoted-string for the wire.

    CR and LF cannot be quoted at all (RFC 3261 25.1), so they become spaces.
    """
    text = text.replace("\r", " ").replace("\n", " ")
    return '"' + _NEEDS_PAIR_RE.sub(lambda m: "\\" + m.group(0), text) + '"'


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and ``<>``."""
    if "," not in value:
        return [value.strip(" \t")]
    if '"' not in value and "<" not in value:
        return [part.strip(" \t") for part in value.split(",")]
    parts: list[str] = []
    start = 0
    in_quote = in_angle = escaped = False
    for i, c in enumerate(value):
        if in_quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
    if in_quote:
        raise SipParseError("Unterminated quoted string")
    parts.append(value[start:].strip(" \t"))
    return parts


def parse_params(text: str, pos: int = 0) -> Params:
    """Parse ``;name=value`` parameters from ``pos`` to the end of ``text``."""
    if pos:
        text = text[pos:]
        pos = 0
    if not text:
        return ()
    if _SIMPLE_PARAMS_RE.fullmatch(text):
        # Fast path: no blanks, no quotes (nearly every real message).
        out: list[tuple[str, str | None]] = []
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            out.append((name.lower(), value if eq else None))
        return tuple(out)
    params: list[tuple[str, str | None]] = []
    end = len(text)
    while pos < end:
        m = _PARAM_RE.match(text, pos)
        if m is None:
            if text[pos:].strip(" \t"):
                raise SipParseError(f"Bad parameter near {text[pos : pos + 40]!r}")
            break
        value = m.group(2)
        if value is not None and value.startswith('"'):
            value = unquote(value)
        params.append((m.group(1).lower(), value))
        pos = m.end()
    return tuple(params)


def _param(params: Params, name: str) -> str | None:
    for key, value in params:
        if key == name:
            return value
    return None


def _format_params(params: Params) -> str:
    out: list[str] = []
    for name, value in params:
        if value is None:
            out.append(f";{name}")
        elif _TOKEN_RE.fullmatch(value) or _is_host(value):
            out.append(f";{name}={value}")
        else:
            out.append(f";{name}={quote(value)}")
    return "".join(out)


def _is_host(value: str) -> bool:
    return value.startswith("[") or ":" in value


@dataclass(frozen=True, slots=True, kw_only=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...;received=...``."""

    protocol: str = "SIP/2.0"
    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        """Value of a Via parameter (``None`` if absent or value-less)."""
        return _param(self.params, name)

    def has_param(self, name: str) -> bool:
        """Whether the parameter is present, with or without a value."""
        return any(key == name for key, _ in self.params)

    @property
    def branch(self) -> str | None:
        """The branch parameter, the transaction id under RFC 3261."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` address a server stamped on it."""
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` port (RFC 3581), ``None`` if absent or still empty."""
        value = self.param("rport")
        return int(value) if value else None

    @property
    def wants_rport(self) -> bool:
        """Whether the client asked for ``rport`` (RFC 3581)."""
        return self.has_param("rport")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)``; the port is ``None`` when not written."""
        return self.host, self.port

    def with_params(self, **params: str | None) -> Via:
        """A copy with the given parameters set, in place if present."""
        out = [(k, params.pop(k) if k in params else v) for k, v in self.params]
        out.extend(params.items())
        # The constructor, not dataclasses.replace: this runs for every
        # request received and replace() costs several times as much.
        return Via(
            protocol=self.protocol,
            transport=self.transport,
            host=self.host,
            port=self.port,
            params=tuple(out),
        )

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return (
            f"{self.protocol}/{self.transport} {format_host(self.host)}{port}"
            f"{_format_params(self.params)}"
        )


_CHECKED_VIA_PARAMS = frozenset({"ttl", "rport", "received", "branch", "maddr"})


def _check_via_param(name: str, value: str | None) -> None:
    if name in ("ttl", "rport") and value is not None:
        if not value.isdigit() or int(value) > (255 if name == "ttl" else 65535):
            raise SipParseError(f"Bad Via {name}")
    elif name == "received" and value is not None:
        try:
            ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            raise SipParseError("Bad Via received") from None
    elif name in ("branch", "maddr", "received") and not value:
        raise SipParseError(f"Empty Via {name}")


_VIA_HEAD_RE = re.compile(rf"SIP/2\.0/([A-Za-z]+) ({HOST})(?::([0-9]{{1,5}}))?")
_VIA_HEAD_MAX = 128


@lru_cache(maxsize=1024)
def _via_sent_by(head: str) -> tuple[str, str, int | None] | None:
    """``SIP/2.0/UDP host:port`` -> (transport, host, port); ``None`` if the
    head is not in that simple form. Cached: a gateway hears few peers."""
    m = _VIA_HEAD_RE.fullmatch(head)
    if m is None:
        return None
    transport, host, port_text = m.groups()
    port = int(port_text) if port_text is not None else None
    if port is not None and port > 65535:
        return None
    return transport.upper(), parse_host(host), port


def parse_via(value: str) -> Via:
    """Parse one Via value (the header may hold several, see ``split_list``).

    The sent-by part (before the first ``;``) recurs message after message
    from the same peer while the branch does not: that part is parsed once
    and cached, the parameters every time. Anything unusual, or any error,
    takes the full path below, so errors read as they always did.
    """
    semi = value.find(";")
    head = value if semi < 0 else value[:semi]
    if len(head) <= _VIA_HEAD_MAX:
        try:
            sent_by = _via_sent_by(head)
        except SipParseError:
            sent_by = None
        if sent_by is not None and (
            semi < 0 or _SIMPLE_PARAMS_RE.fullmatch(value, semi) is not None
        ):
            params: Params = ()
            if semi >= 0:
                params = tuple(
                    (name.lower(), v if eq else None)
                    for name, eq, v in (
                        p.partition("=") for p in value[semi + 1 :].split(";")
                    )
                )
            try:
                for name, pvalue in params:
                    if name in _CHECKED_VIA_PARAMS:
                        _check_via_param(name, pvalue)
            except SipParseError:
                return _parse_via(value)
            transport, host, port = sent_by
            return Via(transport=transport, host=host, port=port, params=params)
    return _parse_via(value)


def _parse_via(value: str) -> Via:
    m = _VIA_FAST_RE.fullmatch(value)
    if m is not None:  # "SIP/2.0/UDP host:port;simple=params": one regex
        transport, host, port_text, param_text = m.groups()
        protocol = "SIP/2.0"
        params: Params = ()
        if param_text:
            params = tuple(
                (name.lower(), v if eq else None)
                for name, eq, v in (p.partition("=") for p in param_text[1:].split(";"))
            )
    else:
        m = _VIA_RE.match(value)
        if m is None:
            raise SipParseError("Bad Via")
        name, version, transport, host, port_text = m.groups()
        protocol = f"{name.upper()}/{version}"
        params = parse_params(value, m.end())
    if port_text is not None and int(port_text) > 65535:
        raise SipParseError("Bad Via port")
    for name, pvalue in params:
        if name in _CHECKED_VIA_PARAMS:
            _check_via_param(name, pvalue)
    return Via(
        protocol=protocol,
        transport=transport.upper(),
        host=parse_host(host),
        port=int(port_text) if port_text is not None else None,
        params=params,
    )


def parse_via_sent_by(value: str) -> Via | None:
    """Protocol, transport and sent-by of a Via whose parameters are broken.

    Enough to route a ``400`` back (RFC 4475 3.1.2.1 "badinv01").
    """
    m = _VIA_RE.match(value)
    if m is None or (m.group(5) is not None and int(m.group(5)) > 65535):
        return None
    try:
        host = parse_host(m.group(4))
    except SipParseError:
        return None
    return Via(
        protocol=f"{m.group(1).upper()}/{m.group(2)}",
        transport=m.group(3).upper(),
        host=host,
        port=int(m.group(5)) if m.group(5) is not None else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NameAddr:
    """From/To/Contact/Route/P-Asserted-Identity value: name, URI, params."""

    display_name: str | None = None
    uri: Uri
    params: Params = ()

    def param(self, name: str) -> str | None:
        """Value of a header parameter such as ``tag`` or ``expires``."""
        return _param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The dialog tag of From/To."""
        return self.param("tag")

    @property
    def expires(self) -> int | None:
        """Contact ``expires`` parameter in seconds, if it is a valid number."""
        value = self.param("expires")
        if value is None or not value.isdigit():
            return None
        return min(int(value), 2**32 - 1)

    @property
    def sip_uri(self) -> SipUri | None:
        """The URI if it is a SIP/SIPS one."""
        return self.uri if isinstance(self.uri, SipUri) else None

    def with_params(self, **params: str | None) -> NameAddr:
        """A copy with header parameters set (used to add a To tag)."""
        kept = [(k, v) for k, v in self.params if k not in params]
        kept.extend(params.items())
        return replace(self, params=tuple(kept))

    def __str__(self) -> str:
        name = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{name}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``"Name" <uri>;params``, ``Name <uri>`` or a bare addr-spec.

    A bare addr-spec ends at the first ``;``, whose parameters belong to the
    header, so it may not hold ``;``, ``?`` or ``,`` (RFC 3261 20.10).
    Short values are cached: To, Contact and P-Asserted-Identity recur per
    user; long ones are not, so a peer cannot pin much memory in the cache.
    A From recurs per caller except for its fresh tag, so for ``name <uri>;
    params`` without quotes only the part up to ``>`` is cached (a URI and
    a token display name hold no ``>``) and the parameters are parsed each
    time; any error there takes the full path, so errors read the same.
    """
    if len(value) > CACHED_VALUE_LENGTH:
        return _parse_name_addr(value)
    gt = value.find(">")
    if 0 < gt < len(value) - 1 and '"' not in value:
        try:
            base = _parse_name_addr_cached(value[: gt + 1])
            params = parse_params(value, gt + 1)
        except SipParseError:
            return _parse_name_addr(value)
        return NameAddr(display_name=base.display_name, uri=base.uri, params=params)
    return _parse_name_addr_cached(value)


@lru_cache(maxsize=4096)
def _parse_name_addr_cached(value: str) -> NameAddr:
    return _parse_name_addr(value)


def _parse_name_addr(value: str) -> NameAddr:
    m = _NAME_ADDR_RE.match(value)
    if m is not None:
        (
            quoted,
            tokens,
            uri_text,
        ) = m.groups()
        if quoted is not None:
            display: str | None = (
                _QUOTED_PAIR_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
            )
        else:
            display = tokens
        return NameAddr(
            display_name=display,
            uri=parse_uri(uri_text),
            params=parse_params(value, m.end()),
        )
    text = value.strip(" \t")
    display = None
    pos = 0
    if text.startswith('"'):
        m = _QUOTED_RE.match(text)
        if m is None:
            raise SipParseError("Unterminated quoted display name")
        display = unquote(m.group(0))
        pos = m.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos >= len(text) or text[pos] != "<":
            raise SipParseError("Quoted display name without <URI>")
    else:
        lt = text.find("<")
        if lt >= 0:
            name = text[:lt].rstrip(" \t")
            if name:
                if _DISPLAY_TOKENS_RE.fullmatch(name) is None:
                    raise SipParseError("Bad display name")
                display = name
            pos = lt
    if pos < len(text) and text[pos] == "<":
        gt = text.find(">", pos)
        if gt < 0:
            raise SipParseError("Missing > after URI")
        uri = parse_uri(text[pos + 1 : gt])
        return NameAddr(
            display_name=display, uri=uri, params=parse_params(text, gt + 1)
        )
    semi = text.find(";")
    spec = (text if semi < 0 else text[:semi]).rstrip(" \t")
    if not spec or any(c in spec for c in ' \t,?<>"'):
        raise SipParseError("Bad addr-spec (URI needs <> here)")
    return NameAddr(
        uri=parse_uri(spec), params=parse_params(text, semi) if semi >= 0 else ()
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CSeq:
    """``CSeq: 1 INVITE``."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ_CACHE: dict[str, CSeq] = {}
_CSEQ_CACHE_MAX = 1024


def parse_cseq(value: str) -> CSeq:
    """Parse CSeq; the number must fit 31 bits (RFC 3261 8.1.1.5).

    Cached (filled once, bounded): ``1 INVITE`` and its like recur."""
    cached = _CSEQ_CACHE.get(value)
    if cached is not None:
        return cached
    cseq = _parse_cseq(value)
    if len(_CSEQ_CACHE) < _CSEQ_CACHE_MAX:
        _CSEQ_CACHE[value] = cseq
    return cseq


def _parse_cseq(value: str) -> CSeq:
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipParseError("Bad CSeq")
    number = int(m.group(1)) if len(m.group(1)) < 12 else MAX_CSEQ + 1
    if number > MAX_CSEQ:
        raise SipParseError("CSeq number too large")
    return CSeq(number=number, method=m.group(2))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    """RFC 3326 Reason: ``SIP;cause=200;text="Call completed elsewhere"``."""

    protocol: str
    cause: int | None = None
    text: str | None = None
    params: Params = ()

    def __str__(self) -> str:
        out = self.protocol
        if self.cause is not None:
            out += f";cause={self.cause}"
        if self.text is not None:
            out += f";text={quote(self.text)}"
        return out


def parse_reason(value: str) -> Reason:
    """Parse one Reason value (the header may hold several)."""
    m = _TOKEN_RE.match(value)
    if m is None:
        raise SipParseError("Bad Reason")
    params = parse_params(value, m.end())
    cause = _param(params, "cause")
    if cause is not None and not cause.isdigit():
        raise SipParseError("Bad Reason cause")
    return Reason(
        protocol=m.group(0),
        cause=int(cause) if cause else None,
        text=_param(params, "text"),
        params=params,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentType:
    """``type/subtype;params``, type and subtype lower-cased."""

    type: str
    subtype: str
    params: Params = ()

    @property
    def mime(self) -> str:
        """``type/subtype`` for comparisons like ``== "text/plain"``."""
        return f"{self.type}/{self.subtype}"


def parse_content_type(value: str) -> ContentType:
    """Parse Content-Type (RFC 3261 20.15)."""
    m = _MEDIA_RE.match(value)
    if m is None:
        raise SipParseError("Bad Content-Type")
    return ContentType(
        type=m.group(1).lower(),
        subtype=m.group(2).lower(),
        params=parse_params(value, m.end()),
    )
