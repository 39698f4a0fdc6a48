"""Local push benchmark: idle TLS sessions and call delivery, server measured apart.

    .venv/bin/python bench/localpush.py [--sessions 20000] [--idle-seconds 60]
        [--delivery-sessions 10000] [--rate 1000] [--duration 30] [--write-docs]

Quick run: ``--sessions 2000 --duration 10 --idle-seconds 10`` (delivery then
uses min(10000, --sessions) sessions). Comparison switches: ``--plain`` (no
TLS), ``--cpython-gc``, ``--trace-memory N``, ``--profile-idle``.

Targets (issue 4): server RSS <= 40 KB per idle TLS session; < 5% of a core with
20k sessions heartbeating every 30 s; 1,000 calls/s over 10k sessions with
deliver-to-ack p99 <= 5 ms and no frame lost.

The server (real ``Hub`` + ``LocalPushFactory`` + ``ServerTLS``) runs in its own
process, the simulated devices (``gateway.simulator``) in one or more client
processes, so /proc figures of the server are its own. Everything listens and
connects on 127.0.0.0/8 only; client source addresses are spread over
127.0.0.2.. so that more than one port range of sessions fits. Every loop and
wait is bounded in count and time.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _docs import write_section
from _proc import box_busy_s, cpu_model, cpu_s, cpu_split_s, interpreter, rss_kb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FD_RESERVE = 64  # listening socket, stdio, epoll, waker, /proc reads
MAX_SESSIONS = 200_000
SESSIONS_PER_SOURCE = 20_000  # well under the 28k ephemeral ports per address


# /proc helpers -------------------------------------------------------------------


def oncpu_s(pid: int) -> float:
    """Seconds the process's main thread ran (/proc/<pid>/schedstat): exact,
    where utime/stime are sampled at timer ticks."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's main thread waited for a CPU (/proc/<pid>/schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# Server process --------------------------------------------------------------------


