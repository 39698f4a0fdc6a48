"""Control API benchmark: POST /v1/calls to devices on a simulated local-push side.

    .venv/bin/python bench/api.py [--devices 200] [--duration 15]
        [--concurrency 64] [--rate 500] [--clients 1] [--gc-freeze]
        [--write-docs] [--note TEXT]

Quick run: ``--devices 50 --duration 5``.

Targets (issue 7): >= 1,000 calls/s through ``POST /v1/calls``; request latency
p99 <= 20 ms at 500 calls/s.

Three kinds of process, all on 127.0.0.1, so each is measured apart:

- the gateway: ``build_service`` on the example config (ephemeral ports, an API
  key, JSON logs at level info to a file, as in production), everything real:
  registry on SQLite, hub, dispatcher, local push over TLS, the API;
- the devices: ``gateway.simulator`` (``voipgw-device``), ``--devices``
  sessions over TLS that ack every frame, AORs ``sip:user{n}@example.com``;
- load clients: raw HTTP/1.1 keep-alive connections (pre-encoded requests;
  treq's own cost per request made the client the bottleneck). Phase 1 (throughput)
  keeps ``--concurrency`` requests in flight per client for ``--duration`` s;
  phase 2 (latency) sends at a fixed ``--rate`` (open loop, split over the
  clients) and times every request from send to the last body byte.

Every call rings one device (``to`` = a random AOR), which gets the ``call``
frame and acks it; calls carry ``ring_timeout_s: 5`` and the gateway keeps
ended calls 5 s (``calls.resume_window_s``), so the number of live calls stays
bounded; their ends send ``call_cancel`` frames the devices ack too.

``--gc-freeze`` runs the gateway with ``gc.freeze()`` and a higher gen-0
threshold after start-up: full collections were the latency tail.
Diagnostics for the gateway process, by environment variable:
``VOIPGW_BENCH_PROFILE=<file>`` (cProfile), ``VOIPGW_BENCH_GC=1`` (full
collections and an object census on stderr); ``VOIPGW_BENCH_TIMELINE=1``
prints the worst latency per quarter second.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _docs import write_section
from _proc import cpu_s, interpreter, percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "bench-key-0123456789abcdef"


def _prepare(work: Path) -> None:
    """The example config and an API keys file under ``work/etc``."""
    etc = work / "etc"
    etc.mkdir()
    shutil.copy(ROOT / "etc" / "voipgw.toml", etc / "voipgw.toml")
    keys = etc / "api-keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o600)


def _build_gateway(work: Path) -> Any:
    """The assembled gateway on ephemeral ports (built, not started)."""
    from twisted.internet import reactor

    from gateway.app import build_service
    from gateway.config import load_config

    env = {
        "VOIPGW_SIP__UDP__PORT": "0",
        "VOIPGW_SIP__TCP__PORT": "0",
        "VOIPGW_LOCALPUSH__PORT": "0",
        "VOIPGW_API__PORT": "0",
        "VOIPGW_API__KEYS_FILE": str(work / "etc" / "api-keys"),
        "VOIPGW_CALLS__RESUME_WINDOW_S": "5",
    }
    config = load_config(work / "etc" / "voipgw.toml", environ=env)
    return build_service(config, reactor)  # type: ignore[arg-type]


def call_request(n: int) -> bytes:
    """A pre-encoded ``POST /v1/calls`` ringing ``sip:user{n}@example.com``."""
    body = json.dumps(
        {
            "to": f"sip:user{n}@example.com",
            "caller": {"handle": "+4930123", "display_name": "Bench"},
            "ring_timeout_s": 5,
        }
    ).encode()
    return (
        b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


# -- the gateway process ---------------------------------------------------------


def serve(work: Path) -> int:
    """Run the assembled gateway; print its ports as one JSON line."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from gateway.config import LogConfig
    from gateway.logging import make_observer

    log = LogConfig(format="json", level="info", file=str(work / "gateway.log"))
    globalLogBeginner.beginLoggingTo([make_observer(log)], redirectStandardIO=False)
    gateway = _build_gateway(work)
    gateway.startService()

    def ready() -> None:
        if os.environ.get("VOIPGW_BENCH_GC_FREEZE"):
            import gc

            gc.collect()
            gc.freeze()  # start-up objects leave the collector's scans
            gc.set_threshold(20_000, 50, 100)  # fewer, cheaper full collections
        ports = {name: lst.address for name, lst in gateway.listeners.items()}
        print(json.dumps({"ready": True, "ports": ports}), flush=True)

    reactor.callWhenRunning(ready)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
        "before", "shutdown", gateway.stopService
    )
    if os.environ.get("VOIPGW_BENCH_GC"):
        import gc

        starts: dict[int, float] = {}

        def gc_cb(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                starts[0] = time.perf_counter()
            elif info["generation"] == 2:
                ms = (time.perf_counter() - starts[0]) * 1000
                sys.stderr.write(f"gc gen2 {ms:.1f} ms {info}\n")

        gc.callbacks.append(gc_cb)

        def census() -> None:
            from collections import Counter

            kinds = Counter(type(o).__name__ for o in gc.get_objects())
            calls = len(gateway.dispatcher._calls) if gateway.dispatcher else 0
            sys.stderr.write(
                f"census objects={sum(kinds.values())} calls={calls} "
                f"top={kinds.most_common(8)}\n"
            )
            reactor.callLater(5, census)  # type: ignore[attr-defined]

        reactor.callLater(5, census)  # type: ignore[attr-defined]
    if os.environ.get("VOIPGW_BENCH_BREAK_CYCLES") and gateway.dispatcher:
        # Experiment: the dispatcher's ended calls form a cycle with their
        # reaper DelayedCall; clearing it lets refcounting free them.
        dispatcher: Any = gateway.dispatcher
        forget = dispatcher._forget

        def forget_and_break(call: Any) -> None:
            forget(call)
            call.reaper = None

        dispatcher._forget = forget_and_break
    profile_to = os.environ.get("VOIPGW_BENCH_PROFILE")
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
            "before", "shutdown", lambda: profiler.dump_stats(profile_to)
        )
    reactor.run()  # type: ignore[attr-defined]
    return 0


