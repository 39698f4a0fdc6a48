"""APNs benchmark: ``ApnsClient.push`` over ``H2Agent`` against a local HTTP/2 server.

    .venv/bin/python bench/apns.py [--levels 1,10,100,1000] [--duration 5]
        [--repeat 3] [--rate 2000] [--latency-duration 10] [--queued 100000]
        [--phases h2load,agent,apns,latency,memory] [--json FILE]
        [--write-docs] [--note TEXT]
    .venv/bin/python bench/apns.py --phases cpu [--kinds agent,apns]
        [--levels 100] [--pushes 3000] [--repeat 5] [--valgrind]

Quick run: ``--duration 1 --repeat 1 --latency-duration 2 --queued 10000
--levels 1,100`` (about 30 s; the full run takes about 4 minutes).

Targets (issue 5): >= 5,000 pushes/s over one connection on one core; p50/p99
latency at 2,000 pushes/s; memory with 100,000 pushes queued.

Everything runs on 127.0.0.1, each side in its own process so that its CPU is
measured on its own:

- the server (``--server``), over TLS (dev certificate from
  ``gateway.devcert``, ALPN h2) with 1,000 concurrent streams allowed:
  ``apns`` (the default) is ``bench/apns_server.mjs`` on Node.js's ``http2``
  (nghttp2 underneath, one thread), which answers a POST to
  ``/3/device/<token>`` as Apple documents a good push: one HEADERS frame
  ending the stream, ``:status 200`` and the request's ``apns-id``, no body.
  ``nghttpd`` (Debian ``nghttp2-server``, C, one thread) serves an existing
  empty file instead: 200, an empty DATA frame to end the stream and five
  more response headers (content-length, date, server, ...), no ``apns-id``;
  more work per push for the client than APNs asks, kept for comparison with
  earlier runs;
- the reference client: ``h2load`` (Debian ``nghttp2-client``) with one
  connection (``-c1 -t1``), ``-m`` streams, the same path, the same headers
  (one fixed ``apns-id``: h2load cannot vary it) and the same body;
- our client, one process per measurement: ``ApnsClient.push`` (over
  ``H2Agent``; the notification is built per push, as the dispatcher does)
  and, for comparison, bare ``H2Agent.request`` with a ``BytesProducer``.
  The client process logs JSON at level info to a file, as in production,
  and runs the gateway's collector policy (``gateway.gcpolicy`` with the
  default ``[gc]`` settings: start-up heap frozen, generation-0 threshold
  10,000, survivors frozen every second) like ``Gateway.startService``.

CPU per push (issue 5's measure of the client's cost, for before/after
comparisons; not written to the docs): ``--phases cpu`` runs exactly
``--pushes`` requests per client process and reports process CPU time per
request (min and median of ``--repeat`` interleaved runs); ``--valgrind``
adds callgrind instruction counts per request, which stay put on a busy box
where CPU times drift by 20%.

Phases: closed-loop rate at each ``--levels`` concurrency (``max_in_flight`` =
concurrency, one connection) for ``--duration`` s after ``--warmup`` s, with
client CPU per 1,000 pushes and the server's CPU in the same window, repeated
``--repeat`` times with agent and APNs runs interleaved (medians reported: a
shared box varies by 20% and more from minute to minute); latency
at a paced ``--rate`` (open loop; if our best closed-loop rate is below it,
again at 75% and 50% of that best); RSS before and after ``--queued`` pushes
are handed to ``push`` while the reactor is busy (so none is answered:
``max_in_flight`` 100 go out, the rest wait in the client's queue).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _h2server
from _docs import write_section
from _proc import cpu_model, cpu_s, interpreter, percentile, rss_kb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTION = "## APNs (HTTP/2)"
TOKEN = "5e1f" * 16  # 64 hex digits, like a real device token
BUNDLE = "com.example.phone"
KEY_ID = "ABC123DEFG"
TEAM_ID = "DEF123GHIJ"


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def bench_payload() -> bytes:
    """A ~300-byte VoIP payload shaped like the dispatcher's."""
    from gateway.apns import voip_payload

    return voip_payload(
        call_uuid="c0ffee00-0000-4000-8000-000000000001",
        handle="+493012345678",
        display_name="Jürgen Example-Caller",
        video=False,
        to="sip:bob@example.com",
        headers={
            "X-Tenant": "acme-telecom",
            "X-Call-Id": "a84b4c76e66710@pc33.example.com",
            "X-Region": "eu-central-1",
            "X-Trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        },
    )


def p8_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- the client process ----------------------------------------------------------


class _Client:
    """Reactor, agent, auth and a notification factory for one child run."""

    def __init__(self, args: argparse.Namespace) -> None:
        from twisted.internet import reactor
        from twisted.logger import globalLogBeginner

        from gateway.apns import TokenAuth
        from gateway.config import LogConfig
        from gateway.http2 import H2Agent
        from gateway.logging import make_observer

        log = LogConfig(format="json", level="info", file=str(args.work / "client.log"))
        globalLogBeginner.beginLoggingTo([make_observer(log)], redirectStandardIO=False)
        self.reactor: Any = reactor
        self.args = args
        self.agent = H2Agent(
            reactor,  # type: ignore[arg-type]
            ca_file=args.work / "cert.pem",
            # As gateway/app.py builds it: ApnsClient times each attempt
            # itself; the bare agent runs need the agent's own timeout.
            request_timeout=30.0 if getattr(args, "kind", None) == "agent" else None,
            max_concurrent_streams=1000,
            max_queued=max(10_000, args.queued),
        )
        self.auth = TokenAuth.from_p8(
            reactor,  # type: ignore[arg-type]
            (args.work / "key.p8").read_bytes(),
            key_id=KEY_ID,
            team_id=TEAM_ID,
        )
        self.payload = bench_payload()
        self.url = f"https://127.0.0.1:{args.port}/3/device/{TOKEN}".encode()

    def settings(self, max_in_flight: int, max_queued: int = 1000) -> Any:
        from gateway.apns import ApnsSettings

        return ApnsSettings(
            production_host="127.0.0.1",
            production_port=self.args.port,
            max_in_flight=max_in_flight,
            max_queued=max_queued,
            request_timeout_s=30.0,
        )

    def apns(self, max_in_flight: int, max_queued: int = 1000) -> Any:
        from gateway.apns import ApnsClient

        return ApnsClient(
            self.reactor,
            self.agent,
            self.auth,
            self.settings(max_in_flight, max_queued),
        )

    def notification(self) -> Any:
        from gateway.apns import Environment, voip_notification

        return voip_notification(
            device_token=TOKEN,
            environment=Environment.PRODUCTION,
            bundle_id=BUNDLE,
            payload=self.payload,
            deadline=self.reactor.seconds() + 60.0,
        )

    def raw_sender(self) -> Callable[[], Any]:
        """One bare ``H2Agent.request`` per call, headers as ApnsClient sends."""
        from twisted.internet.protocol import Protocol
        from twisted.web.http_headers import Headers

        from gateway.apns import request_headers
        from gateway.http2 import BytesProducer

        agent, url, auth = self.agent, self.url, self.auth

        def send() -> Any:
            n = self.notification()
            headers = Headers(request_headers(n, auth.authorization()))
            d = agent.request(b"POST", url, headers, BytesProducer(n.payload))

            def read(response: Any) -> int:
                response.deliverBody(Protocol())
                return int(response.code)

            return d.addCallback(read)

        return send

    def apns_sender(self, client: Any) -> Callable[[], Any]:
        from gateway.apns import Delivered

        def send() -> Any:
            d = client.push(self.notification())
            return d.addCallback(lambda o: 200 if isinstance(o, Delivered) else 0)

        return send

    def run(self, main: Callable[[], Any]) -> int:
        """Run ``main`` (returning a Deferred) under the reactor; exit code."""
        from twisted.internet.defer import ensureDeferred

        code = [1]

        def start() -> None:
            d = ensureDeferred(main())

            def ok(_: object) -> None:
                code[0] = 0

            def bad(f: Any) -> None:
                sys.stderr.write(f.getTraceback())

            d.addCallbacks(ok, bad)
            d.addBoth(lambda _: self.agent.close())
            d.addBoth(lambda _: self.reactor.stop())

        self.reactor.callWhenRunning(start)
        self.reactor.run()
        return code[0]


def _sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds)