def run_server(args: argparse.Namespace) -> int:
    """The gateway side: listen, count sessions, deliver calls on command."""
    nofile = raise_nofile()
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver

    from gateway.localpush.frames import CallFrame, Party
    from gateway.localpush.hub import Hub
    from gateway.localpush.server import LocalPushFactory, tls_factory
    from gateway.localpush.session import SessionSettings
    from gateway.localpush.tls import ServerTLS

    class NullDirectory:
        """No persistence: the registry has its own benchmark (bench/registry.py)."""

        def device_hello(self, info: Any) -> None:
            pass

        def pending_messages(self, device_id: str, now: float) -> list[Any]:
            return []

        def message_acked(self, device_id: str, message_id: str) -> None:
            pass

    class Counter:
        """Session listener: ups, downs, and when the ramp reached its target."""

        def __init__(self) -> None:
            self.ups = 0
            self.downs = 0
            self.first_up: float | None = None
            self.target_up: float | None = None
            self.devices: list[str] = []

        def on_session_up(self, device_id: str, info: Any) -> None:
            now = time.monotonic()
            self.ups += 1
            self.first_up = self.first_up or now
            self.devices.append(device_id)
            if self.ups == args.expect:
                self.target_up = now

        def on_session_down(self, device_id: str, reason: str) -> None:
            self.downs += 1

        def on_call_event(self, device_id: str, call_id: str, event: str) -> None:
            pass

    gc_stats = {"max_ms": 0.0, "total_ms": 0.0, "gen2": 0}
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - gc_start[0]) * 1000
        gc_stats["max_ms"] = max(gc_stats["max_ms"], ms)
        gc_stats["total_ms"] += ms
        gc_stats["gen2"] += info["generation"] == 2

    gc.callbacks.append(on_gc)
    if not args.cpython_gc:
        from gateway.config import GcConfig
        from gateway.gcpolicy import GcPolicy

        # What the gateway does (Gateway's "gc" service, default [gc]).
        GcPolicy(reactor, GcConfig()).startService()
    hub = Hub(reactor, NullDirectory())
    counter = Counter()
    hub.add_listener(counter)
    factory = LocalPushFactory(
        settings=SessionSettings(heartbeat_s=args.heartbeat),
        secret=Path(args.secret_file).read_bytes().rstrip(b"\r\n"),
        hub=hub,
        clock=reactor,
    )
    tls = ServerTLS(Path(args.cert), Path(args.key))
    baseline = None
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(args.tracemalloc)
        baseline = tracemalloc.take_snapshot()
    port = reactor.listenTCP(
        0,
        factory if args.plain else tls_factory(factory, tls),
        backlog=4096,
        interface="127.0.0.1",
    )

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def status() -> dict[str, Any]:
        ramp = None
        if counter.first_up is not None and counter.target_up is not None:
            ramp = counter.target_up - counter.first_up
        return {
            "event": "status",
            "online": hub.online_count,
            "ups": counter.ups,
            "downs": counter.downs,
            "ramp_s": ramp,
        }

    def deliver(rate: float, seconds: float) -> None:
        devices = list(dict.fromkeys(counter.devices))
        total = int(rate * seconds)
        latencies: list[float] = []
        outcomes: dict[str, int] = {}
        state = {"sent": 0, "done": 0}
        start = time.monotonic()
        cpu0 = os.times()
        late = {"max_lag_ms": 0.0}
        gc_stats.update(max_ms=0.0, total_ms=0.0, gen2=0)

        def record(result: Any, t0: float) -> None:
            state["done"] += 1
            if result.delivered:
                latencies.append(time.perf_counter() - t0)
                key = "delivered"
            else:
                key = str(result.reason)
            outcomes[key] = outcomes.get(key, 0) + 1
            if state["done"] == total:
                finish()

        def finish() -> None:
            cpu1 = os.times()
            elapsed = time.monotonic() - start
            latencies.sort()
            ms = [x * 1000 for x in latencies]
            emit(
                {
                    "event": "delivery",
                    "frames": total,
                    "sessions": len(devices),
                    "rate": rate,
                    "seconds": seconds,
                    "elapsed_s": round(elapsed, 3),
                    "outcomes": outcomes,
                    "lost": total - outcomes.get("delivered", 0),
                    "p50_ms": round(percentile(ms, 50), 3),
                    "p90_ms": round(percentile(ms, 90), 3),
                    "p99_ms": round(percentile(ms, 99), 3),
                    "p999_ms": round(percentile(ms, 99.9), 3),
                    "max_ms": round(ms[-1], 3) if ms else None,
                    "max_scheduler_lag_ms": round(late["max_lag_ms"], 3),
                    "gc_max_pause_ms": round(gc_stats["max_ms"], 1),
                    "gc_total_ms": round(gc_stats["total_ms"], 1),
                    "gc_gen2_runs": gc_stats["gen2"],
                    "server_cpu_share": round(
                        (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
                        4,
                    ),
                }
            )

        def tick() -> None:
            now = time.monotonic()
            due = min(total, int((now - start) * rate) + 1)
            if due - state["sent"] > 1:
                lag = (now - start - state["sent"] / rate) * 1000
                late["max_lag_ms"] = max(late["max_lag_ms"], lag)
            expires = time.time() + 60
            while state["sent"] < due:
                n = state["sent"]
                state["sent"] += 1
                spec = CallFrame(
                    call_id=f"bench-call-{n}",
                    caller=Party(handle="+4930123456", display_name="Bench"),
                    video=False,
                    to=f"sip:user{n}@example.com",
                    expires_at=expires,
                )
                t0 = time.perf_counter()
                hub.deliver(devices[n % len(devices)], spec).addCallback(record, t0)
            if state["sent"] < total:
                reactor.callLater(max(0.0, start + state["sent"] / rate - now), tick)

        if not devices or total <= 0:
            emit({"event": "delivery", "error": "no sessions"})
            return
        tick()

    def profile(seconds: float) -> None:
        import cProfile
        import io
        import pstats

        # CPU time, not wall time: a send() that wakes a client can be
        # preempted, and time asleep in epoll is no cost.
        prof = cProfile.Profile(time.process_time)
        prof.enable()

        def done() -> None:
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
            emit({"event": "profile", "text": out.getvalue()})

        reactor.callLater(seconds, done)

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            words = line.decode().split()
            if not words:
                return
            if words[0] == "status":
                emit(status())
            elif words[0] == "deliver":
                deliver(float(words[1]), float(words[2]))
            elif words[0] == "gcfreeze":
                gc.freeze()
                emit({"event": "gcfreeze", "frozen": gc.get_freeze_count()})
            elif words[0] == "gcstats":
                emit({"event": "gcstats", **gc_stats})
                gc_stats.update(max_ms=0.0, total_ms=0.0, gen2=0)
            elif words[0] == "profile":
                profile(float(words[1]))
            elif words[0] == "memtop" and baseline is not None:
                emit(memtop(baseline))
            elif words[0] == "quit":
                reactor.stop()

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())
    emit(
        {
            "event": "listening",
            "port": port.getHost().port,
            "pid": os.getpid(),
            "nofile": nofile,
        }
    )
    reactor.run()
    return 0


def memtop(baseline: Any) -> dict[str, Any]:
    """Python heap growth since ``baseline`` by allocation site (tracemalloc)."""
    import tracemalloc

    snap = tracemalloc.take_snapshot()
    stats = snap.compare_to(baseline, "traceback")
    total = sum(st.size_diff for st in stats)
    top = []
    for st in stats[:25]:
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in st.traceback]
        top.append(
            {
                "kb": round(st.size_diff / 1024, 1),
                "count": st.count_diff,
                "where": " < ".join(reversed(frames)),
            }
        )
    return {"event": "memtop", "python_heap_growth_kb": round(total / 1024), "top": top}