# -- a load client process --------------------------------------------------------


class _Conn:
    """One keep-alive HTTP/1.1 connection: one request at a time, raw bytes.

    treq costs about a millisecond of client CPU per request, which made the
    load client, not the gateway, the bottleneck; this writes pre-encoded
    requests and reads Content-Length framed answers.
    """

    def __init__(self) -> None:
        from twisted.internet.protocol import Protocol

        outer = self

        class _P(Protocol):
            def dataReceived(self, data: bytes) -> None:
                outer.received(data)

        self.protocol = _P()
        self.buffer = b""
        self.waiter: Any = None

    def request(self, data: bytes) -> Any:
        from twisted.internet.defer import Deferred

        self.waiter = Deferred()
        assert self.protocol.transport is not None
        self.protocol.transport.write(data)
        return self.waiter

    def received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        total = head_end + 4 + length
        if len(self.buffer) < total:
            return
        status = head[9:12].decode()
        self.buffer = self.buffer[total:]
        waiter, self.waiter = self.waiter, None
        waiter.callback(status)


def load(args: argparse.Namespace) -> int:
    """One load client: a phase, then one JSON line of results."""
    import random

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.task import LoopingCall

    rng = random.Random(args.seed)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", args.port)
    idle: list[_Conn] = []

    async def one() -> None:
        data = call_request(rng.randrange(args.devices))
        if idle:
            conn = idle.pop()
        else:
            conn = _Conn()
            await connectProtocol(endpoint, conn.protocol)
        began = time.perf_counter()
        try:
            status = await conn.request(data)
            idle.append(conn)
        except Exception as e:  # counted, the run goes on
            status = type(e).__name__
        latencies.append(time.perf_counter() - began)
        sent_at.append(began)
        statuses[status] = statuses.get(status, 0) + 1

    sent_at: list[float] = []
    deadline = time.perf_counter() + args.duration
    done: Deferred[None] = Deferred()
    started = time.perf_counter()

    if args.phase == "throughput":
        running = [args.concurrency]

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one()
            running[0] -= 1
            if running[0] == 0:
                done.callback(None)

        for _ in range(args.concurrency):
            ensureDeferred(worker())
    else:
        tick = 0.002
        credit = [0.0]
        pending = [0]
        last = [time.perf_counter()]

        def fire() -> None:
            now = time.perf_counter()
            if now >= deadline:
                loop.stop()
                check()
                return
            credit[0] += (now - last[0]) * args.rate
            last[0] = now
            while credit[0] >= 1:
                credit[0] -= 1
                pending[0] += 1
                ensureDeferred(one()).addBoth(finished)

        def finished(_: object) -> None:
            pending[0] -= 1
            check()

        def check() -> None:
            if not loop.running and pending[0] == 0 and not done.called:
                done.callback(None)

        loop = LoopingCall(fire)
        loop.start(tick)

    def report(_: object) -> None:
        elapsed = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "requests": len(latencies),
                    "seconds": elapsed,
                    "statuses": statuses,
                    "latencies_ms": [round(v * 1000, 3) for v in latencies],
                    "sent_s": [round(t - started, 3) for t in sent_at],
                }
            ),
            flush=True,
        )
        reactor.stop()  # type: ignore[attr-defined]

    done.addCallback(report)
    reactor.run()  # type: ignore[attr-defined]
    return 0


