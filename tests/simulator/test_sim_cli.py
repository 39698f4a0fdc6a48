"""voipgw-device command line, credentials and JSON-lines output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sim_helpers import SECRET
from twisted.internet.testing import MemoryReactorClock

from gateway.devicetoken import verify_device_token
from gateway.localpush.codec import Frame
from gateway.simulator import (
    Credentials,
    FrameReceived,
    JsonLinesObserver,
    Recorder,
    Welcomed,
    _parser,
    build_from_args,
    credentials_from_secret,
    main,
    read_tokens_file,
)


def test_minted_credentials_verify() -> None:
    """Minted tokens are accepted by the gateway's verifier, for <prefix>-<n>."""
    creds = credentials_from_secret(
        SECRET, 3, prefix="dev", aor_pattern="sip:u{n}@ex.com", first=5, now=1000.0
    )
    assert [c.device_id for c in creds] == ["dev-5", "dev-6", "dev-7"]
    claims = verify_device_token(SECRET, creds[1].token, "dev-6", now=1000.0)
    assert claims.aors == ("sip:u6@ex.com",)


def test_tokens_file(tmp_path: Path) -> None:
    """One 'device_id token aor' per line; comments and blank lines skipped."""
    path = tmp_path / "tokens.txt"
    path.write_text("# devices\n\na-1 tok1 sip:a@ex.com\nb-2 tok2 sip:b@ex.com\n")
    assert read_tokens_file(path) == [
        Credentials(device_id="a-1", token="tok1", aor="sip:a@ex.com"),
        Credentials(device_id="b-2", token="tok2", aor="sip:b@ex.com"),
    ]
    path.write_text("a-1 tok1\n")
    with pytest.raises(ValueError, match=":1:"):
        read_tokens_file(path)


def test_args_build_a_simulator(tmp_path: Path) -> None:
    """Command-line options reach the devices' behaviour and credentials."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    args = _parser().parse_args(
        [
            "--port", "5223", "--plain", "--secret-file", str(secret),
            "-n", "4", "--ack-delay-ms", "20", "--drop-acks", "0.1",
            "--on-call", "ringing", "--bind", "127.0.0.2",
        ]
    )  # fmt: skip
    reactor = MemoryReactorClock()
    sim = build_from_args(args, reactor, Recorder())
    assert [d.device_id for d in sim.devices] == [f"sim-{n}" for n in range(1, 5)]
    verify_device_token(SECRET, sim.devices[0].credentials.token, "sim-1", now=0)
    sim.start()
    assert reactor.tcpClients[0][:2] == ("127.0.0.1", 5223)
    assert reactor.tcpClients[0][4] == ("127.0.0.2", 0)


def test_args_need_tls_choice_and_credentials() -> None:
    """One of --ca-file/--insecure/--plain and one credential source are required."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["--port", "1", "--secret-file", "x"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["--port", "1", "--plain"])


def test_bad_duration_refused() -> None:
    """Runs are bounded: --duration over a day is refused before connecting."""
    assert (
        main(["--port", "1", "--plain", "--secret-file", "x", "--duration", "1e9"]) == 2
    )


def test_json_lines_output() -> None:
    """Each event is one JSON line with device, time and the frame."""
    out = io.StringIO()
    observer = JsonLinesObserver(out)
    frame = Frame(type="call", body={"type": "call", "id": "f-1"})
    observer.on_event("sim-1", FrameReceived(frame=frame), 12.5)
    observer.on_event("sim-1", Welcomed(session_id="s", heartbeat_s=30.0), 13.0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"t": 12.5, "device_id": "sim-1", "event": "frame",
         "frame": {"type": "call", "id": "f-1"}},
        {"t": 13.0, "device_id": "sim-1", "event": "welcome",
         "session_id": "s", "heartbeat_s": 30.0},
    ]  # fmt: skip


def test_recorder_limit() -> None:
    """The recorder keeps at most ``limit`` events and counts the rest."""
    recorder = Recorder(limit=1)
    seen: list[object] = []
    recorder.callbacks.append(seen.append)
    for i in range(3):
        recorder.on_event("d", Welcomed(session_id=str(i), heartbeat_s=1), i)
    assert len(recorder.records) == 1 and recorder.dropped == 2 and len(seen) == 3


def test_tls_choices(tls_pair: tuple[Path, Path]) -> None:
    """--plain means no TLS; --insecure and --ca-file give client TLS creators."""
    from gateway.simulator import _client_tls

    base = ["--port", "1", "--secret-file", "x"]
    assert _client_tls(_parser().parse_args([*base, "--plain"])) is None
    assert _client_tls(_parser().parse_args([*base, "--insecure"])) is not None
    ca = _parser().parse_args([*base, "--ca-file", str(tls_pair[0])])
    assert _client_tls(ca) is not None