# Client process ----------------------------------------------------------------------


def run_client(args: argparse.Namespace) -> int:
    """Simulated devices; prints a status line every second until stdin closes."""
    raise_nofile()
    from twisted.internet import reactor, stdio
    from twisted.internet.ssl import Certificate, optionsForClientTLS
    from twisted.internet.task import LoopingCall
    from twisted.protocols.basic import LineReceiver

    from gateway.simulator import (
        Backoff,
        Credentials,
        Disconnected,
        ServerError,
        Simulator,
        Target,
        Welcomed,
        credentials_from_secret,
    )

    secret = Path(args.secret_file).read_bytes().rstrip(b"\r\n")
    creds: list[Credentials] = credentials_from_secret(
        secret, args.count, prefix="bench", first=args.first, now=time.time()
    )
    counts = {"welcomed": 0, "lost": 0, "failed": 0, "errors": 0}

    class Count:
        def on_event(self, device_id: str, event: Any, at: float) -> None:
            if isinstance(event, Welcomed):
                counts["welcomed"] += 1
            elif isinstance(event, Disconnected):
                counts["lost" if event.connected else "failed"] += 1
            elif isinstance(event, ServerError):
                counts["errors"] += 1

    tls = optionsForClientTLS(
        "localhost", trustRoot=Certificate.loadPEM(Path(args.ca).read_bytes())
    )
    sim = Simulator(
        reactor,  # type: ignore[arg-type]
        Target(
            host="127.0.0.1",
            port=args.port,
            tls=None if args.plain else tls,
            bind_hosts=tuple(args.bind),
            connect_timeout_s=30,
        ),
        creds,
        observer=Count(),
        backoff=Backoff(base_s=1.0, cap_s=10.0),
        connect_rate=args.connect_rate,
        max_pending=args.max_pending,
    )

    def report() -> None:
        sys.stdout.write(json.dumps({"event": "client", **counts}) + "\n")
        sys.stdout.flush()
        # Sessions are long-lived: keep them out of full GC passes, whose
        # pauses (0.5 s+ at 10k sessions) would otherwise delay our acks.
        gc.freeze()

    class Control(LineReceiver):
        def lineReceived(self, line: bytes) -> None:
            pass

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())
    LoopingCall(report).start(1.0)
    reactor.callWhenRunning(sim.start)
    reactor.callLater(args.max_seconds, reactor.stop)
    reactor.run()
    return 0


# Orchestration ------------------------------------------------------------------------


class Child:
    """A child process speaking JSON lines on stdout, commands on stdin."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.last: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON line, or None after ``timeout`` seconds."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {self.pid} exited ({self.proc.poll()})")
        self.last = json.loads(line)
        return self.last

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.read(max(0.01, deadline - time.monotonic()))
            if obj is not None and obj.get("event") == event:
                return obj
        raise TimeoutError(f"no {event} from child {self.pid} in {timeout} s")

    def drain(self) -> None:
        """Read everything available now (keeps the pipe from filling)."""
        while self.read(0) is not None:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)


class Setup:
    """Certificate, key and secret in a temporary directory."""

    def __init__(self, tmp: Path) -> None:
        from gateway.devcert import write_self_signed

        self.cert, self.key = tmp / "cert.pem", tmp / "key.pem"
        write_self_signed(self.cert, self.key)
        self.secret = tmp / "secret"
        self.secret.write_bytes(os.urandom(32).hex().encode() + b"\n")


def start_server(
    setup: Setup, expect: int, heartbeat: int, args: argparse.Namespace
) -> Child:
    server = Child(
        [
            "_server",
            "--cert", str(setup.cert),
            "--key", str(setup.key),
            "--secret-file", str(setup.secret),
            "--expect", str(expect),
            "--heartbeat", str(heartbeat),
            "--tracemalloc", str(args.trace_memory),
            *(["--plain"] if args.plain else []),
            *(["--cpython-gc"] if args.cpython_gc else []),
        ]
    )  # fmt: skip
    server.wait_for("listening", 30)
    return server


def start_clients(
    setup: Setup, port: int, sessions: int, per_client: int, args: argparse.Namespace
) -> list[Child]:
    """Client processes for ``sessions`` devices, source addresses spread."""
    n_clients = max(args.clients, math.ceil(sessions / per_client))
    n_sources = max(n_clients, math.ceil(sessions / SESSIONS_PER_SOURCE))
    sources = [f"127.0.0.{2 + i}" for i in range(n_sources)]
    clients = []
    first = 1
    for i in range(n_clients):
        count = sessions // n_clients + (1 if i < sessions % n_clients else 0)
        # each client binds to its own share of the source addresses
        binds = sources[i::n_clients] or [sources[i % len(sources)]]
        clients.append(
            Child(
                [
                    "_client",
                    "--port",
                    str(port),
                    "--ca",
                    str(setup.cert),
                    "--secret-file",
                    str(setup.secret),
                    "--first",
                    str(first),
                    "--count",
                    str(count),
                    "--connect-rate",
                    str(args.connect_rate / n_clients),
                    "--max-pending",
                    str(max(1, args.max_pending // n_clients)),
                    "--max-seconds",
                    str(args.max_seconds),
                    *[x for b in binds for x in ("--bind", b)],
                    *(["--plain"] if args.plain else []),
                ]
            )
        )
        first += count
    return clients


def wait_online(
    server: Child, clients: list[Child], sessions: int, timeout: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Poll until the server has ``sessions`` online; CPU of both sides meanwhile."""
    cpu0 = {"server": cpu_s(server.pid), "clients": sum(cpu_s(c.pid) for c in clients)}
    t0 = time.monotonic()
    deadline = t0 + timeout
    status: dict[str, Any] = {}
    last_print = 0.0
    while time.monotonic() < deadline:
        for c in clients:
            c.drain()
        server.send("status")
        status = server.wait_for("status", 10)
        if time.monotonic() - last_print >= 5:
            last_print = time.monotonic()
            print(
                f"  ... {status['online']} online after {time.monotonic() - t0:.0f} s"
            )
        if status["online"] >= sessions:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    cpu = {
        "server_cpu_share": (cpu_s(server.pid) - cpu0["server"]) / elapsed,
        "clients_cpu_share": (sum(cpu_s(c.pid) for c in clients) - cpu0["clients"])
        / elapsed,
        "wall_s": elapsed,
    }
    return status, cpu