# -- the request path in process ---------------------------------------------------


def _devices_in_memory(gateway: Any, count: int) -> list[Any]:
    """``count`` local-push sessions on in-memory transports (no TLS), past
    their welcome, as devices ``bench-{n}`` with AORs ``sip:user{n}@...``."""
    import time as wall

    from twisted.internet.testing import StringTransport

    from gateway.devfiles import read_jwt_secret
    from gateway.devicetoken import mint_device_token
    from gateway.localpush.codec import encode_frame

    lp = gateway.config.localpush
    # The listener's factory, unwrapped from TLS: a bench may look inside.
    factory = gateway.listeners["localpush"]._factory
    factory = getattr(factory, "wrappedFactory", factory)
    secret = read_jwt_secret(lp.jwt_secret_file)
    transports = []
    for n in range(count):
        device_id = f"bench-{n}"
        aor = f"sip:user{n}@example.com"
        token = mint_device_token(secret, device_id, aor, now=wall.time())
        hello = {"type": "hello", "v": 1, "device_id": device_id, "token": token}
        transport = StringTransport()
        proto = factory.buildProtocol(None)
        proto.makeConnection(transport)
        proto.dataReceived(encode_frame(hello, lp.max_frame))
        if b"welcome" not in transport.value():
            raise RuntimeError(f"no welcome for {device_id}: {transport.value()!r}")
        transport.clear()
        transports.append(transport)
    return transports


def handler_path(args: argparse.Namespace) -> int:
    """``--in-process N``: N ``POST /v1/calls`` through the API's own Site on
    an in-memory connection, devices on in-memory local-push sessions.

    No sockets, no TLS, no reactor turns, no other process: what is left is
    the request path the API owns (HTTP parsing, routing, auth, JSON,
    validation, the answer) plus ``dispatcher.start`` and the ``call`` frame
    written to the device's transport. The CPU time of the loop divided by N
    is stable enough to compare two versions; under ``valgrind
    --tool=callgrind`` (two runs with different N) the instruction count per
    request is steadier still. ``--profile FILE`` writes a cProfile of the loop.
    """
    import random

    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    work = Path(tempfile.mkdtemp(prefix="voipgw-bench-api-"))
    try:
        _prepare(work)
        gateway = _build_gateway(work)
        gateway.startService()
        devices = _devices_in_memory(gateway, args.devices)
        site = gateway.listeners["api"]._factory
        rng = random.Random(args.seed)
        requests = [call_request(rng.randrange(args.devices)) for _ in range(args.n)]
        transport = StringTransport()
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(transport)
        profiler: Any = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
        began = time.process_time()
        if profiler is not None:
            profiler.enable()
        for data in requests:
            channel.dataReceived(data)
            if not transport.value().startswith(b"HTTP/1.1 201 "):
                raise RuntimeError(f"unexpected answer: {transport.value()!r}")
            transport.clear()
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - began
        if profiler is not None:
            profiler.dump_stats(args.profile)
        for device in devices:
            device.clear()
        metrics = gateway.listeners["api"].instrumentation.metrics
        seconds = metrics.api_seconds.labels("/v1/calls")
        print(
            json.dumps(
                {
                    "requests": args.n,
                    "cpu_us_per_request": round(cpu / max(1, args.n) * 1e6, 1),
                    "handler_mean_us": round(
                        seconds._sum.get() / max(1, args.n) * 1e6, 1
                    ),
                }
            ),
            flush=True,
        )
        gateway.stopService()
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the orchestrator -------------------------------------------------------------


