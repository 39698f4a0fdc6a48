"""The SIP front: the transaction user and its Twisted transports."""

from __future__ import annotations