def idle_phase(
    setup: Setup, sessions: int, per_client: int, args: argparse.Namespace
) -> dict[str, Any]:
    print(f"idle: {sessions} TLS sessions, heartbeat {args.heartbeat} s")
    server = start_server(setup, sessions, args.heartbeat, args)
    clients: list[Child] = []
    try:
        time.sleep(1.0)
        rss0 = rss_kb(server.pid)
        clients = start_clients(setup, server.last["port"], sessions, per_client, args)
        status, ramp_cpu = wait_online(server, clients, sessions, args.ramp_timeout)
        online = status["online"]
        time.sleep(args.settle)
        rss1 = rss_kb(server.pid)
        heap = None
        if args.trace_memory:
            server.send("memtop")
            heap = server.wait_for("memtop", 600)
            print(json.dumps(heap, indent=1))
        if args.profile_idle:
            server.send(f"profile {args.idle_seconds}")
        server.send("gcstats")  # GC during the ramp; resets the counters
        ramp_gc = server.wait_for("gcstats", 60)
        print(f"  {online} online; measuring CPU for {args.idle_seconds} s")
        c0 = cpu_s(server.pid)
        sys0 = cpu_split_s(server.pid)[1]
        run0 = oncpu_s(server.pid)
        cl0 = sum(cpu_s(c.pid) for c in clients)
        box0 = box_busy_s()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.idle_seconds:
            for c in clients:
                c.drain()
            time.sleep(min(1.0, max(0.0, args.idle_seconds - (time.monotonic() - t0))))
        elapsed = time.monotonic() - t0
        idle_cpu = (cpu_s(server.pid) - c0) / elapsed
        idle_sys = (cpu_split_s(server.pid)[1] - sys0) / elapsed
        idle_run = (oncpu_s(server.pid) - run0) / elapsed
        clients_idle_cpu = (sum(cpu_s(c.pid) for c in clients) - cl0) / elapsed
        others = (box_busy_s() - box0) / elapsed - idle_cpu - clients_idle_cpu
        if args.profile_idle:
            print(server.wait_for("profile", 60)["text"])
        server.send("gcstats")
        gcs = server.wait_for("gcstats", 60)
        server.send("status")
        end = server.wait_for("status", 10)
        ramp_s = status.get("ramp_s")
        return {
            "sessions_requested": args.sessions,
            "sessions": sessions,
            "online": online,
            "online_at_end": end["online"],
            "downs": end["downs"],
            "client_processes": len(clients),
            "rss_before_kb": rss0,
            "rss_after_kb": rss1,
            "rss_per_session_kb": round((rss1 - rss0) / max(1, online), 2),
            "accept_per_s": round(online / ramp_s, 1) if ramp_s else None,
            "ramp_s": round(ramp_s, 2) if ramp_s else None,
            "ramp_server_cpu_share": round(ramp_cpu["server_cpu_share"], 3),
            "ramp_clients_cpu_share": round(ramp_cpu["clients_cpu_share"], 3),
            "ramp_gc_gen2_runs": ramp_gc["gen2"],
            "ramp_gc_total_ms": round(ramp_gc["total_ms"], 1),
            "ramp_gc_max_pause_ms": round(ramp_gc["max_ms"], 1),
            "idle_seconds": round(elapsed, 1),
            "idle_server_cpu_share": round(idle_cpu, 4),
            "idle_server_kernel_cpu_share": round(idle_sys, 4),
            "heartbeat_s": args.heartbeat,
            # every session pings once per heartbeat: CPU per ping (and the
            # timers and GC that come with it)
            "server_cpu_per_ping_us": round(
                idle_cpu * args.heartbeat / max(1, online) * 1e6, 1
            ),
            "server_oncpu_per_ping_us": round(
                idle_run * args.heartbeat / max(1, online) * 1e6, 1
            ),
            "idle_clients_cpu_share": round(clients_idle_cpu, 4),
            "idle_other_processes_cpu_share": round(max(0.0, others), 3),
            "idle_gc_max_pause_ms": round(gcs["max_ms"], 1),
            "idle_gc_total_ms": round(gcs["total_ms"], 1),
            "idle_gc_gen2_runs": gcs["gen2"],
            "server_cpython_gc": args.cpython_gc,
            "python_heap_per_session_kb": round(
                heap["python_heap_growth_kb"] / max(1, online), 2
            )
            if heap
            else None,
        }
    finally:
        for c in clients:
            c.stop()
        server.stop()


