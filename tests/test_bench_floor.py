"""bench/floor.py runs every mode end to end (tiny and bounded, on 127.0.0.1)
and reports a figure and the echoes for each."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_floor_bench_measures_every_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # floor.py's own imports
    modes = runpy.run_path(str(ROOT / "bench" / "floor.py"))["MODES"]
    assert len(modes) == 6
    out = tmp_path / "floor.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "floor.py"),
            "--connections",
            "4",
            "--rate",
            "40",
            "--seconds",
            "0.5",
            "--warmup",
            "0.2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert tuple(r["mode"] for r in results) == modes
    for r in results:
        got, sent = (int(x) for x in r["echoed"].split("/"))
        assert 0 < got <= sent, r  # the server answered, through TLS too
        assert r["us_per_message"] >= 0
        assert r["connections"] == (1 if r["mode"].startswith("udp") else 4)
