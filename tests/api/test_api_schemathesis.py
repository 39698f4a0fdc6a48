"""Schemathesis against the served API: no 5xx, no answer off the document.

The gateway runs in this process on the test reactor; ``st run`` runs as a
child process driven by that reactor, so the gateway keeps serving while it
fuzzes. Every check is on (status codes, content types, response schemas,
negative data rejected, valid data accepted, 405s, auth) with a fixed seed
and a bounded number of examples so CI stays well under a minute.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from api_helpers import KEY, Client, base_url
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher

from gateway.app import Gateway

pytestmark = pytest.mark.integration

DOCUMENT = Path(__file__).parents[2] / "gateway" / "api" / "openapi.json"


def _st() -> str | None:
    beside = Path(sys.executable).parent / "st"
    return str(beside) if beside.exists() else shutil.which("st")


@pytest.mark.skipif(_st() is None, reason="schemathesis is not installed")
@pytest_twisted.ensureDeferred
async def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    gateway: Gateway, client: Client, tmp_path: Path
) -> None:
    """Every phase (examples, coverage, fuzzing, stateful) and every check
    passes, and the gateway logged no failure while being fuzzed."""
    # A device for the document's example AOR, so calls get past 404.
    await client.put("/v1/devices/fuzz-1", {"aors": ["sip:bob@example.com"]})
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        st = _st()
        assert st is not None
        seed = os.environ.get("VOIPGW_SCHEMATHESIS_SEED", "20261123")
        args = [
            "run",
            str(DOCUMENT),
            "--url",
            base_url(gateway),
            "--header",
            f"Authorization: Bearer {KEY}",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            seed,
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ]
        env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
        run = getProcessOutputAndValue(
            st, args, env=env, path=str(tmp_path), reactor=reactor
        )
        out, err, code = await run.addTimeout(240, reactor)
    finally:
        globalLogPublisher.removeObserver(observe)
    report = out.decode(errors="replace") + err.decode(errors="replace")
    assert code == 0, report[-6000:]
    assert "passed" in report
    assert failures == [], [e.get("log_format") for e in failures]