def delivery_phase(
    setup: Setup, sessions: int, per_client: int, args: argparse.Namespace
) -> dict[str, Any]:
    print(f"delivery: {args.rate:g}/s over {sessions} sessions, {args.duration:g} s")
    server = start_server(setup, sessions, 30, args)
    clients: list[Child] = []
    try:
        clients = start_clients(setup, server.last["port"], sessions, per_client, args)
        status, _ = wait_online(server, clients, sessions, args.ramp_timeout)
        time.sleep(args.settle)
        server.send("gcstats")  # resets the counters
        server.wait_for("gcstats", 60)
        c0 = sum(cpu_s(c.pid) for c in clients)
        s0 = cpu_s(server.pid)
        w0 = runqueue_wait_s(server.pid)
        box0 = box_busy_s()
        t0 = time.monotonic()
        server.send(f"deliver {args.rate} {args.duration}")
        deadline = t0 + args.duration + 30
        result: dict[str, Any] | None = None
        while time.monotonic() < deadline and result is None:
            for c in clients:
                c.drain()
            obj = server.read(0.5)
            if obj is not None and obj.get("event") == "delivery":
                result = obj
        if result is None:
            raise TimeoutError("delivery did not finish")
        elapsed = time.monotonic() - t0
        mine = sum(cpu_s(c.pid) for c in clients) - c0
        result["clients_cpu_share"] = round(mine / elapsed, 3)
        others = box_busy_s() - box0 - mine - (cpu_s(server.pid) - s0)
        result["other_processes_cpu_share"] = round(max(0.0, others / elapsed), 3)
        result["server_cpython_gc"] = args.cpython_gc
        wait = runqueue_wait_s(server.pid) - w0
        result["server_runqueue_wait_share"] = round(wait / elapsed, 3)
        result["client_processes"] = len(clients)
        # everything the server did in the window, per frame delivered and acked
        result["server_cpu_per_frame_us"] = round(
            result["server_cpu_share"] / args.rate * 1e6, 1
        )
        result["online"] = status["online"]
        return result
    finally:
        for c in clients:
            c.stop()
        server.stop()


# Report -----------------------------------------------------------------------


