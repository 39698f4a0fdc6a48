"""The box's floor: server CPU per echoed message with nothing of ours in it.

    .venv/bin/python bench/floor.py [--connections 1000] [--rate 1000]
        [--seconds 15] [--modes tcp-raw,tcp-twisted,tls-twisted,udp-raw,udp-twisted]

Each mode runs an echo server in its own process and a client process that
sends one small message per 1/rate s, round robin over its connections, and
reads the echoes. The figure is the server's utime + stime per message,
from /proc: what one wake-up, one read and one write cost on this machine
before any gateway code runs. ``bench/localpush.py``'s CPU per idle ping
(one TLS record in, one out, per session every heartbeat) is measured in the
same way, so the two compare directly; so do the per-datagram costs of a SIP
call.

- ``tcp-raw``: a plain ``select.epoll`` loop (``recv``, ``send``).
- ``tcp-twisted``: Twisted's epoll reactor and a bare ``Protocol`` that
  writes what it reads (``transport.write``, as any Twisted protocol does).
- ``tcp-twisted-direct``: the same, but the echo goes to the socket's
  ``send`` at once, as the gateway's TLS wrapping hands its records to the
  socket (``transport.write`` waits for writability on the next reactor
  turn: two ``epoll_ctl`` calls and a pass through the loop more).
- ``tls-twisted``: the bare protocol behind the gateway's own TLS wrapping
  (``gateway.tls.FastTLSFactory``, the device server's ``ServerTLS``
  context, the dev certificate), i.e. the device sockets' floor.
- ``udp-raw`` / ``udp-twisted``: one datagram in, one out (``recvfrom``,
  ``sendto``), as SIP over UDP.

Everything listens and connects on 127.0.0.1; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import box_steal_s, cpu_model, cpu_split_s, interpreter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = (
    "tcp-raw",
    "tcp-twisted",
    "tcp-twisted-direct",
    "tls-twisted",
    "udp-raw",
    "udp-twisted",
)
MESSAGE = b'\x00\x00\x00\x24{"type":"ping","id":"0123456789abcd"}'


def _serve_tcp_raw(listener: socket.socket, deadline: float) -> None:
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    while time.monotonic() < deadline:
        for fd, _ in ep.poll(1.0):
            if fd == listener.fileno():
                try:
                    c, _addr = listener.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                conns[c.fileno()] = c
                ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                ep.unregister(fd)
                del conns[fd]
                c.close()
                continue
            c.send(data)


def _serve_udp_raw(sock: socket.socket, deadline: float) -> None:
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    while time.monotonic() < deadline:
        for _ in ep.poll(1.0):
            while True:
                try:
                    data, addr = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                sock.sendto(data, addr)


def _serve_twisted(
    mode: str, sock: socket.socket, deadline: float, cert: Path, key: Path
) -> None:
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import protocol, reactor

    r: Any = reactor

    class Echo(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    class DirectEcho(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.socket.send(data)  # type: ignore[union-attr]

    class UdpEcho(protocol.DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: Any) -> None:
            self.transport.write(data, addr)  # type: ignore[union-attr]

    if mode == "udp-twisted":
        r.adoptDatagramPort(sock.fileno(), socket.AF_INET, UdpEcho())
    else:
        echo = DirectEcho if mode == "tcp-twisted-direct" else Echo
        factory: Any = protocol.Factory.forProtocol(echo)
        if mode == "tls-twisted":
            from gateway.localpush.tls import ServerTLS
            from gateway.tls import FastTLSFactory

            factory = FastTLSFactory(ServerTLS(cert, key), False, factory)
        r.adoptStreamPort(sock.fileno(), socket.AF_INET, factory)
    sock.close()
    r.callLater(max(0.0, deadline - time.monotonic()), r.stop)
    r.run()


def _client(
    mode: str, port: int, connections: int, rate: float, seconds: float
) -> None:
    """Connect, then send ``rate`` messages/s round robin for ``seconds``;
    report what came back."""
    ep = select.epoll()
    socks: list[Any] = []
    if mode.startswith("udp"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks = [s]
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for _ in range(connections):
            c: Any = socket.create_connection(("127.0.0.1", port), timeout=10)
            if mode == "tls-twisted":
                c = ctx.wrap_socket(c)
            c.setblocking(False)
            socks.append(c)
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    print(json.dumps({"event": "ready"}), flush=True)
    start = time.monotonic()
    deadline = start + seconds
    sent = got = 0
    while time.monotonic() < deadline:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            socks[sent % len(socks)].send(MESSAGE)
            sent += 1
        for fd, _ in ep.poll(0.0005):
            with contextlib.suppress(BlockingIOError, ssl.SSLWantReadError):
                got += len(by_fd[fd].recv(65536)) // len(MESSAGE)
    print(json.dumps({"event": "done", "sent": sent, "got": got}), flush=True)


def run_mode(
    mode: str, args: argparse.Namespace, cert: Path, key: Path
) -> dict[str, Any]:
    """One server process, one client process; the server measured apart."""
    udp = mode.startswith("udp")
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    if not udp:
        sock.listen(4096)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    sending = args.warmup + args.seconds + 0.5
    server_deadline = time.monotonic() + sending + 120  # connecting counts too
    pid = os.fork()
    if pid == 0:
        try:
            if mode == "tcp-raw":
                _serve_tcp_raw(sock, server_deadline)
            elif mode == "udp-raw":
                _serve_udp_raw(sock, server_deadline)
            else:
                _serve_twisted(mode, sock, server_deadline, cert, key)
        finally:
            os._exit(0)
    sock.close()
    rfd, wfd = os.pipe()
    cpid = os.fork()
    if cpid == 0:
        os.close(rfd)
        os.dup2(wfd, 1)
        try:
            _client(mode, port, args.connections, args.rate, sending)
        finally:
            os._exit(0)
    os.close(wfd)
    out = os.fdopen(rfd)
    ready = json.loads(out.readline() or "{}")
    if ready.get("event") != "ready":
        raise SystemExit(f"{mode}: the client did not connect")
    time.sleep(args.warmup)
    u0, s0 = cpu_split_s(pid)
    st0 = box_steal_s()
    t0 = time.monotonic()
    time.sleep(args.seconds)
    u1, s1 = cpu_split_s(pid)
    elapsed = time.monotonic() - t0
    steal = (box_steal_s() - st0) / elapsed
    done = json.loads(out.readline() or "{}")
    for p in (cpid, pid):
        os.kill(p, 9)
        os.waitpid(p, 0)
    messages = args.rate * elapsed
    cpu = (u1 - u0) + (s1 - s0)
    return {
        "mode": mode,
        "connections": 1 if udp else args.connections,
        "rate": args.rate,
        "seconds": round(elapsed, 1),
        "server_cpu_share": round(cpu / elapsed, 4),
        "server_kernel_share": round((s1 - s0) / elapsed, 4),
        "us_per_message": round(cpu / messages * 1e6, 1),
        "steal_share": round(steal, 3),
        "echoed": f"{done.get('got', 0)}/{done.get('sent', '?')}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", help="write the figures to FILE")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r} (one of {', '.join(MODES)})")
    from gateway.devcert import write_self_signed

    print(f"nproc {os.cpu_count()}, {cpu_model()}; {interpreter()}")
    results = []
    # the dev certificate, removed afterwards (the forked children _exit)
    with tempfile.TemporaryDirectory(prefix="voipgw-floor-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        write_self_signed(cert, key)
        for _ in range(args.repeat):
            for mode in modes:
                r = run_mode(mode, args, cert, key)
                results.append(r)
                print(
                    f"{mode:18} {r['us_per_message']:7.1f} us per message  "
                    f"server {100 * r['server_cpu_share']:.1f}% of a core "
                    f"(kernel {100 * r['server_kernel_share']:.1f}%), steal "
                    f"{100 * r['steal_share']:.1f}%, echoed {r['echoed']}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
