"""The local APNs stand-ins the benchmarks push to, over TLS on 127.0.0.1.

- ``apns``: ``apns_server.mjs`` under Node.js (``http2``, nghttp2 inside),
  answering every push as APNs answers a good one: a HEADERS frame ending the
  stream with ``:status 200`` and the request's ``apns-id``, no body.
- ``nghttpd`` (Debian ``nghttp2-server``): ``docroot`` given, it serves an
  empty file per token path (200, an empty DATA frame, five more headers, no
  ``apns-id``); without one it echoes the payload back (``--echo-upload``).
  Both are more work per push for the client than APNs asks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "missing", "start", "version"]

KINDS = ("apns", "nghttpd")
SCRIPT = Path(__file__).resolve().with_name("apns_server.mjs")
_TOOL = {"apns": "node", "nghttpd": "nghttpd"}
_PACKAGE = {"apns": "nodejs", "nghttpd": "nghttp2-server"}


def missing(kind: str) -> str | None:
    """Why ``kind`` cannot run here (what to install), or None."""
    if shutil.which(_TOOL[kind]) is None:
        return f"{_TOOL[kind]} not found: apt-get install {_PACKAGE[kind]}"
    return None


def version(kind: str) -> str:
    """The server program's own version line."""
    done = subprocess.run(
        [_TOOL[kind], "--version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def start(
    kind: str,
    port: int,
    key: Path,
    cert: Path,
    log: Path,
    docroot: Path | None = None,
) -> subprocess.Popen[Any]:
    """Start the server; return once it accepts connections (10 s at most).

    The caller kills it (the node server also exits when its stdin closes,
    should the caller die first).
    """
    if kind == "apns":
        cmd = ["node", str(SCRIPT), str(port), str(key), str(cert)]
    else:
        serve = ["--echo-upload"] if docroot is None else [f"--htdocs={docroot}"]
        cmd = [
            "nghttpd",
            *serve,
            "--address=127.0.0.1",
            "--max-concurrent-streams=1000",
            "--workers=1",
            str(port),
            str(key),
            str(cert),
        ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{kind} server did not listen on 127.0.0.1:{port}")
