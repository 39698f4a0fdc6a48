"""Process and machine figures the benchmarks read from /proc, and the
percentile the API and APNs benches report (one copy for all of them)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int | str = "self") -> int:
    """VmRSS of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_split_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds: Python and OpenSSL vs kernel."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds."""
    return sum(cpu_split_s(pid))


def _box_fields() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]


def box_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat;
    steal (the hypervisor ran another guest) counts as busy."""
    fields = _box_fields()
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def box_steal_s() -> float:
    """CPU seconds the hypervisor gave other guests (all cores): on a shared
    VM, the noise that makes one run's tail differ from the next."""
    return _box_fields()[7] / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    """The value at rank round(q% of n) of the sorted values (nan if none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, with its family and model
    numbers (the machine's architecture if none).

    A VM's model name can be as bare as "AMD EPYC": boxes of that name ran
    this code at 670-748 us a call in process (2026-12-06/07) and at
    274-349 us (family 25, model 17, 2026-12-08), so the numbers say which
    kind of host a figure came from.
    """
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if name is None:
        return platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def interpreter() -> str:
    """Which CPython runs the bench, and how it was built.

    The same code cost 5-15% more CPU a call or a push, and more an idle
    ping, on an interpreter running on a shared libpython without
    profile-guided optimisation (a plain pyenv build) than on a
    distribution's PGO/LTO build with libpython linked in (Debian's
    /usr/bin/python3.11; docs/benchmarks.md, 2026-12-07), so every figure
    says which one it was measured on.
    """
    base = getattr(sys, "_base_executable", sys.executable)
    # Py_ENABLE_SHARED says whether a libpython.so was built, not whether
    # this executable runs on it (Debian builds both); the mappings say.
    shared = "/libpython" in Path("/proc/self/maps").read_text()
    link = "on a shared libpython" if shared else "libpython linked in"
    return (
        f"{platform.python_implementation()} {platform.python_version()} "
        f"({os.path.realpath(base)}, {link})"
    )
