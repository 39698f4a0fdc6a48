"""Header lines as read off the wire, before any typed parsing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Header", "RawMessage"]


class Header(NamedTuple):
    """One header line: the canonical name and the unfolded, trimmed value.

    Names of headers we know are canonical (``v`` and ``VIA`` become ``Via``);
    others keep the sender's spelling, so ``X-`` headers pass through as sent.
    ``key`` is the lower-case long name, for comparisons. A NamedTuple, not a
    dataclass: a message has a dozen of these and a frozen dataclass costs
    three times as much to build, which showed in the parser benchmark.
    """

    name: str
    value: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RawMessage:
    """The start line and header lines of a message that failed typed parsing.

    Kept so that a ``400`` can still copy Via/From/To/Call-ID/CSeq.
    """

    start_line: str
    headers: tuple[Header, ...]