def _gc_policy(reactor: Any) -> None:
    """The gateway's collector policy, as ``Gateway.startService`` applies it."""
    from gateway.config import GcConfig
    from gateway.gcpolicy import GcPolicy

    GcPolicy(reactor, GcConfig()).startService()


class _ClosedLoop:
    """Keeps ``level`` requests outstanding, up to ``limit`` in all if given."""

    def __init__(
        self, send: Callable[[], Any], level: int, limit: int | None = None
    ) -> None:
        from twisted.internet.defer import Deferred

        self._send = send
        self._level = level
        self._limit = limit
        self.started = self.done = self.bad = self.outstanding = 0
        self.running = True
        self.finished: Deferred[None] = Deferred()

    def start(self) -> None:
        for _ in range(
            self._level if self._limit is None else min(self._level, self._limit)
        ):
            self._one()

    def stop(self) -> Any:
        """Send no more; the Deferred fires once the outstanding ones end."""
        self.running = False
        if self.outstanding == 0 and not self.finished.called:
            self.finished.callback(None)
        return self.finished

    def _one(self) -> None:
        self.outstanding += 1
        self.started += 1
        self._send().addBoth(self._completed)

    def _completed(self, result: object) -> None:
        self.outstanding -= 1
        self.done += 1
        if result != 200:
            self.bad += 1
        if self._limit is not None and self.started >= self._limit:
            self.running = False
        if self.running:
            self._one()
        elif self.outstanding == 0 and not self.finished.called:
            self.finished.callback(None)


async def _connected_sender(c: _Client, kind: str, level: int) -> Callable[[], Any]:
    """The sender for ``kind``, after one request (connect, TLS, SETTINGS)."""
    if kind == "agent":
        send = c.raw_sender()
    else:
        send = c.apns_sender(c.apns(max_in_flight=level, max_queued=level))
    await send()
    _gc_policy(c.reactor)
    return send


