"""Shared fixtures: a dev certificate pair, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from gateway.devcert import write_self_signed

# Property tests drive whole components (a SIP front, a device session, a
# store) per example: no per-example deadline, and big or slow examples are
# what they are for. Each test sets its own max_examples. CI ("ci", the
# default) runs the same examples every time, so a clean clone passes or
# fails the same way; HYPOTHESIS_PROFILE=search draws new ones each run.
_PROPERTY = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", derandomize=True, **_PROPERTY)  # type: ignore[arg-type]
settings.register_profile("search", **_PROPERTY)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for localhost/127.0.0.1, CA-capable so clients can pin it."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    write_self_signed(cert, key)
    return cert, key
