"""The twistd plugin: found, strict about options, starts and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from gw_example import EPHEMERAL, example_in
from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.plugin import getPlugins
from twisted.python import usage

from gateway.tap import Options, makeService

ROOT = Path(__file__).parent.parent


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example config in a scratch tree (its var/ lands there too)."""
    for key, value in EPHEMERAL.items():
        monkeypatch.setenv(key, value)
    return example_in(tmp_path)


def test_twistd_finds_the_plugin() -> None:
    """getPlugins lists voipgw, pointing at gateway.tap."""
    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "voipgw" in makers
    assert makers["voipgw"].module == "gateway.tap"  # type: ignore[attr-defined]


def test_config_option_is_required() -> None:
    """Without --config the usage error says so."""
    with pytest.raises(usage.UsageError, match="--config FILE is required"):
        Options().parseOptions([])


def test_invalid_config_is_a_usage_error(tmp_path: Path) -> None:
    """An invalid file stops start-up with each problem listed."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[calls]\nring_timeout_s = 0\n")
    with pytest.raises(usage.UsageError) as exc:
        Options().parseOptions(["--config", str(bad)])
    assert "calls.ring_timeout_s: must be between 1 and 300 (got 0.0)" in str(exc.value)


@pytest_twisted.inlineCallbacks
def test_service_starts_and_stops_with_example(
    example: Path,
) -> Generator[Any, Any, None]:
    """makeService on the example config runs and stops, generating dev files."""
    options = Options()
    options.parseOptions(["--config", str(example)])
    service = makeService(options)
    before = set(reactor.getDelayedCalls())
    service.startService()
    try:
        var = example.parent.parent / "var"
        assert (var / "dev-tls-cert.pem").exists()
        assert (var / "device-jwt.secret").stat().st_mode & 0o077 == 0
        assert (var / "voipgw.sqlite3").exists()
    finally:
        yield service.stopService()
    left = [
        c
        for c in reactor.getDelayedCalls()
        if c not in before and c.active() and _ours(c.func)
    ]
    assert left == []
    assert not service.running


def _ours(func: Any) -> bool:
    """Whether a timer's function belongs to the gateway's code."""
    from twisted.internet.task import LoopingCall

    owner = getattr(func, "__self__", func)
    if isinstance(owner, LoopingCall):
        return _ours(owner.f)
    module = getattr(owner, "__module__", None) or type(owner).__module__
    return module.startswith("gateway")


@pytest.mark.integration
def test_twistd_runs_in_foreground_and_stops_on_sigterm(example: Path) -> None:
    """`twistd -n voipgw --config FILE` runs the gateway; SIGTERM ends it cleanly."""
    twistd = Path(sys.executable).parent / "twistd"
    proc = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "voipgw", "--config", str(example)],
        cwd=example.parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **EPHEMERAL},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    try:
        for line in proc.stdout:
            seen.append(line)
            if " ready (config " in line or time.monotonic() > deadline:
                break
        assert any(" ready (config " in line for line in seen), "".join(seen)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(seen) + out
    # Twisted ends by re-raising the signal it got, so the status says SIGTERM;
    # systemd counts that as a clean stop.
    assert proc.returncode == -signal.SIGTERM, text
    assert "Main loop terminated." in text
    assert "Server Shut Down." in text
    assert "Traceback" not in text


def test_port_in_use_stops_start_with_the_listener_named(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port already taken fails start-up with which listener and why."""
    import socket

    from gateway.listeners import ListenError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("VOIPGW_LOCALPUSH__PORT", str(taken.getsockname()[1]))
        options = Options()
        options.parseOptions(["--config", str(example)])
        service = makeService(options)
        with pytest.raises(ListenError, match=r"local push \(tls\) cannot listen"):
            service.privilegedStartService()
        for child in service:  # type: ignore[attr-defined]
            if child.running:
                child.stopService()
