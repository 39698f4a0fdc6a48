"""Shared fixtures: a dev certificate pair, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.devcert import write_self_signed


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for localhost/127.0.0.1, CA-capable so clients can pin it."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    write_self_signed(cert, key)
    return cert, key
