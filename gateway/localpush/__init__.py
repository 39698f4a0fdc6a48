"""Local push (LPP/1): the device socket protocol, its sans-IO core and adapters."""

from __future__ import annotations