def _read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result
        if proc.poll() is not None:
            break
    raise RuntimeError(f"no JSON line from {proc.args!r} within {timeout} s")


def _phase(
    args: argparse.Namespace, port: int, phase: str, server_pid: int, devices_pid: int
) -> dict[str, Any]:
    per_client_rate = args.rate / args.clients
    cpu_before = cpu_s(server_pid)
    devices_before = cpu_s(devices_pid)
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--load",
                "--phase",
                phase,
                "--port",
                str(port),
                "--devices",
                str(args.devices),
                "--duration",
                str(args.duration),
                "--concurrency",
                str(args.concurrency),
                "--rate",
                str(per_client_rate),
                "--seed",
                str(i),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.clients)
    ]
    results = [_read_json_line(c, args.duration + 60) for c in clients]
    for c in clients:
        c.wait(timeout=30)
    cpu = cpu_s(server_pid) - cpu_before
    devices_cpu = cpu_s(devices_pid) - devices_before
    latencies = [v for r in results for v in r["latencies_ms"]]
    if os.environ.get("VOIPGW_BENCH_TIMELINE"):
        for r in results:
            by_s: dict[int, list[float]] = {}
            for t, v in zip(r["sent_s"], r["latencies_ms"], strict=True):
                by_s.setdefault(int(t * 4), []).append(v)
            for q, vs in sorted(by_s.items()):
                sys.stderr.write(f"t={q / 4:5.2f}s n={len(vs)} max={max(vs):.1f} ms\n")
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    seconds = max(r["seconds"] for r in results)
    return {
        "phase": phase,
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "rate": round(len(latencies) / seconds, 1),
        "statuses": statuses,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "over_20ms": sum(1 for v in latencies if v > 20),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "server_cpu_share": round(cpu / seconds, 2),
        "server_cpu_ms_per_request": round(1000 * cpu / max(1, len(latencies)), 3),
        "devices_cpu_share": round(devices_cpu / seconds, 2),
    }


def run(args: argparse.Namespace) -> int:
    load_before = f"{os.getloadavg()[0]:.1f}"
    work = Path(tempfile.mkdtemp(prefix="voipgw-bench-api-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        _prepare(work)
        server_env = dict(os.environ)
        if args.gc_freeze:
            server_env["VOIPGW_BENCH_GC_FREEZE"] = "1"
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(work)],
            stdout=subprocess.PIPE,
            text=True,
            env=server_env,
        )
        procs.append(server)
        ports = _read_json_line(server, 30)["ports"]
        api_port = ports["api"][1]
        lp_port = ports["localpush"][1]
        devices = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.simulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(lp_port),
                "--ca-file",
                str(work / "var" / "dev-tls-cert.pem"),
                "--server-name",
                "localhost",
                "--secret-file",
                str(work / "var" / "device-jwt.secret"),
                "-n",
                str(args.devices),
                "--aor-pattern",
                "sip:user{n}@example.com",
                "--first",
                "0",
                "--quiet",
                "--duration",
                str(args.duration * 2 + 60),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        procs.append(devices)
        online = _wait_online(api_port, args.devices)
        results = []
        for phase in args.phases.split(","):
            results.append(_phase(args, api_port, phase, server.pid, devices.pid))
            time.sleep(args.settle)  # let the phase's calls end before the next
        metrics = _scrape(api_port)
        key = 'voipgw_api_request_seconds_{}{{route="/v1/calls"}}'
        handler_ms = 1000 * metrics[key.format("sum")] / metrics[key.format("count")]
        devices.terminate()
        summary = {
            "handler_mean_ms": round(handler_ms, 3),
            "load": load_before,
            "devices_online": online,
            "results": results,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {interpreter()}",
            "date": datetime.date.today().isoformat(),
        }
        print(json.dumps(summary, indent=2))
        if args.write_docs:
            print(f"written to {write_docs(section(args, summary))}")
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _scrape(port: int) -> dict[str, float]:
    """/metrics as {sample line key: value} (no labels parsing needed here)."""
    import urllib.request

    found: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                found[key] = float(value)
    return found