def child_rate(args: argparse.Namespace) -> int:
    """Closed loop: keep ``--level`` requests outstanding; count completions."""
    c = _Client(args)
    level = args.level

    async def main() -> None:
        loop = _ClosedLoop(await _connected_sender(c, args.kind, level), level)
        loop.start()
        await _sleep(c.reactor, args.warmup)
        emit({"mark": "start"})
        done0, cpu0, t0 = loop.done, self_cpu(), time.perf_counter()
        await _sleep(c.reactor, args.duration)
        done1, cpu1, t1 = loop.done, self_cpu(), time.perf_counter()
        emit(
            {
                "result": {
                    "kind": args.kind,
                    "level": level,
                    "done": done1 - done0,
                    "wall": t1 - t0,
                    "cpu": cpu1 - cpu0,
                    "bad": loop.bad,
                    "rss_kib": rss_kb(),
                }
            }
        )
        await loop.stop()

    return c.run(main)


def child_count(args: argparse.Namespace) -> int:
    """Closed loop of exactly ``--pushes`` requests at ``--level``; their CPU.

    A fixed amount of work, so that two runs under callgrind with different
    counts differ by the requests alone.
    """
    c = _Client(args)

    async def main() -> None:
        send = await _connected_sender(c, args.kind, args.level)
        loop = _ClosedLoop(send, args.level, limit=args.pushes)
        emit({"mark": "start"})
        cpu0, t0 = time.process_time(), time.perf_counter()
        loop.start()
        await loop.finished
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        emit(
            {
                "result": {
                    "kind": args.kind,
                    "level": args.level,
                    "done": loop.done,
                    "cpu": cpu,
                    "wall": wall,
                    "bad": loop.bad,
                }
            }
        )

    return c.run(main)


def child_latency(args: argparse.Namespace) -> int:
    """Open loop at ``--rate``: a 1 ms tick sends every push that is due."""
    c = _Client(args)

    async def main() -> None:
        from twisted.internet.defer import Deferred

        from gateway.apns import Delivered

        client = c.apns(max_in_flight=1000, max_queued=100_000)
        await client.push(c.notification())
        _gc_policy(c.reactor)
        rate, warmup, duration = args.rate, args.warmup, args.duration
        total = int(rate * (warmup + duration))
        latencies: list[float] = []
        lags: list[float] = []
        state = {"sent": 0, "answered": 0, "bad": 0}
        finished: Deferred[None] = Deferred()
        marks: dict[str, float] = {}
        reactor = c.reactor
        measured_from = int(rate * warmup)
        start = time.perf_counter()

        def answered(outcome: object, index: int, sent_at: float) -> None:
            now = time.perf_counter()
            state["answered"] += 1
            if index >= measured_from:
                latencies.append(now - sent_at)
                if not isinstance(outcome, Delivered):
                    state["bad"] += 1
            if state["answered"] == total and not finished.called:
                finished.callback(None)

        def tick() -> None:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            while state["sent"] < due:
                index = state["sent"]
                state["sent"] += 1
                if index == measured_from:
                    marks["t0"], marks["cpu0"] = now, self_cpu()
                    emit({"mark": "start"})
                if index >= measured_from:
                    lags.append(now - (start + index / rate))
                client.push(c.notification()).addCallback(answered, index, now)
            if state["sent"] < total:
                reactor.callLater(0.001, tick)
            else:
                marks["t1"], marks["cpu1"] = time.perf_counter(), self_cpu()

        tick()
        await finished
        end = time.perf_counter()
        n = total - measured_from
        emit(
            {
                "result": {
                    "rate": rate,
                    "pushes": n,
                    "sent_rate": n / (marks["t1"] - marks["t0"]),
                    "answered_rate": n / (end - marks["t0"]),
                    "answered_in": end - marks["t0"],
                    "cpu": self_cpu() - marks["cpu0"],
                    "bad": state["bad"],
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p90_ms": percentile(latencies, 90) * 1000,
                    "p99_ms": percentile(latencies, 99) * 1000,
                    "p999_ms": percentile(latencies, 99.9) * 1000,
                    "max_ms": max(latencies) * 1000,
                    "mean_ms": statistics.fmean(latencies) * 1000,
                    "lag_p99_ms": percentile(lags, 99) * 1000,
                    "lag_max_ms": max(lags) * 1000,
                }
            }
        )

    return c.run(main)


