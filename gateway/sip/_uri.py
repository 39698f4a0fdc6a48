"""SIP and SIPS URIs (RFC 3261 section 19.1, grammar in section 25.1).

Parsing is strict: a URI that breaks the grammar raises ``SipParseError``.
Components are stored unescaped (``%75ser`` is ``user``); ``str()`` escapes
them again, so a parsed URI serialises to an equivalent one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from urllib.parse import unquote

from gateway.aor import normalize_aor
from gateway.sip._errors import SipParseError

__all__ = [
    "CACHED_VALUE_LENGTH",
    "AbsoluteUri",
    "PushParams",
    "SipUri",
    "Uri",
    "escape",
    "format_host",
    "parse_host",
    "parse_sip_uri",
    "parse_uri",
    "unescape",
]

# Character classes of RFC 3261 25.1. "%" is let through the classes and
# escapes are checked once per URI (_BAD_ESCAPE_RE): one pass, no alternation.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()%"
_USER = rf"[{_UNRESERVED}&=+$,;?/]+"
_PASSWORD = rf"[{_UNRESERVED}&=+$,]*"
_PARAMCHAR = rf"[{_UNRESERVED}\[\]/:&+$]"
_HNV = rf"[{_UNRESERVED}\[\]/?:+$]"
_HOSTNAME = r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?"
_IPV6REF = r"\[[0-9A-Fa-f:.]+\]"
HOST = rf"(?:{_IPV6REF}|{_HOSTNAME})"

_SIP_URI_RE = re.compile(
    rf"(?P<scheme>[Ss][Ii][Pp][Ss]?):"
    rf"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    rf"(?P<host>{HOST})"
    r"(?::(?P<port>[0-9]{1,5}))?"
    rf"(?P<params>(?:;{_PARAMCHAR}+(?:={_PARAMCHAR}+)?)*)"
    rf"(?:\?(?P<headers>{_HNV}+={_HNV}*(?:&{_HNV}+={_HNV}*)*))?"
)
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_BAD_HOSTNAME_RE = re.compile(r"\.\.|-\.|\.-")
# Values up to this length go through the LRU caches (4,096 entries each),
# which therefore hold at most a few MB whatever peers send.
CACHED_VALUE_LENGTH = 256

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# absoluteURI: scheme ":" then uric characters; we accept any visible ASCII
# except the delimiters that cannot appear unescaped in a URI.
_OPAQUE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[!#-;=?-Z\[\]_a-z~]+")

# Characters that stay unescaped when serialising each component.
_USER_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/"
)
_PASSWORD_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,"
)
_PARAM_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()[]/:&+$"
)
_HNV_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()[]/?:+$"
)


def unescape(text: str) -> str:
    """Undo ``%HH`` escapes; invalid UTF-8 survives as surrogates, not errors."""
    if "%" not in text:
        return text
    return unquote(text, errors="surrogateescape")


def escape(text: str, safe: frozenset[str]) -> str:
    """Escape every character of ``text`` not in ``safe`` as ``%HH``."""
    if all(c in safe for c in text):
        return text
    out: list[str] = []
    for c in text:
        if c in safe:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", errors="surrogateescape"))
    return "".join(out)


def parse_host(host: str) -> str:
    """``[::1]`` -> ``::1`` (validated); names are lower-cased."""
    if host.startswith("["):
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise SipParseError(f"Bad IPv6 reference {host}") from None
        return inner.lower()
    return host.lower()


def format_host(host: str) -> str:
    """Bracket IPv6 addresses again for the wire."""
    return f"[{host}]" if ":" in host else host


def _parse_port(text: str | None) -> int | None:
    if text is None:
        return None
    port = int(text)
    if port > 65535:
        raise SipParseError(f"Bad port {text}")
    return port


def _parse_uri_params(text: str) -> tuple[tuple[str, str | None], ...]:
    if not text:
        return ()
    params: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params.append((unescape(name).lower(), unescape(value) if eq else None))
    return tuple(params)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushParams:
    """RFC 8599 push parameters from a Contact URI."""

    provider: str
    prid: str
    param: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI; components unescaped, names lower-cased."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    # The aor, computed on first use: parsed URIs are shared through the
    # parse cache, so a callee's Request-URI works its aor out once.
    _aor: str | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (``None`` if absent or value-less)."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def has_param(self, name: str) -> bool:
        """Whether the parameter is present, with or without a value."""
        return any(key == name for key, _ in self.params)

    @property
    def push_params(self) -> PushParams | None:
        """RFC 8599 ``pn-provider``/``pn-prid``/``pn-param``, if both present."""
        provider, prid = self.param("pn-provider"), self.param("pn-prid")
        if not provider or not prid:
            return None
        return PushParams(provider=provider, prid=prid, param=self.param("pn-param"))

    @property
    def aor(self) -> str:
        """The address of record: ``sip:user@host``, lower-cased, no params."""
        aor = self._aor
        if aor is None:
            if self.user is None:
                aor = normalize_aor(f"sip:{format_host(self.host)}")
            else:
                user = escape(self.user, _USER_SAFE)
                aor = normalize_aor(f"sip:{user}@{format_host(self.host)}")
            object.__setattr__(self, "_aor", aor)  # a cache, not a change
        return aor

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with the given parameters set (``None`` = value-less)."""
        kept = [(k, v) for k, v in self.params if k not in params]
        kept.extend(params.items())
        return replace(self, params=tuple(kept))

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(escape(self.user, _USER_SAFE))
            if self.password is not None:
                out.extend((":", escape(self.password, _PASSWORD_SAFE)))
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params:
            out.extend((";", escape(name, _PARAM_SAFE)))
            if value is not None:
                out.extend(("=", escape(value, _PARAM_SAFE)))
        if self.headers:
            out.append("?")
            out.append(
                "&".join(
                    f"{escape(n, _HNV_SAFE)}={escape(v, _HNV_SAFE)}"
                    for n, v in self.headers
                )
            )
        return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class AbsoluteUri:
    """Any non-SIP URI (``tel:``, ``http:``, ...), kept as written."""

    scheme: str
    value: str

    @property
    def aor(self) -> str:
        """Non-SIP URIs have no SIP AOR; the lower-cased text stands in."""
        return self.value.lower()

    def __str__(self) -> str:
        return self.value


