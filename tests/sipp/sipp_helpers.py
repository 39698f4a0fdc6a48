"""Helpers for the real-socket SIP tests: sipp runs, devices, a fake APNs.

Everything runs on the test's reactor (pytest-twisted): the gateway, an
auto-acking LPP/1 device, a fake APNs (Twisted's HTTP/2 server over TLS) and
sipp as a child process, so no helper here blocks. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.server import Request

from gateway.localpush.codec import FrameDecoder, encode_frame

SCENARIOS = Path(__file__).parent / "scenarios"
KEY_ID = "ABC123DEFG"
TEAM_ID = "DEF123GHIJ"
BUNDLE = "com.example.voip"
WAIT_S = 5.0  # the bound on every wait for a frame, a push or a datagram


def require_sipp() -> str:
    """The sipp binary; a missing one fails the test (CI installs it)."""
    path = shutil.which("sipp")
    if path is None:
        pytest.fail(
            "sipp is missing: install Debian's sip-tester "
            "(scripts/test does it as root: apt-get install sip-tester)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (sipp needs an explicit one)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


def free_media_port() -> int:
    """An even UDP port p with p and p+2 free (sipp binds both for RTP echo)."""
    for _ in range(50):
        port = free_port() & ~1
        try:
            for p in (port, port + 2):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free media port pair found")


# -- sipp -------------------------------------------------------------------------


@attrs.frozen
class Traced:
    """One SIP message from sipp's message log."""

    sent: bool
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @property
    def status(self) -> int | None:
        if not self.start_line.startswith("SIP/2.0 "):
            return None
        return int(self.start_line.split()[1])

    @property
    def method(self) -> str:
        """The request method, or the CSeq method of a response."""
        if self.status is None:
            return self.start_line.split()[0]
        return self.header("CSeq").split()[-1]

    def header(self, name: str) -> str:
        """The first value of a header (case-insensitive); '' if absent."""
        values = self.all(name)
        return values[0] if values else ""

    def all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [v for n, v in self.headers if n.lower() == wanted]


_SECTION = re.compile(r"^-{20,} \d{4}-\d\d-\d\d [\d:.]+\s*$", re.MULTILINE)


def parse_message_log(text: str) -> list[Traced]:
    """sipp's -trace_msg file -> the messages it sent and received, in order."""
    out: list[Traced] = []
    for section in _SECTION.split(text):
        head, _, rest = section.strip("\n").partition("\n")
        if "message sent" not in head and "message received" not in head:
            continue
        message = rest.lstrip("\r\n").replace("\r\n", "\n")
        header_block, _, body = message.partition("\n\n")
        lines = header_block.split("\n")
        headers = []
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        out.append(
            Traced(
                sent="message sent" in head,
                start_line=lines[0].strip(),
                headers=tuple(headers),
                body=body.strip("\n"),
            )
        )
    return out


@attrs.frozen
class SippResult:
    """A finished sipp run."""

    exit_code: int
    output: str
    messages: list[Traced]
    args: list[str]

    @property
    def received(self) -> list[Traced]:
        return [m for m in self.messages if not m.sent]

    def statuses(self, method: str | None = None) -> list[int]:
        """Statuses of the responses received, optionally for one method."""
        return [
            m.status
            for m in self.received
            if m.status is not None and (method is None or m.method == method)
        ]

    def response(self, status: int, method: str | None = None) -> Traced:
        for m in self.received:
            if m.status == status and (method is None or m.method == method):
                return m
        raise AssertionError(f"no {status} received:\n{self.describe()}")

    def describe(self) -> str:
        lines = [
            f"{'>>' if m.sent else '<<'} {m.start_line}" for m in self.messages
        ] or ["(no messages traced)"]
        head = f"sipp {' '.join(self.args)} -> exit {self.exit_code}"
        tail = ["--- sipp output (tail) ---", self.output[-3000:]]
        return "\n".join([head, *lines, *tail])


