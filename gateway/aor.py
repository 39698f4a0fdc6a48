"""Addresses of record: the one normal form every part of the gateway keys on."""

from __future__ import annotations

__all__ = ["normalize_aor"]


def normalize_aor(aor: str) -> str:
    """``sip:User@Example.com;transport=tcp`` -> ``sip:user@example.com``."""
    value = aor.strip()
    lower = value.lower()
    if lower.startswith("sips:"):
        value = "sip:" + value[5:]
    elif not lower.startswith("sip:"):
        value = "sip:" + value
    value = value.split(";", 1)[0].split("?", 1)[0]
    return value.lower()
