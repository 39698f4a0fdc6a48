"""The public modules re-export the private implementations (klein's check)."""

from __future__ import annotations

import importlib

import pytest

import gateway.sip


@pytest.mark.parametrize(
    "module",
    [
        "gateway.sip",
        "gateway.sip.message",
        "gateway.sip.framing",
        "gateway.sip.transaction",
    ],
)
def test_public_names_are_the_private_objects(module: str) -> None:
    """Every name in a public __all__ exists and is the same object everywhere."""
    mod = importlib.import_module(module)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if hasattr(gateway.sip, name):
            assert getattr(gateway.sip, name) is obj