class _SippProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.output: list[bytes] = []
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)

    def errReceived(self, data: bytes) -> None:
        self.output.append(data)

    def processEnded(self, reason: Failure) -> None:
        code = 0
        if reason.check(ProcessTerminated):
            value = reason.value
            code = value.exitCode if value.exitCode is not None else -1
        elif not reason.check(ProcessDone):
            code = -1
        self.ended.callback(code)


class Sipp:
    """Runs sipp as a UAC against the gateway; every run is bounded in time
    (sipp's own -timeout, and a kill shortly after it)."""

    def __init__(self, workdir: Path, target: tuple[str, int]) -> None:
        self.binary = require_sipp()
        self.workdir = workdir
        self.target = target
        self._running: list[Any] = []
        self._runs = 0

    def run(
        self,
        scenario: str,
        transport: str,
        *,
        service: str = "bob",
        calls: int = 1,
        timeout_s: int = 15,
        keys: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> Deferred[SippResult]:
        """Start one sipp; the Deferred fires with its result when it ends."""
        self._runs += 1
        log = self.workdir / f"sipp-{self._runs}-messages.log"
        args = [
            self.binary,
            "-sf",
            str(SCENARIOS / scenario),
            "-t",
            {"udp": "u1", "tcp": "t1"}[transport],
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(free_media_port()),
            "-ci",
            "127.0.0.1",
            "-cp",
            str(free_port()),
            "-s",
            service,
            "-m",
            str(calls),
            "-timeout",
            f"{timeout_s}s",
            "-timeout_error",
            "-recv_timeout",
            f"{timeout_s * 1000}",
            "-max_recv_loops",
            "1000",
            "-nostdin",
            "-trace_msg",
            "-message_file",
            str(log),
            "-key",
            "run",
            str(self._runs),
        ]
        for key, value in (keys or {}).items():
            args += ["-key", key, value]
        args += extra
        args.append(f"{self.target[0]}:{self.target[1]}")
        proto = _SippProcess()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            proto, self.binary, args, env={"TERM": "dumb"}, path=str(self.workdir)
        )
        self._running.append(process)
        # sipp ends itself at -timeout; kill it if it ever does not.
        killer = reactor.callLater(timeout_s + 10, _kill, process)  # type: ignore[attr-defined]

        def ended(code: int) -> SippResult:
            if killer.active():
                killer.cancel()
            self._running.remove(process)
            text = log.read_text(errors="replace") if log.exists() else ""
            return SippResult(
                exit_code=code,
                output=b"".join(proto.output).decode(errors="replace"),
                messages=parse_message_log(text),
                args=args[1:],
            )

        return proto.ended.addCallback(ended)

    def kill_all(self) -> None:
        """Kill any sipp still running (test teardown)."""
        for process in list(self._running):
            _kill(process)


def _kill(process: Any) -> None:
    with contextlib.suppress(ProcessExitedAlready):
        process.signalProcess("KILL")


# -- devices ----------------------------------------------------------------------

ACKED = frozenset({"call", "call_cancel", "message"})