def machine() -> str:
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"nproc {os.cpu_count()}, {cpu_model()}, "
        f"{mem_kb / 1024 / 1024:.0f} GiB RAM, Linux {platform.release()}, "
        f"{interpreter()}, RLIMIT_NOFILE hard "
        f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}"
    )


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def markdown(
    command: str,
    idle: dict[str, Any] | None,
    delivery: dict[str, Any] | None,
    notes: list[str],
    *,
    plain: bool = False,
    cpython_gc: bool = False,
) -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Local push",
        "",
        f"Date: {today}. Machine: {machine()}.",
        "",
        f"Command: `{command}`",
        "",
        "Server: one process with the real `Hub` + `LocalPushFactory` over "
        + (
            "plain TCP (comparison run)"
            if plain
            else "TLS (`ServerTLS`, dev certificate, ECDSA P-256, TLS 1.3)"
        )
        + " on 127.0.0.1, no device persistence (null directory)"
        + (
            ", CPython's default collector (comparison run)"
            if cpython_gc
            else ", the gateway's `[gc]` policy (`gateway.gcpolicy`, defaults)"
        )
        + ". Clients: `gateway.simulator` devices in separate processes on the"
        " same box (they `gc.freeze()` every second). Other processes on the box"
        ' (other sessions\' test runs) are counted as "other CPU".',
        "",
    ]
    if idle is not None:
        rss = idle["rss_per_session_kb"]
        cpu = idle["idle_server_cpu_share"]
        lines += [
            "| Idle sessions | Figure | Target |",
            "|---|---|---|",
            _row(
                "TLS sessions open",
                f"{idle['online']:,} (requested {idle['sessions_requested']:,})",
                "20,000 (the bench supports 100,000)",
            ),
            _row(
                "Server RSS per session",
                f"{rss} KB ({idle['rss_before_kb']:,} -> {idle['rss_after_kb']:,} KB)",
                f"<= 40 KB: {verdict(rss <= 40)}",
            ),
            _row(
                "Sessions accepted per second",
                f"{idle['accept_per_s']} ({idle['ramp_s']} s; CPU server "
                f"{idle['ramp_server_cpu_share']:.0%}, clients "
                f"{idle['ramp_clients_cpu_share']:.0%} of a core; server full GC "
                f"{idle['ramp_gc_gen2_runs']}x, {idle['ramp_gc_total_ms']:.0f} ms "
                f"in all, longest {idle['ramp_gc_max_pause_ms']:.0f} ms)",
                "-",
            ),
            _row(
                f"Server CPU, all sessions pinging every {idle['heartbeat_s']} s",
                f"{cpu:.2%} of a core over {idle['idle_seconds']} s "
                f"({idle['server_cpu_per_ping_us']} us per ping)",
                f"< 5%: {verdict(cpu < 0.05)}",
            ),
            _row(
                "Server full GC (gen2) in that window",
                f"{idle['idle_gc_gen2_runs']} run(s), longest pause "
                f"{idle['idle_gc_max_pause_ms']} ms",
                "-",
            ),
            _row(
                "Other CPU in that window",
                f"clients {idle['idle_clients_cpu_share']:.0%}, other processes "
                f"{idle['idle_other_processes_cpu_share']:.0%} of a core",
                "-",
            ),
            _row(
                "Sessions still online at the end",
                f"{idle['online_at_end']:,} (downs {idle['downs']})",
                "all",
            ),
            "",
        ]
    if delivery is not None and "p99_ms" in delivery:
        d = delivery
        lines += [
            "| Delivery | Figure | Target |",
            "|---|---|---|",
            _row(
                "Calls",
                f"{d['frames']:,} at {d['rate']:g}/s over {d['online']:,} sessions, "
                f"{d['seconds']:g} s",
                "1,000/s over 10,000, 30 s",
            ),
            _row(
                "Deliver-to-ack latency p50 / p90 / p99 / p99.9 / max",
                f"{d['p50_ms']} / {d['p90_ms']} / {d['p99_ms']} / {d['p999_ms']} / "
                f"{d['max_ms']} ms",
                f"p99 <= 5 ms: {verdict(d['p99_ms'] <= 5)}",
            ),
            _row(
                "Frames lost",
                f"{d['lost']} (outcomes {d['outcomes']})",
                f"0: {verdict(d['lost'] == 0)}",
            ),
            _row(
                "CPU during delivery",
                f"server {d['server_cpu_share']:.0%} "
                f"({d['server_cpu_per_frame_us']} us per frame), clients "
                f"{d['clients_cpu_share']:.0%}, other processes "
                f"{d['other_processes_cpu_share']:.0%} of a core",
                "-",
            ),
            _row(
                "Server stalls",
                f"send loop late by up to {d['max_scheduler_lag_ms']} ms; "
                f"{d['gc_gen2_runs']} full GC, longest GC pause "
                f"{d['gc_max_pause_ms']} ms; server waited for a CPU "
                f"{d['server_runqueue_wait_share']:.0%} of the time",
                "-",
            ),
            "",
        ]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_docs(section: str) -> Path:
    """Replace (or add) the "Local push" section of docs/benchmarks.md."""
    return write_section("## Local push", section)


