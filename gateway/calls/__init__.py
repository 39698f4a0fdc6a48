"""Calls: the per-call state machine and the dispatcher that drives it."""

from __future__ import annotations