def _wait_online(port: int, want: int) -> int:
    """Poll /metrics until the devices are online (bounded)."""
    import urllib.request

    online = 0
    for _ in range(300):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith("voipgw_sessions_online "):
                    online = int(float(line.split()[1]))
        if online >= want:
            return online
        time.sleep(0.1)  # a bounded wait for real sockets
    return online


def section(args: argparse.Namespace, summary: dict[str, Any]) -> str:
    by_phase = {r["phase"]: r for r in summary["results"]}
    tp, lat = by_phase["throughput"], by_phase["latency"]
    per_cpu_s = tp["requests"] / max(1e-9, tp["server_cpu_share"] * tp["seconds"])
    ok_tp = tp["rate"] >= 1000
    ok_lat = lat["p99_ms"] <= 20
    gc_note = (
        "The gateway ran its `[gc]` policy (`gateway.gcpolicy`, defaults:"
        " survivors frozen every second, gen-0 threshold 10,000)"
        + (
            " and, with `--gc-freeze`, the bench's own"
            " `gc.set_threshold(20000, 50, 100)` on top."
            if args.gc_freeze
            else "."
        )
    )
    return (
        f"""## API

`bench/api.py --devices {args.devices} --duration {args.duration:g} \
--concurrency {args.concurrency} --rate {args.rate:g} --clients {args.clients}\
{" --gc-freeze" if args.gc_freeze else ""}` ({summary["date"]}; {summary["machine"]};
1-minute load average {summary["load"]} just before the run).

Setup: the assembled gateway (SQLite registry, hub, dispatcher, local push over
TLS, JSON logs at level info to a file) in one process; {summary["devices_online"]}
simulated devices (`gateway.simulator`, TLS, acking every frame) in another;
{args.clients} load client process(es) writing pre-encoded requests on
keep-alive HTTP/1.1 connections. Each `POST /v1/calls` rings one device by
AOR over local push, which acks it; calls end after `ring_timeout_s: 5` with a
`call_cancel` the device acks too, and ended calls are kept 5 s. {gc_note}

| Measure | Target | Result | |
|---|---|---|---|
| `POST /v1/calls` throughput ({args.concurrency} in flight) | >= 1,000 calls/s \
| {tp["rate"]:,.0f} calls/s ({tp["requests"]:,} in {tp["seconds"]} s; gateway \
CPU {tp["server_cpu_share"]:.0%} of a core) | {"met" if ok_tp else "missed"} |
| Gateway CPU per call (whole call: HTTP, dispatch, local push, cancel, logs) \
| | {1000 / per_cpu_s:.2f} ms, i.e. {per_cpu_s:,.0f} calls per CPU-second | |
| Of which in the API handler (route, auth, JSON, validation, dispatcher \
start, first frame written, answer) | | {summary["handler_mean_ms"]} ms mean | |
| Request latency at {args.rate:g}/s (open loop, send to last byte) \
| p99 <= 20 ms | p50 {lat["p50_ms"]} ms, p95 {lat["p95_ms"]} ms, \
p99 {lat["p99_ms"]} ms, max {lat["max_ms"]} ms ({lat["over_20ms"]:,} of \
{lat["requests"]:,} requests over 20 ms) \
| {"met" if ok_lat else "missed"} |

Statuses: throughput {tp["statuses"]}, latency {lat["statuses"]}.
{"".join(chr(10) + note + chr(10) for note in args.note or [])}""".rstrip()
        + "\n"
    )


def write_docs(text: str) -> Path:
    """Replace (or add) the "API" section of docs/benchmarks.md."""
    return write_section("## API", text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=["throughput", "latency"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--phases", default="throughput,latency")
    p.add_argument("--settle", type=float, default=12.0, help="pause between phases")
    p.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() and set_threshold(20000, 50, 100) in the gateway",
    )
    p.add_argument(
        "--in-process",
        dest="n",
        type=int,
        default=0,
        metavar="N",
        help="time N requests through the API in this process instead "
        "(see handler_path)",
    )
    p.add_argument("--profile", help="with --in-process: cProfile output file")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--note", action="append", help="extra paragraph for the docs")
    args = p.parse_args()
    if args.serve is not None:
        return serve(args.serve)
    if args.load:
        return load(args)
    if args.n:
        return handler_path(args)
    if not (1 <= args.devices <= 20_000 and 1 <= args.duration <= 600):
        p.error("--devices 1..20000, --duration 1..600")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