def run_bench(args: argparse.Namespace) -> int:
    nofile = raise_nofile()
    notes: list[str] = []
    cap = nofile - FD_RESERVE
    sessions = min(args.sessions, MAX_SESSIONS)
    if sessions > cap:
        notes.append(
            f"{args.sessions:,} idle sessions requested, {cap:,} run: the server is one"
            f" process and RLIMIT_NOFILE's hard limit here is {nofile:,}"
            " (raising it needs privileges this container lacks)."
        )
        sessions = cap
    delivery_sessions = min(args.delivery_sessions, cap)
    per_client = cap
    command = "python bench/localpush.py " + " ".join(sys.argv[1:])
    idle = delivery = None
    with tempfile.TemporaryDirectory(prefix="lpbench-") as tmp:
        setup = Setup(Path(tmp))
        if not args.skip_idle:
            idle = idle_phase(setup, sessions, per_client, args)
            print(json.dumps(idle, indent=2))
        if not args.skip_delivery:
            delivery = delivery_phase(setup, delivery_sessions, per_client, args)
            print(json.dumps(delivery, indent=2))
    if idle is not None and args.idle_seconds < args.heartbeat:
        notes.append(
            f"The idle CPU window ({args.idle_seconds:g} s) is shorter than the"
            f" {args.heartbeat} s heartbeat, so it does not cover the sessions'"
            " pings."
        )
    notes += args.note or []
    section = markdown(
        command,
        idle,
        delivery,
        notes,
        plain=args.plain,
        cpython_gc=args.cpython_gc,
    )
    print()
    print(section)
    if args.write_docs:
        print(f"written to {write_docs(section)}")
    return 0


# In-process figures -------------------------------------------------------------------


