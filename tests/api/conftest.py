"""Fixtures for the control API tests: a started gateway and a client."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest
import pytest_twisted
from api_helpers import Client, base_url, make_gateway

from gateway.app import Gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Generator[Gateway, None, None]:
    """The example gateway with an API key, started on ephemeral ports."""
    service = make_gateway(tmp_path)
    service.startService()
    yield service
    pytest_twisted.blockon(service.stopService())


@pytest.fixture
def client(gateway: Gateway) -> Client:
    """An API client holding the right key."""
    return Client(base_url(gateway))
