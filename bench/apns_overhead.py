"""What ``ApnsClient.push`` costs above the HTTP/2 agent: a synchronous fake agent.

    .venv/bin/python bench/apns_overhead.py [--pushes 50000] [--repeat 5]
    .venv/bin/python bench/apns_overhead.py --valgrind

The agent answers every request at once with a 200 carrying the push's
``apns-id``, so what is measured is the client alone: queueing and
bookkeeping, the attempt timer, treq's request path (its ``CookieAgent``
and ``ContentDecoderAgent`` wrappers and ``_Response``), outcome
classification, stats and logging (JSON at level info to ``/dev/null``, as
the gateway logs). No network, h2 or TLS (``bench/apns.py`` measures those).
Notifications are built before the clock starts; the first 100 pushes warm
up and are not counted.

CPU times drift by 20% on a shared box; ``--valgrind`` reports callgrind
instructions per push instead (two runs, ``--pushes`` and three times as
many, differenced so that start-up cancels out), which stay put.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apns import BUNDLE, TOKEN, _callgrind_total, bench_payload  # noqa: E402 - after the path

WARMUP = 100


def child(pushes: int) -> float:
    """Push ``pushes`` notifications; CPU seconds per push after the warm-up."""
    from twisted.internet.defer import Deferred, succeed
    from twisted.internet.task import Clock
    from twisted.logger import globalLogBeginner
    from twisted.web.http_headers import Headers
    from twisted.web.iweb import IAgent, IResponse
    from zope.interface import implementer

    from gateway.apns import (
        ApnsClient,
        ApnsSettings,
        Environment,
        voip_notification,
    )
    from gateway.config import LogConfig
    from gateway.logging import make_observer

    log = LogConfig(format="json", level="info", file="/dev/null")
    globalLogBeginner.beginLoggingTo([make_observer(log)], redirectStandardIO=False)

    @implementer(IResponse)
    class Ok:
        version = (b"HTTP", 2, 0)
        code = 200
        phrase = b"OK"
        length = 0
        request = None
        previousResponse = None

        def __init__(self, apns_id: list[bytes]) -> None:
            self.headers = Headers({b"apns-id": apns_id})

        def deliverBody(self, protocol: Any) -> None:
            protocol.makeConnection(None)
            protocol.connectionLost(None)

        def setPreviousResponse(self, response: Any) -> None:
            self.previousResponse = response

    @implementer(IAgent)
    class AnswersAtOnce:
        def request(
            self, method: bytes, uri: bytes, headers: Any = None, body: Any = None
        ) -> Deferred[Ok]:
            return succeed(Ok(headers.getRawHeaders(b"apns-id")))

    class Auth:
        def authorization(self) -> str:
            return "bearer header.claims.signature"

        def provider_token_expired(self, authorization: str) -> bool:
            return False

    clock = Clock()
    clock.advance(time.time())
    settings = ApnsSettings(max_in_flight=100, max_queued=100)
    client = ApnsClient(clock, AnswersAtOnce(), Auth(), settings)  # type: ignore[arg-type]
    payload = bench_payload()
    notes = [
        voip_notification(
            device_token=TOKEN,
            environment=Environment.PRODUCTION,
            bundle_id=BUNDLE,
            payload=payload,
            deadline=clock.seconds() + 60,
        )
        for _ in range(pushes + WARMUP)
    ]
    for n in notes[:WARMUP]:
        client.push(n)
    start = time.process_time()
    for n in notes[WARMUP:]:
        client.push(n)
    spent = time.process_time() - start
    if client.stats.delivered != len(notes):
        raise RuntimeError(f"not every push was delivered: {client.stats}")
    return spent / pushes


def instructions(pushes: int) -> float:
    """Callgrind instructions per push: runs of ``pushes`` and ``3 * pushes``."""
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (pushes, 3 * pushes):
            out = Path(tmp) / f"callgrind.{n}.out"
            subprocess.run(
                [
                    "valgrind",
                    "-q",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--child",
                    f"--pushes={n}",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            totals.append(_callgrind_total(out))
    return (totals[1] - totals[0]) / (2 * pushes)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pushes", type=int, default=None)
    p.add_argument("--repeat", type=int, default=5, help="runs, one process each")
    p.add_argument("--valgrind", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(f"{child(args.pushes) * 1e6:.2f}")
        return 0
    if args.valgrind:
        pushes = args.pushes or 1000
        if not 100 <= pushes <= 20_000:
            p.error("--pushes 100..20000 with --valgrind")
        print(f"{instructions(pushes):,.0f} instructions per push", flush=True)
        return 0
    pushes = args.pushes or 50_000
    if not 1000 <= pushes <= 1_000_000 or not 1 <= args.repeat <= 20:
        p.error("--pushes 1000..1000000, --repeat 1..20")
    runs = []
    for _ in range(args.repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--child", f"--pushes={pushes}"],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(float(out.stdout))
    print(
        f"{pushes:,} pushes, {args.repeat} runs: CPU per push min {min(runs):.1f} us,"
        f" median {statistics.median(runs):.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