def run_in_process(count: int, profile: bool) -> int:
    """Server CPU per ping and per delivered+acked frame, no reactor, no sockets.

    The real ``LocalPushFactory`` behind ``tls_factory`` over a StringTransport,
    a pyOpenSSL client on memory BIOs; the client's records are made before the
    clock starts, so only the server's work is timed (TLS, framing, session,
    hub). What it leaves out (epoll, the syscalls, a cold cache per wakeup) is
    what the idle figure adds. Also: GC-tracked objects per open session.
    """
    import cProfile
    import io
    import itertools
    import pstats
    import struct

    from OpenSSL import SSL
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from gateway.devcert import write_self_signed
    from gateway.devicetoken import mint_device_token
    from gateway.localpush.frames import CallFrame, Party
    from gateway.localpush.hub import Hub, InMemoryDeviceDirectory
    from gateway.localpush.server import LocalPushFactory, tls_factory
    from gateway.localpush.session import SessionSettings
    from gateway.localpush.tls import ServerTLS

    class Transport(StringTransport):
        def abortConnection(self) -> None:
            self.loseConnection()

    def frame(obj: dict[str, Any]) -> bytes:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return struct.pack(">I", len(body)) + body

    clock = Clock()
    clock.advance(time.time())
    secret = os.urandom(32)
    hub = Hub(clock, InMemoryDeviceDirectory())
    ids = itertools.count(1)
    factory = LocalPushFactory(
        settings=SessionSettings(rate_per_s=1e9, rate_burst=10**9),
        secret=secret,
        hub=hub,
        clock=clock,
        id_factory=lambda: f"id-{next(ids)}",
    )
    with tempfile.TemporaryDirectory(prefix="lpbench-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        write_self_signed(cert, key)
        tls = tls_factory(factory, ServerTLS(cert, key))
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)

    def connect(n: int) -> tuple[Any, Transport, SSL.Connection]:
        """A session past its welcome."""
        addr = IPv4Address("TCP", "127.0.0.2", 1024 + n)
        server, tr = tls.buildProtocol(addr), Transport(peerAddress=addr)
        server.makeConnection(tr)
        client = SSL.Connection(client_ctx, None)
        client.set_connect_state()
        device = f"bench-{n}"
        hello = {"type": "hello", "v": 1, "device_id": device}
        hello["token"] = mint_device_token(secret, device, "sip:b@x", now=time.time())
        for _ in range(20):
            try:
                client.do_handshake()
                if hello:
                    client.send(frame(hello))
                    hello = {}
            except SSL.WantReadError:
                pass
            try:
                server.dataReceived(client.bio_read(1 << 16))
            except SSL.WantReadError:
                if not tr.value():
                    break
            client.bio_write(tr.value() or b"")
            tr.clear()
        return server, tr, client

    def records(client: SSL.Connection, objs: list[dict[str, Any]]) -> list[bytes]:
        out = []
        for obj in objs:
            client.send(frame(obj))
            out.append(client.bio_read(1 << 16))
        return out

    def timed(label: str, step: Any, inputs: list[bytes], tr: Transport) -> None:
        prof = cProfile.Profile() if profile else None
        gc.collect()
        gc.disable()
        t0 = time.process_time()
        if prof is not None:
            prof.enable()
        for data in inputs:
            step(data)
            tr.clear()
        if prof is not None:
            prof.disable()
        cpu = time.process_time() - t0
        gc.enable()
        print(f"{label}: {cpu / len(inputs) * 1e6:.1f} us of CPU each ({len(inputs)})")
        if prof is not None:
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())

    server, tr, client = connect(0)
    pings = records(client, [{"type": "ping", "id": f"p-{i}"} for i in range(count)])
    timed("ping -> pong", server.dataReceived, pings, tr)

    first = next(ids) + 1  # the id the next frame gets
    acks = records(
        client, [{"type": "ack", "id": f"id-{first + i}"} for i in range(count)]
    )
    call = CallFrame(
        call_id="c-1",
        caller=Party(handle="+4930123456", display_name="Bench"),
        video=False,
        to="sip:bench@example.com",
        expires_at=time.time() + 60,
    )
    delivered = []

    def deliver(ack: bytes) -> None:
        hub.deliver("bench-0", call).addCallback(delivered.append)
        server.dataReceived(ack)

    timed("call delivered and acked", deliver, acks, tr)
    if sum(r.delivered for r in delivered) != count:
        raise RuntimeError("not every frame was acked")

    gc.collect()
    before = len(gc.get_objects())
    keep = [connect(n) for n in range(1, 501)]
    gc.collect()
    per = (len(gc.get_objects()) - before) / len(keep)
    print(f"GC-tracked objects per open session: {per:.1f} (with the bench's client)")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command")
    srv = sub.add_parser("_server")
    srv.add_argument("--cert", required=True)
    srv.add_argument("--key", required=True)
    srv.add_argument("--secret-file", required=True)
    srv.add_argument("--expect", type=int, required=True)
    srv.add_argument("--heartbeat", type=int, default=30)
    srv.add_argument("--tracemalloc", type=int, default=0, help="frames to keep")
    srv.add_argument("--plain", action="store_true")
    srv.add_argument("--cpython-gc", action="store_true")
    cli = sub.add_parser("_client")
    cli.add_argument("--port", type=int, required=True)
    cli.add_argument("--ca", required=True)
    cli.add_argument("--secret-file", required=True)
    cli.add_argument("--first", type=int, required=True)
    cli.add_argument("--count", type=int, required=True)
    cli.add_argument("--connect-rate", type=float, required=True)
    cli.add_argument("--max-pending", type=int, required=True)
    cli.add_argument("--max-seconds", type=float, required=True)
    cli.add_argument("--bind", action="append", default=[])
    cli.add_argument("--plain", action="store_true")
    p.add_argument("--sessions", type=int, default=20_000, help="idle TLS sessions")
    p.add_argument("--idle-seconds", type=float, default=60.0, help="CPU window")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="heartbeat_s of the idle phase; a short one (e.g. 2) gives many "
        "pings per session, for a quick server-CPU-per-ping figure",
    )
    p.add_argument(
        "--delivery-sessions",
        type=int,
        default=None,
        help="default min(10000, --sessions)",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="calls per second")
    p.add_argument("--duration", type=float, default=30.0, help="delivery seconds")
    p.add_argument("--clients", type=int, default=2, help="client processes (min)")
    p.add_argument("--connect-rate", type=float, default=3000.0, help="total, per s")
    p.add_argument("--max-pending", type=int, default=400, help="handshakes in flight")
    p.add_argument("--settle", type=float, default=5.0, help="s after ramp-up")
    p.add_argument("--ramp-timeout", type=float, default=600.0)
    p.add_argument("--max-seconds", type=float, default=3600.0, help="client bound")
    p.add_argument(
        "--trace-memory",
        type=int,
        default=0,
        metavar="FRAMES",
        help="idle server under tracemalloc: Python heap by site (slow)",
    )
    p.add_argument(
        "--profile-idle",
        action="store_true",
        help="cProfile the server during the idle window (inflates its CPU)",
    )
    p.add_argument(
        "--cpython-gc",
        action="store_true",
        help="server with CPython's default collector instead of the "
        "gateway's [gc] policy (shows the cost of full GC passes)",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="plain TCP instead of TLS (comparison only; LPP/1 is TLS)",
    )
    p.add_argument("--skip-idle", action="store_true")
    p.add_argument("--skip-delivery", action="store_true")
    p.add_argument(
        "--write-docs", action="store_true", help="update docs/benchmarks.md"
    )
    p.add_argument("--note", action="append", help="extra line for the report")
    p.add_argument(
        "--in-process",
        type=int,
        default=0,
        metavar="N",
        help="N pings and N delivered calls through the server over memory BIOs in "
        "this process (no reactor, no sockets): CPU per frame, then exit",
    )
    p.add_argument("--profile", action="store_true", help="with --in-process")
    args = p.parse_args()
    if args.command == "_server":
        return run_server(args)
    if args.command == "_client":
        return run_client(args)
    if args.in_process:
        return run_in_process(args.in_process, args.profile)
    if args.delivery_sessions is None:
        args.delivery_sessions = min(10_000, args.sessions)
    if (
        not 1 <= args.sessions <= MAX_SESSIONS
        or not 1 <= args.delivery_sessions <= MAX_SESSIONS
    ):
        p.error(f"sessions must be within 1..{MAX_SESSIONS}")
    if not 0 < args.duration <= 3600 or not 0 < args.idle_seconds <= 3600:
        p.error("durations must be within 0..3600 s")
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
