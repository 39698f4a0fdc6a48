"""Registry benchmark: 100k devices, 200k AOR lookups, start-up load, RSS.

    .venv/bin/python bench/registry.py [--devices 100000] [--lookups 200000]

Targets (issue 3): >= 200,000 lookups/s in process, load of 100k devices
< 3 s, and a modest RSS per device. Runs in fresh child processes so the RSS
figure is not polluted by the population step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def populate(db: Path, n: int) -> float:
    """Write n devices through the real persister (threaded writer)."""
    from twisted.internet import reactor

    from gateway.store import Device, Registry, SQLitePersister

    registry = Registry(SQLitePersister(db, reactor), reactor)  # type: ignore[arg-type]
    registry.startService()
    start = time.perf_counter()
    result: dict[str, float] = {}

    def write() -> None:
        from twisted.internet.defer import gatherResults

        ds = [
            registry.put_device(
                Device(
                    device_id=f"device-{i:06d}",
                    aors=(f"sip:user{i}@example.com",),
                    voip_token=os.urandom(32).hex(),
                    alert_token=os.urandom(32).hex(),
                    topic="com.example.voip",
                    locale="en-US",
                    app_version="1.0.0",
                    last_seen=time.time(),
                )
            )
            for i in range(n)
        ]
        d = gatherResults(ds)
        d.addCallback(lambda _: registry.stopService())
        d.addCallback(lambda _: result.setdefault("s", time.perf_counter() - start))
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(write)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return result["s"]


def measure(db: Path, n: int, lookups: int) -> dict[str, float]:
    """Load, then look up; runs in a fresh process."""
    from twisted.internet.task import Clock

    from gateway.store import Registry, SQLitePersister

    base_rss = _rss_kb()
    persister = SQLitePersister(db, None, threaded=False)  # type: ignore[arg-type]
    registry = Registry(persister, Clock())
    start = time.perf_counter()
    registry.load()
    load_s = time.perf_counter() - start
    rss = _rss_kb() - base_rss
    rng = random.Random(7)
    aors = [f"sip:user{rng.randrange(n)}@example.com" for _ in range(lookups)]
    lookup = registry.devices_for_aor
    start = time.perf_counter()
    found = 0
    for aor in aors:
        found += len(lookup(aor))
    lookup_s = time.perf_counter() - start
    assert found == lookups, found
    return {
        "devices": n,
        "load_s": load_s,
        "lookups": lookups,
        "lookups_per_s": lookups / lookup_s,
        "rss_per_device_bytes": rss * 1024 / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--child", choices=["populate", "measure"])
    parser.add_argument("--db")
    args = parser.parse_args()
    if args.child == "populate":
        print(json.dumps({"write_s": populate(Path(args.db), args.devices)}))
        return
    if args.child == "measure":
        print(json.dumps(measure(Path(args.db), args.devices, args.lookups)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite3"
        common = [
            sys.executable,
            __file__,
            "--db",
            str(db),
            "--devices",
            str(args.devices),
        ]
        w = json.loads(subprocess.check_output([*common, "--child", "populate"]))
        m = json.loads(
            subprocess.check_output(
                [*common, "--lookups", str(args.lookups), "--child", "measure"]
            )
        )
    print(f"devices:            {m['devices']:,}")
    rate = m["devices"] / w["write_s"]
    print(f"write (threaded):   {w['write_s']:.2f} s  ({rate:,.0f} devices/s)")
    print(f"start-up load:      {m['load_s']:.2f} s   (target < 3 s)")
    print(f"AOR lookups:        {m['lookups_per_s']:,.0f}/s  (target >= 200,000/s)")
    print(f"RSS per device:     {m['rss_per_device_bytes']:,.0f} bytes")


if __name__ == "__main__":
    main()