def child_memory(args: argparse.Namespace) -> int:
    """RSS growth for ``--queued`` pushes handed over while the reactor is busy."""
    c = _Client(args)

    async def main() -> None:
        n = args.queued
        client = c.apns(max_in_flight=100, max_queued=n)
        await client.push(c.notification())
        gc.collect()
        rss0 = rss_kb()
        notes = [c.notification() for _ in range(n)]
        gc.collect()
        rss1 = rss_kb()
        t0 = time.perf_counter()
        results = [client.push(x) for x in notes]
        t_push = time.perf_counter() - t0
        gc.collect()
        rss2 = rss_kb()
        emit(
            {
                "result": {
                    "queued": client.queued,
                    "in_flight": client.in_flight,
                    "rss_before_kib": rss0,
                    "rss_notifications_kib": rss1,
                    "rss_queued_kib": rss2,
                    "push_call_s": t_push,
                    "results": len(results),
                }
            }
        )
        # Nothing is waited for: the process exits with the queue full.
        os._exit(0)

    return c.run(main)


# -- the orchestrating process ---------------------------------------------------


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    """Every subprocess started goes in the list; all are killed at the end."""
    started: list[subprocess.Popen[Any]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(work: Path) -> tuple[str, bytes]:
    """Certificate, APNs signing key, docroot, body; returns (jwt, body)."""
    from twisted.internet.task import Clock

    from gateway.apns import TokenAuth
    from gateway.devcert import write_self_signed

    write_self_signed(work / "cert.pem", work / "key.pem", ("127.0.0.1", "localhost"))
    (work / "key.p8").write_bytes(p8_key())
    doc = work / "htdocs" / "3" / "device"
    doc.mkdir(parents=True)
    (doc / TOKEN).write_bytes(b"")
    body = bench_payload()
    (work / "body.json").write_bytes(body)
    clock = Clock()
    clock.advance(time.time())
    auth = TokenAuth.from_p8(
        clock, (work / "key.p8").read_bytes(), key_id=KEY_ID, team_id=TEAM_ID
    )
    return auth.authorization(), body


def start_server(
    kind: str, work: Path, port: int, started: list[subprocess.Popen[Any]]
) -> subprocess.Popen[Any]:
    proc = _h2server.start(
        kind,
        port,
        work / "key.pem",
        work / "cert.pem",
        work / "server.log",
        docroot=work / "htdocs",
    )
    started.append(proc)
    return proc


def h2load_args(work: Path, port: int, jwt: str) -> list[str]:
    return [
        "h2load",
        "-c1",
        "-t1",
        f"--data={work / 'body.json'}",
        "-H",
        "apns-push-type: voip",
        "-H",
        f"apns-topic: {BUNDLE}.voip",
        "-H",
        "apns-priority: 10",
        "-H",
        "apns-expiration: 0",
        "-H",
        "apns-id: 2f1e3e1c-7b7c-4d8e-9b7a-0f1e2d3c4b5a",
        "-H",
        f"authorization: {jwt}",
        f"https://127.0.0.1:{port}/3/device/{TOKEN}",
    ]


def run_h2load(
    extra: list[str], base: list[str], server: subprocess.Popen[Any]
) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = cpu_s(server.pid)
    out = subprocess.run(
        [base[0], *extra, *base[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    s1 = cpu_s(server.pid)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = wall = 0.0
    ok = 0
    for line in out.stdout.splitlines():
        if line.startswith("finished in"):
            parts = line.split(",")
            wall = _seconds(parts[0].split()[-1])
            rate = float(parts[1].split()[0])
        if line.startswith("status codes:"):
            ok = int(line.split()[2])
    if not rate:
        raise RuntimeError(f"h2load failed: {out.stdout}\n{out.stderr}")
    return {"rate": rate, "wall": wall, "ok": ok, "cpu": cpu, "server_cpu": s1 - s0}


def _seconds(text: str) -> float:
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    if text.endswith("us"):
        return float(text[:-2]) / 1e6
    return float(text.rstrip("s"))


def h2load_phase(
    args: argparse.Namespace, work: Path, port: int, jwt: str, server: Any
) -> dict[str, Any]:
    base = h2load_args(work, port, jwt)
    out: dict[str, Any] = {"rates": {}}
    timing = [
        f"--duration={round(args.duration * 1000)}ms",
        f"--warm-up-time={round(args.warmup * 1000)}ms",
    ]
    for level in args.levels:
        r = run_h2load([f"-m{level}", *timing], base, server)
        # Both CPU figures include the warm-up, ``ok`` counts only the window.
        r["span"] = r["wall"] + args.warmup
        r["cpu_per_1000"] = r["cpu"] / (r["rate"] * r["span"]) * 1000
        out["rates"][level] = r
        print(
            f"h2load   m={level:<5} {r['rate']:>9,.0f} req/s  "
            f"h2load CPU {r['cpu'] / r['span']:.0%}  "
            f"server CPU {r['server_cpu'] / r['span']:.0%}",
            flush=True,
        )
    # Latency at the paced rate: --rps paces the one connection.
    log = work / "h2load-latency.tsv"
    rate = int(args.rate)
    r = run_h2load(
        [
            "-m100",
            f"--rps={rate}",
            f"-n{int(rate * args.latency_duration)}",
            f"--log-file={log}",
        ],
        base,
        server,
    )
    micros = [float(row.split("\t")[2]) for row in log.read_text().splitlines()]
    out["latency"] = {
        "rate": rate,
        "achieved": r["rate"],
        "p50_ms": percentile(micros, 50) / 1000,
        "p99_ms": percentile(micros, 99) / 1000,
        "max_ms": max(micros) / 1000,
        "cpu": r["cpu"],
        "wall": r["wall"],
    }
    lat = out["latency"]
    print(
        f"h2load   {rate}/s paced: p50 {lat['p50_ms']:.3f} ms, "
        f"p99 {lat['p99_ms']:.3f} ms (achieved {r['rate']:,.0f}/s)",
        flush=True,
    )
    return out


def run_child(
    args: argparse.Namespace,
    mode: str,
    extra: list[str],
    server: Any,
    started: list[subprocess.Popen[Any]],
    wrapper: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One client process; the server's CPU is sampled at its start/result marks."""
    cmd = [
        *wrapper,
        args.python,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--work",
        str(args.work),
        "--port",
        str(args.port),
        f"--warmup={args.warmup}",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    started.append(proc)
    result: dict[str, Any] | None = None
    s0 = s1 = 0.0
    assert proc.stdout is not None
    for line in proc.stdout:
        msg = json.loads(line)
        if msg.get("mark") == "start":
            s0 = cpu_s(server.pid)
        elif "result" in msg:
            s1 = cpu_s(server.pid)
            result = msg["result"]
    code = proc.wait(timeout=120)
    if result is None or code != 0:
        raise RuntimeError(f"client {mode} {extra} failed with {code}")
    result["server_cpu"] = s1 - s0
    return result


def rate_phase(
    args: argparse.Namespace, kinds: list[str], server: Any, started: list[Any]
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every level of every kind, ``--repeat`` rounds interleaved; medians."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {k: {} for k in kinds}
    for _ in range(args.repeat):
        for kind in kinds:
            for level in args.levels:
                r = run_child(
                    args,
                    "rate",
                    [
                        f"--kind={kind}",
                        f"--level={level}",
                        f"--duration={args.duration}",
                    ],
                    server,
                    started,
                )
                r["rate"] = r["done"] / r["wall"]
                r["cpu_per_1000"] = r["cpu"] / max(1, r["done"]) * 1000
                r["client_util"] = r["cpu"] / r["wall"]
                r["server_util"] = r["server_cpu"] / r["wall"]
                runs[kind].setdefault(level, []).append(r)
                print(
                    f"{kind:<8} m={level:<5} {r['rate']:>9,.0f} req/s  "
                    f"client CPU {r['client_util']:.0%} "
                    f"({r['cpu_per_1000'] * 1000:.0f} ms per 1,000)  "
                    f"server CPU {r['server_util']:.0%}  bad {r['bad']}",
                    flush=True,
                )
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for kind, levels in runs.items():
        out[kind] = {}
        for level, rs in levels.items():
            rates = [r["rate"] for r in rs]
            out[kind][level] = {
                "level": level,
                "runs": len(rs),
                "rate": statistics.median(rates),
                "rate_min": min(rates),
                "rate_max": max(rates),
                "cpu_per_1000": statistics.median(r["cpu_per_1000"] for r in rs),
                "client_util": statistics.median(r["client_util"] for r in rs),
                "server_util": statistics.median(r["server_util"] for r in rs),
                "bad": sum(r["bad"] for r in rs),
            }
    if args.repeat > 1:
        for kind, levels in out.items():
            for level, m in levels.items():
                print(
                    f"{kind:<8} m={level:<5} median {m['rate']:,.0f} req/s "
                    f"({m['rate_min']:,.0f}-{m['rate_max']:,.0f}), "
                    f"{m['cpu_per_1000'] * 1000:.0f} ms CPU per 1,000",
                    flush=True,
                )
    return out


def cpu_phase(
    args: argparse.Namespace, kinds: list[str], server: Any, started: list[Any]
) -> dict[str, dict[int, dict[str, Any]]]:
    """Client CPU per request over exactly ``--pushes`` requests (closed loop),
    ``--repeat`` interleaved rounds; min and median. With ``--valgrind`` also
    callgrind instructions per request: the difference between a run of
    ``--pushes`` and one of a fifth as many, divided by the difference in
    requests (start-up and connection set-up cancel out; stable on a busy box).
    """
    runs: dict[str, dict[int, list[float]]] = {k: {} for k in kinds}
    for _ in range(args.repeat):
        for kind in kinds:
            for level in args.levels:
                r = run_child(
                    args,
                    "count",
                    _count_args(kind, level, args.pushes),
                    server,
                    started,
                )
                us = r["cpu"] / r["done"] * 1e6
                runs[kind].setdefault(level, []).append(us)
                print(
                    f"{kind:<8} m={level:<5} {r['done']:,} requests: {us:,.0f} us CPU"
                    f" each ({r['done'] / r['wall']:,.0f}/s) bad {r['bad']}",
                    flush=True,
                )
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for kind, levels in runs.items():
        for level, values in levels.items():
            m: dict[str, Any] = {
                "min_us": min(values),
                "median_us": statistics.median(values),
            }
            line = (
                f"{kind:<8} m={level:<5} CPU per request: min {m['min_us']:,.0f} us,"
                f" median {m['median_us']:,.0f} us"
            )
            if args.valgrind:
                m["instructions"] = callgrind_per_request(
                    args, kind, level, server, started
                )
                line += f"; {m['instructions']:,.0f} instructions"
            out.setdefault(kind, {})[level] = m
            print(line, flush=True)
    return out


def _count_args(kind: str, level: int, pushes: int) -> list[str]:
    return [f"--kind={kind}", f"--level={level}", f"--pushes={pushes}"]


def callgrind_per_request(
    args: argparse.Namespace, kind: str, level: int, server: Any, started: list[Any]
) -> float:
    """Instructions per request: two callgrind runs, ``--pushes`` and a fifth."""
    small = max(level, args.pushes // 5)
    if small >= args.pushes:
        raise ValueError("--valgrind needs --pushes above the level")
    totals: list[int] = []
    for n in (small, args.pushes):
        out = args.work / f"callgrind.{kind}.{level}.{n}.out"
        valgrind = ("valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}")
        run_child(args, "count", _count_args(kind, level, n), server, started, valgrind)
        totals.append(_callgrind_total(out))
    return (totals[1] - totals[0]) / (args.pushes - small)


def _callgrind_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def notification_cost(count: int = 20_000) -> float:
    """Seconds to build one ``voip_notification`` (part of each push's cost)."""
    from gateway.apns import Environment, voip_notification

    payload = bench_payload()
    start = time.perf_counter()
    for _ in range(count):
        voip_notification(
            device_token=TOKEN,
            environment=Environment.PRODUCTION,
            bundle_id=BUNDLE,
            payload=payload,
            deadline=1e12,
        )
    return (time.perf_counter() - start) / count


def machine(server: str) -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": interpreter(),
        "kernel": platform.release(),
        "server": _h2server.version(server),
        "load": f"{os.getloadavg()[0]:.1f}",
    }


def run(args: argparse.Namespace) -> int:
    problem = _h2server.missing(args.server)
    if shutil.which("h2load") is None:
        problem = "h2load not found: apt-get install nghttp2-client"
    if problem is not None:
        sys.exit(problem)
    info = machine(args.server)
    summary: dict[str, Any] = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="apns-bench-") as tmp, processes() as ps:
        work = Path(tmp)
        args.work = work
        jwt, body = prepare(work)
        summary["body"] = len(body)
        summary["notification_s"] = notification_cost()
        args.port = free_port()
        server = start_server(args.server, work, args.port, ps)
        print(
            f"{args.server} server on 127.0.0.1:{args.port}, body {len(body)} bytes, "
            f"nproc {info['nproc']}, load {info['load']}; building a"
            f" notification takes {summary['notification_s'] * 1e6:.0f} us",
            flush=True,
        )
        if "h2load" in args.phases:
            summary["h2load"] = h2load_phase(args, work, args.port, jwt, server)
        kinds = [k for k in ("agent", "apns") if k in args.phases]
        if kinds:
            summary.update(rate_phase(args, kinds, server, ps))
        if "cpu" in args.phases:
            summary["cpu"] = cpu_phase(
                args, [k for k in ("agent", "apns") if k in args.kinds], server, ps
            )
        if "latency" in args.phases:
            rates = [int(args.rate)]
            best = max((r["rate"] for r in summary.get("apns", {}).values()), default=0)
            if best and best < args.rate:
                rates += [int(best * 0.75), int(best * 0.5)]
                print(
                    f"latency: our best rate {best:.0f}/s < {args.rate:.0f}/s;"
                    f" also at {rates[1]}/s and {rates[2]}/s",
                    flush=True,
                )
            summary["latency"] = []
            for rate in rates:
                r = run_child(
                    args,
                    "latency",
                    [f"--rate={rate}", f"--duration={args.latency_duration}"],
                    server,
                    ps,
                )
                summary["latency"].append(r)
                print(
                    f"apns     {rate}/s paced ({r['sent_rate']:,.0f}/s sent, "
                    f"{r['answered_rate']:,.0f}/s answered): "
                    f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
                    f"p99.9 {r['p999_ms']:.3f} ms, max {r['max_ms']:.1f} ms; "
                    f"send lag p99 {r['lag_p99_ms']:.2f} ms; client CPU "
                    f"{r['cpu'] / r['answered_in']:.0%}; bad {r['bad']}",
                    flush=True,
                )
        if "memory" in args.phases:
            r = run_child(args, "memory", [f"--queued={args.queued}"], server, ps)
            summary["memory"] = r
            n = args.queued
            print(
                f"memory   {n:,} pushes: RSS {r['rss_before_kib']:,} KiB -> "
                f"{r['rss_notifications_kib']:,} (notifications built) -> "
                f"{r['rss_queued_kib']:,} (pushed: {r['queued']:,} queued, "
                f"{r['in_flight']} in flight); "
                f"{(r['rss_queued_kib'] - r['rss_notifications_kib']) * 1024 / n:.0f}"
                f" B per push in the client, "
                f"{(r['rss_queued_kib'] - r['rss_before_kib']) * 1024 / n:.0f} B "
                "with the notification",
                flush=True,
            )
        summary["server_rss_kib"] = rss_kb(server.pid)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.write_docs:
        print(f"written to {write_docs(section(args, summary))}")
    return 0


def _n(x: float) -> str:
    return f"{x:,.0f}"


def server_text(kind: str, version: str) -> str:
    """The docs' sentence on the bench server."""
    if kind == "apns":
        return (
            f"Server: `bench/apns_server.mjs` on Node.js {version} (`http2`, one"
            " thread, 1,000 concurrent streams) over TLS with the `gateway.devcert`"
            " certificate, ALPN h2, on 127.0.0.1. It answers a POST to"
            " `/3/device/<token>` as APNs answers a good push: one HEADERS frame"
            " that ends the stream, `:status 200` and the request's `apns-id`, no"
            " body."
        )
    return (
        f"Server: `nghttpd` ({version}, Debian `nghttp2-server`, one worker"
        " thread, `--max-concurrent-streams=1000`) over TLS with the"
        " `gateway.devcert` certificate, ALPN h2, on 127.0.0.1. It answers a"
        " POST to `/3/device/<token>` (an empty file in its docroot) with 200,"
        " an empty DATA frame ending the stream and five more headers than APNs"
        " sends (no `apns-id`)."
    )


def section(args: argparse.Namespace, s: dict[str, Any]) -> str:
    m = s["machine"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    shown: list[str] = []
    skip = False
    for arg in args.argv:  # notes and file names would drown the command
        if skip:
            skip = False
        elif arg in ("--note", "--json"):
            skip = True
        elif not arg.startswith(("--note=", "--json=")):
            shown.append(arg)
    cmd = "python bench/apns.py " + " ".join(shown)
    lines = [
        SECTION,
        "",
        f"Date: {now}. Machine: nproc {m['nproc']}, {m['cpu']}, Linux {m['kernel']},"
        f" Python {m['python']}; 1-minute load average {m['load']} at the start.",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        server_text(args.server, m["server"]) + " Reference client: `h2load`"
        " (Debian `nghttp2-client`) with `-c1 -t1 -m<streams>`, the same path,"
        f" headers (`apns-*`, bearer JWT) and {s['body']}-byte body. Ours: one"
        " process per measurement; one connection; `ApnsClient.push` (treq over"
        " `H2Agent`, `max_in_flight` = streams, a fresh `voip_notification` per"
        " push) and bare `H2Agent.request` (same headers, `BytesProducer`);"
        " JSON logs at level info to a file; the gateway's GC policy"
        " (`gateway.gcpolicy`, default `[gc]`: start-up heap frozen,"
        " generation-0 threshold 10,000)."
        f" Closed loop, {args.duration:g} s measured after {args.warmup:g} s"
        f" warm-up; our figures are medians of {args.repeat} interleaved rounds"
        " (range in brackets), h2load's are single runs.",
        "",
    ]
    h2 = s.get("h2load", {}).get("rates", {})
    agent = s.get("agent", {})
    apns = s.get("apns", {})
    lines += [
        "| Streams | h2load req/s (server CPU) | `H2Agent.request` req/s (range;"
        " client CPU, CPU per 1,000) | `ApnsClient.push` pushes/s (range; client"
        " CPU, CPU per 1,000) | server CPU under `push` | Target |",
        "|---|---|---|---|---|---|",
    ]
    for level in args.levels:
        cells = [f"{level:,}"]
        r = h2.get(level)
        cells.append(
            f"{_n(r['rate'])} ({r['server_cpu'] / r['span']:.0%})" if r else "-"
        )
        for r in (agent.get(level), apns.get(level)):
            cells.append(
                f"{_n(r['rate'])} ({_n(r['rate_min'])}-{_n(r['rate_max'])};"
                f" {r['client_util']:.0%}, {r['cpu_per_1000'] * 1000:.0f} ms)"
                if r
                else "-"
            )
        r = apns.get(level)
        cells.append(f"{r['server_util']:.0%}" if r else "-")
        if r:
            cells.append(">= 5,000/s: " + ("met" if r["rate"] >= 5000 else "MISSED"))
        else:
            cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if apns:
        best = max(apns.values(), key=lambda r: r["rate"])
        per_cpu = 1 / best["cpu_per_1000"] * 1000
        lines.append(
            f"Best `push` rate {_n(best['rate'])}/s at {best['level']:,} streams,"
            f" i.e. {_n(per_cpu)} pushes per client CPU-second (building the"
            f" notification, {s['notification_s'] * 1e6:.0f} us, included); the"
            " server is not the limit (see its CPU), one Python core is."
        )
        lines.append("")
    lats = s.get("latency", [])
    best_rate = max((r["rate"] for r in apns.values()), default=0)
    h2lat = s.get("h2load", {}).get("latency")
    if lats or h2lat:
        lines += ["| Latency, paced | p50 | p99 | other |", "|---|---|---|---|"]
        for lat in lats:
            note = ""
            if lat["rate"] < args.rate and best_rate:
                note = f" ({lat['rate'] / best_rate:.0%} of our closed-loop best)"
            lines.append(
                f"| `ApnsClient.push` at {lat['rate']:,.0f}/s{note},"
                f" {lat['pushes']:,} pushes ({_n(lat['answered_rate'])}/s"
                " answered), push() to outcome"
                f" | {lat['p50_ms']:.2f} ms | {lat['p99_ms']:.2f} ms"
                f" | p99.9 {lat['p999_ms']:.2f} ms, max {lat['max_ms']:.1f} ms;"
                f" send lag behind schedule p99 {lat['lag_p99_ms']:.2f} ms;"
                f" client CPU {lat['cpu'] / lat['answered_in']:.0%}; not delivered"
                f" {lat['bad']} |"
            )
        if h2lat:
            lines.append(
                f"| h2load `--rps={h2lat['rate']}` (achieved"
                f" {_n(h2lat['achieved'])}/s), request to end of response"
                f" | {h2lat['p50_ms']:.2f} ms | {h2lat['p99_ms']:.2f} ms"
                f" | max {h2lat['max_ms']:.1f} ms |"
            )
        lines.append("")
    mem = s.get("memory")
    if mem:
        n = mem["results"]
        client = (mem["rss_queued_kib"] - mem["rss_notifications_kib"]) * 1024 / n
        total = (mem["rss_queued_kib"] - mem["rss_before_kib"]) * 1024 / n
        lines.append(
            f"Memory: {n:,} pushes handed to `push` while the reactor is busy"
            f" ({mem['in_flight']} in flight, {mem['queued']:,} queued;"
            f" `max_queued` {n:,}): client RSS {_n(mem['rss_before_kib'])} KiB"
            f" -> {_n(mem['rss_notifications_kib'])} KiB with the notifications"
            f" built -> {_n(mem['rss_queued_kib'])} KiB once pushed, i.e."
            f" {client:.0f} bytes per queued push in the client (job, Deferreds)"
            f" and {total:.0f} bytes with its notification"
            f" ({mem['push_call_s'] * 1e6 / n:.1f} us per `push` call when"
            " queued)."
        )
        lines.append("")
    for note in args.note or []:
        lines += [note, ""]
    return "\n".join(lines)


def write_docs(text: str) -> Path:
    """Replace (or add) only the APNs section of docs/benchmarks.md, read fresh."""
    return write_section(SECTION, text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--child",
        choices=["rate", "count", "latency", "memory"],
        help=argparse.SUPPRESS,
    )
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--kind", choices=["agent", "apns"], help=argparse.SUPPRESS)
    p.add_argument("--level", type=int, help=argparse.SUPPRESS)
    p.add_argument("--levels", default="1,10,100,1000", help="concurrent streams")
    p.add_argument("--duration", type=float, default=5.0, help="s per rate level")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3, help="rounds of rate levels")
    p.add_argument("--rate", type=float, default=2000.0, help="paced pushes/s")
    p.add_argument("--latency-duration", type=float, default=10.0)
    p.add_argument("--queued", type=int, default=100_000)
    p.add_argument(
        "--phases",
        default="h2load,agent,apns,latency,memory",
        help="any of h2load,agent,apns,latency,memory,cpu (cpu: not in the docs)",
    )
    p.add_argument(
        "--kinds", default="agent,apns", help="clients measured by the cpu phase"
    )
    p.add_argument(
        "--pushes", type=int, default=3000, help="requests per cpu-phase run"
    )
    p.add_argument(
        "--valgrind",
        action="store_true",
        help="cpu phase: also callgrind instructions per request (minutes)",
    )
    p.add_argument(
        "--server",
        choices=_h2server.KINDS,
        default="apns",
        help="apns: bench/apns_server.mjs (Node.js), answering as APNs does"
        " (default); nghttpd: serving an empty file (extra DATA frame and headers)",
    )
    p.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="write the raw figures here")
    p.add_argument("--write-docs", action="store_true")
    p.add_argument("--note", action="append", help="extra paragraph for the docs")
    args = p.parse_args()
    args.argv = sys.argv[1:]
    if args.child == "rate":
        return child_rate(args)
    if args.child == "count":
        return child_count(args)
    if args.child == "latency":
        return child_latency(args)
    if args.child == "memory":
        return child_memory(args)
    args.levels = [int(x) for x in args.levels.split(",")]
    if not all(1 <= n <= 1000 for n in args.levels):
        p.error("--levels: 1..1000 streams (the servers allow 1000)")
    if not (0.5 <= args.duration <= 60 and 0.5 <= args.latency_duration <= 60):
        p.error("--duration and --latency-duration: 0.5..60 s")
    if not (1 <= args.rate <= 20_000 and 1 <= args.queued <= 1_000_000):
        p.error("--rate 1..20000, --queued 1..1000000")
    if not 1 <= args.repeat <= 10:
        p.error("--repeat 1..10")
    args.phases = set(args.phases.split(","))
    args.kinds = set(args.kinds.split(","))
    if not 10 <= args.pushes <= 1_000_000:
        p.error("--pushes 10..1000000")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