class AutoDevice(Protocol):
    """An LPP/1 client that acks every call, call_cancel and message at once,
    calls ``on_call`` after acking a call, and lets the test wait for frames."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(1 << 20)
        self.frames: list[dict[str, Any]] = []
        self.on_call: Callable[[dict[str, Any]], None] | None = None
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], Deferred[Any]]] = []
        self.lost: Deferred[None] = Deferred()

    def send(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(frame, 16384))

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            body = dict(frame.body)
            self.frames.append(body)
            if body.get("type") in ACKED:
                self._ack(body)
            for match, d in list(self._waiters):
                if match(body):
                    self._waiters.remove((match, d))
                    d.callback(body)

    def _ack(self, body: dict[str, Any]) -> None:
        self.send({"type": "ack", "id": body["id"]})
        if body["type"] == "call" and self.on_call is not None:
            self.on_call(body)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def wait_for(self, kind: str, timeout_s: float = WAIT_S) -> Deferred[Any]:
        """The first frame of this type (already received or next)."""
        for frame in self.frames:
            if frame.get("type") == kind:
                d: Deferred[Any] = Deferred()
                d.callback(frame)
                return d
        d = Deferred()
        self._waiters.append((lambda f: f.get("type") == kind, d))
        return d.addTimeout(timeout_s, reactor)  # type: ignore[arg-type]

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


# -- fake APNs --------------------------------------------------------------------


@attrs.frozen
class Push:
    """A request the fake APNs received."""

    path: str
    headers: dict[str, str]
    payload: dict[str, Any]

    @property
    def token(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class FakeApns(resource.Resource):
    """Answers every push 200 (as APNs does) and records it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pushes: list[Push] = []
        self._waiters: list[tuple[int, Deferred[None]]] = []

    def render_POST(self, request: Request) -> bytes:
        headers = {
            k.decode().lower(): v[0].decode()
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        body = request.content.read() if request.content is not None else b""
        self.pushes.append(
            Push(path=request.path.decode(), headers=headers, payload=json.loads(body))
        )
        request.setHeader(b"apns-id", headers.get("apns-id", "").encode())
        for count, d in list(self._waiters):
            if len(self.pushes) >= count:
                self._waiters.remove((count, d))
                reactor.callLater(0, d.callback, None)  # type: ignore[attr-defined]
        return b""

    def of_type(self, push_type: str) -> list[Push]:
        return [p for p in self.pushes if p.headers.get("apns-push-type") == push_type]

    def wait_count(self, count: int, timeout_s: float = WAIT_S) -> Deferred[None]:
        """Fires once ``count`` pushes arrived in all."""
        d: Deferred[None] = Deferred()
        if len(self.pushes) >= count:
            d.callback(None)
            return d
        self._waiters.append((count, d))
        return d.addTimeout(timeout_s, reactor)  # type: ignore[arg-type]


@attrs.define
class Apns:
    """The fake APNs and the public half of the gateway's provider key."""

    fake: FakeApns
    port: int
    public_key: ec.EllipticCurvePublicKey
    key_file: Path


def site(fake: FakeApns) -> server.Site:
    return server.Site(fake)


# -- raw sockets ------------------------------------------------------------------


class UdpPeer(DatagramProtocol):
    """A UDP socket on 127.0.0.1 that queues what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._waiters: list[Deferred[bytes]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self._waiters:
            self._waiters.pop(0).callback(datagram)
        else:
            self.received.append(datagram)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.write(data, addr)

    def next(self, timeout_s: float = WAIT_S) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if self.received:
            d.callback(self.received.pop(0))
            return d
        self._waiters.append(d)

        def gone(result: Any) -> Any:
            if d in self._waiters:
                self._waiters.remove(d)
            return result

        return d.addTimeout(timeout_s, reactor).addErrback(gone)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.getHost().port)


class StreamPeer(Protocol):
    """A TCP client that records bytes and when the server closed."""

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[None] = Deferred()
        self._grow: list[Deferred[None]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for d in self._grow:
            d.callback(None)
        self._grow = []

    def more(self, timeout_s: float = WAIT_S) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._grow.append(d)
        return d.addTimeout(timeout_s, reactor)  # type: ignore[arg-type]

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


def status_of(datagram: bytes) -> int:
    """The status code of a SIP response datagram."""
    first = datagram.split(b"\r\n", 1)[0].decode()
    assert first.startswith("SIP/2.0 "), first
    return int(first.split()[1])


def header_of(datagram: bytes, name: str) -> str:
    """The first value of a header in a raw SIP message."""
    for line in datagram.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.decode().partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


@inlineCallbacks
def offline_device(
    connect: Callable[..., Deferred[AutoDevice]],
    device_id: str,
    aor: str,
    **hello: Any,
) -> Generator[Deferred[Any], Any, None]:
    """A device the registry knows (tokens from its hello) with no session."""
    device = yield connect(device_id, aor, **hello)
    device.send({"type": "bye"})
    yield device.lost.addTimeout(WAIT_S, reactor)  # type: ignore[arg-type]