Uri = SipUri | AbsoluteUri


def parse_sip_uri(text: str) -> SipUri:
    """Parse a ``sip:``/``sips:`` URI or raise ``SipParseError``.

    Short URIs are cached: the same callee and caller URIs recur call after
    call, and the result is immutable.
    """
    if len(text) <= CACHED_VALUE_LENGTH:
        return _parse_sip_uri_cached(text)
    return _parse_sip_uri(text)


@lru_cache(maxsize=4096)
def _parse_sip_uri_cached(text: str) -> SipUri:
    return _parse_sip_uri(text)


def _parse_sip_uri(text: str) -> SipUri:
    m = _SIP_URI_RE.fullmatch(text)
    if m is None or ("%" in text and _BAD_ESCAPE_RE.search(text)):
        raise SipParseError(f"Bad SIP URI {text[:80]}")
    scheme, user, password, host, port, params, headers = m.groups()
    if "." in host and _BAD_HOSTNAME_RE.search(host):
        raise SipParseError(f"Bad host in {text[:80]}")
    return SipUri(
        scheme=scheme.lower(),
        user=unescape(user) if user is not None else None,
        password=unescape(password) if password is not None else None,
        host=parse_host(host),
        port=_parse_port(port),
        params=_parse_uri_params(params),
        headers=tuple(
            (unescape(n), unescape(v))
            for n, _, v in (h.partition("=") for h in headers.split("&"))
        )
        if headers
        else (),
    )


def parse_uri(text: str) -> Uri:
    """Parse any URI: strict for SIP/SIPS, a syntax check for other schemes."""
    if len(text) <= CACHED_VALUE_LENGTH:
        return _parse_uri_cached(text)
    return _parse_uri(text)


@lru_cache(maxsize=4096)
def _parse_uri_cached(text: str) -> Uri:
    return _parse_uri(text)


def _parse_uri(text: str) -> Uri:
    scheme, colon, _ = text.partition(":")
    if not colon or _SCHEME_RE.fullmatch(scheme) is None:
        raise SipParseError(f"Bad URI {text[:80]}")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip_uri(text)
    if _OPAQUE_RE.fullmatch(text) is None:
        raise SipParseError(f"Bad URI {text[:80]}")
    return AbsoluteUri(scheme=lower, value=text)
